// skynet dashboard: plain JavaScript, no build. Data calls send the token as a bearer header; the
// event stream (EventSource cannot send headers) sends it as ?token=. The token lives in
// sessionStorage: this tab only, gone when it closes or on "Sign out".
"use strict";

const TOKEN_KEY = "skynet.token";
const PAGE = 50;
const STATES = ["queued", "waiting", "started", "done", "skipped", "moved", "deleted", "held", "failed", "dead"];
const QUEUE_SAMPLES = 120; // the queue chart's rolling window: 10 minutes at one sample per 5 s
const STATUS_EVERY_MS = 5000;

const $ = (id) => document.getElementById(id);
const s = {
  token: null, role: null, stream: null, lastSeq: null, timers: [], dirty: new Set(), flushTimer: null,
  transfers: new Map(), files: { items: [], next: null, state: "", prefix: "" }, queueSamples: [],
  throughput: [], workers: [], feed: [],
};

class AuthError extends Error {}

// ------------------------------------------------------------------ formatting

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function fmtDuration(sec) {
  if (sec === null || sec === undefined || !isFinite(sec)) return "–";
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${sec % 60}s`;
  return `${Math.floor(sec / 3600)}h ${Math.floor((sec % 3600) / 60)}m`;
}

function ago(iso) {
  if (!iso) return "–";
  return `${fmtDuration((Date.now() - Date.parse(iso)) / 1000)} ago`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function stateBadge(state) {
  return el("span", { class: `state ${state}`, text: state });
}

function timeCell(iso) {
  return el("td", { class: "num" }, el("time", { datetime: iso, title: iso, "data-ago": iso, text: ago(iso) }));
}

function fileKey(source, path) {
  return `${source}\u0000${path}`;
}

function showPath(source, path) {
  return s.multiSource ? `${source}:${path}` : path;
}

// ------------------------------------------------------------------ API calls

async function api(path, options = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${s.token}` };
  if (options.body) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { ...options, headers, cache: "no-store" });
  if (res.status === 401) throw new AuthError("token refused");
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
  return body;
}

function notice(text, bad = false) {
  const n = $("notice");
  n.textContent = text;
  n.classList.toggle("bad", bad);
}

async function guarded(fn) {
  try {
    await fn();
  } catch (err) {
    if (err instanceof AuthError) signOut("The token was refused; sign in again.");
    else notice(`Could not refresh: ${err.message}`, true);
  }
}

// ------------------------------------------------------------------ sign in / out

async function signIn(token) {
  s.token = token;
  const who = await api("/v1/whoami");
  s.role = who.role;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  const badge = $("role-badge");
  badge.hidden = false;
  badge.textContent = s.role === "admin" ? "admin" : "read-only";
  badge.title = s.role === "admin" ? "this token may retry files" : "this token may only look";
  document.body.dataset.role = s.role;
  start();
}

function signOut(message = "") {
  stop();
  sessionStorage.removeItem(TOKEN_KEY);
  s.token = s.role = null;
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("role-badge").hidden = true;
  $("conn").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").value = "";
  $("token").focus();
}

function start() {
  refreshAll();
  openStream();
  s.timers.push(setInterval(() => guarded(refreshStatus), STATUS_EVERY_MS));
  s.timers.push(setInterval(() => guarded(refreshWorkers), 5000));
  s.timers.push(setInterval(() => guarded(refreshThroughput), 30000));
  s.timers.push(setInterval(tick, 1000));
}

function stop() {
  for (const t of s.timers) clearInterval(t);
  s.timers = [];
  if (s.stream) s.stream.close();
  s.stream = null;
  clearTimeout(s.flushTimer);
  s.flushTimer = null;
  s.dirty.clear();
  s.transfers.clear();
  s.queueSamples = [];
  s.feed = [];
  $("feed").replaceChildren();
}

function refreshAll() {
  return guarded(() =>
    Promise.all([
      refreshStatus(), refreshTransfers(), refreshThroughput(), refreshFailures(), refreshHeld(), refreshWorkers(),
      loadFiles(false),
    ]),
  );
}

// ------------------------------------------------------------------ live stream

function openStream() {
  const params = new URLSearchParams({ token: s.token });
  if (s.lastSeq !== null) params.set("cursor", String(s.lastSeq));
  const es = new EventSource(`/v1/events/stream?${params}`);
  s.stream = es;
  const conn = $("conn");
  conn.hidden = false;
  conn.textContent = "connecting…";
  conn.className = "conn";
  es.onopen = () => {
    conn.textContent = "live";
    conn.className = "conn live";
  };
  es.onerror = () => {
    conn.textContent = "reconnecting…";
    conn.className = "conn down";
    if (es.readyState === EventSource.CLOSED && s.stream === es) {
      // The server refused the stream (a revoked token?) or is away: check, then try again.
      s.stream = null;
      setTimeout(async () => {
        if (!s.token) return;
        try {
          await api("/v1/whoami");
        } catch (err) {
          if (err instanceof AuthError) return signOut("The token was refused; sign in again.");
        }
        if (s.token && !s.stream) {
          openStream();
          refreshAll();
        }
      }, 3000);
    }
  };
  const types = [...STATES.map((st) => `file.${st}.v1`), "progress.file.v1"];
  for (const type of types) es.addEventListener(type, (msg) => onEvent(JSON.parse(msg.data)));
}

function onEvent(e) {
  s.lastSeq = e.seq;
  if (e.state === "progress") {
    onProgress(e);
    return;
  }
  addFeed(e);
  const key = fileKey(e.source, e.path);
  if (e.state === "started") {
    s.transfers.set(key, {
      source: e.source, path: e.path, size: e.size ?? e.data.size ?? null, bytes_done: 0,
      started_at: e.created_at, rate: null, samples: [],
    });
    scheduleTransfers();
  } else if (s.transfers.delete(key)) {
    scheduleTransfers();
  }
  const row = s.files.items.find((f) => f.source === e.source && f.path === e.path);
  if (row) {
    row.state = e.state;
    row.state_at = e.created_at;
    if (e.size !== null && e.size !== undefined) row.size = e.size;
    renderFiles();
  }
  markDirty("files", "status", "transfers");
  if (["failed", "dead", "done", "skipped", "moved", "queued", "deleted"].includes(e.state)) markDirty("failures");
  if (e.state === "held" || e.state === "deleted" || e.state === "queued") markDirty("held");
  if (e.state === "done") markDirty("throughput");
}

function onProgress(e) {
  const key = fileKey(e.source, e.path);
  let t = s.transfers.get(key);
  if (!t) {
    t = { source: e.source, path: e.path, size: null, bytes_done: 0, started_at: e.created_at, rate: null, samples: [] };
    s.transfers.set(key, t);
  }
  const done = e.data.bytes_done ?? t.bytes_done;
  t.size = e.data.size ?? e.size ?? t.size;
  t.bytes_done = done;
  // Bytes per second over the last few ticks: the rate now, not the average since the start.
  const at = Date.parse(e.created_at);
  t.samples.push([at, done]);
  while (t.samples.length > 6) t.samples.shift();
  const [a0, b0] = t.samples[0];
  if (t.samples.length > 1 && at > a0) t.rate = ((done - b0) * 1000) / (at - a0);
  scheduleTransfers();
}

function markDirty(...what) {
  for (const w of what) s.dirty.add(w);
  if (s.flushTimer === null) s.flushTimer = setTimeout(flush, 800);
}

function flush() {
  s.flushTimer = null;
  const what = new Set(s.dirty);
  s.dirty.clear();
  const jobs = [];
  if (what.has("files")) jobs.push(loadFiles(false, true));
  if (what.has("status")) jobs.push(refreshStatus());
  if (what.has("transfers")) jobs.push(refreshTransfers());
  if (what.has("failures")) jobs.push(refreshFailures());
  if (what.has("held")) jobs.push(refreshHeld());
  if (what.has("throughput")) jobs.push(refreshThroughput());
  guarded(() => Promise.all(jobs));
}

function addFeed(e) {
  const li = el(
    "li", {},
    el("time", { datetime: e.created_at, text: new Date(e.created_at).toLocaleTimeString() }),
    stateBadge(e.state),
    el("span", { class: "path", text: showPath(e.source, e.path) }),
  );
  if (e.data && e.data.reason) li.append(el("span", { class: "reason", text: e.data.reason }));
  const feed = $("feed");
  feed.prepend(li);
  while (feed.children.length > 60) feed.lastChild.remove();
  $("feed-empty").hidden = true;
}

// ------------------------------------------------------------------ status and charts

async function refreshStatus() {
  const st = await api("/v1/status");
  s.multiSource = Object.keys(st.sources).length > 1;
  const q = st.queues || {};
  let waiting = 0, retrying = 0;
  for (const [name, n] of Object.entries(q)) {
    if (name.startsWith("skynet.actions.")) waiting += n || 0;
    else if (name.startsWith("skynet.retry.")) retrying += n || 0;
  }
  const dead = st.dead_letters ?? 0;
  s.queueSamples.push({ at: Date.now(), waiting, retrying, dead, broker: st.queues !== null });
  while (s.queueSamples.length > QUEUE_SAMPLES) s.queueSamples.shift();

  const f = st.files;
  const items = [
    ["Files", st.files_total],
    ["Done", (f.done || 0) + (f.skipped || 0) + (f.moved || 0)],
    ["Waiting", (f.queued || 0) + (f.waiting || 0)],
    ["Uploading", st.active_transfers],
    ["Failed", (f.failed || 0) + (f.dead || 0), (f.failed || 0) + (f.dead || 0) > 0],
    ["Held deletes", f.held || 0, (f.held || 0) > 0],
    ["Dead letters", st.dead_letters ?? "–", (st.dead_letters || 0) > 0],
    ["Done, last minute", `${st.done_last_minute.files} · ${fmtBytes(st.done_last_minute.bytes)}`],
    ["Oldest pending", st.oldest_pending ? fmtDuration(st.oldest_pending.age_s) : "–"],
    ["Workers alive", st.workers_alive, st.workers_alive === 0 || st.workers_impeded.length > 0],
  ];
  $("summary").replaceChildren(
    ...items.map(([label, value, bad]) => el("div", {}, el("dt", { text: label }), el("dd", { class: bad ? "bad" : null, text: value }))),
  );
  drawQueues();
  // What keeps the pipeline from its work goes in the notice line, above everything else.
  const problems = st.workers_impeded.map((w) => `${w.worker}: ${w.condition}`);
  for (const w of st.watcher_conflicts || []) {
    problems.unshift(`Source ${w.source} has ${w.watchers.length} watchers (${w.watchers.join(", ")}):`
      + " one watcher per source.");
  }
  for (const c of st.target_conflicts || []) {
    problems.unshift(`Sources ${c.sources[0]} and ${c.sources[1]} send to the same place (${c.targets.join(", ")}):`
      + " they overwrite each other's files; give each source its own target.");
  }
  if (!st.notifier_alive) {
    const seen = st.notifier_seen_at ? ` since ${new Date(st.notifier_seen_at).toLocaleString()}` : "";
    problems.unshift(`No notifier is storing events${seen}: this page shows how things were then.`);
  }
  if (st.broker_error) problems.unshift(`Broker: ${st.broker_error}`);
  if (problems.length) notice(problems.join(" · "), true);
  else if ($("notice").classList.contains("bad")) notice("");
}

async function refreshThroughput() {
  const series = await api("/v1/throughput?minutes=60");
  s.throughput = series.items;
  drawThroughput();
}

function palette() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  return { c1: v("--c1"), c2: v("--c2"), c3: v("--c3"), c4: v("--c4"), line: v("--line"), muted: v("--muted") };
}

function setupCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h };
}

function frame(ctx, w, h, p, topLabel, leftLabel, rightLabel) {
  ctx.strokeStyle = p.line;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const y of [14, (h - 18 + 14) / 2, h - 18]) {
    ctx.moveTo(0, Math.round(y) + 0.5);
    ctx.lineTo(w, Math.round(y) + 0.5);
  }
  ctx.stroke();
  ctx.fillStyle = p.muted;
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText(topLabel, 2, 0);
  ctx.fillText(leftLabel, 2, h - 14);
  ctx.textAlign = "right";
  ctx.fillText(rightLabel, w - 2, h - 14);
}

function drawThroughput() {
  const canvas = $("throughput-chart");
  if (!canvas.clientWidth) return;
  const { ctx, w, h } = setupCanvas(canvas);
  const p = palette();
  const items = s.throughput;
  const maxBytes = Math.max(1, ...items.map((b) => b.bytes));
  const maxFiles = Math.max(1, ...items.map((b) => b.files));
  frame(ctx, w, h, p, `${fmtBytes(maxBytes)}/min · ${maxFiles} files/min`, "−60 min", "now");
  const top = 14, bottom = h - 18, n = Math.max(items.length, 1), bw = w / n;
  ctx.fillStyle = p.c1;
  items.forEach((b, i) => {
    const bh = ((bottom - top) * b.bytes) / maxBytes;
    ctx.fillRect(i * bw + 1, bottom - bh, Math.max(1, bw - 2), bh);
  });
  // Files per minute: a dot per busy minute (a line would zigzag between busy and idle minutes).
  ctx.fillStyle = p.c2;
  items.forEach((b, i) => {
    if (!b.files) return;
    ctx.beginPath();
    ctx.arc(i * bw + bw / 2, bottom - ((bottom - top) * b.files) / maxFiles, 3, 0, 2 * Math.PI);
    ctx.fill();
  });
  const files = items.reduce((a, b) => a + b.files, 0), bytes = items.reduce((a, b) => a + b.bytes, 0);
  const text = `Last hour: ${files} files, ${fmtBytes(bytes)} done; busiest minute ${fmtBytes(maxBytes)}.`;
  canvas.setAttribute("aria-label", `Throughput chart. ${text}`);
  $("throughput-note").textContent = text;
}

function drawQueues() {
  const canvas = $("queues-chart");
  if (!canvas.clientWidth) return;
  const { ctx, w, h } = setupCanvas(canvas);
  const p = palette();
  const pts = s.queueSamples;
  const max = Math.max(1, ...pts.map((x) => Math.max(x.waiting, x.retrying, x.dead)));
  const span = (QUEUE_SAMPLES * STATUS_EVERY_MS) / 60000;
  frame(ctx, w, h, p, `${max} message${max === 1 ? "" : "s"}`, `−${span} min`, "now");
  const top = 14, bottom = h - 18, step = w / (QUEUE_SAMPLES - 1);
  const x0 = w - (pts.length - 1) * step;
  for (const [key, color] of [["waiting", p.c1], ["retrying", p.c3], ["dead", p.c4]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach((pt, i) => {
      const x = x0 + i * step, y = bottom - ((bottom - top) * pt[key]) / max;
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  const last = pts[pts.length - 1];
  const text = !last ? "No sample yet." : !last.broker ? "Queue depths are unknown (no broker configured or reachable)."
    : `Now: ${last.waiting} waiting, ${last.retrying} retrying, ${last.dead} dead letters.`;
  canvas.setAttribute("aria-label", `Queue chart. ${text}`);
  $("queues-note").textContent = text;
}

// ------------------------------------------------------------------ transfers

async function refreshTransfers() {
  const list = await api("/v1/transfers");
  const fresh = new Map();
  for (const t of list.items) {
    const key = fileKey(t.source, t.path);
    const old = s.transfers.get(key);
    fresh.set(key, {
      source: t.source, path: t.path, size: t.size, started_at: t.started_at,
      // The stream may be ahead of the database: keep the larger count and the live rate.
      bytes_done: Math.max(t.bytes_done, old ? old.bytes_done : 0),
      rate: old && old.rate !== null ? old.rate : t.rate_bytes_per_s,
      samples: old ? old.samples : [],
    });
  }
  s.transfers = fresh;
  renderTransfers();
}

// A burst of progress ticks redraws the list once per frame, not once per tick.
let transfersFrame = 0;
function scheduleTransfers() {
  if (!transfersFrame) {
    transfersFrame = requestAnimationFrame(() => {
      transfersFrame = 0;
      renderTransfers();
    });
  }
}

function renderTransfers() {
  const items = [...s.transfers.values()];
  $("transfers-count").textContent = items.length ? `(${items.length})` : "";
  $("transfers-empty").hidden = items.length > 0;
  $("transfers").replaceChildren(
    ...items.map((t) => {
      const pct = t.size ? Math.min(100, (100 * t.bytes_done) / t.size) : null;
      const eta = t.rate && t.size ? (t.size - t.bytes_done) / t.rate : null;
      const name = showPath(t.source, t.path);
      const bar = el("progress", {
        max: 100, value: pct === null ? null : pct.toFixed(1), "aria-label": `${name} uploaded`,
      });
      const meta = `${pct === null ? "?" : pct.toFixed(0)}% · ${fmtBytes(t.bytes_done)} of ${fmtBytes(t.size)}`
        + ` · ${t.rate ? `${fmtBytes(t.rate)}/s` : "– /s"} · ETA ${fmtDuration(eta)}`;
      return el("li", { "data-path": t.path }, el("span", { class: "path", text: name }), el("span", { class: "meta", text: meta }), bar);
    }),
  );
}

// ------------------------------------------------------------------ failures, held deletes, workers

async function refreshFailures() {
  const page = await api("/v1/failures?limit=50");
  const rows = page.items.map((f) => {
    const tr = el(
      "tr", { "data-path": f.path },
      el("td", { class: "path", text: showPath(f.source, f.path) }),
      el("td", {}, stateBadge(f.state)),
      el("td", { class: "num", text: f.attempts }),
      el("td", { class: "reason", text: f.last_error || "(no reason given)" }),
      timeCell(f.state_at),
    );
    const action = el("td");
    if (s.role === "admin") {
      const btn = el("button", { type: "button", class: "small", text: "Retry", "aria-label": `Retry ${f.path}` });
      btn.addEventListener("click", () => retry(f, btn));
      action.append(btn);
    }
    tr.append(action);
    return tr;
  });
  $("failures").tBodies[0].replaceChildren(...rows);
  $("failures-count").textContent = rows.length ? `(${rows.length}${page.next_cursor ? "+" : ""})` : "";
  $("failures-empty").hidden = rows.length > 0;
  $("failures").hidden = rows.length === 0;
}

async function retry(f, btn) {
  btn.disabled = true;
  btn.textContent = "Retrying…";
  try {
    await api("/v1/admin/retry", { method: "POST", body: JSON.stringify({ source: f.source, path: f.path }) });
    btn.textContent = "Requested";
    notice(`Retry requested for ${f.path}.`);
  } catch (err) {
    btn.disabled = false;
    btn.textContent = "Retry";
    if (err instanceof AuthError) signOut("The token was refused; sign in again.");
    else notice(`Retry of ${f.path} failed: ${err.message}`, true);
  }
}

async function releaseHeld(source, btn) {
  if (!window.confirm(`Apply every delete held back for ${source}? The files will be deleted on the remote.`)) return;
  btn.disabled = true;
  try {
    await api("/v1/admin/release-held", { method: "POST", body: JSON.stringify({ source }) });
    btn.textContent = "Requested";
    notice(`The watcher of ${source} was told to apply its held deletes.`);
  } catch (err) {
    btn.disabled = false;
    if (err instanceof AuthError) signOut("The token was refused; sign in again.");
    else notice(`Releasing the held deletes of ${source} failed: ${err.message}`, true);
  }
}

async function refreshHeld() {
  const page = await api("/v1/files?state=held&limit=50");
  const rows = page.items.map((f) =>
    el(
      "tr", { "data-path": f.path },
      el("td", { class: "path", text: showPath(f.source, f.path) }),
      el("td", { class: "reason", text: f.last_error || "held" }),
      timeCell(f.state_at),
    ),
  );
  $("held").tBodies[0].replaceChildren(...rows);
  const buttons = [];
  if (s.role === "admin") {
    for (const source of new Set(page.items.map((f) => f.source))) {
      const btn = el("button", {
        type: "button", class: "small", text: `Apply held deletes of ${source}`,
        "aria-label": `Apply the held deletes of source ${source}`,
      });
      btn.addEventListener("click", () => releaseHeld(source, btn));
      buttons.push(btn);
    }
  }
  $("held-actions").replaceChildren(...buttons);
  $("held-count").textContent = rows.length ? `(${rows.length}${page.next_cursor ? "+" : ""})` : "";
  $("held-empty").hidden = rows.length > 0;
  $("held").hidden = rows.length === 0;
}

async function refreshWorkers() {
  const list = await api("/v1/workers");
  const rows = list.items.map((w) =>
    el(
      "tr", {},
      el("td", { class: "path", text: w.worker, title: w.host || "" }),
      el("td", { text: `${w.role} · ${w.source}` }),
      el("td", { class: "num", text: w.capacity ? `${w.active}/${w.capacity}` : String(w.active) }),
      el("td", { class: `num ${w.alive ? "alive" : w.stopped_at ? "stopped" : "stale"}` },
        el("time", { datetime: w.last_seen, "data-ago": w.last_seen, text: ago(w.last_seen) }),
        w.alive ? "" : w.stopped_at ? " (stopped)" : " (stale)"),
      el("td", { class: w.condition ? "condition bad" : "condition", text: w.condition || "–",
        title: w.condition_since ? `since ${new Date(w.condition_since).toLocaleString()}` : "" }),
    ),
  );
  $("workers").tBodies[0].replaceChildren(...rows);
  $("workers-count").textContent = rows.length ? `(${list.items.filter((w) => w.alive).length} alive)` : "";
  $("workers-empty").hidden = rows.length > 0;
  $("workers").hidden = rows.length === 0;
}

// ------------------------------------------------------------------ files (server-side filter, cursor pages)

function filesQuery(cursor, limit) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (s.files.state) q.set("state", s.files.state);
  if (s.files.prefix) q.set("prefix", s.files.prefix);
  if (cursor) q.set("cursor", cursor);
  return `/v1/files?${q}`;
}

async function loadFiles(more, keepCount = false) {
  const f = s.files;
  const wanted = { state: f.state, prefix: f.prefix };
  let url;
  if (more) url = filesQuery(f.next, PAGE);
  else url = filesQuery(null, keepCount ? Math.min(1000, Math.max(PAGE, f.items.length)) : PAGE);
  const page = await api(url);
  if (wanted.state !== f.state || wanted.prefix !== f.prefix) return; // the filter changed meanwhile
  f.items = more ? f.items.concat(page.items) : page.items;
  f.next = page.next_cursor;
  renderFiles();
}

function renderFiles() {
  const rows = s.files.items.map((f) =>
    el(
      "tr", { "data-path": f.path },
      el("td", { class: "path", text: showPath(f.source, f.path) }),
      el("td", {}, stateBadge(f.state)),
      el("td", { class: "num", text: fmtBytes(f.size) }),
      timeCell(f.state_at),
    ),
  );
  $("files").tBodies[0].replaceChildren(...rows);
  $("files-empty").hidden = rows.length > 0;
  $("files-more").hidden = !s.files.next;
}

// ------------------------------------------------------------------ wiring

function tick() {
  for (const t of document.querySelectorAll("time[data-ago]")) t.textContent = ago(t.dataset.ago);
}

let filterTimer = null;
function onFilter() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    s.files.state = $("files-state").value;
    s.files.prefix = $("files-prefix").value;
    s.files.next = null;
    guarded(() => loadFiles(false));
  }, 250);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    $("login-error").textContent = "";
    try {
      await signIn(token);
    } catch (err) {
      s.token = null;
      $("login-error").textContent = err instanceof AuthError ? "That token was refused." : `Could not sign in: ${err.message}`;
    }
  });
  $("logout").addEventListener("click", () => signOut());
  $("files-state").addEventListener("change", onFilter);
  $("files-prefix").addEventListener("input", onFilter);
  $("files-filter").addEventListener("submit", (ev) => { ev.preventDefault(); onFilter(); });
  $("files-more").addEventListener("click", () => guarded(() => loadFiles(true)));
  window.addEventListener("resize", () => { drawThroughput(); drawQueues(); });

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved).catch((err) => {
      if (err instanceof AuthError) return signOut("Your session has ended; sign in again.");
      // The API is away: keep the token, let the user try again.
      s.token = null;
      $("login").hidden = false;
      $("login-error").textContent = `Could not reach the API: ${err.message}`;
    });
  } else {
    $("login").hidden = false;
    $("token").focus();
  }
});

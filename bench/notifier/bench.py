"""Notifier and API benchmark (issue 4).

1. Throughput: N events are published to a private RabbitMQ vhost, then the real notifier
   (``python -m skynet.notifier``) drains them into Postgres; events/s is measured from the first
   stored row to the last. In the same run, the same event rows are inserted into a fresh
   database with a bare psycopg2 ``execute_values`` loop (batches of 500, one commit each): the
   floor the notifier is compared with (it also decodes, updates file state and counters, acks).
2. Latency: a database with 1,000,000 file rows and 10,000,000 events (generate_series), the API
   as a real uvicorn process, sequential HTTP requests; p50/p99 per endpoint.

Usage: python bench/notifier/bench.py [--events 50000] [--files 1000000] [--log-events 10000000]
Needs Postgres on 127.0.0.1:5432 (user postgres, trust) and RabbitMQ on 127.0.0.1:5672 (guest).
Writes a Markdown summary to stdout; RESULTS.md holds the figures measured on this machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pika
import psycopg2
import psycopg2.extras

from skynet.common.messages import FileEvent, encode
from skynet.common.topology import EVENTS_EXCHANGE, EVENTS_QUEUE, PROGRESS_QUEUE, Topology
from skynet.notifier import rows
from skynet.notifier.schema import migrate
from skynet.notifier.store import EVENTS_TEMPLATE, INSERT_EVENTS

PG = "postgresql://postgres@127.0.0.1:5432/"
TOKEN = "bench-read-token-0123456789"


def admin_sql(sql: str) -> None:
    conn = psycopg2.connect(PG + "postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def new_db(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    conn = psycopg2.connect(PG + name)
    migrate(conn)
    conn.close()
    return name


def drop_db(name: str) -> None:
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def count(db: str, sql: str = "SELECT count(*) FROM events") -> int:
    conn = psycopg2.connect(PG + db)
    with conn.cursor() as cur:
        cur.execute(sql)
        n = int(cur.fetchone()[0])
    conn.close()
    return n


def make_events(n: int) -> list[FileEvent]:
    """A realistic mix: per file queued, started, done; a progress tick for one file in four."""
    t0 = time.time() - 600
    out: list[FileEvent] = []
    i = 0
    while len(out) < n:
        path = f"cam/{i // 1000:04d}/img{i:07d}.jpg"
        t = t0 + i * 0.01
        out.append(FileEvent.make("queued", source="bench", path=path, created_at=t))
        out.append(
            FileEvent.make("started", source="bench", path=path, size=2_000_000, worker="up-1", created_at=t + 0.001)
        )
        if i % 4 == 0:
            out.append(
                FileEvent.make(
                    "progress", source="bench", path=path, size=2_000_000, bytes_done=10**6, created_at=t + 0.002
                )
            )
        out.append(
            FileEvent.make(
                "done",
                source="bench",
                path=path,
                size=2_000_000,
                checksum="etag",
                remote="s3://b/" + path,
                duration_s=0.1,
                created_at=t + 0.003,
            )
        )
        i += 1
    return out[:n]


def bench_notifier(events: list[FileEvent]) -> dict[str, Any]:
    vhost = f"skynet-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    amqp = f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"
    db = new_db("skynet_bench_notifier")
    try:
        conn = pika.BlockingConnection(pika.URLParameters(amqp))
        ch = conn.channel()
        Topology("bench", progress_queue_max=100_000).declare_events(ch)
        t = time.perf_counter()
        for e in events:
            props = pika.BasicProperties(delivery_mode=2 if e.state != "progress" else 1, message_id=e.id)
            ch.basic_publish(EVENTS_EXCHANGE, e.type, encode(e), props)
        while True:
            depth = sum(ch.queue_declare(q, passive=True).method.message_count for q in (EVENTS_QUEUE, PROGRESS_QUEUE))
            if depth >= len(events):
                break
            time.sleep(0.5)
        publish_s = time.perf_counter() - t
        conn.close()
        env = dict(
            os.environ,
            SKYNET_AMQP_URL=amqp,
            SKYNET_DATABASE_URL=PG + db,
            SKYNET_LOG_LEVEL="WARNING",
            SKYNET_PROGRESS_QUEUE_MAX="100000",
        )
        proc = subprocess.Popen([sys.executable, "-m", "skynet.notifier"], env=env)
        first_t = None
        first_n = 0
        while True:
            n = count(db)
            now = time.perf_counter()
            if first_t is None and n > 0:
                first_t, first_n = now, n
            if n >= len(events):
                break
            if proc.poll() is not None:
                raise RuntimeError("notifier exited")
            time.sleep(0.05)
        elapsed = now - (first_t or now)
        proc.terminate()
        proc.wait(30)
        files = count(db, "SELECT count(*) FROM files WHERE state = 'done'")
        return {
            "events": len(events),
            "seconds": elapsed,
            "rate": (len(events) - first_n) / elapsed,
            "publish_s": publish_s,
            "files_done": files,
        }
    finally:
        drop_db(db)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


def bench_bare(events: list[FileEvent]) -> dict[str, Any]:
    db = new_db("skynet_bench_bare")
    try:
        rows_ = [rows.event_row(e) for e in events]  # the same rows, prepared beforehand
        conn = psycopg2.connect(PG + db)
        t = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(0, len(rows_), 500):
                chunk = rows_[i : i + 500]
                psycopg2.extras.execute_values(
                    cur, INSERT_EVENTS, chunk, template=EVENTS_TEMPLATE, page_size=len(chunk), fetch=True
                )
                conn.commit()
        elapsed = time.perf_counter() - t
        conn.close()
        assert count(db) == len(events)
        return {"events": len(events), "seconds": elapsed, "rate": len(events) / elapsed}
    finally:
        drop_db(db)


# ------------------------------------------------------------------------------------ latency

BIG_FILES_SQL = """
INSERT INTO files (source, path, state, size, bytes_done, attempts, last_error, remote, checksum, worker,
                   state_at, progress_at, first_seen_at, updated_at, last_event_id)
SELECT CASE WHEN i % 2 = 0 THEN 'cam' ELSE 'lab' END,
       'dir' || lpad((i % 1000)::text, 4, '0') || '/file' || lpad(i::text, 7, '0') || '.bin',
       s.state,
       (i % 100000) * 1000,
       CASE WHEN s.state = 'started' THEN (i % 100000) * 500 ELSE (i % 100000) * 1000 END,
       CASE WHEN s.state IN ('failed', 'dead') THEN 3 ELSE 0 END,
       CASE WHEN s.state IN ('failed', 'dead') THEN 'RemoteUnavailable: timed out' END,
       's3://bucket/dir/file' || i, md5(i::text), 'up-' || (i % 8),
       now() - (i % 2592000) * interval '1 second' - interval '2 minutes',
       CASE WHEN s.state = 'started' THEN now() - interval '1 second' END,
       now() - interval '31 days', now(), md5(i::text)
FROM generate_series(1, %(n)s) AS i,
LATERAL (SELECT CASE WHEN i % 100 < 90 THEN 'done' WHEN i % 100 < 93 THEN 'queued'
                     WHEN i % 100 < 94 THEN 'started' WHEN i % 100 < 96 THEN 'failed'
                     WHEN i % 100 < 97 THEN 'dead' ELSE 'skipped' END AS state) s
"""
RECENT_DONE_SQL = (
    "UPDATE files SET state_at = now() - interval '10 seconds' WHERE path LIKE 'dir0007/%%' AND state = 'done'"
)
BIG_EVENTS_SQL = """
INSERT INTO events (id, type, source, path, state, worker, size, created_at, received_at, payload)
SELECT md5('e' || g), 'file.' || st || '.v1',
       CASE WHEN f %% 2 = 0 THEN 'cam' ELSE 'lab' END,
       'dir' || lpad((f %% 1000)::text, 4, '0') || '/file' || lpad(f::text, 7, '0') || '.bin',
       st, 'up-' || (g %% 8), 1000,
       now() - interval '29 days' + g * interval '0.25 seconds', now(),
       jsonb_build_object('id', md5('e' || g), 'type', 'file.' || st || '.v1', 'state', st, 'size', 1000)
FROM generate_series(%(lo)s, %(hi)s) AS g,
LATERAL (SELECT (g %% %(files)s) + 1 AS f,
                (ARRAY['queued', 'started', 'done', 'done', 'queued', 'started', 'done', 'skipped', 'failed', 'done'])
                [(g / %(files)s) %% 10 + 1] AS st) x
"""
EVENT_INDEXES = [
    "ALTER TABLE events ADD CONSTRAINT events_id_key UNIQUE (id)",
    "CREATE INDEX events_file_idx ON events (source, path, seq)",
    "CREATE INDEX events_created_idx ON events (created_at)",
    "CREATE INDEX events_progress_idx ON events (created_at) WHERE state = 'progress'",
]


def build_big(files: int, log_events: int) -> str:
    db = new_db("skynet_bench_big")
    conn = psycopg2.connect(PG + db)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '512MB'; SET synchronous_commit = off")
        t = time.perf_counter()
        cur.execute(BIG_FILES_SQL.replace("%(n)s", str(files)))
        cur.execute(RECENT_DONE_SQL)
        print(f"  files: {time.perf_counter() - t:.0f}s", file=sys.stderr)
        t = time.perf_counter()
        cur.execute("ALTER TABLE events DROP CONSTRAINT events_id_key")
        cur.execute("DROP INDEX events_file_idx, events_created_idx, events_progress_idx")
        step = 1_000_000
        for lo in range(1, log_events + 1, step):
            hi = min(log_events, lo + step - 1)
            cur.execute(BIG_EVENTS_SQL, {"lo": lo, "hi": hi, "files": files})
        print(f"  events: {time.perf_counter() - t:.0f}s", file=sys.stderr)
        t = time.perf_counter()
        for sql in EVENT_INDEXES:
            cur.execute(sql)
        cur.execute("VACUUM ANALYZE")
        print(f"  indexes + vacuum: {time.perf_counter() - t:.0f}s", file=sys.stderr)
    conn.close()
    return db


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_latency(db: str, requests: int) -> list[tuple[str, float, float, int]]:
    port = 18000 + os.getpid() % 1000
    env = dict(
        os.environ,
        SKYNET_DATABASE_URL=PG + db,
        SKYNET_API_TOKEN=TOKEN,
        SKYNET_API_HOST="127.0.0.1",
        SKYNET_API_PORT=str(port),
        SKYNET_LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen([sys.executable, "-m", "skynet.api"], env=env)
    base = f"http://127.0.0.1:{port}"
    out = []
    try:
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        for _ in range(100):
            try:
                client.get("/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        mid = client.get("/v1/files", params={"prefix": "dir0500/", "limit": 1}).json()["next_cursor"]
        cases = [
            ("/v1/status", {}),
            ("/v1/files", {}),
            ("/v1/files?state=failed", {"state": "failed"}),
            ("/v1/files?source=lab&state=queued", {"source": "lab", "state": "queued"}),
            ("/v1/files?prefix=dir0421/", {"prefix": "dir0421/"}),
            ("/v1/files?cursor=<middle>", {"cursor": mid}),
            ("/v1/files/{path}", None),
            ("/v1/failures", {}),
            ("/v1/transfers", {}),
            ("/v1/events", {}),
            ("/v1/events?cursor=<middle>", {"cursor": "5000000"}),
        ]
        for label, params in cases:
            samples = []
            for i in range(requests + 20):
                t = time.perf_counter()
                if params is None:
                    f = 1 + (i * 7919) % 1_000_000
                    path = f"dir{f % 1000:04d}/file{f:07d}.bin"
                    r = client.get(f"/v1/files/{path}")
                else:
                    r = client.get(
                        "/v1/files" if label.startswith("/v1/files?") else label.split("?")[0], params=params
                    )
                dt = (time.perf_counter() - t) * 1000
                assert r.status_code == 200, (label, r.status_code, r.text[:200])
                if i >= 20:
                    samples.append(dt)
            out.append((label, statistics.median(samples), pct(samples, 0.99), len(r.content)))
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def bench_in_process(db: str, requests: int) -> list[tuple[str, float, float, int]]:
    """The same reads without HTTP: pooled connection, SQL, rows → response models."""
    from skynet.api import queries
    from skynet.api.db import Database

    database = Database(PG + db, pool_size=1)
    cases = [
        ("status", lambda: database.run(queries.status)),
        ("files", lambda: database.run(queries.list_files, limit=100)),
        ("files state=failed", lambda: database.run(queries.list_files, state="failed", limit=100)),
        ("files prefix=dir0421/", lambda: database.run(queries.list_files, prefix="dir0421/", limit=100)),
        ("file + history", lambda: database.run(queries.file_history, "cam", "dir0002/file0000002.bin")),
        ("failures", lambda: database.run(queries.list_failures, limit=100)),
        ("transfers", lambda: database.run(queries.active_transfers, limit=100)),
        ("events", lambda: database.run(queries.list_events, limit=100)),
    ]
    out = []
    for label, fn in cases:
        samples = []
        for i in range(requests + 20):
            t = time.perf_counter()
            fn()
            if i >= 20:
                samples.append((time.perf_counter() - t) * 1000)
        out.append((label, statistics.median(samples), pct(samples, 0.99), 0))
    database.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--log-events", type=int, default=10_000_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--big-db", help="reuse an existing database built by a previous run")
    ap.add_argument("--keep", action="store_true", help="keep the big database")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} (1 min)")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    if not args.skip_throughput:
        events = make_events(args.events)
        print("\n| round | writer | events | seconds | events/s |\n|---|---|---|---|---|")
        ratios = []
        for r in range(1, args.rounds + 1):
            bare = bench_bare(events)
            notifier = bench_notifier(events)
            ratios.append(notifier["rate"] / bare["rate"])
            print(f"| {r} | bare psycopg2 execute_values (events table only) | {bare['events']} | ", end="")
            print(f"{bare['seconds']:.2f} | {bare['rate']:.0f} |")
            print(
                f"| {r} | skynet notifier (broker → events + files + counters, acks) | {notifier['events']} | ", end=""
            )
            print(f"{notifier['seconds']:.2f} | {notifier['rate']:.0f} |")
            assert notifier["files_done"] == sum(e.state == "done" for e in events), notifier
        print(f"\nratio notifier / bare per round: {', '.join(f'{x:.2f}' for x in ratios)}")
    if not args.skip_latency:
        t = time.perf_counter()
        db = args.big_db or build_big(args.files, args.log_events)
        build_s = time.perf_counter() - t
        try:
            print(
                f"\nbig database: {count(db, 'SELECT count(*) FROM files')} files, "
                f"{count(db, 'SELECT count(*) FROM events')} events (built in {build_s:.0f}s)"
            )
            print(f"load average before: {os.getloadavg()[0]:.1f}")
            results = bench_latency(db, args.requests)
            print(f"\n| endpoint over HTTP ({args.requests} sequential requests) | p50 ms | p99 ms | bytes |")
            print("|---|---|---|---|")
            for label, p50, p99, size in results:
                print(f"| {label} | {p50:.1f} | {p99:.1f} | {size} |")
            print(f"\n| query in-process, no HTTP ({args.requests} calls) | p50 ms | p99 ms |\n|---|---|---|")
            for label, p50, p99, _ in bench_in_process(db, args.requests):
                print(f"| {label} | {p50:.2f} | {p99:.2f} |")
            print(f"\nload average after: {os.getloadavg()[0]:.1f}")
        finally:
            if not args.keep and not args.big_db:
                drop_db(db)
            elif not args.big_db:
                print(f"\nkept database {db}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

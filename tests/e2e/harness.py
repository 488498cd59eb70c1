"""Running skynet's services as real processes for end-to-end tests, and looking at the result.

``Stack`` starts ``python -m skynet.watcher`` and any number of ``python -m skynet.uploader``
processes with their own folders, against a per-test RabbitMQ vhost and a real remote.
``EventTap`` listens to the events exchange the way the notifier does, so tests can count
what users would see (uploads started, bytes sent, moves, failures).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pika
import pika.exceptions

from skynet.common.topology import EVENTS_EXCHANGE
from tests.fixtures.common import wait_for

PARTIAL_MARK = ".skynet-partial"


class RemoteView(Protocol):
    def env(self) -> dict[str, str]: ...
    def snapshot(self) -> dict[str, str]:
        """Every complete file on the remote: relative path → SHA-256."""
        ...

    def partials(self) -> list[str]: ...
    def read(self, rel: str) -> bytes | None: ...
    def folders(self) -> set[str]:
        """Every folder below the base (for S3, those its keys imply)."""
        ...


_HASH_CACHE: dict[tuple[str, int, int, int, int], str] = {}


class NoRemote:
    """For tests of the watcher alone: no uploader, nothing to look at on a remote."""

    def env(self) -> dict[str, str]:
        return {}

    def snapshot(self) -> dict[str, str]:
        return {}

    def partials(self) -> list[str]:
        return []

    def read(self, rel: str) -> bytes | None:
        return None

    def folders(self) -> set[str]:
        return set()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, cached by (path, size, mtime, inode, ctime) so polling a large tree stays
    cheap. A file changed in the last two seconds is read again each time: a new file can get the
    inode number of one just deleted, with the same size and, on SFTP (whole seconds), the same
    mtime, and within one clock tick even the same ctime."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    cached = _HASH_CACHE.get(key)
    if cached is None:
        cached = _sha256_uncached(path)
        if time.time_ns() - st.st_ctime_ns > 2 * 10**9:
            _HASH_CACHE[key] = cached
    return cached


def _sha256_uncached(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_snapshot(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = Path(dirpath, name)
            if full.is_symlink() or not full.is_file():
                continue
            out[full.relative_to(root).as_posix()] = sha256_file(full)
    return out


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.popen.send_signal(sig)
            self.popen.wait(timeout=60)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Stack:
    base: Path
    amqp_url: str
    remote: RemoteView
    delete_mode: str = "mirror"
    settle_ms: int = 300
    source: str = "default"
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.watch = self.base / "watched"
        self.state = self.base / "state"
        self.logs = self.base / "logs"
        for d in (self.watch, self.state, self.logs):
            d.mkdir(parents=True, exist_ok=True)

    def env(self, **over: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYNET_")}
        env.update(
            {
                "SKYNET_AMQP_URL": self.amqp_url,
                "SKYNET_SOURCE": self.source,
                "SKYNET_WATCH_DIR": str(self.watch),
                "SKYNET_STATE_DIR": str(self.state),
                "SKYNET_DELETE_MODE": self.delete_mode,
                "SKYNET_SETTLE_MS": str(self.settle_ms),
                "SKYNET_RETRY_DELAYS_S": "0.5,1,2",
                "SKYNET_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.remote.env())
        env.update(self.extra_env)
        env.update(over)
        return env

    def start(self, service: str, name: str | None = None, wrap: tuple[str, ...] = (), **env: str) -> Proc:
        """Start ``python -m skynet.<service>``; ``wrap`` prefixes the command (e.g. setpriv)."""
        name = name or f"{service}-{len(self.procs)}"
        log = self.logs / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        popen = subprocess.Popen(
            [*wrap, sys.executable, "-m", f"skynet.{service}"],
            env=self.env(SKYNET_WORKER_ID=name, **env),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.alive():
                p.popen.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()

    def outbox_count(self) -> int:
        db = sqlite3.connect(self.state / "watcher.sqlite3")
        try:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            db.close()

    def wait_mirror(self, timeout: float = 60.0, exclude: frozenset[str] = frozenset()) -> dict[str, str]:
        """Wait until the remote holds exactly the local files (paths and SHA-256), ``exclude`` aside."""
        state: dict[str, Any] = {}

        def equal() -> bool:
            local = {p: h for p, h in local_snapshot(self.watch).items() if p not in exclude}
            remote = self.remote.snapshot()
            state["missing"] = sorted(set(local) - set(remote))[:10]
            state["extra"] = sorted(set(remote) - set(local))[:10]
            state["differ"] = sorted(p for p in set(local) & set(remote) if local[p] != remote[p])[:10]
            return local == remote

        try:
            wait_for(equal, timeout, interval=0.3, what="remote to mirror the local folder")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {state}; logs:\n{self.tail_logs()}") from None
        return local_snapshot(self.watch)

    def tail_logs(self, lines: int = 30) -> str:
        out = []
        for p in self.procs:
            text = p.text().splitlines()[-lines:]
            out.append(f"--- {p.name} (rc={p.popen.poll()})\n" + "\n".join(text))
        return "\n".join(out)


TAP_QUEUE_EXPIRES_MS = 600_000  # a tap's queue outlives a dropped connection, not the test run


def tap_queue(ch: Any, keys: tuple[str, ...], name: str = "") -> str:
    """A queue bound to the events exchange with ``keys``: exclusive to this connection, or, when
    ``name`` is given, one that survives the connection (and is removed 10 minutes after its last
    consumer went away), so that a consumer that reconnects misses nothing."""
    ch.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
    if name:
        queue: str = ch.queue_declare(name, arguments={"x-expires": TAP_QUEUE_EXPIRES_MS}).method.queue
    else:
        queue = ch.queue_declare("", exclusive=True).method.queue
    for key in keys:
        ch.queue_bind(queue, EVENTS_EXCHANGE, routing_key=key)
    return queue


class EventTap:
    """Collects every lifecycle event published on the events exchange of a vhost.

    Its queue outlives its connection: if the connection drops, the tap reconnects and reads what
    was published meanwhile. A tap that cannot reconnect says why, in :meth:`of` and the others,
    instead of leaving a test to wait for events that can no longer arrive. (A broker restart
    loses the queue itself: tests that restart the broker read outcomes elsewhere.)
    """

    def __init__(self, amqp_url: str, keys: tuple[str, ...] = ("file.#", "worker.#")) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._url = amqp_url
        self._keys = keys
        self._queue = f"test.tap.{os.getpid()}.{id(self):x}.{time.monotonic_ns()}"
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> EventTap:
        self._thread.start()
        assert self._ready.wait(15), f"event tap could not connect: {self._error}"
        return self

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._consume()
                return
            except (pika.exceptions.AMQPError, OSError) as exc:
                failures += 1
                self._error = f"{type(exc).__name__}: {exc} ({failures} connection failures)"
                if failures >= 60:
                    return
                time.sleep(0.5)

    def _consume(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self._url))
        try:
            ch = conn.channel()
            q = tap_queue(ch, self._keys, self._queue)

            def on_msg(_c: Any, _m: Any, _p: Any, body: bytes) -> None:
                with self._lock:
                    self.events.append(json.loads(body))

            ch.basic_consume(q, on_msg, auto_ack=True)
            self._ready.set()
            while not self._stop.is_set():
                conn.process_data_events(time_limit=0.2)
            ch.queue_delete(q)
        finally:
            if conn.is_open:
                conn.close()

    def _check(self) -> None:
        assert self._thread.is_alive() or self._stop.is_set(), f"the event tap stopped: {self._error}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def of(self, state: str, path: str | None = None) -> list[dict[str, Any]]:
        self._check()
        with self._lock:
            return [e for e in self.events if e.get("state") == state and (path is None or e.get("path") == path)]

    def mark(self) -> int:
        self._check()
        with self._lock:
            return len(self.events)

    def since(self, mark: int, pred: Callable[[dict[str, Any]], bool] = lambda e: True) -> list[dict[str, Any]]:
        self._check()
        with self._lock:
            return [e for e in self.events[mark:] if pred(e)]

    def conditions(self, role: str, mark: int = 0) -> dict[str, str | None]:
        """What keeps each worker of ``role`` from its work (None: nothing), as its newest
        heartbeat since ``mark`` says."""
        beats = self.since(mark, lambda e: e.get("type") == "worker.heartbeat.v1" and e.get("role") == role)
        return {b["worker"]: b.get("condition") for b in sorted(beats, key=lambda b: b["created_at"])}

    def bytes_sent_since(self, mark: int) -> int:
        return sum(int(e.get("bytes_done") or 0) for e in self.since(mark, lambda e: e.get("state") == "done"))

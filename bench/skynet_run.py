"""Running skynet itself for a benchmark: a watcher and N uploaders as real processes.

Reuses the e2e harness (``tests.e2e.harness.Stack`` starts ``python -m skynet.<service>``;
``Proc``), and reads its outcome events through :class:`OutcomeTap`. A run is ready once a
warm-up file went through the whole pipeline; a file counts as on the remote when its
``file.done.v1`` event says so (the uploader emits it after the remote holds the complete file,
and stamps it with ``created_at``).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pika

from bench.env import BenchEnv, Remote
from skynet.common.topology import EVENTS_QUEUE, PROGRESS_QUEUE
from tests.e2e.harness import Proc, Stack, tap_queue

SCAN_LINE = re.compile(r"scan \(start-up\) of '/': (\d+) files in ([0-9.]+)s")


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


class OutcomeTap:
    """skynet's done / failed / dead events, read without loading the run being timed.

    They collect in an exclusive queue of the bench's while a run is timed; the bench only asks
    the broker how many are waiting (one small request per poll) and reads them once there are
    as many as it waits for, or when it gives up. Reading each event as it came, on a consumer
    thread, cost the bench 0.4 to 1.1 ms of CPU per file (pika and JSON) taken from skynet's
    processes on a 2-core machine, a load the peers never carry. Every event's ``created_at`` is
    the time it was emitted, so reading late changes no figure. Used from one thread only.
    """

    KEYS = ("file.done.v1", "file.failed.v1", "file.dead.v1")

    def __init__(self, amqp_url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._url = amqp_url
        self._conn: pika.BlockingConnection | None = None
        self._ch: Any = None
        self._queue = ""

    def start(self) -> OutcomeTap:
        self._conn = pika.BlockingConnection(pika.URLParameters(self._url))
        self._ch = self._conn.channel()
        self._queue = tap_queue(self._ch, self.KEYS)
        return self

    def stop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def waiting(self) -> int:
        """How many events wait in the queue, unread."""
        return int(self._ch.queue_declare(self._queue, passive=True).method.message_count)

    def read(self) -> int:
        """Read every event waiting now; returns how many the bench holds in all."""
        before = len(self.events)
        want = self.waiting()
        if want:
            last = None
            for method, _props, body in self._ch.consume(self._queue, inactivity_timeout=5):
                if method is None:
                    break
                self.events.append(json.loads(body))
                last = method.delivery_tag
                if len(self.events) - before >= want:
                    break
            if last is not None:
                self._ch.basic_ack(last, multiple=True)
            self._ch.cancel()  # what came in meanwhile goes back to the queue, unread
        return len(self.events)


class SkynetRun:
    def __init__(
        self,
        env: BenchEnv,
        remote: Remote,
        base: Path,
        *,
        settle_ms: int,
        concurrency: int = 4,
        replicas: int = 1,
        extra_env: dict[str, str] | None = None,
        uploader: bool = True,
    ) -> None:
        self.remote = remote
        self.stack = Stack(
            base,
            env.amqp_url,
            remote.view,
            delete_mode="keep",
            settle_ms=settle_ms,
            source=env.source(),
            extra_env={"SKYNET_CONCURRENCY": str(concurrency), **(extra_env or {})},
        )
        self.replicas = replicas if uploader else 0
        self.concurrency = concurrency
        self.tap = OutcomeTap(env.amqp_url)
        self.watcher: Proc | None = None
        self.uploaders: list[Proc] = []

    @property
    def watch(self) -> Path:
        return self.stack.watch

    def __enter__(self) -> SkynetRun:
        self.tap.start()
        self.watcher = self.stack.start("watcher", name="watcher")
        for i in range(self.replicas):
            self.uploaders.append(self.stack.start("uploader", name=f"uploader-{i}"))
        self.wait_log(self.watcher, SCAN_LINE, 60)
        for up in self.uploaders:
            self.wait_log(up, re.compile(r"uploader \S+: source"), 60)
        if self.replicas:
            (self.watch / "_warmup").mkdir(exist_ok=True)
            # one file per worker thread, so that every thread has its connection open (as in a
            # long-running service) before anything is timed
            warm = {f"_warmup/w{i}.bin" for i in range(self.replicas * self.concurrency)}
            for rel in warm:
                (self.watch / rel).write_bytes(b"warm" * 16)
            self.wait_done(warm, 0, timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.stop_all()
        self.tap.stop()
        self.purge_events()

    def purge_events(self) -> None:
        """Empty the shared event queues, which a notifier would drain in a deployment.

        The bench runs none, so each workload's lifecycle events (three per small file, tens of
        thousands a workload) would otherwise stay in the broker for every later workload.
        """
        conn = pika.BlockingConnection(pika.URLParameters(self.stack.amqp_url))
        try:
            for queue in (EVENTS_QUEUE, PROGRESS_QUEUE):
                with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):  # not declared yet
                    conn.channel().queue_purge(queue)
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def wait_log(self, proc: Proc, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = pattern.search(proc.text())
            if m:
                return m
            if not proc.alive():
                break
            time.sleep(0.05)
        raise RuntimeError(f"{proc.name}: no {pattern.pattern!r} in its log:\n{self.stack.tail_logs()}")

    def mark(self) -> int:
        return self.tap.read()

    def wait_done(self, paths: set[str], mark: int, timeout: float) -> dict[str, dict[str, Any]]:
        """Wait for a ``done`` event for each path (since ``mark``); returns them by path."""
        deadline = time.monotonic() + timeout
        got: dict[str, dict[str, Any]] = {}
        seen = mark
        while True:
            if self.tap.waiting() >= len(paths) - len(got) or time.monotonic() > deadline:
                self.tap.read()
            new = self.tap.events[seen:]
            seen += len(new)
            for e in new:
                if e.get("state") == "done" and e.get("path") in paths:
                    got[e["path"]] = e
                elif e.get("state") in ("failed", "dead") and e.get("path") in paths:
                    raise RuntimeError(f"skynet failed on {e['path']}: {e.get('reason')}")
            if len(got) == len(paths):
                return got
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(got)}/{len(paths)} files done after {timeout:.0f}s:\n{self.stack.tail_logs()}"
                )
            time.sleep(0.05)  # each poll is a request to the broker; the times come from the events

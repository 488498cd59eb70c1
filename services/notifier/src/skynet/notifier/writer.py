"""The notifier's database side: a thread that decodes and stores batches, in arrival order.

The broker thread hands over each batch and goes straight back to receiving the next one, so
pika's frame handling and Postgres's commit overlap instead of taking turns (the notifier's time
was split about evenly between the two). Batches are stored one at a time in the order they were
handed over; after each commit the writer asks the broker thread — the only one allowed to touch
pika — to dead-letter the batch's malformed events and then ack the whole batch.

Postgres away: the writer retries the same batch with backoff; the broker thread stops being
handed more once one batch waits (``handover`` blocks, servicing heartbeats), and the broker's
prefetch bounds what sits in memory. On stop while Postgres is away the batch is dropped unacked:
it stays in the queue for the next run.

The writer also keeps the notifier's own row in ``workers`` fresh (its heartbeat), straight into
Postgres between batches: a notifier that stops storing events shows as stale in ``/v1/workers``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from skynet.common.broker import backoff_delays
from skynet.common.errors import InvalidMessage
from skynet.common.messages import FileEvent, WorkerHeartbeat, decode_event
from skynet.notifier.store import EventsRejected, EventStore, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    tag: int
    body: bytes
    routing_key: str
    message_id: str | None


# Called on the broker thread once the batch is committed: (the batch, its malformed events).
Settle = Callable[[list[Pending], list[tuple[Pending, str]]], None]


@dataclass(frozen=True)
class _Job:
    chunk: list[Pending]
    settle: Settle


class BatchWriter:
    """One thread, one database connection, batches stored strictly in hand-over order."""

    def __init__(
        self,
        store: EventStore,
        stop: threading.Event,
        between: Callable[[], None],
        beat: Callable[[], WorkerHeartbeat] | None = None,
        beat_interval_s: float = 5.0,
    ) -> None:
        self._store = store
        self._stop = stop
        self._between = between  # housekeeping on the database thread (pruning), between batches
        self._beat = beat
        self._beat_interval = beat_interval_s
        self._next_beat = 0.0
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=1)
        self._lock = threading.Lock()
        self._outstanding = 0
        self._thread = threading.Thread(target=self._run, name="notifier-writer", daemon=True)
        self.stored = 0  # file events new to the log since start
        self.dead = 0

    def start(self) -> None:
        self._thread.start()

    def handover(self, chunk: list[Pending], settle: Settle, service: Callable[[], None]) -> None:
        """Queue a batch; while the writer is still busy with the previous ones, call ``service``."""
        job = _Job(chunk, settle)
        with self._lock:
            self._outstanding += 1
        while True:
            try:
                self._jobs.put(job, timeout=0.0)
                return
            except queue.Full:
                service()

    @property
    def idle(self) -> bool:
        """True once every batch handed over is settled (or dropped at stop)."""
        with self._lock:
            return self._outstanding == 0

    def close(self, timeout: float = 30.0) -> None:
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=1.0)
            except queue.Empty:
                self._housekeeping()
                continue
            if job is None:
                self._last_beat()
                return
            try:
                dead = self._store_with_retry(job.chunk)
            except _Stopping:
                log.info("notifier stopping with %d events unstored; they stay in the queue", len(job.chunk))
            else:
                self.dead += len(dead)
                job.settle(job.chunk, dead)
            finally:
                with self._lock:
                    self._outstanding -= 1
            self._housekeeping()

    @property
    def outstanding(self) -> int:
        """Batches handed over and not yet settled."""
        with self._lock:
            return self._outstanding

    def _housekeeping(self) -> None:
        self._between()
        if self._beat is None or time.monotonic() < self._next_beat:
            return
        self._next_beat = time.monotonic() + self._beat_interval
        try:
            self._store.store([self._beat()])
        except (StoreUnavailable, EventsRejected) as exc:
            log.debug("notifier heartbeat not stored: %s", exc.reason)

    def _last_beat(self) -> None:
        """The notifier's row says it stopped, instead of growing stale."""
        if self._beat is None:
            return
        try:
            self._store.store([self._beat().last()])
        except (StoreUnavailable, EventsRejected) as exc:
            log.info("notifier's last heartbeat not stored: %s", exc.reason)

    def _store_with_retry(self, chunk: list[Pending]) -> list[tuple[Pending, str]]:
        decoded: list[tuple[Pending, FileEvent | WorkerHeartbeat]] = []
        dead: list[tuple[Pending, str]] = []
        for p in chunk:
            try:
                decoded.append((p, decode_event(p.body)))
            except InvalidMessage as exc:
                dead.append((p, exc.reason))
        delays = backoff_delays(0.5, 15.0)
        while True:
            try:
                return dead + self._store_bisect(decoded)
            except StoreUnavailable as exc:
                if self._stop.is_set():
                    raise _Stopping from exc
                delay = next(delays)
                log.warning("notifier: %s; %d events wait, retry in %.1fs", exc.reason, len(chunk), delay)
                self._stop.wait(delay)

    def _store_bisect(self, decoded: list[tuple[Pending, FileEvent | WorkerHeartbeat]]) -> list[tuple[Pending, str]]:
        """Store; when Postgres refuses a batch, split it to find and dead-letter the bad events."""
        if not decoded:
            return []
        try:
            self.stored += self._store.store([e for _, e in decoded], [p.body for p, _ in decoded])
            return []
        except EventsRejected as exc:
            if len(decoded) == 1:
                return [(decoded[0][0], exc.reason)]
            mid = len(decoded) // 2
            return self._store_bisect(decoded[:mid]) + self._store_bisect(decoded[mid:])


class _Stopping(Exception):
    """Shutdown was requested while a batch could not be stored: leave it unacked."""

"""Publishing lifecycle events without ever slowing or blocking the work they describe.

:class:`EventSink` hands events to a background thread that owns its own broker connection.
``emit`` never blocks: when the broker is away, events wait in a bounded in-memory buffer
(lifecycle events are kept up to ``max_buffer``; progress ticks are dropped first) and are sent
when it returns. A broken event path never stops files from moving.

Events are sent in batches. While they come fast (``LINGER_MIN_EVENTS`` or more within the last
tenth of a second: a busy uploader), the sink lingers ``linger_s`` (25 ms by default) for more
before it publishes, so it sends a few dozen events per round trip and confirm instead of one or
two: the broker's cost per message falls by half or more, and on a small machine that CPU goes to
the transfers (bench/NOTES.md). At a slower pace (a file now and then), and for any event that
says something went wrong (failed, dead, held), events go out at once. The time an event
describes is its ``created_at``, taken when it is emitted, so lingering moves no figure, only
when it is seen.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from skynet.common.broker import Outgoing, Publisher, backoff_delays
from skynet.common.errors import BrokerUnavailable
from skynet.common.messages import FileEvent, WorkerHeartbeat, encode
from skynet.common.topology import EVENTS_EXCHANGE, Topology

log = logging.getLogger(__name__)

BATCH_MAX = 500  # events per publish: the broker confirms them together
URGENT_STATES = frozenset({"failed", "dead", "held"})  # never held back by the linger
RATE_WINDOW_S = 0.1
LINGER_MIN_EVENTS = 8  # events taken within RATE_WINDOW_S before the sink starts to linger


class EventSink:
    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        name: str,
        max_buffer: int = 100_000,
        ca_file: str | None = None,
        linger_s: float = 0.025,
    ) -> None:
        self._publisher = Publisher(
            url, name=f"{name}-events", declare=topology.declare_events, ca_file=ca_file, batched=True
        )
        self._buffer: collections.deque[FileEvent | WorkerHeartbeat] = collections.deque()
        self._progress: dict[tuple[str, str], FileEvent] = {}
        self._max = max_buffer
        self._linger = linger_s
        self._lingering = False
        self._urgent = False
        self._window_start = float("-inf")  # monotonic; events taken since then: _window_count
        self._window_count = 0
        self._cond = threading.Condition()
        self._stop = False
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"{name}-events", daemon=True)

    def start(self) -> EventSink:
        self._thread.start()
        return self

    def emit(self, event: FileEvent | WorkerHeartbeat) -> None:
        with self._cond:
            if isinstance(event, FileEvent) and event.state == "progress":
                # Only the newest progress tick per file is worth sending.
                self._progress[(event.source, event.path)] = event
            elif len(self._buffer) >= self._max:
                self._dropped += 1
                if self._dropped % 1000 == 1:
                    log.warning("event buffer full (%d); dropped %d events", self._max, self._dropped)
                return
            else:
                self._buffer.append(event)
                if isinstance(event, FileEvent) and event.state in URGENT_STATES:
                    self._urgent = True
            if not self._lingering or self._urgent or len(self._buffer) >= BATCH_MAX:
                self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout`` seconds, then stop."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._publisher.close()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._buffer) + len(self._progress)

    def _take(self) -> tuple[list[FileEvent | WorkerHeartbeat], bool]:
        with self._cond:
            while not self._buffer and not self._progress and not self._stop:
                self._cond.wait(1.0)
                if not self._buffer and not self._progress:
                    return [], self._stop
            now = time.monotonic()
            if now - self._window_start >= RATE_WINDOW_S:
                self._window_start, self._window_count = now, 0
            if self._window_count >= LINGER_MIN_EVENTS:
                # Events come fast: linger for more. emit wakes this thread only for a full
                # batch, an urgent event or a stop.
                self._lingering = True
                until = now + self._linger
                while not self._stop and not self._urgent and len(self._buffer) < BATCH_MAX:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self._lingering = False
            self._urgent = False
            batch: list[FileEvent | WorkerHeartbeat] = list(self._progress.values())
            self._progress.clear()
            while self._buffer and len(batch) < BATCH_MAX:
                batch.append(self._buffer.popleft())
            self._window_count += len(batch)
            return batch, self._stop

    def _requeue(self, batch: list[FileEvent | WorkerHeartbeat]) -> None:
        with self._cond:
            for event in reversed(batch):
                if isinstance(event, FileEvent) and event.state == "progress":
                    self._progress.setdefault((event.source, event.path), event)
                else:
                    self._buffer.appendleft(event)

    def _run(self) -> None:
        delays = backoff_delays(0.5, 15.0)
        while True:
            batch, stopping = self._take()
            if not batch:
                if stopping:
                    return
                self._publisher.keepalive()
                continue
            try:
                self._publisher.publish_many([_outgoing(event) for event in batch])
                delays = backoff_delays(0.5, 15.0)
            except BrokerUnavailable as exc:
                self._requeue(batch)
                if stopping:
                    log.warning("event path down at shutdown; %d events not sent: %s", self.pending, exc.reason)
                    return
                delay = next(delays)
                log.warning("event path down (%s); %d events buffered, retry in %.1fs", exc.reason, self.pending, delay)
                with self._cond:
                    self._cond.wait(delay)


class Condition:
    """What keeps a worker from its work, in a sentence, and since when: for its heartbeat.

    ``set(None)`` once nothing does. A new sentence while one is set (a cause that changed, say)
    keeps the first one's start: the worker has been kept from its work since then.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text: str | None = None
        self._since: float | None = None

    def set(self, text: str | None) -> None:
        with self._lock:
            if text is None:
                self._since = None
            elif self._text is None:
                self._since = time.time()
            self._text = text

    def fields(self) -> dict[str, Any]:
        """The heartbeat's ``condition`` and ``condition_since``."""
        with self._lock:
            return {"condition": self._text, "condition_since": self._since}


def start_heartbeats(
    sink: EventSink, interval_s: float, make: Callable[[], WorkerHeartbeat], stop: threading.Event
) -> threading.Thread:
    """Emit ``make()`` every ``interval_s`` seconds until ``stop`` is set (a daemon thread)."""

    def beat() -> None:
        while not stop.wait(interval_s):
            sink.emit(make())

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    return thread


def send_last_heartbeat(sink: EventSink, make: Callable[[], WorkerHeartbeat]) -> None:
    """Say the worker is stopping (a heartbeat with ``stopped``), so that it shows as stopped at
    once instead of as alive until its heartbeats grow stale. Best effort: a worker that cannot
    even describe itself any more still stops."""
    try:
        sink.emit(make().last())
    except Exception as exc:  # the stop goes on; the worker's row goes stale instead
        log.warning("could not send the last heartbeat: %s", exc)


def _outgoing(event: FileEvent | WorkerHeartbeat) -> Outgoing:
    routing_key = event.type
    return Outgoing(
        EVENTS_EXCHANGE,
        routing_key,
        encode(event),
        persistent=not routing_key.startswith("progress."),
        message_id=event.id,
        message_type=routing_key,
    )

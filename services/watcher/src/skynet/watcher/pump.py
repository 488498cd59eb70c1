"""Draining the outbox to the broker, a batch at a time with publisher confirms.

A row leaves the outbox only after the broker confirmed its message (the whole batch). While the
broker is away the pump backs off (with jitter) and the outbox keeps growing; the watcher keeps
watching.

While the start-up scan runs, the pump waits (at most ``hold_s``): on a first start every file of
the tree becomes an action, and publishing them (plus a "queued" event each) while the walk is
still going would take the same CPU (one GIL) the scan needs. The scan finishes first, every change
it found is safe in the outbox, and then the pump drains at full speed. A tree too large to scan
within ``hold_s`` shares the CPU from then on, so uploads never wait long.
"""

from __future__ import annotations

import logging
import threading
import time

from skynet.common.broker import Outgoing, Publisher, backoff_delays
from skynet.common.errors import BrokerUnavailable
from skynet.common.messages import FileEvent, PathMoved
from skynet.common.topology import ACTIONS_EXCHANGE
from skynet.watcher.engine import EmitFn
from skynet.watcher.store import OutboxRow, Store

log = logging.getLogger(__name__)

_MOVED: str = PathMoved.model_fields["type"].default  # "action.moved.v1"


class OutboxPump:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        source: str,
        emit: EmitFn,
        batch: int = 500,
        hold_s: float = 10.0,
    ) -> None:
        self._store = store
        self._scanning: threading.Event | None = None
        self._hold_s = hold_s
        self._publisher = publisher
        self._source = source
        self._emit = emit
        self._batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self.published = 0
        self.thread = threading.Thread(target=self._run, name="outbox-pump", daemon=True)

    def start(self) -> OutboxPump:
        self.thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self.thread.join(timeout)
        self._publisher.close()

    def hold_during(self, scanning: threading.Event) -> None:
        """Wait (once, at most ``hold_s``) while ``scanning`` is set: the start-up scan's flag."""
        self._scanning = scanning

    def _hold_for_scan(self) -> None:
        """Wait while the start-up scan runs, once and at most ``hold_s``."""
        if self._scanning is None:
            return
        deadline = time.monotonic() + self._hold_s
        while self._scanning.is_set() and not self._stop.is_set() and time.monotonic() < deadline:
            self._stop.wait(0.02)
        self._scanning = None

    def _run(self) -> None:
        delays = backoff_delays(0.5, 30.0)
        while True:
            self._hold_for_scan()
            rows = self._store.pending(self._batch)
            if not rows:
                if self._stop.is_set():
                    return
                self._wake.wait(1.0)
                self._wake.clear()
                self._publisher.keepalive()
                continue
            sent: list[OutboxRow] = []
            try:
                # The batch is confirmed whole or reported failed whole (and sent again).
                self._publisher.publish_many(
                    [
                        Outgoing(
                            ACTIONS_EXCHANGE,
                            self._source,
                            row.body,
                            message_id=row.fields["id"],
                            message_type=row.fields["type"],
                        )
                        for row in rows
                    ]
                )
                sent = rows
                delays = backoff_delays(0.5, 30.0)
            except BrokerUnavailable as exc:
                delay = next(delays)
                log.warning(
                    "broker unavailable (%s); %d actions kept in the outbox; retrying in %.1fs",
                    exc.reason,
                    self._store.pending_count(),
                    delay,
                )
                if self._stop.is_set():
                    return
                self._stop.wait(delay)
            finally:
                if sent:
                    self._store.confirmed(sent)
                    self.published += len(sent)
                    for row in sent:
                        self._queued(row)

    def _queued(self, row: OutboxRow) -> None:
        f = row.fields
        if f["type"] == _MOVED:
            event = FileEvent.make("queued", source=self._source, path=f["dst"], src=f["src"], action_id=f["id"])
        else:
            size = (f.get("generation") or {}).get("size")
            event = FileEvent.make("queued", source=self._source, path=f["path"], size=size, action_id=f["id"])
        self._emit(event)

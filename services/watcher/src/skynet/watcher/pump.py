"""Draining the outbox to the broker, a batch at a time with publisher confirms.

A row leaves the outbox only after the broker confirmed its message (the whole batch). While the
broker is away the pump backs off (with jitter) and the outbox keeps growing; the watcher keeps
watching.

It also publishes the files a scan found that the index never held (:mod:`~skynet.watcher.discovered`),
once the outbox is empty: their index rows are written when the broker has confirmed them.

While the start-up scan runs, the pump waits (at most ``hold_s``): on a first start every file of
the tree becomes an action, and publishing them (plus a "queued" event each) while the walk is
still going would take the same CPU (one GIL) the scan needs. The scan finishes first, and then
the pump drains at full speed. A tree too large to scan within ``hold_s`` shares the CPU from
then on, so uploads never wait long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from skynet.common.broker import Outgoing, Publisher, backoff_delays
from skynet.common.errors import BrokerUnavailable
from skynet.common.messages import FileEvent, PathChanged, PathMoved, PruneRemote, encode_changed, new_id
from skynet.common.topology import ACTIONS_EXCHANGE
from skynet.watcher.discovered import Discovered
from skynet.watcher.engine import EmitFn
from skynet.watcher.scanner import Found
from skynet.watcher.store import OutboxRow, StateUnavailable, Store

log = logging.getLogger(__name__)

_MOVED: str = PathMoved.model_fields["type"].default  # "action.moved.v1"
_CHANGED: str = PathChanged.model_fields["type"].default  # "action.changed.v1"
_PRUNE: str = PruneRemote.model_fields["type"].default  # "action.prune.v1"


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
        self._unrecorded: list[OutboxRow] = []  # confirmed by the broker, not yet removed from the outbox
        self.discovered: Discovered | None = None
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
            try:
                self._confirm_unrecorded()
            except StateUnavailable as exc:
                if not self._wait_for_state(exc, delays):
                    return
                continue
            rows = self._store.pending(self._batch)
            # On stop the outbox is still drained (within stop()'s timeout); files found by a scan
            # are not: the next start's scan finds them again.
            stopping = self._stop.is_set()
            found = self.discovered.take(self._batch) if not (rows or stopping or self.discovered is None) else []
            if not rows and not found:
                if self._stop.is_set():
                    return
                self._wake.wait(1.0)
                self._wake.clear()
                self._publisher.keepalive()
                continue
            try:
                # The batch is confirmed whole or reported failed whole (and sent again).
                if rows:
                    self._publish_rows(rows)
                else:
                    self._publish_found(found)
                delays = backoff_delays(0.5, 30.0)
            except BrokerUnavailable as exc:
                if found and self.discovered is not None:
                    self.discovered.put_back(found)
                delay = next(delays)
                log.warning(
                    "broker unavailable (%s); %d actions kept in the outbox, %d found files waiting; retrying in %.1fs",
                    exc.reason,
                    self._store.pending_count(),
                    len(self.discovered or ()),
                    delay,
                )
                if self._stop.is_set():
                    return
                self._stop.wait(delay)
            except StateUnavailable as exc:
                if not self._wait_for_state(exc, delays):
                    return

    def _confirm_unrecorded(self) -> None:
        """Remove the outbox rows the broker confirmed but the state could not forget yet."""
        if self._unrecorded:
            self._store.confirmed(self._unrecorded)
            self._unrecorded = []

    def _wait_for_state(self, exc: StateUnavailable, delays: Iterator[float]) -> bool:
        """The state cannot be written: wait (False if stopping). Published rows are not sent again
        meanwhile (they are removed from the outbox once it can be written); files published from
        a scan and not indexed are found by the next scan and checked again, harmlessly."""
        delay = next(delays)
        log.error("%s; publishing again in %.1fs", exc.reason, delay)
        if self._stop.is_set():
            return False
        self._stop.wait(delay)
        return True

    def _publish_rows(self, rows: list[OutboxRow]) -> None:
        at = time.time()  # see _queued
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
        self.published += len(rows)
        for row in rows:
            self._queued(row, at)
        self._unrecorded = rows
        self._confirm_unrecorded()

    def _publish_found(self, found: list[Found]) -> None:
        """Publish files a scan found; index them once confirmed (unless they changed meanwhile)."""
        ids = [new_id() for _ in found]
        at = time.time()  # see _queued
        self._publisher.publish_many(
            [
                Outgoing(
                    ACTIONS_EXCHANGE,
                    self._source,
                    encode_changed(self._source, rel, *gen, action_id=aid),
                    message_id=aid,
                    message_type=_CHANGED,
                )
                for (rel, gen), aid in zip(found, ids, strict=True)
            ]
        )
        assert self.discovered is not None
        current = self.discovered.current
        self.published += len(found)
        for (rel, gen), aid in zip(found, ids, strict=True):
            self._emit(
                FileEvent.make("queued", source=self._source, path=rel, size=gen[0], action_id=aid, created_at=at)
            )
        self._store.index_add([(rel, *gen) for rel, gen in found if current(rel, gen)])

    def _queued(self, row: OutboxRow, at: float) -> None:
        """The "queued" event of an action published at ``at``, emitted once the broker confirmed it.

        It is dated ``at``, before the publish, not when the confirm came: an uploader may take,
        send and report the action (its "started" and "done") before the confirm arrives (the
        broker confirms a persistent message once it is on disk). The notifier keeps a file's
        newest event as its state; a "queued" dated after the confirm would then stand as the
        state of a file that is done, for good.
        """
        f = row.fields
        if f["type"] == _PRUNE:
            return  # about no one file
        if f["type"] == _MOVED:
            event = FileEvent.make(
                "queued", source=self._source, path=f["dst"], src=f["src"], action_id=f["id"], created_at=at
            )
        else:
            size = (f.get("generation") or {}).get("size")
            event = FileEvent.make(
                "queued", source=self._source, path=f["path"], size=size, action_id=f["id"], created_at=at
            )
        self._emit(event)

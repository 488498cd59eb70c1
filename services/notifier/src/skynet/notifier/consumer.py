"""The notifier's consuming loop: batches deliveries, stores them, then acks them all at once.

One thread owns the broker connection (pika's rule) and the database connection. It consumes the
lifecycle queue and the progress queue on one channel, so delivery tags are one sequence and one
``basic_ack(multiple=True)`` settles a whole batch — and only after the Postgres commit.

* Postgres away: the batch stays unacked; the loop retries with backoff while still servicing
  heartbeats; the events wait in their queues (prefetch bounds what sits in memory).
* Broker away: unacked deliveries go back to the queue by themselves; the loop reconnects.
  Events stored but not yet acked come back and are skipped by the idempotent insert.
* Malformed event: published (confirmed) to ``skynet.events.dead`` with the reason, then acked
  with its batch; it never stops the others.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from skynet.common.broker import backoff_delays, connect, reconnect_forever, redact_url
from skynet.common.errors import BrokerUnavailable, InvalidMessage
from skynet.common.messages import FileEvent, WorkerHeartbeat, decode_event
from skynet.common.topology import EVENTS_DEAD_QUEUE, EVENTS_QUEUE, HEADER_REASON, PROGRESS_QUEUE, Topology
from skynet.notifier.settings import NotifierSettings
from skynet.notifier.store import EventsRejected, EventStore, StoreUnavailable

log = logging.getLogger(__name__)

_PIKA_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError, AssertionError)
PRUNE_CHUNK = 5000


@dataclass(frozen=True)
class Pending:
    tag: int
    body: bytes
    routing_key: str
    message_id: str | None


class _Stopping(Exception):
    """Shutdown was requested while a batch could not be stored: leave it unacked."""


class BatchConsumer:
    def __init__(self, settings: NotifierSettings, store: EventStore) -> None:
        self._settings = settings
        self._store = store
        self._topology = Topology(
            source=settings.source, queue_type=settings.queue_type, progress_queue_max=settings.progress_queue_max
        )
        self._batch = settings.batch_size
        self._latency = settings.batch_latency_ms / 1000.0
        self._stop = threading.Event()
        self._pending: list[Pending] = []
        self._next_prune = time.monotonic() + 5.0
        self.stored = 0  # file events new to the log since start
        self.dead = 0

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Consume until :meth:`stop`; reconnect with backoff whenever the broker goes away."""
        reconnect_forever(self._run_once, self._stop, "notifier")

    def _run_once(self) -> None:
        url = self._settings.amqp_url.get_secret_value()
        conn = connect(
            url, name="skynet-notifier", heartbeat=self._settings.heartbeat_s, ca_file=self._settings.amqp_ca_file
        )
        self._pending = []
        try:
            ch = conn.channel()
            self._topology.declare_events(ch)
            ch.basic_qos(prefetch_count=self._batch * 2)
            pub = conn.channel()
            pub.confirm_delivery()
            for queue in (EVENTS_QUEUE, PROGRESS_QUEUE):
                ch.basic_consume(queue, self._on_message, auto_ack=False)
            log.info("notifier consuming %s and %s at %s", EVENTS_QUEUE, PROGRESS_QUEUE, redact_url(url))
            first_at = 0.0
            while not self._stop.is_set():
                wait = 0.2 if not self._pending else max(0.0, first_at + self._latency - time.monotonic())
                before = len(self._pending)
                conn.process_data_events(time_limit=wait)
                if self._pending and before == 0:
                    first_at = time.monotonic()
                if self._pending and (
                    len(self._pending) >= self._batch or time.monotonic() >= first_at + self._latency
                ):
                    self._flush_all(conn, ch, pub)
                    first_at = time.monotonic()
                self._maybe_prune()
            # Shutting down: stop deliveries, store what we hold if the database lets us.
            ch.stop_consuming()
            conn.process_data_events(time_limit=0)
            if self._pending:
                self._flush_all(conn, ch, pub)
        except _Stopping:
            log.info("notifier stopping with %d events unacked; they stay in the queue", len(self._pending))
        except _PIKA_ERRORS as exc:
            raise BrokerUnavailable(f"broker connection lost: {type(exc).__name__}") from exc
        finally:
            self._pending = []
            try:
                if conn.is_open:
                    conn.close()
            except _PIKA_ERRORS:
                pass

    def _on_message(self, _ch: BlockingChannel, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        self._pending.append(Pending(method.delivery_tag, body, method.routing_key, props.message_id))

    def _flush_all(self, conn: BlockingConnection, ch: BlockingChannel, pub: BlockingChannel) -> None:
        while self._pending:
            chunk = self._pending[: self._batch]
            self._flush(conn, ch, pub, chunk)
            del self._pending[: len(chunk)]
            if len(self._pending) < self._batch:
                return  # the rest waits for the batch latency

    def _flush(self, conn: BlockingConnection, ch: BlockingChannel, pub: BlockingChannel, chunk: list[Pending]) -> None:
        decoded: list[tuple[Pending, FileEvent | WorkerHeartbeat]] = []
        dead: list[tuple[Pending, str]] = []
        for p in chunk:
            try:
                decoded.append((p, decode_event(p.body)))
            except InvalidMessage as exc:
                dead.append((p, exc.reason))
        dead.extend(self._store_with_retry(conn, decoded))
        for p, reason in dead:
            self._dead_letter(pub, p, reason)
        ch.basic_ack(chunk[-1].tag, multiple=True)

    def _store_with_retry(
        self, conn: BlockingConnection, decoded: list[tuple[Pending, FileEvent | WorkerHeartbeat]]
    ) -> list[tuple[Pending, str]]:
        delays = backoff_delays(0.5, 15.0)
        while True:
            try:
                return self._store_bisect(decoded)
            except StoreUnavailable as exc:
                if self._stop.is_set():
                    raise _Stopping from exc
                delay = next(delays)
                log.warning("notifier: %s; %d events wait, retry in %.1fs", exc.reason, len(self._pending), delay)
                self._idle(conn, delay)

    def _store_bisect(self, decoded: list[tuple[Pending, FileEvent | WorkerHeartbeat]]) -> list[tuple[Pending, str]]:
        """Store; when Postgres refuses a batch, split it to find and dead-letter the bad events."""
        if not decoded:
            return []
        try:
            self.stored += self._store.store([e for _, e in decoded])
            return []
        except EventsRejected as exc:
            if len(decoded) == 1:
                return [(decoded[0][0], exc.reason)]
            mid = len(decoded) // 2
            return self._store_bisect(decoded[:mid]) + self._store_bisect(decoded[mid:])

    def _idle(self, conn: BlockingConnection, seconds: float) -> None:
        """Wait while still servicing heartbeats (and queueing deliveries up to the prefetch)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            conn.process_data_events(time_limit=min(0.5, left))

    def _dead_letter(self, pub: BlockingChannel, p: Pending, reason: str) -> None:
        self.dead += 1
        log.warning("event %s (%s) dead-lettered: %s", p.message_id, p.routing_key[:80], reason)
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            headers={HEADER_REASON: reason[:1000], "x-skynet-routing-key": p.routing_key[:255]},
            message_id=p.message_id,
        )
        pub.basic_publish("", EVENTS_DEAD_QUEUE, p.body, props, mandatory=True)

    def _maybe_prune(self) -> None:
        if time.monotonic() < self._next_prune:
            return
        s = self._settings
        now = datetime.now(UTC)
        try:
            deleted = self._store.prune(
                now - timedelta(days=s.event_retention_days),
                now - timedelta(minutes=s.progress_retention_minutes),
                now - timedelta(days=s.event_retention_days),
                PRUNE_CHUNK,
            )
        except (StoreUnavailable, EventsRejected) as exc:
            log.warning("notifier: pruning old events failed: %s", exc.reason)
            self._next_prune = time.monotonic() + 30.0
            return
        if deleted:
            log.info("pruned %d old events", deleted)
        # More left: come back soon, between batches, instead of one long delete.
        self._next_prune = time.monotonic() + (1.0 if deleted >= PRUNE_CHUNK else s.prune_interval_s)

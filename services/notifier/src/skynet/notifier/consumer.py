"""The notifier's consuming loop: batches deliveries, hands them to the writer, acks after commit.

One thread owns the broker connection (pika's rule). It consumes the lifecycle queue and the
progress queue on one channel, so delivery tags are one sequence and one
``basic_ack(multiple=True)`` settles a whole batch — and only after the Postgres commit, which the
:class:`~skynet.notifier.writer.BatchWriter` thread does while this one receives the next batch.

* Postgres away: the writer retries its batch with backoff; this loop keeps servicing heartbeats
  and stops handing over; the events wait in their queues (prefetch bounds what sits in memory).
* Broker away: unacked deliveries go back to the queue by themselves; the loop reconnects.
  Events stored but not yet acked come back and are skipped by the idempotent insert.
* Malformed event: published (confirmed) to ``skynet.events.dead`` with the reason, then acked
  with its batch; it never stops the others.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from skynet.common.broker import connect, reconnect_forever, redact_url
from skynet.common.errors import BrokerUnavailable
from skynet.common.messages import WorkerHeartbeat
from skynet.common.topology import EVENTS_DEAD_QUEUE, EVENTS_QUEUE, HEADER_REASON, PROGRESS_QUEUE, Topology
from skynet.notifier.settings import NotifierSettings
from skynet.notifier.store import EventsRejected, EventStore, StoreUnavailable
from skynet.notifier.writer import BatchWriter, Pending

log = logging.getLogger(__name__)

_PIKA_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError, AssertionError)
PRUNE_CHUNK = 5000


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
        self._started = time.time()
        self._host = socket.gethostname()
        self._writer = BatchWriter(
            store, self._stop, self._maybe_prune, self._heartbeat, beat_interval_s=settings.heartbeat_interval_s
        )

    @property
    def stored(self) -> int:
        """File events new to the log since start."""
        return self._writer.stored

    @property
    def dead(self) -> int:
        return self._writer.dead

    def stop(self) -> None:
        self._stop.set()

    def _heartbeat(self) -> WorkerHeartbeat:
        """The notifier's row in ``workers``: batches in hand of the size it stores, events stored."""
        return WorkerHeartbeat(
            source=self._settings.source,
            worker=self._settings.worker_id,
            role="notifier",
            active=self._writer.outstanding,
            capacity=self._batch,
            files_done=self._writer.stored,
            host=self._host,
            started_at=self._started,
        )

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Consume until :meth:`stop`; reconnect with backoff whenever the broker goes away."""
        self._writer.start()
        try:
            reconnect_forever(self._run_once, self._stop, "notifier")
        finally:
            self._writer.close()

    def _run_once(self) -> None:
        url = self._settings.amqp_url.get_secret_value()
        conn = connect(
            url, name="skynet-notifier", heartbeat=self._settings.heartbeat_s, ca_file=self._settings.amqp_ca_file
        )
        self._pending = []
        try:
            ch = conn.channel()
            self._topology.declare_events(ch)
            # One batch being stored, one waiting for the writer, one filling up.
            ch.basic_qos(prefetch_count=self._batch * 3)
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
                    self._hand_over(conn, ch, pub)
                    first_at = time.monotonic()
            # Shutting down: stop deliveries, store what we hold if the database lets us.
            ch.stop_consuming()
            conn.process_data_events(time_limit=0)
            while self._pending:
                self._hand_over(conn, ch, pub)
            while not self._writer.idle:
                conn.process_data_events(time_limit=0.05)
            conn.process_data_events(time_limit=0)  # the last acks
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

    def _hand_over(self, conn: BlockingConnection, ch: BlockingChannel, pub: BlockingChannel) -> None:
        """Give the writer the oldest batch; wait (receiving, heartbeating) while it is still busy."""
        chunk = self._pending[: self._batch]
        del self._pending[: len(chunk)]

        def settle(done: list[Pending], dead: list[tuple[Pending, str]]) -> None:
            # Writer thread: the commit is done; the acks belong to the broker thread.
            # If that connection is gone, the batch comes back and is skipped as already stored.
            with contextlib.suppress(*_PIKA_ERRORS):
                conn.add_callback_threadsafe(lambda: self._settle(ch, pub, done, dead))

        self._writer.handover(chunk, settle, lambda: conn.process_data_events(time_limit=0.05))

    def _settle(
        self, ch: BlockingChannel, pub: BlockingChannel, done: list[Pending], dead: list[tuple[Pending, str]]
    ) -> None:
        if not ch.is_open:
            return
        for p, reason in dead:
            self._dead_letter(pub, p, reason)
        ch.basic_ack(done[-1].tag, multiple=True)

    def _dead_letter(self, pub: BlockingChannel, p: Pending, reason: str) -> None:
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

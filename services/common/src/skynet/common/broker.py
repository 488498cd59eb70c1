"""RabbitMQ adapter over pika: a confirmed publisher and a threaded consumer with manual acks.

pika's threading rules are kept: one connection per thread, a channel is only touched by the
thread that owns its connection, slow work runs on worker threads and hands its ack back with
``connection.add_callback_threadsafe``. Heartbeat, blocked-connection timeout and prefetch are set
explicitly. Every pika exception stops here and becomes :class:`BrokerUnavailable`.

Long transfers and the broker: a delivery stays unacked for as long as its transfer runs (the ack
means "the remote reflects it"). Heartbeats keep flowing because the consumer's thread never does
the transfer itself; it keeps calling ``process_data_events``. RabbitMQ's ``consumer_timeout`` is
raised in ``deploy/rabbitmq/rabbitmq.conf``; should the broker still close the channel, the
message is redelivered and the next reconcile finds the remote already up to date (one HEAD/stat).
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import pika
import pika.exceptions
import tenacity
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from skynet.common.errors import BrokerUnavailable
from skynet.common.topology import HEADER_ATTEMPTS, HEADER_REASON, Topology, dead_queue

log = logging.getLogger(__name__)

_PIKA_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError,
    OSError,
    AssertionError,  # pika raises it on use of a closed connection from some paths
)


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/vh`` → ``amqp://user:***@host/vh`` (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def connection_parameters(
    url: str, *, name: str, heartbeat: int = 30, ca_file: str | None = None
) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = 10
    params.client_properties = {"connection_name": name, "product": "skynet"}
    if urlsplit(url).scheme == "amqps":
        # TLS with verification on: the system CAs, or SKYNET_AMQP_CA_FILE.
        context = ssl.create_default_context(cafile=ca_file)
        params.ssl_options = pika.SSLOptions(context, server_hostname=urlsplit(url).hostname)
    return params


def connect(url: str, *, name: str, heartbeat: int = 30, ca_file: str | None = None) -> BlockingConnection:
    """Open one blocking connection or raise :class:`BrokerUnavailable`."""
    try:
        return BlockingConnection(connection_parameters(url, name=name, heartbeat=heartbeat, ca_file=ca_file))
    except _PIKA_ERRORS as exc:
        raise BrokerUnavailable(f"cannot connect to broker at {redact_url(url)}: {_cause(exc)}") from exc


def _cause(exc: BaseException) -> str:
    """pika's connection errors, said in one line: "AMQPConnectionError: ... Connection refused"."""
    detail = str(exc) or (repr(exc.args[0]) if exc.args else "")
    return f"{type(exc).__name__}: {detail}"[:300] if detail else type(exc).__name__


def _said(exc: BaseException) -> str:
    """A pika error in one line; a queue the broker holds with another type says what to change.

    Redeclaring a queue with other arguments is refused (406 PRECONDITION_FAILED) until the
    settings agree: RabbitMQ's text names the argument, this names the setting behind it.
    """
    text = _cause(exc)
    if (
        isinstance(exc, pika.exceptions.ChannelClosedByBroker)
        and exc.reply_code == 406
        and "x-queue-type" in str(exc.reply_text)
    ):
        text += (
            " (SKYNET_QUEUE_TYPE differs from the type of the queue already on the broker: give every"
            " service the same value, or delete the queue once it is empty)"
        )
    return text


def backoff_delays(base: float = 0.5, cap: float = 30.0) -> Iterator[float]:
    """Delays for reconnect loops, forever: exponential from ``base`` with jitter, capped (tenacity)."""
    wait = tenacity.wait_exponential_jitter(multiplier=base, max=cap, jitter=base)
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    while True:
        yield float(wait(state))
        state.attempt_number += 1


def reconnect_forever(
    run_once: Callable[[], None],
    stop: threading.Event,
    what: str,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    level: int = logging.WARNING,
) -> None:
    """Call ``run_once`` (one connection's lifetime) until ``stop`` is set, waiting with backoff
    and jitter after each :class:`BrokerUnavailable`; a clean return resets the backoff."""
    delays = backoff_delays(base, cap)
    while not stop.is_set():
        try:
            run_once()
            delays = backoff_delays(base, cap)
        except BrokerUnavailable as exc:
            delay = next(delays)
            log.log(level, "%s: %s; reconnecting in %.1fs", what, exc.reason, delay)
            stop.wait(delay)


class _BatchConfirms:
    """Publisher confirms for many messages in flight on one channel (pika's own blocking
    channel waits for each in turn). Only the publisher's thread touches it."""

    def __init__(self, ch: BlockingChannel) -> None:
        self._ch = ch
        self._impl = ch._impl  # pika's asynchronous channel under the blocking one
        self._next_tag = 0
        self._unconfirmed: set[int] = set()
        self._nacked = 0
        self._returned = 0
        selected: list[bool] = []
        self._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _frame: selected.append(True))
        self._impl.add_on_return_callback(self._on_return)
        self._loop(lambda: bool(selected))

    def _loop(self, done: Callable[[], bool]) -> None:
        # Runs the connection's I/O loop until done() (raises if the channel or connection closes).
        self._ch._flush_output(done)

    def publish(self, exchange: str, routing_key: str, body: bytes, props: pika.BasicProperties) -> None:
        """Buffer one message (written out by :meth:`wait`)."""
        self._impl.basic_publish(exchange, routing_key, body, props, mandatory=True)
        self._next_tag += 1
        self._unconfirmed.add(self._next_tag)

    def wait(self) -> str | None:
        """Wait until every message published so far is confirmed; say what went wrong, if anything."""
        self._loop(lambda: not self._unconfirmed)
        problem = None
        if self._nacked:
            problem = f"broker refused {self._nacked} messages"
        elif self._returned:
            problem = f"{self._returned} messages were unroutable"
        self._nacked = self._returned = 0
        return problem

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = int(method.delivery_tag)
        settled = {t for t in self._unconfirmed if t <= tag} if method.multiple else {tag} & self._unconfirmed
        self._unconfirmed -= settled
        if isinstance(method, pika.spec.Basic.Nack):
            self._nacked += len(settled)

    def _on_return(self, _impl: Any, _method: Any, _props: Any, _body: bytes) -> None:
        self._returned += 1  # the broker returns an unroutable message before confirming it


@dataclass(frozen=True)
class Outgoing:
    """One message for :meth:`Publisher.publish_many`."""

    exchange: str
    routing_key: str
    body: bytes
    persistent: bool = True
    message_id: str | None = None
    message_type: str | None = None
    headers: dict[str, Any] | None = None


class Publisher:
    """A confirmed publisher owned by one thread; reconnects lazily on the next publish.

    ``publish`` returns once the broker has confirmed the message (persisted for durable
    queues), or raises :class:`BrokerUnavailable` (the caller keeps its copy and tries again).

    ``publish_many`` does the same for a batch at the cost of one round trip: a publisher made
    with ``batched=True`` sends the whole batch, then waits once until the broker has confirmed
    every message of it (confirms arrive as they are persisted; one nack or one unroutable
    message fails the batch, which the caller resends whole: consumers are idempotent). pika's
    blocking channel can only wait for each confirm in turn, which was the largest share of the
    watcher's and the uploader's CPU per small file, so the batch goes through the asynchronous
    channel underneath it (``BlockingChannel._impl``), driven by the blocking connection's loop.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        declare: Callable[[BlockingChannel], None] | None = None,
        heartbeat: int = 30,
        ca_file: str | None = None,
        batched: bool = False,
    ) -> None:
        self._url = url
        self._name = name
        self._declare = declare
        self._heartbeat = heartbeat
        self._ca_file = ca_file
        self._batched = batched
        self._confirms: _BatchConfirms | None = None
        self._conn: BlockingConnection | None = None
        self._ch: BlockingChannel | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open and self._ch is not None and self._ch.is_open

    def _ensure(self) -> BlockingChannel:
        if self.connected:
            assert self._ch is not None
            return self._ch
        self.close()
        conn = connect(self._url, name=self._name, heartbeat=self._heartbeat, ca_file=self._ca_file)
        try:
            ch = conn.channel()
            if self._batched:
                self._confirms = _BatchConfirms(ch)
            else:
                ch.confirm_delivery()
            if self._declare is not None:
                self._declare(ch)
        except _PIKA_ERRORS as exc:
            _quiet_close(conn)
            raise BrokerUnavailable(f"cannot set up publisher channel: {_said(exc)}") from exc
        self._conn, self._ch = conn, ch
        log.info("publisher %s connected to %s", self._name, redact_url(self._url))
        return ch

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: dict[str, Any] | None = None,
        persistent: bool = True,
        message_id: str | None = None,
        message_type: str | None = None,
        mandatory: bool = True,
    ) -> None:
        if self._batched:
            self.publish_many([Outgoing(exchange, routing_key, body, persistent, message_id, message_type, headers)])
            return
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient,
            headers=headers or None,
            message_id=message_id,
            type=message_type,
            timestamp=int(time.time()),
        )
        ch = self._ensure()
        try:
            ch.basic_publish(exchange, routing_key, body, props, mandatory=mandatory)
        except pika.exceptions.UnroutableError as exc:
            raise BrokerUnavailable(f"message to {exchange}/{routing_key} was unroutable") from exc
        except pika.exceptions.NackError as exc:
            raise BrokerUnavailable(f"broker refused message to {exchange}/{routing_key}") from exc
        except _PIKA_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"publish to {exchange}/{routing_key} failed: {type(exc).__name__}") from exc

    def publish_many(self, messages: Sequence[Outgoing]) -> None:
        """Publish every message or raise :class:`BrokerUnavailable` (then resend them all)."""
        if not self._batched:
            for m in messages:
                self.publish(
                    m.exchange,
                    m.routing_key,
                    m.body,
                    headers=m.headers,
                    persistent=m.persistent,
                    message_id=m.message_id,
                    message_type=m.message_type,
                )
            return
        if not messages:
            return
        self._ensure()
        assert self._confirms is not None
        now = int(time.time())
        try:
            for m in messages:
                props = pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent if m.persistent else pika.DeliveryMode.Transient,
                    headers=m.headers or None,
                    message_id=m.message_id,
                    type=m.message_type,
                    timestamp=now,
                )
                self._confirms.publish(m.exchange, m.routing_key, m.body, props)
            problem = self._confirms.wait()
        except _PIKA_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"publishing {len(messages)} messages failed: {type(exc).__name__}") from exc
        if problem:
            raise BrokerUnavailable(f"{problem} (batch of {len(messages)})")

    def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (passive declare); raises BrokerUnavailable."""
        ch = self._ensure()
        try:
            return int(ch.queue_declare(queue=queue, passive=True).method.message_count)
        except _PIKA_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"cannot read depth of {queue}: {type(exc).__name__}") from exc

    def keepalive(self) -> None:
        """Service heartbeats while idle; call every second or so from the owning thread."""
        if self._conn is None:
            return
        try:
            self._conn.process_data_events(time_limit=0)
        except _PIKA_ERRORS:
            self.close()

    def close(self) -> None:
        conn, self._conn, self._ch, self._confirms = self._conn, None, None, None
        if conn is not None:
            _quiet_close(conn)


def declare_consumer_topology(topology: Topology, ch: BlockingChannel) -> None:
    """What an uploader needs: the actions (:meth:`Topology.declare_actions`) and the retry queues
    with the delays of its own ``SKYNET_RETRY_DELAYS_S``.

    A retry queue that already exists with other arguments (uploaders started with other delays,
    the setting changed since) cannot be redeclared: the broker refuses with PRECONDITION_FAILED
    and closes the channel. Each retry queue is therefore declared on a channel of its own, and
    one that exists with other arguments is used as it is, with a warning that says how to change
    it, instead of the uploader never getting to work.
    """
    topology.declare_actions(ch)
    for name, delay, arguments in topology.retry_queues():
        side = ch.connection.channel()
        try:
            side.queue_declare(queue=name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:
                raise
            log.warning(
                "retry queue %s already exists with other arguments than SKYNET_RETRY_DELAYS_S gives it"
                " (%g s): using it as it is. To change the delays, stop the uploaders of this source and"
                " delete its retry queues (skynet.retry.%s.*) once they are empty",
                name,
                delay,
                topology.source,
            )
            continue
        side.close()


def _quiet_close(conn: BlockingConnection) -> None:
    try:
        if conn.is_open:
            conn.close()
    except _PIKA_ERRORS:
        pass


# ------------------------------------------------------------------------------- consuming


@dataclass(frozen=True)
class Delivery:
    body: bytes
    delivery_tag: int
    routing_key: str
    redelivered: bool
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None

    @property
    def attempts(self) -> int:
        """How many times this message already failed (0 for a fresh one)."""
        value = self.headers.get(HEADER_ATTEMPTS, 0)
        return value if isinstance(value, int) and value >= 0 else 0


@dataclass(frozen=True)
class Outcome:
    """What to do with a delivery once its handler has finished.

    ``ack``: done. ``retry``: failed, worth retrying after a delay. ``dead``: cannot succeed;
    park it in the dead queue with ``reason``. ``requeue``: not this worker's fault (the remote is
    away); put it back without counting an attempt.
    """

    kind: Literal["ack", "retry", "dead", "requeue"]
    reason: str = ""


ACK = Outcome("ack")

Handler = Callable[[Delivery], Outcome]


class Consumer:
    """Consume one queue with ``prefetch`` deliveries in flight, handled on ``workers`` threads
    (default: one per delivery). A few more deliveries than workers keep the next one at hand
    when a worker finishes, instead of a round trip to the broker after each ack.

    ``run`` owns the connection and blocks until ``stop()``; it reconnects with backoff and
    jitter whenever the broker goes away. ``pause()`` cancels consumption (in-flight work goes
    on) until ``resume()``; a paused consumer takes no new work.
    """

    def __init__(
        self,
        url: str,
        queue: str,
        handler: Handler,
        *,
        topology: Topology,
        prefetch: int,
        workers: int | None = None,
        name: str,
        max_attempts: int = 6,
        declare: Callable[[BlockingChannel], None] | None = None,
        heartbeat: int = 30,
        ca_file: str | None = None,
        on_dead: Callable[[Delivery, str, int], None] | None = None,
        on_retry: Callable[[Delivery, str, int], None] | None = None,
        stop_grace_s: float = 20.0,
        on_grace_expired: Callable[[], None] | None = None,
    ) -> None:
        self._url = url
        self._queue = queue
        self._handler = handler
        self._topology = topology
        self._prefetch = prefetch
        self._name = name
        self._max_attempts = max_attempts
        self._declare = declare
        self._heartbeat = heartbeat
        self._ca_file = ca_file
        self._on_dead = on_dead
        self._on_retry = on_retry
        self._stop_grace_s = stop_grace_s
        self._on_grace_expired = on_grace_expired
        self._executor = ThreadPoolExecutor(max_workers=workers or prefetch, thread_name_prefix=f"{name}-work")
        self._stop = threading.Event()
        self._want_paused = threading.Event()
        self._inflight: set[Future[None]] = set()
        self._inflight_lock = threading.Lock()
        self._conn: BlockingConnection | None = None
        self._connected = threading.Event()

    # -- control, from any thread
    def stop(self) -> None:
        self._stop.set()

    def pause(self) -> None:
        self._want_paused.set()

    def resume(self) -> None:
        self._want_paused.clear()

    @property
    def paused(self) -> bool:
        return self._want_paused.is_set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        with self._inflight_lock:
            return len(self._inflight)

    # -- the consumer thread
    def run(self) -> None:
        reconnect_forever(self._run_once, self._stop, f"consumer {self._name}")
        self._drain()

    def _run_once(self) -> None:
        conn = connect(self._url, name=self._name, heartbeat=self._heartbeat, ca_file=self._ca_file)
        self._conn = conn
        try:
            ch = conn.channel()
            pub = conn.channel()
            pub.confirm_delivery()
            if self._declare is not None:
                self._declare(ch)
            ch.basic_qos(prefetch_count=self._prefetch)
            self._connected.set()
            log.info("consumer %s connected to %s, queue %s", self._name, redact_url(self._url), self._queue)
            tag: str | None = None
            while not self._stop.is_set():
                if tag is None and not self._want_paused.is_set():
                    tag = ch.basic_consume(
                        self._queue,
                        functools.partial(self._on_message, conn, ch, pub),
                        auto_ack=False,
                    )
                elif tag is not None and self._want_paused.is_set():
                    ch.basic_cancel(tag)
                    tag = None
                    log.info("consumer %s paused: taking no new work", self._name)
                conn.process_data_events(time_limit=0.2)
            if tag is not None:
                ch.basic_cancel(tag)
            self._finish_in_flight(conn)
        except _PIKA_ERRORS as exc:
            raise BrokerUnavailable(f"consumer connection lost: {_said(exc)}") from exc
        finally:
            self._connected.clear()
            self._conn = None
            _quiet_close(conn)

    def _finish_in_flight(self, conn: BlockingConnection) -> None:
        """On stop: let in-flight work finish and settle for ``stop_grace_s``, then ask it to hand
        back (``on_grace_expired``) and settle what it returns; whatever is still unsettled when
        the connection closes goes back to the queue by itself."""
        deadline = time.monotonic() + self._stop_grace_s
        asked = False
        while self.in_flight:
            if time.monotonic() >= deadline:
                if asked or self._on_grace_expired is None:
                    break
                asked = True
                log.info("consumer %s: %d transfers still running; handing them back", self._name, self.in_flight)
                self._on_grace_expired()
                deadline = time.monotonic() + 10
            conn.process_data_events(time_limit=0.2)
        conn.process_data_events(time_limit=0)

    def _drain(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _on_message(
        self,
        conn: BlockingConnection,
        ch: BlockingChannel,
        pub: BlockingChannel,
        _ch: BlockingChannel,
        method: Any,
        props: pika.BasicProperties,
        body: bytes,
    ) -> None:
        delivery = Delivery(
            body=body,
            delivery_tag=method.delivery_tag,
            routing_key=method.routing_key,
            redelivered=bool(method.redelivered),
            headers=dict(props.headers or {}),
            message_id=props.message_id,
        )
        fut = self._executor.submit(self._work, conn, ch, pub, delivery)
        with self._inflight_lock:
            self._inflight.add(fut)
        fut.add_done_callback(self._forget)

    def _forget(self, fut: Future[None]) -> None:
        with self._inflight_lock:
            self._inflight.discard(fut)

    def _work(self, conn: BlockingConnection, ch: BlockingChannel, pub: BlockingChannel, d: Delivery) -> None:
        try:
            # A spare delivery not started before a stop goes straight back to the queue.
            outcome = Outcome("requeue", "consumer stopping") if self._stop.is_set() else self._handler(d)
        except Exception as exc:  # a bug in a handler must not kill the worker or loop the message
            log.exception("handler crashed on message %s", d.message_id)
            outcome = Outcome("retry", f"handler crashed: {type(exc).__name__}: {exc}")
        settle = functools.partial(self._settle, ch, pub, d, outcome)
        try:
            conn.add_callback_threadsafe(settle)
        except _PIKA_ERRORS:
            # The connection is gone; the broker requeues the delivery by itself.
            log.warning("could not settle message %s: connection closed; it will be redelivered", d.message_id)

    def _settle(self, ch: BlockingChannel, pub: BlockingChannel, d: Delivery, outcome: Outcome) -> None:
        """Runs on the consumer thread."""
        if not ch.is_open:
            return
        if outcome.kind == "ack":
            ch.basic_ack(d.delivery_tag)
            return
        if outcome.kind == "requeue":
            ch.basic_nack(d.delivery_tag, requeue=True)
            return
        attempts = d.attempts + 1
        headers = dict(d.headers)
        headers[HEADER_ATTEMPTS] = attempts
        headers[HEADER_REASON] = outcome.reason[:1000]
        if outcome.kind == "retry" and attempts < self._max_attempts:
            target = self._topology.retry_queue_for_attempt(attempts)
            if self._on_retry:
                self._on_retry(d, outcome.reason, attempts)
        else:
            target = dead_queue(self._topology.source)
            if outcome.kind == "retry":
                headers[HEADER_REASON] = f"gave up after {attempts} attempts: {outcome.reason}"[:1000]
            if self._on_dead:
                self._on_dead(d, str(headers[HEADER_REASON]), attempts)
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            headers=headers,
            message_id=d.message_id,
        )
        pub.basic_publish("", target, d.body, props, mandatory=True)
        ch.basic_ack(d.delivery_tag)
        log.info("message %s -> %s (attempt %d): %s", d.message_id, target, attempts, outcome.reason)

"""Broker-side admin actions shared by the API and the CLI.

* :func:`requeue_dead` moves messages from ``skynet.dead.<source>`` back onto the actions
  exchange with their attempt count reset; each message is acked only after its re-publish is
  confirmed, so a crash half-way duplicates at worst (harmless: uploaders reconcile).
* :func:`retry_path` asks the uploaders to reconcile one path now, even if the remote claims to
  be up to date (``force``).
* :func:`request_rescan` asks the watcher of a source to rescan its folder: a JSON message
  ``{"type": "control.rescan.v1", "id", "source", "created_at", "full"}`` on the
  ``skynet.control`` topic exchange with routing key ``rescan.<source>``. ``full`` also has every
  file the watcher already published checked against the remote.
* :func:`queue_depths` reads queue depths with passive declares (a missing queue is ``None``).

Every pika error stops here: :class:`BrokerUnavailable` (retry later) or :class:`NotDelivered`
(nobody listens for that source).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from skynet.common.broker import connect
from skynet.common.errors import BrokerUnavailable, PermanentError
from skynet.common.messages import PathChanged, encode, new_id, now
from skynet.common.topology import (
    ACTIONS_EXCHANGE,
    CONTROL_EXCHANGE,
    EVENTS_DEAD_QUEUE,
    EVENTS_QUEUE,
    HEADER_ATTEMPTS,
    HEADER_REASON,
    PROGRESS_QUEUE,
    Topology,
    actions_queue,
    control_routing_key,
    dead_queue,
    recheck_queue,
    release_routing_key,
    retry_queue,
)

log = logging.getLogger(__name__)

_PIKA_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError, AssertionError)
HEADER_REQUEUED = "x-skynet-requeued"


class NotDelivered(PermanentError):
    """The broker had no queue to route the message to (no uploader or watcher for that source)."""


@contextmanager
def _channel(url: str, *, confirm: bool = True) -> Iterator[tuple[BlockingConnection, BlockingChannel]]:
    conn = connect(url, name="skynet-admin", heartbeat=30)
    try:
        ch = conn.channel()
        if confirm:
            ch.confirm_delivery()
        yield conn, ch
    except _PIKA_ERRORS as exc:
        raise BrokerUnavailable(f"admin action failed: {type(exc).__name__}") from exc
    finally:
        try:
            if conn.is_open:
                conn.close()
        except _PIKA_ERRORS:
            pass


def _publish(ch: BlockingChannel, exchange: str, routing_key: str, body: bytes, props: pika.BasicProperties) -> None:
    try:
        ch.basic_publish(exchange, routing_key, body, props, mandatory=True)
    except pika.exceptions.UnroutableError as exc:
        raise NotDelivered(f"no queue is bound to {exchange} for {routing_key!r}") from exc
    except pika.exceptions.NackError as exc:
        raise BrokerUnavailable(f"broker refused the message to {exchange}/{routing_key}") from exc


def requeue_dead(url: str, source: str, limit: int | None = None) -> int:
    """Move up to ``limit`` (default: all present now) dead messages of ``source`` back to work."""
    moved = 0
    with _channel(url) as (_conn, ch):
        try:
            present = int(ch.queue_declare(dead_queue(source), passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker:
            return 0  # no dead queue: nothing ever died there
        budget = present if limit is None else min(present, limit)
        while moved < budget:
            method, props, body = ch.basic_get(dead_queue(source), auto_ack=False)
            if method is None:
                break
            headers = dict(props.headers or {})
            headers.pop(HEADER_ATTEMPTS, None)
            reason = headers.pop(HEADER_REASON, None)
            headers[HEADER_REQUEUED] = int(headers.get(HEADER_REQUEUED, 0) or 0) + 1
            new_props = pika.BasicProperties(
                content_type=props.content_type or "application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                headers=headers,
                message_id=props.message_id,
                type=props.type,
            )
            try:
                _publish(ch, ACTIONS_EXCHANGE, source, body, new_props)
            except NotDelivered:
                ch.basic_nack(method.delivery_tag, requeue=True)
                raise
            ch.basic_ack(method.delivery_tag)
            moved += 1
            log.info("requeued dead message %s of %s (was: %s)", props.message_id, source, reason)
    return moved


def retry_path(url: str, source: str, path: str) -> str:
    """Publish a forced reconcile of ``path``; return the action's id."""
    action = PathChanged(source=source, path=path, force=True)
    with _channel(url) as (_conn, ch):
        ch.exchange_declare(ACTIONS_EXCHANGE, exchange_type="direct", durable=True)
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=action.id,
            type=action.type,
        )
        _publish(ch, ACTIONS_EXCHANGE, source, encode(action), props)
    log.info("retry of %s requested for source %s (action %s)", path, source, action.id)
    return action.id


def _control(url: str, source: str, kind: str, routing_key: str, **fields: object) -> None:
    with _channel(url) as (_conn, ch):
        Topology(source).declare_control(ch)
        props = pika.BasicProperties(content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent)
        request = {"type": f"control.{kind}.v1", "id": new_id(), "source": source, "created_at": now(), **fields}
        _publish(ch, CONTROL_EXCHANGE, routing_key, json.dumps(request).encode(), props)
    log.info("%s requested for source %s", kind, source)


def request_rescan(url: str, source: str, full: bool = False) -> None:
    """Ask the watcher of ``source`` to rescan its folder now.

    ``full``: also send every file the watcher already published, so that the uploaders check
    each against the remote (one stat / HEAD per file) and send what is missing or different
    there. A plain rescan compares the folder with what the watcher last published, so it cannot
    see a remote changed or emptied behind skynet's back.
    """
    _control(url, source, "rescan", control_routing_key(source), full=full)


def release_held(url: str, source: str) -> None:
    """Tell the watcher of ``source`` to apply the deletes its safety rules held back."""
    _control(url, source, "release", release_routing_key(source))


DEFAULT_RETRY_STEPS = 4  # SKYNET_RETRY_DELAYS_S's default length
MAX_RETRY_STEPS = 64  # how far the retry queues are probed beyond the default


def source_queues(source: str, retry_steps: int = DEFAULT_RETRY_STEPS) -> list[str]:
    return [actions_queue(source), *(retry_queue(source, i) for i in range(retry_steps)), dead_queue(source)]


EVENT_QUEUES = (EVENTS_QUEUE, PROGRESS_QUEUE, EVENTS_DEAD_QUEUE)


def queue_depths(
    url: str, source: str | None = None, *, queues: list[str] | None = None, sources: Iterable[str] = ()
) -> dict[str, int | None]:
    """Ready messages per queue (``None``: the queue does not exist).

    By default: the event queues, plus the actions, retry, dead and recheck queues of ``source``. ``queues``
    names the queues instead; each of ``sources`` adds its own. A source's retry queues are the
    default four, plus every further step its uploaders declared (their ``SKYNET_RETRY_DELAYS_S``
    may list more delays than the default), found by asking for the next step until one is missing.
    """
    wanted = list(EVENT_QUEUES if queues is None else queues)
    every_source = [*sources, *([source] if source and queues is None else [])]
    depths: dict[str, int | None] = {}
    with _channel(url, confirm=False) as (conn, ch):

        def depth(name: str) -> int | None:
            nonlocal ch
            if not ch.is_open:
                ch = conn.channel()
            try:
                return int(ch.queue_declare(name, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker:
                return None

        for src in every_source:
            depths[actions_queue(src)] = depth(actions_queue(src))
            for step in range(MAX_RETRY_STEPS):
                name = retry_queue(src, step)
                ready = depth(name)
                if ready is None and step >= DEFAULT_RETRY_STEPS:
                    break  # past the default steps, the first missing one ends the ladder
                depths[name] = ready
            depths[dead_queue(src)] = depth(dead_queue(src))
            depths[recheck_queue(src)] = depth(recheck_queue(src))  # piles up while its watcher is down
        for name in wanted:
            depths[name] = depth(name)
    return depths

"""Names and declarations of every exchange and queue skynet uses.

Actions (watcher → uploaders) go through the direct exchange ``skynet.actions``, routed by source,
to one durable queue per source. A retryable failure re-publishes the message to a per-source,
per-step retry queue whose TTL expires it back onto ``skynet.actions``: the delay grows with the
attempt and nothing loops hot. A permanent failure, or the last attempt, goes to the source's dead
queue with ``x-skynet-reason`` and ``x-skynet-attempts`` headers.

Events go through the topic exchange ``skynet.events``; the routing key is the event's type.
Lifecycle events (``file.*``, ``worker.*``) land in the durable ``skynet.events`` queue; progress
ticks (``progress.*``) land in ``skynet.progress``, bounded, dropping the oldest.

Requests to a watcher go through the topic exchange ``skynet.control``. An admin's (rescan,
release) reach only a running watcher, through its exclusive queue: with none running the admin is
told so. An uploader's recheck requests land in the source's durable ``skynet.recheck.<source>``
queue, bounded, which keeps them while the watcher is down: each may stand for a file missing under
its new name on the remote, which the watcher's restart scan, comparing the folder with what it
published, would not find.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

ACTIONS_EXCHANGE = "skynet.actions"
EVENTS_EXCHANGE = "skynet.events"
CONTROL_EXCHANGE = "skynet.control"
EVENTS_QUEUE = "skynet.events"
PROGRESS_QUEUE = "skynet.progress"
EVENTS_DEAD_QUEUE = "skynet.events.dead"

HEADER_ATTEMPTS = "x-skynet-attempts"
HEADER_REASON = "x-skynet-reason"
HEADER_FIRST_SEEN = "x-skynet-first-seen"


class _Channel(Protocol):
    def exchange_declare(self, exchange: str, exchange_type: str, durable: bool) -> Any: ...
    def queue_declare(self, queue: str, durable: bool, arguments: dict[str, Any] | None) -> Any: ...
    def queue_bind(self, queue: str, exchange: str, routing_key: str | None) -> Any: ...


def actions_queue(source: str) -> str:
    return f"skynet.actions.{source}"


def dead_queue(source: str) -> str:
    return f"skynet.dead.{source}"


def retry_queue(source: str, step: int) -> str:
    return f"skynet.retry.{source}.{step}"


def recheck_queue(source: str) -> str:
    return f"skynet.recheck.{source}"


RECHECK_QUEUE_MAX = 10_000  # requests kept for a watcher that is down; the oldest go first


def control_routing_key(source: str) -> str:
    """Asks the watcher of ``source`` to rescan its folder."""
    return f"rescan.{source}"


def recheck_routing_key(source: str) -> str:
    """Asks the watcher of ``source`` to look at one path again (see ``RecheckRequest``)."""
    return f"recheck.{source}"


def release_routing_key(source: str) -> str:
    """Tells the watcher of ``source`` to apply the deletes its safety rules held back."""
    return f"release.{source}"


@dataclass(frozen=True)
class Topology:
    source: str
    queue_type: str = "classic"
    retry_delays_s: tuple[float, ...] = (2.0, 10.0, 60.0, 300.0)
    progress_queue_max: int = 10_000

    def _args(self, **extra: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": self.queue_type}
        args.update(extra)
        return args

    def retry_queue_for_attempt(self, attempt: int) -> str:
        """The retry queue for a message that has failed ``attempt`` times (1-based)."""
        step = min(max(attempt, 1), len(self.retry_delays_s)) - 1
        return retry_queue(self.source, step)

    def declare_actions(self, ch: _Channel) -> None:
        """What a publisher of actions needs (the watcher, admin actions): the exchange, the
        source's queue and its dead-letter queue. The retry queues are the uploaders' (see
        :meth:`declare_retries`): their delays are an uploader setting, and a watcher declaring
        them with its own would be refused by the broker whenever the two settings differ."""
        ch.exchange_declare(exchange=ACTIONS_EXCHANGE, exchange_type="direct", durable=True)
        queue = actions_queue(self.source)
        ch.queue_declare(queue=queue, durable=True, arguments=self._args())
        ch.queue_bind(queue=queue, exchange=ACTIONS_EXCHANGE, routing_key=self.source)
        ch.queue_declare(queue=dead_queue(self.source), durable=True, arguments=self._args())

    def retry_queues(self) -> list[tuple[str, float, dict[str, Any]]]:
        """Each retry queue's name, delay and arguments: its messages expire after the delay back
        onto the actions."""
        return [
            (
                retry_queue(self.source, step),
                delay,
                self._args(
                    **{
                        "x-message-ttl": int(delay * 1000),
                        "x-dead-letter-exchange": ACTIONS_EXCHANGE,
                        "x-dead-letter-routing-key": self.source,
                    }
                ),
            )
            for step, delay in enumerate(self.retry_delays_s)
        ]

    def declare_retries(self, ch: _Channel) -> None:
        for name, _delay, arguments in self.retry_queues():
            ch.queue_declare(queue=name, durable=True, arguments=arguments)

    def declare_events(self, ch: _Channel) -> None:
        ch.exchange_declare(exchange=EVENTS_EXCHANGE, exchange_type="topic", durable=True)
        ch.queue_declare(queue=EVENTS_QUEUE, durable=True, arguments=self._args())
        ch.queue_bind(queue=EVENTS_QUEUE, exchange=EVENTS_EXCHANGE, routing_key="file.#")
        ch.queue_bind(queue=EVENTS_QUEUE, exchange=EVENTS_EXCHANGE, routing_key="worker.#")
        ch.queue_declare(
            queue=PROGRESS_QUEUE,
            durable=True,
            arguments=self._args(**{"x-max-length": self.progress_queue_max, "x-overflow": "drop-head"}),
        )
        ch.queue_bind(queue=PROGRESS_QUEUE, exchange=EVENTS_EXCHANGE, routing_key="progress.#")
        ch.queue_declare(queue=EVENTS_DEAD_QUEUE, durable=True, arguments=self._args())

    def declare_control(self, ch: _Channel) -> None:
        ch.exchange_declare(exchange=CONTROL_EXCHANGE, exchange_type="topic", durable=True)

    def declare_rechecks(self, ch: _Channel) -> None:
        """The control exchange and the source's recheck queue (uploaders → its watcher)."""
        self.declare_control(ch)
        queue = recheck_queue(self.source)
        ch.queue_declare(
            queue=queue,
            durable=True,
            arguments=self._args(**{"x-max-length": RECHECK_QUEUE_MAX, "x-overflow": "drop-head"}),
        )
        ch.queue_bind(queue=queue, exchange=CONTROL_EXCHANGE, routing_key=recheck_routing_key(self.source))

    def declare_all(self, ch: _Channel) -> None:
        self.declare_actions(ch)
        self.declare_retries(ch)
        self.declare_events(ch)
        self.declare_rechecks(ch)

"""The uploader's requests to its source's watcher: "look at this path again" (see
:class:`~skynet.common.messages.RecheckRequest` and the reconciler's ``_file``).

Each request is confirmed by the broker, persisted in the source's durable recheck queue, before
the call returns, so before the action that led to it is acknowledged: an uploader killed, or a
broker lost, in between leaves the action to be delivered again, and its redelivery asks again.
"""

from __future__ import annotations

import threading

from skynet.common.broker import Publisher
from skynet.common.errors import BrokerUnavailable
from skynet.common.messages import Generation, RecheckRequest, encode
from skynet.common.topology import CONTROL_EXCHANGE, Topology, recheck_routing_key


class WatcherRequests:
    """Sends recheck requests from any worker thread; connects on the first one (most uploaders
    never send any). Raises :class:`~skynet.common.errors.BrokerUnavailable` when one cannot be
    sent: the action is then retried, not acknowledged."""

    def __init__(self, url: str, topology: Topology, *, name: str, ca_file: str | None = None) -> None:
        self._source = topology.source
        self._publisher = Publisher(url, name=f"{name}-recheck", declare=topology.declare_rechecks, ca_file=ca_file)
        self._lock = threading.Lock()  # a publisher belongs to one thread at a time

    def recheck(self, path: str, generation: Generation | None) -> None:
        request = RecheckRequest(source=self._source, path=path, generation=generation)
        body = encode(request)
        with self._lock:
            try:
                self._send(request, body)
            except BrokerUnavailable:
                # Requests are rare, so the connection has often been idle long enough to have
                # died with a broker restart; the publisher only finds out by using it. Once
                # more, on a new connection.
                self._send(request, body)

    def _send(self, request: RecheckRequest, body: bytes) -> None:
        self._publisher.publish(
            CONTROL_EXCHANGE,
            recheck_routing_key(self._source),
            body,
            message_id=request.id,
            message_type=request.type,
        )

    def close(self) -> None:
        with self._lock:
            self._publisher.close()

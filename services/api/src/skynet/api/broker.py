"""Queue depths for /v1/status, /readyz and /metrics, cached for a few seconds.

The broker is optional for the API: without ``SKYNET_AMQP_URL`` there are no depths and no
admin actions. A broker that is away costs one failed attempt per cache period, not one per
request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from skynet.common.admin import EVENT_QUEUES, queue_depths
from skynet.common.errors import BrokerUnavailable


class QueueMonitor:
    def __init__(self, url: str, ttl_s: float = 5.0) -> None:
        self._url = url
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._at = -1e9
        self._key: tuple[str, ...] = ()
        self._value: dict[str, int | None] | None = None
        self._error: str | None = None

    def depths(self, sources: Iterable[str]) -> tuple[dict[str, int | None] | None, str | None]:
        key = tuple(sorted(set(sources)))
        with self._lock:
            if key == self._key and time.monotonic() - self._at < self._ttl:
                return self._value, self._error
            try:
                self._value, self._error = queue_depths(self._url, queues=list(EVENT_QUEUES), sources=key), None
            except BrokerUnavailable:
                self._value, self._error = None, "broker unavailable"
            self._key, self._at = key, time.monotonic()
            return self._value, self._error


def dead_letters(depths: dict[str, int | None]) -> int:
    return sum(n or 0 for q, n in depths.items() if q.startswith("skynet.dead.") or q == "skynet.events.dead")

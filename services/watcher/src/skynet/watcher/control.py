"""Listening for requests addressed to this watcher: an admin's (rescan, release held deletes)
and an uploader's (look at a path again)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
from collections.abc import Callable

from skynet.common.broker import connect, reconnect_forever
from skynet.common.errors import BrokerUnavailable, InvalidMessage
from skynet.common.messages import Generation, decode_recheck
from skynet.common.topology import (
    CONTROL_EXCHANGE,
    Topology,
    control_routing_key,
    recheck_queue,
    release_routing_key,
)

log = logging.getLogger(__name__)


class ControlListener:
    """Consumes ``rescan.<source>`` and ``release.<source>`` from the control exchange, and the
    source's recheck queue (``recheck.<source>``)."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        name: str,
        on_rescan: Callable[[bool], None],
        on_release: Callable[[], None],
        ca_file: str | None = None,
        on_recheck: Callable[[str, Generation | None, Callable[[], None]], None] | None = None,
    ) -> None:
        self._url = url
        self._topology = topology
        self._name = name
        self._on_rescan = on_rescan
        self._on_release = on_release
        self._on_recheck = on_recheck
        self._ca_file = ca_file
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="control", daemon=True)

    def start(self) -> ControlListener:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        reconnect_forever(self._consume, self._stop, "control listener", base=1.0, level=logging.INFO)

    def _consume(self) -> None:
        try:
            self._consume_once()
        except BrokerUnavailable:
            raise
        except Exception as exc:  # pika raises many things when the broker goes away
            raise BrokerUnavailable(f"control connection lost: {exc!r}") from exc

    def _consume_once(self) -> None:
        conn = connect(self._url, name=f"{self._name}-control", ca_file=self._ca_file)
        try:
            ch = conn.channel()
            self._topology.declare_control(ch)
            # An admin's requests reach only a running watcher: with none, the admin is told.
            queue = ch.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
            source = self._topology.source
            ch.queue_bind(queue=queue, exchange=CONTROL_EXCHANGE, routing_key=control_routing_key(source))
            ch.queue_bind(queue=queue, exchange=CONTROL_EXCHANGE, routing_key=release_routing_key(source))

            def on_message(_ch: object, method: object, _props: object, body: bytes) -> None:
                key = str(getattr(method, "routing_key", ""))
                if key.startswith("rescan."):
                    full = wants_full_scan(body)
                    log.info("control request %s%s", key, " (full: every file checked on the remote)" if full else "")
                    self._on_rescan(full)
                    return
                log.info("control request %s", key)
                if key.startswith("release."):
                    self._on_release()

            ch.basic_consume(queue, on_message, auto_ack=True)
            if self._on_recheck is not None:
                # An uploader's requests wait in a durable queue for a watcher that is down. Each
                # is acked once the engine's answer is in its outbox (from the engine's thread,
                # hence the thread-safe callback); one not acked then, because this watcher died
                # or lost this connection first, goes to the next.
                self._topology.declare_rechecks(ch)

                def on_recheck(_ch: object, method: object, _props: object, body: bytes) -> None:
                    ack = functools.partial(ch.basic_ack, getattr(method, "delivery_tag", 0))

                    def answered() -> None:
                        with contextlib.suppress(Exception):  # this connection is gone: redelivered
                            conn.add_callback_threadsafe(ack)

                    if not self._recheck(body, answered):
                        ack()  # nothing to answer: a malformed request, or another source's

                ch.basic_qos(prefetch_count=100)
                ch.basic_consume(recheck_queue(source), on_recheck, auto_ack=False)
            while not self._stop.is_set():
                conn.process_data_events(time_limit=0.5)
        finally:
            with contextlib.suppress(Exception):  # closing a dead connection
                conn.close()

    def _recheck(self, body: bytes, answered: Callable[[], None]) -> bool:
        """Hand a request to the engine (True), or say why it is ignored (False)."""
        try:
            request = decode_recheck(body)
        except InvalidMessage as exc:
            log.warning("recheck request ignored: %s", exc.reason)
            return False
        if request.source != self._topology.source:
            mine = self._topology.source
            log.warning("recheck request ignored: it is for source %r, and this watcher's is %r", request.source, mine)
            return False
        log.info("an uploader asks for %r to be looked at again", request.path)
        assert self._on_recheck is not None
        self._on_recheck(request.path, request.generation, answered)
        return True


def wants_full_scan(body: bytes) -> bool:
    """Does a rescan request ask for a full scan (``"full": true``)?

    Anything else, including a body that is not JSON (an older ``skynet rescan``, a hand-made
    message), asks for a plain rescan, which is never wrong, only less thorough.
    """
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        log.warning("rescan request with a body that is not JSON: doing a plain rescan")
        return False
    return isinstance(request, dict) and request.get("full") is True

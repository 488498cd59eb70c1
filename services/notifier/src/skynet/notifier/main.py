"""``skynet-notifier``: settings built once, migrations applied, then the consuming loop.

SIGTERM/SIGINT stop it cleanly: the current batch is stored and acked if Postgres allows, and
anything unacked stays in the queue for the next run.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from skynet.common.broker import backoff_delays
from skynet.common.errors import ConfigError
from skynet.common.logs import setup_logging
from skynet.common.settings import load_settings
from skynet.notifier.consumer import BatchConsumer
from skynet.notifier.settings import NotifierSettings
from skynet.notifier.store import EventsRejected, EventStore, StoreUnavailable

log = logging.getLogger("skynet.notifier")


def _migrate(store: EventStore, stop: threading.Event) -> bool:
    """Apply migrations, waiting for Postgres as long as needed; False if stopped meanwhile."""
    delays = backoff_delays(0.5, 10.0)
    while not stop.is_set():
        try:
            applied = store.migrate()
            if applied:
                log.info("database migrated to version %d", applied[-1])
            return True
        except StoreUnavailable as exc:
            delay = next(delays)
            log.warning("waiting for the database: %s; retry in %.1fs", exc.reason, delay)
            stop.wait(delay)
    return False


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(NotifierSettings)
    except ConfigError as exc:
        print(f"skynet-notifier: {exc}", file=sys.stderr)
        return 2
    setup_logging(
        settings.log_level,
        settings.log_format,
        secrets=[settings.amqp_url.get_secret_value(), settings.database_url.get_secret_value()],
    )
    store = EventStore(settings.database_url.get_secret_value())
    consumer = BatchConsumer(settings, store)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()
        consumer.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        if not _migrate(store, stop):
            return 0
    except EventsRejected as exc:
        log.error("database migration failed: %s", exc.reason)
        return 1
    log.info("notifier started (batch %d, latency %d ms)", settings.batch_size, settings.batch_latency_ms)
    try:
        consumer.run()
    finally:
        store.close()
    log.info("notifier stopped: %d events stored, %d dead-lettered", consumer.stored, consumer.dead)
    return 0

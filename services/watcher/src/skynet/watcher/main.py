"""``skynet-watcher`` / ``python -m skynet.watcher``: watch one folder, publish its changes."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from types import FrameType

from skynet.common.broker import Publisher
from skynet.common.errors import ConfigError
from skynet.common.events import Condition, EventSink, send_last_heartbeat, start_heartbeats
from skynet.common.logs import setup_logging
from skynet.common.messages import FileEvent, WorkerHeartbeat
from skynet.common.settings import load_settings
from skynet.common.topology import Topology
from skynet.watcher.control import ControlListener
from skynet.watcher.engine import START_UP, VERIFY, Engine
from skynet.watcher.observer import (
    WATCH_LIMIT_HELP,
    inotify_watch_limit_reached,
    install_overflow_hook,
    is_polling,
    start_observer,
)
from skynet.watcher.pump import OutboxPump
from skynet.watcher.settings import WatcherSettings
from skynet.watcher.store import StateUnavailable, Store

log = logging.getLogger("skynet.watcher")


def run(settings: WatcherSettings) -> None:
    url = settings.amqp_url.get_secret_value()
    topology = Topology(settings.source, settings.queue_type, settings.retry_delays_s, settings.progress_queue_max)
    name = f"watcher-{settings.worker_id}"
    store = Store(settings.resolved_state_dir)
    sink = EventSink(
        url, topology, name=name, ca_file=settings.amqp_ca_file, linger_s=settings.event_linger_ms / 1000
    ).start()

    def emit(event: FileEvent) -> None:
        sink.emit(event)

    publisher = Publisher(
        url, name=f"{name}-actions", declare=topology.declare_actions, ca_file=settings.amqp_ca_file, batched=True
    )
    pump = OutboxPump(store, publisher, settings.source, emit, batch=settings.outbox_batch)
    try:
        engine = Engine(settings, store, emit, pump.wake)
    except StateUnavailable:
        sink.close()
        store.close()
        raise
    pump.discovered = engine.discovered
    engine.request_scan(START_UP)  # before the pump starts: it waits for this scan
    pump.hold_during(engine.starting_scan)
    pump.start()
    install_overflow_hook(lambda: engine.request_scan("inotify queue overflow"))
    mode = settings.observer
    observer = start_observer(engine.root, mode, settings.poll_interval_ms / 1000, engine.queue)
    engine.polling = is_polling(observer)

    def rewatch() -> None:
        # The root was replaced (and the admin released the held deletes): inotify still
        # watches the old folder, so watch the one that is there now.
        nonlocal observer
        observer.stop()
        observer = start_observer(engine.root, mode, settings.poll_interval_ms / 1000, engine.queue)
        engine.polling = is_polling(observer)

    def watch_limit_reached() -> bool:
        """Folders made since the start may have run past the inotify limit (watchdog skips them
        silently): then watch by polling from now on, and rescan for what was missed."""
        nonlocal mode
        if engine.polling or not inotify_watch_limit_reached(engine.root):
            return False
        log.error("%s", WATCH_LIMIT_HELP)
        mode = "polling"
        rewatch()
        return True

    engine.on_root_changed = rewatch
    engine.watch_limit_reached = watch_limit_reached
    control = ControlListener(
        url,
        topology,
        name,
        lambda full: engine.request_scan(VERIFY if full else "requested", full=full),
        engine.release_held,
        settings.amqp_ca_file,
        on_recheck=engine.recheck,
    ).start()
    stop = threading.Event()
    started = time.time()
    condition = Condition()

    def heartbeat() -> WorkerHeartbeat:
        fell_back = WATCH_LIMIT_HELP if settings.observer != "polling" and engine.polling else None
        condition.set("; ".join(c for c in (engine.condition(), fell_back) if c) or None)
        return WorkerHeartbeat(
            source=settings.source,
            worker=name,
            role="watcher",
            active=len(engine.coalescer),
            capacity=store.pending_count() + len(engine.discovered),
            files_done=pump.published,
            host=socket.gethostname(),
            started_at=started,
            **condition.fields(),
        )

    start_heartbeats(sink, 5.0, heartbeat, stop)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        engine.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "watcher %s: source %r, folder %s, delete mode %s, settle %d ms, state %s",
        name,
        settings.source,
        engine.root,
        settings.delete_mode,
        settings.settle_ms,
        settings.resolved_state_dir,
    )
    try:
        engine.run()
    finally:
        stop.set()
        observer.stop()
        control.stop()
        pump.stop()
        send_last_heartbeat(sink, heartbeat)
        sink.close()
        observer.join(5)
        left, found = store.pending_count(), len(engine.discovered)
        store.close()
        log.info(
            "watcher stopped; %d actions left in the outbox for next time; %d files found by a scan"
            " and not yet published, for the next start's scan to find again",
            left,
            found,
        )


def main() -> None:
    try:
        settings = load_settings(WatcherSettings)
    except ConfigError as exc:
        print(f"skynet-watcher: {exc}", file=sys.stderr)
        sys.exit(2)
    setup_logging(settings.log_level, settings.log_format, secrets=[settings.amqp_url.get_secret_value()])
    try:
        run(settings)
    except StateUnavailable as exc:  # at start: its SQLite cannot even be opened or first written
        log.error("%s; cannot start", exc.reason)
        sys.exit(1)

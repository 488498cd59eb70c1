"""``skynet-uploader`` / ``python -m skynet.uploader``: consume actions, reconcile the remote."""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType

from skynet.common.broker import Consumer, Delivery, backoff_delays, declare_consumer_topology
from skynet.common.errors import ConfigError, RemoteAccessDenied, RemoteRefused, RemoteUnavailable, SkynetError
from skynet.common.events import Condition, EventSink, send_last_heartbeat, start_heartbeats
from skynet.common.logs import setup_logging
from skynet.common.messages import FileEvent, WorkerHeartbeat
from skynet.common.settings import load_settings
from skynet.common.topology import Topology, actions_queue
from skynet.uploader.localfs import LocalFolder
from skynet.uploader.settings import UploaderSettings
from skynet.uploader.storage.base import Backend
from skynet.uploader.storage.registry import factory_for
from skynet.uploader.watcher_requests import WatcherRequests
from skynet.uploader.worker import Reconciler

log = logging.getLogger("skynet.uploader")

FIX = (
    "put it right (SKYNET_SFTP_KNOWN_HOSTS, the key or password, the bucket, the credentials)"
    " and the uploader resumes by itself"
)


class RemoteGuard:
    """Pauses the consumer while the remote is away and resumes it once a probe succeeds.

    While paused the uploader takes no new work, so there is no storm of requeues; in-flight work
    finishes or fails on its own. ``condition`` says so, with the latest cause, for the heartbeat
    (and so for ``/v1/workers``, ``/v1/status`` and the dashboard).
    """

    def __init__(self, consumer: Consumer, probe: Backend, condition: Condition) -> None:
        self._consumer = consumer
        self._probe = probe
        self._lock = threading.Lock()
        self._probing = False
        self.condition = condition

    def remote_down(self, exc: RemoteUnavailable) -> None:
        with self._lock:
            if self._probing:
                return
            self._probing = True
            self._note(exc)
        self._consumer.pause()
        threading.Thread(target=self._wait_for_remote, args=(exc,), name="remote-probe", daemon=True).start()

    def _wait_for_remote(self, exc: RemoteUnavailable) -> None:
        denied = isinstance(exc, RemoteAccessDenied)
        if denied:
            log.error("the target refuses this uploader (%s): paused, no file is failed for it; %s", exc.reason, FIX)
        else:
            log.warning("remote unavailable (%s): paused, probing", exc.reason)
        delays = backoff_delays(1.0, 30.0)
        while True:
            time.sleep(next(delays))
            try:
                if denied:
                    # A session opened before the refusal would still answer: only a new
                    # connection shows that the host key or the credentials are right again.
                    self._probe.close()
                self._probe.check()
                break
            except RemoteAccessDenied as err:
                denied = True
                log.error("the target still refuses this uploader: %s", err.reason)
                self._note(err)
            except SkynetError as err:
                log.info("remote still unavailable: %s", err.reason)
                self._note(err)
        with self._lock:
            self._probing = False
            self.condition.set(None)
        log.info("remote is back: resuming")
        self._consumer.resume()

    def _note(self, exc: SkynetError) -> None:
        """The pause's latest cause, as the heartbeat reports it."""
        if isinstance(exc, RemoteAccessDenied):
            self.condition.set(f"paused: the target refuses this uploader: {exc}; {FIX}")
        else:
            self.condition.set(f"paused: remote unavailable: {exc}")


def spare_deliveries(concurrency: int) -> int:
    """Deliveries held beyond the running transfers, so a worker that finishes starts the next
    file at once: one per four workers, at least one (few, so replicas still share the work)."""
    return max(1, concurrency // 4)


def run(settings: UploaderSettings) -> None:
    url = settings.amqp_url.get_secret_value()
    topology = Topology(settings.source, settings.queue_type, settings.retry_delays_s, settings.progress_queue_max)
    name = f"uploader-{settings.worker_id}"
    factory = factory_for(settings.target)
    backend_settings = settings.backend_settings()

    def open_backend() -> Backend:
        return factory(settings.target, backend_settings)

    probe = open_backend()
    sink = EventSink(
        url, topology, name=name, ca_file=settings.amqp_ca_file, linger_s=settings.event_linger_ms / 1000
    ).start()

    def emit(event: FileEvent) -> None:
        sink.emit(event)

    watcher_requests = WatcherRequests(url, topology, name=name, ca_file=settings.amqp_ca_file)
    folder = LocalFolder(str(settings.watch_dir))
    guard: RemoteGuard | None = None

    def on_remote_down(exc: RemoteUnavailable) -> None:
        if guard is not None:
            guard.remote_down(exc)

    reconciler = Reconciler(
        source=settings.source,
        worker=name,
        folder=folder,
        open_backend=open_backend,
        emit=emit,
        mirror=settings.delete_mode == "mirror",
        on_remote_down=on_remote_down,
        progress_interval_s=settings.progress_interval_s,
        max_file_size=settings.max_file_size,
        ask_watcher=watcher_requests.recheck,
    )

    def on_dead(d: Delivery, reason: str, attempts: int) -> None:
        log.error("message %s dead-lettered after %d attempts: %s", d.message_id, attempts, reason)

    consumer = Consumer(
        url,
        actions_queue(settings.source),
        reconciler.handle,
        topology=topology,
        prefetch=settings.concurrency + spare_deliveries(settings.concurrency),
        workers=settings.concurrency,
        name=name,
        max_attempts=settings.max_attempts,
        declare=functools.partial(declare_consumer_topology, topology),
        heartbeat=settings.heartbeat_s,
        ca_file=settings.amqp_ca_file,
        on_dead=on_dead,
        stop_grace_s=settings.stop_grace_s,
        on_grace_expired=reconciler.cancel,
    )
    paused = Condition()
    guard = RemoteGuard(consumer, probe, paused)
    try:
        probe.check()
    except RemoteAccessDenied:
        raise  # a refusal at start is a configuration to fix: the uploader does not start
    except RemoteUnavailable as exc:
        guard.remote_down(exc)

    stop = threading.Event()
    started = time.time()
    target = probe.describe("")

    def heartbeat() -> WorkerHeartbeat:
        c = reconciler.counters
        return WorkerHeartbeat(
            source=settings.source,
            worker=name,
            role="uploader",
            active=c.active,
            capacity=settings.concurrency,
            bytes_sent=c.bytes_sent,
            files_done=c.files_done,
            host=socket.gethostname(),
            started_at=started,
            target=target,
            **paused.fields(),
        )

    start_heartbeats(sink, settings.heartbeat_interval_s, heartbeat, stop)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing in-flight work, then stopping", signum)
        consumer.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "uploader %s: source %r, folder %s, target %s, concurrency %d, delete mode %s",
        name,
        settings.source,
        folder.root,
        probe.describe(""),
        settings.concurrency,
        settings.delete_mode,
    )
    try:
        consumer.run()
    finally:
        stop.set()
        reconciler.close()
        probe.close()
        watcher_requests.close()
        send_last_heartbeat(sink, heartbeat)
        sink.close()
        c = reconciler.counters
        log.info("uploader stopped: %d files, %d bytes sent", c.files_done, c.bytes_sent)


def main() -> None:
    try:
        settings = load_settings(UploaderSettings)
        factory_for(settings.target)
    except ConfigError as exc:
        print(f"skynet-uploader: {exc}", file=sys.stderr)
        sys.exit(2)
    secrets = [settings.amqp_url.get_secret_value()]
    for secret in (settings.sftp_password, settings.sftp_key_passphrase):
        if secret:
            secrets.append(secret.get_secret_value())
    # boto3 reads these itself; should one ever reach a message, it is scrubbed like ours.
    secrets += [os.environ.get(name, "") for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    setup_logging(settings.log_level, settings.log_format, secrets=secrets)
    try:
        run(settings)
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(2)
    except (RemoteAccessDenied, RemoteRefused) as exc:
        log.error("the target refuses this uploader, which does not start: %s", exc.reason)
        sys.exit(1)

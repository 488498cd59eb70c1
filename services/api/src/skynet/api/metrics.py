"""Prometheus text exposition, written by hand.

A dozen gauges and one counter do not justify ``prometheus-client`` and its process-global
registry (awkward with an app factory and several apps per test process); the format is simple:
https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from skynet.api.models import Status, Worker

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"


class Family:
    def __init__(self, name: str, kind: str, help_: str) -> None:
        self.name, self.kind, self.help = name, kind, help_
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            shown = repr(float(value)) if not float(value).is_integer() else str(int(value))
            lines.append(f"{self.name}{_labels(labels)} {shown}")
        return "\n".join(lines)


class RequestCounter:
    """Requests served, by method, route template and status (not by raw path: bounded labels)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}

    def inc(self, method: str, route: str, status: int) -> None:
        key = (method, route, str(status))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def family(self) -> Family:
        fam = Family("skynet_api_requests_total", "counter", "HTTP requests served by the API.")
        with self._lock:
            for (method, route, status), n in sorted(self._counts.items()):
                fam.add(n, method=method, route=route, status=status)
        return fam


def render(status: Status, workers: Iterable[Worker], last_seq: int, requests: RequestCounter) -> str:
    files = Family("skynet_files", "gauge", "Files per source and current state.")
    for source, states in sorted(status.sources.items()):
        for state, n in sorted(states.items()):
            files.add(n, source=source, state=state)
    fams = [
        files,
        Family("skynet_files_done_last_minute", "gauge", "Files done in the last 60 s.").add(
            status.done_last_minute.files
        ),
        Family("skynet_bytes_done_last_minute", "gauge", "Bytes of the files done in the last 60 s.").add(
            status.done_last_minute.bytes
        ),
        Family("skynet_oldest_pending_seconds", "gauge", "Age of the oldest pending file (0: none).").add(
            status.oldest_pending.age_s if status.oldest_pending else 0
        ),
        Family("skynet_active_transfers", "gauge", "Files being uploaded now.").add(status.active_transfers),
        Family(
            "skynet_target_conflicts", "gauge", "Pairs of sources whose uploaders send to the same or nested targets."
        ).add(len(status.target_conflicts)),
        Family("skynet_watcher_conflicts", "gauge", "Sources with more than one live watcher.").add(
            len(status.watcher_conflicts)
        ),
        Family("skynet_events_last_seq", "counter", "Sequence number of the newest stored event.").add(last_seq),
    ]
    alive = Family("skynet_workers", "gauge", "Workers by role and liveness.")
    impeded = Family(
        "skynet_workers_impeded", "gauge", "Live workers kept from their work (an uploader paused, say), by role."
    )
    tally: dict[tuple[str, str], int] = {}
    kept: dict[str, int] = {}
    for w in workers:
        key = (w.role, "true" if w.alive else "false")
        tally[key] = tally.get(key, 0) + 1
        if w.alive:
            kept[w.role] = kept.get(w.role, 0) + (w.condition is not None)
    for (role, is_alive), n in sorted(tally.items()):
        alive.add(n, role=role, alive=is_alive)
    for role, n in sorted(kept.items()):
        impeded.add(n, role=role)
    fams += [alive, impeded]
    if status.queues is not None:
        queues = Family("skynet_queue_messages", "gauge", "Ready messages per broker queue.")
        for name, depth in sorted(status.queues.items()):
            if depth is not None:
                queues.add(depth, queue=name)
        fams.append(queues)
        fams.append(
            Family("skynet_dead_letters", "gauge", "Messages in the dead-letter queues.").add(status.dead_letters or 0)
        )
    broker_up = Family("skynet_broker_up", "gauge", "1 if the broker answered (no sample without a broker).")
    if status.queues is not None or status.broker_error:
        broker_up.add(0 if status.broker_error else 1)
    fams.append(broker_up)
    fams.append(requests.family())
    return "\n".join(f.render() for f in fams) + "\n"

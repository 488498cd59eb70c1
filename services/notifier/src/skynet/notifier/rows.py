"""Pure logic: decoded events → the rows the store writes. No I/O.

Every file event becomes one ``events`` log row (:func:`event_row`; heartbeats are not logged,
they only refresh ``workers``). The events that were new to the log then become a :class:`Batch`:

* ``lifecycle``: per (source, path), the newest lifecycle event of the batch (one row each, since
  an upsert may touch a row only once per statement); the store applies it only if it is newer
  than the state already recorded, so an older event never overwrites a newer state;
* ``progress``: per (source, path), the newest progress tick of the batch;
* ``moved_from``: the source paths of moves, whose rows disappear, with those of the files under
  a folder moved (guarded by time as well);
* ``workers``: the newest heartbeat of each worker.

Text is stripped of NUL characters, which Postgres cannot store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skynet.common.messages import FileEvent, WorkerHeartbeat

# States after which the remote reflects the local file: bytes done = size.
COMPLETE_STATES = frozenset({"done", "skipped", "moved"})
# States whose last error is cleared.
CLEARS_ERROR = frozenset({"done", "skipped", "moved", "deleted", "queued"})


def ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def clean(text: str | None) -> str | None:
    return None if text is None else text.replace("\x00", "")


@dataclass
class Batch:
    lifecycle: dict[tuple[str, str], FileEvent] = field(default_factory=dict)
    progress: dict[tuple[str, str], FileEvent] = field(default_factory=dict)
    moved_from: dict[tuple[str, str], FileEvent] = field(default_factory=dict)
    workers: dict[str, WorkerHeartbeat] = field(default_factory=dict)
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)


def event_row(e: FileEvent) -> tuple[Any, ...]:
    """The ``events`` row: id, type, source, path, state, worker, size, created_at, payload."""
    payload = clean(e.known_json().decode("utf-8"))
    return (e.id, e.type, e.source, e.path, e.state, clean(e.worker), e.size, ts(e.created_at), payload)


_EXPLICIT = frozenset({"id", "created_at"})


def payload(e: FileEvent, body: bytes | None = None) -> bytes:
    """The JSON stored as the event's payload: the message as it arrived, when that is exact.

    Re-encoding every event was a fifth of the notifier's CPU; the body is already the event's
    JSON. It is re-encoded only when the body left ``id`` or ``created_at`` to their defaults, held
    fields this version does not know (a newer worker's: they are not stored, nor served by the
    API), or holds an escaped NUL, which Postgres's ``jsonb`` cannot store (NUL characters are
    dropped, as in every other column).
    """
    raw = body if body is not None and not e.model_extra and e.model_fields_set >= _EXPLICIT else e.known_json()
    if b"\\u0000" not in raw:
        return raw
    return json.dumps(_strip_nul(e.known_dict()), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    return value


def copy_line(payload_json: bytes) -> bytes:
    """One line of COPY's text format holding ``payload_json`` as its only column."""
    return (
        payload_json.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\t", b"\\t")
        + b"\n"
    )


def build(events: list[FileEvent | WorkerHeartbeat]) -> Batch:
    batch = Batch()
    for e in events:
        if isinstance(e, WorkerHeartbeat):
            seen = batch.workers.get(e.worker)
            if seen is None or e.created_at >= seen.created_at:
                batch.workers[e.worker] = e
            continue
        key = (e.source, e.path)
        if e.state == "progress":
            _keep_newest(batch.progress, key, e)
            continue
        _keep_newest(batch.lifecycle, key, e)
        if e.attempt is not None:
            batch.attempts[key] = max(batch.attempts.get(key, 0), e.attempt)
        if e.state == "moved" and e.src and e.src != e.path:
            _keep_newest(batch.moved_from, (e.source, e.src), e)
    return batch


def _keep_newest(into: dict[tuple[str, str], FileEvent], key: tuple[str, str], e: FileEvent) -> None:
    seen = into.get(key)
    if seen is None or e.created_at >= seen.created_at:
        into[key] = e


def lifecycle_row(e: FileEvent, attempts: int) -> tuple[Any, ...]:
    """source, path, state, size, bytes_done, attempts, last_error, remote, checksum, worker, state_at, event id."""
    if e.state in COMPLETE_STATES:
        bytes_done = e.bytes_done if e.bytes_done is not None else e.size
    elif e.state in ("queued", "waiting"):
        bytes_done = 0
    else:
        bytes_done = e.bytes_done
    error = clean(e.reason) if e.state in ("failed", "dead", "held") else None
    return (
        e.source,
        e.path,
        e.state,
        e.size,
        bytes_done,
        attempts,
        error,
        clean(e.remote),
        clean(e.checksum),
        clean(e.worker),
        ts(e.created_at),
        e.id,
    )


def progress_row(e: FileEvent) -> tuple[Any, ...]:
    """source, path, size, bytes_done, worker, progress_at, event id."""
    return (e.source, e.path, e.size, e.bytes_done or 0, clean(e.worker), ts(e.created_at), e.id)


def worker_row(h: WorkerHeartbeat) -> tuple[Any, ...]:
    return (
        h.worker,
        h.role,
        h.source,
        clean(h.host),
        h.active,
        h.capacity,
        h.bytes_sent,
        h.files_done,
        ts(h.started_at) if h.started_at is not None else None,
        ts(h.created_at),
        clean(h.condition),
        ts(h.condition_since) if h.condition_since is not None else None,
        ts(h.created_at) if h.stopped else None,
        clean(h.target),
    )

"""Versioned message schema.

Two families travel through the broker:

* **actions** (watcher → uploaders): hints that a path changed. An uploader reconciles the remote
  with the local folder *now*; it never replays a message blindly. Routed by source.
* **events** (watcher, uploaders → notifier): the lifecycle of each file, plus worker heartbeats.
  The ``type`` string of every event is also its routing key on the events exchange.

Each model carries a ``type`` literal ending in its version (``.v1``). A new version is a new model;
old versions keep golden JSON samples in ``tests/golden`` that the tests decode.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from skynet.common.errors import InvalidMessage, InvalidPath
from skynet.common.paths import validate_rel_path

MAX_MESSAGE_BYTES = 64 * 1024
SOURCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"


def new_id() -> str:
    """128 random bits as 32 hex digits (uuid4().hex's form, without building a UUID object)."""
    return os.urandom(16).hex()


def now() -> float:
    return time.time()


class Generation(BaseModel):
    """Identity of one version of a local file: what the remote records to make checks cheap."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(ge=0)
    mtime_ns: int
    inode: int = 0

    def token(self) -> str:
        return f"{self.size}:{self.mtime_ns}:{self.inode}"

    @classmethod
    def from_token(cls, token: str) -> Generation | None:
        try:
            size, mtime_ns, inode = (int(p) for p in token.split(":"))
            return cls(size=size, mtime_ns=mtime_ns, inode=inode)
        except (ValueError, ValidationError):
            return None


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    source: str = Field(pattern=SOURCE_PATTERN)
    created_at: float = Field(default_factory=now)


def _check_path(value: str) -> str:
    try:
        validate_rel_path(value)
    except InvalidPath as exc:
        raise ValueError(str(exc)) from None  # becomes part of the ValidationError → InvalidMessage
    return value


# ---------------------------------------------------------------- actions (watcher → uploader)


class PathChanged(_Message):
    """Path ``path`` (a file, or a folder when ``is_dir``) may differ from the remote: reconcile it.

    For a folder (``is_dir``), the whole subtree is reconciled: that is how a deleted folder
    becomes one action instead of one per file.
    """

    type: Literal["action.changed.v1"] = "action.changed.v1"
    path: str
    is_dir: bool = False
    generation: Generation | None = None  # what the watcher saw; a hint only
    force: bool = False  # upload even if the remote claims the same generation

    _v = field_validator("path")(_check_path)


class PathMoved(_Message):
    """``src`` was renamed to ``dst`` (a file, or a folder when ``is_dir``)."""

    type: Literal["action.moved.v1"] = "action.moved.v1"
    src: str
    dst: str
    is_dir: bool = False
    generation: Generation | None = None

    _v = field_validator("src", "dst")(_check_path)


class PruneRemote(_Message):
    """Delete every file under the target's base that the watched folder does not hold.

    Sent in ``mirror`` mode after a full scan (a verify), which checks every file the folder
    holds; this takes care of the others: files left on the remote by deletes skynet never saw
    (the watcher's state lost, changes made behind its back). ``limit``: with more such files
    than this, none is deleted, and they are reported held (the delete safety rule).
    """

    type: Literal["action.prune.v1"] = "action.prune.v1"
    limit: int = Field(ge=0)


Action = Annotated[PathChanged | PathMoved | PruneRemote, Field(discriminator="type")]
ACTION_TYPES = ("action.changed.v1", "action.moved.v1", "action.prune.v1")

# ---------------------------------------------------------------- events (→ notifier)

FileState = Literal[
    "queued",
    "waiting",
    "started",
    "progress",
    "done",
    "skipped",
    "moved",
    "deleted",
    "held",
    "failed",
    "dead",
]
LIFECYCLE_STATES: tuple[str, ...] = (
    "queued",
    "waiting",
    "started",
    "done",
    "skipped",
    "moved",
    "deleted",
    "held",
    "failed",
    "dead",
)


class _Event(_Message):
    """Events are read tolerantly: a field the reader does not know (one a newer worker added to
    a ``.v1`` event) is set aside (``model_extra``), not a reason to refuse the event, so that an
    older notifier keeps storing a newer worker's events and heartbeats during an upgrade. Actions
    stay strict: an action's unknown field may change what must be done."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def known_json(self) -> bytes:
        """The event as JSON, the fields this version knows only."""
        return self.model_dump_json(exclude_none=True, exclude=self._unknown()).encode("utf-8")

    def known_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data, the fields this version knows only."""
        return self.model_dump(mode="json", exclude_none=True, exclude=self._unknown())

    def _unknown(self) -> set[str] | None:
        extra = self.model_extra
        return set(extra) if extra else None


class FileEvent(_Event):
    """One step in the life of one file. ``type`` is ``file.<state>.v1`` (progress: ``progress.file.v1``)."""

    type: str
    state: FileState
    path: str
    worker: str | None = Field(default=None, max_length=200)
    size: int | None = Field(default=None, ge=0)
    bytes_done: int | None = Field(default=None, ge=0)
    duration_s: float | None = Field(default=None, ge=0)
    checksum: str | None = Field(default=None, max_length=200)
    remote: str | None = Field(default=None, max_length=8192)
    src: str | None = None  # for moves
    attempt: int | None = Field(default=None, ge=0)
    resumed_from: int | None = Field(default=None, ge=0)  # bytes already on the remote and reused
    reason: str | None = Field(default=None, max_length=4000)
    action_id: str | None = Field(default=None, max_length=64)

    @field_validator("type")
    @classmethod
    def _type_matches(cls, value: str) -> str:
        if value != "progress.file.v1" and not (
            value.startswith("file.") and value.endswith(".v1") and value[5:-3] in LIFECYCLE_STATES
        ):
            raise ValueError(f"unknown file event type {value!r}")
        return value

    @classmethod
    def make(cls, state: FileState, *, source: str, path: str, **fields: Any) -> FileEvent:
        kind = "progress.file.v1" if state == "progress" else f"file.{state}.v1"
        return cls(type=kind, state=state, source=source, path=path, **fields)


MAX_CONDITION = 1000


MAX_TARGET = 2000


class WorkerHeartbeat(_Event):
    """A worker is alive; sent every few seconds."""

    type: Literal["worker.heartbeat.v1"] = "worker.heartbeat.v1"
    worker: str = Field(max_length=200)
    role: Literal["watcher", "uploader", "notifier"]
    active: int = Field(default=0, ge=0)
    capacity: int = Field(default=0, ge=0)
    bytes_sent: int = Field(default=0, ge=0)
    files_done: int = Field(default=0, ge=0)
    host: str | None = Field(default=None, max_length=255)
    started_at: float | None = None
    # What keeps the worker from its work, in a sentence ("paused: remote unavailable: …"), and
    # since when; None while nothing does.
    condition: str | None = Field(default=None, max_length=MAX_CONDITION)
    condition_since: float | None = None
    # The worker's last heartbeat, sent as it stops cleanly: it is gone now, not merely quiet.
    stopped: bool = False
    # An uploader's target, as a secret-free URL ("sftp://user@host:22/backup"): the status warns
    # when two sources send to the same or nested targets.
    target: str | None = Field(default=None, max_length=MAX_TARGET)

    @field_validator("condition", mode="before")
    @classmethod
    def _shorten(cls, value: object) -> object:
        """A long cause (an error's whole text) is cut, never a reason to drop the heartbeat."""
        if isinstance(value, str) and len(value) > MAX_CONDITION:
            return value[: MAX_CONDITION - 1] + "…"
        return value

    def last(self) -> WorkerHeartbeat:
        """This heartbeat as the worker's last one, sent as it stops cleanly."""
        return self.model_copy(update={"stopped": True, "active": 0})


Event = FileEvent | WorkerHeartbeat


# ---------------------------------------------------------------- control (uploader → watcher)


class RecheckRequest(_Message):
    """An uploader's upload of ``path`` reached the remote after the file was gone from there.

    The upload was under way when the file (or its folder) was renamed or deleted, and that
    rename or delete may have been applied first, by another worker, while the remote did not
    have the file yet (an S3 PUT leaves no trace until it is complete). ``generation``: what the
    upload left on the remote. The watcher answers with the move again when it holds that
    generation under another path, else, in ``mirror`` mode, with the delete (through its
    delete safety rules). Published on the control exchange, routing key ``recheck.<source>``.

    Without a ``generation``: after a folder's move, the file is here below the folder's new
    name and the remote does not hold it (moves of folders in and around one another, applied
    in another order than made). The watcher sends it again if it sent it before and it is
    still here; else it answers as above.
    """

    type: Literal["control.recheck.v1"] = "control.recheck.v1"
    path: str
    generation: Generation | None = None

    _v = field_validator("path")(_check_path)


def decode_recheck(body: bytes) -> RecheckRequest:
    """Decode a recheck request, or raise :class:`InvalidMessage` with a readable reason."""
    data = _load(body)
    try:
        return RecheckRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid recheck request: {_short(exc)}") from exc


_action_adapter: TypeAdapter[PathChanged | PathMoved | PruneRemote] = TypeAdapter(Action)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=True).encode("utf-8")


_json_str = json.JSONEncoder(ensure_ascii=False).encode  # same escapes as pydantic for a valid path


def encode_changed(
    source: str, path: str, size: int, mtime_ns: int, inode: int, action_id: str | None = None, force: bool = False
) -> bytes:
    """``encode(PathChanged(source=source, path=path, generation=Generation(...)))`` without pydantic.

    For the watcher's scan, which finds every file of a tree on a first start: building and dumping
    two models costs about 15 µs a file, this about 4 (measured). The caller guarantees what validation would
    check: ``path`` passed :func:`~skynet.common.paths.validate_rel_path` and ``source`` the
    settings' pattern. The bytes decode to the same message (tested against the model). ``action_id``:
    the message's id (a :func:`new_id`), when the caller needs to know it. ``force``: the content
    changed although the generation did not; the uploader sends it whatever the remote records.
    """
    return (
        f'{{"id":"{action_id or new_id()}","source":{_json_str(source)},"created_at":{time.time()!r},'
        f'"type":"action.changed.v1","path":{_json_str(path)},"is_dir":false,'
        f'"generation":{{"size":{size:d},"mtime_ns":{mtime_ns:d},"inode":{inode:d}}},'
        f'"force":{"true" if force else "false"}}}'
    ).encode()


def _load(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message is {len(body)} bytes (limit {MAX_MESSAGE_BYTES})")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage(f"message is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidMessage("message is not a JSON object")
    return data


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def decode_action(body: bytes) -> PathChanged | PathMoved | PruneRemote:
    """Decode an action, or raise :class:`InvalidMessage` with a readable reason."""
    data = _load(body)
    kind = data.get("type")
    if kind not in ACTION_TYPES:
        raise InvalidMessage(f"unknown action type or version {str(kind)[:80]!r}")
    try:
        return _action_adapter.validate_python(data)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {kind}: {_short(exc)}") from exc


def decode_event(body: bytes) -> FileEvent | WorkerHeartbeat:
    """Decode an event, or raise :class:`InvalidMessage` with a readable reason."""
    if len(body) <= MAX_MESSAGE_BYTES:
        # Fast path for the common case (pydantic parses and validates the JSON in one pass, about
        # twice as fast as json.loads + model_validate); anything else takes the path below, which
        # gives the readable reason.
        with contextlib.suppress(ValidationError):
            return FileEvent.model_validate_json(body)
    data = _load(body)
    kind = data.get("type")
    try:
        if kind == "worker.heartbeat.v1":
            return WorkerHeartbeat.model_validate(data)
        if isinstance(kind, str) and (kind.startswith("file.") or kind == "progress.file.v1"):
            return FileEvent.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {kind}: {_short(exc)}") from exc
    raise InvalidMessage(f"unknown event type or version {str(kind)[:80]!r}")

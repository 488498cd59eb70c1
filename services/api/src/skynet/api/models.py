"""Response, request and error models: they are the OpenAPI description of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from skynet.common.errors import InvalidPath
from skynet.common.messages import LIFECYCLE_STATES, SOURCE_PATTERN
from skynet.common.paths import validate_rel_path

State = Literal["queued", "waiting", "started", "done", "skipped", "moved", "deleted", "held", "failed", "dead"]
STATES: tuple[str, ...] = LIFECYCLE_STATES
PENDING_STATES: tuple[str, ...] = ("queued", "waiting", "started", "failed")


class Error(BaseModel):
    """Every error response: a clear message, and details when there are some."""

    error: str = Field(description="what went wrong, in one line")
    detail: Any = Field(default=None, description="more about it: invalid fields, hints")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class Ready(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, Check]


class FileInfo(BaseModel):
    source: str
    path: str
    state: str
    size: int | None = None
    bytes_done: int | None = None
    percent: float | None = Field(default=None, description="bytes done / size, 0-100")
    attempts: int = 0
    last_error: str | None = None
    remote: str | None = None
    checksum: str | None = None
    worker: str | None = None
    state_at: datetime = Field(description="time of the event that set the current state")
    progress_at: datetime | None = None
    first_seen_at: datetime
    updated_at: datetime


class FilePage(BaseModel):
    items: list[FileInfo]
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page; null at the end")


class EventInfo(BaseModel):
    seq: int = Field(description="position in the log; the events cursor")
    id: str
    type: str
    source: str
    path: str
    state: str
    worker: str | None = None
    size: int | None = None
    created_at: datetime
    received_at: datetime
    data: dict[str, Any] = Field(description="the event as published")


class EventPage(BaseModel):
    items: list[EventInfo]
    next_cursor: str | None = Field(description="pass as ?cursor= to get the events after these")


class FileDetail(BaseModel):
    file: FileInfo
    history: list[EventInfo] = Field(description="the newest events of this file, oldest first")


class Transfer(BaseModel):
    source: str
    path: str
    worker: str | None = None
    size: int | None = None
    bytes_done: int
    percent: float | None = None
    started_at: datetime
    progress_at: datetime | None = None
    rate_bytes_per_s: float | None = None
    eta_s: float | None = Field(default=None, description="seconds left at the average rate so far")


class TransferList(BaseModel):
    items: list[Transfer]


class Worker(BaseModel):
    worker: str
    role: str
    source: str
    host: str | None = None
    active: int
    capacity: int
    bytes_sent: int
    files_done: int
    started_at: datetime | None = None
    last_seen: datetime
    alive: bool = Field(
        description="heartbeats within SKYNET_API_WORKER_STALE_S (30 s) and no word that it stopped: a worker"
        " killed outright shows as not alive once its last heartbeat is that old, one stopped cleanly at once"
    )
    stopped_at: datetime | None = Field(default=None, description="when the worker said it stopped cleanly")
    target: str | None = Field(default=None, description="an uploader's target, as a secret-free URL")
    condition: str | None = Field(
        default=None,
        description="what keeps the worker from its work, in a sentence (an uploader paused because its target"
        " is unreachable or refuses it; a watcher whose state folder is full or whose folder is gone); null: nothing",
    )
    condition_since: datetime | None = None


class WorkerList(BaseModel):
    items: list[Worker]


class Throughput(BaseModel):
    files: int
    bytes: int


class OldestPending(BaseModel):
    source: str
    path: str
    state: str
    since: datetime
    age_s: float


class WorkerCondition(BaseModel):
    worker: str
    role: str
    source: str
    condition: str
    since: datetime | None = None


class TargetConflict(BaseModel):
    sources: list[str] = Field(description="two sources ...")
    targets: list[str] = Field(description="... and their targets, the same or one inside the other")


class WatcherConflict(BaseModel):
    source: str
    watchers: list[str] = Field(description="the live watchers of that one source, in name order")


class Status(BaseModel):
    generated_at: datetime
    files: dict[str, int] = Field(description="files per state, every source")
    files_total: int
    sources: dict[str, dict[str, int]] = Field(description="files per state, per source")
    done_last_minute: Throughput
    oldest_pending: OldestPending | None = None
    active_transfers: int
    workers_alive: int
    workers_impeded: list[WorkerCondition] = Field(
        default_factory=list, description="the live workers kept from their work, and why (see /v1/workers)"
    )
    notifier_alive: bool = Field(
        default=True,
        description="false: no notifier is storing events, so this picture is as of notifier_seen_at"
        " (events, heartbeats included, wait in the broker's skynet.events queue)",
    )
    notifier_seen_at: datetime | None = Field(default=None, description="newest heartbeat of any notifier")
    target_conflicts: list[TargetConflict] = Field(
        default_factory=list,
        description="live uploaders of two sources sending to the same target, or one inside the other: they"
        " overwrite each other's files, and in mirror mode a full rescan of one deletes the other's",
    )
    watcher_conflicts: list[WatcherConflict] = Field(
        default_factory=list,
        description="sources with more than one live watcher: each sends actions for its own folder to the one"
        " queue the source's uploaders read, so a file only one folder holds looks deleted to the other's",
    )
    queues: dict[str, int | None] | None = Field(
        default=None, description="ready messages per queue (null: no such queue); null without a broker"
    )
    dead_letters: int | None = Field(default=None, description="messages in every dead-letter queue")
    broker_error: str | None = None


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(pattern=SOURCE_PATTERN)
    path: str = Field(min_length=1, max_length=4096)

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        try:
            return validate_rel_path(value)
        except InvalidPath as exc:
            raise ValueError(str(exc)) from None


class SourceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(pattern=SOURCE_PATTERN)


class RescanRequest(SourceRequest):
    full: bool = Field(
        default=False,
        description="also check every file already sent against the remote (one stat / HEAD each) and send"
        " what is missing or different there: heals a remote changed or emptied behind skynet's back",
    )


class RequeueRequest(SourceRequest):
    limit: int | None = Field(default=None, ge=1, le=1_000_000)


class RetryResult(BaseModel):
    action_id: str


class RequeueResult(BaseModel):
    moved: int


class RescanResult(BaseModel):
    requested: bool = True

"""The watcher's settings (``SKYNET_*``), validated once at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from skynet.common.settings import BrokerSettings, DeleteMode


class WatcherSettings(BrokerSettings):
    watch_dir: Path
    state_dir: Path | None = None
    delete_mode: DeleteMode = "keep"
    settle_ms: int = Field(default=500, ge=0, le=3_600_000)
    ignore: Annotated[tuple[str, ...], NoDecode] = ()
    observer: Literal["auto", "inotify", "polling"] = "auto"
    poll_interval_ms: int = Field(default=1000, ge=50)
    rescan_interval_s: float = Field(default=300.0, ge=0)  # 0 = never (start-up scan still runs)
    verify_interval_s: float = Field(default=0.0, ge=0)  # a full scan, remote checked too (0 = never)
    max_open_wait_s: float = Field(default=60.0, ge=0)  # a file open for writing but idle this long is sent anyway
    delete_threshold: int = Field(default=1000, ge=1)  # more deletes than this in the window are held
    delete_window_s: float = Field(default=10.0, gt=0)
    outbox_batch: int = Field(default=500, ge=1)

    @field_validator("ignore", mode="before")
    @classmethod
    def _split_globs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.replace("\n", ",").split(",") if v.strip())
        return value

    @field_validator("watch_dir")
    @classmethod
    def _is_dir(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{str(value)!r} is not an existing folder")
        return value.resolve()

    @model_validator(mode="after")
    def _state_outside_watch(self) -> WatcherSettings:
        state = self.resolved_state_dir
        watch = str(self.watch_dir)
        if str(state) == watch or str(state).startswith(watch.rstrip(os.sep) + os.sep):
            raise ValueError("SKYNET_STATE_DIR must not be inside SKYNET_WATCH_DIR")
        return self

    @property
    def resolved_state_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir.resolve()
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        return Path(base, "skynet", self.source).resolve()

"""Notifier settings (``SKYNET_*`` environment variables), built once in ``main()``."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from skynet.common.settings import BrokerSettings


class NotifierSettings(BrokerSettings):
    database_url: SecretStr = SecretStr("postgresql://postgres@localhost:5432/skynet")
    event_retention_days: float = Field(default=30.0, gt=0)
    progress_retention_minutes: float = Field(default=60.0, gt=0)
    batch_size: int = Field(default=2000, ge=1, le=10_000)
    batch_latency_ms: int = Field(default=200, ge=1, le=60_000)
    prune_interval_s: float = Field(default=300.0, gt=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _pg_scheme(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        return value

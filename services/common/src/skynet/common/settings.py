"""Typed settings from ``SKYNET_*`` environment variables.

Each service defines a subclass and builds it once in ``main()`` with :func:`load_settings`, which
turns every invalid value into one :class:`ConfigError` naming each bad variable.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from skynet.common.errors import ConfigError
from skynet.common.messages import SOURCE_PATTERN

DeleteMode = Literal["keep", "mirror"]

# Development defaults and obvious placeholders; refused when SKYNET_PRODUCTION=true.
PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "changethis", "secret", "password", "guest", "admin", "test", "minioadmin"}
)


def is_placeholder(secret: str | None) -> bool:
    return secret is not None and secret.lower() in PLACEHOLDER_SECRETS


class BaseServiceSettings(BaseSettings):
    """What every service shares."""

    model_config = SettingsConfigDict(env_prefix="SKYNET_", extra="ignore", frozen=True)

    production: bool = False  # refuse development credentials and placeholder secrets
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class BrokerSettings(BaseServiceSettings):
    """Services that talk to RabbitMQ."""

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@localhost:5672/%2F")
    source: str = Field(default="default", pattern=SOURCE_PATTERN)
    queue_type: Literal["classic", "quorum"] = "classic"
    retry_delays_s: Annotated[tuple[float, ...], NoDecode] = (2.0, 10.0, 60.0, 300.0)
    max_attempts: int = Field(default=6, ge=1, le=100)
    progress_queue_max: int = Field(default=10_000, ge=10)
    heartbeat_s: int = Field(default=30, ge=0, le=600)
    amqp_ca_file: str | None = None
    # how long the event sink waits for more lifecycle events before publishing a batch
    event_linger_ms: int = Field(default=25, ge=0, le=1000)

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError("must be an amqp:// or amqps:// URL")
        if not parts.hostname:
            raise ValueError("has no host")
        return value

    @model_validator(mode="after")
    def _no_development_broker_password(self) -> BrokerSettings:
        if self.production and is_placeholder(urlsplit(self.amqp_url.get_secret_value()).password):
            raise ValueError("SKYNET_AMQP_URL uses a development password while SKYNET_PRODUCTION is true")
        return self

    @field_validator("retry_delays_s", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return tuple(float(v) for v in value.split(",") if v.strip())
            except ValueError:
                raise ValueError("must be a comma-separated list of seconds, e.g. 2,10,60") from None
        return value

    @field_validator("retry_delays_s")
    @classmethod
    def _delays_positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(v <= 0 for v in value):
            raise ValueError("must be a comma-separated list of positive seconds")
        return value


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: object) -> S:
    """Build ``cls`` from the environment; raise :class:`ConfigError` naming every bad variable."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            var = f"{prefix}{field}".upper() if field else "configuration"
            given = err.get("input")
            # Echo the value only for a plain, non-secret field: a model-level error's input is
            # the whole settings dict, tokens included.
            secret = any(word in field for word in ("password", "token", "url", "secret", "key"))
            shown = (
                f" (got {str(given)[:80]!r})"
                if field and not secret and isinstance(given, str | int | float | bool)
                else ""
            )
            lines.append(f"{var}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None

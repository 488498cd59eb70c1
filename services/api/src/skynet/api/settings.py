"""API settings (``SKYNET_*`` environment variables), built once in ``main()``.

Auth: ``SKYNET_API_TOKEN`` is the read token, ``SKYNET_API_ADMIN_TOKEN`` the admin token (it
also reads). With neither set the API refuses to start, unless ``SKYNET_API_INSECURE_NO_AUTH=true``
says that an open API is really wanted (a private network, a demo). With ``SKYNET_PRODUCTION=true``
placeholder or short secrets are refused.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from skynet.common.messages import SOURCE_PATTERN
from skynet.common.settings import BaseServiceSettings

PLACEHOLDERS = frozenset({"changeme", "change-me", "changethis", "secret", "password", "token", "admin", "test"})
MIN_PRODUCTION_TOKEN = 16


class ApiSettings(BaseServiceSettings):
    # Checks that look at several variables are field validators on the later one (fields are
    # validated in order), so that an error names one variable and never echoes a secret.
    production: bool = False
    database_url: SecretStr = SecretStr("postgresql://postgres@localhost:5432/skynet")
    amqp_url: SecretStr | None = None
    amqp_ca_file: str | None = None
    api_token: SecretStr | None = None
    api_admin_token: SecretStr | None = None
    api_insecure_no_auth: bool = Field(default=False, validate_default=True)
    api_host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_open_health: bool = True
    api_open_metrics: bool = False
    api_db_pool_size: int = Field(default=8, ge=1, le=100)
    api_worker_stale_s: float = Field(default=30.0, gt=0)
    api_sources: Annotated[tuple[str, ...], NoDecode] = ()  # a plain comma list, not JSON
    api_queue_cache_s: float = Field(default=5.0, ge=0)

    @field_validator("database_url")
    @classmethod
    def _pg_url(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        if info.data.get("production") and parts.password is not None and parts.password.lower() in PLACEHOLDERS:
            raise ValueError("has a placeholder password; refused with SKYNET_PRODUCTION=true")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError("must be an amqp:// or amqps:// URL with a host")
        return value

    @field_validator("api_token", "api_admin_token")
    @classmethod
    def _token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        secret = value.get_secret_value()
        if info.data.get("production") and (secret.lower() in PLACEHOLDERS or len(secret) < MIN_PRODUCTION_TOKEN):
            raise ValueError(
                f"is a placeholder or shorter than {MIN_PRODUCTION_TOKEN} characters; "
                "refused with SKYNET_PRODUCTION=true"
            )
        other = info.data.get("api_token")
        if info.field_name == "api_admin_token" and other is not None and other.get_secret_value() == secret:
            raise ValueError("must differ from SKYNET_API_TOKEN")
        return value

    @field_validator("api_insecure_no_auth")
    @classmethod
    def _auth_configured(cls, value: bool, info: ValidationInfo) -> bool:
        has_token = info.data.get("api_token") is not None or info.data.get("api_admin_token") is not None
        if value and info.data.get("production"):
            raise ValueError("an open API is refused with SKYNET_PRODUCTION=true")
        if not value and not has_token and "api_token" in info.data and "api_admin_token" in info.data:
            raise ValueError(
                "no SKYNET_API_TOKEN or SKYNET_API_ADMIN_TOKEN is set; set one, "
                "or SKYNET_API_INSECURE_NO_AUTH=true to run an open API on purpose"
            )
        return value

    @field_validator("api_sources", mode="before")
    @classmethod
    def _split_sources(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("api_sources")
    @classmethod
    def _valid_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not re.match(SOURCE_PATTERN, v)]
        if bad:
            raise ValueError(f"invalid source names: {', '.join(bad)[:200]}")
        return value

    def secrets(self) -> list[str]:
        """Every secret value, for the log redaction filter."""
        found = [self.database_url.get_secret_value()]
        for s in (self.amqp_url, self.api_token, self.api_admin_token):
            if s is not None:
                found.append(s.get_secret_value())
        password = urlsplit(self.database_url.get_secret_value()).password
        if password:
            found.append(password)
        return found

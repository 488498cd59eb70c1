"""API settings (``SKYNET_*`` environment variables), built once in ``main()``.

Auth: ``SKYNET_API_TOKEN`` is the read token, ``SKYNET_API_ADMIN_TOKEN`` the admin token (it
also reads). With neither set the API refuses to start, unless ``SKYNET_API_INSECURE_NO_AUTH=true``
says that an open API is really wanted (a private network, a demo). With ``SKYNET_PRODUCTION=true``
placeholder or short secrets are refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from skynet.common.messages import SOURCE_PATTERN
from skynet.common.settings import BaseServiceSettings

PLACEHOLDERS = frozenset({"changeme", "change-me", "changethis", "secret", "password", "token", "admin", "test"})
MIN_PRODUCTION_TOKEN = 16


class ApiSettings(BaseServiceSettings):
    database_url: SecretStr = SecretStr("postgresql://postgres@localhost:5432/skynet")
    amqp_url: SecretStr | None = None
    amqp_ca_file: str | None = None
    api_token: SecretStr | None = None
    api_admin_token: SecretStr | None = None
    api_insecure_no_auth: bool = False
    api_host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_open_health: bool = True
    api_open_metrics: bool = False
    api_db_pool_size: int = Field(default=8, ge=1, le=100)
    api_worker_stale_s: float = Field(default=30.0, gt=0)
    api_sources: tuple[str, ...] = ()
    api_queue_cache_s: float = Field(default=5.0, ge=0)
    production: bool = False

    @field_validator("database_url")
    @classmethod
    def _pg_scheme(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
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
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None or not value.get_secret_value() else value

    @field_validator("api_sources", mode="before")
    @classmethod
    def _split_sources(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("api_sources")
    @classmethod
    def _valid_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import re

        bad = [v for v in value if not re.match(SOURCE_PATTERN, v)]
        if bad:
            raise ValueError(f"invalid source names: {', '.join(bad)[:200]}")
        return value

    @model_validator(mode="after")
    def _auth_configured(self) -> ApiSettings:
        if self.api_token is None and self.api_admin_token is None and not self.api_insecure_no_auth:
            raise ValueError(
                "no SKYNET_API_TOKEN or SKYNET_API_ADMIN_TOKEN is set; set one, "
                "or SKYNET_API_INSECURE_NO_AUTH=true to run an open API on purpose"
            )
        if self.production:
            tokens = (("SKYNET_API_TOKEN", self.api_token), ("SKYNET_API_ADMIN_TOKEN", self.api_admin_token))
            for name, secret in tokens:
                if secret is None:
                    continue
                value = secret.get_secret_value()
                if value.lower() in PLACEHOLDERS or len(value) < MIN_PRODUCTION_TOKEN:
                    raise ValueError(
                        f"{name} is a placeholder or shorter than {MIN_PRODUCTION_TOKEN} characters; "
                        "refused with SKYNET_PRODUCTION=true"
                    )
            password = urlsplit(self.database_url.get_secret_value()).password
            if password is not None and password.lower() in PLACEHOLDERS:
                raise ValueError("SKYNET_DATABASE_URL has a placeholder password; refused with SKYNET_PRODUCTION=true")
            if self.api_insecure_no_auth:
                raise ValueError("SKYNET_API_INSECURE_NO_AUTH=true is refused with SKYNET_PRODUCTION=true")
        if (
            self.api_token is not None
            and self.api_admin_token is not None
            and self.api_token.get_secret_value() == self.api_admin_token.get_secret_value()
        ):
            raise ValueError("SKYNET_API_TOKEN and SKYNET_API_ADMIN_TOKEN must differ")
        return self

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

"""The uploader's settings (``SKYNET_*``), validated once at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from skynet.common.settings import BrokerSettings, DeleteMode, is_placeholder
from skynet.uploader.storage.config import BackendSettings


class UploaderSettings(BrokerSettings):
    watch_dir: Path
    target: str
    delete_mode: DeleteMode = "keep"
    concurrency: int = Field(default=4, ge=1, le=256)
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_part_size_mib: int = Field(default=0, ge=0, le=5120)
    s3_multipart_threshold_mib: int = Field(default=16, ge=5, le=5120)
    s3_part_concurrency: int = Field(default=4, ge=1, le=64)
    s3_ca_bundle: str | None = None
    s3_verify: bool = True
    s3_checksum: Literal["crc32", "md5"] = "crc32"
    sftp_key_file: str | None = None
    sftp_key_passphrase: SecretStr | None = None  # for an encrypted SKYNET_SFTP_KEY_FILE
    sftp_password: SecretStr | None = None
    sftp_known_hosts: str | None = None
    sftp_timeout_s: float = Field(default=20.0, gt=0)
    sftp_streams: int = Field(default=2, ge=1, le=16)  # sftp.MAX_STREAMS: the resume margin covers 16
    sftp_client: Literal["auto", "openssh", "paramiko"] = "auto"  # what carries SFTP; see storage/_sftp_openssh.py
    progress_interval_s: float = Field(default=0.5, gt=0)
    max_file_size: int = Field(default=0, ge=0)  # bytes; larger files are refused (0 = no limit of our own)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    stop_grace_s: float = Field(default=8.0, ge=0)  # on SIGTERM, transfers still running after this are handed back

    @field_validator("watch_dir")
    @classmethod
    def _is_dir(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{str(value)!r} is not an existing folder")
        return value.resolve()

    @field_validator("target")
    @classmethod
    def _has_scheme(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("must be a URL such as s3://bucket/prefix, sftp://user@host:22/path or file:///path")
        return value

    @model_validator(mode="after")
    def _no_development_remote_secrets(self) -> UploaderSettings:
        if self.production:
            if self.sftp_password is not None and is_placeholder(self.sftp_password.get_secret_value()):
                raise ValueError("SKYNET_SFTP_PASSWORD is a development placeholder while SKYNET_PRODUCTION is true")
            if is_placeholder(os.environ.get("AWS_SECRET_ACCESS_KEY")):
                raise ValueError("AWS_SECRET_ACCESS_KEY is a development placeholder while SKYNET_PRODUCTION is true")
        return self

    def backend_settings(self) -> BackendSettings:
        return BackendSettings(
            s3_endpoint_url=self.s3_endpoint_url,
            s3_region=self.s3_region,
            s3_part_size_mib=self.s3_part_size_mib,
            s3_multipart_threshold_mib=self.s3_multipart_threshold_mib,
            s3_part_concurrency=self.s3_part_concurrency,
            s3_ca_bundle=self.s3_ca_bundle,
            s3_verify=self.s3_verify,
            s3_checksum=self.s3_checksum,
            sftp_key_file=self.sftp_key_file,
            sftp_key_passphrase=self.sftp_key_passphrase.get_secret_value() if self.sftp_key_passphrase else None,
            sftp_password=self.sftp_password.get_secret_value() if self.sftp_password else None,
            sftp_known_hosts=self.sftp_known_hosts,
            sftp_timeout_s=self.sftp_timeout_s,
            sftp_streams=self.sftp_streams,
            sftp_client=self.sftp_client,
        )

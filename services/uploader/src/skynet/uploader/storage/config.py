"""Settings every backend may read (a subset of the uploader's settings)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackendSettings:
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_part_size_mib: int = 0  # 0 = grow with the file (min 8 MiB; never over 10,000 parts)
    s3_multipart_threshold_mib: int = 16
    s3_part_concurrency: int = 4
    s3_ca_bundle: str | None = None
    s3_verify: bool = True
    s3_checksum: str = "crc32"  # "crc32" (x-amz-checksum-crc32) or "md5" (Content-MD5) on every body
    sftp_key_file: str | None = None
    sftp_key_passphrase: str | None = field(default=None, repr=False)
    sftp_password: str | None = field(default=None, repr=False)
    sftp_known_hosts: str | None = None
    sftp_timeout_s: float = 20.0
    sftp_streams: int = 2  # SFTP connections writing one file >= 64 MiB at once (1..16; see sftp.py)
    sftp_client: str = "auto"  # "auto", "openssh" (the ssh binary carries SFTP) or "paramiko"

"""Looking at a real remote the way a user would: what files it holds and their SHA-256."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.harness import PARTIAL_MARK, sha256_file
from tests.fixtures.s3_server import FAKE_CREDENTIALS, S3Target
from tests.fixtures.sftp_server import SftpTarget
from tests.fixtures.storage_remotes import folder_folders, folders_of_keys


class _FolderView:
    """A remote whose files are in a folder of this machine (the SFTP server's, a mounted one)."""

    @property
    def root(self) -> Path:
        raise NotImplementedError

    def _files(self) -> list[Path]:
        out: list[Path] = []
        for dirpath, _d, files in os.walk(self.root):
            out.extend(Path(dirpath, f) for f in files)
        return out

    def snapshot(self) -> dict[str, str]:
        snap: dict[str, str] = {}
        for f in self._files():
            if f.name.endswith(PARTIAL_MARK):
                continue
            try:
                snap[f.relative_to(self.root).as_posix()] = sha256_file(f)
            except FileNotFoundError:
                continue
        return snap

    def partials(self) -> list[str]:
        return [f.name for f in self._files() if f.name.endswith(PARTIAL_MARK)]

    def read(self, rel: str) -> bytes | None:
        try:
            return (self.root / rel).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def folders(self) -> set[str]:
        return folder_folders(self.root)()


@dataclass
class SftpRemote(_FolderView):
    t: SftpTarget

    @property
    def root(self) -> Path:
        return self.t.local_dir

    def env(self) -> dict[str, str]:
        s = self.t.settings
        assert s.sftp_key_file and s.sftp_known_hosts
        return {
            "SKYNET_TARGET": self.t.target,
            "SKYNET_SFTP_KEY_FILE": s.sftp_key_file,
            "SKYNET_SFTP_KNOWN_HOSTS": s.sftp_known_hosts,
        }


@dataclass
class FolderRemote(_FolderView):
    """A ``file://`` target: the quickest remote there is."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base

    def env(self) -> dict[str, str]:
        self.base.mkdir(parents=True, exist_ok=True)
        return {"SKYNET_TARGET": f"file://{self.base}"}


_S3_CACHE: dict[tuple[str, str, int], str] = {}


@dataclass
class S3Remote:
    t: S3Target

    def env(self) -> dict[str, str]:
        env = dict(FAKE_CREDENTIALS)
        env.update({"SKYNET_TARGET": self.t.target, "SKYNET_S3_ENDPOINT_URL": str(self.t.settings.s3_endpoint_url)})
        return env

    def _objects(self) -> list[tuple[str, str, int]]:
        out: list[tuple[str, str, int]] = []
        paginator = self.t.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.t.bucket, Prefix=self.t.prefix + "/"):
            out.extend((o["Key"], o["ETag"], o["Size"]) for o in page.get("Contents", []))
        return out

    def snapshot(self) -> dict[str, str]:
        snap = {}
        base = self.t.prefix + "/"
        for key, etag, size in self._objects():
            rel = key[len(base) :]
            if rel.startswith(".skynet/"):
                continue
            cached = _S3_CACHE.get((key, etag, size))
            if cached is None:
                body = self.read(rel)
                if body is None:
                    continue
                cached = _S3_CACHE[(key, etag, size)] = hashlib.sha256(body).hexdigest()
            snap[rel] = cached
        return snap

    def partials(self) -> list[str]:
        uploads = self.t.client.list_multipart_uploads(Bucket=self.t.bucket).get("Uploads", [])
        return [u["Key"] for u in uploads]

    def read(self, rel: str) -> bytes | None:
        try:
            obj = self.t.client.get_object(Bucket=self.t.bucket, Key=f"{self.t.prefix}/{rel}")
        except self.t.client.exceptions.NoSuchKey:
            return None
        data: bytes = obj["Body"].read()
        return data

    def folders(self) -> set[str]:
        base = self.t.prefix + "/"
        return folders_of_keys(k[len(base) :] for k, _e, _s in self._objects() if not k.startswith(base + ".skynet/"))

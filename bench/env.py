"""The servers a benchmark run talks to, all on loopback and all private to the run.

An OpenSSH sshd (``tests.fixtures.sftp_server.SftpServer``), moto's S3 server
(``tests.fixtures.s3_server.S3Server``) and a RabbitMQ vhost of its own on the machine's broker.
Helpers count what a remote holds, so skynet and the peers are checked the same way.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness import PARTIAL_MARK
from tests.e2e.remotes import S3Remote, SftpRemote
from tests.fixtures.broker import amqp_url_for
from tests.fixtures.s3_server import FAKE_CREDENTIALS, S3Server, S3Target
from tests.fixtures.s3_server import make_target as make_s3_target
from tests.fixtures.sftp_server import SftpServer, SftpTarget
from tests.fixtures.sftp_server import make_target as make_sftp_target


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@dataclass
class Remote:
    """One fresh remote folder/bucket: what skynet's env needs, and how peers address it."""

    kind: str  # "sftp" | "s3"
    view: SftpRemote | S3Remote
    sftp: SftpTarget | None = None
    s3: S3Target | None = None

    def count(self) -> int:
        if self.sftp is not None:
            n = 0
            for _d, _s, files in os.walk(self.sftp.local_dir):
                n += sum(1 for f in files if not f.endswith(PARTIAL_MARK))
            return n
        assert self.s3 is not None
        n = 0
        paginator = self.s3.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.s3.bucket, Prefix=self.s3.prefix + "/"):
            n += sum(1 for o in page.get("Contents", []) if "/.skynet/" not in o["Key"])
        return n

    def total_bytes(self) -> int:
        if self.sftp is not None:
            total = 0
            for d, _s, files in os.walk(self.sftp.local_dir):
                total += sum(os.path.getsize(os.path.join(d, f)) for f in files if not f.endswith(PARTIAL_MARK))
            return total
        assert self.s3 is not None
        total = 0
        paginator = self.s3.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.s3.bucket, Prefix=self.s3.prefix + "/"):
            total += sum(o["Size"] for o in page.get("Contents", []) if "/.skynet/" not in o["Key"])
        return total

    def clear(self) -> None:
        """Free the space (moto keeps objects in memory; sshd's root is on disk)."""
        if self.sftp is not None:
            subprocess.run(["rm", "-rf", str(self.sftp.local_dir)], check=False)
            return
        assert self.s3 is not None
        paginator = self.s3.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.s3.bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.client.delete_objects(Bucket=self.s3.bucket, Delete={"Objects": keys})


class BenchEnv:
    def __init__(self, work: Path) -> None:
        self.work = work.resolve()
        self.sshd: SftpServer | None = None
        self.moto: S3Server | None = None
        self.vhost = f"bench-{uuid.uuid4().hex[:10]}"
        self._runs = 0

    def start(self) -> BenchEnv:
        os.environ.update(FAKE_CREDENTIALS)
        os.environ.pop("AWS_PROFILE", None)
        sshd_dir = self.work / f"sshd-{uuid.uuid4().hex[:6]}"
        sshd_dir.mkdir(parents=True)
        os.chmod(sshd_dir, 0o755)
        self.sshd = SftpServer(sshd_dir)
        self.sshd.start()
        self.moto = S3Server()
        self.moto.start()
        _ctl("add_vhost", self.vhost)
        _ctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        return self

    def close(self) -> None:
        if self.sshd is not None:
            self.sshd.stop()
        if self.moto is not None:
            self.moto.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.vhost], capture_output=True, timeout=120)

    @property
    def amqp_url(self) -> str:
        return amqp_url_for(self.vhost)

    def source(self) -> str:
        """A fresh source name per skynet run: its own queues in the shared vhost."""
        self._runs += 1
        return f"bench{self._runs}"

    def remote(self, kind: str, via: Any = None) -> Remote:
        """A fresh remote; ``via``: a proxy (``.port``/``.url``) to reach the server through."""
        if kind == "sftp":
            assert self.sshd is not None
            t = make_sftp_target(self.sshd, via=via)
            t.local_dir.mkdir(parents=True, exist_ok=True)
            return Remote("sftp", SftpRemote(t), sftp=t)
        assert self.moto is not None
        s3t = make_s3_target(self.moto, endpoint_url=via.url if via is not None else None)
        return Remote("s3", S3Remote(s3t), s3=s3t)

    def sftp_known_hosts(self, port: int | None = None) -> str:
        assert self.sshd is not None
        return self.sshd.known_hosts if port is None else self.sshd.known_hosts_for(port)

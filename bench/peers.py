"""The tools people would use instead of skynet, run on the same data against the same servers.

Each function copies a local folder (or one file) to a fresh remote and returns the seconds it
took, wall clock, including connection set-up (as skynet's figures include its own).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import paramiko
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from bench.env import BenchEnv, Remote

RCLONE = "/usr/bin/rclone"


def _rclone_base(env: BenchEnv, remote: Remote, work: Path, via: Any = None) -> tuple[list[str], str]:
    """rclone's command line for ``remote``; ``via``: a proxy (``.port``/``.url``) to reach the server through."""
    conf = work / "rclone.conf"
    conf.touch()
    base = [RCLONE, "--config", str(conf), "-q", "--retries", "1"]
    if remote.sftp is not None:
        assert env.sshd is not None
        t = remote.sftp
        base += [
            "--sftp-host",
            env.sshd.host,
            "--sftp-port",
            str(via.port if via is not None else env.sshd.port),
            "--sftp-user",
            env.sshd.user,
            "--sftp-key-file",
            env.sshd.key_file,
            "--sftp-known-hosts-file",
            env.sshd.known_hosts if via is None else env.sshd.known_hosts_for(via.port),
        ]
        return base, f":sftp:{t.local_dir}"
    assert remote.s3 is not None and env.moto is not None
    base += [
        "--s3-provider",
        "Other",
        "--s3-endpoint",
        env.moto.endpoint_url if via is None else via.url,
        "--s3-access-key-id",
        "testing",
        "--s3-secret-access-key",
        "testing",
        "--s3-region",
        "us-east-1",
        "--s3-no-check-bucket",
    ]
    return base, f":s3:{remote.s3.bucket}/{remote.s3.prefix}"


def rclone_copy(
    env: BenchEnv,
    remote: Remote,
    src: Path,
    work: Path,
    *,
    transfers: int,
    extra: tuple[str, ...] = (),
    via: Any = None,
) -> float:
    base, dest = _rclone_base(env, remote, work, via)
    one = [*base, "copyto", str(src), f"{dest}/{src.name}"]
    cmd = one if src.is_file() else [*base, "copy", str(src), dest]
    cmd += ["--transfers", str(transfers), *extra]
    env_vars = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone refuses it on plain http
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=3600, env=env_vars)
    return time.perf_counter() - t0


def rsync_ssh(env: BenchEnv, remote: Remote, src: Path) -> float:
    assert env.sshd is not None and remote.sftp is not None
    ssh = (
        f"ssh -p {env.sshd.port} -i {env.sshd.key_file} -o UserKnownHostsFile={env.sshd.known_hosts}"
        " -o StrictHostKeyChecking=yes -o BatchMode=yes -o Ciphers=aes128-gcm@openssh.com"
    )
    target = f"{env.sshd.user}@{env.sshd.host}:{remote.sftp.local_dir}/"
    source = f"{src}/" if src.is_dir() else str(src)
    t0 = time.perf_counter()
    subprocess.run(["rsync", "-a", "--whole-file", "-e", ssh, source, target], check=True, timeout=3600)
    return time.perf_counter() - t0


def _files(src: Path) -> list[Path]:
    out: list[Path] = []
    for d, _s, names in os.walk(src):
        out.extend(Path(d, n) for n in names)
    return out


def _s3_client(env: BenchEnv, pool: int, via: Any = None) -> object:
    assert env.moto is not None
    return boto3.session.Session().client(
        "s3",
        endpoint_url=env.moto.endpoint_url if via is None else via.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=pool),
    )


def boto3_put_loop(env: BenchEnv, remote: Remote, src: Path, threads: int = 8, via: Any = None) -> float:
    """A bare boto3 put_object loop over a thread pool, one shared client."""
    assert remote.s3 is not None
    t0 = time.perf_counter()
    client = _s3_client(env, threads, via)
    bucket, prefix = remote.s3.bucket, remote.s3.prefix

    def put(p: Path) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{p.relative_to(src).as_posix()}", Body=p.read_bytes())  # type: ignore[attr-defined]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, _files(src)))
    return time.perf_counter() - t0


def boto3_upload_file(env: BenchEnv, remote: Remote, path: Path, threads: int = 8) -> float:
    assert remote.s3 is not None
    t0 = time.perf_counter()
    client = _s3_client(env, threads)
    cfg = TransferConfig(max_concurrency=threads, use_threads=True)
    client.upload_file(str(path), remote.s3.bucket, f"{remote.s3.prefix}/{path.name}", Config=cfg)  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def _paramiko_connect(env: BenchEnv) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    """Tuned paramiko: TCP_NODELAY, 64 MiB windows, AES-GCM first."""
    assert env.sshd is not None
    sock = socket.create_connection((env.sshd.host, env.sshd.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    window = 64 * 1024 * 1024
    t = paramiko.Transport(sock, default_window_size=window, default_max_packet_size=256 * 1024)
    opts = t.get_security_options()
    fast = ("aes128-gcm@openssh.com", "aes128-ctr")
    opts.ciphers = tuple(c for c in fast if c in opts.ciphers) + tuple(c for c in opts.ciphers if c not in fast)
    t.connect(pkey=paramiko.PKey.from_path(env.sshd.key_file), username=env.sshd.user)
    sftp = paramiko.SFTPClient.from_transport(t, window_size=window, max_packet_size=256 * 1024)
    assert sftp is not None
    return t, sftp


def paramiko_put(env: BenchEnv, remote: Remote, path: Path) -> float:
    """One file over one tuned paramiko SFTP stream (``putfo``: pipelined 32 KiB writes)."""
    assert remote.sftp is not None
    t0 = time.perf_counter()
    transport, sftp = _paramiko_connect(env)
    try:
        with open(path, "rb") as f:
            sftp.putfo(f, f"{remote.sftp.local_dir}/{path.name}", confirm=False)
    finally:
        transport.close()
    return time.perf_counter() - t0

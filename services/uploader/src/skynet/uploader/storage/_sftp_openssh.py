"""SFTP over the OpenSSH client: paramiko speaks SFTP, ``ssh -s sftp`` carries it (private to sftp).

paramiko does SSH's packet work in Python: for every 32 KiB packet it builds, pads, encrypts and
locks, about 7.7 s of CPU per GiB on the bench machine, which capped one upload at one core's
worth of Python (120 MiB/s there, against 180-200 for rclone). The OpenSSH client does the same
work in C. Here paramiko's SFTP client talks to an ``ssh`` child over a socket pair, so the
protocol code (the pipelined writes, resume, attributes) is the same as over paramiko's own
transport, and the Python CPU per GiB falls to about 1.4 s (measured, same sshd, same minute).

The host key is still pinned: ``StrictHostKeyChecking=yes`` against the one known_hosts file
skynet is given, nothing else (no user or system configuration, no agent, no other identity), and
a host missing from that file is refused before ``ssh`` is started. It needs a key file without a
passphrase (``ssh`` would ask for one on a terminal); a password or an encrypted key keeps
paramiko's transport (see :func:`unusable`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from typing import IO

import paramiko

from skynet.common.errors import ConfigError, RemoteAccessDenied, RemoteUnavailable
from skynet.uploader.storage._sftp_connect import Endpoint, pinned_keys

CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr"
STDERR_LIMIT = 4096  # bytes of ssh's own error output kept for the error message
ENV_PASSED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ")  # nothing else (no secrets) reaches ssh


def ssh_binary() -> str | None:
    return shutil.which("ssh")


def unusable(*, key_file: str | None, passphrase: str | None) -> str | None:
    """Why the OpenSSH client cannot carry this connection, or None if it can."""
    if ssh_binary() is None:
        return "no ssh client on PATH"
    if not key_file:
        return "it needs a key file (SKYNET_SFTP_KEY_FILE); a password goes through paramiko"
    if passphrase:
        return "the key file is encrypted; ssh would ask for its passphrase on a terminal"
    try:
        mode = os.stat(key_file).st_mode
    except OSError as exc:
        return f"cannot read {key_file}: {exc.strerror}"
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{key_file} is readable by others (mode {stat.S_IMODE(mode):o}); ssh refuses such a key"
    try:
        pwd.getpwuid(os.getuid())
    except KeyError:
        return f"uid {os.getuid()} has no passwd entry; ssh refuses to run"
    return None


def command(ep: Endpoint, *, key_file: str, known_hosts: str, timeout: float) -> list[str]:
    alive = max(1, round(timeout / 3))
    options = {
        "BatchMode": "yes",  # never a prompt
        "StrictHostKeyChecking": "yes",  # never auto-accept, never update the file
        "UserKnownHostsFile": known_hosts,
        "GlobalKnownHostsFile": "/dev/null",
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
        "ConnectTimeout": str(max(1, round(timeout))),
        "ServerAliveInterval": str(alive),  # a silent peer is noticed within about the timeout
        "ServerAliveCountMax": "3",
        "Ciphers": CIPHERS,
        "LogLevel": "ERROR",
    }
    cmd = ["ssh", "-F", "/dev/null", "-T", "-i", key_file, "-p", str(ep.port), "-l", ep.user]
    for name, value in options.items():
        cmd += ["-o", f"{name}={value}"]
    return [*cmd, "-s", "--", ep.host, "sftp"]


class SshPipe:
    """The ``ssh`` child and our end of the socket pair it reads and writes.

    It is both what paramiko's SFTP client sends through (``send``/``recv``) and the backend's
    "transport" (``is_active``/``close``).
    """

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
        self._sock = sock
        self._proc = proc
        self._stderr = stderr
        self.closed = False

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def recv(self, n: int) -> bytes:
        return self._sock.recv(n)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def get_name(self) -> str:
        return "ssh"

    def is_active(self) -> bool:
        return not self.closed and self._proc.poll() is None

    def error_output(self) -> str:
        """What ssh wrote to stderr (its last lines): why it ended."""
        try:
            self._stderr.seek(0)
            text = self._stderr.read()[-STDERR_LIMIT:].decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return " ".join(line.strip() for line in text.splitlines() if line.strip())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._sock.close()  # ssh reads end-of-file and leaves
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()


def connect(
    ep: Endpoint, known: paramiko.HostKeys, *, key_file: str, known_hosts: str, timeout: float
) -> tuple[SshPipe, paramiko.SFTPClient]:
    """An SFTP client on an ``ssh`` child, or a skynet error (the same ones as paramiko's transport)."""
    pinned_keys(ep, known)  # refused before ssh starts, with the same message as paramiko's transport
    ours, theirs = socket.socketpair()
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (the pipe owns it and closes it)
    try:
        # A session of its own: a Ctrl-C or SIGTERM meant for the uploader does not cut the
        # connection under the transfer it is finishing; the uploader closes it when done.
        proc = subprocess.Popen(
            command(ep, key_file=key_file, known_hosts=known_hosts, timeout=timeout),
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=stderr,
            env={name: os.environ[name] for name in ENV_PASSED if name in os.environ},
            start_new_session=True,
        )
    except OSError as exc:
        ours.close()
        stderr.close()
        raise ConfigError(f"cannot run ssh: {exc}") from exc
    finally:
        theirs.close()
    pipe = SshPipe(ours, proc, stderr)
    pipe.settimeout(timeout)
    try:
        sftp = paramiko.SFTPClient(pipe)  # type: ignore[arg-type]  # paramiko takes any socket-like object
    except (paramiko.SSHException, OSError, EOFError) as exc:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)  # ssh has said why it ended
        why = pipe.error_output()
        pipe.close()
        raise _refusal(ep, why) from exc
    except BaseException:
        pipe.close()
        raise
    return pipe, sftp


def _refusal(ep: Endpoint, why: str) -> RemoteUnavailable:
    if "Host key verification failed" in why or "IDENTIFICATION HAS CHANGED" in why:
        return RemoteAccessDenied(f"host key of {ep.known_hosts_name} does not match known_hosts: refusing to connect")
    if "Permission denied" in why:
        return RemoteAccessDenied(f"authentication as {ep.user!r} on {ep.host}:{ep.port} failed")
    return RemoteUnavailable(f"SSH session with {ep.host}:{ep.port} failed: {why or 'ssh ended'}")

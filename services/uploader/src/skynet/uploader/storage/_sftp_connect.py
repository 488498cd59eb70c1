"""Opening a tuned, host-key-pinned SFTP session with paramiko (private to the sftp backend).

* The server's host key must be listed in the known_hosts file (``[host]:port`` entries for a
  port other than 22; hashed entries work). Nothing is ever auto-accepted: the check is ours, done
  before authenticating, and a missing file or an unknown or changed key is refused.
* TCP_NODELAY is set (paramiko leaves Nagle on, which costs ~40 ms per small request/response).
* Large windows and packets, and fast ciphers first (AES-GCM / AES-CTR).
* :func:`write_request_size` asks the server how large one write request may be
  (``limits@openssh.com``): fewer, larger requests cost paramiko less Python per byte.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

from skynet.common.errors import ConfigError, RemoteAccessDenied, RemoteUnavailable

WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024  # what we accept from the server; OpenSSH's sshd takes 32 KiB packets from us
DEFAULT_WRITE_SIZE = 32 * 1024  # what every SFTP server accepts in one write request
MAX_WRITE_SIZE = 256 * 1024
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes128-ctr", "aes256-gcm@openssh.com", "aes256-ctr")
_KEY_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


@dataclass(frozen=True)
class Endpoint:
    user: str
    host: str
    port: int

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def load_known_hosts(path: str | None) -> paramiko.HostKeys:
    if not path:
        raise ConfigError("SKYNET_SFTP_KNOWN_HOSTS is not set: the SFTP server's host key must be pinned")
    if not os.path.isfile(path):
        raise ConfigError(f"SKYNET_SFTP_KNOWN_HOSTS: {path} does not exist")
    keys = paramiko.HostKeys()
    try:
        keys.load(path)
    except (OSError, paramiko.SSHException) as exc:
        raise ConfigError(f"SKYNET_SFTP_KNOWN_HOSTS: cannot read {path}: {exc}") from exc
    return keys


def load_private_key(path: str, passphrase: str | None = None) -> paramiko.PKey:
    """The private key in ``path`` (OpenSSH or PEM; decrypted with ``passphrase`` if encrypted)."""
    try:
        # paramiko types the passphrase as str but decrypts only with bytes ("password must be bytes")
        return paramiko.PKey.from_path(path, passphrase.encode("utf-8") if passphrase else None)  # type: ignore[arg-type]
    except FileNotFoundError as exc:
        raise ConfigError(f"SKYNET_SFTP_KEY_FILE: {path} does not exist") from exc
    except TypeError as exc:  # paramiko's way of saying "encrypted, and no passphrase given"
        raise ConfigError(f"SKYNET_SFTP_KEY_FILE: {path} is encrypted; set SKYNET_SFTP_KEY_PASSPHRASE") from exc
    except (OSError, paramiko.SSHException, ValueError) as exc:
        hint = " (is SKYNET_SFTP_KEY_PASSPHRASE right?)" if passphrase else ""
        raise ConfigError(f"SKYNET_SFTP_KEY_FILE: cannot load {path}{hint}: {exc}") from exc


def pinned_keys(ep: Endpoint, known: paramiko.HostKeys) -> dict[str, paramiko.PKey]:
    """The host keys known_hosts pins for ``ep``, by type; refused if there are none."""
    pinned: dict[str, paramiko.PKey] = dict(known.lookup(ep.known_hosts_name) or {})
    if not pinned:
        raise RemoteAccessDenied(
            f"host key of {ep.known_hosts_name} is not in known_hosts; add it (ssh-keyscan -p {ep.port} {ep.host})"
        )
    return pinned


def connect(
    ep: Endpoint,
    known: paramiko.HostKeys,
    *,
    pkey: paramiko.PKey | None,
    password: str | None,
    timeout: float,
) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    """An authenticated transport and an SFTP client on it, or a skynet error."""
    pinned = pinned_keys(ep, known)
    try:
        sock = socket.create_connection((ep.host, ep.port), timeout=timeout)
    except OSError as exc:
        raise RemoteUnavailable(f"cannot connect to {ep.host}:{ep.port}: {exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
    try:
        opts = transport.get_security_options()
        available = opts.ciphers
        opts.ciphers = tuple(c for c in FAST_CIPHERS if c in available) + tuple(
            c for c in available if c not in FAST_CIPHERS
        )
        # Negotiate only host key types we have pinned, so the check below can succeed.
        wanted = [alg for kt in pinned for alg in _KEY_ALGORITHMS.get(kt, (kt,))]
        key_types = tuple(k for k in wanted if k in opts.key_types)
        if key_types:
            opts.key_types = key_types
        transport.banner_timeout = timeout
        transport.auth_timeout = timeout
        transport.start_client(timeout=timeout)
        server_key = transport.get_remote_server_key()
        expected = pinned.get(server_key.get_name())
        if expected is None or expected != server_key:
            raise RemoteAccessDenied(
                f"host key of {ep.known_hosts_name} ({server_key.get_name()} "
                f"{server_key.fingerprint}) does not match known_hosts: refusing to connect"
            )
        if pkey is not None:
            transport.auth_publickey(ep.user, pkey)
        elif password is not None:
            transport.auth_password(ep.user, password)
        else:
            raise ConfigError("SFTP target needs SKYNET_SFTP_KEY_FILE or SKYNET_SFTP_PASSWORD")
        sftp = paramiko.SFTPClient.from_transport(transport, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
        if sftp is None:
            raise RemoteUnavailable(f"{ep.host}:{ep.port} did not open an SFTP channel")
        sftp.get_channel().settimeout(timeout)  # type: ignore[union-attr]
    except paramiko.AuthenticationException as exc:
        transport.close()
        raise RemoteAccessDenied(f"authentication as {ep.user!r} on {ep.host}:{ep.port} failed") from exc
    except (paramiko.SSHException, OSError, EOFError) as exc:
        transport.close()
        raise RemoteUnavailable(f"SSH session with {ep.host}:{ep.port} failed: {exc}") from exc
    except BaseException:
        transport.close()
        raise
    return transport, sftp


def write_request_size(sftp: paramiko.SFTPClient) -> int:
    """The data size of one write request: a power of two, 32 KiB to 256 KiB.

    OpenSSH (8.6 and later) states its limits with the ``limits@openssh.com`` extension (9.2:
    255 KiB of data per write), which gives 128 KiB; a server that does not answer, or answers
    with no limit, gets the 32 KiB every server accepts. One round trip, once per connection.
    Raises what paramiko raises when the connection itself fails.
    """
    raw: Any = sftp  # paramiko's request primitives are not in its type stubs
    try:
        kind, msg = raw._request(CMD_EXTENDED, "limits@openssh.com")
    except (OSError, paramiko.SFTPError):
        channel = sftp.get_channel()
        if channel is None or channel.closed:
            raise  # the connection died: not an unsupported extension
        return DEFAULT_WRITE_SIZE
    if kind != CMD_EXTENDED_REPLY:
        return DEFAULT_WRITE_SIZE
    msg.get_int64()  # max-packet-length
    msg.get_int64()  # max-read-length
    max_write = msg.get_int64()
    size = DEFAULT_WRITE_SIZE
    while size * 2 <= min(max_write, MAX_WRITE_SIZE):
        size *= 2
    return size

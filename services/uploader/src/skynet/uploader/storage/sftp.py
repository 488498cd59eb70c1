"""``sftp://user@host:port/base/path``: an SFTP server as a target (paramiko).

The path of the URL is absolute on the server; ``sftp://host/~/dir`` is relative to the login
folder. Authentication by key (``SKYNET_SFTP_KEY_FILE``) or password (``SKYNET_SFTP_PASSWORD``);
the host key is pinned by ``SKYNET_SFTP_KNOWN_HOSTS`` (see ``_sftp_connect``).

Uploads write to a partial next to the final name whose name carries the generation
(``.<name>.<size>-<mtime_ns>-<inode>.skynet-partial``; see ``_partial``) with pipelined 32 KiB requests, set the
remote mtime to the local one (whole seconds: SFTP v3 has no better), then replace the final name
atomically with ``posix-rename@openssh.com``. **Resume:** a partial of the same generation is
continued from its last whole ``WRITE_CHUNK`` boundary after reading back the chunk before it and
comparing it with the local bytes (a mismatch starts over); partials of other generations are
deleted. The server applies one handle's writes in order, so a partial is always a prefix of the
file. Writes go over one channel: with 32 KiB requests pipelined inside a 64 MiB window a single
stream already fills a LAN link, and parallel streams at different offsets would leave holes that
make a killed partial impossible to resume without reading it all back, so ``sftp_streams`` is
not used (yet).

``delete`` leaves folders in place. The connection is opened on first use and reopened on the
next call after it was lost.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import posixpath
import socket
import stat as stat_mod
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import paramiko

from skynet.common.errors import (
    ConfigError,
    InvalidPath,
    LocalFileError,
    RemoteRefused,
    RemoteUnavailable,
    SkynetError,
)
from skynet.common.messages import Generation
from skynet.common.paths import remote_join, validate_rel_path
from skynet.uploader.storage import _partial, _sftp_connect
from skynet.uploader.storage._localfile import open_regular
from skynet.uploader.storage.base import (
    Backend,
    CallbackError,
    Capabilities,
    ProgressFn,
    RemoteEntry,
    UploadResult,
    guard_progress,
)
from skynet.uploader.storage.config import BackendSettings

log = logging.getLogger(__name__)

WRITE_CHUNK = 1024 * 1024  # progress is reported, and a resume restarts, at these boundaries


def generation_tag(generation: Generation) -> int:
    """A tag of the full generation, stored as the remote file's atime.

    SFTP (v3) records only whole-second mtimes, so two versions of a file written within one
    second with the same size would look identical and a newer one could be skipped. The remote
    mtime keeps the local mtime (seconds) for people and tools; the atime carries this tag of
    (size, mtime_ns, inode). The tag lies in the future (2038 to 2072), later than any mtime or
    ctime, so reading the file on a ``relatime`` server (Linux's default) never moves it. Should
    something move it anyway (``strictatime``), the only cost is one needless re-upload: a
    mismatch never hides a difference.
    """
    digest = hashlib.blake2b(generation.token().encode(), digest_size=4).digest()
    return 0x80000000 + (int.from_bytes(digest, "big") & 0x3FFFFFFF)


def classify(exc: BaseException, what: str = "") -> SkynetError:
    """Translate a paramiko/socket/SFTP-status exception into the matching skynet error."""
    if isinstance(exc, SkynetError):
        return exc
    prefix = f"{what}: " if what else ""
    if isinstance(exc, paramiko.AuthenticationException):
        return RemoteRefused(f"{prefix}authentication failed")
    if isinstance(exc, (paramiko.SSHException, EOFError, ConnectionError, TimeoutError, socket.timeout)):
        return RemoteUnavailable(f"{prefix}{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        if exc.errno in (errno.EACCES, errno.EPERM):
            return RemoteRefused(f"{prefix}permission denied")
        if exc.errno == errno.ENOENT:
            return RemoteRefused(f"{prefix}no such file or folder")
        if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL):
            return InvalidPath(f"{prefix}the server refuses the name")
        if exc.errno is None or exc.errno in (errno.EIO,):
            # SFTP_FAILURE and friends: the server refused without saying why
            return RemoteRefused(f"{prefix}{exc}")
        return RemoteUnavailable(f"{prefix}{exc}")
    return RemoteUnavailable(f"{prefix}{type(exc).__name__}: {exc}")


class SftpBackend(Backend):
    scheme = "sftp"
    capabilities = Capabilities(server_side_move=True, dir_move=True, resumable=True, exact_generation=False)

    def __init__(self, endpoint: _sftp_connect.Endpoint, base: str, settings: BackendSettings) -> None:
        self.endpoint = endpoint
        self._home_relative = base == "~" or base.startswith("~/")
        self._base = (base[1:] if self._home_relative else base).strip("/")
        self._settings = settings
        self._known = _sftp_connect.load_known_hosts(settings.sftp_known_hosts)
        self._pkey = _sftp_connect.load_private_key(settings.sftp_key_file) if settings.sftp_key_file else None
        if self._pkey is None and settings.sftp_password is None:
            raise ConfigError("SFTP target needs SKYNET_SFTP_KEY_FILE or SKYNET_SFTP_PASSWORD")
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._dirs: set[str] = set()

    # ------------------------------------------------------------------ connection

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._transport is not None and self._transport.is_active():
            return self._sftp
        self.close()
        self._transport, self._sftp = _sftp_connect.connect(
            self.endpoint,
            self._known,
            pkey=self._pkey,
            password=self._settings.sftp_password,
            timeout=self._settings.sftp_timeout_s,
        )
        return self._sftp

    def _fail(self, exc: BaseException, what: str) -> SkynetError:
        err = classify(exc, what)
        if not isinstance(err, RemoteUnavailable) and not isinstance(exc, SkynetError):
            # A bare OSError may be the server saying no, or paramiko saying the channel died
            # under us ("Socket is closed"): a dead connection means "unavailable".
            alive = self._transport is not None and self._transport.is_active()
            if not alive or (self._sftp is not None and self._sftp.get_channel().closed):  # type: ignore[union-attr]
                err = RemoteUnavailable(f"{what}: connection lost ({exc})")
        if isinstance(err, RemoteUnavailable):
            self.close()  # the next call reconnects
        return err

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transport = self._sftp = None
        self._dirs.clear()

    # ------------------------------------------------------------------ paths

    def _remote(self, path: str) -> str:
        joined = remote_join(self._base, validate_rel_path(path))
        if self._home_relative:
            return joined or "."
        return "/" + joined

    def _rel(self, remote: str) -> str:
        root = self._remote("")
        if root == ".":
            return remote[2:] if remote.startswith("./") else remote
        return remote[len(root) :].lstrip("/")

    @staticmethod
    def _replace(sftp: paramiko.SFTPClient, src: str, dst: str) -> None:
        """Rename ``src`` over ``dst`` atomically (posix-rename@openssh.com).

        A server without that extension gets a plain rename, after removing ``dst`` if needed.
        """
        try:
            sftp.posix_rename(src, dst)
            return
        except OSError as exc:
            if exc.errno is not None:
                raise
            log.debug("posix-rename failed (%s); falling back to rename", exc)
        try:
            sftp.rename(src, dst)
        except OSError as exc:
            if exc.errno is not None:
                raise
            sftp.remove(dst)
            sftp.rename(src, dst)

    def _mkdirs(self, sftp: paramiko.SFTPClient, folder: str) -> None:
        if folder in self._dirs or folder in ("", "/", "."):
            return
        try:
            st = sftp.stat(folder)
            if st.st_mode is not None and not stat_mod.S_ISDIR(st.st_mode):
                raise RemoteRefused(f"{folder} exists on the server and is not a folder")
        except FileNotFoundError:
            self._mkdirs(sftp, posixpath.dirname(folder))
            try:
                sftp.mkdir(folder)
            except OSError:
                sftp.stat(folder)  # created meanwhile by someone else? else this raises
        self._dirs.add(folder)

    # ------------------------------------------------------------------ interface

    def describe(self, path: str) -> str:
        ep = self.endpoint
        remote = self._remote(path)
        shown = remote if remote.startswith("/") else "/~/" + remote
        return f"sftp://{ep.user}@{ep.host}:{ep.port}{shown}"

    def check(self) -> None:
        try:
            self._client().stat(".")
        except Exception as exc:
            raise self._fail(exc, "check") from exc

    def matches(self, entry: RemoteEntry, generation: Generation) -> bool:
        """Size, whole-second mtime and the generation tag in atime must all agree."""
        return (
            entry.size == generation.size
            and entry.mtime is not None
            and int(entry.mtime) == generation.mtime_ns // 10**9
            and entry.atime is not None
            and int(entry.atime) == generation_tag(generation)
        )

    def stat(self, path: str) -> RemoteEntry | None:
        remote = self._remote(path)
        try:
            st = self._client().stat(remote)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._fail(exc, f"stat {remote}") from exc
        if st.st_mode is not None and not stat_mod.S_ISREG(st.st_mode):
            return None
        return RemoteEntry(
            path=path, size=st.st_size or 0, mtime=float(st.st_mtime or 0), atime=float(st.st_atime or 0)
        )

    def upload(self, path: str, local_file: str, generation: Generation, progress: ProgressFn) -> UploadResult:
        remote = self._remote(path)
        folder, name = posixpath.split(remote)
        partial = posixpath.join(folder, _partial.partial_name(name, generation))
        src = open_regular(local_file)  # closed below
        try:
            sftp = self._client()
            self._mkdirs(sftp, folder)
            try:
                offset = self._resume_point(sftp, folder, name, partial, generation, src)
            except FileNotFoundError:  # our folder cache was stale (moved away by someone else)
                self._dirs.clear()
                self._mkdirs(sftp, folder)
                offset = 0
            sent = self._send(sftp, src, partial, offset, guard_progress(progress))
            mtime = generation.mtime_ns // 10**9
            sftp.utime(partial, (generation_tag(generation), mtime))
            self._replace(sftp, partial, remote)
        except CallbackError as exc:
            raise exc.original from None
        except SkynetError:
            raise
        except Exception as exc:
            raise self._fail(exc, f"upload {remote}") from exc
        finally:
            src.close()
        return UploadResult(bytes_sent=sent, resumed_from=offset)

    def _resume_point(
        self,
        sftp: paramiko.SFTPClient,
        folder: str,
        name: str,
        partial: str,
        generation: Generation,
        src: BinaryIO,
    ) -> int:
        if not _partial.resumable(generation):
            sftp.stat(folder)  # small file: its one partial name is simply overwritten
            return 0
        length = -1
        for attr in sftp.listdir_attr(folder):
            if not _partial.belongs_to(name, attr.filename):
                continue
            if posixpath.join(folder, attr.filename) == partial:
                length = attr.st_size or 0
            else:
                log.info("discarding partial %s/%s of another generation", folder, attr.filename)
                sftp.remove(posixpath.join(folder, attr.filename))
        if length < 0:
            return 0
        offset = _partial.resume_offset(min(length, generation.size), WRITE_CHUNK)
        if offset:
            with sftp.open(partial, "rb") as f:
                remote_tail = b"".join(f.readv([(offset - WRITE_CHUNK, WRITE_CHUNK)]))
            if remote_tail != _read_local(src, offset - WRITE_CHUNK, WRITE_CHUNK):
                log.info("partial %s does not match the local bytes; starting over", partial)
                offset = 0
        log.info("resuming %s at %d of %d bytes (partial held %d)", partial, offset, generation.size, length)
        return offset

    @staticmethod
    def _send(sftp: paramiko.SFTPClient, src: BinaryIO, partial: str, offset: int, progress: ProgressFn) -> int:
        sent = 0
        with sftp.open(partial, "r+b" if offset else "wb", bufsize=0) as dst:
            if offset:
                dst.truncate(offset)
                dst.seek(offset)
            dst.set_pipelined(True)
            progress(offset)
            while True:
                block = _read_local(src, offset + sent, WRITE_CHUNK)
                if not block:
                    break
                dst.write(block)
                sent += len(block)
                progress(offset + sent)
        return sent

    def delete(self, path: str) -> bool:
        remote = self._remote(path)
        try:
            self._client().remove(remote)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._fail(exc, f"delete {remote}") from exc
        return True

    def move(self, src: str, dst: str) -> None:
        rsrc, rdst = self._remote(src), self._remote(dst)
        try:
            sftp = self._client()
            self._mkdirs(sftp, posixpath.dirname(rdst))
            self._replace(sftp, rsrc, rdst)
        except FileNotFoundError as exc:
            raise RemoteRefused(f"cannot move {src!r}: it is not on the target") from exc
        except Exception as exc:
            raise self._fail(exc, f"move {rsrc} to {rdst}") from exc

    def move_dir(self, src: str, dst: str) -> None:
        rsrc, rdst = self._remote(src), self._remote(dst)
        try:
            sftp = self._client()
            try:
                sftp.stat(rdst)
                exists = True
            except FileNotFoundError:
                exists = False
            if not exists:
                self._mkdirs(sftp, posixpath.dirname(rdst))
                sftp.posix_rename(rsrc, rdst)
                self._dirs = {d for d in self._dirs if not (d == rsrc or d.startswith(rsrc + "/"))}
                return
        except FileNotFoundError as exc:
            raise RemoteRefused(f"cannot move folder {src!r}: it is not on the target") from exc
        except Exception as exc:
            raise self._fail(exc, f"move folder {rsrc} to {rdst}") from exc
        super().move_dir(src, dst)  # dst exists: merge file by file

    def list(self, prefix: str = "") -> Iterator[RemoteEntry]:
        top = self._remote(prefix)
        try:
            sftp = self._client()
            stack = [top]
            entries: list[RemoteEntry] = []
            while stack:
                folder = stack.pop()
                try:
                    attrs = sftp.listdir_attr(folder)
                except FileNotFoundError:
                    continue
                for attr in attrs:
                    full = posixpath.join(folder, attr.filename)
                    mode = attr.st_mode or 0
                    if stat_mod.S_ISDIR(mode):
                        stack.append(full)
                    elif stat_mod.S_ISREG(mode) and not _partial.is_partial(attr.filename):
                        entries.append(RemoteEntry(self._rel(full), attr.st_size or 0, float(attr.st_mtime or 0)))
        except Exception as exc:
            raise self._fail(exc, f"list {top}") from exc
        yield from sorted(entries, key=lambda e: e.path)

    def cleanup(self, path: str) -> None:
        remote = self._remote(path)
        folder, name = posixpath.split(remote)
        try:
            sftp = self._client()
            for attr in sftp.listdir_attr(folder):
                if _partial.belongs_to(name, attr.filename):
                    sftp.remove(posixpath.join(folder, attr.filename))
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._fail(exc, f"cleanup {remote}") from exc


def _read_local(src: BinaryIO, offset: int, size: int) -> bytes:
    try:
        src.seek(offset)
        return src.read(size)
    except OSError as exc:
        raise LocalFileError(f"cannot read the local file: {exc.strerror or exc}") from exc


def open_backend(target: str, settings: BackendSettings) -> SftpBackend:
    """Entry point for ``sftp://user@host:port/base/path``. Connects lazily, on first use."""
    parts = urlsplit(target)
    if parts.scheme != "sftp" or not parts.hostname:
        raise ConfigError(f"SKYNET_TARGET: expected sftp://user@host:port/path, got {target!r}")
    if not parts.username:
        raise ConfigError("SKYNET_TARGET: the sftp:// URL must name the user (sftp://user@host/path)")
    try:
        port = parts.port or 22
    except ValueError as exc:
        raise ConfigError(f"SKYNET_TARGET: bad port in {target!r}") from exc
    if parts.password and settings.sftp_password is None:
        settings = dataclasses.replace(settings, sftp_password=unquote(parts.password))
    path = unquote(parts.path).lstrip("/")
    base = path if path == "~" or path.startswith("~/") else "/" + path
    endpoint = _sftp_connect.Endpoint(user=unquote(parts.username), host=parts.hostname, port=port)
    return SftpBackend(endpoint, base.lstrip("/") if not base.startswith("~") else base, settings)

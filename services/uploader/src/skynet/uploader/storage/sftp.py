"""``sftp://user@host:port/base/path``: an SFTP server as a target (paramiko's SFTP client).

SSH itself is carried by the OpenSSH client (an ``ssh -s sftp`` child per connection; see
``_sftp_openssh``) or by paramiko's own transport (``_sftp_connect``): ``SKYNET_SFTP_CLIENT``,
``auto`` by default, which takes ``ssh`` wherever a key file lets it run unattended.

The path of the URL is absolute on the server; ``sftp://host/~/dir`` is relative to the login
folder. Authentication by key (``SKYNET_SFTP_KEY_FILE``) or password (``SKYNET_SFTP_PASSWORD``);
the host key is pinned by ``SKYNET_SFTP_KNOWN_HOSTS`` (see ``_sftp_connect``).

**Uploads** write to a partial next to the final name whose name carries the generation
(``.<name>.<size>-<mtime_ns>-<inode>[s].skynet-partial``; see ``_partial``), set the remote mtime to
the local one (whole seconds: SFTP v3 has no better) and the atime to a tag of the generation
(``_atime_tag``),
then replace the final name atomically with ``posix-rename@openssh.com``. The rename is sent
only after every write, the time stamp and the close have been acknowledged with an OK status, so
a failed write never publishes a half file.

Writes go through this package's own pipeline (``_sftp_pipeline``: requests as large as the
server accepts, a bounded number in flight, each reply read as it comes). A small file costs
three round trips: open; the writes, FSETSTAT (the times) and close, pipelined; the rename. When
the folder cache is stale (someone removed the folder), the open fails with "no such file", the
folders are created again and the open is retried once.

**Parallel streams.** A file of ``PARALLEL_MIN_BYTES`` or more is written by ``sftp_streams``
connections at once (separate SSH connections, so separate ``ssh`` processes or packetizer
threads here, and separate sshd processes there), each with its own handle on the same partial.
The extra connections are opened on first need, kept by the backend (one per worker thread) for
the next large file, closed by :meth:`SftpBackend.close` and after a connection loss. A
connection that cannot be opened (the server limits sessions) is logged and the others carry on.
Smaller files use one stream.

**Resume.** The file is cut into ``WRITE_CHUNK`` chunks. ``_Window`` hands the chunk numbers out
to the streams in increasing order, and never hands out chunk ``j`` before every chunk below
``j - STREAM_WINDOW + 1`` has been acknowledged; a chunk counts as acknowledged when every write
of it got an OK status. So whenever the server holds any byte of chunk ``j``, every chunk below
``j - STREAM_WINDOW + 1`` is complete on the server, whatever the other streams were doing, and
whether the upload was killed, cancelled or failed (a failed chunk is never acknowledged, so it
bounds what comes after it). Written bytes only make the partial longer, so with ``L`` its length
and ``j`` the highest chunk that holds a byte, ``floor(L / WRITE_CHUNK) <= j + 1``: every byte
below ``floor(L / WRITE_CHUNK) * WRITE_CHUNK - RESUME_MARGIN`` (``RESUME_MARGIN = STREAM_WINDOW *
WRITE_CHUNK``) is written. A resumed upload truncates the partial to that point before any stream
writes, so what the partial holds beyond it never counts later, and the argument holds again for
the next attempt. The margin is a constant, not a function of the stream count: the stream count
may differ between the attempt that was killed and the one that resumes, and ``STREAM_WINDOW``
bounds the chunks in flight for any number of streams (settings cap ``sftp_streams`` at
``MAX_STREAMS``). Whether a partial gets the margin depends on the file's size only (a file of
``PARALLEL_MIN_BYTES`` or more always does, even with ``sftp_streams=1``), because the size is
part of the generation. Such a partial's name is marked *striped* (``_partial.STRIPED``), so that
an older skynet, which would take it for a prefix, leaves it alone and starts over. A smaller
file is written by one handle, which the server applies in order, so its partial is a prefix and
resumes at its last whole chunk, as before. Either way the
chunk before the resume point is read back and compared with the local bytes (a mismatch starts
over), and partials of other generations are deleted.

Progress reports the acknowledged contiguous prefix (monotonic, ending at the file size), from
the thread that called ``upload``; when the callback raises, the streams stop taking chunks,
collect the replies still in flight, close their handles, and the exception propagates.

**Folders** exist on the server as long as they hold files: after a delete, a move or the removal
of a partial, the folders it emptied are removed (``rmdir`` up towards the base, which fails and
stops at the first that still holds anything, so nothing but an empty folder is ever removed).
Another upload into such a folder at that moment finds it gone: its folders are created again
and the step retried (``FOLDER_RACE_TRIES``). The connection is opened on first use and reopened
on the next call after it was lost.
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
import logging
import posixpath
import socket
import stat as stat_mod
import threading
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import paramiko
from paramiko.sftp import (
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
)

from skynet.common.errors import (
    ConfigError,
    InvalidPath,
    LocalFileError,
    RemoteAccessDenied,
    RemoteConflict,
    RemoteFull,
    RemoteRefused,
    RemoteUnavailable,
    SkynetError,
)
from skynet.common.messages import Generation
from skynet.common.paths import remote_join, validate_rel_path
from skynet.uploader.storage import _partial, _sftp_connect, _sftp_openssh
from skynet.uploader.storage._atime_tag import generation_tag, matches_tagged
from skynet.uploader.storage._localfile import open_regular
from skynet.uploader.storage._sftp_pipeline import WRITE_CHUNK, Link, _pump, _Session, _Window
from skynet.uploader.storage.base import (
    Backend,
    CallbackError,
    Capabilities,
    ProgressFn,
    RemoteEntry,
    UploadResult,
    guard_progress,
    removed_meanwhile,
)
from skynet.uploader.storage.config import BackendSettings

log = logging.getLogger(__name__)

PARALLEL_MIN_BYTES = 64 * 1024 * 1024  # files this large go over several streams, and resume with the margin
STREAM_WINDOW = 16  # chunks handed out beyond the lowest unacknowledged one, all streams together
RESUME_MARGIN = STREAM_WINDOW * WRITE_CHUNK  # see the module docstring
MAX_STREAMS = STREAM_WINDOW  # more streams than chunks in the window would only wait
FOLDER_RACE_TRIES = 3  # a folder removed as emptied while a file was on its way into it
_CLIENT_LOGGED: set[str] = set()  # servers whose SFTP client (OpenSSH or paramiko) was logged


def classify(exc: BaseException, what: str = "") -> SkynetError:
    """Translate a paramiko/socket/SFTP-status exception into the matching skynet error."""
    if isinstance(exc, SkynetError):
        return exc
    prefix = f"{what}: " if what else ""
    if isinstance(exc, paramiko.AuthenticationException):
        return RemoteAccessDenied(f"{prefix}authentication failed")
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
        self._pkey = (
            _sftp_connect.load_private_key(settings.sftp_key_file, settings.sftp_key_passphrase)
            if settings.sftp_key_file
            else None
        )
        if self._pkey is None and settings.sftp_password is None:
            raise ConfigError("SFTP target needs SKYNET_SFTP_KEY_FILE or SKYNET_SFTP_PASSWORD")
        self._via_ssh = self._choose_client(settings)
        self._transport: Link | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._write_size = _sftp_connect.DEFAULT_WRITE_SIZE
        self._extra: dict[int, _Session] = {}  # stream number (1..) -> its own connection
        self._dirs: set[str] = set()

    # ------------------------------------------------------------------ connection

    def _choose_client(self, settings: BackendSettings) -> bool:
        """True to carry SFTP over the OpenSSH client (``_sftp_openssh``), False for paramiko's transport."""
        if settings.sftp_client == "paramiko":
            return False
        why_not = _sftp_openssh.unusable(
            key_file=settings.sftp_key_file,
            passphrase=settings.sftp_key_passphrase,
        )
        if settings.sftp_client == "openssh" and why_not is not None:
            raise ConfigError(f"SKYNET_SFTP_CLIENT=openssh: {why_not}")
        if self.endpoint.known_hosts_name not in _CLIENT_LOGGED:
            _CLIENT_LOGGED.add(self.endpoint.known_hosts_name)
            if why_not is None:
                log.info(
                    "SFTP to %s through the OpenSSH client (%s)",
                    self.endpoint.known_hosts_name,
                    _sftp_openssh.ssh_binary(),
                )
            else:
                log.info(
                    "SFTP to %s through paramiko: the OpenSSH client cannot be used: %s",
                    self.endpoint.known_hosts_name,
                    why_not,
                )
        return why_not is None

    def _connect(self) -> _Session:
        transport: Link
        # Read again at every connection: a host key put right in known_hosts is taken without a
        # restart by an uploader paused on the old one (RemoteAccessDenied).
        self._known = _sftp_connect.load_known_hosts(self._settings.sftp_known_hosts)
        if self._via_ssh:
            assert self._settings.sftp_key_file and self._settings.sftp_known_hosts
            transport, sftp = _sftp_openssh.connect(
                self.endpoint,
                self._known,
                key_file=self._settings.sftp_key_file,
                known_hosts=self._settings.sftp_known_hosts,
                timeout=self._settings.sftp_timeout_s,
            )
        else:
            transport, sftp = _sftp_connect.connect(
                self.endpoint,
                self._known,
                pkey=self._pkey,
                password=self._settings.sftp_password,
                timeout=self._settings.sftp_timeout_s,
            )
        try:
            write_size = _sftp_connect.write_request_size(sftp)
        except Exception as exc:
            transport.close()
            raise classify(exc, "SFTP limits") from exc
        return _Session(transport, sftp, write_size)

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._transport is not None and self._transport.is_active():
            return self._sftp
        self.close()
        session = self._connect()
        self._transport, self._sftp, self._write_size = session.transport, session.sftp, session.write_size
        return self._sftp

    def _main_session(self) -> _Session:
        assert self._transport is not None and self._sftp is not None
        return _Session(self._transport, self._sftp, self._write_size)

    def _stream(self, number: int) -> _Session:
        """Extra connection ``number`` (1..), opened on first use and reopened after a loss.

        Called from that stream's thread only; ``close`` runs when no stream thread does.
        """
        session = self._extra.get(number)
        if session is not None and session.alive():
            return session
        if session is not None:
            session.transport.close()
        self._extra[number] = session = self._connect()
        return session

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
        for session in self._extra.values():
            session.transport.close()
        self._extra.clear()
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
        _clear_folder_for_file(sftp, dst)
        try:
            sftp.rename(src, dst)
        except OSError as exc:
            if exc.errno is not None:
                raise
            sftp.remove(dst)
            sftp.rename(src, dst)

    def _mkdirs(self, sftp: paramiko.SFTPClient, folder: str) -> None:
        """Create ``folder`` and its parents; again if one was removed as emptied meanwhile."""
        for attempt in range(FOLDER_RACE_TRIES):
            try:
                self._mkdirs_once(sftp, folder)
                return
            except FileNotFoundError:
                if attempt == FOLDER_RACE_TRIES - 1:
                    raise
                self._dirs.clear()

    def _mkdirs_once(self, sftp: paramiko.SFTPClient, folder: str) -> None:
        if folder in self._dirs or folder in ("", "/", "."):
            return
        try:
            st = sftp.stat(folder)
            if st.st_mode is not None and not stat_mod.S_ISDIR(st.st_mode):
                raise RemoteConflict(f"{folder} is a file on the server, not a folder (the local has a folder)")
        except FileNotFoundError:
            self._mkdirs_once(sftp, posixpath.dirname(folder))
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
        return matches_tagged(entry, generation)

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
        partial = posixpath.join(folder, partial_name_for(name, generation))
        src = open_regular(local_file)  # closed below
        times = (generation_tag(generation), generation.mtime_ns // 10**9)
        try:
            sftp = self._client()
            self._mkdirs(sftp, folder)
            offset = 0
            if _partial.resumable(generation):  # else: the one partial name is simply overwritten
                try:
                    offset = self._resume_point(sftp, folder, name, partial, generation, src)
                except FileNotFoundError:  # our folder cache was stale (moved away by someone else)
                    self._dirs.clear()
                    self._mkdirs(sftp, folder)
            streams = min(self._settings.sftp_streams, MAX_STREAMS)
            if generation.size >= PARALLEL_MIN_BYTES and streams > 1:
                sent = self._send_parallel(
                    partial, src, offset, generation.size, times, streams, guard_progress(progress)
                )
            else:
                sent = self._send_one(folder, partial, src, offset, generation.size, times, guard_progress(progress))
            self._replace(sftp, partial, remote)
        except CallbackError as exc:
            raise exc.original from None
        except SkynetError as exc:
            if isinstance(exc, RemoteUnavailable):
                self.close()  # the next call reconnects (every stream)
                raise
            if isinstance(exc.__cause__, FileNotFoundError):
                self._dirs.clear()
                raise removed_meanwhile(remote) from exc
            full = self._full(exc, exc.__cause__, folder, generation.size)
            if full is None:
                raise
            raise full from exc
        except FileNotFoundError as exc:
            self._dirs.clear()
            raise removed_meanwhile(remote) from exc
        except Exception as exc:
            err = self._fail(exc, f"upload {remote}")
            raise (self._full(err, exc, folder, generation.size) or err) from exc
        finally:
            src.close()
        return UploadResult(bytes_sent=sent, resumed_from=offset)

    def _full(self, err: SkynetError, cause: BaseException | None, folder: str, size: int) -> RemoteFull | None:
        """``err`` as "the target is full", if that is why the server refused.

        OpenSSH's sftp-server answers ENOSPC and EDQUOT, like any errno it has no SFTP code for,
        with a bare "Failure" status. So when a write step is refused without a reason, the server
        is asked how much room is left (``statvfs@openssh.com``): less than the file needs means a
        full disk, which is worth retrying once room is made, not a refusal for good.
        """
        if not isinstance(err, RemoteRefused) or not isinstance(cause, OSError) or cause.errno is not None:
            return None
        free = self._free_bytes(folder)
        if free is None or free >= size:
            return None
        return RemoteFull(f"{err} (the target is full: {free} bytes free in {folder}); retried, free some space")

    def _free_bytes(self, folder: str) -> int | None:
        """Bytes an unprivileged user may still write in ``folder``; None if the server cannot say."""
        raw: Any = self._sftp  # paramiko's request primitives are not in its type stubs
        if raw is None:
            return None
        try:
            kind, msg = raw._request(CMD_EXTENDED, "statvfs@openssh.com", folder)
            if kind != CMD_EXTENDED_REPLY:
                return None
            _bsize, frsize, _blocks, _bfree, bavail = (msg.get_int64() for _ in range(5))
        except Exception:  # an older server, a connection lost meanwhile: no answer, no guess
            log.debug("statvfs of %s failed", folder, exc_info=True)
            return None
        return int(frsize * bavail)

    def _resume_point(
        self,
        sftp: paramiko.SFTPClient,
        folder: str,
        name: str,
        partial: str,
        generation: Generation,
        src: BinaryIO,
    ) -> int:
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
        offset = resume_offset(min(length, generation.size), generation.size)
        if offset:
            with sftp.open(partial, "rb") as f:
                remote_tail = b"".join(f.readv([(offset - WRITE_CHUNK, WRITE_CHUNK)]))
            if remote_tail != _read_local(src, offset - WRITE_CHUNK, WRITE_CHUNK):
                log.info("partial %s does not match the local bytes; starting over", partial)
                offset = 0
        log.info("resuming %s at %d of %d bytes (partial held %d)", partial, offset, generation.size, length)
        return offset

    def _open_partial(self, session: _Session, folder: str, partial: str, offset: int) -> bytes:
        """A write handle on the partial: truncated to ``offset`` (round trips: one, two on a resume).

        A stale folder cache shows as "no such file" here: the folders are made again and the
        open retried.
        """
        if offset:
            handle = session.open(partial, SFTP_FLAG_WRITE)
            try:
                session.truncate(handle, offset)  # before any write: see the module docstring
            except BaseException:
                session.close_quietly(handle)
                raise
            return handle
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
        for _ in range(FOLDER_RACE_TRIES - 1):
            try:
                return session.open(partial, flags)
            except FileNotFoundError:
                self._dirs.clear()
                self._mkdirs(session.sftp, folder)
        return session.open(partial, flags)

    def _send_one(
        self,
        folder: str,
        partial: str,
        src: BinaryIO,
        offset: int,
        size: int,
        times: tuple[int, int],
        progress: ProgressFn,
    ) -> int:
        """One stream: open; writes + times + close pipelined. Returns the bytes sent."""
        session = self._main_session()
        handle = self._open_partial(session, folder, partial, offset)
        window = _Window(_chunks(size - offset), STREAM_WINDOW)
        # _pump reports `offset` before its first write
        return _pump(session, handle, window, src.fileno(), offset, size, times=times, progress=progress)

    def _send_parallel(
        self,
        partial: str,
        src: BinaryIO,
        offset: int,
        size: int,
        times: tuple[int, int],
        streams: int,
        progress: ProgressFn,
    ) -> int:
        """``streams`` connections write the partial's chunks; this thread reports progress.

        Stream 0 is the backend's own connection, the others are opened on first need. The
        partial gets its times only once every stream has closed its handle with every write
        acknowledged. Returns the bytes sent.
        """
        main = self._main_session()
        handle = self._open_partial(main, posixpath.dirname(partial), partial, offset)
        window = _Window(_chunks(size - offset), STREAM_WINDOW)
        sent = [0] * streams
        fd = src.fileno()

        def run(number: int) -> None:
            session: _Session | None = None
            try:
                if number == 0:
                    session, own = main, handle
                else:
                    try:
                        session = self._stream(number)
                    except SkynetError as exc:
                        log.warning("SFTP stream %d not opened (%s); carrying on with the others", number, exc)
                        return
                    own = session.open(partial, SFTP_FLAG_WRITE)
                sent[number] = _pump(session, own, window, fd, offset, size)
            except BaseException as exc:
                window.fail(self._stream_error(session, exc, f"upload {partial} (stream {number})"))
            finally:
                window.finished()

        threads = [
            threading.Thread(target=run, args=(i,), name=f"sftp-stream-{i}", daemon=True) for i in range(streams)
        ]
        window.running = streams
        try:
            progress(offset)
        except BaseException:
            main.close_quietly(handle)
            raise
        for thread in threads:
            thread.start()
        try:
            reported = offset
            while True:
                with window.cond:
                    while (
                        window.running
                        and window.error is None
                        and min(offset + window.low * WRITE_CHUNK, size) == reported
                    ):
                        window.cond.wait(1.0)
                    done = min(offset + window.low * WRITE_CHUNK, size)
                    running, error = window.running, window.error
                if error is not None:
                    break
                if done != reported:
                    reported = done
                    progress(done)
                if not running:
                    break
        finally:
            window.stop()  # no-op once every chunk is handed out; else the streams wind down
            for thread in threads:
                thread.join()
        if window.error is not None:
            raise window.error
        if window.low < window.count:  # cannot happen: stream 0 takes chunks until none is left
            raise RemoteUnavailable(f"upload {partial}: {window.count - window.low} chunks not acknowledged")
        main.sftp.utime(partial, times)
        return sum(sent)

    def _stream_error(self, session: _Session | None, exc: BaseException, what: str) -> BaseException:
        """What a stream thread's exception means, as the skynet error ``upload`` raises."""
        if isinstance(exc, SkynetError) or not isinstance(exc, Exception):
            return exc
        err = classify(exc, what)
        if not isinstance(err, RemoteUnavailable) and (session is None or not session.alive()):
            err = RemoteUnavailable(f"{what}: connection lost ({exc})")
        err.__cause__ = exc
        return err

    def delete(self, path: str) -> bool:
        remote = self._remote(path)
        try:
            sftp = self._client()
            sftp.remove(remote)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._fail(exc, f"delete {remote}") from exc
        self._prune(sftp, path)
        return True

    def _prune(self, sftp: paramiko.SFTPClient, path: str) -> None:
        """Remove the folders above ``path`` that are empty now, up to the base (not included)."""
        folder = posixpath.dirname(validate_rel_path(path))
        while folder:
            remote = self._remote(folder)
            try:
                sftp.rmdir(remote)  # refused while the folder holds anything
            except OSError:
                return
            except Exception as exc:  # the connection went: the next call reconnects and reports it
                log.debug("stopped removing emptied folders at %s: %s", remote, exc)
                return
            log.debug("removed emptied folder %s", remote)
            self._dirs.discard(remote)
            folder = posixpath.dirname(folder)

    def move(self, src: str, dst: str) -> None:
        rsrc, rdst = self._remote(src), self._remote(dst)
        try:
            sftp = self._client()
            for attempt in range(FOLDER_RACE_TRIES):
                self._mkdirs(sftp, posixpath.dirname(rdst))
                try:
                    self._replace(sftp, rsrc, rdst)
                    break
                except FileNotFoundError:
                    # src gone, or dst's folder removed as emptied since _mkdirs saw it
                    if attempt == FOLDER_RACE_TRIES - 1 or not _exists(sftp, rsrc):
                        raise
                    self._dirs.clear()
        except FileNotFoundError as exc:
            raise RemoteRefused(f"cannot move {src!r}: it is not on the target") from exc
        except Exception as exc:
            raise self._fail(exc, f"move {rsrc} to {rdst}") from exc
        self._prune(sftp, src)

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
                self._prune(sftp, src)
                return
        except FileNotFoundError as exc:
            raise RemoteRefused(f"cannot move folder {src!r}: it is not on the target") from exc
        except Exception as exc:
            raise self._fail(exc, f"move folder {rsrc} to {rdst}") from exc
        super().move_dir(src, dst)  # dst exists: merge file by file

    def list(self, prefix: str = "") -> Iterator[RemoteEntry]:
        entries = [
            RemoteEntry(self._rel(full), attr.st_size or 0, float(attr.st_mtime or 0))
            for full, attr in self._walk(prefix)
            if not _partial.is_partial(attr.filename)
        ]
        yield from sorted(entries, key=lambda e: e.path)

    def uploads_under(self, prefix: str) -> Sequence[str]:
        found = set()
        for full, attr in self._walk(prefix):
            name = _partial.final_name(attr.filename)
            if name is not None:
                found.add(self._rel(posixpath.join(posixpath.dirname(full), name)))
        return sorted(found)

    def _walk(self, prefix: str) -> Sequence[tuple[str, paramiko.SFTPAttributes]]:
        """Every regular file below folder ``prefix``: (remote path, attributes)."""
        top = self._remote(prefix)
        files: builtins.list[tuple[str, paramiko.SFTPAttributes]] = []
        try:
            sftp = self._client()
            stack = [top]
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
                    elif stat_mod.S_ISREG(mode):
                        files.append((full, attr))
        except Exception as exc:
            raise self._fail(exc, f"list {top}") from exc
        return files

    def cleanup(self, path: str) -> None:
        remote = self._remote(path)
        folder, name = posixpath.split(remote)
        removed = False
        try:
            sftp = self._client()
            for attr in sftp.listdir_attr(folder):
                if _partial.belongs_to(name, attr.filename):
                    sftp.remove(posixpath.join(folder, attr.filename))
                    removed = True
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._fail(exc, f"cleanup {remote}") from exc
        if removed:
            self._prune(sftp, path)


def _chunks(length: int) -> int:
    return -(-length // WRITE_CHUNK)


def partial_name_for(name: str, generation: Generation) -> str:
    """The partial of ``name``: striped (its own name) for a file written by several streams."""
    return _partial.partial_name(name, generation, striped=generation.size >= PARALLEL_MIN_BYTES)


def resume_offset(length: int, size: int) -> int:
    """Where to continue a partial of ``length`` bytes of a ``size``-byte file (see the module docstring)."""
    offset = _partial.resume_offset(length, WRITE_CHUNK)
    if size >= PARALLEL_MIN_BYTES:
        offset = max(0, offset - RESUME_MARGIN)
    return offset


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


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


def _clear_folder_for_file(sftp: paramiko.SFTPClient, path: str) -> None:
    """A folder standing where a file is to go (a folder replaced by a file of the same name) is
    removed if empty; with files still in it, the file waits for their deletes."""
    try:
        st = sftp.stat(path)
    except OSError:
        return
    if st.st_mode is None or not stat_mod.S_ISDIR(st.st_mode):
        return
    try:
        sftp.rmdir(path)
    except OSError as exc:
        raise RemoteConflict(f"{path} is a folder with files on the server where the local has a file") from exc

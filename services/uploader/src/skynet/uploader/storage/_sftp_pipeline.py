"""The write pipeline of the SFTP backend: requests sent and replies read without paramiko's ``SFTPFile``.

Writes are sent as large as the server accepts (``limits@openssh.com``: 128 KiB on OpenSSH, else
32 KiB), with a bounded number in flight, and each reply is read as it comes (paramiko's pipelined
file waits for *all* outstanding replies every hundred requests, which drains the pipe). Every
reply's status is checked; the caller sends the rename only after every write, the time stamp and
the close of a file have been acknowledged, so a failed write never publishes a half file.

``_Window`` hands the chunks of one file to one or more streams in order, never more than
``STREAM_WINDOW`` beyond the lowest unacknowledged one: that bound is what makes resuming a
partial written by several streams sound (see ``sftp``'s docstring).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

import paramiko
from paramiko.sftp import CMD_CLOSE, CMD_FSETSTAT, CMD_HANDLE, CMD_OPEN, CMD_STATUS, CMD_WRITE, int64

from skynet.common.errors import LocalFileError

WRITE_CHUNK = 1024 * 1024  # chunks handed to the streams; progress and resume work in these units
STREAM_PIPELINE = 4  # chunks one stream may have in flight (OpenSSH's channel window is 2 MiB)


class _Window:
    """Hands chunk numbers ``0..count-1`` to the streams in increasing order (see the module docstring).

    ``take`` never returns a chunk ``STREAM_WINDOW`` or more above the lowest chunk not yet
    acknowledged (``low``). Shared by the stream threads and the thread that reports progress.
    """

    WAIT = -1

    def __init__(self, count: int, window: int) -> None:
        self.count = count
        self.window = window
        self.cond = threading.Condition()
        self.next = 0
        self.low = 0  # every chunk below this one is acknowledged
        self._acked = bytearray(count)
        self.stopped = False
        self.error: BaseException | None = None
        self.running = 0  # stream threads not finished yet

    def take(self, block: bool) -> int | None:
        """The next chunk; None when there is none left (or the upload stops); WAIT if ``block`` is false
        and the window is full."""
        with self.cond:
            while True:
                if self.stopped or self.error is not None or self.next >= self.count:
                    return None
                if self.next < self.low + self.window:
                    self.next += 1
                    return self.next - 1
                if not block:
                    return self.WAIT
                self.cond.wait(1.0)

    def ack(self, chunk: int) -> None:
        with self.cond:
            self._acked[chunk] = 1
            if chunk == self.low:
                while self.low < self.count and self._acked[self.low]:
                    self.low += 1
                self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            if self.error is None:
                self.error = exc
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def finished(self) -> None:
        with self.cond:
            self.running -= 1
            self.cond.notify_all()


class _Replies:
    """The replies to the requests one session has in flight, each status checked.

    paramiko's ``_read_response`` hands a reply to the object a request was sent with
    (``_async_response``); a write reply completes its chunk once every write of the chunk is in.
    """

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self._raw: Any = sftp  # paramiko's request primitives are not in its type stubs
        self.waiting: dict[int, int] = {}  # request number -> its chunk (-1: not a write)
        self.left: dict[int, int] = {}  # chunk -> its writes not acknowledged yet
        self.done: list[int] = []  # chunks wholly acknowledged, not yet passed on
        self.error: BaseException | None = None

    def send(self, chunk: int, kind: int, *args: object) -> None:
        num = self._raw._async_request(self, kind, *args)
        self.waiting[num] = chunk
        if chunk >= 0:
            self.left[chunk] = self.left.get(chunk, 0) + 1

    def _async_response(self, kind: int, msg: paramiko.Message, num: int) -> None:  # called by paramiko
        chunk = self.waiting.pop(num, -1)
        try:
            if kind != CMD_STATUS:
                raise paramiko.SFTPError(f"expected a status reply, got message type {kind}")
            self._raw._convert_status(msg)  # raises on anything but OK
        except (OSError, EOFError, paramiko.SFTPError) as exc:
            if self.error is None:
                self.error = exc
            return
        if chunk >= 0:
            self.left[chunk] -= 1
            if not self.left[chunk]:
                del self.left[chunk]
                self.done.append(chunk)

    def read_one(self) -> None:
        """Wait for the next reply; raise what it reports if it is an error."""
        self._raw._read_response()
        if self.error is not None:
            raise self.error


class Link(Protocol):
    """What carries an SFTP session: paramiko's ``Transport`` or an ``ssh`` child (``_sftp_openssh``)."""

    def is_active(self) -> bool: ...

    def close(self) -> None: ...


@dataclasses.dataclass
class _Session:
    transport: Link
    sftp: paramiko.SFTPClient
    write_size: int

    def alive(self) -> bool:
        channel = self.sftp.get_channel()
        return self.transport.is_active() and channel is not None and not channel.closed

    def open(self, path: str, flags: int) -> bytes:
        """A handle on ``path`` (one round trip)."""
        raw: Any = self.sftp
        kind, msg = raw._request(CMD_OPEN, path, flags, paramiko.SFTPAttributes())
        if kind != CMD_HANDLE:
            raise paramiko.SFTPError(f"expected a handle, got message type {kind}")
        handle: bytes = msg.get_binary()
        return handle

    def truncate(self, handle: bytes, size: int) -> None:
        attrs = paramiko.SFTPAttributes()
        attrs.st_size = size
        raw: Any = self.sftp
        raw._request(CMD_FSETSTAT, handle, attrs)

    def close_quietly(self, handle: bytes) -> None:
        """Send a close without waiting for its reply (after an error: best effort)."""
        raw: Any = self.sftp
        with contextlib.suppress(Exception):
            raw._async_request(type(None), CMD_CLOSE, handle)


def _pump(
    session: _Session,
    handle: bytes,
    window: _Window,
    fd: int,
    base: int,
    size: int,
    *,
    times: tuple[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the chunks ``window`` hands out on one session, pipelined; returns the bytes sent.

    Chunk ``i`` covers ``base + i * WRITE_CHUNK`` up to ``size``. At most ``STREAM_PIPELINE``
    chunks are in flight; replies are read one at a time as they come. After the last write, the
    times (FSETSTAT, if ``times``) and the close go in the same pipeline, and every reply is
    collected before returning. On an error, the handle is closed without waiting and the error
    propagates. ``progress`` (single stream) gets the acknowledged prefix, from this thread.
    """
    replies = _Replies(session.sftp)
    step = session.write_size
    sent = 0
    reported = -1
    closing = False

    def settle() -> None:
        nonlocal reported
        for chunk in replies.done:
            window.ack(chunk)
        replies.done.clear()
        if progress is not None and window.low != reported:
            reported = window.low
            progress(min(base + reported * WRITE_CHUNK, size))

    try:
        while True:
            settle()
            if len(replies.left) >= STREAM_PIPELINE:
                replies.read_one()
                continue
            chunk = window.take(block=not replies.waiting)
            if chunk is None:
                break
            if chunk == _Window.WAIT:
                replies.read_one()
                continue
            offset = base + chunk * WRITE_CHUNK
            data = _pread(fd, min(WRITE_CHUNK, size - offset), offset)
            if not data:  # the file shrank: its new generation is the caller's business
                window.ack(chunk)
                continue
            view = memoryview(data)
            for at in range(0, len(data), step):
                replies.send(chunk, CMD_WRITE, handle, int64(offset + at), view[at : at + step])
            sent += len(data)
        if times is not None and not window.stopped and window.error is None:
            attrs = paramiko.SFTPAttributes()
            attrs.st_atime, attrs.st_mtime = times
            replies.send(-1, CMD_FSETSTAT, handle, attrs)
        closing = True
        replies.send(-1, CMD_CLOSE, handle)
        while replies.waiting:
            replies.read_one()
            settle()
        settle()
    except BaseException:
        if not closing:
            session.close_quietly(handle)
        raise
    return sent


def _pread(fd: int, size: int, offset: int) -> bytes:
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:
        raise LocalFileError(f"cannot read the local file: {exc.strerror or exc}") from exc

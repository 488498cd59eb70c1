"""watchdog → a queue of raw, relative-path events. The only module that imports watchdog."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

_inotify: ModuleType | None
try:  # Linux only; elsewhere there is no inotify limit to run into
    from watchdog.observers import inotify_c as _inotify
except (ImportError, OSError):  # pragma: no cover - not Linux
    _inotify = None

log = logging.getLogger(__name__)

RawKind = Literal[
    "write", "closed", "created", "deleted", "moved", "attrib", "dir_created", "dir_deleted", "dir_moved", "dir_attrib"
]


@dataclass(frozen=True)
class RawEvent:
    kind: RawKind
    path: str  # absolute filesystem path (str, possibly surrogate-escaped)
    dest: str | None = None


HANDLED_EVENTS: tuple[type[FileSystemEvent], ...] = (
    DirMovedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,  # writes (IN_MODIFY; it also asks inotify for IN_ATTRIB)
    FileClosedEvent,  # closed after writing
    # Mode, owner or times changed (IN_ATTRIB): a file made readable, or given an older mtime
    # without being opened (os.utime, cp -p, rsync -t), must be looked at again; a folder made
    # listable is scanned. Without these in the filter watchdog drops the events it receives.
    FileAttribEvent,
    DirAttribEvent,
)


class _Handler(FileSystemEventHandler):
    def __init__(self, out: queue.Queue[object]) -> None:
        self._out = out

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else None
        kind: RawKind | None
        if isinstance(event, DirMovedEvent):
            kind = "dir_moved"
        elif isinstance(event, FileMovedEvent):
            kind = "moved"
        elif isinstance(event, DirCreatedEvent):
            kind = "dir_created"
        elif isinstance(event, DirDeletedEvent):
            kind = "dir_deleted"
        elif isinstance(event, FileCreatedEvent):
            kind = "created"
        elif isinstance(event, FileDeletedEvent):
            kind = "deleted"
        elif isinstance(event, FileModifiedEvent):
            kind = "write"
        elif isinstance(event, FileClosedEvent):
            kind = "closed"
        elif isinstance(event, FileAttribEvent):
            kind = "attrib"
        elif isinstance(event, DirAttribEvent):
            kind = "dir_attrib"
        else:
            kind = None  # opened, closed without writing, directory modified: nothing to do
        if kind is not None:
            self._out.put(RawEvent(kind, src, dest))


class _OverflowHook(logging.Handler):
    """watchdog rebuilds its watches after an inotify queue overflow but tells only its log;
    events were lost, so we turn that log record into a rescan request."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._on_overflow()


def install_overflow_hook(on_overflow: Callable[[], None]) -> None:
    logging.getLogger("watchdog.observers").addHandler(_OverflowHook(on_overflow))


WATCH_LIMIT_HELP = (
    "the inotify watch limit is reached (more folders than fs.inotify.max_user_watches allows,"
    " counting every inotify user of this account): changes in the folders past it would only be"
    " seen by the periodic rescan. Watching by polling instead (every SKYNET_POLL_INTERVAL_MS)."
    " For native events, raise the limit: sysctl fs.inotify.max_user_watches=524288"
)


def inotify_watch_limit_reached(root: str) -> bool:
    """Could one more inotify watch be added? watchdog skips the folders it cannot watch without a
    word, so the limit is probed: a watch on ``root`` from an instance of our own, removed at once."""
    if _inotify is None:
        return False
    fd = _inotify.inotify_init()
    if fd < 0:  # out of inotify instances (or file descriptors): says nothing about the watches
        return False
    try:
        wd = _inotify.inotify_add_watch(fd, os.fsencode(root), 0x00000004)  # IN_ATTRIB: any mask will do
        if wd < 0:
            return ctypes.get_errno() == errno.ENOSPC
        _inotify.inotify_rm_watch(fd, wd)
        return False
    finally:
        os.close(fd)


def is_polling(observer: BaseObserver) -> bool:
    return isinstance(observer, PollingObserver)


def start_observer(root: str, mode: str, poll_interval_s: float, out: queue.Queue[object]) -> BaseObserver:
    """Start watching ``root`` recursively; ``mode`` is inotify (native), polling, or auto.

    Native watching that runs into the kernel's inotify limits (watches or instances) falls back
    to polling, with an error that says which setting to raise.
    """
    if mode != "polling":
        observer: BaseObserver = Observer()
        # Only the events the handler turns into work: without a filter watchdog also asks inotify
        # for opens and no-write closes, and a start-up scan listing 10,000 folders (each listing is
        # an open and a close, seen by the folder's watch and its parent's) overflowed the kernel's
        # queue, which made watchdog rebuild every watch and the engine scan again.
        observer.schedule(_Handler(out), root, recursive=True, event_filter=list(HANDLED_EVENTS))
        try:
            observer.start()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            log.error("%s (%s)", WATCH_LIMIT_HELP, exc.strerror or exc)
        else:
            if not inotify_watch_limit_reached(root):
                log.info("watching %s with %s", root, type(observer).__name__)
                return observer
            observer.stop()
            observer.join(5)
            log.error("%s", WATCH_LIMIT_HELP)
    polling = PollingObserver(timeout=poll_interval_s)
    polling.schedule(_Handler(out), root, recursive=True, event_filter=list(HANDLED_EVENTS))
    polling.start()
    log.info("watching %s with %s", root, type(polling).__name__)
    return polling

"""watchdog → a queue of raw, relative-path events. The only module that imports watchdog."""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Callable
from dataclasses import dataclass
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


def start_observer(root: str, mode: str, poll_interval_s: float, out: queue.Queue[object]) -> BaseObserver:
    """Start watching ``root`` recursively; ``mode`` is inotify (native), polling, or auto."""
    observer: BaseObserver = PollingObserver(timeout=poll_interval_s) if mode == "polling" else Observer()
    # Only the events the handler turns into work: without a filter watchdog also asks inotify
    # for opens and no-write closes, and a start-up scan listing 10,000 folders (each listing is
    # an open and a close, seen by the folder's watch and its parent's) overflowed the kernel's
    # queue, which made watchdog rebuild every watch and the engine scan again.
    observer.schedule(_Handler(out), root, recursive=True, event_filter=list(HANDLED_EVENTS))
    observer.start()
    log.info("watching %s with %s", root, type(observer).__name__)
    return observer

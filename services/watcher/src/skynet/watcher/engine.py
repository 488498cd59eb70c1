"""The watcher's heart: raw events → coalescing → stability gate → outbox (+ index).

One thread (the *gate*, :meth:`Engine.run`) owns the coalescer and the in-memory index, so no
locks are needed there. It is fed through one queue by the filesystem observer, by scans (at
start, periodically, on request) and by control messages. Publishing happens on another thread
(:class:`~skynet.watcher.pump.OutboxPump`) that drains the SQLite outbox to the broker, and the
files a scan found that the index never held (:mod:`~skynet.watcher.discovered`).
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from skynet.common.errors import InvalidPath
from skynet.common.messages import (
    FileEvent,
    FileState,
    Generation,
    PathChanged,
    PathMoved,
    PruneRemote,
    encode_changed,
)
from skynet.common.paths import local_path, rel_path_from_fs
from skynet.watcher.coalescer import Coalescer
from skynet.watcher.discovered import Discovered
from skynet.watcher.filters import IgnoreRules
from skynet.watcher.index import Index
from skynet.watcher.observer import RawEvent
from skynet.watcher.scanner import Found, GenTuple, RefusalState, gen_of, walk
from skynet.watcher.settings import WatcherSettings
from skynet.watcher.store import Action, Pending, StateUnavailable, Store
from skynet.watcher.vanished import Vanished
from skynet.watcher.writers import open_for_writing

log = logging.getLogger(__name__)

EmitFn = Callable[[FileEvent], None]
ROOT_IDENTITY_KEY = "root_identity"  # (st_dev, st_ino) of the watched root, as "dev:ino"
QUIET_ENOUGH_NS = 60 * 1_000_000_000  # a file found by a scan, unmodified this long, is published at once
# A file still pending this long after its first event is announced as "waiting". One that is
# published sooner (closed, with a short settle period) goes straight to "queued": an event less
# per file through the broker and the notifier, for a state nobody could have seen.
WAITING_AFTER_S = 0.05
SCAN_BATCH = 5000  # files a scan hands the gate at a time
START_UP = "start-up"  # the reason given to the scan a watcher starts with
VERIFY = "verify"  # the reason given to a full scan (every file checked against the remote)
PRUNE_KEY = ""  # the outbox key of a PruneRemote (no path is empty)
MAX_REMEMBERED_REPORTS = 10_000  # refused or skipped paths remembered so that each is reported once
STATE_RETRY_S = (1.0, 15.0)  # first and longest wait before a rescan after the state could not be written
WATCH_LIMIT_CHECK_S = 5.0  # how often the inotify watch limit is probed (three system calls)
STATE_REPORT_EVERY_S = 30.0  # at most one error line per this while the state cannot be written


CLOCK_REALTIME_COARSE = 5  # <linux/time.h>; the clock file timestamps are taken from


def _timestamp_tick_ns() -> int:
    """How coarse the kernel's file timestamps are (Linux: one jiffy, 1-10 ms; 0 if unknown)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        return min(round(time.clock_getres(CLOCK_REALTIME_COARSE) * 1e9), 20_000_000)
    except OSError:
        return 0


# A file is published only once its mtime's clock tick is over, even with a shorter settle
# period: a second write of the same size within that tick would keep size, mtime and ctime, and
# could not be told from the version already sent.
TIMESTAMP_TICK_NS = _timestamp_tick_ns()


@dataclass(frozen=True)
class ScanRequest:
    reason: str
    under: str = ""
    # Also send every file the index says is already on the remote, as an action without a
    # generation: the uploaders check each against the remote (one stat / HEAD) and send only
    # what is missing or different there. Heals a remote changed behind skynet's back.
    full: bool = False


@dataclass(frozen=True)
class ScanBatch:
    found: list[tuple[str, GenTuple]]
    full: bool = False
    taken: threading.Event = field(default_factory=threading.Event)  # set once the gate has handled it


@dataclass(frozen=True)
class ScanDone:
    reason: str
    under: str
    seen: frozenset[str]
    count: int
    started: float  # time.monotonic() when the walk began
    full: bool = False


@dataclass(frozen=True)
class Release:
    pass


@dataclass(frozen=True)
class Recheck:
    path: str  # validated (a RecheckRequest's)
    gen: GenTuple | None  # what the remote holds there
    answered: Callable[[], None] | None = None  # called once its answer is stored (or none is due)


def _gen(t: GenTuple) -> Generation:
    return Generation(size=t[0], mtime_ns=t[1], inode=t[2])


class Engine:
    def __init__(
        self,
        settings: WatcherSettings,
        store: Store,
        emit: EmitFn,
        wake_pump: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.root = str(settings.watch_dir)
        self.source = settings.source
        self.mirror = settings.delete_mode == "mirror"
        self.rules = IgnoreRules(settings.ignore)
        self.store = store
        self.emit_event = emit
        self.wake_pump = wake_pump
        self.clock = clock
        self.queue: queue.Queue[object] = queue.Queue()
        self.coalescer = Coalescer(settings.settle_ms / 1000.0, settings.max_open_wait_s)
        self.polling = settings.observer == "polling"
        self.index = self._stored_index()
        # Files a scan found that the index never held: published from memory (see discovered.py).
        self.discovered = Discovered(self.is_current)
        self._stop = threading.Event()
        self._root_id = self._trusted_root()
        self.on_root_changed: Callable[[], None] | None = None  # re-arms the observer on a new root
        # Asked every few seconds: has the inotify watch limit been reached (the observer then
        # switches to polling and says so)? A rescan follows, for the changes it could not see.
        self.watch_limit_reached: Callable[[], bool] | None = None
        self._next_limit_check = 0.0
        self._delete_times: deque[float] = deque()
        self._held_reported: set[str] = set()
        # Paths whose delete is held (and was reported once): a rescan that finds them still
        # missing leaves them held, without a new event, until an admin releases them.
        self._held_paths: set[str] = {path for path, _action, _reason in store.held()}
        self._reported: dict[str, str] = {}  # path → why it was refused or skipped (reported once)
        self._reported_lock = threading.Lock()
        self._scanning = False
        # A whole-tree scan asked for while another runs: it runs next (a full one wins).
        self._next_scan: ScanRequest | None = None
        # Set while the state (SQLite) cannot be written: when to rescan, how long the next wait is.
        self._state_rescan_at: float | None = None
        self._state_wait = STATE_RETRY_S[0]
        self._state_reported_at = -1e9
        self._state_error: str | None = None  # why the last write was refused, until one succeeds
        self._verified = 0  # files a full scan sent to be checked against the remote
        # Set while the start-up scan runs: the outbox pump waits for it (see pump.py).
        self.starting_scan = threading.Event()
        self._recent_dir_moves: deque[tuple[float, str, str]] = deque()
        self._vanished = Vanished()  # files gone without inotify saying where to: their deletes wait
        self._vanished_dirs = Vanished()  # the same for folders
        self._listings = 0  # folder scans under way (their files may be vanished ones, moved)
        self._pending_actions: list[tuple[str, Pending]] = []
        self._pending_index_set: list[tuple[str, int, int, int]] = []
        self._pending_index_drop: list[str] = []
        self._pending_index_moves: list[tuple[str, str, bool]] = []  # moves paired by generation
        self._unannounced: deque[tuple[float, str]] = deque()  # (first seen, path), oldest first
        self._unanswered: list[Recheck] = []  # handled, their answers not stored yet
        self._rechecks_after_state: list[Recheck] = []  # to be handled again once the state is back
        self.stats = {"published": 0, "coalesced": 0, "events": 0}

    # ------------------------------------------------------------------ public

    def stop(self) -> None:
        self._stop.set()
        self.queue.put(None)

    def request_scan(self, reason: str, under: str = "", full: bool = False) -> None:
        if reason == START_UP and not under:
            self.starting_scan.set()
        self.queue.put(ScanRequest(reason, under, full))

    def release_held(self) -> None:
        self.queue.put(Release())

    def recheck(self, path: str, gen: Generation | None, answered: Callable[[], None] | None = None) -> None:
        """An uploader's upload of ``path`` completed after the file had gone (see ``RecheckRequest``).

        ``answered`` is called (from the gate's thread) once the answer, if any, is in the outbox:
        the control listener acknowledges the request then, so that a watcher killed before that
        leaves it in its queue for the next one.
        """
        self.queue.put(Recheck(path, None if gen is None else (gen.size, gen.mtime_ns, gen.inode), answered))

    def run(self) -> None:
        """The gate loop; returns after :meth:`stop`."""
        next_rescan = self.clock() + self.settings.rescan_interval_s if self.settings.rescan_interval_s else None
        verify_every = self.settings.verify_interval_s
        next_verify = self.clock() + verify_every if verify_every else None
        self._next_root_check = self.clock() + 1.0
        while not self._stop.is_set():
            try:
                next_rescan, next_verify = self._turn(next_rescan, next_verify, verify_every)
            except StateUnavailable as exc:
                self._state_lost(exc)
        try:
            self._flush()
        except StateUnavailable as exc:  # the next start's scan finds what this could not store
            log.error("%s", exc.reason)

    def _turn(
        self, next_rescan: float | None, next_verify: float | None, verify_every: float
    ) -> tuple[float | None, float | None]:
        """One round of the gate loop; returns when the next periodic rescan and verify are due."""
        now = self.clock()
        deadline = self.coalescer.next_deadline()
        if self._unannounced:
            announce_at = self._unannounced[0][0] + WAITING_AFTER_S
            deadline = announce_at if deadline is None else min(deadline, announce_at)
        timeout = 0.5 if deadline is None else min(0.5, max(0.0, deadline - now))
        if self._vanished_dirs:
            timeout = min(timeout, 0.05)
        try:
            item = self.queue.get(timeout=timeout)
            self._handle(item)
            # Drain whatever else arrived, without waiting.
            for _ in range(5000):
                self._handle(self.queue.get_nowait())
        except queue.Empty:
            pass
        now = self.clock()
        if self._vanished_dirs:
            self._settle_gone_dirs(now)
        due = self.coalescer.due(now)
        if due:
            held = self._hold_open_files(due, now)
            due = [p for p in due if p not in held]
        for path in due:
            self._check(path, now)
        self._announce_waiting(now)
        self._flush()
        if self._next_root_check <= now:
            self._next_root_check = now + 1.0
            self._check_root()
        if self.watch_limit_reached is not None and not self.polling and self._next_limit_check <= now:
            self._next_limit_check = now + WATCH_LIMIT_CHECK_S
            if self.watch_limit_reached():
                self.request_scan("inotify watch limit reached")
        if self._state_rescan_at is not None and self._state_rescan_at <= now:
            self._state_rescan_at = None
            for request in self._rechecks_after_state:
                self.queue.put(request)
            self._rechecks_after_state.clear()
            self.request_scan("after the state could not be written")
        if next_rescan is not None and next_rescan <= now and not self._scanning:
            next_rescan = now + self.settings.rescan_interval_s
            self.request_scan("periodic")
        if next_verify is not None and next_verify <= now:
            next_verify = now + verify_every
            self.request_scan(VERIFY, full=True)
        return next_rescan, next_verify

    def _stored_index(self) -> Index:
        """The index as SQLite holds it: what the engine starts from, and falls back on."""
        return Index({p: (size, mtime, ino) for p, size, mtime, ino in self.store.index_tuples()})

    def _state_lost(self, exc: StateUnavailable) -> None:
        """The state could not be written: what memory holds beyond it is given up.

        The index is read back from SQLite (which keeps only whole transactions), the actions not
        yet stored are dropped, and a rescan is scheduled: it compares the folder with that index
        and queues again every change the lost writes carried. Until a write succeeds, the rescan
        is tried again with a growing wait. Nothing is lost; the watcher goes on watching.
        """
        now = self.clock()
        self._state_error = exc.reason
        if now - self._state_reported_at >= STATE_REPORT_EVERY_S:
            self._state_reported_at = now
            log.error(
                "%s; the changes not stored will be found again by a rescan in %.0fs (free some space there)",
                exc.reason,
                self._state_wait,
            )
        self._pending_actions.clear()
        self._pending_index_set.clear()
        self._pending_index_drop.clear()
        self._pending_index_moves.clear()
        # A rescan cannot find what a recheck was asked for (the folder is as last published):
        # those requests, still unacknowledged, are answered again once the state can be written.
        self._rechecks_after_state.extend(self._unanswered)
        self._unanswered.clear()
        self.index = self._stored_index()
        self._state_rescan_at = now + self._state_wait
        self._state_wait = min(self._state_wait * 2, STATE_RETRY_S[1])

    # ------------------------------------------------------------------ dispatch

    def _handle(self, item: object) -> None:
        if item is None:
            return
        if isinstance(item, RawEvent):
            self.stats["events"] += 1
            self._on_raw(item)
        elif isinstance(item, ScanRequest):
            self._start_scan(item)
        elif isinstance(item, ScanBatch):
            self._on_scan_batch(item)
        elif isinstance(item, ScanDone):
            self._on_scan_done(item)
        elif isinstance(item, Release):
            self._release()
        elif isinstance(item, Recheck):
            self._unanswered.append(item)  # first: a write refused in there hands it to _state_lost
            self._recheck(item.path, item.gen)

    def _rel(self, full: str) -> str | None:
        try:
            rel = rel_path_from_fs(self.root, full)
        except InvalidPath as exc:
            shown = full.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            rel_shown = os.path.relpath(shown, self.root).replace(os.sep, "/")
            if self._first_report(rel_shown, exc.reason):
                log.warning("refusing %r: %s", shown, exc.reason)
                self._emit("failed", rel_shown, reason=exc.reason)
            return None
        if rel == "" or self.rules.ignored(rel):
            return None
        return rel

    def _on_raw(self, ev: RawEvent) -> None:
        now = self.clock()
        kind = ev.kind
        if kind in ("moved", "dir_moved"):
            self._on_move(ev, now)
            return
        rel = self._rel(ev.path)
        if rel is None:
            return
        if kind == "dir_deleted":
            self._dir_gone(rel, now)
        elif kind == "dir_created":
            # Files may have appeared before the new folder was watched: look inside.
            self.request_scan("new folder", rel)
        elif kind == "dir_attrib":
            # A folder's mode or owner changed: one that could not be listed may be readable now.
            self.request_scan("folder attributes changed", rel)
        else:
            if kind == "deleted":
                self._note_vanished(rel, now)
            writing: bool | None = None
            if kind == "write" and not self.polling:
                # Only a real write marks the file open for writing: a close-after-write always
                # follows it. (Created events may be synthesised for new folders, with no close.)
                writing = True
            elif kind == "closed":
                writing = False
            # A file made readable (chmod, chown) keeps its generation, and its last action may
            # have failed on "permission denied": act on it again (one remote check if all is well).
            if self.coalescer.touch(rel, now, writing, recheck=kind == "attrib", modified=bool(writing)):
                if kind != "deleted":
                    self._unannounced.append((now, rel))
            else:
                self.stats["coalesced"] += 1

    def _announce_waiting(self, now: float) -> None:
        """Say "waiting" for the files still pending ``WAITING_AFTER_S`` after their first event."""
        while self._unannounced and self._unannounced[0][0] + WAITING_AFTER_S <= now:
            first_seen, rel = self._unannounced.popleft()
            entry = self.coalescer.get(rel)
            if entry is not None and not entry.announced and entry.first_seen <= first_seen:
                entry.announced = True
                self._emit("waiting", rel)

    def _on_move(self, ev: RawEvent, now: float) -> None:
        src = self._rel(ev.path)
        dst = self._rel(ev.dest) if ev.dest else None
        is_dir = ev.kind == "dir_moved"
        if not is_dir and src is not None and dst is not None and self._covered_by_dir_move(src, dst, now):
            return
        if src is None and dst is None:
            return
        if src is None or dst is None:
            # A move from/to an ignored name (atomic save via a temp file) or across the boundary.
            target = dst if dst is not None else src
            assert target is not None
            if is_dir:
                self.request_scan("folder moved in" if dst else "folder moved out", target)
                if dst is None:
                    self._dir_gone(target, now)
            else:
                if dst is None:
                    self._note_vanished(target, now)
                self.coalescer.touch(target, now, None if dst is None else False)
            return
        if is_dir:
            self._recent_dir_moves.append((now, src, dst))
            while self._recent_dir_moves and self._recent_dir_moves[0][0] < now - 5:
                self._recent_dir_moves.popleft()
            self._on_dir_moved(src, dst, now)
            return
        was_pending = self.coalescer.forget(src) is not None
        if src in self.index:
            try:
                st = os.lstat(local_path(self.root, dst))
            except OSError:
                # Renamed again already (a chain faster than the settle period): where it ends
                # up is found later, and paired with it by its generation.
                self._note_vanished(src, now)
                self.coalescer.touch(dst, now)
                self.coalescer.touch(src, now)
                return
            gen = gen_of(st)
            self._pending_actions.append((dst, PathMoved(source=self.source, src=src, dst=dst, generation=_gen(gen))))
            self._flush(moves=[(src, dst, False)])
            last_sent = self.index.move(src, dst)
            if was_pending or last_sent != gen:
                self.coalescer.touch(dst, now)  # it changed since it was last published
        else:
            self.coalescer.touch(dst, now)

    def _covered_by_dir_move(self, src: str, dst: str, now: float) -> bool:
        for at, dsrc, ddst in self._recent_dir_moves:
            if now - at < 5 and src.startswith(dsrc + "/") and dst == ddst + src[len(dsrc) :]:
                return True
        return False

    def _on_dir_moved(self, src: str, dst: str, now: float) -> None:
        moved_pending = self.coalescer.take_under(src)
        arriving, unsent = _moves_in_from_outside(self.store.drop_pending_under(src), src)
        unsent += [p for p, _gen in self.discovered.take_under(src)]
        if self.index.has_under(src):
            self._pending_actions.append((dst, PathMoved(source=self.source, src=src, dst=dst, is_dir=True)))
            self._flush(moves=[(src, dst, True)])
            self.index.move_under(src, dst)
        # Files whose action had not gone out yet never reached the remote, so the folder's move
        # there cannot carry them: each is published again under its new path.
        for path in unsent:
            new = dst + path[len(src) :]
            gen = self.index.get(new)
            if gen is not None:
                self._pending_actions.append((new, encode_changed(self.source, new, *gen)))
                self._pending_index_set.append((new, *gen))
        # A move into the folder from outside, not sent yet: the remote still holds its source
        # under the old name, so it still has to happen, now into the folder's new name.
        for move in arriving:
            new = dst + move.dst[len(src) :]
            moved = PathMoved(source=self.source, src=move.src, dst=new, is_dir=move.is_dir, generation=move.generation)
            self._pending_actions.append((new, moved))
        self._flush()
        for path in moved_pending:
            self.coalescer.touch(dst + path[len(src) :], now)
        # Anything in the moved folder that the index did not know about is found by a scan.
        self.request_scan("folder moved", dst)

    def _dir_gone(self, rel: str, now: float) -> None:
        """A folder went, maybe into a folder not watched yet: its files' deletes wait a moment
        (:mod:`skynet.watcher.vanished`); the events on them in the meantime are dropped."""
        self.coalescer.take_under(rel)
        self.coalescer.forget(rel)
        self._vanished_dirs.note(rel, now)

    def _settle_gone_dirs(self, now: float) -> None:
        for rel in self._vanished_dirs.paths():
            if self._vanished_dirs.should_wait(rel, now, self._listings > 0):
                continue
            try:
                back = stat.S_ISDIR(os.lstat(local_path(self.root, rel)).st_mode)
            except OSError:
                back = False
            if back:  # a folder of that name again: compare it with the index
                self.request_scan("folder back", rel)
                continue
            self._on_dir_deleted(rel)  # (a file of that name now has events of its own)

    def _on_dir_deleted(self, rel: str) -> None:
        # Not rel itself: a file of that name may have been made since the folder went.
        self.coalescer.take_under(rel)
        gone = self.index.under(rel)
        if not gone:
            return
        if not self._deletes_allowed(len(gone), rel):
            return
        # A move into the folder from outside, not sent yet, still has to happen: the remote
        # holds its source under the old name. Its handler finds the destination gone here.
        arriving, _unsent = _moves_in_from_outside(self.store.drop_pending_under(rel), rel)
        self.discovered.take_under(rel)
        self.index.drop_under(rel)
        actions: list[tuple[str, Action]] = [(move.dst, move) for move in arriving]
        if self.mirror:
            actions.append((rel, PathChanged(source=self.source, path=rel, is_dir=True)))
        self.store.record(actions=actions, index_drop_under=[rel])
        if actions:
            self.wake_pump()

    # ------------------------------------------------------------------ the stability gate

    def _hold_open_files(self, due: list[str], now: float) -> set[str]:
        """Files we never saw closed, that a process still has open for writing, wait longer."""
        held: set[str] = set()
        if self.polling:
            return held
        unknown: dict[tuple[int, int], str] = {}
        for rel in due:
            entry = self.coalescer.get(rel)
            if entry is None or entry.closed_seen or entry.writing:
                continue
            try:
                st = os.lstat(local_path(self.root, rel))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                unknown[(st.st_dev, st.st_ino)] = rel
        for key in open_for_writing(self.root, set(unknown)):
            rel = unknown[key]
            log.debug("%r is still open for writing: waiting for its close", rel)
            self.coalescer.touch(rel, now, writing=True)
            held.add(rel)
        return held

    def _check(self, rel: str, now: float) -> None:
        entry = self.coalescer.get(rel)
        if entry is None:
            return
        full = local_path(self.root, rel)
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):  # gone, or its folder replaced by a file
            if self._vanished.should_wait(rel, now, self._listings > 0):
                self.coalescer.postpone(rel, now + 0.05)  # its new path may be on its way
                return
            self.coalescer.forget(rel)
            self._deleted(rel)
            return
        except OSError as exc:
            self.coalescer.forget(rel)
            self._emit("failed", rel, reason=f"cannot stat: {exc.strerror or exc}")
            return
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            self.coalescer.forget(rel)
            # A file replaced by a folder of the same name: the file is gone (its remote copy
            # would stand where the folder's files must go), and the folder is scanned.
            self._deleted(rel)
            self.request_scan("folder appeared", rel)
            return
        if stat.S_ISLNK(mode):
            self.coalescer.forget(rel)
            self._skip(rel, "symlink: not followed (skynet never follows links)")
            if rel in self.index:
                self._deleted(rel)
            return
        if not stat.S_ISREG(mode):
            self.coalescer.forget(rel)
            self._skip(rel, "not a regular file (FIFO, socket or device): never opened")
            return
        settle_ns = max(self.settings.settle_ms * 1_000_000, TIMESTAMP_TICK_NS)
        age_ns = time.time_ns() - st.st_mtime_ns
        snapshot = (st.st_size, st.st_mtime_ns)
        if self.polling or age_ns < -2_000_000_000:
            # No close events (polling) or a clock we cannot trust: two equal looks, settle apart.
            if entry.snapshot != snapshot:
                entry.snapshot = snapshot
                self.coalescer.postpone(rel, now + max(self.coalescer.settle_s, 0.05))
                return
        elif 0 <= age_ns < settle_ns:
            self.coalescer.postpone(rel, now + (settle_ns - age_ns) / 1e9)
            return
        self.coalescer.forget(rel)
        gen = gen_of(st)
        self._vanished.forget(rel)
        if rel not in self.index and self._moved_here(rel, gen):
            return
        if self.index.get(rel) == gen:
            if entry.modified and st.st_ctime_ns > st.st_mtime_ns:
                # Written, yet size, mtime and inode are what was last sent: the remote would
                # take it for the version it holds. Sent forced, so it is uploaded again. Only
                # if the mtime was set back since (which moves the ctime on): a write sets both
                # to one time, so a write heard after its file was published (events can lag
                # a scan) leaves them equal, and sending that again would be a second upload.
                self._changed(rel, gen, rewritten=True)
            elif entry.recheck:
                self._changed(rel, gen)
            return
        self._changed(rel, gen)

    def _changed(self, rel: str, gen: GenTuple, rewritten: bool = False) -> None:
        """Queue the action for a file found changed (``rel`` is a validated path). ``rewritten``:
        its content changed under an unchanged generation, so the action is forced."""
        self.index.set(rel, gen)
        if self._reported:
            self._forget_report(rel)
        self._pending_actions.append((rel, encode_changed(self.source, rel, *gen, force=rewritten)))
        self._pending_index_set.append((rel, *gen))

    def _forget_report(self, rel: str) -> None:
        with self._reported_lock:
            self._reported.pop(rel, None)

    def is_current(self, rel: str, gen: GenTuple) -> bool:
        """Does the index still hold ``gen`` for ``rel``? (Read from the pump's thread: one dict get.)"""
        return self.index.get(rel) == gen

    def _note_vanished(self, rel: str, now: float) -> None:
        if rel in self.index:
            self._vanished.note(rel, now)

    def _moved_here(self, dst: str, gen: GenTuple) -> bool:
        """Publish ``dst``, a path the index does not hold, as a move if it is a file the index
        holds under another path that is gone from the disk: same size, mtime and inode, which a
        rename keeps (see :mod:`skynet.watcher.vanished`). A copy or a second hard link, whose
        first path is still there, is a new file."""
        src = self.index.path_of(gen)
        if src is None or src == dst or not self._surely_gone(src):
            return False
        self._vanished.forget(src)
        self.coalescer.forget(src)
        log.debug("%r is %r moved (paired by generation)", dst, src)
        self._pending_actions.append((dst, PathMoved(source=self.source, src=src, dst=dst, generation=_gen(gen))))
        self._pending_index_moves.append((src, dst, False))  # stored with the action, in one flush
        self.index.move(src, dst)
        if self._reported:
            self._forget_report(dst)
        return True

    def _surely_gone(self, rel: str) -> bool:
        """Is ``rel`` gone from the disk (or its folder replaced by a file)? An lstat failing for
        another reason proves nothing: no."""
        try:
            os.lstat(local_path(self.root, rel))
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError as exc:
            log.warning("cannot tell whether %r is still there: %s", rel, exc)
        return False

    def _deleted(self, rel: str) -> None:
        self._vanished.forget(rel)
        if rel not in self.index:
            return
        if not self._deletes_allowed(1, rel):
            return
        self.index.drop(rel)
        self._pending_index_drop.append(rel)
        if self.mirror:
            self._pending_actions.append((rel, PathChanged(source=self.source, path=rel)))

    def _recheck(self, rel: str, gen: GenTuple | None) -> None:
        """An uploader's upload of ``rel`` (leaving ``gen`` on the remote) reached the remote after
        the file went, possibly after its rename or delete had been applied there. If it is gone,
        send that again: the move, when the index holds ``gen`` under another path, else the
        delete, which goes through the safety rules like any other. Asked without ``gen`` about
        a file that is here, see :meth:`_resend`."""
        if self.rules.ignored(rel) or rel in self._held_paths:
            return
        if gen is None:
            pending = self.coalescer.get(rel)
            if pending is not None:  # to be looked at anyway (a folder's move touches its files):
                pending.recheck = True  # then sent even if unchanged since it was last sent
                return
            if self._resend(rel):
                return
        if rel in self.index or rel in self.coalescer:
            return  # its change, move or delete is still to come from here
        if not self._surely_gone(rel):
            return  # there again, sent as any file is, or not to be judged now
        dst = None if gen is None else self.index.path_of(gen)
        if gen is not None and dst is not None:
            log.info("%r is %r moved: the move is sent again (an upload of it ended after it went)", dst, rel)
            self._pending_actions.append((dst, PathMoved(source=self.source, src=rel, dst=dst, generation=_gen(gen))))
            return
        if not self.mirror or not self._deletes_allowed(1, rel):
            return
        log.info("%r is gone: its delete is sent again (an upload of it ended after it went)", rel)
        self._pending_actions.append((rel, PathChanged(source=self.source, path=rel)))

    def _resend(self, rel: str) -> bool:
        """An uploader found ``rel`` missing on the remote after its folder's move (moves of
        folders in and around one another applied in another order): send it again if it is
        here. False if it is not a file this watcher sent.

        Sent without its generation, so the uploader asks the remote first: where the file's
        own action was still on its way, the second one finds it there instead of sending the
        bytes again."""
        if rel not in self.index:
            return False
        try:
            st = os.lstat(local_path(self.root, rel))
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        log.info("%r is not on the remote after its folder's move: sent again", rel)
        self._pending_actions.append((rel, PathChanged(source=self.source, path=rel)))
        return True

    def _flush(self, moves: Iterable[tuple[str, str, bool]] = ()) -> None:
        moves, self._pending_index_moves = [*self._pending_index_moves, *moves], []
        if self._pending_actions or self._pending_index_set or self._pending_index_drop or moves:
            self._record(moves)
        if self._unanswered:
            answered, self._unanswered = self._unanswered, []
            for request in answered:
                if request.answered is not None:
                    request.answered()

    def _record(self, moves: list[tuple[str, str, bool]]) -> None:
        actions, self._pending_actions = self._pending_actions, []
        sets, self._pending_index_set = self._pending_index_set, []
        drops, self._pending_index_drop = self._pending_index_drop, []
        self.store.record(actions=actions, index_set=sets, index_drop=drops, index_moves=moves)
        if self._state_wait != STATE_RETRY_S[0]:
            log.info("the watcher's state can be written again")
            self._state_wait = STATE_RETRY_S[0]
            self._state_reported_at = -1e9
            self._state_error = None
        if actions:
            self.wake_pump()

    # ------------------------------------------------------------------ delete safety

    def _root_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.root)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _trusted_root(self) -> tuple[int, int] | None:
        """The root identity deletes are checked against: the one recorded before a restart.

        A watcher (re)started while its share is not mounted sees an empty mount point: taking
        that as the root would turn every file into a delete. So the identity is kept in the
        state folder, and a different folder at start holds deletes until an admin releases them.
        """
        current = self._root_identity()
        saved = self.store.get_meta(ROOT_IDENTITY_KEY)
        if saved is None:
            if current is not None:
                self.store.set_meta(ROOT_IDENTITY_KEY, f"{current[0]}:{current[1]}")
            return current
        dev, ino = (int(p) for p in saved.split(":"))
        if (dev, ino) != current:
            log.error("watched folder %s is not the folder watched before the restart: deletes are held", self.root)
        return (dev, ino)

    def condition(self) -> str | None:
        """What keeps the watcher from its work now, in a sentence, for its heartbeat (None:
        nothing). Read from the heartbeat's thread."""
        parts = []
        if self._state_error is not None:
            parts.append(
                f"its state folder refuses writes ({self._state_error}): the changes not stored are"
                " found again by a rescan once it takes them; free some space there"
            )
        if not self.root_ok():
            parts.append("the watched folder is gone, unmounted or replaced: deletes are held")
        return "; ".join(parts) or None

    def root_ok(self) -> bool:
        ident = self._root_identity()
        return ident is not None and ident == self._root_id

    def _check_root(self) -> None:
        if not self.root_ok() and "" not in self._held_reported:
            self._held_reported.add("")
            log.error("watched folder %s is gone, unmounted or replaced: every delete is held", self.root)
            self._emit("held", "", reason="watched folder is gone, unmounted or replaced; deletes are held")
            # An emptied or replaced root sends no delete events (the old folder's files still
            # exist elsewhere): a scan finds what is missing, and each such delete is held.
            self.request_scan("root gone or replaced")

    def _deletes_allowed(self, count: int, rel: str) -> bool:
        """False (and the delete is held and reported) when a safety rule trips."""
        if rel in self._held_paths:
            return False  # held already, and reported: it waits for an admin
        reason = None
        if not self.root_ok():
            reason = "watched folder is gone, unmounted or replaced"
        else:
            now = self.clock()
            window = self.settings.delete_window_s
            while self._delete_times and self._delete_times[0] < now - window:
                self._delete_times.popleft()
            self._delete_times.extend([now] * count)
            if len(self._delete_times) > self.settings.delete_threshold:
                reason = (
                    f"more than {self.settings.delete_threshold} deletes within {window:g}s ({len(self._delete_times)})"
                )
        if reason is None:
            return True
        if self.mirror:
            is_dir = count > 1 or self.index.has_under(rel)
            # force: published only when an admin releases it, so the uploaders apply it even
            # though their own check still sees a replaced root.
            action = PathChanged(source=self.source, path=rel, is_dir=is_dir, force=True)
            self.store.hold(rel, action, reason, time.time())
            self._emit("held", rel, reason=f"delete held: {reason}")
        # Only once stored: a hold the state refused is decided again, not taken as held.
        self._held_paths.add(rel)
        log.warning("delete of %s held: %s", rel, reason)
        return False

    def _release(self) -> None:
        released = self.store.release_held()
        for path, action in released:
            if isinstance(action, PathChanged) and action.is_dir:
                self.index.drop_under(path)
                self.store.record(index_drop_under=[path])
            else:
                self.index.drop(path)
                self.store.record(index_drop=[path])
        self._delete_times.clear()
        self._held_reported.clear()
        self._held_paths.clear()
        old_root, self._root_id = self._root_id, self._root_identity()
        if self._root_id is not None:
            self.store.set_meta(ROOT_IDENTITY_KEY, f"{self._root_id[0]}:{self._root_id[1]}")
        log.info("released %d held deletes", len(released))
        if self._root_id is not None and self._root_id != old_root:
            log.warning("the watched folder %s was replaced: watching the new one", self.root)
            if self.on_root_changed is not None:
                try:
                    self.on_root_changed()
                except Exception:
                    log.exception("could not watch the new folder %s; periodic rescans still cover it", self.root)
            self.request_scan("new root")
        if released:
            self.wake_pump()

    # ------------------------------------------------------------------ scanning

    def _start_scan(self, req: ScanRequest) -> None:
        if req.under == "" and self._scanning:
            # Not dropped: the scan under way compared part of the tree before this was asked.
            if self._next_scan is None or req.full:
                self._next_scan = req
            return
        if req.under == "":
            self._scanning = True
        self._listings += 1
        thread = threading.Thread(target=self._scan_thread, args=(req,), name="scan", daemon=True)
        thread.start()

    def _scan_thread(self, req: ScanRequest) -> None:
        t0 = time.monotonic()
        seen: set[str] = set()
        batch: list[tuple[str, GenTuple]] = []
        count = 0
        for listing in walk(self.root, self.rules, req.under):
            for skipped in listing.skipped:
                self._skip(skipped.path, skipped.reason, skipped.state)
            found = listing.found
            seen.update(rel for rel, _gen in found)
            count += len(found)
            batch += found
            if len(batch) >= SCAN_BATCH:
                self._hand_over(ScanBatch(batch, req.full))
                batch = []
        if batch:
            self._hand_over(ScanBatch(batch, req.full))
        self.queue.put(ScanDone(req.reason, req.under, frozenset(seen), count, t0, req.full))
        log.debug("walk of %r (%s) found %d files in %.2fs", req.under or "/", req.reason, count, time.monotonic() - t0)

    def _hand_over(self, batch: ScanBatch) -> None:
        """Give the gate a batch and wait until it has handled it.

        The walk and the gate take turns instead of running side by side: the walk releases the
        GIL for every stat and SQLite for every row it writes, and two threads doing that at once
        hand the GIL back and forth hundreds of thousands of times (a 200,000-file first start
        took 6.0 s of wall time that way, 4.2 s in turns). Memory stays bounded by one batch.
        """
        self.queue.put(batch)
        while not batch.taken.wait(0.5):
            if self._stop.is_set():
                return

    def _on_scan_batch(self, batch: ScanBatch) -> None:
        try:
            self._take_scan_batch(batch.found, batch.full)
        finally:
            batch.taken.set()

    def _take_scan_batch(self, found: list[tuple[str, GenTuple]], full: bool = False) -> None:
        now = self.clock()
        # Untouched for this long, a file needs no second look. (Younger files go through the
        # gate, which also asks whether someone still has them open for writing.)
        quiet_since = time.time_ns() - max(self.settings.settle_ms * 1_000_000, QUIET_ENOUGH_NS)
        index, pending = self.index, self.coalescer
        known, put, moved_from = index.get, index.set, index.path_of
        fresh: list[Found] = []
        for rel, gen in found:  # a restart compares 200,000 files here: kept lean
            old = known(rel)
            if old == gen or rel in pending:
                if full and old == gen and rel not in pending:
                    self._verify(rel)
                continue
            if gen[1] > quiet_since or self.polling:
                pending.touch(rel, now)
            elif old is None:  # never published: straight from memory, no outbox row
                if moved_from(gen) is not None and self._moved_here(rel, gen):
                    continue
                put(rel, gen)
                fresh.append((rel, gen))
            else:
                self._changed(rel, gen)
        if fresh:
            if self._reported:
                for rel, _gen in fresh:
                    self._forget_report(rel)
            self.discovered.extend(fresh)
            self.wake_pump()
        self._flush()

    def _verify(self, rel: str) -> None:
        """Have the uploaders check ``rel`` against the remote: an action without a generation
        is never sent blind, so a file the remote already holds costs one stat / HEAD."""
        self._pending_actions.append((rel, PathChanged(source=self.source, path=rel)))
        self._verified += 1

    def _prune_remote(self) -> None:
        """After a full scan in mirror mode: have the remote's files the folder does not hold
        deleted, unless the delete safety rules hold deletes now."""
        if not self.root_ok() or self._held_paths:
            log.warning("verify: files on the remote that the folder does not hold are left there: deletes are held")
            return
        limit = self.settings.delete_threshold
        self._pending_actions.append((PRUNE_KEY, PruneRemote(source=self.source, limit=limit)))
        self._flush()
        log.info(
            "verify: the uploaders delete the files on the remote that the folder does not hold (if %d or fewer)", limit
        )

    def _on_scan_done(self, done: ScanDone) -> None:
        self._listings = max(0, self._listings - 1)
        if done.under == "":
            self._scanning = False
        prefix = done.under + "/" if done.under else ""
        now = self.clock()
        if prefix:
            missing = [p for p in self.index if p.startswith(prefix) and p not in done.seen]
        else:
            missing = list(self.index.keys() - done.seen)
        for rel in missing:
            if rel not in self.coalescer:
                self.coalescer.touch(rel, now)  # the gate confirms it is gone, then deletes
        # Logged once every file found is compared with the index and each change is queued:
        # in the outbox (on disk), or, for a file the index never held, in memory until the
        # broker confirms it (a crash before then leaves it out of the index: found again).
        log.info(
            "scan (%s) of %r: %d files in %.2fs",
            done.reason,
            done.under or "/",
            done.count,
            time.monotonic() - done.started,
        )
        if done.full:
            log.info("verify: %d files the remote should hold sent to be checked there", self._verified)
            self._verified = 0
            if self.mirror and not done.under:
                self._prune_remote()
        if done.reason == START_UP and not done.under:
            self.starting_scan.clear()
        if self._next_scan is not None and not done.under:
            req, self._next_scan = self._next_scan, None
            self.request_scan(req.reason, full=req.full)

    # ------------------------------------------------------------------ events

    def _skip(self, rel: str, reason: str, state: RefusalState = "skipped") -> None:
        if self._first_report(rel, reason):
            log.warning("%s %r: %s", "skipping" if state == "skipped" else "refusing", rel, reason)
            self._emit(state, rel, reason=reason)

    def _first_report(self, rel: str, reason: str) -> bool:
        """True the first time ``rel`` is refused or skipped for ``reason``.

        A name that cannot be mapped, a symlink or a FIFO stays what it is: each write to it and
        each periodic rescan would otherwise report it again. Once the path holds a file that is
        published (:meth:`_changed`), a later refusal is news again. Called by the gate and the
        scan thread; the memory is bounded (the oldest reports are forgotten first).
        """
        with self._reported_lock:
            if self._reported.get(rel) == reason:
                return False
            self._reported.pop(rel, None)
            self._reported[rel] = reason
            if len(self._reported) > MAX_REMEMBERED_REPORTS:
                del self._reported[next(iter(self._reported))]
            return True

    def _emit(self, state: FileState, rel: str, **fields: object) -> None:
        try:
            self.emit_event(FileEvent.make(state, source=self.source, path=rel, **fields))
        except Exception:  # an event must never stop the watcher
            log.exception("could not build event for %r", rel)


def _moves_in_from_outside(dropped: list[tuple[str, Action]], folder: str) -> tuple[list[PathMoved], list[str]]:
    """Split the outbox rows dropped below ``folder`` into the moves whose source is outside it,
    and the keys of the rest."""
    arriving: list[PathMoved] = []
    rest: list[str] = []
    for key, action in dropped:
        if isinstance(action, PathMoved) and not action.src.startswith(folder + "/"):
            arriving.append(action)
        else:
            rest.append(key)
    return arriving, rest

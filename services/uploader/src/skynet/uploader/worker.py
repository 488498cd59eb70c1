"""Handling one action: reconcile the remote with the local folder, then say how it went.

Runs on the consumer's worker threads; each thread has its own backend (connection reuse, no
sharing). Every outcome is also told as lifecycle events, which never block the work.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import tenacity

from skynet.common.broker import ACK, Delivery, Outcome
from skynet.common.errors import (
    InvalidMessage,
    InvalidPath,
    LocalFileError,
    PermanentError,
    RemoteRefused,
    RemoteUnavailable,
    SkynetError,
    TransientError,
)
from skynet.common.messages import (
    FileEvent,
    FileState,
    Generation,
    PathChanged,
    PathMoved,
    PruneRemote,
    decode_action,
)
from skynet.uploader.localfs import LocalFolder
from skynet.uploader.reconcile import Decision, can_move, decide
from skynet.uploader.storage.base import Backend, RemoteEntry

log = logging.getLogger(__name__)


class TransferCancelled(TransientError):
    """The uploader is stopping: the transfer was handed back (what the remote holds is kept)."""


MAX_CHASES = 5  # re-uploads in a row of a file that keeps changing under us before giving up for now
# A file up to this size that the watcher has just seen change is sent without asking the remote
# first: it is almost never there already, and sending it costs about what asking would (one
# round trip / one HEAD less per small file; bench/RESULTS.md).
BLIND_UPLOAD_MAX = 1024 * 1024
IN_PROCESS_ATTEMPTS = 3  # the first rung of the retry ladder


def _retry_in_process(exc: BaseException) -> bool:
    """Transient errors other than an unreachable remote (that pauses) or a stop (that hands back)."""
    return isinstance(exc, TransientError) and not isinstance(exc, RemoteUnavailable | TransferCancelled)


class Sent(enum.Enum):
    """How an upload went."""

    DONE = "done"  # complete, and the local file did not change meanwhile
    CHANGED = "changed"  # the file changed (or went) during the upload, which did not complete
    LANDED_STALE = "landed stale"  # complete, but the file changed (or went) meanwhile


@dataclass
class Counters:
    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_sent: int = 0
    files_done: int = 0
    active: int = 0

    def add(self, *, sent: int = 0, done: int = 0, active: int = 0) -> None:
        with self.lock:
            self.bytes_sent += sent
            self.files_done += done
            self.active += active


@dataclass
class _PathLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class Reconciler:
    def __init__(
        self,
        *,
        source: str,
        worker: str,
        folder: LocalFolder,
        open_backend: Callable[[], Backend],
        emit: Callable[[FileEvent], None],
        mirror: bool,
        on_remote_down: Callable[[RemoteUnavailable], None],
        progress_interval_s: float = 0.5,
        max_file_size: int = 0,
        ask_watcher: Callable[[str, Generation | None], None] | None = None,
    ) -> None:
        self.source = source
        # Asks the watcher to look at a path again, telling it what the remote holds there (a
        # RecheckRequest); see _file.
        self._ask_watcher = ask_watcher
        self.max_file_size = max_file_size  # 0: no limit of our own (the target may still refuse)
        self.worker = worker
        self.folder = folder
        self._open_backend = open_backend
        self._emit = emit
        self.mirror = mirror
        self._on_remote_down = on_remote_down
        self._progress_interval = progress_interval_s
        self._local = threading.local()
        self._backends: list[Backend] = []
        self._lock = threading.Lock()
        self.counters = Counters()
        self._requeues: dict[str, int] = {}
        self._path_locks: dict[str, _PathLock] = {}
        self._cancel = threading.Event()

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _path_lock(self, path: str) -> Iterator[bool]:
        """One transfer per path at a time in this process (replicas reconcile, see DESIGN.md).

        Yields whether another worker had the path when this one asked: its work may have made
        this one's unnecessary."""
        with self._lock:
            entry = self._path_locks.setdefault(path, _PathLock())
            entry.users += 1
            contended = entry.users > 1
        try:
            with entry.lock:
                yield contended
        finally:
            with self._lock:
                entry.users -= 1
                if entry.users == 0:
                    self._path_locks.pop(path, None)

    def backend(self) -> Backend:
        b: Backend | None = getattr(self._local, "backend", None)
        if b is None:
            b = self._open_backend()
            self._local.backend = b
            with self._lock:
                self._backends.append(b)
        return b

    def cancel(self) -> None:
        """Ask every running transfer to stop at its next progress step and hand its message back."""
        self._cancel.set()

    def close(self) -> None:
        with self._lock:
            for b in self._backends:
                try:
                    b.close()
                except Exception:
                    log.debug("closing backend failed", exc_info=True)

    def event(self, state: FileState, path: str, **fields: object) -> None:
        try:
            self._emit(FileEvent.make(state, source=self.source, path=path, worker=self.worker, **fields))
        except Exception:
            log.exception("could not emit %s event for %r", state, path)

    # ------------------------------------------------------------------ one delivery

    def handle(self, d: Delivery) -> Outcome:
        try:
            action = decode_action(d.body)
        except InvalidMessage as exc:
            log.error("malformed message %s dead-lettered: %s", d.message_id, exc)
            self.event("dead", "", reason=exc.reason, attempt=d.attempts + 1)
            return Outcome("dead", exc.reason)
        if action.source != self.source:
            reason = f"message for source {action.source!r} reached the uploader of {self.source!r}"
            self.event("dead", getattr(action, "path", getattr(action, "dst", "")), reason=reason)
            return Outcome("dead", reason)
        path = action.dst if isinstance(action, PathMoved) else "" if isinstance(action, PruneRemote) else action.path
        self.counters.add(active=1)
        try:
            # The first rung of the retry ladder: a couple of quick in-process retries with
            # jittered backoff for transient errors, before the delayed retry queues.
            for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception(_retry_in_process),
                stop=tenacity.stop_after_attempt(IN_PROCESS_ATTEMPTS),
                wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
                reraise=True,
            ):
                with attempt:
                    # Handled before (redelivered, retried): that handling may have ended
                    # between an upload and the action's acknowledgement.
                    again = d.redelivered or d.attempts > 0 or attempt.retry_state.attempt_number > 1
                    self._dispatch(action, again)
            self._requeues.pop(action.id, None)
            return ACK
        except TransferCancelled:
            log.info("handing %r back to the queue: the uploader is stopping", path)
            self._handed_back(path, "the uploader handling it stopped")
            return Outcome("requeue", "uploader stopping")
        except RemoteUnavailable as exc:
            count = self._requeues.get(action.id, 0) + 1
            self._requeues[action.id] = count
            if count <= 3:
                log.warning("remote unavailable while handling %r (%s): pausing", path, exc.reason)
                self._on_remote_down(exc)
                self._handed_back(path, f"remote unavailable: {exc}")
                return Outcome("requeue", exc.reason)
            self._requeues.pop(action.id, None)
            self.event("failed", path, reason=exc.reason, attempt=d.attempts + 1)
            return Outcome("retry", exc.reason)
        except TransientError as exc:
            log.warning("transient failure on %r (attempt %d): %s", path, d.attempts + 1, exc.reason)
            self.event("failed", path, reason=exc.reason, attempt=d.attempts + 1)
            return Outcome("retry", exc.reason)
        except PermanentError as exc:
            log.error("cannot sync %r: %s", path, exc.reason)
            self.event("failed", path, reason=exc.reason, attempt=d.attempts + 1)
            self.event("dead", path, reason=exc.reason, attempt=d.attempts + 1)
            return Outcome("dead", exc.reason)
        except SkynetError as exc:
            self.event("failed", path, reason=exc.reason, attempt=d.attempts + 1)
            return Outcome("retry", exc.reason)
        finally:
            self.counters.add(active=-1)

    def _handed_back(self, path: str, why: str) -> None:
        """An action handed back to its queue is queued again, not "started" by nobody: say so,
        for the file list and the count of transfers (the uploader's heartbeat says why it
        paused)."""
        if path:
            self.event("queued", path, reason=f"handed back to the queue: {why}")

    def _dispatch(self, action: PathChanged | PathMoved | PruneRemote, again: bool = False) -> None:
        if isinstance(action, PathMoved):
            self._moved(action)
        elif isinstance(action, PruneRemote):
            self._prune(action)
        elif action.is_dir:
            self._folder_gone(action.path, self._tree(action.path, action.id, confirmed=action.force))
        else:
            self._file(
                action.path,
                announced=True,
                force=action.force,
                # Forced with a generation: the watcher saw the bytes change under an unchanged
                # generation. Not an admin's request, so it confirms no delete.
                confirmed=action.force and action.generation is None,
                action_id=action.id,
                hint=action.generation,
                again=again,
            )

    # ------------------------------------------------------------------ files

    def _file(
        self,
        path: str,
        *,
        force: bool = False,
        confirmed: bool = False,
        action_id: str | None = None,
        hint: Generation | None = None,
        again: bool = False,
        announced: bool = False,
    ) -> None:
        """Reconcile one file. ``hint``: the generation the action said the file had locally.
        ``again``: the action was handled before (redelivered, retried).

        ``confirmed``: an admin asked for this (a released delete, a forced retry), so a delete
        goes ahead even if the watched folder was replaced since start; the new folder is then
        the one this uploader guards.
        """
        backend = self.backend()
        hinted = hint is not None
        # Forced with a generation: the watcher saw the bytes change under an unchanged generation.
        rewritten = force and hinted
        landed: Generation | None = None  # what an upload of ours left there after the file changed or went
        for _chase in range(MAX_CHASES):
            local = self.folder.generation(path)
            blind = local is not None and (force or (hinted and local.size <= BLIND_UPLOAD_MAX))
            remote = None if blind else backend.stat(path)
            decision = decide(
                local_present=local is not None,
                remote_present=remote is not None,
                remote_matches=bool(local and remote and backend.matches(remote, local)),
                mirror=self.mirror,
                force=force or blind,
            )
            if decision is Decision.SKIP:
                self.event("skipped", path, size=local.size if local else None, reason="already up to date")
                return
            if decision is Decision.NOTHING:
                # Gone on both sides, but an upload of it may have been cut short by its
                # disappearance: leave no open multipart upload or partial file behind.
                with self._path_lock(path):
                    backend.cleanup(path)
                    # An upload of it in this process holds the lock to its end: if it ended
                    # while we waited, its file is on the remote now, and is decided on again
                    # (a file renamed or deleted in the middle of its upload).
                    arrived = not hinted and backend.stat(path) is not None
                if arrived:
                    continue
                if hinted:
                    log.info("%r vanished before it could be uploaded; nothing to do", path)
                    self.event("skipped", path, reason="vanished before upload (gone locally and remotely)")
                elif announced:  # its "queued" event must not stay its last word
                    self.event("skipped", path, reason="gone locally and already gone from the remote")
                return
            # Past this point a file gone locally is on the remote (DELETE or KEEP).
            left = None if local is not None else self._left_after_it_went(backend, remote, landed, hint, again)
            if left is not None and not confirmed and self._ask_watcher is not None:
                # An upload (may have) put it there after it went. Had it gone by a rename, or a
                # delete, that another worker applied while the upload was still on its way (an
                # S3 PUT shows nothing until it completes), the remote would keep it under this
                # name, and, for a folder renamed, never get it under the new one. The watcher
                # knows where it went: it answers with the move again, or the delete (mirror
                # mode), and nothing if its own move or delete of it is still to come.
                log.info("%r is gone here and an upload of it may have landed after it went: asking the watcher", path)
                self._ask_watcher(path, left)
                self.event(
                    "skipped", path, reason="renamed or deleted while being sent; the watcher is asked where it went"
                )
                return
            if decision is Decision.KEEP:
                self.event("skipped", path, reason="deleted locally; kept on the remote (delete mode keep)")
                return
            if decision is Decision.DELETE and hinted and not confirmed:
                # The action said the file was there: it went since. Whether its delete may be
                # applied is the watcher's call (a burst of deletes over the threshold is held),
                # and the watcher sends that delete as an action of its own.
                log.info("%r is gone locally since it was queued; its delete is left to the watcher", path)
                self.event("skipped", path, reason="gone locally since it was queued; the watcher sends its delete")
                return
            if decision is Decision.DELETE:
                if not self.folder.root_ok():
                    if not confirmed:
                        raise TransientError("watched folder is gone or replaced: delete postponed")
                    self.folder.accept_current_root()
                backend.delete(path)
                self.event("deleted", path, remote=backend.describe(path))
                return
            assert local is not None
            if self.max_file_size and local.size > self.max_file_size:
                raise RemoteRefused(
                    f"{path!r} is {local.size} bytes: over the target's limit of {self.max_file_size} bytes"
                    " (SKYNET_MAX_FILE_SIZE)"
                )
            if rewritten:
                # A partial of this generation would hold bytes of the content it replaced.
                rewritten = False
                with self._path_lock(path):
                    backend.cleanup(path)
            outcome = self._upload(backend, path, local, action_id, forced=force)
            if outcome is Sent.DONE:
                return
            if outcome is Sent.LANDED_STALE:
                landed = local
            force = True  # it changed while we sent it: send it again, whatever the remote says
        raise TransientError(f"{path!r} keeps changing; will try again later")

    @staticmethod
    def _left_after_it_went(
        backend: Backend, remote: RemoteEntry | None, landed: Generation | None, hint: Generation | None, again: bool
    ) -> Generation | None:
        """What an upload of a file gone locally may have left on the remote after it went:
        ``landed``, by this handling's own upload; or the action's ``hint``, when the remote holds
        it and the action was handled before (that handling may have stopped, killed or cut from
        the broker, between such an upload and asking the watcher). Not on a first delivery: a
        full rescan's actions for files deleted since would each make the watcher send its
        delete again, and count twice towards its threshold."""
        if landed is not None:
            return landed
        if again and hint is not None and remote is not None and backend.matches(remote, hint):
            return hint
        return None

    def _upload(self, backend: Backend, path: str, gen: Generation, action_id: str | None, forced: bool) -> Sent:
        """Upload one generation, and say whether the local file was unchanged throughout."""
        if self._cancel.is_set():
            raise TransferCancelled(f"not starting {path!r}: the uploader is stopping")
        # Ticks only every progress interval: none at 0 ("started" says it) and none at the end
        # ("done" says it), so a transfer shorter than the interval costs two events, not three.
        last = [0.0]

        def progress(done: int) -> None:
            if self._cancel.is_set():
                raise TransferCancelled(f"transfer of {path!r} handed back at {done} bytes")
            now = time.monotonic()
            if now - last[0] >= self._progress_interval:
                last[0] = now
                self.event("progress", path, size=gen.size, bytes_done=done)

        try:
            with self._path_lock(path) as waited:
                if waited and not forced and self._sent_meanwhile(backend, path, gen):
                    return Sent.DONE
                started = last[0] = time.monotonic()
                self.event("started", path, size=gen.size, action_id=action_id)
                result = backend.upload(path, self.folder.path(path), gen, progress)
        except (LocalFileError, PermanentError, TransientError) as exc:
            if isinstance(exc, (RemoteUnavailable, TransferCancelled)):
                raise  # the partial is kept for a resume of this same generation
            # If the file changed meanwhile, the failure says nothing about the new version (a
            # replica handling the newer one may even have discarded our partial): look again.
            after = self.folder.generation(path)
            if after != gen:
                log.info("%r changed while being uploaded (%s); looking again", path, exc.reason)
                # That generation is gone for good: no resume will ever finish its partial (an
                # S3 multipart upload would stay open if the new version is sent in one PUT).
                with self._path_lock(path):
                    backend.cleanup(path)
                return Sent.CHANGED
            raise
        self.counters.add(sent=result.bytes_sent)
        after = self.folder.generation(path)
        if after != gen:
            log.info("%r changed while it was being uploaded; sending it again", path)
            return Sent.LANDED_STALE
        self.counters.add(done=1)
        self.event(
            "done",
            path,
            size=gen.size,
            bytes_done=result.bytes_sent,
            resumed_from=result.resumed_from or None,
            duration_s=round(time.monotonic() - started, 4),
            checksum=result.checksum,
            remote=backend.describe(path),
            action_id=action_id,
        )
        return Sent.DONE

    def _sent_meanwhile(self, backend: Backend, path: str, gen: Generation) -> bool:
        """Did the worker that had ``path`` before us send this very generation? (Two actions
        for one file at once: a folder's move and a rename sent again, say.)"""
        remote = backend.stat(path)
        if remote is None or not backend.matches(remote, gen):
            return False
        self.event("skipped", path, size=gen.size, reason="already up to date (sent meanwhile by another worker)")
        return True

    # ------------------------------------------------------------------ moves and folders

    def _moved(self, action: PathMoved) -> None:
        backend = self.backend()
        if action.is_dir:
            remote_has_src = next(iter(backend.list(action.src)), None) is not None
            moved = remote_has_src and not self.folder.is_dir(action.src)
            if moved:
                backend.move_dir(action.src, action.dst)
                self.event("moved", action.dst, src=action.src, remote=backend.describe(action.dst))
            # A file of the folder still on its way when the folder moved (an upload under way or
            # interrupted under the old name) is on the remote under neither name, and a listing
            # does not show it: it is reconciled under both names. Under the old one that
            # discards its partial (the upload under way then fails and finds its file gone);
            # under the new one it is sent.
            begun = {p[len(action.src) :] for p in backend.uploads_under(action.src)}
            begun |= {p[len(action.dst) :] for p in backend.uploads_under(action.dst)}  # moved along
            failures = self._tree(action.src, action.id, also=[action.src + rest for rest in sorted(begun)])
            seen: set[str] = set()
            failures += self._tree(action.dst, action.id, also=[action.dst + rest for rest in sorted(begun)], seen=seen)
            self._ask_for_the_missing(action.dst, seen)
            if failures:
                self.event("failed", action.dst, reason=_files_failed(failures))
            elif not moved:  # the folder's own last word: its files each have theirs
                self.event(
                    "skipped",
                    action.dst,
                    reason="nothing under the old name on the remote: its files are sent as they are",
                )
            return
        local_dst = self.folder.generation(action.dst)
        remote_src = backend.stat(action.src)
        src_local = self.folder.generation(action.src) is not None
        if local_dst is not None and can_move(
            src_local_present=src_local,
            remote_src_present=remote_src is not None,
            remote_src_matches_dst=remote_src is not None and backend.matches(remote_src, local_dst),
        ):
            backend.move(action.src, action.dst)
            self.event("moved", action.dst, src=action.src, size=local_dst.size, remote=backend.describe(action.dst))
        self._file(action.dst, action_id=action.id, announced=True)
        self._file(action.src, action_id=action.id)

    def _folder_gone(self, folder: str, failures: int) -> None:
        """A folder's delete, its files reconciled: the folder's own last word (its "queued"
        event must not stay the state of a folder that is gone)."""
        if failures:
            self.event("failed", folder, reason=_files_failed(failures))
        elif self.folder.is_dir(folder):
            self.event("skipped", folder, reason="in the watched folder again: its files are reconciled")
        elif self.mirror:
            self.event("deleted", folder, remote=self.backend().describe(folder))
        else:
            self.event("skipped", folder, reason="deleted locally; kept on the remote (delete mode keep)")

    def _ask_for_the_missing(self, folder: str, seen: set[str]) -> None:
        """After a folder's move: ask the watcher to send again each local file below ``folder``
        that the move's reconciling did not meet (``seen``): the remote does not hold it.

        Moves of folders in and around one another (a swap through a third name, a folder moved
        out of one just moved) may be applied here in any order, by any worker: a move that
        finds nothing under its old name, because another has not been applied yet or has
        already reconciled it away, leaves its files on the remote under neither name. The
        watcher, which knows what it ignores, sends each again (``RecheckRequest`` without a
        generation), and it is uploaded.
        """
        if self._ask_watcher is None:
            return
        missing = [p for p in sorted(self.folder.files_under(folder)) if p not in seen]
        if not missing:
            return
        log.info(
            "%d files below %r are not on the remote after its move (a move around it was applied"
            " in another order): asking the watcher to send them again",
            len(missing),
            folder,
        )
        for path in missing:
            self._ask_watcher(path, None)

    def _tree(
        self,
        folder: str,
        action_id: str,
        confirmed: bool = False,
        also: Iterable[str] = (),
        seen: set[str] | None = None,
    ) -> int:
        """Reconcile every remote file below ``folder`` with the local folder (and ``also``);
        returns how many could not be. ``seen`` receives every path reconciled."""
        paths = [entry.path for entry in self.backend().list(folder)]
        listed = set(paths)
        paths += [p for p in also if p not in listed]
        if seen is not None:
            seen.update(paths)
        failures = self._reconcile_each(paths, action_id, confirmed)
        if failures:
            log.warning("folder %r reconciled with %d failures", folder, failures)
        return failures

    def _reconcile_each(self, paths: list[str], action_id: str, confirmed: bool = False) -> int:
        """Reconcile each of ``paths``; a file that cannot be is reported and the rest go on.
        Returns how many could not."""
        failures = 0
        for path in paths:
            try:
                self._file(path, action_id=action_id, confirmed=confirmed)
            except (PermanentError, LocalFileError) as exc:
                failures += 1
                self.event("failed", path, reason=exc.reason)
        return failures

    def _prune(self, action: PruneRemote) -> None:
        """Delete the remote files the watched folder does not hold (see :class:`PruneRemote`)."""
        if not self.mirror:
            log.info("remote files the watched folder does not hold are kept (delete mode keep)")
            return
        if not self.folder.root_ok():
            raise TransientError("watched folder is gone or replaced: pruning the remote postponed")
        extras = [entry.path for entry in self.backend().list() if not self._held_locally(entry.path)]
        if len(extras) > action.limit:
            reason = (
                f"{len(extras)} files on the remote that the watched folder does not hold: more than"
                f" {action.limit} (SKYNET_DELETE_THRESHOLD), so none is deleted"
            )
            log.warning("prune held: %s", reason)
            self.event("held", "", reason=reason)
            return
        failures = self._reconcile_each(extras, action.id)
        log.info(
            "prune: %d remote files the watched folder does not hold reconciled (deleted unless back), %d failed",
            len(extras) - failures,
            failures,
        )

    def _held_locally(self, path: str) -> bool:
        """Is there a file at ``path`` in the watched folder? A path that cannot be looked at
        (unreadable, not a regular file, a name the folder cannot hold) counts as yes: kept."""
        try:
            return self.folder.generation(path) is not None
        except (LocalFileError, InvalidPath):
            return True


def _files_failed(failures: int) -> str:
    return f"{failures} of its files could not be reconciled (each has its own failed event)"

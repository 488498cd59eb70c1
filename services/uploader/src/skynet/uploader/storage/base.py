"""The one small interface every storage backend implements.

A backend instance is used by one thread at a time; the uploader opens one per worker thread
(``open_backend``) and reuses it for many files, so connections are reused. Paths given to a
backend are wire paths (relative, POSIX, validated); the backend maps them under its base path
with :func:`skynet.common.paths.remote_join` and never writes outside it.

Errors: a backend raises only skynet errors — :class:`RemoteUnavailable` (cannot reach, timed out,
throttled: retry later), :class:`RemoteRefused` (the target said no: permission, name, size),
:class:`LocalFileError` (the local file could not be read), :class:`InvalidPath`. The foreign
exception is chained with ``raise … from exc``; ``classify`` in each backend decides which.

Optional features are declared as :class:`Capabilities` flags, not discovered by trial.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from skynet.common.errors import RemoteRefused, TransientError
from skynet.common.messages import Generation

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]
"""Called with the number of bytes of the file now known to be on the remote (monotonic).

Called at least once per part/chunk, from the thread that called ``upload``. If it raises (e.g. to
abandon an upload at shutdown), the upload stops, what the remote holds is kept for a later
resume, and the exception propagates out of ``upload`` unchanged.
"""


class CallbackError(Exception):
    """Carries an exception raised by the caller's progress callback through a backend's handlers."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


def guard_progress(progress: ProgressFn) -> ProgressFn:
    """Wrap ``progress`` so that what it raises reaches the backend as :class:`CallbackError`.

    A backend wraps the callback with this and re-raises ``exc.original`` where it translates
    foreign exceptions, so the caller's own exception is not mistaken for a remote error.
    """

    def call(done: int) -> None:
        try:
            progress(done)
        except Exception as exc:
            raise CallbackError(exc) from exc

    return call


def removed_meanwhile(remote: str) -> TransientError:
    """An upload's partial or folder vanished under it: the folder was removed as emptied, or
    another uploader discarded the partial. Tried again (the folders are made again then)."""
    return TransientError(
        f"upload {remote}: its folder or partial was removed while it was sent (a concurrent delete"
        " or cleanup); will try again"
    )


@dataclass(frozen=True)
class Capabilities:
    server_side_move: bool = False  # move() does not re-send bytes
    dir_move: bool = False  # move_dir() is one operation, not one per file
    resumable: bool = False  # an interrupted upload continues from what the remote holds
    exact_generation: bool = False  # the remote records the full Generation (else size+mtime seconds)


@dataclass(frozen=True)
class RemoteEntry:
    path: str  # wire path, relative to the backend's base
    size: int
    mtime: float | None = None
    generation: Generation | None = None  # as recorded with the object, when the backend can
    checksum: str | None = None
    atime: float | None = None  # SFTP, file: carries a tag of the full generation (see _atime_tag)


@dataclass(frozen=True)
class UploadResult:
    bytes_sent: int  # bytes actually sent over the wire by this call
    resumed_from: int = 0  # bytes of the file already on the remote and reused
    checksum: str | None = None  # ETag / sha256 / whatever the remote reports


class Backend(abc.ABC):
    """A storage target. Subclasses set ``capabilities`` and implement the abstract methods."""

    scheme: str = ""
    capabilities: Capabilities = Capabilities()

    @abc.abstractmethod
    def describe(self, path: str) -> str:
        """A secret-free URL of ``path`` on the remote, for events and logs."""

    @abc.abstractmethod
    def check(self) -> None:
        """Cheap reachability probe; raises RemoteUnavailable when the remote is away."""

    @abc.abstractmethod
    def stat(self, path: str) -> RemoteEntry | None:
        """The remote file at ``path``, or None if there is none."""

    @abc.abstractmethod
    def upload(self, path: str, local_file: str, generation: Generation, progress: ProgressFn) -> UploadResult:
        """Make ``path`` hold the bytes of ``local_file``, recording ``generation``.

        The object becomes visible under its final name only when complete (partial name +
        rename, or multipart complete). If a resumable partial for this same generation exists,
        continue it; partials of other generations are discarded.
        """

    @abc.abstractmethod
    def delete(self, path: str) -> bool:
        """Delete the file at ``path``; False if it was not there. Never deletes folders' contents.

        A backend with real folders also removes those the delete left empty (not the base), as
        ``move``, ``move_dir`` and ``cleanup`` do for what they empty: the remote holds the
        folders that hold files."""

    @abc.abstractmethod
    def move(self, src: str, dst: str) -> None:
        """Rename file ``src`` to ``dst`` on the remote (replacing ``dst``). RemoteRefused if src is gone."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[RemoteEntry]:
        """Every file below folder ``prefix`` ('' = the whole base), recursively, partials excluded."""

    def move_dir(self, src: str, dst: str) -> None:
        """Rename folder ``src`` to ``dst``. Default: move each file.

        A file gone from under ``src`` since the listing (another worker moved or deleted it,
        applying a move or delete around this one) is passed over: the caller reconciles both
        names afterwards. Refused otherwise, the rest of the folder would stay behind."""
        for entry in list(self.list(src)):
            rest = entry.path[len(src) :].lstrip("/")
            try:
                self.move(entry.path, f"{dst}/{rest}" if dst else rest)
            except RemoteRefused:
                if self.stat(entry.path) is not None:
                    raise
                log.info("%r went from the remote while its folder was moved: passed over", entry.path)

    def uploads_under(self, prefix: str) -> Sequence[str]:
        """Paths below folder ``prefix`` with an upload begun and not finished (a partial, an open
        multipart upload). Optional: by default none are known."""
        return []

    def cleanup(self, path: str) -> None:  # noqa: B027 - optional hook
        """Remove leftovers for ``path`` (abandoned partials, open multipart uploads). Optional."""

    def matches(self, entry: RemoteEntry, generation: Generation) -> bool:
        """True if ``entry`` records exactly the local ``generation``."""
        if entry.size != generation.size:
            return False
        if entry.generation is not None:
            if self.capabilities.exact_generation:
                return entry.generation == generation
            return (
                entry.generation.size == generation.size
                and entry.generation.mtime_ns // 10**9 == generation.mtime_ns // 10**9
            )
        if entry.mtime is not None:
            return int(entry.mtime) == generation.mtime_ns // 10**9
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

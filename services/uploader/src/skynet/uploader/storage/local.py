"""``file:///mnt/nas/base``: a mounted folder (NAS, another disk) as a target.

The base folder must already exist: a missing base usually means an unmounted share, and writing
into the bare mount point would fill the wrong disk, so it is reported as RemoteUnavailable.

Uploads go to a partial next to the final name (see ``_partial``), are fsynced, get the local
mtime (nanoseconds) and, as atime, a tag of the whole generation (``_atime_tag``: the inode
tells apart two files of one size and mtime), and are renamed into place with ``os.replace``.
A partial of the same generation is continued from its last whole chunk after checking the
chunk before it against the local bytes; partials of other generations are deleted.

Folders exist on the target as long as they hold files: a delete, a move or the removal of a
partial removes the folders it emptied (``rmdir`` up towards the base, stopping at the first that
still holds anything). An upload that finds its folder removed that way meanwhile makes it again
and carries on (``FOLDER_RACE_TRIES``).
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
from collections.abc import Iterator, Sequence
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from skynet.common.errors import (
    ConfigError,
    InvalidPath,
    LocalFileError,
    RemoteConflict,
    RemoteFull,
    RemoteRefused,
    RemoteUnavailable,
    SkynetError,
)
from skynet.common.messages import Generation
from skynet.common.paths import remote_join, validate_rel_path
from skynet.uploader.storage import _partial
from skynet.uploader.storage._atime_tag import generation_tag, matches_tagged
from skynet.uploader.storage._localfile import open_regular
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

CHUNK = 1024 * 1024
FOLDER_RACE_TRIES = 3  # a folder removed as emptied while a file was on its way into it
_UNAVAILABLE_ERRNOS = {errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EHOSTDOWN, errno.ENOTCONN, errno.ENODEV}


def classify(exc: BaseException, what: str = "") -> SkynetError:
    """Translate an OSError met on the target folder into the matching skynet error."""
    if isinstance(exc, SkynetError):
        return exc
    prefix = f"{what}: " if what else ""
    if isinstance(exc, OSError):
        if exc.errno in _UNAVAILABLE_ERRNOS:
            return RemoteUnavailable(f"{prefix}{exc.strerror or exc}")
        if exc.errno == errno.ENAMETOOLONG:
            return InvalidPath(f"{prefix}name too long for the target")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return RemoteFull(f"{prefix}{exc.strerror or exc}: the target is full; retried, free some space")
        return RemoteRefused(f"{prefix}{exc.strerror or exc}")
    return RemoteUnavailable(f"{prefix}{type(exc).__name__}: {exc}")


class LocalBackend(Backend):
    scheme = "file"
    capabilities = Capabilities(server_side_move=True, dir_move=True, resumable=True, exact_generation=False)

    def __init__(self, base: str) -> None:
        if not os.path.isabs(base):
            raise ConfigError(f"SKYNET_TARGET: file:// target needs an absolute path, got {base!r}")
        self.base = os.path.normpath(base)

    # ------------------------------------------------------------------ helpers

    def _full(self, path: str) -> str:
        rel = remote_join("", validate_rel_path(path))
        return os.path.join(self.base, *rel.split("/")) if rel else self.base

    def _require_base(self) -> None:
        if not os.path.isdir(self.base):
            raise RemoteUnavailable(f"target folder {self.base} is missing (share not mounted?)")

    # ------------------------------------------------------------------ interface

    def describe(self, path: str) -> str:
        return "file://" + self._full(path)

    def check(self) -> None:
        self._require_base()

    def stat(self, path: str) -> RemoteEntry | None:
        full = self._full(path)
        self._require_base()
        try:
            st = os.stat(full)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise classify(exc, f"stat {full}") from exc
        if not os.path.isfile(full):
            return None
        return _entry(path, st)

    def matches(self, entry: RemoteEntry, generation: Generation) -> bool:
        """Size, mtime (whole seconds: a NAS may keep no finer) and the generation tag in atime."""
        return matches_tagged(entry, generation)

    def upload(self, path: str, local_file: str, generation: Generation, progress: ProgressFn) -> UploadResult:
        full = self._full(path)
        self._require_base()
        folder, name = os.path.split(full)
        partial = os.path.join(folder, _partial.partial_name(name, generation))
        src = open_regular(local_file)  # closed below
        try:
            try:
                for attempt in range(FOLDER_RACE_TRIES):
                    try:
                        _make_folders(folder)
                        if _partial.resumable(generation):
                            self._discard_other_partials(folder, name, partial)
                            offset = self._resume_point(partial, src)
                        else:
                            offset = 0
                        sent = self._copy(src, partial, offset, guard_progress(progress))
                        break
                    except FileNotFoundError:  # the folder was removed as emptied meanwhile
                        if attempt == FOLDER_RACE_TRIES - 1:
                            raise
                os.utime(partial, ns=(generation_tag(generation) * 10**9, generation.mtime_ns))
                try:
                    os.replace(partial, full)
                except IsADirectoryError:  # a folder replaced locally by a file of the same name
                    _remove_empty_folder(full)
                    os.replace(partial, full)
            except CallbackError as exc:
                raise exc.original from None
            except LocalFileError:
                raise
            except FileNotFoundError as exc:  # also after FOLDER_RACE_TRIES: tried again later
                raise removed_meanwhile(full) from exc
            except OSError as exc:
                raise classify(exc, f"upload {full}") from exc
        finally:
            src.close()
        return UploadResult(bytes_sent=sent, resumed_from=offset)

    def _discard_other_partials(self, folder: str, name: str, partial: str) -> None:
        keep = os.path.basename(partial)
        for entry in os.listdir(folder):
            if entry != keep and _partial.belongs_to(name, entry):
                log.info("discarding partial %s of an older generation", os.path.join(folder, entry))
                os.unlink(os.path.join(folder, entry))

    @staticmethod
    def _resume_point(partial: str, src: BinaryIO) -> int:
        try:
            length = os.path.getsize(partial)
        except FileNotFoundError:
            return 0
        offset = _partial.resume_offset(length, CHUNK)
        if offset:
            with open(partial, "rb") as f:
                f.seek(offset - CHUNK)
                remote_tail = f.read(CHUNK)
            try:
                src.seek(offset - CHUNK)
                local_tail = src.read(CHUNK)
            except OSError as exc:
                raise LocalFileError(f"cannot read local file: {exc.strerror or exc}") from exc
            if remote_tail != local_tail:
                log.info("partial %s does not match the local bytes; starting over", partial)
                offset = 0
        log.debug("partial %s: %d bytes present, resuming at %d", partial, length, offset)
        return offset

    @staticmethod
    def _copy(src: BinaryIO, partial: str, offset: int, progress: ProgressFn) -> int:
        sent = 0
        mode = "r+b" if offset and os.path.exists(partial) else "wb"
        with open(partial, mode) as dst:
            dst.truncate(offset)
            dst.seek(offset)
            try:
                src.seek(offset)
            except OSError as exc:
                raise LocalFileError(f"cannot read local file: {exc.strerror or exc}") from exc
            progress(offset)
            while True:
                try:
                    block = src.read(CHUNK)
                except OSError as exc:
                    raise LocalFileError(f"cannot read local file: {exc.strerror or exc}") from exc
                if not block:
                    break
                dst.write(block)
                sent += len(block)
                progress(offset + sent)
            dst.flush()
            os.fsync(dst.fileno())
        return sent

    def delete(self, path: str) -> bool:
        full = self._full(path)
        self._require_base()
        try:
            os.unlink(full)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise classify(exc, f"delete {full}") from exc
        self._prune(path)
        return True

    def _prune(self, path: str) -> None:
        """Remove the folders above ``path`` that are empty now, up to the base (not included)."""
        folder = posixpath.dirname(validate_rel_path(path))
        while folder:
            try:
                os.rmdir(self._full(folder))  # refused while the folder holds anything
            except OSError:
                return
            folder = posixpath.dirname(folder)

    def move(self, src: str, dst: str) -> None:
        full_src, full_dst = self._full(src), self._full(dst)
        self._require_base()
        if not os.path.isfile(full_src):
            raise RemoteRefused(f"cannot move {src!r}: it is not on the target")
        try:
            for attempt in range(FOLDER_RACE_TRIES):
                _make_folders(os.path.dirname(full_dst))
                try:
                    os.replace(full_src, full_dst)
                    break
                except FileNotFoundError:  # dst's folder removed as emptied since it was made
                    if attempt == FOLDER_RACE_TRIES - 1 or not os.path.lexists(full_src):
                        raise
                except IsADirectoryError:  # a folder replaced locally by a file moved there
                    _remove_empty_folder(full_dst)
                    os.replace(full_src, full_dst)
                    break
        except OSError as exc:
            raise classify(exc, f"move {src!r} to {dst!r}") from exc
        self._prune(src)

    def move_dir(self, src: str, dst: str) -> None:
        full_src, full_dst = self._full(src), self._full(dst)
        self._require_base()
        if os.path.lexists(full_dst):
            super().move_dir(src, dst)  # merge into the existing folder, file by file
            return
        try:
            _make_folders(os.path.dirname(full_dst))
            os.rename(full_src, full_dst)
        except FileNotFoundError as exc:
            raise RemoteRefused(f"cannot move folder {src!r}: it is not on the target") from exc
        except OSError as exc:
            raise classify(exc, f"move folder {src!r} to {dst!r}") from exc
        self._prune(src)

    def uploads_under(self, prefix: str) -> Sequence[str]:
        top = self._full(prefix)
        self._require_base()
        found = set()
        for folder, _dirs, files in os.walk(top):
            for name in files:
                final = _partial.final_name(name)
                if final is not None:
                    found.add(os.path.relpath(os.path.join(folder, final), self.base).replace(os.sep, "/"))
        return sorted(found)

    def list(self, prefix: str = "") -> Iterator[RemoteEntry]:
        top = self._full(prefix)
        self._require_base()
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                if _partial.is_partial(name):
                    continue
                full = os.path.join(folder, name)
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                yield _entry(os.path.relpath(full, self.base).replace(os.sep, "/"), st)

    def cleanup(self, path: str) -> None:
        full = self._full(path)
        folder, name = os.path.split(full)
        removed = False
        try:
            for entry in os.listdir(folder):
                if _partial.belongs_to(name, entry):
                    os.unlink(os.path.join(folder, entry))
                    removed = True
        except FileNotFoundError:
            return
        except OSError as exc:
            raise classify(exc, f"cleanup {full}") from exc
        if removed:
            self._prune(path)


def open_backend(target: str, settings: BackendSettings) -> LocalBackend:
    """Entry point for ``file:///absolute/path``."""
    parts = urlsplit(target)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ConfigError(f"SKYNET_TARGET: expected file:///absolute/path, got {target!r}")
    return LocalBackend(unquote(parts.path))


def _entry(path: str, st: os.stat_result) -> RemoteEntry:
    return RemoteEntry(
        path=path,
        size=st.st_size,
        mtime=st.st_mtime,
        atime=st.st_atime,
        generation=Generation(size=st.st_size, mtime_ns=st.st_mtime_ns),
    )


def _make_folders(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        # A file replaced locally by a folder of the same name: its old copy is still here.
        raise RemoteConflict(f"{folder}: a file on the target, not a folder, where the local has one") from exc


def _remove_empty_folder(path: str) -> None:
    """A folder standing where a file is to go gives way if empty; with files still in it, the
    file waits for their deletes."""
    try:
        os.rmdir(path)
    except OSError as exc:
        raise RemoteConflict(f"{path} is a folder with files on the target where the local has a file") from exc

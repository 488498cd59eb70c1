"""The uploader's read-only view of the watched folder."""

from __future__ import annotations

import os
import stat

from skynet.common.errors import LocalFileError
from skynet.common.messages import Generation
from skynet.common.paths import local_path


class LocalFolder:
    def __init__(self, root: str) -> None:
        self.root = root
        self._identity = self._root_identity()

    def _root_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.root)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def root_ok(self) -> bool:
        """False if the folder is gone, unmounted or replaced since start: deletes must wait."""
        ident = self._root_identity()
        return ident is not None and ident == self._identity

    def accept_current_root(self) -> None:
        """An admin released the held deletes: the folder there now is the one to guard."""
        self._identity = self._root_identity()

    def path(self, rel: str) -> str:
        return local_path(self.root, rel)

    def generation(self, rel: str) -> Generation | None:
        """The file's generation now; None if absent. LocalFileError if it is not a regular file."""
        try:
            st = os.lstat(self.path(rel))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as exc:
            raise LocalFileError(f"cannot stat {rel!r}: {exc.strerror or exc}") from exc
        if stat.S_ISLNK(st.st_mode):
            raise LocalFileError(f"{rel!r} is a symlink: skynet never follows links")
        if stat.S_ISDIR(st.st_mode):
            return None
        if not stat.S_ISREG(st.st_mode):
            raise LocalFileError(f"{rel!r} is not a regular file (FIFO, socket or device): never opened")
        return Generation(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)

    def is_dir(self, rel: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self.path(rel)).st_mode)
        except OSError:
            return False

    def files_under(self, rel: str) -> list[str]:
        """Relative paths of regular files below folder ``rel`` (symlinks not followed)."""
        out: list[str] = []
        stack = [rel]
        while stack:
            d = stack.pop()
            try:
                with os.scandir(self.path(d) if d else self.root) as it:
                    entries = list(it)
            except OSError:
                continue
            for e in entries:
                child = f"{d}/{e.name}" if d else e.name
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(child)
                    elif e.is_file(follow_symlinks=False):
                        out.append(child)
                except OSError:
                    continue
        return out

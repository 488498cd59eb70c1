"""Which paths the watcher ignores: temporary, partial and swap files, plus ``SKYNET_IGNORE``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable

DEFAULT_IGNORES: tuple[str, ...] = (
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "~$*",
    ".~lock.*#",
    "4913",
    ".DS_Store",
    "Thumbs.db",
    "*.skynet-partial",
    ".skynet-*",
    ".goutputstream-*",
    ".sb-*",
    "*.kate-swp",
)


class IgnoreRules:
    """A path is ignored when its basename, or its whole relative path, matches a glob.

    A folder that matches is ignored with everything below it.
    """

    def __init__(self, extra: Iterable[str] = ()) -> None:
        globs = [*DEFAULT_IGNORES, *extra]
        self._name_re = re.compile("|".join(fnmatch.translate(g) for g in globs if "/" not in g))
        path_globs = [g.strip("/") for g in globs if "/" in g]
        self._path_re = re.compile("|".join(fnmatch.translate(g) for g in path_globs)) if path_globs else None

    def ignored_names(self, names: list[str]) -> set[str]:
        """The names of one folder listing that a basename glob matches (one pass, no Python
        call per name); a walk that already knows the folder itself is not ignored needs only
        these and :attr:`path_match`."""
        return set(filter(self._name_re.match, names))

    @property
    def path_match(self) -> Callable[[str], object] | None:
        """Matches a whole relative path against the globs that hold a ``/``; None without any."""
        return self._path_re.match if self._path_re is not None else None

    def ignored(self, rel: str) -> bool:
        if not rel:
            return False
        parts = rel.split("/")
        if any(self._name_re.match(part) for part in parts):
            return True
        if self._path_re is not None:
            for i in range(1, len(parts) + 1):
                if self._path_re.match("/".join(parts[:i])):
                    return True
        return False

"""Files reported gone without inotify saying where to: their delete waits a moment (pure logic).

inotify pairs the two halves of a rename only when both folders are watched. A file moved into a
folder made a moment before (``mkdir archive && mv big.mov archive/``) lands there before the
watch on the new folder exists: the watcher hears that ``big.mov`` went, and finds
``archive/big.mov`` by listing the new folder. A chain of renames faster than the settle period
(``a → b → c``) likewise ends with ``a`` gone and ``c`` new. The engine pairs the two by the
file's generation (a rename keeps size, mtime and inode) and publishes a move. For that the gone
path's delete must not go out before its new path is found: it waits here for a short while, and
while a folder is being listed, a little longer. A folder gone the same way (moved into a new
folder) waits likewise before its files are deleted, so that each can be found at its new path.
"""

from __future__ import annotations

PAIR_WINDOW_S = 0.2  # a delete waits this long for the other half of its move
PAIR_WAIT_MAX_S = 2.0  # ... and, while a folder is being listed, up to this long


class Vanished:
    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def __bool__(self) -> bool:
        return bool(self._at)

    def note(self, rel: str, now: float) -> None:
        """``rel`` was reported gone at ``now``, with no word of where it went."""
        self._at.setdefault(rel, now)

    def forget(self, rel: str) -> None:
        self._at.pop(rel, None)

    def paths(self) -> list[str]:
        return list(self._at)

    def should_wait(self, rel: str, now: float, listing: bool) -> bool:
        """Should the delete of ``rel`` wait for a file that may be ``rel`` moved elsewhere?
        ``listing``: a folder is being listed, whose files may include it."""
        at = self._at.get(rel)
        if at is None:
            return False
        age = now - at
        if age < PAIR_WINDOW_S or (listing and age < PAIR_WAIT_MAX_S):
            return True
        del self._at[rel]
        return False

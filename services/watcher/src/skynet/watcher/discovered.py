"""Files a scan found that the index never held, waiting for their first publish.

They skip the outbox. The outbox is there for changes nothing else would remember; a file the
index has never held is remembered by the folder itself: its index row is written only once the
broker has confirmed its action, so a crash, a stop or a broker outage before then loses nothing,
as the next scan finds it again. On a first start that is every file of the tree, and what a
scan then writes to SQLite is one row per file instead of an outbox row, its deletion and an
index row (bench/NOTES.md has the figures).

Filled by the gate's thread (scans), drained by the outbox pump's (deque appends and pops are
atomic). ``current`` says whether a path still holds the generation that was found: a file moved,
deleted or changed meanwhile is published by its own, newer action instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from skynet.watcher.scanner import GenTuple

Found = tuple[str, GenTuple]


class Discovered:
    def __init__(self, current: Callable[[str, GenTuple], bool]) -> None:
        self.current = current
        self._queue: deque[Found] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def extend(self, found: Iterable[Found]) -> None:
        self._queue.extend(found)

    def take(self, limit: int) -> list[Found]:
        """Up to ``limit`` files, oldest first, leaving out those no longer current."""
        out: list[Found] = []
        pop, current = self._queue.popleft, self.current
        while len(out) < limit:
            try:
                rel, gen = pop()
            except IndexError:
                break
            if current(rel, gen):
                out.append((rel, gen))
        return out

    def put_back(self, found: list[Found]) -> None:
        """Return what could not be published, in front, in its order."""
        self._queue.extendleft(reversed(found))

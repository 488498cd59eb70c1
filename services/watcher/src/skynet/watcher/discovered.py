"""Files a scan found that the index never held, waiting for their first publish.

They skip the outbox. The outbox is there for changes nothing else would remember; a file the
index has never held is remembered by the folder itself: its index row is written only once the
broker has confirmed its action, so a crash, a stop or a broker outage before then loses nothing,
as the next scan finds it again. On a first start that is every file of the tree: the SQLite work
per file drops from an outbox row, its deletion and an index row, all before the scan could
finish, to one index row written by the pump (bench/NOTES.md has the figures).

Filled by the gate's thread (scans), drained by the outbox pump's. ``current`` says whether a path
still holds the generation that was found: a file moved, deleted or changed meanwhile is published
by its own, newer action instead (a folder's move re-queues what it takes along, see the engine).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

from skynet.watcher.scanner import Found, GenTuple


class Discovered:
    def __init__(self, current: Callable[[str, GenTuple], bool]) -> None:
        self.current = current
        self._queue: deque[Found] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._queue)

    def extend(self, found: Iterable[Found]) -> None:
        with self._lock:
            self._queue.extend(found)

    def take(self, limit: int) -> list[Found]:
        """Up to ``limit`` files, oldest first, leaving out those no longer current."""
        out: list[Found] = []
        current = self.current
        with self._lock:
            pop = self._queue.popleft
            while len(out) < limit and self._queue:
                rel, gen = pop()
                if current(rel, gen):
                    out.append((rel, gen))
        return out

    def take_under(self, prefix: str) -> list[Found]:
        """Remove and return the files below folder ``prefix`` (that folder was moved or deleted)."""
        below = prefix + "/"
        with self._lock:
            taken = [f for f in self._queue if f[0].startswith(below)]
            if taken:
                self._queue = deque(f for f in self._queue if not f[0].startswith(below))
        return taken

    def put_back(self, found: list[Found]) -> None:
        """Return what could not be published, in front, in its order."""
        with self._lock:
            self._queue.extendleft(reversed(found))

"""Per-path coalescing of event bursts (pure logic, no I/O).

Every raw event on a path pushes its deadline back by the settle period; a path becomes *due*
once it has been quiet for the settle period and is not open for writing. A file whose writer
keeps it open but stops writing is released after ``max_open_wait_s`` (log files).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Pending:
    first_seen: float
    last_event: float
    writing: bool = False
    closed_seen: bool = False  # a close-after-write was seen: no need to ask who has it open
    snapshot: tuple[int, int] | None = None  # (size, mtime_ns) at the last check, for polling mode
    not_before: float = 0.0
    announced: bool = False  # a "waiting" event was sent for it
    recheck: bool = False  # its mode, owner or times changed: act even if the index has its generation
    # Its bytes were written (inotify's IN_MODIFY): the content may differ even where size, mtime
    # and inode are back to what was last sent (mtime restored by the writer, or two writes of one
    # size within one tick of a coarse kernel clock).
    modified: bool = False


class Coalescer:
    def __init__(self, settle_s: float, max_open_wait_s: float) -> None:
        self.settle_s = settle_s
        self.max_open_wait_s = max_open_wait_s
        self._pending: dict[str, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: str) -> bool:
        return path in self._pending

    def get(self, path: str) -> Pending | None:
        return self._pending.get(path)

    def touch(
        self, path: str, now: float, writing: bool | None = None, recheck: bool = False, modified: bool = False
    ) -> bool:
        """Record an event on ``path``; returns True if the path was not pending before.

        ``writing`` is True for a write (modify/create), False for a close after writing, None
        for an event that says nothing about writers (attributes, a scan, a move). ``recheck``
        (attributes changed) makes the path count as changed even where its generation did not;
        ``modified`` (its bytes were written) makes it count as new content even then.
        """
        entry = self._pending.get(path)
        new = entry is None
        if entry is None:
            entry = self._pending[path] = Pending(first_seen=now, last_event=now)
        entry.last_event = now
        entry.recheck = entry.recheck or recheck
        entry.modified = entry.modified or modified
        if writing is not None:
            entry.writing = writing
            if not writing:
                entry.closed_seen = True
        return new

    def postpone(self, path: str, until: float) -> None:
        entry = self._pending.get(path)
        if entry is not None:
            entry.not_before = max(entry.not_before, until)

    def forget(self, path: str) -> Pending | None:
        return self._pending.pop(path, None)

    def take_under(self, prefix: str) -> list[str]:
        """Remove and return every pending path below folder ``prefix``."""
        start = prefix + "/"
        found = [p for p in self._pending if p.startswith(start)]
        for p in found:
            del self._pending[p]
        return found

    def _ready_at(self, entry: Pending) -> float:
        quiet = entry.last_event + self.settle_s
        if entry.writing:
            quiet = max(quiet, entry.last_event + self.max_open_wait_s)
        return max(quiet, entry.not_before)

    def due(self, now: float) -> list[str]:
        """Paths ready to be checked now (oldest first)."""
        ready = [(e.first_seen, p) for p, e in self._pending.items() if self._ready_at(e) <= now]
        ready.sort()
        return [p for _, p in ready]

    def next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return min(self._ready_at(e) for e in self._pending.values())

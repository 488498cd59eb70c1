"""The watcher's in-memory index: the generation last published for each path (pure logic).

Beside it, which path holds each inode, so that a file found under a new path can be recognised
as an indexed file moved where inotify could not see it go (see :mod:`skynet.watcher.vanished`).
Every change goes through this class, so the two maps never disagree. SQLite holds the same index
(:mod:`skynet.watcher.store`); this one is what the gate compares against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, KeysView

from skynet.watcher.scanner import GenTuple


class Index:
    def __init__(self, gens: dict[str, GenTuple]) -> None:
        self._gens = gens
        self._inodes: dict[int, str] = {gen[2]: rel for rel, gen in gens.items()}
        # The dict's own get: the start-up scan compares 200,000 files with one call each, and
        # the outbox pump reads it from its thread (one dict lookup, atomic under the GIL).
        self.get: Callable[[str], GenTuple | None] = gens.get

    def __contains__(self, rel: object) -> bool:
        return rel in self._gens

    def __iter__(self) -> Iterator[str]:
        return iter(self._gens)

    def keys(self) -> KeysView[str]:
        return self._gens.keys()

    def set(self, rel: str, gen: GenTuple) -> None:
        old = self._gens.get(rel)
        if old is not None and old[2] != gen[2] and self._inodes.get(old[2]) == rel:
            del self._inodes[old[2]]
        self._gens[rel] = gen
        self._inodes[gen[2]] = rel

    def drop(self, rel: str) -> GenTuple | None:
        gen = self._gens.pop(rel, None)
        if gen is not None and self._inodes.get(gen[2]) == rel:
            del self._inodes[gen[2]]
        return gen

    def move(self, src: str, dst: str) -> GenTuple | None:
        """``src``'s entry becomes ``dst``'s (a rename keeps the generation); returns it."""
        gen = self.drop(src)
        if gen is not None:
            self.set(dst, gen)
        return gen

    def under(self, folder: str) -> list[str]:
        prefix = folder + "/"
        return [p for p in self._gens if p.startswith(prefix)]

    def has_under(self, folder: str) -> bool:
        prefix = folder + "/"
        return any(p.startswith(prefix) for p in self._gens)

    def drop_under(self, folder: str) -> list[str]:
        gone = self.under(folder)
        for p in gone:
            self.drop(p)
        return gone

    def move_under(self, src: str, dst: str) -> list[str]:
        """Every entry under folder ``src`` moves under ``dst``; returns the old paths."""
        moved = self.under(src)
        for p in moved:
            self.move(p, dst + p[len(src) :])
        return moved

    def path_of(self, gen: GenTuple) -> str | None:
        """The path the index holds with exactly this generation (same inode, size and mtime)."""
        rel = self._inodes.get(gen[2])
        if rel is None or self._gens.get(rel) != gen:
            return None
        return rel

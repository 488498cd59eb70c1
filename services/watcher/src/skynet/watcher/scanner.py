"""Walking the watched folder: regular files only, symlinks never followed, ignores applied."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from skynet.common.errors import InvalidPath
from skynet.common.paths import validate_rel_path
from skynet.watcher.filters import IgnoreRules

log = logging.getLogger(__name__)

GenTuple = tuple[int, int, int]  # (size, mtime_ns, inode): the in-memory form of a Generation


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def gen_of(st: os.stat_result) -> GenTuple:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def walk(root: str, rules: IgnoreRules, under: str = "") -> Iterator[tuple[str, GenTuple] | Skipped]:
    """Yield ``(rel_path, generation)`` for every regular file below ``root/under``.

    Symlinks, FIFOs, sockets and devices are yielded as :class:`Skipped` (never opened, never
    followed). Names that cannot be mapped are yielded as Skipped too.
    """
    stack = [under]
    while stack:
        rel_dir = stack.pop()
        full_dir = os.path.join(root, *rel_dir.split("/")) if rel_dir else root
        try:
            with os.scandir(full_dir) as it:
                entries = list(it)
        except FileNotFoundError:
            continue
        except OSError as exc:
            yield Skipped(rel_dir, f"cannot list folder: {exc.strerror or exc}")
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                validate_rel_path(rel)
            except InvalidPath as exc:
                yield Skipped(rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), exc.reason)
                continue
            if rules.ignored(rel):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                yield Skipped(rel, f"cannot stat: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
            elif stat.S_ISREG(st.st_mode):
                yield rel, gen_of(st)
            elif stat.S_ISLNK(st.st_mode):
                yield Skipped(rel, "symlink: not followed (skynet never follows links)")
            else:
                yield Skipped(rel, "not a regular file (FIFO, socket or device): never opened")

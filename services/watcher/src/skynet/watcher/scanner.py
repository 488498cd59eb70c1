"""Walking the watched folder: regular files only, symlinks never followed, ignores applied."""

from __future__ import annotations

import logging
import operator
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from skynet.common.errors import InvalidPath
from skynet.common.paths import plain_names, validate_child, validate_rel_path
from skynet.watcher.filters import IgnoreRules

log = logging.getLogger(__name__)

GenTuple = tuple[int, int, int]  # (size, mtime_ns, inode): the in-memory form of a Generation


SYMLINK = "symlink: not followed (skynet never follows links)"


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def gen_of(st: os.stat_result) -> GenTuple:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


_name = operator.attrgetter("name")


def walk(root: str, rules: IgnoreRules, under: str = "") -> Iterator[tuple[str, GenTuple] | Skipped]:
    """Yield ``(rel_path, generation)`` for every regular file below ``root/under``.

    Symlinks, FIFOs, sockets and devices are yielded as :class:`Skipped` (never opened, never
    followed). Names that cannot be mapped are yielded as Skipped too.

    Cost per entry is kept to what ``find`` pays plus one ``stat`` per regular file: each name is
    checked once (its folder was checked when the walk went into it), the entry type comes from
    the directory listing, and folders are not stat'ed.

    Each folder's entries are taken in name order (its files, then its subfolders, depth first),
    not in the listing's hash order: the index and outbox rows of a first start then reach
    SQLite's B-trees nearly in key order, which makes writing them about a third cheaper, and a
    first sync uploads in an order people can follow.
    """
    if under:
        try:
            validate_rel_path(under)
        except InvalidPath as exc:
            yield Skipped(under.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), exc.reason)
            return
        if rules.ignored(under):
            return
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
        entries.sort(key=_name)
        checked = plain_names(rel_dir, [entry.name for entry in entries])  # one check per folder
        prefix = f"{rel_dir}/" if rel_dir else ""
        folders: list[str] = []
        for entry in entries:
            name = entry.name
            if checked:
                rel = prefix + name
            else:
                try:
                    rel = validate_child(rel_dir, name)
                except InvalidPath as exc:
                    shown = prefix + name
                    yield Skipped(shown.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), exc.reason)
                    continue
            if rules.ignored_entry(rel, name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):  # the type comes from the listing
                    folders.append(rel)
                    continue
                if entry.is_symlink():
                    yield Skipped(rel, SYMLINK)
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                yield Skipped(rel, f"cannot stat: {exc.strerror or exc}")
                continue
            if stat.S_ISREG(st.st_mode):
                yield rel, gen_of(st)
            elif stat.S_ISDIR(st.st_mode):  # replaced by a folder since the listing
                folders.append(rel)
            elif stat.S_ISLNK(st.st_mode):
                yield Skipped(rel, SYMLINK)
            else:
                yield Skipped(rel, "not a regular file (FIFO, socket or device): never opened")
        stack.extend(reversed(folders))  # popped in name order

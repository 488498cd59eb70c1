"""Sources that send to the same place: two sources whose uploaders name the same target, or one
inside the other, overwrite each other's files, and in ``mirror`` mode a full rescan of one
deletes the other's. Pure logic over the live uploaders' (source, target) pairs."""

from __future__ import annotations

from collections.abc import Iterable

from skynet.api.models import TargetConflict


def _norm(target: str) -> str:
    while target.endswith(("/", "/.")):
        target = target[:-2] if target.endswith("/.") else target[:-1]
    return target


def _overlap(a: str, b: str) -> bool:
    return a == b or b.startswith(a + "/") or a.startswith(b + "/")


def conflicts(pairs: Iterable[tuple[str, str]]) -> list[TargetConflict]:
    """Every two sources with the same or nested targets, once, in name order."""
    targets = sorted({(source, _norm(target)) for source, target in pairs})
    found = []
    for i, (sa, ta) in enumerate(targets):
        for sb, tb in targets[i + 1 :]:
            if sa != sb and _overlap(ta, tb):
                found.append(TargetConflict(sources=[sa, sb], targets=[ta, tb]))
    return found

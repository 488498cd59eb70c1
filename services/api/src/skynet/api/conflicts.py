"""Misconfigurations the status warns of, as pure logic over the live workers' rows.

* Two sources whose uploaders name the same target, or one inside the other, overwrite each
  other's files, and in ``mirror`` mode a full rescan of one deletes the other's.
* Two watchers of one source, running at the same time, publish actions for their own folders
  into the one queue the source's uploaders read.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from skynet.api.models import TargetConflict, WatcherConflict


def _norm(target: str) -> str:
    while target.endswith(("/", "/.")):
        target = target[:-2] if target.endswith("/.") else target[:-1]
    return target


def _overlap(a: str, b: str) -> bool:
    return a == b or b.startswith(a + "/") or a.startswith(b + "/")


def shared_targets(pairs: Iterable[tuple[str, str]]) -> list[TargetConflict]:
    """Every two sources with the same or nested targets, once, in name order."""
    targets = sorted({(source, _norm(target)) for source, target in pairs})
    found = []
    for i, (sa, ta) in enumerate(targets):
        for sb, tb in targets[i + 1 :]:
            if sa != sb and _overlap(ta, tb):
                found.append(TargetConflict(sources=[sa, sb], targets=[ta, tb]))
    return found


WatcherRow = tuple[str, str, datetime | None, datetime]  # source, worker, started_at, last_seen


def doubled_watchers(rows: Iterable[WatcherRow]) -> list[WatcherConflict]:
    """Every source with watchers that ran at the same time, each started before the other's
    latest heartbeat. A watcher that crashed and the one started in its place (under another
    name, in a new pod) are not two: the first was last seen before the second started."""
    by_source: dict[str, list[WatcherRow]] = {}
    for row in rows:
        by_source.setdefault(row[0], []).append(row)
    found = []
    for source, watchers in sorted(by_source.items()):
        together = {
            name
            for _, name, started, seen in watchers
            for _, other, other_started, other_seen in watchers
            if other != name
            and (started is None or started < other_seen)
            and (other_started is None or other_started < seen)
        }
        if together:
            found.append(WatcherConflict(source=source, watchers=sorted(together)))
    return found

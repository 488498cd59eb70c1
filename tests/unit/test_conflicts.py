"""Two sources sending to one place, two watchers of one source: found, and nothing else is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from skynet.api.conflicts import doubled_watchers, shared_targets


def test_the_same_or_a_nested_target_of_two_sources_is_a_conflict_and_nothing_else_is() -> None:
    pairs = [
        ("photos", "s3://bkt/backup"),
        ("photos", "s3://bkt/backup"),  # a second uploader of the same source: no conflict
        ("cams", "s3://bkt/backup/cams"),  # inside photos' target
        ("docs", "s3://bkt/backup-docs"),  # a sibling that only shares a prefix of the name
        ("logs", "sftp://u@h:22/srv/logs/"),
        ("audit", "sftp://u@h:22/srv/logs"),  # the same folder, spelled with a trailing slash
        ("home", "sftp://u@h:22/~/."),
        ("home2", "sftp://u@h:22/~/x"),
    ]
    found = {(tuple(c.sources), tuple(c.targets)) for c in shared_targets(pairs)}
    assert found == {
        (("cams", "photos"), ("s3://bkt/backup/cams", "s3://bkt/backup")),
        (("audit", "logs"), ("sftp://u@h:22/srv/logs", "sftp://u@h:22/srv/logs")),
        (("home", "home2"), ("sftp://u@h:22/~", "sftp://u@h:22/~/x")),
    }


def test_one_source_with_several_uploaders_on_one_target_is_no_conflict() -> None:
    assert shared_targets([("a", "file:///m"), ("a", "file:///m"), ("b", "file:///n")]) == []


def test_watchers_of_one_source_running_together_conflict_and_a_crashed_ones_successor_does_not() -> None:
    t0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def at(s: float) -> datetime:
        return t0 + timedelta(seconds=s)

    rows = [
        ("photos", "watcher-a", at(0), at(100)),
        ("photos", "watcher-b", at(50), at(101)),  # started while a ran: two at once
        ("cams", "watcher-old", at(0), at(40)),  # crashed at 40 s, still within the stale limit
        ("cams", "watcher-new", at(45), at(60)),  # its successor, in a new pod
        ("docs", "watcher-x", None, at(10)),  # an older watcher that did not say when it started
        ("docs", "watcher-y", at(5), at(12)),
    ]
    found = {c.source: c.watchers for c in doubled_watchers(rows)}
    assert found == {"photos": ["watcher-a", "watcher-b"], "docs": ["watcher-x", "watcher-y"]}

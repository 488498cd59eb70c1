"""Two sources sending to one place is found, whatever the spelling of the nesting."""

from __future__ import annotations

from skynet.api.targets import conflicts


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
    found = {(tuple(c.sources), tuple(c.targets)) for c in conflicts(pairs)}
    assert found == {
        (("cams", "photos"), ("s3://bkt/backup/cams", "s3://bkt/backup")),
        (("audit", "logs"), ("sftp://u@h:22/srv/logs", "sftp://u@h:22/srv/logs")),
        (("home", "home2"), ("sftp://u@h:22/~", "sftp://u@h:22/~/x")),
    }


def test_one_source_with_several_uploaders_on_one_target_is_no_conflict() -> None:
    assert conflicts([("a", "file:///m"), ("a", "file:///m"), ("b", "file:///n")]) == []

"""Prometheus text rendering and cursor encoding: pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from skynet.api import metrics, queries
from skynet.api.models import Status, Throughput


def test_label_values_are_escaped_and_every_family_has_help_and_type() -> None:
    st = Status(
        generated_at=datetime.now(UTC),
        files={"done": 3},
        files_total=3,
        sources={'we"ird\\src': {"done": 3}},
        done_last_minute=Throughput(files=1, bytes=10),
        active_transfers=0,
        workers_alive=0,
        queues={"skynet.dead.x": 2, "skynet.retry.x.0": None},
        dead_letters=2,
    )
    text = metrics.render(st, [], 42, metrics.RequestCounter())
    assert 'skynet_files{source="we\\"ird\\\\src",state="done"} 3' in text
    assert 'skynet_queue_messages{queue="skynet.dead.x"} 2' in text
    assert "skynet.retry.x.0" not in text
    assert "skynet_events_last_seq 42" in text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names == {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    cursor = queries.encode_cursor("a/b é.txt", "src")
    assert queries.decode_cursor(cursor, 2) == ["a/b é.txt", "src"]
    for bad in ("!!!", queries.encode_cursor("only-one"), queries.encode_cursor(1, 2), "e30"):
        with pytest.raises(queries.BadCursor):
            queries.decode_cursor(bad, 2)

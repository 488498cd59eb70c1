"""The watcher's gate on its own (real folder, real SQLite, no broker): a write it hears only after
it published the file is not taken for an in-place edit, and a real edit with its mtime put back is.

inotify's events may reach the gate after a scan has already stat'ed and published the file they
describe (a folder's files written before its watch was armed, a busy observer). Sending such a
file forced would upload it a second time, and discard the partial of the first upload under
whichever replica is sending it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skynet.common.messages import PathChanged
from skynet.watcher import engine as engine_module
from skynet.watcher.store import Store
from tests.fixtures.common import wait_for
from tests.fixtures.gate import Gate, outbox, running_gate, written


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    with running_gate(tmp_path) as running:
        yield running


def published(store: Store) -> list[PathChanged]:
    actions = outbox(store)
    assert all(isinstance(a, PathChanged) for a in actions)
    return actions  # type: ignore[return-value]


def published_new(gate: Gate, name: str) -> Path:
    """A new file written, heard and published (the only action in the outbox)."""
    engine, store, watch = gate
    f = watch / name
    f.write_bytes(b"x" * 5000)
    written(engine, f)
    wait_for(lambda: len(published(store)) == 1, 10, what="the file published")
    return f


def test_a_write_heard_after_its_file_was_published_is_not_an_edit(gate: Gate) -> None:
    engine, store, watch = gate
    f = published_new(gate, "late.bin")
    written(engine, f)  # the same write, heard late: nothing changed since it was published
    (watch / "marker.bin").write_bytes(b"m")
    written(engine, watch / "marker.bin")  # handled after the late events, checked with them or after
    wait_for(lambda: any(a.path == "marker.bin" for a in published(store)), 10, what="the marker published")
    assert [(a.path, a.force) for a in published(store)] == [("late.bin", False), ("marker.bin", False)]


def test_bytes_rewritten_with_size_and_mtime_put_back_are_sent_forced(gate: Gate) -> None:
    engine, store, _watch = gate
    f = published_new(gate, "edited.bin")
    before = os.stat(f)
    with open(f, "r+b") as out:
        out.write(b"y" * 100)
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    written(engine, f)
    # The outbox holds one action per path: the forced one takes the place of the first.
    wait_for(lambda: [a.force for a in published(store)] == [True], 10, what="the edit published forced")


def test_with_a_settle_period_under_one_clock_tick_a_file_waits_for_its_tick_to_end(
    gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """File timestamps come from a coarse clock (one jiffy on Linux). A file published within its
    mtime's tick could be written again in that tick, same size, with nothing to tell the two
    versions apart; so even at settle 0 it waits until the tick is over (here made 1.5 s long)."""
    engine, store, watch = gate
    monkeypatch.setattr(engine_module, "TIMESTAMP_TICK_NS", 1_500_000_000)
    f = watch / "tick.bin"
    f.write_bytes(b"x" * 5000)
    written(engine, f)
    time.sleep(0.5)
    assert published(store) == [], "published within its mtime's clock tick"
    wait_for(lambda: len(published(store)) == 1, 10, what="the file published once its tick is over")

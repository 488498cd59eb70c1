"""The watcher answering an uploader's recheck request (the gate on its own: real folder, real
SQLite, no broker).

An uploader whose upload of a file completed after the file was renamed or deleted asks the
watcher to look at it again: the rename or delete may have been applied, by another uploader, to
a remote that did not hold the file yet. The watcher sends the delete again when the file is gone,
through the same safety rules as any delete, and does nothing when it is there or its own change
is still to come.
"""

from __future__ import annotations

from pathlib import Path

from skynet.common.messages import PathChanged
from skynet.watcher.store import Store
from tests.fixtures.common import wait_for
from tests.fixtures.gate import Gate, outbox, running_gate, written


def after_a_marker(gate: Gate) -> list[tuple[str, bool]]:
    """What the gate published once a marker file written after the requests is published: the
    gate handles its queue in order, so the requests were handled by then. (path, is a delete)"""
    engine, store, watch = gate
    (watch / "marker.bin").write_bytes(b"m")
    written(engine, watch / "marker.bin")
    wait_for(lambda: any(getattr(a, "path", "") == "marker.bin" for a in outbox(store)), 10, what="the marker")
    found = []
    for action in outbox(store):
        assert isinstance(action, PathChanged)
        if action.path != "marker.bin":
            found.append((action.path, action.generation is None))
    return found


def sent_all(store: Store) -> None:
    """The pump's part: every outbox row is on the broker."""
    store.confirmed(store.pending(100))


def test_a_file_gone_here_is_deleted_again_and_one_still_here_is_left_alone(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="mirror") as gate:
        engine, store, watch = gate
        (watch / "still-here.bin").write_bytes(b"s")
        written(engine, watch / "still-here.bin")
        wait_for(lambda: len(outbox(store)) == 1, 10, what="the file published")
        sent_all(store)
        engine.recheck("renamed-away.bin")  # gone, and the watcher sent its move long ago
        engine.recheck("still-here.bin")
        engine.recheck("sub/never-seen.bin")  # its folder is gone too
        assert sorted(after_a_marker(gate)) == [("renamed-away.bin", True), ("sub/never-seen.bin", True)]


def test_a_file_whose_own_delete_is_still_to_come_is_left_to_it(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="mirror") as gate:
        engine, store, watch = gate
        f = watch / "going.bin"
        f.write_bytes(b"g")
        written(engine, f)
        wait_for(lambda: len(outbox(store)) == 1, 10, what="the file published")
        sent_all(store)
        f.unlink()  # inotify's word of it has not reached the gate yet
        engine.recheck("going.bin")
        assert after_a_marker(gate) == []


def test_keep_mode_sends_no_delete(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="keep") as gate:
        gate[0].recheck("gone.bin")
        assert after_a_marker(gate) == []


def test_a_recheck_delete_counts_towards_the_burst_threshold_and_is_held_over_it(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="mirror", delete_threshold=2, delete_window_s=60) as gate:
        engine, store, _watch = gate
        for name in ("one.bin", "two.bin", "three.bin"):
            engine.recheck(name)
        assert sorted(after_a_marker(gate)) == [("one.bin", True), ("two.bin", True)]
        assert [path for path, _action, _reason in store.held()] == ["three.bin"]
        engine.recheck("three.bin")  # asked again while held: still held, not sent
        assert sorted(after_a_marker(gate)) == [("one.bin", True), ("two.bin", True)]

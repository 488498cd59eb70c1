"""The watcher answering an uploader's recheck request (the gate on its own: real folder, real
SQLite, no broker).

An uploader whose upload of a file completed after the file (or its folder) was renamed or
deleted asks the watcher to look at it again: the rename or delete may have been applied, by
another worker, to a remote that did not hold the file yet. When the file is gone, the watcher
sends the move again if it holds the uploaded generation under another path, else the delete
(mirror mode, through the same safety rules as any delete); it does nothing when the file is there
or its own change is still to come.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skynet.common.messages import Generation, PathChanged
from skynet.watcher.store import StateUnavailable
from tests.fixtures.common import wait_for
from tests.fixtures.gate import Gate, described, outbox, published_and_sent, running_gate, written


def after_a_marker(gate: Gate) -> list[str]:
    """What the gate published once a marker file written after the requests is published (the
    gate handles its queue in order, so the requests were handled by then): "delete P" or
    "move S -> D"."""
    engine, store, watch = gate
    (watch / "marker.bin").write_bytes(b"m")
    written(engine, watch / "marker.bin")
    wait_for(lambda: any(getattr(a, "path", "") == "marker.bin" for a in outbox(store)), 10, what="the marker")
    return sorted(d for d in described(outbox(store)) if d != "upload marker.bin")


def refusing(monkeypatch: pytest.MonkeyPatch, store: object, method: str, times: int) -> list[int]:
    """Make the store's `method` refuse its first `times` calls as a full state disk does, then
    call through; the returned one-item list counts the refusals so far."""
    real = getattr(store, method)
    refusals = [0]

    def full_disk(*args: Any, **kwargs: Any) -> Any:
        if refusals[0] < times:
            refusals[0] += 1
            raise StateUnavailable("the state folder is full (as the test makes it)")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, method, full_disk)
    return refusals


def generation(path: Path) -> Generation:
    st = path.stat()
    return Generation(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


def test_a_file_gone_here_is_deleted_again_and_one_still_here_is_left_alone(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="mirror") as gate:
        engine = gate[0]
        still_here = published_and_sent(gate, "still-here.bin")
        engine.recheck("deleted.bin", Generation(size=3, mtime_ns=1, inode=99))  # a generation held nowhere
        engine.recheck("still-here.bin", generation(still_here))
        engine.recheck("sub/never-seen.bin", None)  # its folder is gone too
        (gate[2] / "unheard.bin").write_bytes(b"u")  # on the disk, inotify's word of it not in yet
        engine.recheck("unheard.bin", None)
        assert after_a_marker(gate) == ["delete deleted.bin", "delete sub/never-seen.bin"]


@pytest.mark.parametrize("mode", ["mirror", "keep"])
def test_a_file_the_index_holds_under_another_name_is_moved_again_in_either_mode(tmp_path: Path, mode: str) -> None:
    """A folder renamed while its file was being sent: the upload landed under the old folder, and
    the folder's move, applied before, never took the file along. The watcher holds the file's
    generation under the new folder: the move is sent again."""
    with running_gate(tmp_path, delete_mode=mode) as gate:
        clip = published_and_sent(gate, "shoot-2026/clip.bin", b"c" * 5000)
        gate[0].recheck("shoot/clip.bin", generation(clip))
        assert after_a_marker(gate) == ["move shoot/clip.bin -> shoot-2026/clip.bin"]


def test_a_file_whose_own_delete_is_still_to_come_is_left_to_it(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="mirror") as gate:
        f = published_and_sent(gate, "going.bin")
        landed = generation(f)
        f.unlink()  # inotify's word of it has not reached the gate yet
        gate[0].recheck("going.bin", landed)
        assert after_a_marker(gate) == []


def test_keep_mode_sends_no_delete(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="keep") as gate:
        gate[0].recheck("gone.bin", None)
        assert after_a_marker(gate) == []


def test_a_recheck_delete_counts_towards_the_burst_threshold_and_is_held_over_it(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="mirror", delete_threshold=2, delete_window_s=60) as gate:
        engine, store, _watch = gate
        for name in ("one.bin", "two.bin", "three.bin"):
            engine.recheck(name, None)
        assert after_a_marker(gate) == ["delete one.bin", "delete two.bin"]
        assert [path for path, _action, _reason in store.held()] == ["three.bin"]
        engine.recheck("three.bin", None)  # asked again while held: still held, not sent
        assert after_a_marker(gate) == ["delete one.bin", "delete two.bin"]


def test_a_request_is_answered_only_once_its_delete_is_in_the_outbox(tmp_path: Path) -> None:
    """The control listener acknowledges a request when the engine says it is answered: a watcher
    killed before its answer is stored leaves the request queued for the next one."""
    with running_gate(tmp_path, delete_mode="mirror") as gate:
        engine, store, _watch = gate
        seen_then: list[list[str]] = []
        engine.recheck("gone.bin", None, lambda: seen_then.append(described(outbox(store))))
        wait_for(lambda: seen_then, 10, what="the request answered")
        assert seen_then == [["delete gone.bin"]]


def test_a_request_whose_answer_could_not_be_stored_is_answered_once_the_state_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full state disk drops what the gate could not store, and the rescan that follows cannot
    find what a request asked about (the folder is as last published): the request stays
    unanswered, so unacknowledged, until the gate has answered it again and stored that."""
    with running_gate(tmp_path, delete_mode="mirror") as gate:
        engine, store, _watch = gate
        refusals = refusing(monkeypatch, store, "record", times=2)
        answers: list[list[str]] = []
        engine.recheck("gone.bin", None, lambda: answers.append(described(outbox(store))))
        wait_for(lambda: refusals[0] >= 1, 10, what="the first write refused")
        wait_for(lambda: answers, 20, what="the request answered once the state is back")
        assert answers == [["delete gone.bin"]]  # handled again after each refusal, answered once


def test_a_recheck_delete_held_while_the_state_refused_the_hold_is_held_once_it_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the delete threshold, the answer to a request is a hold, written to the state at
    once. A hold the state refused is neither taken as held nor the request answered: both wait
    for the state to be back."""
    with running_gate(tmp_path, delete_mode="mirror", delete_threshold=1, delete_window_s=60) as gate:
        engine, store, _watch = gate
        engine.recheck("one.bin", None)  # the one delete the threshold allows
        assert after_a_marker(gate) == ["delete one.bin"]
        refusals = refusing(monkeypatch, store, "hold", times=1)
        answers: list[list[str]] = []
        engine.recheck("two.bin", None, lambda: answers.append([p for p, _a, _r in store.held()]))
        wait_for(lambda: answers, 20, what="the request answered once the state is back")
        assert refusals[0] == 1
        assert answers == [["two.bin"]]


def test_a_file_missing_on_the_remote_after_its_folders_move_is_sent_again(tmp_path: Path) -> None:
    """Asked without a generation: the uploader found the file here, below a moved folder, and
    not on the remote. Sent again if this watcher sent it, without the generation (the uploader
    asks the remote first); a file it never sent is left to its own events."""
    with running_gate(tmp_path, delete_mode="keep") as gate:
        engine, store, watch = gate
        published_and_sent(gate, "raw-archive/day0/img0.raw", b"i" * 3000)
        (watch / "raw-archive" / "unheard.raw").write_bytes(b"u")
        engine.recheck("raw-archive/day0/img0.raw", None)
        engine.recheck("raw-archive/unheard.raw", None)
        assert after_a_marker(gate) == ["delete raw-archive/day0/img0.raw"]  # (no generation)
        sent = [a for a in outbox(store) if getattr(a, "path", "") == "raw-archive/day0/img0.raw"]
        assert len(sent) == 1 and isinstance(sent[0], PathChanged) and not sent[0].is_dir
        assert sent[0].generation is None and (watch / "raw-archive" / "day0" / "img0.raw").exists()


def test_a_file_missing_on_the_remote_and_pending_here_is_sent_even_if_unchanged(tmp_path: Path) -> None:
    """A folder's move has the gate look at its files again; unchanged since last sent, they
    would go nowhere, and the one the remote lacks would stay missing."""
    with running_gate(tmp_path, delete_mode="keep", settle_ms=300) as gate:
        engine = gate[0]
        img = published_and_sent(gate, "raw-archive/img0.raw", b"i" * 3000)
        written(engine, img)  # an event on it, its content as last sent: pending, nothing to send
        engine.recheck("raw-archive/img0.raw", None)
        assert after_a_marker(gate) == ["upload raw-archive/img0.raw"]

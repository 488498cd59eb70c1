"""A name replaced by the other kind at once (real folder, real SQLite, no broker).

`rm -r x && echo … > x`, or `rm x && mv folder x`, inside one settle period: the old one's
delete and the new one's upload or move both have to reach the remote, the first to clear the
old one away there, the second to bring the new one. The outbox keeps at most one action per
key; when both shared the key ``x``, the later one replaced the other, and the remote kept the
old one (every upload or move of the new one refused by it, then dead-lettered) or never got
the new one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skynet.common.messages import PathChanged, PathMoved, encode_changed
from skynet.watcher.observer import RawEvent
from skynet.watcher.store import Store
from tests.fixtures.common import wait_for
from tests.fixtures.gate import described, outbox, published_and_sent, running_gate, written


def folder_delete(store: Store) -> list[str]:
    return [a.path for a in outbox(store) if isinstance(a, PathChanged) and a.is_dir]


def test_a_folder_replaced_by_a_file_at_once_sends_the_folders_delete_and_the_file(tmp_path: Path) -> None:
    with running_gate(tmp_path, delete_mode="mirror", settle_ms=50) as gate:
        engine, store, watch = gate
        published_and_sent(gate, "x/in.txt", b"in the folder")
        shutil.rmtree(watch / "x")
        (watch / "x").write_text("a file now")
        engine.queue.put(RawEvent("deleted", str(watch / "x" / "in.txt")))
        engine.queue.put(RawEvent("dir_deleted", str(watch / "x")))
        written(engine, watch / "x")
        wait_for(lambda: folder_delete(store) and "upload x" in described(outbox(store)), 10, what="both actions")
        assert sorted(described(outbox(store))) == ["delete x", "upload x"]
        assert folder_delete(store) == ["x"]


@pytest.mark.parametrize(
    ("one", "other", "expected"),
    [
        (PathChanged(source="s", path="x", is_dir=True), encode_changed("s", "x", 3, 1, 7), ["delete x", "upload x"]),
        (
            PathChanged(source="s", path="x"),
            PathMoved(source="s", src="drafts", dst="x", is_dir=True),
            ["delete x", "move drafts -> x"],
        ),
    ],
    ids=["folder-deleted-file-made", "file-deleted-folder-moved-in"],
)
def test_neither_action_replaces_the_other_in_either_order(
    tmp_path: Path, one: PathChanged, other: PathMoved | bytes, expected: list[str]
) -> None:
    store = Store(tmp_path / "state")
    try:
        for first, then in ((one, other), (other, one)):
            store.record(actions=[("x", first)])
            store.record(actions=[("x", then)])
            assert sorted(described(outbox(store))) == expected
            store.confirmed(store.pending(10))
    finally:
        store.close()


def test_a_folders_own_delete_is_not_dropped_as_a_change_below_it(tmp_path: Path) -> None:
    """A folder re-made and moved away after its delete: the changes below it go with the move,
    the delete of what the remote held under it stays."""
    store = Store(tmp_path / "state")
    try:
        store.record(actions=[("x", PathChanged(source="s", path="x", is_dir=True))])
        store.record(actions=[("x/new.txt", encode_changed("s", "x/new.txt", 1, 1, 8))])
        assert [key for key, _action in store.drop_pending_under("x")] == ["x/new.txt"]
        assert described(outbox(store)) == ["delete x"]
    finally:
        store.close()


def test_a_folder_moved_then_deleted_keeps_its_move(tmp_path: Path) -> None:
    """The move's handler reconciles its destination after moving (every remote file under it,
    as the folder's delete would): replaced by the delete, the move never happened, and the remote
    kept the folder under its old name."""
    store = Store(tmp_path / "state")
    try:
        store.record(actions=[("x", PathMoved(source="s", src="drafts", dst="x", is_dir=True))])
        store.record(actions=[("x", PathChanged(source="s", path="x", is_dir=True))])
        assert described(outbox(store)) == ["move drafts -> x"]
    finally:
        store.close()


def test_a_folder_moved_in_then_moved_on_or_deleted_before_the_broker_took_its_move_still_moves(
    tmp_path: Path,
) -> None:
    """With the broker away, the outbox holds the move of 'other' into 'src/sub'. A move or
    delete of 'src' covers the actions below it, but not that one: the remote still holds
    'other', which must go to the folder's new name (or be reconciled away with the folder)."""
    with running_gate(tmp_path, delete_mode="mirror") as gate:
        engine, store, watch = gate
        published_and_sent(gate, "other/f.txt", b"f")
        published_and_sent(gate, "src/g.txt", b"g")
        published_and_sent(gate, "gone/h.txt", b"h")
        for folder, dest in (("other", "src/sub"), ("src", "dst")):
            (watch / folder).rename(watch / dest)
            engine.queue.put(RawEvent("dir_moved", str(watch / folder), str(watch / dest)))
        wait_for(lambda: len(outbox(store)) == 2, 10, what="the moves")
        assert sorted(described(outbox(store))) == ["move other -> dst/sub", "move src -> dst"]
        store.confirmed(store.pending(10))  # the broker took those

        (watch / "other2").mkdir()
        published_and_sent(gate, "other2/i.txt", b"i")
        (watch / "other2").rename(watch / "gone" / "sub")
        engine.queue.put(RawEvent("dir_moved", str(watch / "other2"), str(watch / "gone" / "sub")))
        shutil.rmtree(watch / "gone")
        engine.queue.put(RawEvent("dir_deleted", str(watch / "gone")))
        wait_for(lambda: folder_delete(store) == ["gone"], 10, what="the folder's delete")
        assert sorted(described(outbox(store))) == ["delete gone", "move other2 -> gone/sub"]

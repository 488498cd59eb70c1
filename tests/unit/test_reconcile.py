"""The uploader's reconcile logic on the in-memory twin: what a user sees on the remote."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from skynet.common.broker import Delivery
from skynet.common.errors import BrokerUnavailable, RemoteUnavailable, TransientError
from skynet.common.messages import FileEvent, Generation, PathChanged, PathMoved, encode
from skynet.uploader.localfs import LocalFolder
from skynet.uploader.reconcile import Decision, decide
from skynet.uploader.storage.base import ProgressFn, UploadResult
from skynet.uploader.storage.memory import MemoryBackend, MemoryStore
from skynet.uploader.worker import IN_PROCESS_ATTEMPTS, Reconciler
from tests.fixtures.common import wait_for


@pytest.mark.parametrize(
    ("local", "remote", "matches", "mirror", "force", "expected"),
    [
        (True, True, True, False, False, Decision.SKIP),
        (True, True, True, False, True, Decision.UPLOAD),
        (True, True, False, False, False, Decision.UPLOAD),
        (True, False, False, True, False, Decision.UPLOAD),
        (False, True, False, True, False, Decision.DELETE),
        (False, True, False, False, False, Decision.KEEP),
        (False, False, False, True, False, Decision.NOTHING),
    ],
)
def test_decisions(local: bool, remote: bool, matches: bool, mirror: bool, force: bool, expected: Decision) -> None:
    got = decide(local_present=local, remote_present=remote, remote_matches=matches, mirror=mirror, force=force)
    assert got is expected


class Rig:
    """One uploader over ``root``; rigs given the same ``store`` are replicas of one target."""

    def __init__(
        self,
        root: Path,
        mirror: bool = True,
        progress_interval_s: float = 0.5,
        store: MemoryStore | None = None,
        backend: type[MemoryBackend] = MemoryBackend,
    ) -> None:
        self.root = root
        self.store = store if store is not None else MemoryStore()
        self.events: list[FileEvent] = []
        self.paused: list[RemoteUnavailable] = []
        self.asked: list[tuple[str, Generation | None]] = []  # what the watcher was asked to look at again
        self.broker_lost = False  # asking the watcher fails, as with the broker gone
        self.asks_failed = 0
        self.rec = Reconciler(
            source="default",
            worker="w1",
            folder=LocalFolder(str(root)),
            open_backend=lambda: backend(self.store),
            emit=self.events.append,
            mirror=mirror,
            on_remote_down=self.paused.append,
            progress_interval_s=progress_interval_s,
            ask_watcher=self._ask,
        )

    def _ask(self, path: str, landed: Generation | None) -> None:
        if self.broker_lost:
            self.asks_failed += 1
            raise BrokerUnavailable("connection to the broker lost")
        self.asked.append((path, landed))

    def send(self, action: PathChanged | PathMoved, redelivered: bool = False) -> str:
        return self.rec.handle(Delivery(encode(action), 1, "default", redelivered)).kind

    def states(self, path: str) -> list[str]:
        return [e.state for e in self.events if e.path == path]


def gen(p: Path) -> Generation:
    st = os.stat(p)
    return Generation(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


def test_a_new_file_is_uploaded_and_a_repeated_hint_is_a_cheap_skip(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (tmp_path / "a.txt").write_text("hello")
    assert rig.send(PathChanged(source="default", path="a.txt")) == "ack"
    assert rig.send(PathChanged(source="default", path="a.txt")) == "ack"
    assert rig.store.read("a.txt") == b"hello"
    assert rig.store.uploads == 1
    # A transfer shorter than the progress interval: "started" and "done" say all there is.
    assert rig.states("a.txt") == ["started", "done", "skipped"]


def test_a_long_transfer_ticks_progress_between_started_and_done(tmp_path: Path) -> None:
    rig = Rig(tmp_path, progress_interval_s=1e-9)
    (tmp_path / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    assert rig.send(PathChanged(source="default", path="big.bin")) == "ack"
    states = rig.states("big.bin")
    assert states[0] == "started" and states[-1] == "done" and set(states[1:-1]) == {"progress"}
    ticks = [e.bytes_done for e in rig.events if e.state == "progress"]
    assert len(ticks) >= 2 and ticks == sorted(ticks) and ticks[-1] == 5 * 1024 * 1024


def test_deletes_apply_only_in_mirror_mode(tmp_path: Path) -> None:
    for mirror in (False, True):
        rig = Rig(tmp_path, mirror=mirror)
        (tmp_path / "gone.txt").write_text("x")
        rig.send(PathChanged(source="default", path="gone.txt"))
        (tmp_path / "gone.txt").unlink()
        rig.send(PathChanged(source="default", path="gone.txt"))
        assert ("gone.txt" in rig.store.files) is (not mirror)


def test_a_stale_hint_for_a_file_gone_since_leaves_the_delete_to_the_watcher(tmp_path: Path) -> None:
    # The watcher holds a burst of deletes over its threshold; an action queued while the file
    # was still there must not delete it behind the watcher's back.
    rig = Rig(tmp_path, mirror=True)
    (tmp_path / "kept.txt").write_text("x")
    hint = PathChanged(source="default", path="kept.txt", generation=gen(tmp_path / "kept.txt"))
    assert rig.send(hint) == "ack"
    (tmp_path / "kept.txt").unlink()
    assert rig.send(hint.model_copy(update={"id": "second"})) == "ack"
    assert "kept.txt" in rig.store.files
    assert rig.states("kept.txt")[-1] == "skipped"
    # The watcher's own delete (no generation: "it is gone") is applied.
    assert rig.send(PathChanged(source="default", path="kept.txt")) == "ack"
    assert "kept.txt" not in rig.store.files
    assert rig.states("kept.txt")[-1] == "deleted"


def test_a_rename_moves_on_the_remote_without_sending_bytes(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (tmp_path / "old.bin").write_bytes(b"x" * 100_000)
    rig.send(PathChanged(source="default", path="old.bin"))
    sent = rig.store.bytes_sent
    (tmp_path / "old.bin").rename(tmp_path / "new.bin")
    assert rig.send(PathMoved(source="default", src="old.bin", dst="new.bin")) == "ack"
    assert set(rig.store.files) == {"new.bin"}
    assert rig.store.bytes_sent == sent
    assert "moved" in rig.states("new.bin")


def test_a_rename_of_a_file_that_changed_since_its_upload_uploads_the_new_content(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (tmp_path / "old.txt").write_text("v1")
    rig.send(PathChanged(source="default", path="old.txt"))
    (tmp_path / "old.txt").rename(tmp_path / "new.txt")
    (tmp_path / "new.txt").write_text("v2, changed after the rename")
    rig.send(PathMoved(source="default", src="old.txt", dst="new.txt"))
    assert rig.store.read("new.txt") == b"v2, changed after the rename"
    assert "old.txt" not in rig.store.files


class _Meanwhile(MemoryBackend):
    """A backend whose next upload runs ``meanwhile`` once its bytes are read, before they land."""

    meanwhile: list[Callable[[], None]] = []

    def upload(self, path: str, local_file: str, generation: Generation, progress: ProgressFn) -> UploadResult:
        def first_progress(done: int) -> None:
            while self.meanwhile:
                self.meanwhile.pop()()
            progress(done)

        return super().upload(path, local_file, generation, first_progress)


def renamed_mid_upload(tmp_path: Path, mirror: bool) -> tuple[Rig, Rig, PathChanged, PathMoved]:
    """Two replicas, ``sender`` and ``other``, over one remote. ``clip.bin`` is renamed to
    ``clip-2026.bin`` while ``sender`` sends it (``hint``, not sent yet), and ``other`` applies
    the ``move`` before the upload lands: an S3 PUT on its way leaves nothing to move."""
    sender = Rig(tmp_path, mirror=mirror, backend=_Meanwhile)
    other = Rig(tmp_path, mirror=mirror, store=sender.store)
    (tmp_path / "clip.bin").write_bytes(b"c" * 100_000)
    hint = PathChanged(source="default", path="clip.bin", generation=gen(tmp_path / "clip.bin"))
    move = PathMoved(source="default", src="clip.bin", dst="clip-2026.bin", generation=hint.generation)

    def renamed_and_moved_by_the_other() -> None:
        (tmp_path / "clip.bin").rename(tmp_path / "clip-2026.bin")
        assert other.send(move) == "ack"

    _Meanwhile.meanwhile = [renamed_and_moved_by_the_other]
    return sender, other, hint, move


@pytest.mark.parametrize("mirror", [True, False], ids=["mirror", "keep"])
def test_a_file_renamed_while_sent_whose_move_another_uploader_applied_first_is_moved_again(
    tmp_path: Path, mirror: bool
) -> None:
    """An S3 PUT in flight leaves no trace: another worker handling the rename finds nothing to
    move, then the PUT lands under the old name. The uploader that sent it tells the watcher what
    it left there, and the move the watcher sends again leaves only the new name (in both delete
    modes: a rename is a rename)."""
    sender, other, hint, move = renamed_mid_upload(tmp_path, mirror)
    assert sender.send(hint) == "ack"
    assert set(sender.store.files) == {"clip.bin", "clip-2026.bin"}  # landed after the move
    assert sender.asked == [("clip.bin", hint.generation)]
    assert sender.states("clip.bin")[-1] == "skipped"
    sent = sender.store.bytes_sent
    # The watcher's answer: the move, sent again. The remote's old name holds the new name's
    # generation, so it is a move on the remote, not a third upload.
    assert other.send(move.model_copy(update={"id": "again"})) == "ack"
    assert set(sender.store.files) == {"clip-2026.bin"}
    assert sender.store.bytes_sent == sent


def test_an_uploader_that_could_not_ask_the_watcher_keeps_its_action_and_the_redelivery_asks(tmp_path: Path) -> None:
    """The request to the watcher is the only trace of a file that landed under a name gone by
    then: an uploader that cannot send it does not acknowledge the action, and whoever gets the
    action again (this uploader restarted, another replica) finds the queued version on the
    remote under the gone name and asks."""
    sender, _other, hint, _move = renamed_mid_upload(tmp_path, mirror=True)
    sender.broker_lost = True
    assert sender.send(hint) == "retry"
    assert sender.asked == []
    assert sender.asks_failed == IN_PROCESS_ATTEMPTS  # each quick retry in the process asks again
    first = Rig(tmp_path, store=sender.store)
    assert first.send(hint) == "ack"  # the same action delivered for the first time (a rescan's, say)
    assert first.asked == []  # the watcher's own delete or move of it is on its way
    again = Rig(tmp_path, store=sender.store)
    assert again.send(hint, redelivered=True) == "ack"
    assert again.asked == [("clip.bin", hint.generation)]
    assert set(again.store.files) == {"clip.bin", "clip-2026.bin"}  # until the watcher's answer


def test_a_second_worker_that_waited_for_the_first_one_sending_the_same_file_sends_nothing(tmp_path: Path) -> None:
    """Two actions for one file at once in one uploader (a folder's move and a rename sent again,
    say): the second waits for the first one's transfer, then finds the file there."""
    rig = Rig(tmp_path, backend=_Meanwhile)
    (tmp_path / "clip.bin").write_bytes(b"c" * 300_000)
    second: list[str] = []

    def second_worker_waiting() -> None:
        worker = threading.Thread(
            target=lambda: second.append(rig.send(PathChanged(source="default", path="clip.bin")))
        )
        worker.start()
        wait_for(lambda: rig.rec._path_locks["clip.bin"].users == 2, 10, what="the second worker waiting")

    _Meanwhile.meanwhile = [second_worker_waiting]
    assert rig.send(PathChanged(source="default", path="clip.bin")) == "ack"
    wait_for(lambda: second == ["ack"], 10, what="the second worker done")
    assert rig.store.uploads == 1
    # The first worker's "done" and the second's "skipped" come in either order.
    assert sorted(rig.states("clip.bin")) == ["done", "skipped", "started"]


def test_a_file_deleted_while_its_upload_failed_asks_the_watcher_nothing(tmp_path: Path) -> None:
    """Nothing of ours landed: the remote's older copy is the watcher's own delete's business
    (it may be holding a burst of deletes)."""
    rig = Rig(tmp_path)
    (tmp_path / "doc.txt").write_text("v1")
    rig.send(PathChanged(source="default", path="doc.txt"))
    (tmp_path / "doc.txt").write_text("v2, longer")
    hint = PathChanged(source="default", path="doc.txt", generation=gen(tmp_path / "doc.txt"))

    def deleted_and_cut() -> None:
        (tmp_path / "doc.txt").unlink()
        raise TransientError("connection reset")

    _Meanwhile.meanwhile = [deleted_and_cut]
    sender = Rig(tmp_path, store=rig.store, backend=_Meanwhile)
    assert sender.send(hint) == "ack"
    assert sender.states("doc.txt")[-1] == "skipped"
    assert sender.asked == []  # nothing of ours landed: the watcher's own delete takes care of it
    assert rig.store.read("doc.txt") == b"v1"


def test_a_deleted_folder_is_reconciled_as_a_whole(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (tmp_path / "d").mkdir()
    for i in range(5):
        (tmp_path / "d" / f"f{i}").write_text(str(i))
        rig.send(PathChanged(source="default", path=f"d/f{i}"))
    (tmp_path / "keep.txt").write_text("k")
    rig.send(PathChanged(source="default", path="keep.txt"))
    for i in range(5):
        (tmp_path / "d" / f"f{i}").unlink()
    (tmp_path / "d").rmdir()
    assert rig.send(PathChanged(source="default", path="d", is_dir=True)) == "ack"
    assert set(rig.store.files) == {"keep.txt"}
    # The folder's own "queued" event must not stay its last word (the notifier's state).
    assert rig.states("d") == ["deleted"]


@pytest.mark.parametrize(
    ("mirror", "back", "last"), [(True, False, "deleted"), (False, False, "skipped"), (True, True, "skipped")]
)
def test_a_folders_delete_ends_with_an_event_of_the_folders_own(
    tmp_path: Path, mirror: bool, back: bool, last: str
) -> None:
    rig = Rig(tmp_path, mirror=mirror)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("f")
    rig.send(PathChanged(source="default", path="d/f"))
    (tmp_path / "d" / "f").unlink()
    if not back:
        (tmp_path / "d").rmdir()
    assert rig.send(PathChanged(source="default", path="d", is_dir=True)) == "ack"
    assert rig.states("d") == [last]


def test_a_delete_of_a_file_already_gone_from_the_remote_still_says_so(tmp_path: Path) -> None:
    """Its "queued" event went out: without a final event the file would show as queued for good."""
    rig = Rig(tmp_path)
    assert rig.send(PathChanged(source="default", path="never-sent.txt")) == "ack"
    assert rig.states("never-sent.txt") == ["skipped"]


def test_a_folder_moved_before_any_file_reached_the_remote_ends_with_an_event_of_its_own(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("f")
    assert rig.send(PathMoved(source="default", src="old", dst="new", is_dir=True)) == "ack"
    assert rig.states("new") == ["skipped"]  # its files: the watcher sends each under its new name
    assert rig.states("old") == []  # the old name is not brought back to the file list
    assert rig.asked == [("new/f", None)]  # and is asked to, in case it sent them before the move


def test_a_folder_move_asks_the_watcher_only_for_what_the_remote_does_not_hold_under_the_new_name(
    tmp_path: Path,
) -> None:
    """A folder swapped with another through a third name: its move may be applied after another
    move already reconciled its old name away. What is missing under the new name is asked for
    again (the watcher knows what it ignores); what arrived with the move is not."""
    rig = Rig(tmp_path)
    for name in ("a", "b"):
        (tmp_path / "right" / f"{name}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "right" / f"{name}.txt").write_text(name)
        assert rig.send(PathChanged(source="default", path=f"right/{name}.txt")) == "ack"
    (tmp_path / "right").rename(tmp_path / "left")
    (tmp_path / "left" / "c.txt").write_text("c")  # made after the move, its own action on its way
    assert rig.send(PathMoved(source="default", src="right", dst="left", is_dir=True)) == "ack"
    assert sorted(rig.store.files) == ["left/a.txt", "left/b.txt"]
    assert rig.asked == [("left/c.txt", None)]
    rig.asked.clear()
    rig.store.files.pop("left/a.txt")  # the other order: another move reconciled it away first
    assert rig.send(PathMoved(source="default", src="right", dst="left", is_dir=True, id="again")) == "ack"
    assert rig.asked == [("left/a.txt", None), ("left/c.txt", None)]


def test_an_unreachable_remote_pauses_the_uploader_and_requeues_without_counting_an_attempt(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.store.unavailable = True
    (tmp_path / "a.txt").write_text("x")
    assert rig.send(PathChanged(source="default", path="a.txt")) == "requeue"
    assert rig.paused, "the consumer was not asked to pause"
    # Handed back: queued again in the file list, not an upload that nobody is doing.
    last = [e for e in rig.events if e.path == "a.txt"][-1]
    assert last.state == "queued" and "handed back to the queue: remote unavailable" in str(last.reason)


def test_a_refused_name_is_dead_lettered_with_its_reason(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.store.refuse(lambda p: p.startswith("refused"))
    (tmp_path / "refused.txt").write_text("x")
    assert rig.send(PathChanged(source="default", path="refused.txt")) == "dead"
    failed = [e for e in rig.events if e.state == "failed"]
    assert failed and failed[0].reason


def test_deletes_wait_while_the_watched_folder_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    rig = Rig(root)
    (root / "a.txt").write_text("x")
    rig.send(PathChanged(source="default", path="a.txt"))
    (root / "a.txt").unlink()
    root.rename(tmp_path / "elsewhere")
    root.mkdir()  # replaced by an empty folder: not the one we were watching
    assert rig.send(PathChanged(source="default", path="a.txt")) == "retry"
    assert "a.txt" in rig.store.files


def test_a_passing_transient_error_is_retried_in_process_before_any_retry_queue(tmp_path: Path) -> None:
    from skynet.common.errors import TransientError

    class Flaky(MemoryBackend):
        fails = 2

        def stat(self, path: str):  # type: ignore[no-untyped-def]
            if Flaky.fails:
                Flaky.fails -= 1
                raise TransientError("server busy, try again")
            return super().stat(path)

    rig = Rig(tmp_path)
    rig.rec._open_backend = lambda: Flaky(rig.store)
    (tmp_path / "a.txt").write_text("x")
    assert rig.send(PathChanged(source="default", path="a.txt")) == "ack"
    assert rig.store.read("a.txt") == b"x"

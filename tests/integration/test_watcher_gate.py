"""The watcher alone against the real broker: what it publishes, and when."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pika

from skynet.common.admin import request_rescan
from skynet.common.broker import Publisher
from skynet.common.messages import Generation, RecheckRequest, encode, encode_changed
from skynet.common.topology import (
    CONTROL_EXCHANGE,
    Topology,
    actions_queue,
    control_routing_key,
    recheck_queue,
    recheck_routing_key,
)
from skynet.uploader.watcher_requests import WatcherRequests
from skynet.watcher.pump import OutboxPump
from skynet.watcher.store import Store
from tests.e2e.harness import EventTap, NoRemote, Proc, Stack
from tests.fixtures.broker import drain_json, queue_depth
from tests.fixtures.common import wait_for, write_old_files
from tests.fixtures.tmpfs import fill, small_disk


def drain_actions(url: str, source: str = "default") -> list[dict[str, object]]:
    return drain_json(url, actions_queue(source))


def test_a_file_already_open_for_writing_when_the_watcher_starts_waits_for_its_close(
    tmp_path: Path, amqp_url: str
) -> None:
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        with open(stack.watch / "stalled.bin", "wb") as f:
            f.write(b"x" * 1000)
            f.flush()
            stack.start("watcher")
            time.sleep(5)  # far longer than the settle period, and no write meanwhile
            assert drain_actions(amqp_url) == [], "a file still open for writing was published"
            f.write(b"y" * 1000)
        time.sleep(3)
        actions = drain_actions(amqp_url)
        assert [a["path"] for a in actions] == ["stalled.bin"]
        generation = actions[0]["generation"]
        assert isinstance(generation, dict) and generation["size"] == 2000
    finally:
        stack.stop_all()


def test_a_burst_of_writes_and_a_temp_file_renamed_into_place_become_one_action_each(
    tmp_path: Path, amqp_url: str
) -> None:
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        stack.start("watcher")
        time.sleep(2)
        for i in range(200):
            (stack.watch / "burst.txt").write_text(f"version {i}")
        tmp = stack.watch / "report.csv.tmp"
        tmp.write_text("a,b\n1,2\n")
        tmp.rename(stack.watch / "report.csv")
        (stack.watch / "editor.swp").write_text("swap")
        time.sleep(3)
        paths = sorted(str(a["path"]) for a in drain_actions(amqp_url))
        assert paths == ["burst.txt", "report.csv"], paths
    finally:
        stack.stop_all()


def test_bytes_written_under_an_unchanged_generation_are_sent_forced_and_a_mode_change_is_not(
    tmp_path: Path, amqp_url: str
) -> None:
    """Only a real write makes the watcher distrust the remote's record of a generation: a chmod
    asks for a check (the uploader skips a file the remote holds), a write that puts size and
    mtime back asks for an upload whatever the remote records."""
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        stack.start("watcher")
        for name in ("edited.bin", "chmodded.bin"):
            (stack.watch / name).write_bytes(b"x" * 5000)
        wait_for(lambda: _depth(amqp_url) == 2, 15, what="both files published")
        first = drain_actions(amqp_url)
        assert [a["force"] for a in first] == [False, False]
        before = os.stat(stack.watch / "edited.bin")
        with open(stack.watch / "edited.bin", "r+b") as f:
            f.write(b"y" * 100)
        os.utime(stack.watch / "edited.bin", ns=(before.st_atime_ns, before.st_mtime_ns))
        os.chmod(stack.watch / "chmodded.bin", 0o600)
        wait_for(lambda: _depth(amqp_url) == 2, 15, what="both changes published")
        again = {str(a["path"]): a for a in drain_actions(amqp_url)}
        assert again["edited.bin"]["force"] is True
        assert again["chmodded.bin"]["force"] is False
        assert again["edited.bin"]["generation"] == next(a for a in first if a["path"] == "edited.bin")["generation"]
    finally:
        stack.stop_all()


def test_only_a_file_that_has_to_wait_is_reported_waiting(tmp_path: Path, amqp_url: str) -> None:
    """With the shortest settle period, a file closed at once goes straight to "queued"; one still
    being written is reported "waiting" first (and then "queued", once closed)."""
    tap = EventTap(amqp_url).start()
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        stack.start("watcher", SKYNET_SETTLE_MS="0")
        time.sleep(2)
        (stack.watch / "quick.bin").write_bytes(b"q" * 65536)
        with open(stack.watch / "slow.bin", "wb") as f:
            for _ in range(10):
                f.write(b"s" * 1000)
                f.flush()
                time.sleep(0.1)
        wait_for(lambda: len(tap.of("queued")) == 2, 15, what="both files queued")
        states = {p: [e["state"] for e in tap.events if e.get("path") == p] for p in ("quick.bin", "slow.bin")}
        assert states == {"quick.bin": ["queued"], "slow.bin": ["waiting", "queued"]}, states
    finally:
        stack.stop_all()
        tap.stop()


QUEUE = actions_queue("default")


def _depth(amqp_url: str) -> int:
    """Messages in the actions queue; 0 until the watcher has declared it."""
    try:
        return queue_depth(amqp_url, QUEUE)
    except pika.exceptions.ChannelClosedByBroker:
        return 0


def _restart_publishes_nothing(stack: Stack, amqp_url: str, why: str, **env: str) -> None:
    """Stop the watcher, start it again on the same state, and check its scan publishes nothing."""
    stack.stop_all()
    again = stack.start("watcher", "watcher-again", **env)
    wait_for(lambda: "scan (start-up)" in again.text(), 30, what="the restart's scan")
    time.sleep(2)
    assert drain_actions(amqp_url) == [], why


def test_a_first_start_publishes_each_file_once_with_its_generation_and_a_restart_none_again(
    tmp_path: Path, amqp_url: str
) -> None:
    stack = Stack(tmp_path, amqp_url, NoRemote())
    tap = EventTap(amqp_url).start()
    try:
        names = write_old_files(stack.watch, (f"d{i % 7}/old-{i:04}.dat" for i in range(500)))
        stack.start("watcher")
        wait_for(lambda: _depth(amqp_url) == 500, 30, what="an action for each of the 500 files")
        actions = drain_actions(amqp_url)
        assert sorted(str(a["path"]) for a in actions) == sorted(names)
        for a in actions:
            gen = a["generation"]
            assert isinstance(gen, dict)
            st = (stack.watch / str(a["path"])).stat()
            assert (gen["size"], gen["mtime_ns"], gen["inode"]) == (st.st_size, st.st_mtime_ns, st.st_ino)
        wait_for(lambda: len(tap.of("queued")) == 500, 15, what="a queued event for each file")
        queued = {e["path"]: e for e in tap.of("queued")}
        assert {a["path"]: a["id"] for a in actions} == {p: e["action_id"] for p, e in queued.items()}
        _restart_publishes_nothing(stack, amqp_url, "a restart published again files the index already held")
    finally:
        stack.stop_all()
        tap.stop()


def test_a_file_changed_after_the_scan_found_it_is_published_as_its_newer_version(
    tmp_path: Path, amqp_url: str
) -> None:
    """Found by the start-up scan, rewritten before its action went out: the newer version wins."""
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        write_old_files(stack.watch, (f"d{i % 7}/old-{i:04}.dat" for i in range(50)))
        stack.start("watcher", SKYNET_SETTLE_MS="0")
        (stack.watch / "d0" / "old-0000.dat").write_bytes(b"rewritten after the scan found it")
        time.sleep(3)
        actions = [a for a in drain_actions(amqp_url) if a["path"] == "d0/old-0000.dat"]
        assert actions, "the file was never published"
        last = actions[-1]["generation"]
        assert isinstance(last, dict) and last["size"] == len(b"rewritten after the scan found it")
        _restart_publishes_nothing(
            stack, amqp_url, "the index kept the older version of the rewritten file", SKYNET_SETTLE_MS="0"
        )
    finally:
        stack.stop_all()


def test_a_full_rescan_sends_every_file_the_index_holds_for_a_check_and_a_plain_one_sends_nothing(
    tmp_path: Path, amqp_url: str
) -> None:
    """A plain rescan compares the folder with the index; a full one also sends each file the index
    says is already on the remote, without a generation (never uploaded blind: checked there)."""
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        names = write_old_files(stack.watch, (f"d{i % 5}/old-{i:03}.dat" for i in range(300)))
        watcher = stack.start("watcher")
        wait_for(lambda: _depth(amqp_url) == 300, 30, what="an action for each of the 300 files")
        drain_actions(amqp_url)
        changed = stack.watch / "d2/old-007.dat"
        changed.write_bytes(b"changed since it was sent")
        os.utime(changed, (time.time() - 120, time.time() - 120))  # old enough to go out at once

        # Garbage in the request's body: a plain rescan, and the watcher goes on.
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            conn.channel().basic_publish(CONTROL_EXCHANGE, control_routing_key("default"), b"\xff not json")
        finally:
            conn.close()
        wait_for(lambda: watcher.text().count("scan (requested)") == 1, 30, what="the plain rescan")
        assert "not JSON: doing a plain rescan" in watcher.text()
        time.sleep(1)
        plain = drain_actions(amqp_url)
        assert [a["path"] for a in plain] == ["d2/old-007.dat"], "a plain rescan sends what changed, nothing else"

        request_rescan(amqp_url, "default", full=True)
        wait_for(lambda: _depth(amqp_url) == 301, 30, what="an action for each file, and the prune")
        full = drain_actions(amqp_url)
        # In mirror mode (the stack's), the uploaders are also asked to delete what the remote
        # holds beyond the folder, unless more than SKYNET_DELETE_THRESHOLD (1000) files.
        prunes = [a for a in full if a["type"] == "action.prune.v1"]
        assert [a["limit"] for a in prunes] == [1000]
        full = [a for a in full if a["type"] != "action.prune.v1"]
        assert sorted(str(a["path"]) for a in full) == sorted(names)
        assert all(a.get("generation") is None for a in full), "a check must not be an upload sent blind"
        assert "verify: 300 files the remote should hold sent to be checked there" in watcher.text()
        assert watcher.alive()
    finally:
        stack.stop_all()


def _watching_one_file_published(stack: Stack, rel: str) -> Proc:
    """A watcher started over one file ``rel``, its action published and taken off the queue."""
    write_old_files(stack.watch, [rel])
    watcher = stack.start("watcher")
    wait_for(lambda: _depth(stack.amqp_url) == 1, 30, what="the file's action")
    drain_actions(stack.amqp_url)
    return watcher


def test_an_uploaders_recheck_request_resends_a_gone_files_delete_and_garbage_is_only_logged(
    tmp_path: Path, amqp_url: str
) -> None:
    """An uploader whose upload ended after its file was renamed or deleted asks the watcher to look
    at the file again (``recheck.<source>``). The watcher sends the move for a file it holds under
    another name, a delete for one that is gone, and nothing for one that is there; a request it
    cannot read, or for another source, changes nothing. Asked without a generation about a file
    that is there (an uploader found it missing on the remote after its folder's move), it sends
    the file again."""
    stack = Stack(tmp_path, amqp_url, NoRemote())  # mirror mode
    try:
        watcher = _watching_one_file_published(stack, "here.txt")
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            key = recheck_routing_key("default")

            def routed(body: bytes) -> bool:
                try:
                    ch.basic_publish(CONTROL_EXCHANGE, key, body, mandatory=True)
                    return True
                except pika.exceptions.UnroutableError:
                    return False  # the watcher's control queue is not bound yet

            wait_for(lambda: routed(b"\xff not json"), 30, interval=0.2, what="the watcher's control queue")
            ch.basic_publish(
                CONTROL_EXCHANGE, key, b'{"type": "control.recheck.v1", "source": "default", "path": "../x"}'
            )
            ch.basic_publish(CONTROL_EXCHANGE, key, encode(RecheckRequest(source="other", path="gone.txt")))
            st = (stack.watch / "here.txt").stat()
            landed = Generation(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)
            there = RecheckRequest(source="default", path="here.txt", generation=landed)
            ch.basic_publish(CONTROL_EXCHANGE, key, encode(there))
            ch.basic_publish(CONTROL_EXCHANGE, key, encode(RecheckRequest(source="default", path="d/gone.txt")))
            moved = RecheckRequest(source="default", path="old/here.txt", generation=landed)
            ch.basic_publish(CONTROL_EXCHANGE, key, encode(moved))
            wait_for(lambda: _depth(amqp_url) >= 2, 30, what="the delete and the move sent again")
            time.sleep(1)
            actions = drain_actions(amqp_url)
            assert [(a["type"], a.get("path"), a.get("src"), a.get("generation")) for a in actions] == [
                ("action.changed.v1", "d/gone.txt", None, None),
                ("action.moved.v1", None, "old/here.txt", landed.model_dump()),
            ]
            # Without a generation, about a file that is here: missing on the remote after its
            # folder's move (moves around it applied in another order): sent again.
            ch.basic_publish(CONTROL_EXCHANGE, key, encode(RecheckRequest(source="default", path="here.txt")))
        finally:
            conn.close()
        wait_for(lambda: _depth(amqp_url) >= 1, 30, what="the file sent again")
        time.sleep(1)
        actions = drain_actions(amqp_url)
        assert [(a["type"], a.get("path"), a.get("generation")) for a in actions] == [
            ("action.changed.v1", "here.txt", None)
        ]
        log = watcher.text()
        assert log.count("recheck request ignored") == 3, log
        assert watcher.alive()
    finally:
        stack.stop_all()


def test_recheck_requests_sent_while_the_watcher_is_down_are_answered_when_it_is_back(
    tmp_path: Path, amqp_url: str
) -> None:
    """A recheck request may stand for a file missing on the remote under its new name (its folder
    renamed while it was sent), which the watcher's restart scan cannot find: the file is as the
    watcher published it. The request waits in the source's recheck queue for the watcher."""
    stack = Stack(tmp_path, amqp_url, NoRemote())  # mirror mode
    try:
        first = _watching_one_file_published(stack, "shoot-2026/clip.bin")
        first.kill(signal.SIGTERM)
        st = (stack.watch / "shoot-2026" / "clip.bin").stat()
        landed = Generation(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)
        requests = WatcherRequests(amqp_url, Topology("default"), name="an-uploader")  # the uploader's way
        requests.recheck("shoot/clip.bin", landed)
        requests.recheck("gone.bin", None)
        requests.close()
        assert queue_depth(amqp_url, recheck_queue("default")) == 2
        again = stack.start("watcher", "watcher-again")
        wait_for(lambda: _depth(amqp_url) >= 2, 30, what="the move and the delete sent again")
        time.sleep(1)
        actions = drain_actions(amqp_url)
        assert sorted((a["type"], a.get("path"), a.get("src"), a.get("dst")) for a in actions) == [
            ("action.changed.v1", "gone.bin", None, None),
            ("action.moved.v1", None, "shoot/clip.bin", "shoot-2026/clip.bin"),
        ]
        assert again.alive()
        again.kill(signal.SIGTERM)  # a request it had not acknowledged would be back in the queue
        assert queue_depth(amqp_url, recheck_queue("default")) == 0, "a request handled was not acknowledged"
    finally:
        stack.stop_all()


def test_a_recheck_request_whose_answer_could_not_be_stored_waits_for_the_next_watcher(
    tmp_path: Path, amqp_url: str
) -> None:
    """The watcher acknowledges a recheck request only once its answer is in its outbox. One
    killed while its state disk is full, the request handled but its delete not stored, leaves
    the request in its queue, and the next watcher sends the delete."""
    stack = Stack(tmp_path, amqp_url, NoRemote())  # mirror mode
    with small_disk(stack.state, "1m"):
        try:
            watcher = stack.start("watcher")
            wait_for(lambda: "scan (start-up)" in watcher.text(), 30, what="the watcher's start")
            filler = fill(stack.state)
            requests = WatcherRequests(amqp_url, Topology("default"), name="an-uploader")
            requests.recheck("gone.bin", None)
            requests.close()
            wait_for(lambda: "'gone.bin' to be looked at again" in watcher.text(), 30, what="the request handed over")
            wait_for(lambda: "cannot write the watcher's state" in watcher.text(), 30, what="the answer refused")
            assert queue_depth(amqp_url, recheck_queue("default")) == 0  # delivered, not acknowledged
            watcher.kill(signal.SIGKILL)
            wait_for(
                lambda: queue_depth(amqp_url, recheck_queue("default")) == 1, 30, what="the request back in its queue"
            )
            assert _depth(amqp_url) == 0
            filler.unlink()
            again = stack.start("watcher", "watcher-again")
            wait_for(lambda: _depth(amqp_url) >= 1, 30, what="the delete sent by the next watcher")
            time.sleep(1)
            assert [(a["type"], a.get("path")) for a in drain_actions(amqp_url)] == [("action.changed.v1", "gone.bin")]
            again.kill(signal.SIGTERM)
            assert queue_depth(amqp_url, recheck_queue("default")) == 0, "the request answered was not acknowledged"
        finally:
            stack.stop_all()


def test_a_queue_type_other_than_the_brokers_is_named_in_the_log_and_nothing_is_lost(
    tmp_path: Path, amqp_url: str
) -> None:
    """SKYNET_QUEUE_TYPE must agree with the queues already on the broker. A watcher that disagrees
    keeps its actions in the outbox and says which setting to change; once it agrees, they go out."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        Topology("default", queue_type="classic").declare_actions(conn.channel())
    finally:
        conn.close()
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        names = write_old_files(stack.watch, (f"kept-{i}.txt" for i in range(5)))
        wrong = stack.start("watcher", "watcher-quorum", SKYNET_QUEUE_TYPE="quorum")
        wait_for(lambda: "SKYNET_QUEUE_TYPE differs" in wrong.text(), 30, what="the setting named in the log")
        assert _depth(amqp_url) == 0 and wrong.alive()
        stack.stop_all()
        stack.start("watcher", "watcher-classic", SKYNET_QUEUE_TYPE="classic")
        wait_for(lambda: _depth(amqp_url) == len(names), 30, what="the kept actions published")
        assert sorted(str(a["path"]) for a in drain_actions(amqp_url)) == sorted(names)
    finally:
        stack.stop_all()


def _pump_with_files(tmp_path: Path, amqp_url: str, n: int, hold_s: float) -> tuple[OutboxPump, threading.Event]:
    store = Store(tmp_path / "state")
    store.record(actions=[(f"f{i}", encode_changed("default", f"f{i}", 1, 1, i)) for i in range(n)])
    topology = Topology("default")
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    topology.declare_actions(conn.channel())  # the queue exists before anything is published
    conn.close()
    publisher = Publisher(amqp_url, name="pump-test", declare=topology.declare_actions, batched=True)
    pump = OutboxPump(store, publisher, "default", lambda _event: None, hold_s=hold_s)
    scanning = threading.Event()
    scanning.set()
    pump.hold_during(scanning)
    return pump.start(), scanning


def test_the_outbox_waits_for_the_start_up_scan_then_drains(tmp_path: Path, amqp_url: str) -> None:
    pump, scanning = _pump_with_files(tmp_path, amqp_url, 20, hold_s=30.0)
    try:
        time.sleep(1.5)
        assert queue_depth(amqp_url, QUEUE) == 0, "published while the start-up scan was still running"
        scanning.clear()  # the scan is done
        wait_for(lambda: queue_depth(amqp_url, QUEUE) == 20, 10, what="the 20 actions published after the scan")
    finally:
        pump.stop()


def test_a_scan_that_runs_long_holds_the_outbox_no_longer_than_its_limit(tmp_path: Path, amqp_url: str) -> None:
    pump, _scanning = _pump_with_files(tmp_path, amqp_url, 20, hold_s=1.5)  # never cleared
    try:
        started = time.monotonic()
        wait_for(lambda: queue_depth(amqp_url, QUEUE) == 20, 15, what="the 20 actions published despite the scan")
        assert time.monotonic() - started >= 1.0, "the outbox did not wait for the scan at all"
    finally:
        pump.stop()


def test_sigterm_during_a_first_start_stops_cleanly_and_the_restart_publishes_the_rest(
    tmp_path: Path, amqp_url: str
) -> None:
    stack = Stack(tmp_path, amqp_url, NoRemote())
    try:
        names = write_old_files(stack.watch, (f"d{i % 7}/old-{i:04}.dat" for i in range(3000)))
        first = stack.start("watcher")
        wait_for(lambda: "scan (start-up) of '/': 3000 files" in first.text(), 60, what="the first scan")
        first.kill(signal.SIGTERM)
        assert first.popen.returncode == 0, first.text()[-2000:]
        assert "Traceback" not in first.text()
        assert "watcher stopped;" in first.text()
        published = {str(a["path"]) for a in drain_actions(amqp_url)}
        again = stack.start("watcher", "watcher-again")
        wait_for(lambda: "scan (start-up)" in again.text(), 60, what="the restart's scan")

        def everything() -> bool:
            published.update(str(a["path"]) for a in drain_actions(amqp_url))
            return published == names

        wait_for(everything, 60, what="every file published by one start or the other")
    finally:
        stack.stop_all()

"""A remote changed behind skynet's back: files deleted or overwritten there by someone else, a
bucket emptied and recreated. The watcher's index still says they were sent, so a plain rescan
(which compares the folder with the index) cannot see it; a full rescan checks every file against
the remote and sends only what is missing or different there."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from tests.e2e.harness import EventTap, Proc, RemoteView, Stack
from tests.e2e.remotes import S3Remote, SftpRemote
from tests.fixtures.common import wait_for


def remote_delete(remote: RemoteView, rel: str) -> None:
    if isinstance(remote, SftpRemote):
        (remote.t.local_dir / rel).unlink()
        return
    assert isinstance(remote, S3Remote)
    remote.t.client.delete_object(Bucket=remote.t.bucket, Key=f"{remote.t.prefix}/{rel}")


def remote_overwrite(remote: RemoteView, rel: str, data: bytes) -> None:
    if isinstance(remote, SftpRemote):
        base = remote.t.local_dir
        owner = base.stat()
        target = base / rel
        for folder in reversed(target.relative_to(base).parents[:-1]):  # made as the SFTP user's own
            if not (base / folder).exists():
                (base / folder).mkdir()
                os.chown(base / folder, owner.st_uid, owner.st_gid)
        target.write_bytes(data)
        return
    assert isinstance(remote, S3Remote)
    remote.t.client.put_object(Bucket=remote.t.bucket, Key=f"{remote.t.prefix}/{rel}", Body=data)


def _full_rescan(stack: Stack) -> str:
    """``skynet rescan --full`` for the stack's source; returns what it printed."""
    cli = subprocess.run(
        [sys.executable, "-m", "skynet.api.cli", "rescan", "--source", stack.source, "--full"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    return cli.stdout


def test_a_full_rescan_restores_what_was_deleted_or_changed_on_the_remote_and_resends_nothing_else(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    w = stack.watch
    files = {f"batch-{i // 10}/file-{i:02}.dat": bytes([i]) * (1000 + 37 * i) for i in range(40)}
    for rel, data in files.items():
        (w / rel).parent.mkdir(parents=True, exist_ok=True)
        (w / rel).write_bytes(data)
    stack.wait_mirror(60)
    # The remote can show a file before its "done" event reaches the tap: wait for all of them, or
    # the last ones would count as sent again after the mark below.
    wait_for(lambda: {e["path"] for e in tap.of("done")} >= set(files), 30, what="every first upload's done event")

    gone = ["batch-0/file-03.dat", "batch-2/file-21.dat", "batch-3/file-39.dat"]
    changed = "batch-1/file-12.dat"
    for rel in gone:
        remote_delete(remote, rel)
    remote_overwrite(remote, changed, b"someone else's bytes")
    assert remote.read(gone[0]) is None and remote.read(changed) == b"someone else's bytes"

    mark = tap.mark()
    assert "full rescan" in _full_rescan(stack)
    stack.wait_mirror(60)

    # Only the four files the remote lacked or held wrong were sent again; the 36 others were
    # checked there (one stat / HEAD each) and left alone.
    healed = sorted([*gone, changed])

    def up_to_date() -> set[str]:
        skipped = tap.since(mark, lambda e: e.get("state") == "skipped" and e.get("reason") == "already up to date")
        return {e["path"] for e in skipped}

    wait_for(lambda: len(up_to_date()) == len(files) - len(healed), 30, what="every other file reported up to date")
    wait_for(lambda: len(tap.since(mark, lambda e: e.get("state") == "done")) >= len(healed), 10, what="done events")
    resent = sorted(e["path"] for e in tap.since(mark, lambda e: e.get("state") == "done"))
    assert resent == healed
    assert tap.bytes_sent_since(mark) == sum(len(files[rel]) for rel in healed)
    assert up_to_date() == set(files) - set(healed)


def test_a_periodic_verify_heals_the_remote_without_anyone_asking(stack: Stack, remote: RemoteView) -> None:
    stack.start("watcher", SKYNET_VERIFY_INTERVAL_S="1")
    stack.start("uploader", "uploader-a")
    w = stack.watch
    for i in range(5):
        (w / f"note-{i}.txt").write_text(f"note {i}\n" * 100)
    stack.wait_mirror(60)
    remote_delete(remote, "note-2.txt")
    remote_overwrite(remote, "note-4.txt", b"truncated")
    stack.wait_mirror(30)


def _start_watcher_with_its_state_lost(stack: Stack) -> Proc:
    shutil.rmtree(stack.state)
    stack.state.mkdir()
    restarted = stack.start("watcher")
    wait_for(lambda: "scan (start-up)" in restarted.text(), 30, what="the start-up scan")
    return restarted


def test_in_mirror_mode_a_full_rescan_deletes_what_the_remote_holds_beyond_the_folder(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    """Files on the remote that the folder does not hold: a file deleted while the watcher's state
    was lost (so nothing remembers it was sent), and a file someone put there. The start-up scan
    cannot see either; a full rescan in mirror mode deletes both, and keeps every file the folder
    holds."""
    watcher = stack.start("watcher")
    stack.start("uploader", "uploader-a")
    w = stack.watch
    (w / "old").mkdir()
    for rel in ("keep-1.dat", "keep-2.dat", "old/gone.dat", "old/kept.dat"):
        (w / rel).write_bytes(rel.encode() * 500)
    stack.wait_mirror(60)

    watcher.kill(signal.SIGTERM)
    watcher.popen.wait(30)
    (w / "old" / "gone.dat").unlink()  # while nothing watches, and then the state is lost
    (w / "keep-1.dat").rename(w / "old" / "keep-1.dat")
    _start_watcher_with_its_state_lost(stack)
    remote_overwrite(remote, "stray/by-someone-else.txt", b"not from the folder")
    time.sleep(2)
    left = {"old/gone.dat", "keep-1.dat", "stray/by-someone-else.txt"}
    assert left <= set(remote.snapshot()), "the test needs the remote to hold files the folder does not"

    mark = tap.mark()
    _full_rescan(stack)
    stack.wait_mirror(60)
    deleted = {e["path"] for e in tap.since(mark, lambda e: e.get("state") == "deleted")}
    assert deleted == left, deleted


def _strays_after_a_full_rescan(stack: Stack, remote: RemoteView, **watcher_env: str) -> list[str]:
    """Three files put on the remote by someone else, then a full rescan; returns their paths."""
    stack.start("watcher", None, (), **watcher_env)
    stack.start("uploader", "uploader-a")
    (stack.watch / "here.txt").write_text("here")
    wait_for(lambda: remote.read("here.txt") == b"here", 60, what="here.txt sent")
    strays = [f"strays/{i}.txt" for i in range(3)]
    for rel in strays:
        remote_overwrite(remote, rel, b"stray")
    _full_rescan(stack)
    return strays


def test_more_files_beyond_the_folder_than_the_delete_threshold_are_held_not_deleted(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    """An emptied or wrongly mounted folder must never empty the remote: a prune that would
    delete more than SKYNET_DELETE_THRESHOLD files deletes none and is reported held."""
    mark = tap.mark()
    strays = _strays_after_a_full_rescan(stack, remote, SKYNET_DELETE_THRESHOLD="2")
    wait_for(lambda: tap.since(mark, lambda e: e.get("state") == "held"), 60, what="the prune reported held")
    (held,) = tap.since(mark, lambda e: e.get("state") == "held")
    assert "3 files on the remote" in held["reason"] and "SKYNET_DELETE_THRESHOLD" in held["reason"], held
    time.sleep(1)
    assert all(remote.read(rel) == b"stray" for rel in strays)
    assert not tap.since(mark, lambda e: e.get("state") == "deleted")


def test_in_keep_mode_a_full_rescan_deletes_nothing_beyond_the_folder(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    stack.delete_mode = "keep"
    mark = tap.mark()
    strays = _strays_after_a_full_rescan(stack, remote)
    wait_for(
        lambda: tap.since(mark, lambda e: e.get("path") == "here.txt" and e.get("reason") == "already up to date"),
        60,
        what="the full rescan's check of here.txt",
    )
    time.sleep(2)
    assert all(remote.read(rel) == b"stray" for rel in strays)
    assert not tap.since(mark, lambda e: e.get("state") == "deleted")

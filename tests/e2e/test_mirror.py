"""Issue 2, shown end to end: a watcher and two uploaders, the real broker, a real remote."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from tests.e2e.harness import EventTap, Stack

NAMES = [
    "plain.txt",
    "with space.txt",
    "ünïcødé/日本語.bin",
    "hash#tag.txt",
    "per%cent.txt",
    "plus+sign.txt",
    "-leading-dash.txt",
    "deep/er/and/deeper/file.dat",
    "empty.bin",
]


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_folder_is_mirrored_exactly_with_bursts_slow_writers_renames_and_deletes(stack: Stack, tap: EventTap) -> None:
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    stack.start("uploader", "uploader-b")
    w = stack.watch

    # Files in nested folders with awkward names, a 0-byte file and a 50 MiB file.
    for i, name in enumerate(NAMES):
        write(w / name, b"" if name == "empty.bin" else f"content {i} of {name}\n".encode() * (i + 1))
    big = os.urandom(50 * 1024 * 1024)
    write(w / "big/fifty.bin", big)
    stack.wait_mirror(120)

    # A burst: one file rewritten 100 times in a row.
    for i in range(100):
        (w / "burst.txt").write_text(f"version {i}\n")
    # A slow writer: one file written over ~4 s with pauses longer than the settle period.
    observed: set[str] = set()
    done = threading.Event()

    def watch_remote() -> None:
        while not done.is_set():
            data = stack.remote.read("slow.log")
            if data is not None:
                observed.add(hashlib.sha256(data).hexdigest())
            time.sleep(0.05)

    watcher_thread = threading.Thread(target=watch_remote)
    watcher_thread.start()
    with open(w / "slow.log", "wb") as f:
        for i in range(8):
            f.write(f"line {i}\n".encode() * 1000)
            f.flush()
            time.sleep(0.5)
    final = stack.wait_mirror(60)
    time.sleep(1)
    done.set()
    watcher_thread.join()
    assert observed == {final["slow.log"]}, "slow.log was visible half-written under its final name"
    burst_uploads = len(tap.of("started", "burst.txt"))
    assert 1 <= burst_uploads <= 10, f"100 writes in a burst caused {burst_uploads} uploads"

    # Renames move data on the remote instead of sending it again.
    for i in range(100):
        write(w / "album" / f"photo-{i:03}.jpg", os.urandom(20_000))
    stack.wait_mirror(60)
    mark = tap.mark()
    (w / "big/fifty.bin").rename(w / "big/renamed-fifty.bin")
    (w / "album").rename(w / "album-2026")
    stack.wait_mirror(60)
    time.sleep(1)
    resent = tap.bytes_sent_since(mark)
    assert resent < 1024 * 1024, f"renames re-sent {resent} bytes instead of moving on the remote"
    assert tap.since(mark, lambda e: e.get("state") == "moved"), "no move was reported"

    # Deletes propagate in mirror mode: single files and a whole folder.
    (w / "plain.txt").unlink()
    (w / "per%cent.txt").unlink()
    for p in (w / "album-2026").iterdir():
        p.unlink()
    (w / "album-2026").rmdir()
    stack.wait_mirror(60)
    assert not stack.remote.partials(), f"partial uploads left behind: {stack.remote.partials()}"


def test_files_of_one_size_written_together_and_swapped_by_name_arrive_swapped(stack: Stack) -> None:
    """Same size, same clock tick: only the inode tells them apart (SFTP's remote atime tag, S3's
    metadata). Renames through a temporary name, as a tool rotating or swapping files does."""
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    w = stack.watch
    names = [f"slot-{i}.dat" for i in range(6)]
    for i, name in enumerate(names):
        (w / name).write_bytes(bytes([65 + i]) * 4096)
    stack.wait_mirror(60)

    # Rotate the contents one slot along: slot-0 ← slot-1 ← … ← slot-5 ← slot-0.
    os.rename(w / names[0], w / "rotating.tmp")
    for a, b in itertools.pairwise(names):
        os.rename(w / b, w / a)
    os.rename(w / "rotating.tmp", w / names[-1])
    final = stack.wait_mirror(60)
    assert [stack.remote.read(n)[:1] for n in names] == [b"B", b"C", b"D", b"E", b"F", b"A"]  # type: ignore[index]
    assert len(final) == 6


def test_a_file_replaced_by_a_folder_of_the_same_name_and_the_other_way_round(stack: Stack) -> None:
    """On SFTP the remote's old file stands where the new folder must go (and the old folder where
    the file must go) until its delete arrives: the upload waits for it instead of failing.

    At a settle period of 200 ms the folder's delete (which waits 0.2 s for the other half of a
    move) and the new file's upload fall due in the same turn of the watcher's gate: both must
    go out, neither may replace the other in the outbox."""
    stack.settle_ms = 200
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    w = stack.watch
    (w / "report").write_text("a file first")
    (w / "photos").mkdir()
    (w / "photos" / "one.jpg").write_bytes(b"jpeg" * 100)
    stack.wait_mirror(60)

    (w / "report").unlink()
    (w / "report").mkdir()
    (w / "report" / "part-1.txt").write_text("now a folder")
    shutil.rmtree(w / "photos")
    (w / "photos").write_text("now a file")
    stack.wait_mirror(60)

    (w / "drafts").mkdir()  # a folder moved onto the name of a file just deleted, and one moved then deleted
    (w / "drafts" / "a.txt").write_text("draft")
    (w / "old").mkdir()
    (w / "old" / "b.txt").write_text("old")
    stack.wait_mirror(60)
    (w / "photos").unlink()
    (w / "drafts").rename(w / "photos")
    (w / "old").rename(w / "older")
    shutil.rmtree(w / "older")
    stack.wait_mirror(60)


def test_a_folder_deleted_or_moved_away_locally_leaves_no_empty_folder_on_the_remote(stack: Stack) -> None:
    """The remote holds the folders that hold files, as the local does: what a mirror's deletes and
    renames emptied goes too, while files keep arriving in a folder being emptied and refilled."""
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    stack.start("uploader", "uploader-b")
    w = stack.watch
    for name in ["projects/alpha/a.txt", "projects/alpha/b.txt", "projects/beta/deep/x.txt", "keep/k.txt"]:
        write(w / name, name.encode() * 50)
    stack.wait_mirror(60)
    assert {"projects/alpha", "projects/beta/deep"} <= stack.remote.folders()

    shutil.rmtree(w / "projects" / "alpha")
    (w / "archive").mkdir()
    os.rename(w / "projects" / "beta", w / "archive" / "beta")
    for round_ in range(5):  # emptied and refilled: uploads race the removal of the folder
        shutil.rmtree(w / "churn", ignore_errors=True)
        for i in range(12):
            write(w / "churn" / "sub" / f"{round_}-{i}.bin", os.urandom(2048))
        time.sleep(0.2)
    final = stack.wait_mirror(90)

    holding_files = {str(Path(rel).parents[i]) for rel in final for i in range(len(Path(rel).parents) - 1)}
    assert holding_files == {"keep", "archive", "archive/beta", "archive/beta/deep", "churn", "churn/sub"}
    deadline = time.monotonic() + 10
    while stack.remote.folders() != holding_files and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.remote.folders() == holding_files


def test_a_file_edited_in_place_with_its_size_and_mtime_kept_arrives_with_its_new_bytes(stack: Stack) -> None:
    """An edit that leaves size, mtime and inode as they were (a tool that restores the mtime, or
    two writes of one size within one tick of a coarse kernel clock) still reaches the remote: the
    watcher saw the bytes written, so the remote's record of that generation is not trusted."""
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    w = stack.watch
    sizes = {"small.bin": 4096, "large.bin": 3 * 1024 * 1024}  # under and over the blind-upload size
    for name, size in sizes.items():
        write(w / name, os.urandom(size))
    stack.wait_mirror(60)
    for name in sizes:
        before = os.stat(w / name)
        with open(w / name, "r+b") as f:
            f.seek(1000)
            f.write(os.urandom(2000))
        os.utime(w / name, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(w / name)
        assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    stack.wait_mirror(60)


def test_moves_inotify_cannot_pair_are_still_moves_on_the_remote(stack: Stack, tap: EventTap) -> None:
    """Renames whose two halves inotify does not give together: a file and a folder moved into a
    folder made a moment before (the new folder is not watched yet), a chain of renames faster
    than the settle period, and a rename made while the watcher was stopped. Each must be a move on the
    remote (the bytes are not sent again), with nothing left under the old names."""
    watcher = stack.start("watcher", SKYNET_SETTLE_MS="50")
    stack.start("uploader", "uploader-a")
    stack.start("uploader", "uploader-b")
    w = stack.watch
    for name in ("big.bin", "chain-a.bin", "offline.bin", *(f"shoot/{i}.raw" for i in range(5))):
        write(w / name, os.urandom(4 * 1024 * 1024))
    stack.wait_mirror(60)
    time.sleep(1)
    mark = tap.mark()
    (w / "archive").mkdir()
    os.rename(w / "big.bin", w / "archive" / "big.bin")
    (w / "2026").mkdir()
    os.rename(w / "shoot", w / "2026" / "shoot")  # a whole folder, into a new folder too
    os.rename(w / "chain-a.bin", w / "chain-b.bin")
    os.rename(w / "chain-b.bin", w / "chain-c.bin")
    os.rename(w / "chain-c.bin", w / "chain-d.bin")
    stack.wait_mirror(60)
    time.sleep(1)
    assert tap.bytes_sent_since(mark) == 0, [(e["path"], e.get("bytes_done")) for e in tap.of("done")]
    moved = {(e.get("src"), e["path"]) for e in tap.since(mark, lambda e: e.get("state") == "moved")}
    assert {("big.bin", "archive/big.bin"), ("chain-a.bin", "chain-d.bin")} <= moved, moved
    assert {("shoot", "2026/shoot")} <= moved or {(f"shoot/{i}.raw", f"2026/shoot/{i}.raw") for i in range(5)} <= moved

    watcher.kill(signal.SIGTERM)
    os.rename(w / "offline.bin", w / "archive" / "offline.bin")
    mark = tap.mark()
    stack.start("watcher", SKYNET_SETTLE_MS="50")
    stack.wait_mirror(60)
    time.sleep(1)
    assert tap.bytes_sent_since(mark) == 0, "a file renamed while the watcher was stopped was sent again"
    assert tap.since(mark, lambda e: e.get("state") == "moved" and e["path"] == "archive/offline.bin")


def test_folders_swapped_through_a_third_name_and_one_moved_out_of_one_just_moved_arrive(stack: Stack) -> None:
    """Moves of folders in and around one another are applied by the uploaders' workers in any
    order: a move that finds nothing under its old name (another not applied yet, or one that
    already reconciled it away) must still leave its files on the remote under the new name."""
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    stack.start("uploader", "uploader-b")
    w = stack.watch
    for i in range(5):
        write(w / "left" / f"l{i}.txt", f"left {i}".encode())
        write(w / "right" / f"r{i}.txt", f"right {i}".encode())
    for i in range(12):
        write(w / "shoot" / "raw" / f"day{i % 3}" / f"img{i}.raw", bytes([i]) * 3000)
    stack.wait_mirror(60)

    (w / "left").rename(w / "swap")  # left <-> right through a third name
    (w / "right").rename(w / "left")
    (w / "swap").rename(w / "right")
    (w / "shoot").rename(w / "shoot-2026")  # a folder moved out of a folder just moved
    (w / "shoot-2026" / "raw").rename(w / "raw-archive")
    final = stack.wait_mirror(60)
    assert stack.remote.read("left/r0.txt") == b"right 0" and stack.remote.read("right/l0.txt") == b"left 0"
    assert len([p for p in final if p.startswith("raw-archive/")]) == 12

    for i in range(60):
        write(w / "batch" / f"b{i}.dat", bytes([i]) * 2000)
    stack.wait_mirror(60)
    (w / "batch").rename(w / "batch-1")  # renamed twice, into a sibling, and back up, at once
    (w / "batch-1").rename(w / "batch-2")
    (w / "batch-2").rename(w / "left" / "batch-2")
    stack.wait_mirror(60)
    (w / "left" / "batch-2").rename(w / "batch")
    final = stack.wait_mirror(60)
    assert len([p for p in final if p.startswith("batch/")]) == 60

"""Issue 8 (1): hostile files in the watched folder, on the real SFTP and S3 servers.

Every case gets a defined outcome — uploaded under a documented mapping, or refused with an event
that says why — and every other file in the same folder still arrives (``wait_mirror`` with the
refused names excluded). docs/security.md lists the outcomes.
"""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from tests.e2e.harness import EventTap, RemoteView, Stack
from tests.e2e.remotes import S3Remote
from tests.fixtures.common import wait_for
from tests.security.hostile import assert_all_alive, reasons, shown, wait_refusal, write_bytes_name

MiB = 1024 * 1024


def start(stack: Stack, **uploader_env: str) -> None:
    stack.start("watcher")
    stack.start("uploader", "uploader-a", **uploader_env)
    (stack.watch / "before.txt").write_text("a good file before")
    stack.wait_mirror(60)


def test_names_that_cannot_be_mapped_are_refused_with_a_readable_event_and_odd_but_valid_names_arrive_byte_exact(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    start(stack)
    w = stack.watch
    refused = {
        write_bytes_name(w, b"latin1-caf\xe9.txt", b"not UTF-8"): "not valid UTF-8",
        write_bytes_name(w, b"broken-\xff\xfe.txt", b"not UTF-8 either"): "not valid UTF-8",
    }
    os.mkdir(bytes(w) + b"/folder-\xe9")
    inner = write_bytes_name(w, b"folder-\xe9/inner.txt", b"inside a folder with a bad name")
    for name in ("new\nline.txt", "carriage\rreturn.txt", "tab\tname.txt", "esc\x1b[31mred.txt", "del\x7f.txt"):
        (w / name).write_text(f"control characters in {name!r}")
        refused[name] = "control character"

    odd_but_valid = {
        "L" * 251 + ".txt": b"a 255-byte name",
        "\u00e9" * 125 + ".txt": b"a 254-byte name in two-byte characters",
        "caf\u00e9.txt": b"NFC",  # the same name as the next one after normalisation...
        "cafe\u0301.txt": b"NFD",  # ...but other bytes: two files on byte-exact targets
        "Readme.TXT": b"mixed case",
        "README.txt": b"upper case",  # a case-insensitive collision: two files here too
        " leading space.txt": b"space",
        "trailing dot.": b"dot",
        "back\\slash.txt": b"a backslash is a character on POSIX",
        "colon: star* what?.txt": b"characters Windows refuses",
        "...": b"three dots is a name, not a parent",
        "%2e%2e": b"percent-encoded dots stay literal",
        "-rf": b"an option-looking name",
        "\u202eevil-txt.exe": b"right-to-left override",
        "emoji-\U0001f680.bin": b"four-byte character",
        "<img src=x onerror=alert(1)>.html": b"markup in a name: data, never markup (the dashboard uses textContent)",
        "'; DROP TABLE files; --.sql": b"SQL in a name: a bound parameter like any other",
    }
    for name, data in odd_but_valid.items():
        (w / name).write_bytes(data)
    deep = w.joinpath(*(["d"] * 100))
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("a hundred folders down")
    # A path of ~1100 bytes: fine on SFTP (the wire limit is 4096), over S3's 1024-byte key limit.
    very_long = w.joinpath(*[f"level-{i:04d}" for i in range(100)])
    very_long.mkdir(parents=True)
    (very_long / "far.txt").write_text("over S3's key limit")
    long_rel = (very_long / "far.txt").relative_to(w).as_posix()
    for i in range(10):
        (w / f"good-{i}.txt").write_text(f"good {i}")

    exclude = set(refused) | {inner}
    if isinstance(remote, S3Remote):
        exclude.add(long_rel)
    stack.wait_mirror(120, exclude=frozenset(exclude))

    snapshot = remote.snapshot()
    for name in odd_but_valid:
        assert remote.read(name) == odd_but_valid[name], f"{name!r} did not arrive byte-exact"
    assert "d/" * 100 + "deep.txt" in snapshot
    assert "caf\u00e9.txt" in snapshot and "cafe\u0301.txt" in snapshot, "NFC and NFD names are two files"
    assert "Readme.TXT" in snapshot and "README.txt" in snapshot
    for name, why in refused.items():
        wait_refusal(tap, shown(name), why)
        assert name not in snapshot and shown(name) not in snapshot
    wait_refusal(tap, shown(inner), "not valid UTF-8")
    if isinstance(remote, S3Remote):
        wait_refusal(tap, long_rel, "over 1024 bytes")
    else:
        assert long_rel in snapshot
    assert_all_alive(stack)


def _mknod_device(path: str) -> bool:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # like /dev/zero: endless if read
    except PermissionError:
        return False
    return True


def test_links_fifos_sockets_and_devices_are_never_followed_or_opened_and_never_block_anything(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    start(stack)
    w = stack.watch
    (w / "inside.txt").write_text("the target of a link inside the folder")
    (w / "sub").mkdir()
    (w / "sub" / "kept.txt").write_text("in a folder someone links to")
    links = {
        "link-to-inside": "inside.txt",
        "link-to-folder": "sub",
        "link-out-file": "/etc/passwd",
        "link-out-root": "/",
        "link-up": "../../..",
        "loop-a": "loop-b",
        "loop-b": "loop-a",
        "self-loop": "self-loop",
        "dangling": "nowhere/at/all",
    }
    for name, target in links.items():
        os.symlink(target, w / name)
    os.mkfifo(w / "fifo-without-writer")
    os.mknod(w / "a-socket", stat.S_IFSOCK | 0o600)
    specials = ["fifo-without-writer", "a-socket"]
    if _mknod_device(str(w / "a-device")):
        specials.append("a-device")
    for i in range(10):
        (w / "after" / f"good-{i}.txt").parent.mkdir(exist_ok=True)
        (w / "after" / f"good-{i}.txt").write_text(f"arrives although the folder is hostile {i}")

    stack.wait_mirror(90)  # the local snapshot holds regular files only, so this is everything
    snapshot = remote.snapshot()
    for name in (*links, *specials):
        assert name not in snapshot, f"{name} reached the remote"
    assert not any(p.startswith(("link-to-folder/", "link-out-root/", "link-up/")) for p in snapshot)
    assert "inside.txt" in snapshot and "sub/kept.txt" in snapshot  # link targets inside arrive as themselves
    for name in links:
        wait_refusal(tap, name, "symlink")
    for name in specials:
        wait_refusal(tap, name, "not a regular file")

    # A file swapped for a link or a FIFO after it was published: the uploader still never follows
    # or opens it (and never hangs on the FIFO).
    stack.procs[1].kill()
    stack.procs.pop(1)  # stopped on purpose
    for name in ("swapped-for-link.txt", "swapped-for-fifo.txt"):
        (w / name).write_text("a plain file at first")
    wait_for(lambda: tap.of("queued", "swapped-for-fifo.txt") and tap.of("queued", "swapped-for-link.txt"), 30)
    os.unlink(w / "swapped-for-link.txt")
    os.symlink("/etc/shadow", w / "swapped-for-link.txt")
    os.unlink(w / "swapped-for-fifo.txt")
    os.mkfifo(w / "swapped-for-fifo.txt")
    stack.start("uploader", "uploader-b")
    (w / "last.txt").write_text("still arrives")
    stack.wait_mirror(90)
    snapshot = remote.snapshot()
    assert "swapped-for-link.txt" not in snapshot and "swapped-for-fifo.txt" not in snapshot
    assert "symlink" in reasons(tap, "swapped-for-link.txt")
    assert "not a regular file" in reasons(tap, "swapped-for-fifo.txt")
    assert_all_alive(stack)


def test_a_file_that_grows_or_shrinks_while_being_read_ends_up_exactly_as_it_finally_is(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    start(stack)
    w = stack.watch
    (w / "growing.bin").write_bytes(os.urandom(24 * MiB))
    (w / "shrinking.bin").write_bytes(os.urandom(24 * MiB))

    def keep_appending() -> None:
        wait_for(lambda: tap.of("started", "growing.bin"), 60, interval=0.01)
        with open(w / "growing.bin", "ab") as f:
            for _ in range(10):
                f.write(os.urandom(MiB))
                f.flush()
                time.sleep(0.1)

    def shrink() -> None:
        wait_for(lambda: tap.of("started", "shrinking.bin"), 60, interval=0.01)
        os.truncate(w / "shrinking.bin", 3 * MiB)

    writers = [threading.Thread(target=keep_appending), threading.Thread(target=shrink)]
    for t in writers:
        t.start()
    for i in range(10):
        (w / f"good-{i}.txt").write_text(f"good {i}")
    for t in writers:
        t.join(90)
    final = stack.wait_mirror(120)
    assert remote.snapshot()["growing.bin"] == final["growing.bin"]
    assert remote.read("shrinking.bin") == (w / "shrinking.bin").read_bytes()
    assert (w / "growing.bin").stat().st_size == 34 * MiB
    wait_for(lambda: not remote.partials(), 60, what="no partial upload left behind")
    assert_all_alive(stack)


def test_a_file_over_the_configured_size_limit_is_refused_clearly_and_smaller_files_arrive(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    start(stack, SKYNET_MAX_FILE_SIZE=str(2 * MiB))
    w = stack.watch
    (w / "too-big.bin").write_bytes(os.urandom(2 * MiB + 1))
    (w / "just-fits.bin").write_bytes(os.urandom(2 * MiB))
    for i in range(5):
        (w / f"good-{i}.txt").write_text(f"good {i}")
    stack.wait_mirror(60, exclude=frozenset({"too-big.bin"}))
    wait_refusal(tap, "too-big.bin", "SKYNET_MAX_FILE_SIZE", str(2 * MiB + 1))
    assert "too-big.bin" not in remote.snapshot()
    wait_for(lambda: not remote.partials(), 60, what="no partial upload left behind")
    assert_all_alive(stack)


@pytest.mark.parametrize("when", ["before the upload", "during the upload"])
def test_a_file_that_disappears_between_its_event_and_its_upload_is_skipped_and_never_half_arrives(
    stack: Stack, remote: RemoteView, tap: EventTap, when: str
) -> None:
    w = stack.watch
    if when == "before the upload":
        stack.start("watcher")
        (w / "ghost.bin").write_bytes(os.urandom(MiB))
        wait_for(lambda: tap.of("queued", "ghost.bin"), 30, what="the watcher to publish ghost.bin")
        (w / "ghost.bin").unlink()
        stack.start("uploader", "uploader-a")
    else:
        start(stack)
        (w / "ghost.bin").write_bytes(os.urandom(40 * MiB))
        wait_for(lambda: tap.of("started", "ghost.bin"), 60, interval=0.01, what="the upload to start")
        (w / "ghost.bin").unlink()
    for i in range(5):
        (w / f"good-{i}.txt").write_text(f"good {i}")
    stack.wait_mirror(90)
    assert "ghost.bin" not in remote.snapshot()
    wait_for(lambda: not remote.partials(), 60, what="no partial upload left behind")
    if when == "before the upload":
        assert "vanished" in wait_refusal(tap, "ghost.bin", "vanished")
    assert_all_alive(stack)


def test_a_name_refused_by_the_start_up_scan_is_a_failure_as_when_it_is_written_later(
    stack: Stack, tap: EventTap
) -> None:
    """The same refusal, whichever way the watcher meets the name: a failure to put right
    (listed in /v1/failures), not a file skipped on purpose like a link."""
    w = stack.watch
    early = write_bytes_name(w, b"early-caf\xe9.txt", b"there before the watcher")
    (w / "early\nline.txt").write_text("a newline in the name")
    os.symlink("/etc/passwd", w / "early-link")
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    wait_refusal(tap, shown(early), "not valid UTF-8")
    wait_refusal(tap, "early\nline.txt", "control character")
    late = write_bytes_name(w, b"late-caf\xe9.txt", b"written while the watcher runs")
    wait_refusal(tap, shown(late), "not valid UTF-8")
    for name in (shown(early), "early\nline.txt", shown(late)):
        assert [e["state"] for e in tap.of("failed", name)] == ["failed"], name
        assert not tap.of("skipped", name), f"{name!r} shown as skipped on purpose"
    wait_for(lambda: tap.of("skipped", "early-link"), 30, what="the link skipped")


def test_a_refused_name_and_a_skipped_link_are_reported_once_not_at_every_write_or_rescan(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    stack.start("watcher", SKYNET_RESCAN_INTERVAL_S="1")
    stack.start("uploader", "uploader-a")
    w = stack.watch
    bad = write_bytes_name(w, b"caf\xe9.txt", b"v1")
    os.symlink("/etc/passwd", w / "link")
    wait_refusal(tap, shown(bad), "not valid UTF-8")
    for _ in range(5):  # each write to the refused file is another inotify event for it
        with open(bytes(w) + b"/caf\xe9.txt", "ab") as f:
            f.write(b" more")
        time.sleep(0.3)
    (w / "good.txt").write_text("still arrives")
    stack.wait_mirror(60, exclude=frozenset({bad, "link"}))
    time.sleep(4)  # four periodic rescans find both again
    refusals = [e for state in ("failed", "skipped") for e in tap.of(state, shown(bad))]
    assert len(refusals) == 1, [e.get("reason") for e in refusals]
    assert len(tap.of("skipped", "link")) == 1, tap.of("skipped", "link")
    assert_all_alive(stack)

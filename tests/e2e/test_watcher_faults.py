"""Issue 2 (2): the watcher killed, and the broker out of reach — nothing is lost."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.e2e.harness import EventTap, Proc, Stack
from tests.fixtures.common import require, wait_for, write_old_files
from tests.fixtures.tcp_proxy import TcpProxy
from tests.fixtures.tmpfs import resize, small_disk


def _broker_via_proxy(stack: Stack) -> tuple[TcpProxy, str]:
    """A TCP proxy in front of the test's broker, and the broker URL that goes through it."""
    parts = urlsplit(stack.amqp_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{proxy.port}"
    return proxy, urlunsplit(parts._replace(netloc=netloc))


def _first_start_with_the_broker_cut(stack: Stack, files: int) -> tuple[TcpProxy, Proc]:
    """A watcher's first start with the broker out of reach (behind a cut proxy), once its scan
    has found ``files`` files. The caller closes the proxy."""
    proxy, via_proxy = _broker_via_proxy(stack)
    proxy.cut()
    try:
        watcher = stack.start("watcher", SKYNET_AMQP_URL=via_proxy)
        wait_for(lambda: f"scan (start-up) of '/': {files} files" in watcher.text(), 30, what="the first scan")
    except BaseException:
        proxy.close()
        raise
    return proxy, watcher


def test_changes_made_while_the_watcher_is_dead_reach_the_remote_after_restart(stack: Stack) -> None:
    w = stack.watch
    for i in range(20):
        (w / f"keep-{i}.txt").write_text(f"keep {i}")
        (w / f"change-{i}.txt").write_text(f"old {i}")
        (w / f"delete-{i}.txt").write_text(f"doomed {i}")
    for name in ("left", "right", "was-a-folder"):
        (w / name).mkdir()
        (w / name / "inner.txt").write_text(f"in {name}")
    (w / "was-a-file").write_text("a file")
    watcher = stack.start("watcher")
    stack.start("uploader")
    stack.wait_mirror(60)

    watcher.kill(signal.SIGKILL)
    for i in range(20):
        (w / f"change-{i}.txt").write_text(f"new content {i}, longer than before")
        (w / f"delete-{i}.txt").unlink()
        (w / "new" / f"n-{i}").parent.mkdir(exist_ok=True)
        (w / "new" / f"n-{i}").write_text(f"born while the watcher was dead {i}")
    (w / "left").rename(w / "swap")  # two folders swapped
    (w / "right").rename(w / "left")
    (w / "swap").rename(w / "right")
    shutil.rmtree(w / "was-a-folder")  # a folder replaced by a file, and the other way round
    (w / "was-a-folder").write_text("a file now")
    (w / "was-a-file").unlink()
    (w / "was-a-file").mkdir()
    (w / "was-a-file" / "inner.txt").write_text("a folder now")
    time.sleep(1)
    stack.start("watcher", "watcher-again")
    stack.wait_mirror(60)


def test_the_watcher_keeps_watching_while_the_broker_is_unreachable_and_publishes_everything_after(
    stack: Stack,
) -> None:
    proxy, via_proxy = _broker_via_proxy(stack)
    try:
        watcher = stack.start("watcher", SKYNET_AMQP_URL=via_proxy)
        stack.start("uploader")
        (stack.watch / "before.txt").write_text("before the outage")
        for folder in ("incoming", "sorted"):
            (stack.watch / folder).mkdir()
            (stack.watch / folder / "scan.pdf").write_text(f"in {folder}")
        stack.wait_mirror(60)

        proxy.cut()
        for i in range(50):
            (stack.watch / f"during-{i}.txt").write_text(f"written while the broker was away {i}")
        wait_for(lambda: stack.outbox_count() >= 50, 30, what="the outbox to hold the 50 actions")
        (stack.watch / "incoming").rename(stack.watch / "sorted" / "batch-1")  # a folder moved in,
        (stack.watch / "sorted").rename(stack.watch / "archive")  # then the folder holding it moved
        time.sleep(2)
        assert watcher.alive(), "the watcher died while the broker was unreachable"
        assert stack.outbox_count() >= 50, "the watcher dropped actions while the broker was away"

        proxy.restore()
        stack.wait_mirror(90)
        wait_for(lambda: stack.outbox_count() == 0, 30, what="the outbox to drain")
    finally:
        proxy.close()


def test_files_found_by_a_first_scan_survive_a_kill_before_the_broker_confirmed_any(stack: Stack) -> None:
    """A first start finds 300 old files with the broker out of reach, and is killed -9: the next
    start publishes every one of them (none was recorded as published before its confirm)."""
    write_old_files(stack.watch, (f"k{i % 5}/file-{i:03}.txt" for i in range(300)))
    proxy, watcher = _first_start_with_the_broker_cut(stack, 300)
    try:
        time.sleep(1)
        watcher.kill(signal.SIGKILL)
    finally:
        proxy.close()
    stack.start("watcher", "watcher-again")
    stack.start("uploader")
    stack.wait_mirror(90)


def test_a_folder_renamed_before_its_new_files_were_published_arrives_under_its_new_name(stack: Stack) -> None:
    """With the broker out of reach, a folder fills with files (some found by the first scan,
    some written since) and is then renamed: every file reaches the remote under the new name."""
    write_old_files(stack.watch, (f"shoot/old-{i:02}.raw" for i in range(40)))
    proxy, _watcher = _first_start_with_the_broker_cut(stack, 40)
    try:
        for i in range(40):
            (stack.watch / "shoot" / f"new-{i:02}.raw").write_text(f"written while the broker was away {i}")
        wait_for(lambda: stack.outbox_count() >= 40, 30, what="the 40 new files in the outbox")
        (stack.watch / "shoot").rename(stack.watch / "shoot-2026-11-27")
        time.sleep(2)
        proxy.restore()
        stack.start("uploader")
        stack.wait_mirror(90)
    finally:
        proxy.close()


def test_a_mass_delete_is_held_until_released_with_the_cli_and_then_applied(stack: Stack) -> None:
    stack.extra_env["SKYNET_DELETE_THRESHOLD"] = "5"
    for i in range(20):
        (stack.watch / f"precious-{i}.txt").write_text(f"precious {i}")
    stack.start("watcher")
    stack.start("uploader")
    stack.wait_mirror(60)
    for i in range(20):
        (stack.watch / f"precious-{i}.txt").unlink()
    time.sleep(4)
    remaining = stack.remote.snapshot()
    assert len(remaining) >= 15, f"a mass delete went through: {len(remaining)} of 20 files left"
    env = stack.env()
    cli = subprocess.run(
        [sys.executable, "-c", "from skynet.api.cli import main; main()", "release-held", "--source", "default"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    stack.wait_mirror(60)


def test_a_start_up_scan_of_10000_folders_does_not_overflow_inotify_or_scan_twice(stack: Stack) -> None:
    """Listing a folder is an open and a close that inotify reports; 10,000 folders listed at start
    (by watchdog adding its watches and by the scan) used to overflow the kernel's queue (16,384
    events by default), which made watchdog rebuild every watch and the watcher scan again."""
    for d in range(10_000):
        folder = stack.watch / f"a{d // 100:03d}" / f"b{d:05d}"
        folder.mkdir(parents=True)
    (stack.watch / "a000" / "b00000" / "one.txt").write_text("one file among many folders")
    watcher = stack.start("watcher")
    wait_for(lambda: "scan (start-up)" in watcher.text(), 120, what="the start-up scan")
    stack.start("uploader")
    (stack.watch / "a099" / "b09999" / "after.txt").write_text("written after the scan")
    stack.wait_mirror(60)
    log = watcher.text()
    assert "overflow" not in log.lower(), log[-2000:]
    assert log.count("scan (") == 1, [line for line in log.splitlines() if "scan (" in line]


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_full_state_disk_keeps_the_watcher_watching_and_every_change_arrives_once_there_is_room(
    stack: Stack, tap: EventTap
) -> None:
    """The outbox and index live on SKYNET_STATE_DIR's disk. When it fills up, the watcher must
    neither die nor forget: it says so (in its log, and in its heartbeat for the status), keeps
    watching, and publishes all of it once it can write."""
    with small_disk(stack.state, "300k"):
        try:
            watcher = stack.start("watcher")
            stack.start("uploader", "uploader-a")
            wait_for(lambda: "scan (start-up)" in watcher.text(), 30, what="the watcher's start")
            for i in range(3000):
                (stack.watch / f"file-with-a-rather-long-name-{i:05}.txt").write_text(f"{i}")
            wait_for(lambda: "cannot write the watcher's state" in watcher.text(), 60, what="the full disk reported")
            assert "SKYNET_STATE_DIR" in watcher.text() and "Traceback" not in watcher.text()
            wait_for(
                lambda: "its state folder refuses writes" in str(tap.conditions("watcher")),
                20,
                what="the watcher's heartbeat to say its state folder is full",
            )
            time.sleep(2)
            assert watcher.alive(), watcher.text()[-2000:]
            (stack.watch / "written-while-full.txt").write_text("changes go on while the disk is full")
            (stack.watch / "file-with-a-rather-long-name-00007.txt").unlink()
            resize(stack.state, "50m")
            stack.wait_mirror(120)
            assert watcher.alive()
            wait_for(
                lambda: list(tap.conditions("watcher").values()) == [None],
                20,
                what="the watcher's heartbeat to say nothing keeps it from its work any more",
            )
        finally:
            stack.stop_all()


# A user namespace of its own, whose inotify watch limit is 50: the kernel's per-user limit
# (fs.inotify.max_user_watches, often 8,192) met by a tree of a few dozen folders, without
# touching the machine's own limit.
WATCH_LIMIT_50 = (
    "unshare",
    "--user",
    "--map-root-user",
    "sh",
    "-c",
    'echo 50 > /proc/sys/user/max_inotify_watches && exec "$@"',
    "sh",
)


def _user_namespaces_work() -> bool:
    done = subprocess.run([*WATCH_LIMIT_50, "true"], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_past_the_inotify_watch_limit_the_watcher_says_so_and_polls_instead_of_missing_changes(
    stack: Stack, tap: EventTap
) -> None:
    """watchdog skips the folders it cannot watch without a word: their changes would wait for the
    periodic rescan (5 minutes by default). Reached at start or later, the limit is reported with
    the setting to raise, and the watcher polls instead."""
    require(_user_namespaces_work(), "unprivileged user namespaces (unshare --user)")
    w = stack.watch
    for i in range(20):
        (w / f"early-{i:02}").mkdir()
        (w / f"early-{i:02}" / "a.txt").write_text(f"early {i}")
    watcher = stack.start("watcher", wrap=WATCH_LIMIT_50)
    stack.start("uploader", "uploader-a")
    stack.wait_mirror(30)
    assert "with InotifyObserver" in watcher.text()
    for i in range(60):  # past the limit while running
        (w / f"late-{i:02}").mkdir()
        (w / f"late-{i:02}" / "b.txt").write_text(f"late {i}")
    stack.wait_mirror(30)
    wait_for(lambda: "with PollingObserver" in watcher.text(), 15, what="the switch to polling")
    assert "inotify watch limit is reached" in watcher.text() and "max_user_watches" in watcher.text()
    wait_for(lambda: "max_user_watches" in str(tap.conditions("watcher")), 20, what="the watcher's heartbeat to say so")
    for i in range(60):  # folders inotify could never have watched: seen by polling, not a rescan
        (w / f"late-{i:02}" / "c.txt").write_text(f"later {i}")
    stack.wait_mirror(20)
    assert watcher.alive()

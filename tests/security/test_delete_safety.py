"""Issue 8 (3): the delete safety rule, with SKYNET_DELETE_MODE=mirror on the real SFTP and S3 servers.

When the watched root disappears, is replaced by another (empty) folder — what an unmounted share
looks like — or a burst of deletes exceeds SKYNET_DELETE_THRESHOLD within SKYNET_DELETE_WINDOW_S,
the deletes are held and reported with a ``held`` event, never applied wholesale. An admin
releases them (``release.<source>`` on the ``skynet.control`` exchange); only then are they applied.
"""

from __future__ import annotations

import shutil
import signal
import time

from skynet.common import admin
from tests.e2e.harness import EventTap, RemoteView, Stack
from tests.fixtures.common import wait_for
from tests.security.hostile import assert_all_alive

FILES = 40


def fill(stack: Stack) -> dict[str, str]:
    for i in range(FILES):
        folder = stack.watch / f"folder-{i % 4}"
        folder.mkdir(exist_ok=True)
        (folder / f"file-{i}.txt").write_text(f"precious {i}")
    return stack.wait_mirror(60)


def release(amqp_url: str, source: str = "default") -> None:
    """What an admin does (``skynet release-held``, ``POST /v1/admin/release-held``): ask the
    watcher of ``source``, through ``release.<source>`` on the control exchange, to release."""
    admin.release_held(amqp_url, source)


def assert_nothing_deleted_for(seconds: float, remote: RemoteView, before: dict[str, str], tap: EventTap) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert remote.snapshot() == before, "a remote file was deleted while deletes should be held"
        time.sleep(0.5)
    assert not tap.of("deleted"), f"deleted events while deletes should be held: {tap.of('deleted')[:3]}"


def test_removing_the_watched_root_deletes_nothing_remotely_and_says_deletes_are_held(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    before = fill(stack)
    assert len(before) == FILES

    shutil.rmtree(stack.watch)

    wait_for(lambda: tap.of("held"), 30, what="a held event")
    assert_nothing_deleted_for(8, remote, before, tap)
    assert any("gone" in str(e.get("reason")) for e in tap.of("held")), tap.of("held")
    wait_for(
        lambda: "the watched folder is gone, unmounted or replaced" in str(tap.conditions("watcher")),
        20,
        what="the watcher's heartbeat to say so (for the status)",
    )
    assert_all_alive(stack)


def test_a_root_replaced_by_an_empty_folder_deletes_nothing_until_an_admin_releases_the_deletes(
    stack: Stack, remote: RemoteView, tap: EventTap, amqp_url: str
) -> None:
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    before = fill(stack)

    stack.watch.rename(stack.base / "watched-aside")  # what an unmount looks like from inside
    stack.watch.mkdir()

    wait_for(lambda: tap.of("held"), 30, what="a held event")
    assert any("replaced" in str(e.get("reason")) for e in tap.of("held")), tap.of("held")
    # A full rescan would have the remote's files that the folder does not hold deleted: with
    # the root replaced, that is every one of them, so it must ask for none.
    admin.request_rescan(amqp_url, "default", full=True)
    assert_nothing_deleted_for(8, remote, before, tap)  # more than two rescans of the empty folder
    assert "replaced" in str(tap.conditions("watcher")), "the status does not say why deletes wait"

    release(amqp_url)
    stack.wait_mirror(60)
    assert remote.snapshot() == {}, "the released deletes were applied"
    mark = tap.mark()
    wait_for(
        lambda: list(tap.conditions("watcher", mark).values()) == [None],
        20,
        what="the watcher's heartbeat to say nothing keeps it from its work any more",
    )
    (stack.watch / "new.txt").write_text("written in the new folder after the release")
    stack.wait_mirror(30)
    assert_all_alive(stack)


def test_a_burst_of_deletes_over_the_threshold_is_held_until_an_admin_releases_it(
    stack: Stack, remote: RemoteView, tap: EventTap, amqp_url: str
) -> None:
    threshold = 5
    stack.start("watcher", SKYNET_DELETE_THRESHOLD=str(threshold), SKYNET_DELETE_WINDOW_S="60")
    stack.start("uploader", "uploader-a")
    fill(stack)

    for i in range(FILES):
        (stack.watch / f"folder-{i % 4}" / f"file-{i}.txt").unlink()
    (stack.watch / "kept.txt").write_text("a new file still arrives while deletes are held")

    wait_for(lambda: tap.of("held"), 30, what="a held event")
    wait_for(lambda: "kept.txt" in remote.snapshot(), 30, what="kept.txt to arrive")
    time.sleep(5)
    remaining = {p for p in remote.snapshot() if p != "kept.txt"}
    assert len(remaining) >= FILES - threshold, f"only {len(remaining)} of {FILES} files are left remotely"
    assert len(tap.of("deleted")) <= threshold
    assert any("more than" in str(e.get("reason")) for e in tap.of("held"))

    release(amqp_url)
    stack.wait_mirror(60)
    assert set(remote.snapshot()) == {"kept.txt"}, "the released deletes were applied"
    assert_all_alive(stack)


def test_a_watcher_restarted_while_its_share_is_not_mounted_deletes_nothing_until_released(
    stack: Stack, remote: RemoteView, tap: EventTap, amqp_url: str
) -> None:
    watcher = stack.start("watcher")
    stack.start("uploader", "uploader-a")
    before = fill(stack)
    watcher.kill(signal.SIGTERM)
    stack.procs.remove(watcher)

    stack.watch.rename(stack.base / "share-not-mounted")  # at boot: an empty mount point
    stack.watch.mkdir()
    stack.start("watcher", "watcher-after-reboot")

    wait_for(lambda: tap.of("held"), 30, what="a held event")
    assert_nothing_deleted_for(8, remote, before, tap)

    release(amqp_url)
    stack.wait_mirror(60)
    assert remote.snapshot() == {}, "the released deletes were applied"
    (stack.watch / "new.txt").write_text("the new folder is watched")
    stack.wait_mirror(30)
    assert_all_alive(stack)


def test_a_held_delete_is_reported_once_however_many_rescans_find_the_file_missing(
    stack: Stack, remote: RemoteView, tap: EventTap, amqp_url: str
) -> None:
    threshold = 5
    stack.start(
        "watcher", SKYNET_DELETE_THRESHOLD=str(threshold), SKYNET_DELETE_WINDOW_S="60", SKYNET_RESCAN_INTERVAL_S="1"
    )
    stack.start("uploader", "uploader-a")
    fill(stack)
    for i in range(FILES):
        (stack.watch / f"folder-{i % 4}" / f"file-{i}.txt").unlink()
    wait_for(lambda: len(tap.of("held")) >= FILES - threshold, 30, what="the held events")
    time.sleep(5)  # five periodic rescans find the same files still missing
    held = [str(e["path"]) for e in tap.of("held")]
    assert len(held) == len(set(held)), f"{len(held) - len(set(held))} held deletes were reported again"
    release(amqp_url)
    stack.wait_mirror(60)
    assert remote.snapshot() == {}, "the released deletes were applied"

"""A remote changed behind skynet's back: files deleted or overwritten there by someone else, a
bucket emptied and recreated. The watcher's index still says they were sent, so a plain rescan
(which compares the folder with the index) cannot see it; a full rescan checks every file against
the remote and sends only what is missing or different there."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.harness import EventTap, RemoteView, Stack
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
        (remote.t.local_dir / rel).write_bytes(data)
        return
    assert isinstance(remote, S3Remote)
    remote.t.client.put_object(Bucket=remote.t.bucket, Key=f"{remote.t.prefix}/{rel}", Body=data)


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

    gone = ["batch-0/file-03.dat", "batch-2/file-21.dat", "batch-3/file-39.dat"]
    changed = "batch-1/file-12.dat"
    for rel in gone:
        remote_delete(remote, rel)
    remote_overwrite(remote, changed, b"someone else's bytes")
    assert remote.read(gone[0]) is None and remote.read(changed) == b"someone else's bytes"

    mark = tap.mark()
    cli = subprocess.run(
        [sys.executable, "-m", "skynet.api.cli", "rescan", "--source", stack.source, "--full"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "full rescan" in cli.stdout
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

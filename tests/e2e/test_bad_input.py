"""Issue 2 (3): bad files and bad messages get a clear answer, and every other file arrives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pika
import pytest

from skynet.common.messages import Generation, PathChanged, encode
from skynet.common.topology import ACTIONS_EXCHANGE, HEADER_REASON, dead_queue
from tests.e2e.harness import EventTap, NoRemote, RemoteView, Stack
from tests.e2e.remotes import S3Remote, SftpRemote
from tests.fixtures.common import free_port, wait_for

# As root every file is readable: drop the capabilities that let root ignore file modes, so
# that mode 000 means "unreadable" for the uploader as it would for any service account.
NO_DAC = (
    ("setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search")
    if os.geteuid() == 0 and shutil.which("setpriv")
    else ()
)


def publish_raw(amqp_url: str, body: bytes, routing_key: str = "default") -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(ACTIONS_EXCHANGE, routing_key, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    conn.close()


def dead_letters(amqp_url: str, source: str = "default") -> list[tuple[bytes, str]]:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    out = []
    while True:
        method, props, body = ch.basic_get(dead_queue(source), auto_ack=False)
        if method is None:
            break
        out.append((body, str((props.headers or {}).get(HEADER_REASON, ""))))
    conn.close()  # unacked: they go back to the queue
    return out


def test_bad_files_and_bad_messages_are_refused_clearly_while_every_other_file_arrives(
    stack: Stack, amqp_url: str, remote: RemoteView, tap: EventTap
) -> None:
    can_test_unreadable = os.geteuid() != 0 or bool(NO_DAC)
    try:
        stack.start("watcher")
        stack.start("uploader", "uploader-a", wrap=NO_DAC)
        w = stack.watch
        (w / "before.txt").write_text("a good file")
        stack.wait_mirror(60)

        # An unreadable file, a FIFO, symlinks leading out of the folder, good files around them.
        secret = w / "unreadable.bin"
        secret.write_bytes(b"nobody may read this")
        secret.chmod(0o000)
        os.mkfifo(w / "a-fifo")
        os.symlink("/etc/passwd", w / "passwd-link")
        os.symlink("/etc", w / "etc-link")
        os.symlink("../../..", w / "up-link")
        for i in range(10):
            (w / "good" / f"file-{i}.txt").parent.mkdir(exist_ok=True)
            (w / "good" / f"file-{i}.txt").write_text(f"good {i}")

        # Malformed messages on the queue, and a hint about a file that no longer exists.
        publish_raw(amqp_url, b"\x00\xffnot json at all")
        publish_raw(amqp_url, b'{"type": "action.changed.v99", "source": "default", "path": "x"}')
        publish_raw(amqp_url, b'{"type": "action.changed.v1", "source": "default", "path": "../../etc/passwd"}')
        publish_raw(amqp_url, b"[" * 70_000)
        ghost = PathChanged(source="default", path="ghost.txt", generation=Generation(size=3, mtime_ns=1, inode=1))
        publish_raw(amqp_url, encode(ghost))
        for i in range(10, 20):
            (w / "good" / f"file-{i}.txt").write_text(f"good {i}")

        stack.wait_mirror(90, exclude=frozenset({"unreadable.bin"}))
        snapshot = remote.snapshot()
        for bad in ("unreadable.bin", "a-fifo", "passwd-link", "etc-link", "up-link", "ghost.txt"):
            assert bad not in snapshot, f"{bad} reached the remote"
        assert not any(p.startswith(("etc-link/", "up-link/")) for p in snapshot), "a symlink was followed"

        def reason_for(path: str, state: str) -> str:
            return " ".join(str(e.get("reason")) for e in tap.of(state, path))

        wait_for(lambda: "FIFO" in reason_for("a-fifo", "skipped"), 30, what="a skipped event for the FIFO")
        assert "symlink" in reason_for("passwd-link", "skipped")
        assert "symlink" in reason_for("etc-link", "skipped")
        assert "vanished" in reason_for("ghost.txt", "skipped")
        if can_test_unreadable:
            wait_for(
                lambda: "unreadable" in reason_for("unreadable.bin", "failed") or tap.of("failed", "unreadable.bin"),
                60,
                what="a failed event for the unreadable file",
            )

        dead = wait_for(lambda: len(dead_letters(amqp_url)) >= 4 and dead_letters(amqp_url), 30, what="dead letters")
        assert isinstance(dead, list)
        reasons = [r for _b, r in dead]
        assert any("not JSON" in r for r in reasons), reasons
        assert any("unknown action type or version" in r for r in reasons), reasons
        assert any("'..'" in r for r in reasons), reasons
        assert any("limit" in r for r in reasons), reasons
        alive = [p for p in stack.procs if not p.alive()]
        assert not alive, f"a service died on bad input: {stack.tail_logs()}"
    finally:
        for p in (stack.watch / "unreadable.bin",):
            if p.exists():
                p.chmod(0o644)
        stack.stop_all()


def test_a_top_level_skynet_folder_arrives_on_sftp_and_is_refused_clearly_on_s3(
    stack: Stack, remote: RemoteView, tap: EventTap
) -> None:
    """On S3 ``<prefix>/.skynet/`` holds skynet's multipart markers, never listed: a user's folder of
    that name would be uploaded and then never seen again, or overwrite a marker."""
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    w = stack.watch
    (w / ".skynet" / "uploads").mkdir(parents=True)
    (w / ".skynet" / "notes.txt").write_text("mine")
    (w / ".skynet" / "uploads" / ("0" * 40)).write_text("looks like a marker")
    (w / "sub" / ".skynet").mkdir(parents=True)
    (w / "sub" / ".skynet" / "fine.txt").write_text("only the top level is reserved")
    (w / "other.txt").write_text("the rest goes on")
    top = frozenset({".skynet/notes.txt", f".skynet/uploads/{'0' * 40}"})
    if isinstance(remote, SftpRemote):
        stack.wait_mirror(60)
        return
    stack.wait_mirror(60, exclude=top)
    for rel in top:
        reason = wait_for(lambda r=rel: " ".join(str(e.get("reason")) for e in tap.of("failed", r)), 30, what=rel)
        assert "bookkeeping" in str(reason) and "rename the folder" in str(reason), reason
        assert remote.read(rel) is None
    assert remote.read("sub/.skynet/fine.txt") == b"only the top level is reserved"


def remote_mtime_ns(remote: RemoteView, rel: str) -> int | None:
    """The local mtime the remote records for ``rel`` (SFTP: the file's own; S3: the metadata)."""
    if isinstance(remote, SftpRemote):
        try:
            return (remote.t.local_dir / rel).stat().st_mtime_ns
        except FileNotFoundError:
            return None
    assert isinstance(remote, S3Remote)
    try:
        head = remote.t.client.head_object(Bucket=remote.t.bucket, Key=f"{remote.t.prefix}/{rel}")
    except remote.t.client.exceptions.ClientError:
        return None
    token = head.get("Metadata", {}).get("skynet-generation", "")
    return int(token.split(":")[1]) if token.count(":") == 2 else None


def test_a_file_or_folder_made_readable_later_arrives_and_a_new_mtime_alone_reaches_the_remote(
    stack: Stack, remote: RemoteView
) -> None:
    """chmod, chown and utime change no byte and open no file: inotify says IN_ATTRIB only."""
    if not (os.geteuid() != 0 or NO_DAC):
        if os.environ.get("CI"):
            pytest.fail("setpriv (util-linux) is needed to run the services without root's file access")
        pytest.skip("running as root without setpriv: every file is readable")
    try:
        stack.start("watcher", wrap=NO_DAC)
        stack.start("uploader", "uploader-a", wrap=NO_DAC)
        w = stack.watch
        (w / "plain.txt").write_text("mirrored first")
        stack.wait_mirror(60)

        # Written unreadable (a umask of 077, another owner), or in a folder nobody may list.
        (w / "late.txt").write_text("readable only later")
        (w / "late.txt").chmod(0o000)
        (w / "closed").mkdir()
        (w / "closed").chmod(0o000)
        (w / "closed" / "inside.txt").write_text("in a folder that could not be listed")
        (w / "marker.txt").write_text("after the unreadable ones")
        wait_for(lambda: "marker.txt" in remote.snapshot(), 60, what="the marker file on the remote")
        assert "late.txt" not in remote.snapshot()

        # Made readable: no byte and no generation changed, and both still arrive.
        (w / "late.txt").chmod(0o644)
        (w / "closed").chmod(0o755)
        stack.wait_mirror(60)

        # A new mtime set without opening the file (os.utime, cp -p, rsync -t) reaches the remote.
        os.utime(w / "plain.txt", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
        wait_for(
            lambda: remote_mtime_ns(remote, "plain.txt") == 1_000_000_000_000_000_000,
            60,
            what="the remote to record plain.txt's new mtime",
        )
    finally:
        for p in (stack.watch / "late.txt", stack.watch / "closed"):
            if p.exists():
                p.chmod(0o755)
        stack.stop_all()


def test_an_unreachable_broker_is_reported_in_one_line_with_its_cause(tmp_path: Path) -> None:
    """No pika tracebacks: the service's own line names the broker (password masked) and why."""
    port = free_port()  # nothing listens there
    url = f"amqp://guest:not-a-real-secret@127.0.0.1:{port}/"
    target = tmp_path / "remote"
    target.mkdir()
    stack = Stack(tmp_path / "stack", url, NoRemote(), extra_env={"SKYNET_TARGET": f"file://{target}"})
    try:
        procs = [stack.start("watcher"), stack.start("uploader")]
        for p in procs:
            wait_for(lambda p=p: "Connection refused" in p.text(), 30, what=f"{p.name} to report the broker")
        for p in procs:
            lines = [line for line in p.text().splitlines() if "Connection refused" in line]
            assert f"127.0.0.1:{port}" in lines[0] and "reconnecting in" in lines[0], lines[0]
            assert "Traceback" not in p.text(), p.text()[-3000:]
            assert "not-a-real-secret" not in p.text()
            assert p.alive()
    finally:
        stack.stop_all()

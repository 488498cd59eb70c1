"""Issue 3: crash-proof transfers, shown by breaking things on purpose.

Every case ends with the remote equal to the local folder (paths and SHA-256) and records a row
(fault, files, bytes sent, bytes re-sent, lost) in the table printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from skynet.common import admin
from skynet.common.admin import requeue_dead
from skynet.common.topology import HEADER_ATTEMPTS, HEADER_REASON, actions_queue, dead_queue
from skynet.uploader.storage._s3_multipart import part_size_for
from skynet.uploader.storage.sftp import RESUME_MARGIN, WRITE_CHUNK
from tests.e2e.harness import EventTap, Proc, RemoteView, Stack
from tests.e2e.remotes import S3Remote, SftpRemote
from tests.faults.conftest import FaultReport
from tests.fixtures.broker import AMQP_HOST, AMQP_PORT, PrivateBroker, amqp_url_for, queue_depth
from tests.fixtures.common import wait_for
from tests.fixtures.s3_server import S3Server, S3Target, make_target
from tests.fixtures.sftp_server import SftpServer, SftpTarget
from tests.fixtures.sftp_server import make_target as make_sftp_target
from tests.fixtures.tcp_proxy import TcpProxy

MiB = 1024 * 1024
BIG = int(os.environ.get("SKYNET_TEST_BIG_MIB", "512")) * MiB


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def remote_bytes_in_flight(remote: RemoteView) -> int:
    """Bytes of unfinished uploads held by the remote (SFTP partial files; S3 open multipart parts)."""
    if isinstance(remote, SftpRemote):
        total = 0
        for dirpath, _d, files in os.walk(remote.t.local_dir):
            total += sum(os.path.getsize(Path(dirpath, f)) for f in files if f.endswith(".skynet-partial"))
        return total
    assert isinstance(remote, S3Remote)
    client, bucket = remote.t.client, remote.t.bucket
    total = 0
    for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        parts = client.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts", [])
        total += sum(p["Size"] for p in parts)
    return total


def _consumers(url: str, source: str = "default") -> int:
    """How many consumers the source's actions queue has (uploader replicas taking work)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(conn.channel().queue_declare(actions_queue(source), passive=True).method.consumer_count)
    finally:
        conn.close()


def dead_letters(url: str, source: str = "default") -> list[tuple[bytes, dict[str, object]]]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        out = []
        while True:
            try:
                method, props, body = ch.basic_get(dead_queue(source), auto_ack=False)
            except pika.exceptions.ChannelClosedByBroker:
                return out  # not declared yet: nothing dead

            if method is None:
                return out
            out.append((body, dict(props.headers or {})))
    finally:
        conn.close()


@pytest.fixture
def progress_tap(amqp_url: str) -> Iterator[EventTap]:
    t = EventTap(amqp_url, keys=("file.#", "worker.#", "progress.#")).start()
    yield t
    t.stop()


# ----------------------------------------------------------------------------- 1. SIGKILL mid-upload


SLOW_LINK_BYTES_S = 10 * MiB  # per connection and direction


@contextlib.contextmanager
def _slow_link(remote: RemoteView) -> Iterator[dict[str, str]]:
    """The environment that sends an uploader to ``remote`` through a rate-limited proxy."""
    if isinstance(remote, SftpRemote):
        server = remote.t.server
        proxy = TcpProxy(server.host, server.port, rate_bytes_s=SLOW_LINK_BYTES_S).start()
        env = {
            "SKYNET_TARGET": remote.t.target.replace(f":{server.port}/", f":{proxy.port}/", 1),
            "SKYNET_SFTP_KNOWN_HOSTS": server.known_hosts_for(proxy.port),
        }
    else:
        assert isinstance(remote, S3Remote)
        host, port = str(remote.t.settings.s3_endpoint_url).rsplit("/", 1)[-1].split(":")
        proxy = TcpProxy(host, int(port), rate_bytes_s=SLOW_LINK_BYTES_S).start()
        env = {"SKYNET_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    try:
        yield env
    finally:
        proxy.close()


def _mirrored_once_late_uploads_landed(stack: Stack, timeout: float) -> None:
    """The remote mirrors the folder, and still does once an upload under an old name that ended
    late would have landed."""
    stack.wait_mirror(timeout)
    time.sleep(3)
    stack.wait_mirror(10)


def _no_partial_left(remote: RemoteView) -> str:
    """Asserts that no partial or open multipart upload is left; returns the remote's kind."""
    assert not remote.partials(), "a partial or an open multipart upload was left"
    return "sftp" if isinstance(remote, SftpRemote) else "s3"


def _kill_at_40_percent(stack: Stack, uploader: Proc, progress_tap: EventTap) -> None:
    def far_enough() -> bool:
        done = [int(e.get("bytes_done") or 0) for e in progress_tap.of("progress", "huge.bin")]
        return bool(done) and max(done) >= BIG * 0.4

    try:
        wait_for(far_enough, 300, interval=0.05, what="the upload to pass 40%")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; logs:\n{stack.tail_logs(60)}") from None
    assert not progress_tap.of("done", "huge.bin"), "the upload ended before it could be interrupted"
    uploader.kill(signal.SIGKILL)
    time.sleep(1)


def test_an_uploader_killed_mid_upload_is_finished_by_another_from_where_it_stopped(
    stack: Stack, progress_tap: EventTap, remote: RemoteView, report: FaultReport
) -> None:
    stack.start("watcher")
    # The first uploader reaches the remote through a slow link, so that it is still sending when
    # the test sees 40 % (on a fast host a direct 512 MiB upload can end between two progress ticks).
    with _slow_link(remote) as slow_env:
        first = stack.start("uploader", "uploader-first", **slow_env)
        write_random(stack.watch / "huge.bin", BIG)
        _kill_at_40_percent(stack, first, progress_tap)

    held_at_kill = remote_bytes_in_flight(remote)
    assert held_at_kill > 0, "nothing of the interrupted upload was left to resume from"

    stack.start("uploader", "uploader-second")
    stack.wait_mirror(300)
    done = progress_tap.of("done", "huge.bin")
    assert done, "no done event for the big file"
    resumed_from = int(done[-1].get("resumed_from") or 0)
    sent_by_second = int(done[-1].get("bytes_done") or 0)
    unit = WRITE_CHUNK + RESUME_MARGIN if isinstance(remote, SftpRemote) else part_size_for(BIG)
    resent = held_at_kill - resumed_from
    kind = "sftp" if isinstance(remote, SftpRemote) else "s3"
    report.row(f"SIGKILL uploader mid {BIG // MiB} MiB upload ({kind})", 1, held_at_kill + sent_by_second, resent, 0)
    assert resumed_from > 0, "the second uploader started from zero"
    assert resent <= 2 * unit, f"re-sent {resent} bytes; at most two {unit}-byte units allowed"
    assert sent_by_second <= BIG - resumed_from
    assert remote_bytes_in_flight(remote) == 0 and not remote.partials(), "orphaned partial/multipart left"


def test_a_folder_and_a_file_renamed_mid_upload_arrive_under_their_new_names_and_nothing_else(
    stack: Stack, progress_tap: EventTap, remote: RemoteView, report: FaultReport
) -> None:
    """A camera's dump folder renamed while its clip is still being sent, and a file renamed the
    same way. The uploads under way belong to names that no longer exist; the moves find nothing
    on the remote to move. Each file must still end up under its new name, with nothing under the
    old ones and no partial left (the folder's clip never arrived before the fix)."""
    size = 40 * MiB
    stack.start("watcher", SKYNET_SETTLE_MS="100")
    with _slow_link(remote) as slow_env:
        stack.start("uploader", "uploader-a", **slow_env)
        stack.start("uploader", "uploader-b", **slow_env)
        (stack.watch / "shoot").mkdir()
        write_random(stack.watch / "shoot" / "clip.bin", size)
        write_random(stack.watch / "alone.bin", size)
        wait_for(
            lambda: {e["path"] for e in progress_tap.of("progress")} >= {"shoot/clip.bin", "alone.bin"},
            60,
            interval=0.05,
            what="both uploads under way",
        )
        assert not progress_tap.of("done"), "an upload ended before the renames"
        os.rename(stack.watch / "shoot", stack.watch / "shoot-2026")
        os.rename(stack.watch / "alone.bin", stack.watch / "renamed.bin")
        _mirrored_once_late_uploads_landed(stack, 240)
    kind = _no_partial_left(remote)
    assert not progress_tap.of("dead")
    report.row(f"folder and file renamed mid {size // MiB} MiB uploads ({kind})", 2, 0, 0, 0)


def test_a_file_renamed_mid_upload_whose_move_another_uploader_applied_first_leaves_no_old_name(
    stack: Stack, progress_tap: EventTap, remote: RemoteView, report: FaultReport
) -> None:
    """Two replicas: one is sending a file in a single request (an S3 PUT, which leaves no trace
    on the remote until it is complete), the other handles the file's rename meanwhile and finds
    nothing under the old name to move or delete. The PUT then lands under the old name. The
    sender asks the watcher about it, and the watcher's delete removes it: the remote ends with
    the new name only (it kept both before)."""
    size = 60 * MiB  # about 6 s through the slow link; one PUT below the 100 MiB threshold
    stack.start("watcher", SKYNET_SETTLE_MS="100")
    with _slow_link(remote) as slow_env:
        # One transfer and one spare delivery: the filler below takes the spare, so the rename's
        # action can only go to the second replica.
        stack.start(
            "uploader", "uploader-slow", SKYNET_CONCURRENCY="1", SKYNET_S3_MULTIPART_THRESHOLD_MIB="100", **slow_env
        )
        write_random(stack.watch / "clip.bin", size)
        wait_for(lambda: progress_tap.of("started", "clip.bin"), 60, interval=0.05, what="the upload under way")
        (stack.watch / "filler.txt").write_text("holds the slow replica's spare delivery")
        wait_for(lambda: progress_tap.of("queued", "filler.txt"), 30, interval=0.05, what="the filler queued")
        time.sleep(0.5)  # delivered to the slow replica's spare slot
        stack.start("uploader", "uploader-fast")
        wait_for(lambda: _consumers(stack.amqp_url) == 2, 30, interval=0.1, what="the second replica consuming")
        assert not progress_tap.of("done", "clip.bin"), "the upload ended before the rename"
        os.rename(stack.watch / "clip.bin", stack.watch / "clip-2026.bin")
        _mirrored_once_late_uploads_landed(stack, 120)
    kind = _no_partial_left(remote)
    report.row(
        f"file renamed mid {size // MiB} MiB single-request upload, move on another replica ({kind})", 2, 0, 0, 0
    )


def test_a_folder_renamed_while_its_file_is_sent_in_one_request_arrives_under_the_new_name_only(
    stack: Stack, progress_tap: EventTap, remote: RemoteView, report: FaultReport
) -> None:
    """One uploader, two workers. One sends a file of a folder in a single request; the other
    handles the folder's rename meanwhile, lists the old folder on the remote and finds nothing to
    move (an S3 PUT shows nothing until it completes). The PUT then lands under the old folder.
    The file must end up under the new folder only: before the sender told the watcher what it
    left there, it stayed under the old name and never reached the new one."""
    size = 60 * MiB  # about 6 s through the slow link; one PUT below the 100 MiB threshold
    stack.start("watcher", SKYNET_SETTLE_MS="100")
    with _slow_link(remote) as slow_env:
        stack.start(
            "uploader", "uploader-a", SKYNET_CONCURRENCY="2", SKYNET_S3_MULTIPART_THRESHOLD_MIB="100", **slow_env
        )
        (stack.watch / "shoot").mkdir()
        write_random(stack.watch / "shoot" / "clip.bin", size)
        wait_for(lambda: progress_tap.of("started", "shoot/clip.bin"), 60, interval=0.05, what="the upload under way")
        os.rename(stack.watch / "shoot", stack.watch / "shoot-2026")
        _mirrored_once_late_uploads_landed(stack, 120)
    kind = _no_partial_left(remote)
    report.row(f"folder renamed mid {size // MiB} MiB single-request upload, one uploader ({kind})", 1, 0, 0, 0)


def test_an_uploader_cut_from_the_broker_and_killed_after_its_put_landed_under_a_renamed_folder_loses_nothing(
    tmp_path: Path, amqp_url: str, amqp_vhost: str, s3_target: S3Target, progress_tap: EventTap, report: FaultReport
) -> None:
    """As above, but the uploader whose PUT lands under the old folder cannot tell the watcher:
    its link to the broker is cut, and it is killed -9 before the link is back. Its action was
    never acknowledged, so another uploader gets it again, finds the queued version on the
    remote under a folder that is gone here, and asks. Before, the request waited in the killed
    uploader's memory and the file never reached the new folder."""
    remote = S3Remote(s3_target)

    def landed() -> bool:
        listed = s3_target.client.list_objects_v2(Bucket=s3_target.bucket, Prefix=f"{s3_target.prefix}/shoot/")
        return bool(listed.get("KeyCount"))

    stack = Stack(tmp_path, amqp_url, remote)
    broker_link = TcpProxy(AMQP_HOST, AMQP_PORT).start()
    size = 90 * MiB  # about 9 s through the slow link; one PUT below the 100 MiB threshold
    try:
        stack.start("watcher", SKYNET_SETTLE_MS="100")
        with _slow_link(remote) as slow_env:
            cut_off = stack.start(
                "uploader",
                "uploader-a",
                SKYNET_CONCURRENCY="2",
                SKYNET_S3_MULTIPART_THRESHOLD_MIB="100",
                SKYNET_AMQP_URL=amqp_url_for(amqp_vhost, broker_link.host, broker_link.port),
                **slow_env,
            )
            (stack.watch / "shoot").mkdir()
            write_random(stack.watch / "shoot" / "clip.bin", size)
            wait_for(lambda: progress_tap.of("started", "shoot/clip.bin"), 60, interval=0.05, what="the upload")
            os.rename(stack.watch / "shoot", stack.watch / "shoot-2026")
            # The folder's move reaches the uploader's other worker, which finds nothing there yet.
            wait_for(lambda: queue_depth(amqp_url, actions_queue("default")) == 0, 10, what="the move delivered")
            time.sleep(0.5)
            broker_link.cut()
            assert not landed(), "the PUT landed before the link was cut: too fast a link for this test"
            wait_for(landed, 60, what="the PUT landed under the old folder")
            time.sleep(1)  # its request to the watcher fails: the link is cut
            cut_off.kill()
        broker_link.restore()
        stack.start("uploader", "uploader-b", SKYNET_CONCURRENCY="2")
        _mirrored_once_late_uploads_landed(stack, 120)
    finally:
        stack.stop_all()
        broker_link.close()
    _no_partial_left(remote)
    report.row("uploader cut off and killed after a late PUT (s3)", 1, 0, 0, 0)


# ----------------------------------------------------------------------------- 2. broker restart


def test_every_file_arrives_intact_when_rabbitmq_restarts_mid_flow(
    tmp_path: Path, private_broker: PrivateBroker, sftp_target: SftpTarget, report: FaultReport
) -> None:
    stack = Stack(tmp_path, private_broker.url, SftpRemote(sftp_target))
    try:
        stack.start("watcher")
        stack.start("uploader", "uploader-a")
        stack.start("uploader", "uploader-b")
        for i in range(1000):
            (stack.watch / f"d{i % 10}" / f"f{i:04}.dat").parent.mkdir(exist_ok=True)
            (stack.watch / f"d{i % 10}" / f"f{i:04}.dat").write_bytes(os.urandom(4096))
            if i == 400:
                threading.Thread(target=private_broker.restart, kwargs={"down_for": 5}).start()
        snap = stack.wait_mirror(240)
        report.row("RabbitMQ restarted while 1,000 files flow", len(snap), len(snap) * 4096, 0, 0)
        assert not dead_letters(private_broker.url), "a transient broker restart dead-lettered messages"
    finally:
        stack.stop_all()


# ----------------------------------------------------------------------------- 3. remote outages


def _newest_states(tap: EventTap, mark: int, prefix: str) -> dict[str, str]:
    """The newest lifecycle state of each file under ``prefix`` since ``mark`` (the file list's state)."""
    events = tap.since(mark, lambda e: str(e.get("type", "")).startswith("file.") and e["path"].startswith(prefix))
    return {e["path"]: e["state"] for e in sorted(events, key=lambda e: e["created_at"])}


def _outage_run(stack: Stack, cut: object, restore: object, report: FaultReport, label: str, tap: EventTap) -> None:
    stack.start("watcher")
    stack.start("uploader", "uploader-a")
    stack.start("uploader", "uploader-b")
    for i in range(50):
        (stack.watch / f"before-{i}.txt").write_text(f"before {i}")
    stack.wait_mirror(60)
    mark = tap.mark()
    cut()  # type: ignore[operator]
    for i in range(50):
        (stack.watch / f"during-{i}.txt").write_text(f"during the outage {i}")
    time.sleep(30)
    # What the status shows meanwhile: both uploaders paused, and why; no file "started" by
    # an uploader that handed it back.
    paused = tap.conditions("uploader", mark)
    assert len(paused) == 2 and all(c and c.startswith("paused: remote unavailable: ") for c in paused.values()), (
        f"the uploaders' heartbeats do not say they pause for the remote: {paused}"
    )
    states = _newest_states(tap, mark, "during-")
    assert "started" not in states.values(), f"files shown as uploading while nothing uploads them: {states}"
    restore()  # type: ignore[operator]
    snap = stack.wait_mirror(180)
    wait_for(
        lambda: set(tap.conditions("uploader", mark).values()) == {None},
        30,
        what="the uploaders' heartbeats to say nothing keeps them from their work any more",
    )
    failed = tap.since(mark, lambda e: e.get("state") == "failed")
    report.row(label, len(snap), 0, 0, 0)
    assert not dead_letters(stack.amqp_url), "a transient outage dead-lettered messages"
    assert len(failed) <= 10, f"{len(failed)} failures during a 30 s outage: a storm of retries"
    assert all(p.alive() for p in stack.procs), stack.tail_logs()


def test_uploaders_wait_out_an_sftp_server_outage_and_finish(
    tmp_path: Path, amqp_url: str, sftp_target: SftpTarget, tap: EventTap, report: FaultReport
) -> None:
    stack = Stack(tmp_path, amqp_url, SftpRemote(sftp_target))
    try:
        _outage_run(stack, sftp_target.server.stop, sftp_target.server.start, report, "SFTP server down 30 s", tap)
    finally:
        stack.stop_all()


def test_uploaders_wait_out_an_s3_server_outage_and_finish(
    tmp_path: Path, amqp_url: str, s3_server: S3Server, aws_credentials: None, tap: EventTap, report: FaultReport
) -> None:
    host, port = s3_server.endpoint_url.rsplit("/", 1)[-1].split(":")
    proxy = TcpProxy(host, int(port)).start()
    try:
        target = make_target(s3_server, endpoint_url=f"http://127.0.0.1:{proxy.port}")
        stack = Stack(tmp_path, amqp_url, S3Remote(target))
        try:
            _outage_run(stack, proxy.cut, proxy.restore, report, "S3 server unreachable 30 s", tap)
        finally:
            stack.stop_all()
    finally:
        proxy.close()


def test_a_bucket_deleted_under_the_uploaders_pauses_them_saying_so_until_it_is_back(
    tmp_path: Path, amqp_url: str, s3_target: S3Target, tap: EventTap, report: FaultReport
) -> None:
    """The bucket goes (deleted by someone, a lifecycle rule, a wrong account). No file may be
    failed or dead-lettered for it: the target as a whole refuses, and the uploaders' status says
    that, at every check, until the bucket is back. A full rescan then puts back what went with it."""
    client, bucket = s3_target.client, s3_target.bucket
    stack = Stack(tmp_path, amqp_url, S3Remote(s3_target))
    try:
        stack.start("watcher")
        for name in ("uploader-a", "uploader-b"):
            stack.start("uploader", name, SKYNET_HEARTBEAT_INTERVAL_S="1")
        for i in range(20):
            (stack.watch / f"before-{i}.txt").write_text(f"before {i}")
        stack.wait_mirror(60)
        mark = tap.mark()
        for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)
        for i in range(30):
            (stack.watch / f"during-{i}.txt").write_text(f"while the bucket is gone {i}")

        def refused() -> bool:
            said = tap.conditions("uploader", mark)
            return len(said) == 2 and all(
                c and c.startswith("paused: the target refuses this uploader: ") and "does not exist" in c
                for c in said.values()
            )

        wait_for(refused, 60, what="both uploaders to say the target refuses them, the bucket gone")
        time.sleep(6)  # several probes of the missing bucket later, it still says so
        assert refused(), tap.conditions("uploader", mark)
        client.create_bucket(Bucket=bucket)
        admin.request_rescan(stack.amqp_url, "default", full=True)  # what went with the bucket
        snap = stack.wait_mirror(120)
        assert len(snap) == 50
        gone_wrong = tap.since(mark, lambda e: e.get("state") in ("failed", "dead"))
        assert not gone_wrong, f"files failed for the missing bucket: {gone_wrong[:3]}"
        assert not dead_letters(stack.amqp_url)
        report.row("S3 bucket deleted, then created again", len(snap), 0, 0, 0)
    finally:
        stack.stop_all()


@pytest.mark.parametrize("client", ["openssh", "paramiko"])
def test_a_changed_sftp_host_key_pauses_the_uploaders_without_failing_a_file_until_it_is_pinned_again(
    tmp_path: Path,
    amqp_url: str,
    sftp_server: SftpServer,
    sftp_proxy: TcpProxy,
    tap: EventTap,
    report: FaultReport,
    client: str,
) -> None:
    """The server's host key changes under running uploaders (a reinstalled server, or someone in
    the middle). No file may go to the server, and none may be failed or dead-lettered for it: the
    refusal is the target's as a whole. Once known_hosts pins the key again, everything arrives."""
    target = make_sftp_target(sftp_server, via=sftp_proxy)
    known_hosts = Path(str(target.settings.sftp_known_hosts))
    pinned = known_hosts.read_text()
    port = str(sftp_proxy.port)
    other = f"[{sftp_server.host}]:{port} " + Path(sftp_server.other_known_hosts).read_text().split(" ", 1)[1]
    stack = Stack(tmp_path, amqp_url, SftpRemote(target))
    try:
        stack.start("watcher")
        uploaders = [stack.start("uploader", n, SKYNET_SFTP_CLIENT=client) for n in ("uploader-a", "uploader-b")]
        for i in range(20):
            (stack.watch / f"before-{i}.txt").write_text(f"before {i}")
        stack.wait_mirror(60)
        mark = tap.mark()
        known_hosts.write_text(other)  # what the client now sees is not the key it pinned
        sftp_proxy.cut()  # every open session goes; the next ones meet the "new" key
        sftp_proxy.restore()
        for i in range(30):
            (stack.watch / f"during-{i}.txt").write_text(f"while the key is wrong {i}")
        wait_for(
            lambda: all("refuses this uploader" in u.text() for u in uploaders),
            60,
            what="both uploaders to say they pause",
        )
        time.sleep(5)
        assert not any(p.name.startswith("during-") for p in target.local_dir.iterdir()), (
            "a file went to an unpinned server"
        )
        assert all(u.alive() for u in uploaders), stack.tail_logs()
        known_hosts.write_text(pinned)
        snap = stack.wait_mirror(120)
        assert len(snap) == 50
        gone_wrong = tap.since(mark, lambda e: e.get("state") in ("failed", "dead"))
        assert not gone_wrong, f"files failed for the host key: {gone_wrong[:3]}"
        assert not dead_letters(stack.amqp_url)
        log = "\n".join(u.text() for u in uploaders)
        assert "host key of [127.0.0.1]:" + port in log and "does not match known_hosts" in log
        report.row(f"SFTP host key changed, then pinned again ({client})", len(snap), 0, 0, 0)
    finally:
        stack.stop_all()


def test_an_uploader_started_against_an_unpinned_host_key_refuses_to_start_and_says_why(
    tmp_path: Path, amqp_url: str, sftp_server: SftpServer, sftp_proxy: TcpProxy
) -> None:
    target = make_sftp_target(sftp_server, via=sftp_proxy)
    known_hosts = Path(str(target.settings.sftp_known_hosts))
    known_hosts.write_text(
        f"[{sftp_server.host}]:{sftp_proxy.port} " + Path(sftp_server.other_known_hosts).read_text().split(" ", 1)[1]
    )
    stack = Stack(tmp_path, amqp_url, SftpRemote(target))
    try:
        uploader = stack.start("uploader", "uploader-a")
        assert uploader.popen.wait(timeout=60) == 1
        assert "does not match known_hosts" in uploader.text() and "Traceback" not in uploader.text(), uploader.text()
    finally:
        stack.stop_all()


# ----------------------------------------------------------------------------- 4. replicas and rewrites


@pytest.mark.parametrize("replicas", [2, 4])
def test_replicas_racing_on_rewrites_leave_the_newest_version_of_every_file(
    tmp_path: Path, amqp_url: str, sftp_target: SftpTarget, replicas: int, report: FaultReport
) -> None:
    stack = Stack(tmp_path, amqp_url, SftpRemote(sftp_target), settle_ms=100)
    try:
        stack.start("watcher")
        for r in range(replicas):
            stack.start("uploader", f"uploader-{r}", SKYNET_CONCURRENCY="2")
        rng = random.Random(replicas)
        deadline = time.monotonic() + 15
        writes = 0
        while time.monotonic() < deadline:
            i = rng.randrange(20)
            size = rng.choice([10, 5000, 300_000])
            (stack.watch / f"hot-{i:02}.bin").write_bytes(f"v{writes}:".encode() + os.urandom(size))
            writes += 1
            time.sleep(rng.choice([0.0, 0.01, 0.05, 0.2]))
        snap = stack.wait_mirror(120)
        report.row(f"{replicas} replicas, {writes} rewrites of 20 files", len(snap), 0, 0, 0)
        assert len(snap) == 20
    finally:
        stack.stop_all()


# ----------------------------------------------------------------------------- 5. watcher killed in a burst


def test_a_watcher_killed_during_a_burst_of_new_files_publishes_each_once_after_restart(
    tmp_path: Path, amqp_url: str, sftp_target: SftpTarget, tap: EventTap, report: FaultReport
) -> None:
    stack = Stack(tmp_path, amqp_url, SftpRemote(sftp_target))
    try:
        watcher = stack.start("watcher")
        stack.start("uploader", "uploader-a")
        stack.start("uploader", "uploader-b")
        time.sleep(1)
        for i in range(1000):
            (stack.watch / f"burst-{i:04}.txt").write_text(f"file {i}")
            if i == 500:
                watcher.kill(signal.SIGKILL)
        stack.start("watcher", "watcher-again")
        snap = stack.wait_mirror(180)
        time.sleep(2)
        deliveries = Counter(
            e["path"]
            for e in tap.events
            if e.get("state") in ("started", "skipped") and e.get("path", "").startswith("burst-")
        )
        assert set(deliveries) == set(snap), "some file was never handled by an uploader"
        twice = sum(n - 1 for n in deliveries.values())
        report.row("watcher SIGKILLed in a burst of 1,000 new files", len(snap), 0, 0, 1000 - len(snap))
        assert max(deliveries.values()) <= 2, f"a file was published {max(deliveries.values())} times"
        assert twice <= 500, f"{twice} files were published twice: more than one unconfirmed outbox batch"
    finally:
        stack.stop_all()


# ----------------------------------------------------------------------------- 6. dead letters and requeue


def test_a_message_that_cannot_succeed_is_dead_lettered_with_its_reason_and_requeued_after_the_fix(
    tmp_path: Path, amqp_url: str, sftp_target: SftpTarget, tap: EventTap, report: FaultReport
) -> None:
    stack = Stack(tmp_path, amqp_url, SftpRemote(sftp_target), extra_env={"SKYNET_MAX_ATTEMPTS": "3"})
    try:
        # A file sits on the remote where a folder is needed, and nothing locally will delete it:
        # the conflict is retried (the delete that clears the way may just be late), then dead.
        sftp_target.local_dir.mkdir(parents=True, exist_ok=True)
        (sftp_target.local_dir / "blocked").write_text("a file where skynet needs a folder")
        stack.start("watcher")
        stack.start("uploader")
        (stack.watch / "fine.txt").write_text("this one is fine")
        (stack.watch / "blocked").mkdir()
        (stack.watch / "blocked" / "inside.txt").write_text("cannot be written until the remote is fixed")
        dead = wait_for(lambda: dead_letters(amqp_url), 60, what="the message in the dead-letter queue")
        assert isinstance(dead, list) and len(dead) == 1
        body, headers = dead[0]
        assert b"blocked/inside.txt" in body
        assert "not a folder" in str(headers.get(HEADER_REASON)), headers
        assert int(str(headers.get(HEADER_ATTEMPTS))) >= 1
        # However the dead letter and the good file interleave, the good file must arrive.
        wait_for(lambda: (sftp_target.local_dir / "fine.txt").exists(), 30, what="fine.txt despite the bad file")
        # The event comes on the uploader's event connection, the dead letter on its consumer's.
        failed = wait_for(lambda: tap.of("failed", "blocked/inside.txt"), 10, what="the refused file's failed event")
        assert isinstance(failed, list) and "not a folder" in str(failed[-1].get("reason"))

        (sftp_target.local_dir / "blocked").unlink()  # the operator fixes the remote
        assert requeue_dead(amqp_url, "default") == 1
        snap = stack.wait_mirror(60)
        report.row("dead-lettered, fixed, requeued", len(snap), 0, 0, 0)
        assert not dead_letters(amqp_url)
    finally:
        stack.stop_all()


# ----------------------------------------------------------------------------- SIGTERM hands work back


def test_sigterm_stops_an_uploader_promptly_and_its_transfer_is_resumed_by_another(
    tmp_path: Path, amqp_url: str, sftp_server: SftpServer, progress_tap: EventTap, report: FaultReport
) -> None:
    # A link of 16 MiB/s per connection, so the 256 MiB transfer (four streams) is still under way
    # when the stop comes; on loopback it would be over in half a second.
    link = TcpProxy(sftp_server.host, sftp_server.port, rate_bytes_s=16 * MiB).start()
    stack = Stack(tmp_path, amqp_url, SftpRemote(make_sftp_target(sftp_server, via=link)))
    try:
        stack.start("watcher")
        first = stack.start("uploader", "uploader-first", SKYNET_STOP_GRACE_S="1")
        write_random(stack.watch / "long.bin", 256 * MiB)

        def started() -> bool:
            return any(int(e.get("bytes_done") or 0) > 16 * MiB for e in progress_tap.of("progress", "long.bin"))

        wait_for(started, 120, interval=0.05, what="the transfer to be under way")
        t0 = time.monotonic()
        first.popen.send_signal(signal.SIGTERM)
        rc = first.popen.wait(timeout=60)
        stopped_in = time.monotonic() - t0
        assert rc == 0, f"the uploader exited with {rc} on SIGTERM"
        assert stopped_in < 20, f"SIGTERM took {stopped_in:.1f}s"
        assert not progress_tap.of("done", "long.bin"), "the test file finished before the stop; make it larger"
        stack.start("uploader", "uploader-second")
        stack.wait_mirror(180)
        done = progress_tap.of("done", "long.bin")[-1]
        resumed = int(done.get("resumed_from") or 0)
        report.row("SIGTERM mid 256 MiB upload, handed back", 1, int(done.get("bytes_done") or 0) + resumed, 0, 0)
        assert resumed > 0, "the handed-back transfer restarted from zero"
        assert "handing" in first.text(), "no log line says the transfer was handed back"
    finally:
        stack.stop_all()
        link.close()

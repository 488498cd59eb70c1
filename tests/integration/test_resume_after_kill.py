"""Resume, don't restart (DESIGN promise 4; issue 3, item 1, at the backend level).

A backend uploads a large file in a child process that is SIGKILLed half-way. A fresh backend then
uploads the same file again. Bytes are counted twice: by the backend (``UploadResult``) and,
independently, by the TCP proxy the traffic goes through. What must hold:

* of the bytes the remote already held when the first upload died, the second one re-sends at
  most two parts (S3) / two write chunks plus the parallel streams' resume margin (SFTP);
* the final object has the local file's SHA-256;
* no multipart upload, marker or partial file is left behind.

The bytes that were *in flight* when the process died (sent, never stored) are lost whatever one
does; they are reported too, and bounded by the parallel streams (S3: one part each) or the
socket buffers (SFTP).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from skynet.uploader.storage import sftp as sftp_mod
from skynet.uploader.storage._s3_multipart import part_size_for
from skynet.uploader.storage.config import BackendSettings
from tests.fixtures import s3_server as s3_fx
from tests.fixtures import sftp_server as sftp_fx
from tests.fixtures.storage_remotes import Remote, generation_of, s3_remote, sftp_remote
from tests.fixtures.tcp_proxy import TcpProxy

MiB = 1024 * 1024
S3_SIZE = int(os.environ.get("SKYNET_TEST_RESUME_S3_MIB", "512")) * MiB  # the 512 MiB
SFTP_SIZE = int(os.environ.get("SKYNET_TEST_RESUME_SFTP_MIB", "512")) * MiB
KILL_AT = 0.45  # fraction of the file confirmed on the remote when the child is killed...
KILL_DELAY_S = 0.15  # ...plus this long, so that the kill lands in the middle of a transfer
S3_STREAMS = 2  # parallel parts: each in-flight part is lost at a kill, so this bounds the waste

CHILD = """
import json, sys
from skynet.common.messages import Generation
from skynet.uploader.storage.config import BackendSettings
from skynet.uploader.storage.registry import open_backend
args = json.loads(sys.argv[1])
backend = open_backend(args["target"], BackendSettings(**args["settings"]))
progress_file = open(args["progress"], "w")
def progress(done):
    progress_file.seek(0)
    progress_file.write("%020d" % done)
    progress_file.flush()
backend.upload(args["path"], args["local"], Generation(**args["generation"]), progress)
"""


def big_file(path: Path, size: int) -> str:
    """A file of ``size`` pseudo-random bytes; returns its SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            chunk = (i.to_bytes(8, "big") * 8) + block[64:]  # every MiB differs
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def kill_mid_upload(remote: Remote, rel: str, local: Path, settings: BackendSettings, tmp_path: Path) -> int:
    """Upload in a child process and SIGKILL it once KILL_AT of the file is on the remote."""
    gen = generation_of(local)
    progress_file = tmp_path / "progress"
    progress_file.write_text("0")
    args = {
        "target": remote.target.target,
        "settings": asdict(settings),
        "progress": str(progress_file),
        "path": rel,
        "local": str(local),
        "generation": gen.model_dump(),
    }
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    confirmed = 0
    try:
        while confirmed < KILL_AT * gen.size:
            if child.poll() is not None:
                raise AssertionError(f"the upload ended before it was killed: {child.stderr.read()!r}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError(f"upload too slow: {confirmed} bytes after 300 s")
            time.sleep(0.02)
            text = progress_file.read_text().strip()
            confirmed = int(text) if text else 0
        time.sleep(KILL_DELAY_S)  # land mid-part, not just after a part completed
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stderr.close()  # type: ignore[union-attr]
    return confirmed


def _settled(read: Callable[[], int], quiet_s: float = 1.0, timeout_s: float = 30.0) -> int:
    """What the remote holds once it has stopped changing.

    The server can still be finishing a part or a write whose bytes reached it before the kill
    (a part completed then is one the resume may rightly reuse): the figure to compare the resume
    with is the one left when the server is done.
    """
    value, since = read(), time.monotonic()
    deadline = since + timeout_s
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "what the remote holds kept changing after the kill"
        time.sleep(0.1)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


REPORT: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def print_table() -> Iterator[None]:
    yield
    if REPORT:
        header = (
            f"{'backend':8} {'size':>9} {'held at kill':>13} {'resumed from':>13} {'re-sent':>9} "
            f"{'sent 2nd (backend/proxy)':>26} {'in flight lost':>15}"
        )
        print("\n" + "\n".join([header, *REPORT]))


def check_resume(
    remote: Remote,
    local: Path,
    digest: str,
    settings: BackendSettings,
    tmp_path: Path,
    held_on_remote: Callable[[], int],
    unit: int,
) -> None:
    proxy = remote.proxy
    assert proxy is not None
    size = local.stat().st_size
    proxy.reset_counters()
    confirmed = kill_mid_upload(remote, "big/file.bin", local, settings, tmp_path)
    first_wire = proxy.bytes_up
    held = _settled(held_on_remote)
    assert held >= confirmed - unit > 0, "the killed upload left nothing to resume"

    proxy.reset_counters()
    backend = remote.open()
    try:
        result = backend.upload("big/file.bin", str(local), generation_of(local), lambda n: None)
    finally:
        backend.close()
    second_wire = proxy.bytes_up

    resent = held - result.resumed_from
    lost_in_flight = max(0, first_wire - held)
    REPORT.append(
        f"{remote.kind:8} {size // MiB:>5} MiB {held / MiB:>9.1f} MiB {result.resumed_from / MiB:>9.1f} MiB "
        f"{resent / MiB:>5.1f} MiB {result.bytes_sent / MiB:>11.1f} / {second_wire / MiB:>6.1f} MiB "
        f"{lost_in_flight / MiB:>11.1f} MiB"
    )
    assert result.bytes_sent == size - result.resumed_from
    assert 0 <= resent <= 2 * unit, f"re-sent {resent} bytes of what the remote held (limit {2 * unit})"
    # the proxy saw what the backend says it sent, plus protocol overhead
    assert result.bytes_sent <= second_wire <= result.bytes_sent * 1.03 + MiB
    assert remote.digest("big/file.bin") == digest
    assert remote.leftovers() == []


def test_a_killed_s3_upload_is_resumed_from_its_verified_parts(
    s3_server: s3_fx.S3Server, aws_credentials: None, tmp_path: Path
) -> None:
    proxy = TcpProxy(s3_server.host, s3_server.port).start()
    try:
        t = s3_fx.make_target(s3_server, f"http://{proxy.host}:{proxy.port}", s3_part_concurrency=S3_STREAMS)
        remote = s3_remote(t, proxy)
        local = tmp_path / "big.bin"
        digest = big_file(local, S3_SIZE)

        def held() -> int:
            uploads = t.client.list_multipart_uploads(Bucket=t.bucket).get("Uploads", [])
            assert len(uploads) == 1
            parts = t.client.list_parts(Bucket=t.bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"])
            return sum(p["Size"] for p in parts.get("Parts", []))

        check_resume(remote, local, digest, t.settings, tmp_path, held, part_size_for(S3_SIZE))
    finally:
        proxy.close()


def test_a_killed_sftp_upload_is_resumed_from_its_partial_file(sftp_server: sftp_fx.SftpServer, tmp_path: Path) -> None:
    proxy = TcpProxy(sftp_server.host, sftp_server.port).start()
    try:
        t = sftp_fx.make_target(sftp_server, via=proxy)
        remote = sftp_remote(t, proxy)
        local = tmp_path / "big.bin"
        digest = big_file(local, SFTP_SIZE)

        def held() -> int:
            partials = [p for p in (t.local_dir / "big").iterdir() if p.name.endswith(".skynet-partial")]
            assert len(partials) == 1
            return partials[0].stat().st_size

        # several streams write at once: a resume restarts up to RESUME_MARGIN below the partial's end
        check_resume(remote, local, digest, t.settings, tmp_path, held, sftp_mod.WRITE_CHUNK + sftp_mod.RESUME_MARGIN)
    finally:
        proxy.close()


OUTAGE_SIZE = 64 * MiB


@pytest.mark.parametrize("kind", ["sftp", "s3"])
def test_an_upload_cut_by_a_network_outage_resumes_once_the_link_is_back(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from skynet.common.errors import RemoteUnavailable

    if kind == "sftp":
        server = request.getfixturevalue("sftp_server")
        proxy = TcpProxy(server.host, server.port).start()
        remote = sftp_remote(sftp_fx.make_target(server, via=proxy), proxy)
    else:
        server = request.getfixturevalue("s3_server")
        request.getfixturevalue("aws_credentials")
        proxy = TcpProxy(server.host, server.port).start()
        remote = s3_remote(s3_fx.make_target(server, f"http://{proxy.host}:{proxy.port}"), proxy)
    try:
        local = tmp_path / "outage.bin"
        digest = big_file(local, OUTAGE_SIZE)
        gen = generation_of(local)
        backend = remote.open()

        def cut_half_way(done: int) -> None:
            if done >= OUTAGE_SIZE // 2:
                proxy.cut()

        with pytest.raises(RemoteUnavailable):
            backend.upload("outage.bin", str(local), gen, cut_half_way)
        proxy.restore()
        result = backend.upload("outage.bin", str(local), gen, lambda n: None)  # the same backend reconnects
        backend.close()

        # at most a part (S3) / a write chunk plus the parallel streams' margin (SFTP) is sent again
        slack = sftp_mod.WRITE_CHUNK + sftp_mod.RESUME_MARGIN if kind == "sftp" else 8 * MiB
        assert result.resumed_from >= OUTAGE_SIZE // 2 - slack
        assert remote.digest("outage.bin") == digest
        assert remote.leftovers() == []
    finally:
        proxy.close()

"""A target that runs out of space: a disk that fills up is a wait, not a refusal for good.

The remote folder is a 1 MiB tmpfs, so the server's own filesystem says ENOSPC, as a full NAS or
SFTP server would. OpenSSH's sftp-server reports that as a bare "Failure"; the backend must find
out it is a full disk, say so, and finish the upload (resuming its partial) once room is made.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from skynet.common.errors import RemoteFull, SkynetError
from skynet.uploader.storage.base import Backend
from skynet.uploader.storage.local import LocalBackend
from skynet.uploader.storage.sftp import PARALLEL_MIN_BYTES
from skynet.uploader.storage.sftp import open_backend as open_sftp
from tests.e2e.harness import EventTap, Stack
from tests.e2e.remotes import SftpRemote
from tests.fixtures import sftp_server as sftp_fx
from tests.fixtures.common import wait_for
from tests.fixtures.storage_remotes import folder_digest, folder_leftovers, generation_of
from tests.fixtures.tmpfs import resize, small_disk

MiB = 1024 * 1024


@pytest.fixture(params=["file", "sftp", "sftp-paramiko"])
def small_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Backend, Path]]:
    """A backend whose remote folder is a small tmpfs (1 MiB until resized), and that folder."""
    if request.param == "file":
        base = tmp_path / "nas"
        base.mkdir()
        opener = lambda: LocalBackend(str(base))  # noqa: E731
    else:
        target = sftp_fx.make_target(request.getfixturevalue("sftp_server"))
        client = "paramiko" if request.param == "sftp-paramiko" else "openssh"
        settings = dataclasses.replace(target.settings, sftp_client=client)
        base = target.local_dir
        base.mkdir(parents=True)
        opener = lambda: open_sftp(target.target, settings)  # noqa: E731
    with small_disk(base, "1m", mode="0777"):
        backend = opener()
        try:
            yield backend, base
        finally:
            backend.close()


@pytest.mark.parametrize(
    ("size", "room"),
    [(6 * MiB, "3m"), (PARALLEL_MIN_BYTES + MiB, "24m")],  # SFTP resumes 16 MiB before a striped partial's end
    ids=["one-stream", "parallel-streams"],
)
def test_a_full_target_is_reported_as_full_and_the_upload_resumes_once_there_is_room(
    small_target: tuple[Backend, Path], tmp_path: Path, size: int, room: str
) -> None:
    backend, base = small_target
    resize(base, room)
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(size))
    gen = generation_of(local)

    with pytest.raises(SkynetError) as failed:
        backend.upload("deep/big.bin", str(local), gen, lambda n: None)
    err = failed.value
    assert isinstance(err, RemoteFull) and err.retryable, err.reason
    assert "full" in err.reason and "free some space" in err.reason
    assert backend.stat("deep/big.bin") is None  # nothing half-written under the final name

    resize(base, f"{size // MiB + 8}m")
    result = backend.upload("deep/big.bin", str(local), gen, lambda n: None)
    assert folder_digest(base)("deep/big.bin") == folder_digest(tmp_path)("big.bin")
    assert folder_leftovers(base)() == []
    stat = backend.stat("deep/big.bin")
    assert stat is not None and backend.matches(stat, gen)
    assert result.resumed_from > 0, "the partial written before the disk filled up was thrown away"


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_files_refused_by_a_full_sftp_server_arrive_once_room_is_made_without_a_requeue(
    stack: Stack, tap: EventTap, remote: SftpRemote
) -> None:
    """The whole pipeline: the refusal is reported as a full target and retried through the
    ladder, not dead-lettered at once as an SFTP "Failure" would be."""
    base = remote.t.local_dir
    base.mkdir(parents=True)
    with small_disk(base, "1m", mode="0777"):
        try:
            stack.start("watcher")
            stack.start("uploader", "uploader-a", SKYNET_RETRY_DELAYS_S="1,2,4,8,16", SKYNET_MAX_ATTEMPTS="8")
            w = stack.watch
            (w / "big.bin").write_bytes(os.urandom(5 * MiB))
            (w / "notes.txt").write_bytes(os.urandom(50_000))
            refusal = wait_for(lambda: tap.of("failed", "big.bin"), 30, what="the upload refused for want of room")
            reason = str(refusal[0]["reason"])  # type: ignore[index]
            assert "target is full" in reason and "free some space" in reason, reason
            resize(base, "16m")
            stack.wait_mirror(60)
            assert tap.of("dead") == [], "a full disk is worth waiting for, not a dead letter"
            assert remote.partials() == []
        finally:
            stack.stop_all()

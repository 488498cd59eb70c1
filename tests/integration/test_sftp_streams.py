"""The SFTP backend's parallel streams and its short small-file path, against OpenSSH's sshd.

Large files go over ``sftp_streams`` connections writing the same partial at different offsets,
so a killed partial may have holes; it is resumed from ``RESUME_MARGIN`` below its length (see
the sftp module's docstring). The sizes are scaled down here (the threshold, the window and so
the margin are module constants, patched per test) so that the data stays a few tens of MiB.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from skynet.common.errors import RemoteUnavailable
from skynet.common.messages import Generation
from skynet.uploader.storage import _sftp_pipeline as sftp_pipeline
from skynet.uploader.storage import sftp as sftp_mod
from skynet.uploader.storage.config import BackendSettings
from skynet.uploader.storage.sftp import SftpBackend, open_backend
from tests.fixtures import sftp_server as sftp_fx
from tests.fixtures.storage_remotes import PARTIAL_SUFFIX, generation_of

MiB = 1024 * 1024
SIZE = 40 * MiB + 12345  # not a whole number of chunks
WINDOW = 6  # chunks: the resume margin is 6 MiB here


class Interrupted(Exception):
    pass


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sftp_mod, "PARALLEL_MIN_BYTES", 8 * MiB)
    monkeypatch.setattr(sftp_mod, "STREAM_WINDOW", WINDOW)
    monkeypatch.setattr(sftp_pipeline, "STREAM_PIPELINE", 2)
    monkeypatch.setattr(sftp_mod, "RESUME_MARGIN", WINDOW * sftp_mod.WRITE_CHUNK)


@pytest.fixture
def target(sftp_server: sftp_fx.SftpServer) -> sftp_fx.SftpTarget:
    return sftp_fx.make_target(sftp_server)


def backend_for(t: sftp_fx.SftpTarget, streams: int = 4) -> SftpBackend:
    settings = BackendSettings(**{**t.settings.__dict__, "sftp_streams": streams})
    return open_backend(t.target, settings)


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


def partials(t: sftp_fx.SftpTarget) -> list[Path]:
    return [p for p in t.local_dir.rglob("*") if p.name.endswith(PARTIAL_SUFFIX)]


@pytest.fixture
def opened() -> Iterator[list[SftpBackend]]:
    backends: list[SftpBackend] = []
    yield backends
    for b in backends:
        b.close()


def test_a_large_file_sent_over_several_streams_arrives_byte_identical(
    small_limits: None, target: sftp_fx.SftpTarget, data_file: tuple[Path, bytes], opened: list[SftpBackend]
) -> None:
    local, data = data_file
    backend = backend_for(target, streams=4)
    opened.append(backend)
    seen: list[int] = []

    result = backend.upload("a/big.bin", str(local), generation_of(local), seen.append)

    assert (target.local_dir / "a/big.bin").read_bytes() == data
    assert result.bytes_sent == SIZE and result.resumed_from == 0
    assert sorted(backend._extra) == [1, 2, 3], "the extra connections were not opened"
    assert seen[0] == 0 and seen[-1] == SIZE and seen == sorted(seen), "progress must rise to the size"
    assert partials(target) == []
    entry = backend.stat("a/big.bin")
    assert entry is not None and backend.matches(entry, generation_of(local))

    # the connections are kept for the next file, and closed by close()
    extra = dict(backend._extra)
    backend.upload("a/again.bin", str(local), generation_of(local), lambda n: None)
    assert backend._extra == extra
    transports = [s.transport for s in extra.values()]
    backend.close()
    assert backend._extra == {} and not any(t.is_active() for t in transports)


def test_a_cancelled_multi_stream_upload_resumes_from_a_verified_point(
    small_limits: None, target: sftp_fx.SftpTarget, data_file: tuple[Path, bytes], opened: list[SftpBackend]
) -> None:
    local, data = data_file
    gen = generation_of(local)
    first = backend_for(target, streams=4)
    opened.append(first)
    confirmed = 0

    def cancel_half_way(done: int) -> None:
        nonlocal confirmed
        confirmed = done
        if done >= SIZE // 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        first.upload("b/big.bin", str(local), gen, cancel_half_way)
    [partial] = partials(target)
    held = partial.read_bytes()
    assert len(held) >= confirmed
    assert held[:confirmed] == data[:confirmed], "progress reported bytes the partial does not hold"
    # what resume will trust: everything below the margin under the partial's length
    trusted = sftp_mod.resume_offset(len(held), SIZE)
    assert held[:trusted] == data[:trusted]

    again = backend_for(target, streams=3)  # another stream count: the margin does not depend on it
    opened.append(again)
    result = again.upload("b/big.bin", str(local), gen, lambda n: None)

    assert result.resumed_from == trusted > 0
    assert result.resumed_from >= confirmed - (WINDOW + 1) * MiB
    assert result.bytes_sent == SIZE - result.resumed_from
    assert (target.local_dir / "b/big.bin").read_bytes() == data
    assert partials(target) == []


def test_a_multi_stream_upload_cut_by_a_connection_loss_reconnects_and_resumes(
    small_limits: None,
    sftp_server: sftp_fx.SftpServer,
    sftp_proxy: sftp_fx.TcpProxy,
    data_file: tuple[Path, bytes],
    opened: list[SftpBackend],
) -> None:
    t = sftp_fx.make_target(sftp_server, via=sftp_proxy)
    local, data = data_file
    gen = generation_of(local)
    backend = backend_for(t, streams=4)
    opened.append(backend)

    def cut_half_way(done: int) -> None:
        if done >= SIZE // 2:
            sftp_proxy.cut()

    with pytest.raises(RemoteUnavailable):
        backend.upload("c/big.bin", str(local), gen, cut_half_way)
    assert backend._extra == {} and backend._transport is None, "every connection is dropped after a loss"
    sftp_proxy.restore()

    result = backend.upload("c/big.bin", str(local), gen, lambda n: None)  # the same backend reconnects
    assert result.resumed_from > 0
    assert sorted(backend._extra) == [1, 2, 3]
    assert (t.local_dir / "c/big.bin").read_bytes() == data
    assert partials(t) == []


def plant_partial(
    target: sftp_fx.SftpTarget, opened: list[SftpBackend], local: Path, folder: str, held: bytes, streams: int
) -> tuple[SftpBackend, Generation]:
    """Leave ``held`` as the partial of ``folder/big.bin`` on the server, as a killed upload would."""
    gen = generation_of(local)
    backend = backend_for(target, streams=streams)
    opened.append(backend)
    (target.local_dir / folder).mkdir(parents=True)
    (target.local_dir / folder / sftp_mod.partial_name_for("big.bin", gen)).write_bytes(held)
    return backend, gen


def test_a_partial_with_holes_within_the_margin_resumes_below_them(
    small_limits: None, target: sftp_fx.SftpTarget, data_file: tuple[Path, bytes], opened: list[SftpBackend]
) -> None:
    """What a killed multi-stream upload may leave: holes (zeros) within the last RESUME_MARGIN bytes."""
    local, data = data_file
    length = 25 * MiB + 4321
    held = bytearray(data[:length])
    margin = WINDOW * MiB
    resume_at = 25 * MiB - margin
    for start in (resume_at, resume_at + 2 * MiB + 17, length - MiB):  # holes from the resume point up
        held[start : start + MiB // 2] = bytes(MiB // 2)
    backend, gen = plant_partial(target, opened, local, "d", bytes(held), streams=4)

    result = backend.upload("d/big.bin", str(local), gen, lambda n: None)

    assert result.resumed_from == resume_at
    assert (target.local_dir / "d/big.bin").read_bytes() == data
    assert partials(target) == []


def test_a_hole_just_below_the_resume_point_is_caught_and_the_upload_starts_over(
    small_limits: None, target: sftp_fx.SftpTarget, data_file: tuple[Path, bytes], opened: list[SftpBackend]
) -> None:
    """Deeper than the margin our own writer never leaves a hole; the read-back check still catches one."""
    local, data = data_file
    held = bytearray(data[: 20 * MiB])
    resume_at = 20 * MiB - WINDOW * MiB
    held[resume_at - 1000 : resume_at - 900] = bytes(100)
    backend, gen = plant_partial(target, opened, local, "e", bytes(held), streams=2)

    result = backend.upload("e/big.bin", str(local), gen, lambda n: None)

    assert result.resumed_from == 0 and result.bytes_sent == SIZE
    assert (target.local_dir / "e/big.bin").read_bytes() == data


def test_a_file_below_the_threshold_keeps_one_stream_and_the_prefix_rule(
    small_limits: None, target: sftp_fx.SftpTarget, tmp_path: Path, opened: list[SftpBackend]
) -> None:
    local = tmp_path / "mid.bin"
    data = os.urandom(6 * MiB)
    local.write_bytes(data)
    gen = generation_of(local)
    backend = backend_for(target, streams=4)
    opened.append(backend)

    def cancel(done: int) -> None:
        if done >= 3 * MiB:
            raise Interrupted

    with pytest.raises(Interrupted):
        backend.upload("f/mid.bin", str(local), gen, cancel)
    assert backend._extra == {}
    assert len(partials(target)) == 1  # writes still in flight at the cancel may land after it

    again = backend_for(target)
    opened.append(again)
    result = again.upload("f/mid.bin", str(local), gen, lambda n: None)
    # no margin below the threshold: the partial is a prefix, resumed at its last whole chunk
    assert result.resumed_from % MiB == 0 and result.resumed_from >= 3 * MiB
    assert result.bytes_sent == len(data) - result.resumed_from
    assert (target.local_dir / "f/mid.bin").read_bytes() == data


def small_file(
    tmp_path: Path, target: sftp_fx.SftpTarget, opened: list[SftpBackend]
) -> tuple[Path, Generation, SftpBackend]:
    local = tmp_path / "small.bin"
    local.write_bytes(os.urandom(64 * 1024))
    backend = backend_for(target)
    opened.append(backend)
    return local, generation_of(local), backend


def test_a_small_file_costs_five_requests_and_a_stale_folder_cache_heals(
    target: sftp_fx.SftpTarget, tmp_path: Path, opened: list[SftpBackend]
) -> None:
    local, gen, backend = small_file(tmp_path, target, opened)
    backend.upload("g/first.bin", str(local), gen, lambda n: None)  # connects, makes the folder
    sftp = backend._client()

    before = sftp.request_number
    backend.upload("g/second.bin", str(local), gen, lambda n: None)
    # open; write, fsetstat, close (one round trip); rename
    assert sftp.request_number - before == 5
    assert (target.local_dir / "g/second.bin").read_bytes() == local.read_bytes()
    entry = backend.stat("g/second.bin")
    assert entry is not None and backend.matches(entry, gen)

    # someone removes the folder behind the backend's back: the upload still lands
    for p in (target.local_dir / "g").iterdir():
        p.unlink()
    (target.local_dir / "g").rmdir()
    backend.upload("g/third.bin", str(local), gen, lambda n: None)
    assert (target.local_dir / "g/third.bin").read_bytes() == local.read_bytes()


def test_a_partial_the_server_refuses_is_reported_and_nothing_is_published(
    target: sftp_fx.SftpTarget, tmp_path: Path, opened: list[SftpBackend]
) -> None:
    """The server refuses the partial (here: a folder holds its name): a clear error, no final file."""
    from skynet.common.errors import RemoteRefused

    local, gen, backend = small_file(tmp_path, target, opened)
    (target.local_dir / "h" / sftp_mod.partial_name_for("x.bin", gen)).mkdir(parents=True)
    with pytest.raises(RemoteRefused):
        backend.upload("h/x.bin", str(local), gen, lambda n: None)
    assert not (target.local_dir / "h/x.bin").exists()


# ----------------------------------------------------------------------------- the window, alone


@pytest.mark.parametrize("seed", range(5))
def test_the_window_never_hands_out_a_chunk_beyond_the_margin(seed: int) -> None:
    """Streams ack in any order; whenever chunk j is handed out, every chunk below j - W + 1 is acked."""
    rng = random.Random(seed)
    count, width = 300, 8
    window = sftp_mod._Window(count, width)
    acked: set[int] = set()
    in_flight: list[list[int]] = [[] for _ in range(4)]
    while len(acked) < count:
        stream = in_flight[rng.randrange(4)]
        if stream and (rng.random() < 0.5 or len(stream) >= 3):
            chunk = stream.pop(rng.randrange(len(stream)))  # replies out of order across and within streams
            window.ack(chunk)
            acked.add(chunk)
            continue
        chunk = window.take(block=False)
        if chunk is None or chunk == window.WAIT:
            continue
        assert all(i in acked for i in range(chunk - width + 1)), f"chunk {chunk} handed out too early"
        stream.append(chunk)
    assert window.low == count and window.take(block=True) is None


def test_resume_offsets() -> None:
    chunk, margin, big = sftp_mod.WRITE_CHUNK, sftp_mod.RESUME_MARGIN, sftp_mod.PARALLEL_MIN_BYTES
    assert sftp_mod.resume_offset(5 * chunk + 7, 10 * chunk) == 5 * chunk  # small: a prefix
    assert sftp_mod.resume_offset(margin + 3 * chunk + 7, big) == 3 * chunk
    assert sftp_mod.resume_offset(margin - 1, big) == 0
    assert sftp_mod.MAX_STREAMS <= sftp_mod.STREAM_WINDOW  # every stream can have a chunk in flight

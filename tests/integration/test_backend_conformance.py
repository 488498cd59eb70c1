"""Every storage backend passes the same tests, against a real server where there is one.

sftp runs against OpenSSH's sshd and s3 against moto's S3 server, both behind a TCP proxy so a
test can cut the link and count the bytes sent; file runs on a temporary folder; memory is the
in-process twin the unit tests use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skynet.common.errors import (
    ConfigError,
    InvalidPath,
    RemoteAccessDenied,
    RemoteConflict,
    RemoteRefused,
    RemoteUnavailable,
    TransientError,
)
from skynet.common.messages import Generation
from skynet.uploader.storage.base import Backend, UploadResult
from skynet.uploader.storage.config import BackendSettings
from skynet.uploader.storage.local import LocalBackend
from skynet.uploader.storage.memory import MemoryBackend, MemoryStore
from tests.fixtures import s3_server as s3_fx
from tests.fixtures import sftp_server as sftp_fx
from tests.fixtures.storage_remotes import (
    Remote,
    folder_digest,
    folder_folders,
    folder_leftovers,
    folder_reader,
    folders_of_keys,
    generation_of,
    s3_remote,
    sftp_remote,
)
from tests.fixtures.tcp_proxy import TcpProxy

MiB = 1024 * 1024
BIG = 20 * MiB  # three S3 parts of 8 MiB, twenty SFTP write chunks


class Interrupted(Exception):
    """Raised from a progress callback to stop an upload half-way; it must come out unchanged."""


@pytest.fixture(params=["memory", "file", "sftp", "sftp-paramiko", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Remote]:
    kind = request.param
    if kind == "memory":
        store = MemoryStore()

        def set_unavailable(value: bool) -> None:
            store.unavailable = value

        def mem_read(rel: str) -> bytes | None:
            f = store.files.get(rel)
            return f.data if f else None

        def mem_digest(rel: str) -> str | None:
            data = mem_read(rel)
            return hashlib.sha256(data).hexdigest() if data is not None else None

        yield Remote(
            "memory",
            open=lambda: MemoryBackend(store),
            read=mem_read,
            digest=mem_digest,
            leftovers=lambda: [f"{p}@{tag}" for p, tag in store.partials],
            folders=lambda: folders_of_keys(store.files),
            cut=lambda: set_unavailable(True),
            restore=lambda: set_unavailable(False),
        )
    elif kind == "file":
        base = tmp_path / "nas"
        base.mkdir()
        hidden = tmp_path / "unmounted"
        yield Remote(
            "file",
            open=lambda: LocalBackend(str(base)),
            read=folder_reader(base),
            digest=folder_digest(base),
            leftovers=folder_leftovers(base),
            folders=folder_folders(base),
            cut=lambda: base.rename(hidden),
            restore=lambda: hidden.rename(base),
        )
    elif kind in ("sftp", "sftp-paramiko"):
        # The same contract whichever client carries SFTP: the OpenSSH one (what "auto" picks
        # with a key file) and paramiko's own transport (a password, an encrypted key, no ssh).
        server = request.getfixturevalue("sftp_server")
        proxy = TcpProxy(server.host, server.port).start()
        target = sftp_fx.make_target(server, via=proxy)
        client = "paramiko" if kind == "sftp-paramiko" else "openssh"
        target = dataclasses.replace(target, settings=dataclasses.replace(target.settings, sftp_client=client))
        try:
            yield sftp_remote(target, proxy)
        finally:
            proxy.close()
    else:
        server = request.getfixturevalue("s3_server")
        request.getfixturevalue("aws_credentials")
        proxy = TcpProxy(server.host, server.port).start()
        try:
            yield s3_remote(s3_fx.make_target(server, f"http://{proxy.host}:{proxy.port}"), proxy)
        finally:
            proxy.close()


@pytest.fixture
def backend(remote: Remote) -> Iterator[Backend]:
    b = remote.open()
    yield b
    b.close()


def write(path: Path, data: bytes, mtime_ns: int | None = None) -> Generation:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return generation_of(path)


def upload(backend: Backend, rel: str, local: Path, gen: Generation | None = None) -> UploadResult:
    return backend.upload(rel, str(local), gen or generation_of(local), lambda n: None)


def put(backend: Backend, rel: str, local: Path, data: bytes) -> Generation:
    gen = write(local, data)
    backend.upload(rel, str(local), gen, lambda n: None)
    return gen


def interrupt_after(limit: int):  # type: ignore[no-untyped-def]
    def progress(done: int) -> None:
        if done >= limit:
            raise Interrupted(f"stopped at {done}")

    return progress


# ----------------------------------------------------------------------------- basics


def test_a_missing_file_stats_as_none(backend: Backend) -> None:
    assert backend.stat("nothing/here.txt") is None


def test_an_uploaded_file_is_there_with_its_bytes_and_generation(
    backend: Backend, remote: Remote, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    gen = write(tmp_path / "src" / "a.bin", data)

    result = upload(backend, "docs/a.bin", tmp_path / "src" / "a.bin", gen)

    assert result.bytes_sent == len(data)
    entry = backend.stat("docs/a.bin")
    assert entry is not None and entry.size == len(data)
    assert backend.matches(entry, gen)
    assert not backend.matches(entry, Generation(size=len(data), mtime_ns=gen.mtime_ns + 5 * 10**9))
    assert remote.read("docs/a.bin") == data
    assert remote.leftovers() == []


def test_another_file_of_the_same_size_and_second_is_told_apart(backend: Backend, tmp_path: Path) -> None:
    """Two files of one size written in one clock tick, swapped by name (mv a t; mv b a; mv t b),
    differ only in inode: the remote must not take one for the other, or the swap never arrives."""
    gen = write(tmp_path / "a", b"one", mtime_ns=1_700_000_000_123_456_789)
    upload(backend, "a", tmp_path / "a", gen)

    entry = backend.stat("a")
    assert entry is not None and backend.matches(entry, gen)
    assert not backend.matches(entry, gen.model_copy(update={"inode": gen.inode + 1}))
    assert not backend.matches(entry, gen.model_copy(update={"mtime_ns": gen.mtime_ns + 1_000}))


def test_a_file_where_a_folder_must_go_waits_for_its_delete_and_an_empty_folder_gives_way(
    backend: Backend, remote: Remote, tmp_path: Path
) -> None:
    """Names replaced locally by the other kind (file ↔ folder). S3 keys have no folders."""
    if backend.scheme not in ("file", "sftp"):
        assert backend.scheme in ("memory", "s3"), backend.scheme
        return
    put(backend, "report", tmp_path / "old-report", b"a file")
    with pytest.raises(RemoteConflict):
        put(backend, "report/part-1.txt", tmp_path / "part", b"in a folder now")
    assert backend.delete("report")
    put(backend, "report/part-1.txt", tmp_path / "part", b"in a folder now")

    put(backend, "photos/one.jpg", tmp_path / "one", b"jpeg")
    with pytest.raises(RemoteConflict):
        put(backend, "photos", tmp_path / "photos", b"a file now")
    assert backend.delete("photos/one.jpg")
    put(backend, "photos", tmp_path / "photos", b"a file now")  # the empty folder gives way
    assert remote.read("photos") == b"a file now" and remote.read("report/part-1.txt") == b"in a folder now"


def test_a_move_meeting_the_other_kind_waits_for_its_delete_and_an_empty_folder_gives_way(
    backend: Backend, remote: Remote, tmp_path: Path
) -> None:
    """Moves into names replaced locally by the other kind: a file moved onto a folder's name
    (``rm -r x; mv f x``), a folder moved onto a file's name (``rm x; mv folder x``)."""
    if backend.scheme not in ("file", "sftp"):
        assert backend.scheme in ("memory", "s3"), backend.scheme
        return
    put(backend, "report", tmp_path / "report", b"a file")
    put(backend, "drafts/a.txt", tmp_path / "a", b"in a folder")
    with pytest.raises(RemoteConflict):
        backend.move_dir("drafts", "report")
    assert backend.delete("report")
    backend.move_dir("drafts", "report")

    put(backend, "photos/one.jpg", tmp_path / "one", b"jpeg")
    put(backend, "new.jpg", tmp_path / "new", b"a file moved here")
    with pytest.raises(RemoteConflict):
        backend.move("new.jpg", "photos")
    assert backend.delete("photos/one.jpg")
    backend.move("new.jpg", "photos")  # the empty folder gives way
    assert remote.read("photos") == b"a file moved here" and remote.read("report/a.txt") == b"in a folder"


def test_an_empty_file_uploads(backend: Backend, remote: Remote, tmp_path: Path) -> None:
    gen = write(tmp_path / "empty", b"")
    upload(backend, "empty", tmp_path / "empty", gen)
    entry = backend.stat("empty")
    assert entry is not None and entry.size == 0 and backend.matches(entry, gen)
    assert remote.read("empty") == b""


AWKWARD_NAMES = [
    "with space.txt",
    "ünïcødé/日本語 ファイル.txt",
    "#hash#.txt",
    "100% sure.txt",
    "a+b=c.txt",
    "-leading-dash.txt",
    "deeply/nested/folders/that/do/not/exist/yet.txt",
    "?question & ampersand;.txt",
]


def test_awkward_names_arrive_under_their_own_name(backend: Backend, remote: Remote, tmp_path: Path) -> None:
    for i, name in enumerate(AWKWARD_NAMES):
        put(backend, name, tmp_path / f"src{i}", name.encode())

    assert sorted(e.path for e in backend.list()) == sorted(AWKWARD_NAMES)
    for name in AWKWARD_NAMES:
        assert remote.read(name) == name.encode()


def test_an_overwrite_replaces_the_bytes_and_the_generation(backend: Backend, remote: Remote, tmp_path: Path) -> None:
    local = tmp_path / "f.txt"
    old = write(local, b"old contents", mtime_ns=1_600_000_000 * 10**9)
    upload(backend, "f.txt", local, old)
    new = write(local, b"new and longer contents", mtime_ns=1_700_000_000 * 10**9)

    upload(backend, "f.txt", local, new)

    entry = backend.stat("f.txt")
    assert entry is not None and backend.matches(entry, new) and not backend.matches(entry, old)
    assert remote.read("f.txt") == b"new and longer contents"


def test_an_upload_is_visible_under_its_final_name_only_when_complete(
    backend: Backend, remote: Remote, tmp_path: Path
) -> None:
    local = tmp_path / "big.bin"
    write(local, b"old version")
    upload(backend, "big.bin", local)
    new = os.urandom(BIG)
    gen = write(local, new, mtime_ns=1_700_000_000 * 10**9)
    seen_mid_upload: list[bytes | None] = []

    def progress(done: int) -> None:
        if 0 < done < BIG and not seen_mid_upload:
            seen_mid_upload.append(remote.read("big.bin"))

    backend.upload("big.bin", str(local), gen, progress)

    assert seen_mid_upload == [b"old version"]
    assert remote.read("big.bin") == new
    assert remote.leftovers() == []


def test_delete_says_whether_the_file_was_there(backend: Backend, remote: Remote, tmp_path: Path) -> None:
    put(backend, "d/x.txt", tmp_path / "x", b"x")
    assert backend.delete("d/x.txt") is True
    assert backend.stat("d/x.txt") is None and remote.read("d/x.txt") is None
    assert backend.delete("d/x.txt") is False


# ----------------------------------------------------------------------------- moves


def test_a_move_renames_on_the_remote_without_sending_the_bytes_again(
    backend: Backend, remote: Remote, tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB)
    gen = write(tmp_path / "m", data)
    upload(backend, "from/m.bin", tmp_path / "m", gen)
    before = remote.bytes_up

    backend.move("from/m.bin", "to/new folder/m2.bin")

    assert backend.stat("from/m.bin") is None and remote.read("from/m.bin") is None
    entry = backend.stat("to/new folder/m2.bin")
    assert entry is not None and backend.matches(entry, gen)
    assert remote.read("to/new folder/m2.bin") == data
    if backend.capabilities.server_side_move and before is not None:
        assert remote.bytes_up is not None and remote.bytes_up - before < 64 * 1024


def test_a_move_replaces_an_existing_destination(backend: Backend, remote: Remote, tmp_path: Path) -> None:
    put(backend, "a", tmp_path / "a", b"aaa")
    put(backend, "b", tmp_path / "b", b"bbb")
    backend.move("a", "b")
    assert remote.read("b") == b"aaa" and backend.stat("a") is None


def test_moving_a_missing_file_is_refused(backend: Backend) -> None:
    with pytest.raises(RemoteRefused):
        backend.move("not/there", "elsewhere")


def test_a_folder_move_takes_every_file_along(backend: Backend, remote: Remote, tmp_path: Path) -> None:
    names = [f"dir/sub{i % 3}/f{i}.txt" for i in range(10)]
    for i, name in enumerate(names):
        put(backend, name, tmp_path / f"f{i}", name.encode())
    put(backend, "dirt.txt", tmp_path / "dirt", b"a sibling with a similar name")

    backend.move_dir("dir", "renamed/dir 2")

    assert list(backend.list("dir")) == []
    moved = sorted(e.path for e in backend.list("renamed/dir 2"))
    assert moved == sorted(n.replace("dir/", "renamed/dir 2/", 1) for n in names)
    assert remote.read("renamed/dir 2/sub1/f1.txt") == b"dir/sub1/f1.txt"
    assert remote.read("dirt.txt") == b"a sibling with a similar name"


def test_a_folder_move_passes_over_a_file_another_worker_took_away_meanwhile(
    backend: Backend, remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moves and deletes of folders in and around one another run on several workers at once:
    a file gone between the folder's listing and its own move must not leave the rest behind."""
    for name in ("a", "b", "c"):
        put(backend, f"src/{name}.txt", tmp_path / name, name.encode())
    put(backend, "dst/there.txt", tmp_path / "there", b"there")  # file by file on every backend
    listing = backend.list

    def listed_then_b_taken_away(prefix: str = "") -> Iterator[Any]:
        entries = list(listing(prefix))
        backend.delete("src/b.txt")  # another worker, between the listing and the moves
        return iter(entries)

    monkeypatch.setattr(backend, "list", listed_then_b_taken_away)
    backend.move_dir("src", "dst")
    monkeypatch.undo()
    assert sorted(e.path for e in backend.list("dst")) == ["dst/a.txt", "dst/c.txt", "dst/there.txt"]
    assert list(backend.list("src")) == [] and remote.read("dst/c.txt") == b"c"


def test_a_folder_stays_on_the_remote_as_long_as_it_holds_a_file(
    backend: Backend, remote: Remote, tmp_path: Path
) -> None:
    """What a mirror's deletes and moves empty goes with them; a folder with a file left stays."""
    for i, name in enumerate(["keep.txt", "album/2024/one.jpg", "album/2024/two.jpg", "album/cover.jpg"]):
        put(backend, name, tmp_path / f"f{i}", name.encode())
    put(backend, "drafts/old/a.txt", tmp_path / "a", b"draft")
    put(backend, "archive/x.txt", tmp_path / "x", b"archived")

    assert backend.delete("album/2024/one.jpg")
    assert "album/2024" in remote.folders()  # two.jpg is still in it
    assert backend.delete("album/2024/two.jpg")
    assert remote.folders() == {"album", "drafts", "drafts/old", "archive"}

    backend.move("drafts/old/a.txt", "final/a.txt")
    assert remote.folders() == {"album", "final", "archive"}
    backend.move_dir("archive", "attic/archive")
    assert remote.folders() == {"album", "final", "attic", "attic/archive"}

    for name in ["album/cover.jpg", "final/a.txt", "attic/archive/x.txt"]:
        assert backend.delete(name)
    assert remote.folders() == set()
    assert remote.read("keep.txt") == b"keep.txt"  # the base itself stays

    put(backend, "album/2024/three.jpg", tmp_path / "three", b"back again")
    assert remote.read("album/2024/three.jpg") == b"back again"


def test_an_abandoned_upload_leaves_no_folder_behind(backend: Backend, remote: Remote, tmp_path: Path) -> None:
    local = tmp_path / "gone.bin"
    gen = write(local, os.urandom(BIG))
    with pytest.raises(Interrupted):
        backend.upload("new/folder/gone.bin", str(local), gen, interrupt_after(MiB))

    backend.cleanup("new/folder/gone.bin")  # the file went locally before it was sent

    assert remote.leftovers() == []
    assert remote.folders() == set()


# ----------------------------------------------------------------------------- partials and resume


def test_listing_never_shows_partials_or_bookkeeping(backend: Backend, remote: Remote, tmp_path: Path) -> None:
    put(backend, "done.txt", tmp_path / "done", b"done")
    local = tmp_path / "half"
    gen = write(local, os.urandom(BIG))
    with pytest.raises(Interrupted):
        backend.upload("folder/half.bin", str(local), gen, interrupt_after(MiB))

    assert remote.leftovers() != []
    assert [e.path for e in backend.list()] == ["done.txt"]
    assert backend.stat("folder/half.bin") is None

    backend.cleanup("folder/half.bin")
    assert remote.leftovers() == []


def test_an_interrupted_upload_resumes_where_it_stopped(backend: Backend, remote: Remote, tmp_path: Path) -> None:
    local = tmp_path / "resume.bin"
    data = os.urandom(BIG)
    gen = write(local, data)
    with pytest.raises(Interrupted):
        backend.upload("r/resume.bin", str(local), gen, interrupt_after(BIG // 2))

    again = remote.open()
    result = again.upload("r/resume.bin", str(local), gen, lambda n: None)
    again.close()

    assert result.resumed_from >= 8 * MiB
    assert result.bytes_sent == BIG - result.resumed_from
    assert remote.read("r/resume.bin") == data
    assert remote.leftovers() == []


def test_a_partial_of_an_older_generation_is_discarded_not_continued(
    backend: Backend, remote: Remote, tmp_path: Path
) -> None:
    local = tmp_path / "gen.bin"
    old = write(local, os.urandom(BIG), mtime_ns=1_600_000_000 * 10**9)
    with pytest.raises(Interrupted):
        backend.upload("gen.bin", str(local), old, interrupt_after(BIG // 2))
    data = os.urandom(BIG)
    new = write(local, data, mtime_ns=1_700_000_000 * 10**9)

    result = remote.open().upload("gen.bin", str(local), new, lambda n: None)

    assert result.resumed_from == 0 and result.bytes_sent == BIG
    assert remote.read("gen.bin") == data
    assert remote.leftovers() == []


def test_an_upload_begun_and_not_finished_is_found_under_its_folder_until_it_is_done(
    backend: Backend, remote: Remote, tmp_path: Path
) -> None:
    """What a folder moved in the middle of an upload needs: the uploads under way in it, which a
    listing does not show, so that they can be sent under the folder's new name."""
    local = tmp_path / "begun.bin"
    data = os.urandom(BIG)
    gen = write(local, data)
    with pytest.raises(Interrupted):
        backend.upload("shoot/day 1/begun.bin", str(local), gen, interrupt_after(BIG // 2))
    put(backend, "shoot/done.bin", tmp_path / "done.bin", b"finished")

    assert list(backend.uploads_under("shoot")) == ["shoot/day 1/begun.bin"]
    assert list(backend.uploads_under("shoot/day 1")) == ["shoot/day 1/begun.bin"]
    assert list(backend.uploads_under("elsewhere")) == []
    assert [e.path for e in backend.list("shoot")] == ["shoot/done.bin"]

    backend.upload("shoot/day 1/begun.bin", str(local), gen, lambda n: None)
    assert list(backend.uploads_under("shoot")) == []


def test_an_interrupted_small_upload_leaves_nothing_once_the_next_one_is_done(
    backend: Backend, remote: Remote, tmp_path: Path
) -> None:
    local = tmp_path / "small.bin"
    old = write(local, os.urandom(3 * MiB), mtime_ns=1_600_000_000 * 10**9)
    with pytest.raises(Interrupted):
        backend.upload("small.bin", str(local), old, interrupt_after(MiB))
    data = os.urandom(3 * MiB)
    new = write(local, data, mtime_ns=1_700_000_000 * 10**9)

    backend.upload("small.bin", str(local), new, lambda n: None)

    assert remote.read("small.bin") == data
    assert remote.leftovers() == []


def test_an_upload_whose_partial_another_uploader_discards_is_tried_again_not_refused(
    remote: Remote, tmp_path: Path
) -> None:
    """Two replicas on one path: one discards the partials of the path (a forced re-upload, a
    vanished file) while the other is sending it; on SFTP that also removes the emptied folder.
    An upload that lost its partial may fail, but only as transient, so that it goes round the
    retry ladder instead of into the dead-letter queue; the next try delivers the file."""
    local = tmp_path / "race.bin"
    data = os.urandom(BIG)
    gen = write(local, data)
    sender, other = remote.open(), remote.open()
    discarded = []

    def discard_half_way(done: int) -> None:
        if done >= BIG // 2 and not discarded:
            discarded.append(done)
            other.cleanup("race/sub/race.bin")

    try:
        try:
            sender.upload("race/sub/race.bin", str(local), gen, discard_half_way)
        except TransientError:
            sender.upload("race/sub/race.bin", str(local), gen, lambda n: None)
        assert discarded
    finally:
        sender.close()
        other.close()
    assert remote.read("race/sub/race.bin") == data
    assert remote.leftovers() == []


# ----------------------------------------------------------------------------- refusals and faults


@pytest.mark.parametrize("bad", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "a//b", "nul\x00byte"])
def test_a_path_that_could_escape_the_base_is_refused_and_nothing_is_written(
    backend: Backend, remote: Remote, tmp_path: Path, bad: str
) -> None:
    local = tmp_path / "evil"
    gen = write(local, b"evil")
    with pytest.raises(InvalidPath):
        backend.upload(bad, str(local), gen, lambda n: None)
    with pytest.raises(InvalidPath):
        backend.move("x", bad)
    assert list(backend.list()) == []
    assert remote.leftovers() == []
    assert not (tmp_path / "escape.txt").exists()


def test_an_unreadable_local_file_is_a_local_error(backend: Backend, tmp_path: Path) -> None:
    from skynet.common.errors import LocalFileError

    with pytest.raises(LocalFileError):
        backend.upload("x", str(tmp_path / "does-not-exist"), Generation(size=1, mtime_ns=1), lambda n: None)


def test_an_unreachable_remote_is_unavailable_and_comes_back_by_itself(
    backend: Backend, remote: Remote, tmp_path: Path
) -> None:
    gen = write(tmp_path / "x", b"x")
    upload(backend, "x", tmp_path / "x", gen)

    remote.cut()
    try:
        with pytest.raises(RemoteUnavailable):
            backend.stat("x")
        with pytest.raises(RemoteUnavailable):
            upload(backend, "y", tmp_path / "x", gen)
    finally:
        remote.restore()

    entry = backend.stat("x")  # the same backend object reconnects
    assert entry is not None and backend.matches(entry, gen)


# ----------------------------------------------------------------------------- sftp only


def _sftp_backend(server: sftp_fx.SftpServer, **settings: object) -> Backend:
    from skynet.uploader.storage.sftp import open_backend

    return open_backend(server.target("auth"), server.settings(**settings))


@pytest.fixture(params=["openssh", "paramiko"])
def sftp_client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_sftp_refuses_a_server_whose_host_key_is_not_pinned(sftp_server: sftp_fx.SftpServer, sftp_client: str) -> None:
    backend = _sftp_backend(sftp_server, sftp_known_hosts=sftp_server.other_known_hosts, sftp_client=sftp_client)
    with pytest.raises(RemoteAccessDenied, match="does not match known_hosts"):
        backend.check()


def test_sftp_refuses_a_host_missing_from_known_hosts(
    sftp_server: sftp_fx.SftpServer, tmp_path: Path, sftp_client: str
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(RemoteAccessDenied, match="not in known_hosts"):
        _sftp_backend(sftp_server, sftp_known_hosts=str(empty), sftp_client=sftp_client).check()


def test_sftp_over_openssh_refuses_a_key_the_server_does_not_accept(
    sftp_server: sftp_fx.SftpServer, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    backend = _sftp_backend(sftp_server, sftp_key_file=str(stranger), sftp_client="openssh")
    with pytest.raises(RemoteAccessDenied, match="authentication"):
        backend.check()


def test_sftp_auto_takes_openssh_for_a_private_key_and_paramiko_where_ssh_cannot_serve(
    sftp_server: sftp_fx.SftpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``auto`` carries SFTP over ``ssh`` only where ssh would work unattended, and says which.

    A key readable by others (ssh refuses it) or a password keeps paramiko; asking for
    ``openssh`` there is a configuration error with the reason, not a failure at the first file.
    """
    from skynet.uploader.storage import sftp

    caplog.set_level("INFO", logger=sftp.__name__)
    sftp._CLIENT_LOGGED.clear()
    backend = _sftp_backend(sftp_server)
    backend.check()
    backend.close()
    assert "through the OpenSSH client" in caplog.text

    shared = tmp_path / "shared_key"
    shared.write_bytes(Path(sftp_server.key_file).read_bytes())
    shared.chmod(0o644)
    sftp._CLIENT_LOGGED.clear()
    caplog.clear()
    backend = _sftp_backend(sftp_server, sftp_key_file=str(shared))
    backend.check()  # works, through paramiko
    backend.close()
    assert "through paramiko" in caplog.text and "readable by others" in caplog.text
    with pytest.raises(ConfigError, match=r"SKYNET_SFTP_CLIENT=openssh: .*readable by others"):
        _sftp_backend(sftp_server, sftp_key_file=str(shared), sftp_client="openssh")
    with pytest.raises(ConfigError, match=r"SKYNET_SFTP_CLIENT=openssh: .*key file"):
        _sftp_backend(sftp_server, sftp_key_file=None, sftp_password="some-password", sftp_client="openssh")


def test_sftp_over_openssh_leaves_no_ssh_process_behind(sftp_server: sftp_fx.SftpServer, tmp_path: Path) -> None:
    """Each connection is an ``ssh`` child; closing the backend (or losing the server) ends it."""
    backend = _sftp_backend(sftp_server, sftp_client="openssh", sftp_streams=2)
    put(backend, "big", tmp_path / "big", os.urandom(65 * MiB))  # two streams: two connections
    assert len(_ssh_children()) == 2
    backend.close()
    assert _ssh_children() == []
    backend.check()
    assert len(_ssh_children()) == 1
    sftp_server.stop()
    try:
        with pytest.raises(RemoteUnavailable):
            backend.check()
        assert _ssh_children() == []
    finally:
        sftp_server.start()
    backend.check()
    backend.close()
    assert _ssh_children() == []


def _ssh_children() -> list[int]:
    """The ``ssh`` processes this one started that still run (zombies excluded)."""
    found = []
    for pid in sftp_fx._children(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue
        if head.split("(", 1)[1] == "ssh" and tail.split()[0] != "Z":
            found.append(pid)
    return found


def test_sftp_needs_a_known_hosts_file(sftp_server: sftp_fx.SftpServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SKYNET_SFTP_KNOWN_HOSTS"):
        _sftp_backend(sftp_server, sftp_known_hosts=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="SKYNET_SFTP_KNOWN_HOSTS"):
        _sftp_backend(sftp_server, sftp_known_hosts=None)


def test_sftp_refuses_a_wrong_password(sftp_server: sftp_fx.SftpServer) -> None:
    backend = _sftp_backend(sftp_server, sftp_key_file=None, sftp_password="not-the-password")
    with pytest.raises(RemoteAccessDenied, match="authentication"):
        backend.check()


def test_sftp_reports_a_stopped_server_as_unavailable(sftp_server: sftp_fx.SftpServer) -> None:
    backend = _sftp_backend(sftp_server)
    backend.check()
    sftp_server.stop()
    try:
        with pytest.raises(RemoteUnavailable):
            backend.check()
    finally:
        sftp_server.start()
    backend.check()
    backend.close()


# ----------------------------------------------------------------------------- s3 only


def test_s3_reports_a_stopped_server_as_unavailable(s3_server: s3_fx.S3Server, aws_credentials: None) -> None:
    from skynet.uploader.storage.s3 import open_backend

    t = s3_fx.make_target(s3_server)
    backend = open_backend(t.target, t.settings)
    backend.check()
    s3_server.stop()
    try:
        with pytest.raises(RemoteUnavailable):
            backend.check()
    finally:
        s3_server.start()  # moto forgets everything on restart


def test_s3_refuses_a_missing_bucket(s3_server: s3_fx.S3Server, aws_credentials: None) -> None:
    from skynet.uploader.storage.s3 import open_backend

    backend = open_backend("s3://no-such-bucket-here/x", BackendSettings(s3_endpoint_url=s3_server.endpoint_url))
    # The whole target is refused, not the one file: the uploader pauses instead of dead-lettering.
    with pytest.raises(RemoteAccessDenied, match="NoSuchBucket"):
        backend.upload("x", __file__, generation_of(__file__), lambda n: None)
    # The probe of a paused uploader says the same, not "unavailable" (a HEAD has no error code).
    with pytest.raises(RemoteAccessDenied, match="bucket no-such-bucket-here does not exist"):
        backend.check()


def test_s3_records_the_generation_and_leaves_no_multipart_upload_open(
    s3_target: s3_fx.S3Target, tmp_path: Path
) -> None:
    from skynet.uploader.storage.s3 import open_backend

    backend = open_backend(s3_target.target, s3_target.settings)
    gen = put(backend, "big", tmp_path / "big", os.urandom(BIG))

    t = s3_target
    head = t.client.head_object(Bucket=t.bucket, Key=f"{t.prefix}/big")
    assert head["Metadata"]["skynet-generation"] == gen.token()
    assert t.client.list_multipart_uploads(Bucket=t.bucket).get("Uploads", []) == []
    assert [o["Key"] for o in t.client.list_objects_v2(Bucket=t.bucket)["Contents"]] == [f"{t.prefix}/big"]


@pytest.mark.parametrize("checksum", ["crc32", "md5"])
def test_s3_every_body_carries_a_checksum_the_server_checks(
    s3_server: s3_fx.S3Server, aws_credentials: None, tmp_path: Path, checksum: str
) -> None:
    """SKYNET_S3_CHECKSUM: both kinds land the same bytes, each with the checksum it names.

    (moto does not verify the checksums it is sent; S3 and MinIO refuse a body that does not match.)
    """
    from skynet.uploader.storage.s3 import open_backend

    t = s3_fx.make_target(s3_server, s3_checksum=checksum)
    backend = open_backend(t.target, t.settings)
    small, big = os.urandom(100_000), os.urandom(BIG)
    put(backend, "small", tmp_path / "small", small)
    put(backend, "big", tmp_path / "big", big)
    for name, data in (("small", small), ("big", big)):
        assert t.client.get_object(Bucket=t.bucket, Key=f"{t.prefix}/{name}")["Body"].read() == data
    assert t.client.list_multipart_uploads(Bucket=t.bucket).get("Uploads", []) == []

    for name, data in (("small", small), ("big", big)):
        head = t.client.head_object(Bucket=t.bucket, Key=f"{t.prefix}/{name}", ChecksumMode="ENABLED")
        if checksum == "crc32":  # the server holds the CRC32 it was given (and, on S3 and MinIO, checked)
            assert head.get("ChecksumCRC32"), head
        else:
            assert "ChecksumCRC32" not in head
    small_etag = t.client.head_object(Bucket=t.bucket, Key=f"{t.prefix}/small")["ETag"].strip('"')
    assert small_etag == hashlib.md5(small).hexdigest()

    # A moved multipart object reads back cleanly with a client that validates checksums (the
    # copy must not inherit the composite checksum of the parts).
    backend.move("big", "moved/big")
    assert (
        t.client.get_object(Bucket=t.bucket, Key=f"{t.prefix}/moved/big", ChecksumMode="ENABLED")["Body"].read() == big
    )


def test_s3_an_upload_begun_with_the_other_checksum_starts_over(
    s3_server: s3_fx.S3Server, aws_credentials: None, tmp_path: Path
) -> None:
    from skynet.uploader.storage.s3 import open_backend

    local = tmp_path / "big"
    data = os.urandom(BIG)
    gen = write(local, data)
    t = s3_fx.make_target(s3_server, s3_checksum="md5")
    with pytest.raises(Interrupted):
        open_backend(t.target, t.settings).upload("big", str(local), gen, interrupt_after(9 * MiB))

    crc = open_backend(t.target, dataclasses.replace(t.settings, s3_checksum="crc32"))
    result = crc.upload("big", str(local), gen, lambda n: None)

    assert result.resumed_from == 0 and result.bytes_sent == BIG
    assert t.client.get_object(Bucket=t.bucket, Key=f"{t.prefix}/big")["Body"].read() == data
    assert t.client.list_multipart_uploads(Bucket=t.bucket).get("Uploads", []) == []
    assert [o["Key"] for o in t.client.list_objects_v2(Bucket=t.bucket)["Contents"]] == [f"{t.prefix}/big"]


def test_s3_copies_objects_over_5_gib_part_by_part_keeping_the_metadata(
    s3_target: s3_fx.S3Target, tmp_path: Path
) -> None:
    from skynet.uploader.storage import _s3_multipart as mp
    from skynet.uploader.storage.s3 import open_backend

    backend = open_backend(s3_target.target, s3_target.settings)
    gen = put(backend, "src", tmp_path / "src", os.urandom(3 * MiB))
    t = s3_target
    head = dict(t.client.head_object(Bucket=t.bucket, Key=f"{t.prefix}/src"))

    mp.copy_large(t.client, t.bucket, f"{t.prefix}/src", f"{t.prefix}/dst", 3 * MiB, head)

    entry = backend.stat("dst")
    assert entry is not None and entry.generation == gen
    assert t.client.list_multipart_uploads(Bucket=t.bucket).get("Uploads", []) == []


def test_s3_delete_also_aborts_an_upload_left_open(s3_target: s3_fx.S3Target, tmp_path: Path) -> None:
    from skynet.uploader.storage.s3 import open_backend

    backend = open_backend(s3_target.target, s3_target.settings)
    local = tmp_path / "big"
    gen = write(local, os.urandom(BIG))
    with pytest.raises(Interrupted):
        backend.upload("big", str(local), gen, interrupt_after(MiB))
    t = s3_target
    assert t.client.list_multipart_uploads(Bucket=t.bucket).get("Uploads", []) != []

    assert backend.delete("big") is False  # it never completed

    assert t.client.list_multipart_uploads(Bucket=t.bucket).get("Uploads", []) == []
    assert t.client.list_objects_v2(Bucket=t.bucket).get("Contents", []) == []


def test_s3_refuses_a_top_level_skynet_folder_which_holds_its_bookkeeping(
    s3_target: s3_fx.S3Target, tmp_path: Path
) -> None:
    from skynet.uploader.storage.s3 import open_backend

    backend = open_backend(s3_target.target, s3_target.settings)
    big = tmp_path / "big"
    gen = write(big, os.urandom(BIG))
    with pytest.raises(Interrupted):
        backend.upload("big", str(big), gen, interrupt_after(MiB))  # leaves its marker under .skynet/
    markers = [o["Key"] for o in s3_target.client.list_objects_v2(Bucket=s3_target.bucket)["Contents"]]
    marker = markers[0][len(s3_target.prefix) + 1 :]
    assert marker.startswith(".skynet/")

    for rel in (marker, ".skynet/notes.txt"):
        with pytest.raises(InvalidPath, match="bookkeeping"):
            put(backend, rel, tmp_path / "mine", b"a user's file")
        with pytest.raises(InvalidPath):
            backend.delete(rel)
    put(backend, "sub/.skynet/notes.txt", tmp_path / "fine", b"only the top level is reserved")
    put(backend, ".skynet-not-quite/notes.txt", tmp_path / "fine2", b"nor a longer name")

    result = backend.upload("big", str(big), gen, lambda n: None)  # the marker was left alone
    assert result.resumed_from > 0
    assert sorted(e.path for e in backend.list()) == [".skynet-not-quite/notes.txt", "big", "sub/.skynet/notes.txt"]


def test_s3_sends_a_small_body_at_once_and_asks_before_sending_a_large_part(
    s3_target: s3_fx.S3Target, tmp_path: Path
) -> None:
    """A small PUT costs one round trip, not two: no ``Expect: 100-continue`` under 2 MiB.

    A part of 8 MiB still asks first (the server may refuse it before all of it is sent).
    The headers are read as botocore sends them, to the real moto server.
    """
    from skynet.uploader.storage.s3 import open_backend

    backend = open_backend(s3_target.target, s3_target.settings)
    sent: list[tuple[str, int, str | None]] = []

    def record(request: Any, **_: Any) -> None:
        expect = request.headers.get("Expect")
        length = int(request.headers.get("Content-Length") or 0)
        sent.append((request.method, length, expect.decode() if isinstance(expect, bytes) else expect))

    backend.client.meta.events.register("before-send.s3", record)
    put(backend, "small", tmp_path / "small", os.urandom(64 * 1024))
    put(backend, "big", tmp_path / "big", os.urandom(BIG))
    bodies = [(length, expect) for method, length, expect in sent if method == "PUT" and length > 0]
    small = [expect for length, expect in bodies if length < 2 * 1024 * 1024]
    large = [expect for length, expect in bodies if length >= 2 * 1024 * 1024]
    assert small and all(e is None for e in small), bodies
    assert large and all(e == "100-continue" for e in large), bodies


def test_s3_resolves_its_endpoint_once_not_once_per_key(s3_target: s3_fx.S3Target, tmp_path: Path) -> None:
    """botocore's endpoint rules are evaluated once for a bucket, not again for every new key.

    The key is a parameter of S3's rule set that no rule reads; left in, it made every upload of
    a new file evaluate the whole rule set (a tenth of the uploader's CPU per small file). Every
    request must still reach the right URL, and every object arrive under its own key.
    """
    from skynet.uploader.storage._s3_client import unread_parameters
    from skynet.uploader.storage.s3 import open_backend

    backend = open_backend(s3_target.target, s3_target.settings)
    urls: list[str] = []
    backend.client.meta.events.register("before-send.s3", lambda request, **_: urls.append(request.url))
    ruleset = backend.client._ruleset_resolver._provider.ruleset  # type: ignore[attr-defined]
    evaluated: list[dict[str, Any]] = []
    evaluate = ruleset.evaluate
    ruleset.evaluate = lambda params: evaluated.append(dict(params)) or evaluate(params)
    paths = [f"d{i % 3}/file {i}.bin" for i in range(12)]
    for i, path in enumerate(paths):
        put(backend, path, tmp_path / f"f{i}", b"%d" % i * 100)
    assert len(evaluated) <= 1, [p.get("Key") for p in evaluated]
    for i, path in enumerate(paths):
        key = f"{s3_target.prefix}/{path}".lstrip("/")
        body = s3_target.client.get_object(Bucket=s3_target.bucket, Key=key)["Body"].read()
        assert body == b"%d" % i * 100
    puts = [u for u in urls if "file%20" in u]
    base = f"{s3_target.server.endpoint_url}/{s3_target.bucket}/"
    assert len(puts) == len(paths) and all(u.startswith(base) for u in puts)
    assert {"Key", "Prefix", "CopySource"} <= unread_parameters(_s3_ruleset())
    assert "Bucket" not in unread_parameters(_s3_ruleset())


def test_s3_sends_botocores_own_user_agent_built_once_per_kind_of_request(
    s3_target: s3_fx.S3Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The User-Agent each request carries is exactly botocore's, but built once, not twice a request.

    botocore assembles it from a dozen sanitised components when it serialises a request and
    again just before sending (7 % of the uploader's CPU per small PUT). Requests that use
    different features (a PUT with a CRC32, a multipart part, a HEAD) carry different strings;
    each must still carry its own, as a client without the cache sends it.
    """
    from botocore.useragent import UserAgentString

    from skynet.uploader.storage import _s3_client
    from skynet.uploader.storage.s3 import open_backend

    builds = [0]
    build = UserAgentString.to_string

    def counted(self: UserAgentString) -> str:
        builds[0] += 1
        return build(self)

    monkeypatch.setattr(UserAgentString, "to_string", counted)

    def agents(backend: Any, name: str) -> list[tuple[str, str]]:
        sent: list[tuple[str, str]] = []

        def record(request: Any, **_: Any) -> None:
            ua = request.headers.get("User-Agent")
            sent.append((request.method, ua.decode() if isinstance(ua, bytes) else ua))

        backend.client.meta.events.register("before-send.s3", record)
        for i in range(5):
            put(backend, f"{name}/small-{i}", tmp_path / f"{name}-{i}", os.urandom(1024))
        put(backend, f"{name}/big", tmp_path / f"{name}-big", os.urandom(BIG))
        backend.stat(f"{name}/big")
        return sent

    cached = open_backend(s3_target.target, s3_target.settings)
    builds[0] = 0
    with_cache = agents(cached, "a")
    built_with_cache = builds[0]
    monkeypatch.setattr(_s3_client, "_build_user_agent_once", lambda client: None)
    plain = open_backend(s3_target.target, s3_target.settings)
    builds[0] = 0
    without = agents(plain, "b")

    assert with_cache == without
    assert len({ua for _, ua in without}) >= 2  # the kinds of request do carry different strings
    assert builds[0] >= 2 * len(without)
    assert built_with_cache <= len({ua for _, ua in without}) + 2


def _s3_ruleset() -> dict[str, Any]:
    import botocore.loaders

    ruleset: dict[str, Any] = botocore.loaders.create_loader().load_service_model("s3", "endpoint-rule-set-1")
    return ruleset

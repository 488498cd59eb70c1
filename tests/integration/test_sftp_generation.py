"""SFTP records whole seconds only: two same-size versions written within one second must differ."""

from __future__ import annotations

import os
from pathlib import Path

from skynet.common.messages import Generation
from skynet.uploader.storage.registry import open_backend
from tests.fixtures.sftp_server import SftpTarget


def test_a_newer_same_size_version_from_the_same_second_is_not_taken_for_the_uploaded_one(
    tmp_path: Path, sftp_target: SftpTarget
) -> None:
    backend = open_backend(sftp_target.target, sftp_target.settings)
    try:
        local = tmp_path / "f.bin"
        local.write_bytes(b"A" * 100)
        st = os.stat(local)
        first = Generation(size=100, mtime_ns=st.st_mtime_ns, inode=st.st_ino)
        backend.upload("f.bin", str(local), first, lambda _n: None)
        entry = backend.stat("f.bin")
        assert entry is not None and backend.matches(entry, first)
        same_second = Generation(size=100, mtime_ns=first.mtime_ns // 10**9 * 10**9 + 999_999_999, inode=st.st_ino)
        if same_second.mtime_ns == first.mtime_ns:
            same_second = Generation(size=100, mtime_ns=first.mtime_ns - 1, inode=st.st_ino)
        assert not backend.matches(entry, same_second), "a newer version in the same second would be skipped"
    finally:
        backend.close()


def test_reading_the_remote_file_does_not_make_an_unchanged_file_look_changed(
    tmp_path: Path, sftp_target: SftpTarget
) -> None:
    backend = open_backend(sftp_target.target, sftp_target.settings)
    try:
        local = tmp_path / "f.bin"
        local.write_bytes(os.urandom(1000))
        st = os.stat(local)
        gen = Generation(size=1000, mtime_ns=st.st_mtime_ns, inode=st.st_ino)
        backend.upload("f.bin", str(local), gen, lambda _n: None)
        (sftp_target.local_dir / "f.bin").read_bytes()  # someone downloads it (relatime server)
        entry = backend.stat("f.bin")
        assert entry is not None and backend.matches(entry, gen), "a read made the file look changed"
    finally:
        backend.close()

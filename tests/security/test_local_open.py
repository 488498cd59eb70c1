"""The uploader's last line against a swapped name: opening a local file never follows a link
and never blocks, whatever replaced the regular file the uploader saw a moment before."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from skynet.common.errors import LocalFileError
from skynet.uploader.storage._localfile import open_regular


def opens_within(seconds: float, path: Path) -> BaseException | None:
    """Call open_regular on a thread; fail the test if it is still blocked after ``seconds``."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            open_regular(str(path)).close()
            outcome.append(None)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert outcome, f"opening {path.name} blocked"
    return outcome[0]


def test_a_regular_file_opens_for_reading(tmp_path: Path) -> None:
    (tmp_path / "plain.bin").write_bytes(b"data")
    with open_regular(str(tmp_path / "plain.bin")) as f:
        assert f.read() == b"data"


def test_a_fifo_without_a_writer_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    exc = opens_within(5, tmp_path / "fifo")
    assert isinstance(exc, LocalFileError) and "not a regular file" in str(exc)


@pytest.mark.parametrize("target", ["/etc/passwd", "plain.bin", "loop"])
def test_a_symlink_is_never_followed_wherever_it_points(tmp_path: Path, target: str) -> None:
    (tmp_path / "plain.bin").write_bytes(b"data")
    os.symlink(target, tmp_path / "loop" if target == "loop" else tmp_path / "link")
    exc = opens_within(5, tmp_path / ("loop" if target == "loop" else "link"))
    assert isinstance(exc, LocalFileError) and "symlink" in str(exc)


def test_a_socket_and_a_device_are_refused(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a socket path is limited to ~100 bytes: bind by a short relative name
    try:
        sock.bind("sock")
    finally:
        os.chdir(cwd)
    try:
        assert isinstance(opens_within(5, tmp_path / "sock"), LocalFileError)
    finally:
        sock.close()
    exc = opens_within(5, Path("/dev/zero"))
    assert isinstance(exc, LocalFileError) and "not a regular file" in str(exc)

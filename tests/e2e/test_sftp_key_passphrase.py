"""An encrypted SFTP private key: the real uploader uses it with SKYNET_SFTP_KEY_PASSPHRASE, and
refuses to start without it (or with a wrong one) with a clear error that never shows the passphrase."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from tests.e2e.harness import Stack
from tests.e2e.remotes import SftpRemote
from tests.fixtures.common import wait_for
from tests.fixtures.sftp_server import SftpTarget

PASSPHRASE = f"correct horse {uuid.uuid4().hex[:12]}"


def _encrypted_key(target: SftpTarget, folder: Path) -> Path:
    """A new ed25519 key encrypted with PASSPHRASE, authorized on the test server."""
    key = folder / "encrypted_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(key)], check=True)
    with open(target.server.workdir / "authorized_keys", "a") as f:
        f.write(Path(f"{key}.pub").read_text())
    return key


def test_an_encrypted_key_works_with_its_passphrase_and_is_refused_clearly_without_it(
    tmp_path: Path, amqp_url: str, sftp_target: SftpTarget
) -> None:
    key = _encrypted_key(sftp_target, tmp_path)
    stack = Stack(
        tmp_path / "stack",
        amqp_url,
        SftpRemote(sftp_target),
        extra_env={"SKYNET_SFTP_KEY_FILE": str(key), "SKYNET_LOG_LEVEL": "DEBUG"},
    )
    try:
        without = stack.start("uploader", name="no-passphrase")
        wrong = stack.start("uploader", name="wrong-passphrase", SKYNET_SFTP_KEY_PASSPHRASE="not it")
        for proc in (without, wrong):
            wait_for(lambda p=proc: not p.alive(), 60, what=f"{proc.name} to refuse to start")
            assert proc.popen.returncode == 2, proc.text()
        assert "is encrypted; set SKYNET_SFTP_KEY_PASSPHRASE" in without.text(), without.text()
        assert "SKYNET_SFTP_KEY_PASSPHRASE right?" in wrong.text(), wrong.text()

        stack.start("watcher")
        uploader = stack.start("uploader", name="with-passphrase", SKYNET_SFTP_KEY_PASSPHRASE=PASSPHRASE)
        (stack.watch / "photo.jpg").write_bytes(b"\xff\xd8" + b"x" * 200_000)
        stack.wait_mirror(timeout=60)
        assert uploader.alive()
    finally:
        stack.stop_all()
    for proc in stack.procs:
        assert PASSPHRASE not in proc.text(), f"the passphrase reached {proc.name}'s log"

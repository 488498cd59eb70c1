"""Large files go through in bounded memory (the uploader must stay under 200 MiB for 4 GiB).

The upload runs in a child process that reports its own peak RSS. ``LARGE_FILE_MIB`` defaults to
1 GiB to keep the suite quick; set ``SKYNET_TEST_LARGE_MIB=4096`` for the full figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from skynet.uploader.storage.config import BackendSettings
from tests.fixtures import s3_server as s3_fx
from tests.fixtures import sftp_server as sftp_fx
from tests.fixtures.storage_remotes import generation_of

MiB = 1024 * 1024
LARGE_FILE_MIB = int(os.environ.get("SKYNET_TEST_LARGE_MIB", "1024"))
RSS_LIMIT_MIB = 200

CHILD = """
import json, sys
from skynet.common.messages import Generation
from skynet.uploader.storage.config import BackendSettings
from skynet.uploader.storage.registry import open_backend
args = json.loads(sys.argv[1])
backend = open_backend(args["target"], BackendSettings(**args["settings"]))
calls = []
result = backend.upload(args["path"], args["local"], Generation(**args["generation"]), calls.append)
# VmHWM, not ru_maxrss: the latter starts at the parent's peak on Linux (inherited through fork)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"rss_mib": int(hwm) / 1024,
                  "sent": result.bytes_sent, "progress_calls": len(calls)}))
"""


def sparse_big_file(path: Path, size: int) -> None:
    """A large file that costs no disk: random blocks at a few places, holes elsewhere."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, 256 * MiB):
            f.seek(offset)
            f.write(os.urandom(MiB))


def upload_in_child(target: str, settings: BackendSettings, local: Path) -> dict[str, float]:
    args = {
        "target": target,
        "settings": asdict(settings),
        "path": "large/file.bin",
        "local": str(local),
        "generation": generation_of(local).model_dump(),
    }
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, timeout=900, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n{target.split(':')[0]}: {LARGE_FILE_MIB} MiB uploaded with a peak RSS of {result['rss_mib']:.0f} MiB")
    return result


@pytest.mark.timeout(900)
def test_a_large_s3_upload_stays_in_bounded_memory(s3_target: s3_fx.S3Target, tmp_path: Path) -> None:
    local = tmp_path / "large.bin"
    sparse_big_file(local, LARGE_FILE_MIB * MiB)
    result = upload_in_child(s3_target.target, s3_target.settings, local)
    assert result["sent"] == LARGE_FILE_MIB * MiB
    assert result["rss_mib"] < RSS_LIMIT_MIB
    head = s3_target.client.head_object(Bucket=s3_target.bucket, Key=f"{s3_target.prefix}/large/file.bin")
    assert head["ContentLength"] == LARGE_FILE_MIB * MiB


@pytest.mark.timeout(900)
def test_a_large_sftp_upload_stays_in_bounded_memory(sftp_target: sftp_fx.SftpTarget, tmp_path: Path) -> None:
    local = tmp_path / "large.bin"
    sparse_big_file(local, LARGE_FILE_MIB * MiB)
    result = upload_in_child(sftp_target.target, sftp_target.settings, local)
    assert result["sent"] == LARGE_FILE_MIB * MiB
    assert result["rss_mib"] < RSS_LIMIT_MIB
    # Several streams: progress follows the acknowledged prefix, at least every 16 MiB window.
    assert result["progress_calls"] >= LARGE_FILE_MIB // 16
    assert (sftp_target.local_dir / "large" / "file.bin").stat().st_size == LARGE_FILE_MIB * MiB

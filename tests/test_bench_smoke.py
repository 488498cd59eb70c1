"""The benchmark suite still runs end to end: ``python -m bench --quick`` on a tiny workload.

It starts its own sshd, moto server and RabbitMQ vhost, runs skynet and the peers side by side and
writes a results table; here only that the table is produced is asserted, not any figure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_quick_benchmark_writes_a_results_table(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    cmd = [
        sys.executable, "-m", "bench", "--quick",
        "--only", "small,large,latency,scaling",
        "--kinds", "sftp",
        "--small-files", "20", "--large-mib", "4", "--trials", "5", "--scale-files", "8",
        "--out", str(out), "--work", str(tmp_path / "work"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    text = out.read_text()
    assert "| workload | tool | median |" in text
    for row in (
        "20 × 64 KiB → SFTP | skynet",  # noqa: RUF001
        "rclone --transfers 4, hash check off",
        "one 4 MiB file → SFTP | skynet",
        "close → on SFTP, settle 0 ms | skynet p50",
        "8 × 64 KiB → SFTP + 20 ms RTT | 4 uploaders × concurrency 4",  # noqa: RUF001
        "8 × 64 KiB → SFTP + 20 ms RTT | rclone --transfers 16, hash check off",  # noqa: RUF001
        "| scaling SFTP, context: 4 uploaders × 4 against rclone --transfers 16",  # noqa: RUF001
    ):
        assert row in text, text

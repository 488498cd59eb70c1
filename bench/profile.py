"""Profile skynet's processes on the small-files workload: ``python -m bench.profile sftp|s3 [N]``.

Starts the loopback servers and a warmed-up skynet (settle 0), attaches ``py-spy record`` to the
watcher and the uploader, writes N files of 64 KiB, and leaves flame graphs (SVG) and a text
summary of the hottest functions under bench/work/profile/.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.env import BenchEnv
from bench.results import Results
from bench.skynet_run import SkynetRun
from bench.workloads import QUICK, Bench

HERE = Path(__file__).resolve().parent


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (including its reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    from tests.fixtures.sftp_server import _children

    return cpu_s(pid) + sum(cpu_s(c) for c in _children(pid)) if pid else 0.0


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "sftp"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    work = HERE / "work"
    out = work / "profile"
    out.mkdir(parents=True, exist_ok=True)
    env = BenchEnv(work).start()
    try:
        bench = Bench(env, work, QUICK, Results())
        data = bench.small_data(n)
        files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.bin"))
        remote = env.remote(kind)
        conc = 4 if kind == "sftp" else 8
        with SkynetRun(env, remote, bench.base(f"profile-{kind}"), settle_ms=0, concurrency=conc) as sk:
            assert sk.watcher is not None
            spies = []
            for proc in (sk.watcher, sk.uploaders[0]):
                for fmt in ("flamegraph", "raw"):
                    ext = "svg" if fmt == "flamegraph" else "txt"
                    spies.append(
                        subprocess.Popen(
                            ["py-spy", "record", "-p", str(proc.popen.pid), "-r", "200", "-f", fmt, "--gil",
                             "--nonblocking",
                             "-o", str(out / f"{kind}-{proc.name}.{ext}")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )
                    )  # fmt: skip
            time.sleep(1.0)
            pids = {"watcher": sk.watcher.popen.pid, "uploader": sk.uploaders[0].popen.pid}
            assert env.sshd is not None and env.moto is not None
            cpu0 = {k: cpu_s(v) for k, v in pids.items()}
            server0 = tree_cpu_s(env.sshd._proc.pid if env.sshd._proc else 0) + tree_cpu_s(
                env.moto._proc.pid if env.moto._proc else 0
            )
            mark = sk.mark()
            t0 = time.time()
            for rel in files:
                dst = sk.watch / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data / rel, dst)
            done = sk.wait_done(set(files), mark, timeout=900)
            secs = max(e["created_at"] for e in done.values()) - t0
            print(f"{kind}: {n} files in {secs:.2f} s = {n / secs:.1f} files/s (under py-spy)")
            for k, v in pids.items():
                print(f"  CPU {k}: {cpu_s(v) - cpu0[k]:.2f} s")
            server1 = tree_cpu_s(env.sshd._proc.pid if env.sshd._proc else 0) + tree_cpu_s(
                env.moto._proc.pid if env.moto._proc else 0
            )
            print(f"  CPU sshd+moto: {server1 - server0:.2f} s")
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                spy.wait(30)
        remote.clear()
    finally:
        env.close()
    for raw in out.glob(f"{kind}-*.txt"):
        print(f"--- {raw.name}: hottest leaf functions")
        os.system(f"python -m bench.topfuncs {raw} | head -25")


if __name__ == "__main__":
    main()

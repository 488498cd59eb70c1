# ruff: noqa: RUF001
"""The five workloads of issue 7, each running skynet and its peers side by side, run after run.

Within one run the tools go one after the other on the same data and the same servers, so a
neighbour's load on this shared machine hits them alike; every tool gets a fresh remote folder.
Throughput workloads run skynet with ``SKYNET_SETTLE_MS=0`` (a file counts as stable on its close):
the peers start from files already complete, and the settle period is measured on its own by the
latency workload.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import posixpath
import shutil
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import peers
from bench.delay_proxy import DelayProxy
from bench.env import BenchEnv, Remote
from bench.results import Results, cpu_ticks
from bench.skynet_run import SCAN_LINE, SkynetRun, vm_hwm_kib
from tests.e2e.harness import NoRemote, Stack
from tests.fixtures.common import write_old_files

log = logging.getLogger("bench")

MiB = 1024 * 1024
SMALL_SIZE = 64 * 1024
PER_FOLDER = 100
SCALING_PEER_TRANSFERS = (4, 16)  # the total concurrency of 1 and of 4 uploaders, 4 transfers each


def scaling_peer_tool(kind: str, transfers: int) -> str:
    """The label of the scaling workload's peer (``kind``: sftp or s3) at ``transfers``."""
    if kind == "sftp":
        return f"rclone --transfers {transfers}, hash check off"
    return f"bare boto3 put loop, {transfers} threads"


@dataclass
class Sizes:
    small_files: int
    large_mib: int
    large_mib_s3: int
    trials: int
    scale_files: int
    scan_files: int
    scan_dirs: int
    rss_mib: int
    runs: int
    scale_runs: int
    s3_runs: int  # S3 throughput (small and large files): moto's runs spread the widest

    def runs_for(self, kind: str) -> int:
        return self.s3_runs if kind == "s3" else self.runs


QUICK = Sizes(300, 64, 64, 20, 100, 10_000, 500, 256, 1, 1, 1)
DEFAULT = Sizes(2_000, 1024, 1024, 200, 400, 200_000, 10_000, 4096, 3, 1, 5)
FULL = Sizes(10_000, 4096, 1024, 200, 1_000, 200_000, 10_000, 4096, 3, 2, 5)


class Bench:
    def __init__(
        self,
        env: BenchEnv,
        work: Path,
        sizes: Sizes,
        results: Results,
        quick: bool = False,
        baseline: tuple[str, Path] | None = None,
    ) -> None:
        self.env, self.work, self.sizes, self.res = env, work, sizes, results
        self.baseline = baseline  # (label, source tree): an older skynet, run side by side (small, latency)
        self.quick = quick  # smoke run: the slowest S3 parts (scaling, uploader RSS) are left out
        self._n = 0

    # ------------------------------------------------------------------ helpers

    def base(self, what: str) -> Path:
        self._n += 1
        path = self.work / "runs" / f"{self._n:03d}-{what}"
        path.mkdir(parents=True)
        return path

    def small_data(self, n: int) -> Path:
        """``n`` files of 64 KiB of random bytes, ``PER_FOLDER`` per folder (made once, kept)."""
        root = self.work / f"data-small-{n}"
        marker = self.work / f"data-small-{n}.complete"
        if not marker.exists():
            shutil.rmtree(root, ignore_errors=True)
            for i in range(n):
                d = root / f"d{i // PER_FOLDER:03d}"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"f{i:05d}.bin").write_bytes(os.urandom(SMALL_SIZE))
            marker.touch()
        return root

    def large_data(self, mib: int) -> Path:
        path = self.work / f"data-large-{mib}" / f"big-{mib}MiB.bin"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(MiB))
            tmp.rename(path)
        return path

    def peer(
        self, workload: str, tool: str, unit: str, kind: str, run: Callable[[Remote], float], amount: float
    ) -> None:
        remote = self.env.remote(kind)
        try:
            seconds = run(remote)
            expected = self._expected.get(workload)
            if expected is not None and remote.count() != expected:
                raise RuntimeError(f"{tool}: the remote holds {remote.count()} files, expected {expected}")
            self.res.get(workload, tool, unit).values.append(amount / seconds)
            log.info("%s | %s: %.2f %s", workload, tool, amount / seconds, unit)
        except Exception as exc:
            self.res.errors.append(f"{workload} | {tool}: {exc}")
            log.exception("%s | %s failed", workload, tool)
        finally:
            remote.clear()

    _expected: dict[str, int] = {}

    def baseline_env(self) -> dict[str, str]:
        assert self.baseline is not None
        root = self.baseline[1]
        services = ("common", "watcher", "uploader", "notifier", "api")
        return {"PYTHONPATH": os.pathsep.join(str(root / "services" / s / "src") for s in services)}

    # ------------------------------------------------------------------ 1. small files

    def small_files(self, kind: str) -> None:
        n = self.sizes.small_files
        data = self.small_data(n)
        files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.bin"))
        wl = f"1. {n:,} × 64 KiB → {kind.upper()}"
        conc = 4 if kind == "sftp" else 8
        self._expected[wl] = n
        remote = self.env.remote(kind)
        with contextlib.ExitStack() as stack:
            sk = stack.enter_context(
                SkynetRun(self.env, remote, self.base(f"small-{kind}"), settle_ms=0, concurrency=conc)
            )
            old = None
            if self.baseline is not None:
                old_remote = self.env.remote(kind)
                stack.callback(old_remote.clear)
                old = stack.enter_context(
                    SkynetRun(self.env, old_remote, self.base(f"small-{kind}-baseline"), settle_ms=0,
                              concurrency=conc, extra_env=self.baseline_env())
                )  # fmt: skip
            for r in range(self.sizes.runs_for(kind)):
                self._skynet_small(sk, wl, data, files, f"run{r}", f"skynet (concurrency {conc})")
                if old is not None and self.baseline is not None:
                    self._skynet_small(
                        old, wl, data, files, f"run{r}", f"skynet {self.baseline[0]} (concurrency {conc})"
                    )
                self.res.get(wl, f"skynet (concurrency {conc})", "files/s")
                if kind == "sftp":
                    self.peer(
                        wl,
                        "rclone --transfers 4, hash check off",
                        "files/s",
                        kind,
                        lambda rm: peers.rclone_copy(
                            self.env,
                            rm,
                            data,
                            self.work,
                            transfers=4,
                            extra=("--sftp-disable-hashcheck", "--ignore-checksum"),
                        ),
                        n,
                    )
                    self.peer(
                        wl, "rsync -a over ssh", "files/s", kind, lambda rm: peers.rsync_ssh(self.env, rm, data), n
                    )
                else:
                    self.peer(
                        wl,
                        "rclone copy --transfers 8",
                        "files/s",
                        kind,
                        lambda rm: peers.rclone_copy(self.env, rm, data, self.work, transfers=8),
                        n,
                    )
                    self.peer(
                        wl,
                        "bare boto3 put loop, 8 threads",
                        "files/s",
                        kind,
                        lambda rm: peers.boto3_put_loop(self.env, rm, data, 8),
                        n,
                    )
        remote.clear()

    def _skynet_small(self, sk: SkynetRun, wl: str, data: Path, files: list[str], sub: str, tool: str) -> None:
        try:
            # The files are copied next to the watched folder first and then moved in one by one
            # (each appears complete, as the large-file workload's does): the peers read files
            # already on disk, and the bench's own copying would otherwise take CPU from skynet
            # and the server while skynet is timed. Their folders are made before the clock
            # starts.
            staging = sk.stack.base / f"staging-{sub}"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(data, staging)
            for folder in {posixpath.dirname(rel) for rel in files}:
                (sk.watch / sub / folder).mkdir(parents=True, exist_ok=True)
            os.sync()
            time.sleep(1.0)  # the watcher has looked into the new (empty) folders
            mark = sk.mark()
            t0 = time.time()
            for rel in files:
                os.rename(staging / rel, sk.watch / sub / rel)
            done = sk.wait_done({f"{sub}/{rel}" for rel in files}, mark, timeout=900)
            seconds = max(e["created_at"] for e in done.values()) - t0
            self.res.get(wl, tool, "files/s").values.append(len(files) / seconds)
            log.info("%s | %s: %.1f files/s", wl, tool, len(files) / seconds)
            sk.purge_events()
        except Exception as exc:
            self.res.errors.append(f"{wl} | {tool}: {exc}")
            log.exception("%s | %s failed", wl, tool)

    # ------------------------------------------------------------------ 2. one large file

    def large_file(self, kind: str) -> None:
        mib = self.sizes.large_mib if kind == "sftp" else self.sizes.large_mib_s3
        data = self.large_data(mib)
        wl = f"2. one {mib:,} MiB file → {kind.upper()}"
        self._expected[wl] = 1
        extra = {"SKYNET_S3_PART_CONCURRENCY": "8"} if kind == "s3" else {}
        tool = "skynet" if kind == "sftp" else "skynet (8 parts in flight)"
        remote = self.env.remote(kind)
        base = self.base(f"large-{kind}")
        staging = base / "staging"
        staging.mkdir()
        with SkynetRun(self.env, remote, base, settle_ms=0, concurrency=1, extra_env=extra) as sk:
            for r in range(self.sizes.runs_for(kind)):
                try:
                    name = f"big-{r}.bin"
                    stage_large(data, staging / name)
                    mark = sk.mark()
                    t0 = time.time()
                    os.rename(staging / name, sk.watch / name)  # appears complete, as the peers see it
                    done = sk.wait_done({name}, mark, timeout=1800)
                    seconds = done[name]["created_at"] - t0
                    self.res.get(wl, tool, "MiB/s").values.append(mib / seconds)
                    log.info("%s | %s: %.1f MiB/s", wl, tool, mib / seconds)
                    remote.clear()
                    (sk.watch / name).unlink()
                except Exception as exc:
                    self.res.errors.append(f"{wl} | {tool}: {exc}")
                    log.exception("%s | skynet failed", wl)
                if kind == "sftp":
                    self.peer(
                        wl,
                        "rclone copy",
                        "MiB/s",
                        kind,
                        lambda rm: peers.rclone_copy(self.env, rm, data, self.work, transfers=1),
                        mib,
                    )
                    self.peer(
                        wl,
                        "rclone copy, hash check off",
                        "MiB/s",
                        kind,
                        lambda rm: peers.rclone_copy(
                            self.env,
                            rm,
                            data,
                            self.work,
                            transfers=1,
                            extra=("--sftp-disable-hashcheck", "--ignore-checksum"),
                        ),
                        mib,
                    )
                    self.peer(
                        wl,
                        "bare paramiko putfo, tuned",
                        "MiB/s",
                        kind,
                        lambda rm: peers.paramiko_put(self.env, rm, data),
                        mib,
                    )
                    self.peer(wl, "rsync over ssh", "MiB/s", kind, lambda rm: peers.rsync_ssh(self.env, rm, data), mib)
                else:
                    # --s3-no-head: rclone 1.60 HEADs the upload with ?versionId=null, which moto refuses (400)
                    self.peer(
                        wl,
                        "rclone copy, upload concurrency 8",
                        "MiB/s",
                        kind,
                        lambda rm: peers.rclone_copy(
                            self.env,
                            rm,
                            data,
                            self.work,
                            transfers=1,
                            extra=("--s3-upload-concurrency", "8", "--s3-no-head"),
                        ),
                        mib,
                    )
                    self.peer(
                        wl,
                        "bare boto3 upload_file, 8 threads",
                        "MiB/s",
                        kind,
                        lambda rm: peers.boto3_upload_file(self.env, rm, data, 8),
                        mib,
                    )
        remote.clear()

    # ------------------------------------------------------------------ 3. latency

    def latency(self, kind: str) -> None:
        variants: list[tuple[str, dict[str, str]]] = [("skynet", {})]
        if self.baseline is not None:
            variants.append((f"skynet {self.baseline[0]}", self.baseline_env()))
        for settle, (label, extra) in itertools.product((500, 0), variants):
            if settle and label != "skynet":
                continue  # the baseline only with the shortest settle (the settle period dominates otherwise)
            wl = f"3. close → on {kind.upper()}, settle {settle} ms"
            remote = self.env.remote(kind)
            lat: list[float] = []
            try:
                with SkynetRun(
                    self.env, remote, self.base(f"lat-{kind}-{settle}"), settle_ms=settle, extra_env=extra
                ) as sk:
                    (sk.watch / "lat").mkdir()
                    payload = os.urandom(SMALL_SIZE)
                    for i in range(self.sizes.trials):
                        rel = f"lat/t{i:04d}.bin"
                        mark = sk.mark()
                        t0 = time.time()
                        with open(sk.watch / rel, "wb") as f:
                            f.write(payload)
                        done = sk.wait_done({rel}, mark, timeout=60)
                        lat.append((done[rel]["created_at"] - t0) * 1000)
                        time.sleep(0.02)
            except Exception as exc:
                self.res.errors.append(f"{wl}: {exc}")
                log.exception("%s failed", wl)
            finally:
                remote.clear()
            if lat:
                q = statistics.quantiles(lat, n=100, method="inclusive")
                for name, v in (("p50", q[49]), ("p95", q[94]), ("p99", q[98])):
                    self.res.get(wl, f"{label} {name}", "ms", higher_better=False).values.append(v)
                log.info("%s: p50 %.1f p95 %.1f p99 %.1f ms", wl, q[49], q[94], q[98])

    # ------------------------------------------------------------------ 4. scaling

    def scaling(self, kind: str) -> None:
        if self.quick and kind == "s3":
            log.info("quick mode: scaling on S3 left out")
            return
        n = self.sizes.scale_files
        data = self.small_data(n)
        files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.bin"))
        wl = f"4. {n:,} × 64 KiB → {kind.upper()} + 20 ms RTT"
        server = self.env.sshd if kind == "sftp" else self.env.moto
        assert server is not None
        proxy = DelayProxy(server.host, server.port, rtt_ms=20).start()
        try:
            # Each replica with 4 transfers (the default), and with 1, where the replica count is
            # the only concurrency: the second shows what replicas alone add on a slow remote.
            for r in range(self.sizes.scale_runs):
                for conc, replicas in itertools.product((4, 1), (1, 2, 4)):
                    remote = self.env.remote(kind, via=proxy)
                    tool = f"{replicas} uploader{'s' if replicas > 1 else ''} × concurrency {conc}"
                    try:
                        with SkynetRun(
                            self.env,
                            remote,
                            self.base(f"scale-{kind}-{replicas}x{conc}"),
                            settle_ms=0,
                            replicas=replicas,
                            concurrency=conc,
                        ) as sk:
                            self._skynet_small(sk, wl, data, files, f"run{r}", tool)
                    finally:
                        remote.clear()
                self._scaling_peers(kind, wl, data, n, proxy)
        finally:
            proxy.close()

    def _scaling_peers(self, kind: str, wl: str, data: Path, n: int, proxy: DelayProxy) -> None:
        """A peer through the same proxy at 4 and 16 transfers (1 and 4 uploaders with 4 each).

        What the slowed remote allows at that concurrency: where the peer's 16 transfers add little
        to its 4, the server (or the proxy in front of it) is the ceiling, not the replica count.
        """
        self._expected[wl] = n
        for transfers in SCALING_PEER_TRANSFERS:
            if kind == "sftp":
                self.peer(
                    wl,
                    scaling_peer_tool(kind, transfers),
                    "files/s",
                    kind,
                    lambda rm, t=transfers: peers.rclone_copy(
                        self.env,
                        rm,
                        data,
                        self.work,
                        transfers=t,
                        extra=("--sftp-disable-hashcheck", "--ignore-checksum"),
                        via=proxy,
                    ),
                    n,
                )
            else:
                self.peer(
                    wl,
                    scaling_peer_tool(kind, transfers),
                    "files/s",
                    kind,
                    lambda rm, t=transfers: peers.boto3_put_loop(self.env, rm, data, t, via=proxy),
                    n,
                )

    # ------------------------------------------------------------------ 5. footprint

    def scan_tree(self) -> Path:
        files, dirs = self.sizes.scan_files, self.sizes.scan_dirs
        root = self.work / f"tree-{files}-{dirs}"
        if not (root.parent / f"{root.name}.complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            per = files // dirs
            # Back-dated: a start-up scan meets a folder that has been there a while (files
            # modified in the last minute go through the watcher's gate instead, which a tree
            # made moments before the first timed start would measure).
            write_old_files(root, (f"a{d // 100:03d}/b{d:05d}/f{i:03d}.dat" for d in range(dirs) for i in range(per)))
            (root.parent / f"{root.name}.complete").touch()
        return root

    def footprint(self) -> None:
        tree = self.scan_tree()
        wl = f"5a. start-up scan, {self.sizes.scan_files:,} files in {self.sizes.scan_dirs:,} folders"
        for _r in range(self.sizes.runs):
            for label, cmd in (
                ("find -type f", ["find", str(tree), "-type", "f"]),
                ("find -printf size,mtime,inode (stats)", ["find", str(tree), "-type", "f", "-printf", "%s %T@ %i\n"]),
            ):
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                self.res.get(wl, label, "s", higher_better=False).values.append(time.perf_counter() - t0)
            try:
                self._watcher_scan(tree, wl)
                if self.baseline is not None:
                    self._watcher_scan(tree, wl, f"skynet {self.baseline[0]}", self.baseline_env())
            except Exception as exc:
                self.res.errors.append(f"{wl}: {exc}")
                log.exception("%s failed", wl)
        for kind in ("sftp",) if self.quick else ("sftp", "s3"):
            mib = self.sizes.rss_mib if kind == "sftp" else min(self.sizes.rss_mib, self.sizes.large_mib_s3)
            try:
                self._uploader_rss(kind, mib)
            except Exception as exc:
                self.res.errors.append(f"5b. uploader RSS {kind}: {exc}")
                log.exception("uploader RSS %s failed", kind)

    def _watcher_scan(self, tree: Path, wl: str, who: str = "skynet", env: dict[str, str] | None = None) -> None:
        """Time a first start and a restart; ``who``/``env``: the row label and the environment
        of the skynet to run (the baseline's source tree, for a side-by-side run)."""
        base = self.base("scan")
        stack = Stack(
            base,
            self.env.amqp_url,
            NoRemote(),
            delete_mode="keep",
            source=self.env.source(),
            extra_env={"SKYNET_WATCH_DIR": str(tree), **(env or {})},
        )
        try:
            first = self._one_scan(stack, wl, who, "first start (every file new)", "watcher")
            # Restart on the same state folder once the index holds every file and the outbox is
            # empty: the scan then only compares what it finds with the index, which is what a
            # restarted watcher does.
            db = stack.state / "watcher.sqlite3"
            wait_until = time.monotonic() + 600
            while _count(db, "SELECT COUNT(*) FROM idx") < first or _count(db, "SELECT COUNT(*) FROM outbox"):
                if time.monotonic() > wait_until:
                    raise RuntimeError("the index never held every file")
                time.sleep(0.5)
            stack.stop_all()
            self._one_scan(stack, wl, who, "restart (index present)", "watcher-restart")
        finally:
            stack.stop_all()

    def _one_scan(self, stack: Stack, wl: str, who: str, case: str, name: str) -> int:
        t0 = time.perf_counter()
        proc = stack.start("watcher", name=name)
        deadline = time.monotonic() + 600
        while not (m := SCAN_LINE.search(proc.text())):
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"no scan line:\n{stack.tail_logs()}")
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        hwm = vm_hwm_kib(proc.popen.pid) / 1024
        self.res.get(wl, f"{who} watcher, {case}: scan (as logged)", "s", higher_better=False).values.append(
            float(m[2])
        )
        self.res.get(wl, f"{who} watcher, {case}: process start → scan done", "s", higher_better=False).values.append(
            wall
        )
        self.res.get(wl, f"{who} watcher, {case}: peak RSS (VmHWM)", "MiB", higher_better=False).values.append(hwm)
        log.info("%s, %s: scan %s s (wall %.2f s), %d files, VmHWM %.0f MiB", wl, case, m[2], wall, int(m[1]), hwm)
        return int(m[1])

    def _uploader_rss(self, kind: str, mib: int) -> None:
        data = self.large_data(mib)
        wl = f"5b. uploader peak RSS sending one {mib:,} MiB file"
        remote = self.env.remote(kind)
        base = self.base(f"rss-{kind}")
        staging = base / "staging"
        staging.mkdir()
        stage_large(data, staging / data.name)
        try:
            with SkynetRun(self.env, remote, base, settle_ms=0) as sk:
                mark = sk.mark()
                os.rename(staging / data.name, sk.watch / data.name)
                sk.wait_done({data.name}, mark, timeout=1800)
                hwm = vm_hwm_kib(sk.uploaders[0].popen.pid) / 1024
                self.res.get(wl, f"skynet uploader → {kind.upper()}", "MiB", higher_better=False).values.append(hwm)
                log.info("%s → %s: VmHWM %.0f MiB", wl, kind, hwm)
        finally:
            remote.clear()


def stage_large(data: Path, staged: Path) -> None:
    """Put the large file beside the watched folder, ready to be renamed in whole.

    A hard link, not a copy: skynet then reads the very file the peers read, already on disk and
    in the page cache as it is for them. A copy had to be synced first (its gigabyte of dirty
    pages, written back during skynet's upload, halved its rate), and the copy and the sync, made
    only before skynet's runs, left the machine's memory in another state for skynet than for the
    peers timed right after one another: the server (sshd, moto) then spent up to twice the CPU per
    MiB, most of it in the kernel zeroing and filling fresh pages (bench/NOTES.md).
    """
    try:
        os.link(data, staged)
    except OSError:  # a filesystem without hard links: a copy, written back before it is timed
        shutil.copyfile(data, staged)
        os.sync()


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


WORKLOADS = ("small", "large", "latency", "scaling", "footprint")


def run_all(bench: Bench, only: tuple[str, ...], kinds: tuple[str, ...]) -> None:
    for name in only:
        for kind in kinds if name != "footprint" else ("-",):
            log.info("=== %s %s", name, kind)
            t0 = time.perf_counter()
            ticks0 = cpu_ticks()
            with _guard(bench, f"{name} {kind}"):
                if name == "small":
                    bench.small_files(kind)
                elif name == "large":
                    bench.large_file(kind)
                elif name == "latency":
                    bench.latency(kind)
                elif name == "scaling":
                    bench.scaling(kind)
                elif name == "footprint":
                    bench.footprint()
            elapsed = time.perf_counter() - t0
            ticks1 = cpu_ticks()
            total = ticks1[0] - ticks0[0]
            stolen = 100 * (ticks1[1] - ticks0[1]) / total if total > 0 else 0.0
            bench.res.steal.append((f"{name} {kind}".strip(" -"), elapsed / 60, stolen))
            log.info("=== %s %s took %.0f s (CPU stolen by the hypervisor: %.1f %%)", name, kind, elapsed, stolen)


@contextlib.contextmanager
def _guard(bench: Bench, what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        bench.res.errors.append(f"{what}: {exc}")
        log.exception("%s failed", what)

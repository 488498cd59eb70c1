# ruff: noqa: RUF001
"""Writing bench/RESULTS.md: machine, versions, figures with ratios, targets, and the change log."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from bench.results import Results, Series, fmt
from bench.workloads import SCALING_PEER_TRANSFERS, scaling_peer_tool

HERE = Path(__file__).parent


def _cmd(*args: str) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except OSError:
        return "not installed"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine() -> list[tuple[str, str]]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        ("nproc", str(os.cpu_count())),
        ("memory", f"{mem_kib / 1024 / 1024:.1f} GiB"),
        ("CPU", cpu),
        ("kernel", platform.release()),
        ("load average at the end (shared machine)", load),
    ]


def versions() -> list[tuple[str, str]]:
    out = [("python", platform.python_version())]
    for dist in ("paramiko", "boto3", "botocore", "pika", "moto", "cryptography"):
        try:
            out.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            out.append((dist, "not installed"))
    out.append(("rclone", _cmd("rclone", "version")))
    out.append(("openssh", _cmd("ssh", "-V")))
    out.append(("rsync", _cmd("rsync", "--version")))
    return out


def _is_skynet(s: Series) -> bool:
    return s.tool.startswith("skynet")


def figures_table(res: Results) -> list[str]:
    lines = [
        "| workload | tool | median | min–max | runs | skynet ÷ this tool |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in res.series:
        if not s.values:
            continue
        ratio = ""
        if not _is_skynet(s):
            mine = [x for x in res.series if x.workload == s.workload and _is_skynet(x) and x.values]
            if mine and s.unit == mine[0].unit:  # the first skynet series is the current code
                ratio = f"{mine[0].median / s.median:.2f}×"
        lines.append(f"| {s.workload} | {s.tool} | {fmt(s.median)} {s.unit} | {s.span()} | {len(s.values)} | {ratio} |")
    return lines


def _med(res: Results, workload_prefix: str, tool: str) -> float | None:
    for s in res.series:
        if s.workload.startswith(workload_prefix) and s.tool == tool and s.values:
            return s.median
    return None


def _first(res: Results, workload_prefix: str, tool_prefix: str) -> Series | None:
    for s in res.series:
        if s.workload.startswith(workload_prefix) and s.tool.startswith(tool_prefix) and s.values:
            return s
    return None


def targets(res: Results) -> list[str]:
    rows: list[tuple[str, str, float | None, float]] = []  # (target, measured text, value, goal) ratio ≥ goal

    rows.append(
        (
            "small files SFTP ≥ 1.0× rclone hash check off",
            "",
            _ratio_kind(res, "1.", "SFTP", "skynet", "rclone --transfers 4, hash"),
            1.0,
        )
    )
    rows.append(
        ("small files S3 ≥ 0.9× bare boto3 (8 threads)", "", _ratio_kind(res, "1.", "S3", "skynet", "bare boto3"), 0.9)
    )
    for kind in ("SFTP", "S3"):
        rows.append(
            (
                f"large file {kind} ≥ 1.0× rclone (its best config)",
                "",
                _ratio_kind(res, "2.", kind, "skynet", "rclone"),
                1.0,
            )
        )
        rows.append((f"large file {kind} ≥ 0.9× bare client", "", _ratio_kind(res, "2.", kind, "skynet", "bare"), 0.9))
    out = ["| target | measured | met? |", "|---|---:|:---:|"]
    for name, _t, value, goal in rows:
        if value is None:
            out.append(f"| {name} | not measured | – |")
        else:
            out.append(f"| {name} | {value:.2f}× | {'yes' if value >= goal else '**no**'} |")
    for kind in ("SFTP", "S3"):
        for settle in (500, 0):
            wl = f"3. close → on {kind}, settle {settle} ms"
            p50, p99 = _med(res, wl, "skynet p50"), _med(res, wl, "skynet p99")
            if p50 is None or p99 is None:
                continue
            if settle:
                out.append(
                    f"| latency {kind} p50 ≤ settle + 50 ms ({settle + 50}) | {p50:.0f} ms | "
                    f"{'yes' if p50 <= settle + 50 else '**no**'} |"
                )
                out.append(
                    f"| latency {kind} p99 ≤ settle + 250 ms ({settle + 250}) | {p99:.0f} ms | "
                    f"{'yes' if p99 <= settle + 250 else '**no**'} |"
                )
            else:
                out.append(
                    f"| latency {kind} settle 0: p50 < 23 ms | {p50:.1f} ms | {'yes' if p50 < 23 else '**no**'} |"
                )
                out.append(
                    f"| latency {kind} settle 0: p99 ≤ 250 ms | {p99:.0f} ms | {'yes' if p99 <= 250 else '**no**'} |"
                )
    for kind in ("SFTP", "S3"):
        for conc in (4, 1):
            one = _ratio_kind(res, "4.", kind, f"4 uploaders × concurrency {conc}", f"1 uploader × concurrency {conc}")
            if one is not None:
                out.append(
                    f"| scaling {kind}: 4 replicas ≥ 3× 1 replica (concurrency {conc} each) | {one:.2f}× | "
                    f"{'yes' if one >= 3 else '**no**'} |"
                )
        out.extend(_scaling_ceiling(res, kind))
    find = _first(res, "5a.", "find -type f")
    stats = _first(res, "5a.", "find -printf")
    for case in ("first start", "restart"):
        scan = _first(res, "5a.", f"skynet watcher, {case}")
        if scan and find:
            r = scan.median / find.median
            vs_stats = f"; {scan.median / stats.median:.1f}× `find -printf` with a stat per file" if stats else ""
            out.append(
                f"| start-up scan ≤ 3× find ({case}) | {r:.2f}× ({fmt(scan.median)} s vs {fmt(find.median)} s"
                f"{vs_stats}) | {'yes' if r <= 3 else '**no**'} |"
            )
    for s in res.series:
        if s.workload.startswith("5b.") and s.values:
            out.append(
                f"| uploader RSS < 200 MiB ({s.workload[4:]}, {s.tool[16:]}) | {s.median:.0f} MiB | "
                f"{'yes' if s.median < 200 else '**no**'} |"
            )
    return out


def _scaling_ceiling(res: Results, kind: str) -> list[str]:
    """What the slowed remote allows: the scaling workload's peer at 4 and at 16 transfers."""
    wl = next((s.workload for s in res.series if s.workload.startswith("4.") and f"→ {kind} " in s.workload), None)
    if wl is None:
        return []
    few, many = SCALING_PEER_TRANSFERS
    peer = scaling_peer_tool(kind.lower(), many)
    peer_few, peer_many = _med(res, wl, scaling_peer_tool(kind.lower(), few)), _med(res, wl, peer)
    mine = _med(res, wl, "4 uploaders × concurrency 4")
    if peer_few is None or peer_many is None or mine is None:
        return []
    return [
        f"| scaling {kind}, context: 4 uploaders × 4 against {peer} through the same proxy (its {many} "
        f"get {peer_many / peer_few:.2f}× its {few}) | {mine / peer_many:.2f}× ({fmt(mine)} against "
        f"{fmt(peer_many)} files/s) | not a target |"
    ]


def _ratio_kind(res: Results, prefix: str, kind: str, tool: str, peer: str) -> float | None:
    """skynet's median ÷ the best median among the ``peer`` tools, for one workload and remote."""
    mine: Series | None = None
    best: float | None = None
    for s in res.series:
        if s.workload.startswith(prefix) and kind in s.workload.split("→")[-1] and s.values:
            if s.tool.startswith(tool) and mine is None:
                mine = s
            elif s.tool.startswith(peer) and (best is None or s.median > best):
                best = s.median
    return mine.median / best if mine and best else None


def write(res: Results, out: Path, *, mode: str, command: str, elapsed_s: float) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# skynet benchmark results",
        "",
        f"Generated by `{command}` ({mode} mode) on {now} in {elapsed_s / 60:.1f} min. "
        "Every figure below comes from this one invocation: skynet and its peers ran one after the "
        "other, run after run, on the same data, against the same loopback servers (OpenSSH sshd, "
        "moto's S3 server, a private RabbitMQ vhost). Throughputs: higher is better; times, latencies "
        "and memory: lower is better. The ratio column is skynet's median divided by that tool's.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine()],
        "",
        "## Versions",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in versions()],
        "",
        "## Figures",
        "",
        *figures_table(res),
        "",
        "## Targets (issue 7)",
        "",
        *targets(res),
        "",
    ]
    if res.steal:
        lines += [
            "## CPU time stolen by the hypervisor",
            "",
            "The machine is a virtual one, shared: this is the share of its CPU time that went to other",
            "guests while each workload ran (`steal` in /proc/stat). A workload with a high figure ran",
            "on less than 2 cores, and skynet, which spreads each file over several processes, loses more",
            "from that than a single-process peer does.",
            "",
            "| workload | minutes | CPU stolen |",
            "|---|---:|---:|",
            *[f"| {w} | {m:.1f} | {p:.1f} % |" for w, m, p in res.steal],
            "",
        ]
    if res.errors:
        lines += ["## Errors during this run", "", *[f"- {e}" for e in res.errors], ""]
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    out.write_text("\n".join(lines))

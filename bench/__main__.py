"""``python -m bench [--quick | --full] [--only small,large,…] [--kinds sftp,s3]``.

Starts its own servers on loopback (OpenSSH sshd, moto, a private RabbitMQ vhost), runs skynet and
its peers on the same data, and writes bench/RESULTS.md (or ``--out``). Scratch data goes to
bench/work/ (gitignored) or ``--work``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import report
from bench.env import BenchEnv
from bench.results import Results
from bench.workloads import DEFAULT, FULL, QUICK, WORKLOADS, Bench, run_all

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke run: small sizes, one run each (< 3 min)")
    mode.add_argument("--full", action="store_true", help="the figures: 10,000 files, 4 GiB, 3 runs each (5 on S3)")
    p.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {','.join(WORKLOADS)}")
    p.add_argument("--kinds", default="sftp,s3", help="remotes to measure: sftp,s3")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also run skynet as of git revision REV side by side (small files, latency, scan): what a change bought",
    )
    p.add_argument("--work", type=Path, default=HERE / "work")
    for f in dataclasses.fields(QUICK):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=None, help=f"override {f.name}")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("pika", "paramiko", "botocore", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sizes = QUICK if args.quick else FULL if args.full else DEFAULT
    sizes = dataclasses.replace(
        sizes, **{f.name: getattr(args, f.name) for f in dataclasses.fields(sizes) if getattr(args, f.name) is not None}
    )
    mode_name = "quick" if args.quick else "full" if args.full else "default"
    only = tuple(w for w in args.only.split(",") if w)
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    kinds = tuple(k for k in args.kinds.split(",") if k)

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "runs", ignore_errors=True)
    started = time.perf_counter()
    results = Results()
    baseline = None
    if args.baseline:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", args.baseline], capture_output=True, text=True, check=True, cwd=HERE.parent
        ).stdout.strip()
        tree = work / f"baseline-{rev}"
        if not tree.exists():
            tree.mkdir()
            archive = subprocess.run(
                ["git", "archive", rev, "services"], capture_output=True, check=True, cwd=HERE.parent
            )
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        baseline = (f"@{rev}", tree)
    env = BenchEnv(work).start()
    try:
        run_all(Bench(env, work, sizes, results, quick=args.quick, baseline=baseline), only, kinds)
    finally:
        env.close()
        shutil.rmtree(work / "runs", ignore_errors=True)
        for d in work.glob("sshd-*"):
            shutil.rmtree(d, ignore_errors=True)
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    report.write(results, args.out, mode=mode_name, command=command.strip(), elapsed_s=time.perf_counter() - started)
    print(f"wrote {args.out} ({len(results.errors)} errors)")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of 1 process and of N processes (torchrun, gloo, DistributedDataParallel) on CPU.

Each configuration trains the same model on the same data with the same global batch, as
`vaelab train` (1 process) or `python -m torch.distributed.run --nproc-per-node N -m vaelab train`.
samples/s is the mean over the epochs after the first (metrics.csv's samples_per_s, which counts
the global batch); wall is the whole command, start-up and evaluation included.

On a machine with few cores, N processes compete with each other (and with anything else
running) for the same cores, and each step adds an all-reduce of the gradients: expect no gain
there. The load average printed before and after says how busy the machine was.

Usage (about a minute on 2 cores):
    .venv/bin/python benchmarks/distributed.py --limit 10000 --epochs 3
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(nproc: int, threads: int, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    train = [
        "--dataset",
        args.dataset,
        "--limit",
        str(args.limit),
        "--hidden",
        args.hidden,
        "--latent-dim",
        "2",
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--device",
        "cpu",
        "--threads",
        str(threads),
        "--out",
        str(out),
        "--overwrite",
        "--no-plots",
        "-q",
    ]
    if nproc == 1:
        cmd = [sys.executable, "-m", "vaelab", "train", *train]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            f"--nproc-per-node={nproc}",
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            "127.0.0.1:0",
            "-m",
            "vaelab",
            "train",
            *train,
        ]
    t = time.monotonic()
    subprocess.run(
        cmd,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.monotonic() - t
    rows = list(csv.DictReader(open(out / "metrics.csv")))[1:] or list(csv.DictReader(open(out / "metrics.csv")))
    return sum(float(r["samples_per_s"]) for r in rows) / len(rows), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--limit", type=int, default=10_000, help="training images")
    ap.add_argument("--hidden", default="256", help="hidden widths, e.g. 512 or 256,256")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=100, help="global batch (each of N processes takes 1/N)")
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    print(f"CPU cores usable: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"data {args.dataset} (--limit {args.limit}), hidden {args.hidden}, global batch {args.batch_size}, "
        f"{args.epochs} epochs"
    )
    print(f"{'processes':>9} {'threads each':>12} {'samples/s':>10} {'wall s':>7}")
    with tempfile.TemporaryDirectory(prefix="vaelab-dist-") as tmp:
        configs = [(n, 1) for n in args.nproc]
        if 1 in args.nproc and max(args.nproc) > 1:
            configs.insert(1, (1, max(args.nproc)))  # one process using as many cores as N processes
        for nproc, threads in configs:
            sps, wall = run(nproc, threads, args, Path(tmp) / f"run-{nproc}x{threads}")
            print(f"{nproc:>9} {threads:>12} {sps:>10.0f} {wall:>7.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

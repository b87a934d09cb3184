"""Peak resident memory of `vaelab train` on a memory-mapped .npy dataset larger than we want in RAM.

Writes a synthetic dataset (uint8 28x28 images, 4 classes, `--size-gb` of pixels) as
FOLDER/images.npy + labels.npy, trains on it for `--max-minutes` with `vaelab train --dataset FOLDER`
in a child process, and samples the child's /proc/PID/status every 50 ms:

  VmHWM    peak resident set (what `ru_maxrss` reports): anonymous + file-backed pages
  RssAnon  the process's own memory (weights, batches, Python, torch)
  RssFile  pages of mapped files (the dataset, shared libraries): page cache that the kernel can
           drop at any time, counted in RSS only while mapped
  and, from /proc/PID/smaps, the resident part of the images.npy mapping alone.

Usage (about a minute; the file is deleted afterwards unless --keep):
    .venv/bin/python benchmarks/memmap.py --size-gb 2 --max-minutes 0.25
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROW = 28 * 28


def write_dataset(folder: Path, size_gb: float, seed: int = 0) -> int:
    """images.npy (N, 28, 28) uint8 written in 256 MB chunks (never all in memory) and labels.npy (N,)."""
    n = int(size_gb * 1e9) // ROW
    rng = np.random.default_rng(seed)
    x = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    y = rng.integers(0, 4, n).astype(np.int64)
    chunk = (256 << 20) // ROW
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = rng.integers(0, 60, (stop - start, 28, 28), dtype=np.uint8)  # dark noise
        for c in range(4):  # a bright quadrant per class, as tests/conftest.py's make_images
            r, col = divmod(c, 2)
            block[y[start:stop] == c, r * 14 : (r + 1) * 14, col * 14 : (col + 1) * 14] += 180
        x[start:stop] = block
    x.flush()
    del x
    np.save(folder / "labels.npy", y)
    return n


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def mapped_kb(pid: int, name: str) -> int:
    """Resident kB of the mappings of files called `name` (from /proc/PID/smaps)."""
    total, inside = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if "-" in line.split(" ", 1)[0]:  # a mapping's header line: address range ... path
                    inside = line.rstrip().endswith(name)
                elif inside and line.startswith("Rss:"):
                    total += int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--max-minutes", type=float, default=0.25, help="training budget (--max-minutes of vaelab train)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--folder", type=Path, help="where to write the dataset [default: a temporary folder]")
    ap.add_argument("--keep", action="store_true", help="keep the dataset afterwards")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="vaelab-memmap-") if args.folder is None else None
    folder = Path(tmp.name) if tmp else args.folder
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if not (data / "images.npy").exists():
        n = write_dataset(data, args.size_gb)
    else:
        n = len(np.load(data / "images.npy", mmap_mode="r"))
    size = (data / "images.npy").stat().st_size
    print(f"dataset: {n:,} images, {size / 1e9:.2f} GB ({time.monotonic() - t0:.1f} s to write)")

    run = folder / "run"
    cmd = [
        sys.executable,
        "-m",
        "vaelab",
        "train",
        "--dataset",
        str(data),
        "--hidden",
        "64",
        "--latent-dim",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        str(args.batch_size),
        "--max-minutes",
        str(args.max_minutes),
        "--threads",
        "1",
        "--device",
        "cpu",
        "--out",
        str(run),
        "--overwrite",
        "--no-plots",
        "-q",
    ]
    print("command:", " ".join(cmd[1:]))
    peak: dict[str, int] = {}
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def sample() -> None:
        while proc.poll() is None:
            for k, v in [*status_kb(proc.pid).items(), ("images.npy", mapped_kb(proc.pid, "images.npy"))]:
                peak[k] = max(peak.get(k, 0), v)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    t1 = time.monotonic()
    sampler.start()
    code = proc.wait()
    sampler.join()
    wall = time.monotonic() - t1
    if code != 0:
        raise SystemExit(f"vaelab train exited with {code}")
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    steps = int(rows[-1]["step"])
    mb = lambda kb: kb / 1024  # noqa: E731
    print(
        f"trained {steps} steps of {args.batch_size} ({steps * args.batch_size:,} images read by index, "
        f"{rows[-1]['samples_per_s'][:7]} samples/s) + validation and test ({wall:.1f} s in all)"
    )
    print(
        f"peak RSS (VmHWM): {mb(peak.get('VmHWM', 0)):.0f} MB = {peak.get('VmHWM', 0) * 1024 / size:.1%} "
        f"of the {size / 1e9:.2f} GB dataset"
    )
    print(
        f"  peak RssAnon (own memory): {mb(peak.get('RssAnon', 0)):.0f} MB; "
        f"peak RssFile (mapped files, droppable page cache): {mb(peak.get('RssFile', 0)):.0f} MB, "
        f"of which images.npy: {mb(peak.get('images.npy', 0)):.1f} MB"
    )
    if tmp is not None and not args.keep:
        tmp.cleanup()
    elif args.keep:
        print(f"kept {folder}")


if __name__ == "__main__":
    main()

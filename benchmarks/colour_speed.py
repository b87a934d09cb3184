"""Training speed of the ResNet presets on synthetic colour images, through `vaelab train`.

    python benchmarks/colour_speed.py            # every row not done yet
    python benchmarks/colour_speed.py --table    # the table of finished rows

Rows: the `cifar` preset on 32x32x3 and the `celeba64` preset on 64x64x3 uniform random 8-bit
images (an .npz written here, so the presets' --image-size is dropped; the speed of a network does
not depend on what the pixels show),
--threads 2, 2 epochs; the images/s of the second epoch (the first includes warm-up) from
metrics.csv. Each row is saved to RESULTS/ROW.json with its command as it finishes; a rerun skips
finished rows. Keep the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "colour_speed"
ROWS = {"cifar-32": ("cifar", 32, 2048), "celeba64-64": ("celeba64", 64, 1024)}


def run_row(name: str, threads: int, tmp: Path) -> dict:
    preset, size, n = ROWS[name]
    rng = np.random.default_rng(0)
    data = tmp / f"{name}.npz"
    np.savez(data, x=rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    out = tmp / name
    cmd = [
        sys.executable, "-m", "vaelab", "train", "--preset", preset, "--dataset", str(data), "--data.image_size", "none",
        "--epochs", "2",
        "--threads", str(threads), "--out", str(out), "--no-plots", "-q",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: vaelab train failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    lines = (out / "metrics.csv").read_text().strip().splitlines()
    rows = [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
    shown = " ".join(shlex.quote(a) for a in ["vaelab", *cmd[3:]]).replace(str(tmp), "TMP")
    return {
        "row": name,
        "preset": preset,
        "image": f"{size}x{size}x3",
        "images_per_s": float(rows[-1]["samples_per_s"]),
        "epoch_seconds": float(rows[-1]["epoch_seconds"]),
        "threads": threads,
        "command": shown,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def table(results: Path) -> str:
    out = ["| preset | images | images/s (2 threads) | seconds per epoch |", "|---|---|---:|---:|"]
    for name in ROWS:
        f = results / f"{name}.json"
        if f.is_file():
            r = json.loads(f.read_text())
            out.append(f"| {r['preset']} | {r['image']} | {r['images_per_s']:.0f} | {r['epoch_seconds']:.1f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--table", action="store_true")
    args = p.parse_args(argv)
    results = Path(args.results)
    if args.table:
        print(table(results))
        return
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ROWS:
            path = results / f"{name}.json"
            if path.is_file():
                print(f"{name}: done before, skipped", flush=True)
                continue
            r = run_row(name, args.threads, Path(tmp))
            path.with_suffix(".tmp").write_text(json.dumps(r, indent=2) + "\n")
            os.replace(path.with_suffix(".tmp"), path)
            print(f"{name}: {r['images_per_s']:.0f} images/s", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()

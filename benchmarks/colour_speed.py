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

import tempfile
from pathlib import Path

import harness
import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "colour_speed"
ROWS = {"cifar-32": ("cifar", 32, 2048), "celeba64-64": ("celeba64", 64, 1024)}


def run_row(name: str, threads: int, tmp: Path) -> harness.Record:
    preset, size, n = ROWS[name]
    rng = np.random.default_rng(0)
    data = tmp / f"{name}.npz"
    np.savez(data, x=rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    out = tmp / name
    cmd = harness.vaelab(
        "train", "--preset", preset, "--dataset", str(data), "--data.image_size", "none", "--epochs", "2",
        "--threads", str(threads), "--out", str(out), "--no-plots", "-q",
    )  # fmt: skip
    harness.run(cmd, name)
    last = harness.metrics(out)[-1]
    return {
        "row": name,
        "preset": preset,
        "image": f"{size}x{size}x3",
        "images_per_s": float(last["samples_per_s"]),
        "epoch_seconds": float(last["epoch_seconds"]),
        "threads": threads,
        "command": harness.shown(cmd).replace(str(tmp), "TMP"),
        "date": harness.now(),
    }


def table(results: Path) -> str:
    return harness.md_table(
        ["preset", "images", "images/s (2 threads)", "seconds per epoch"],
        "llrr",
        (
            [r["preset"], r["image"], f"{r['images_per_s']:.0f}", f"{r['epoch_seconds']:.1f}"]
            for r in harness.finished(results, ROWS).values()
        ),
    )


def main(argv: list[str] | None = None) -> None:
    p = harness.parser(__doc__)
    p.add_argument("--threads", type=int, default=2)
    harness.add_row_options(p, ROWS, RESULTS)
    args = p.parse_args(argv)
    results = Path(args.results)
    if args.table:
        print(table(results))
        return
    names = harness.pick(p, args.rows, ROWS)
    with tempfile.TemporaryDirectory() as tmp:
        harness.run_rows(
            results,
            names,
            lambda name: run_row(name, args.threads, Path(tmp)),
            lambda r: f"{r['images_per_s']:.0f} images/s",
        )
    print(table(results))


if __name__ == "__main__":
    main()

"""Train the seed preset (the tutorial's 784-512-2 VAE, batch 50) on MNIST and report its speed.

Prints, per epoch, samples/s and seconds of the training loop; after epochs 1, 5 and 10 the test
ELBO (nats per image, higher is better, the same fixed noise each time); at the end the peak
resident memory of the process.

    python benchmarks/train_seed.py                  # 10 epochs on the 50k MNIST training images
    python benchmarks/train_seed.py --quick          # 2 epochs on 5,000 images (seconds)
    python benchmarks/train_seed.py --threads 1 --device cpu
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch

from vaelab.config_io import load_preset, replace
from vaelab.data import load_splits
from vaelab.models import VAE
from vaelab.training import evaluate_elbo, fit


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 / 1024 if sys.platform == "darwin" else r / 1024


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 epochs on 5,000 training images")
    p.add_argument("--epochs", type=int, default=None, help="default 10 (2 with --quick)")
    p.add_argument("--limit", type=int, default=None, help="training images (default all 50k; 5,000 with --quick)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: vaelab's default_threads)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)

    epochs = args.epochs or (2 if args.quick else 10)
    limit = args.limit or (5000 if args.quick else None)
    report_at = sorted({e for e in (1, 5, 10) if e <= epochs} | {epochs})
    cfg = replace(
        load_preset("seed"),
        {
            "data.limit": limit,
            "train.epochs": epochs,
            "train.batch_size": args.batch_size,
            "train.threads": args.threads,
            "train.device": args.device,
        },
    )
    t0 = time.perf_counter()
    splits = load_splits(cfg.data)
    load_s = time.perf_counter() - t0
    torch.manual_seed(cfg.train.seed)
    model = VAE(cfg.model)
    rows: list[dict[str, float]] = []

    def on_log(row: dict[str, float]) -> None:
        out = {
            "epoch": row["epoch"],
            "samples_per_s": row["samples_per_s"],
            "epoch_seconds": row["epoch_seconds"],
            "train_elbo": row["train_elbo"],
            "val_elbo": row["val_elbo"],
        }
        if row["epoch"] in report_at:  # the same fixed noise (seed) every time: comparable numbers
            out["test_elbo"] = evaluate_elbo(model, splits.test, seed=cfg.train.seed + 2).elbo
        rows.append(out)
        test = f"  test ELBO {out['test_elbo']:8.2f}" if "test_elbo" in out else ""
        print(
            f"epoch {row['epoch']:3d}  {row['samples_per_s']:9,.0f} samples/s  {row['epoch_seconds']:6.2f} s"
            f"  train ELBO {row['train_elbo']:8.2f}  val ELBO {row['val_elbo']:8.2f}{test}",
            flush=True,
        )

    print(
        f"seed preset, {len(splits.train):,} training images ({splits.name}, loaded in {load_s:.1f} s), "
        f"batch {cfg.train.batch_size}, {epochs} epochs"
    )
    t0 = time.perf_counter()
    result = fit(model, splits, cfg, on_log=on_log, progress=False)
    total = time.perf_counter() - t0
    summary = {
        "threads": torch.get_num_threads(),
        "device": str(model.device),
        "train_images": len(splits.train),
        "median_samples_per_s": statistics.median(r["samples_per_s"] for r in rows),
        "median_epoch_seconds": statistics.median(r["epoch_seconds"] for r in rows),
        "fit_seconds": total,
        "peak_rss_mb": peak_rss_mb(),
        "test_elbo": {r["epoch"]: r["test_elbo"] for r in rows if "test_elbo" in r},
        "final_test_elbo_fit": result.test.elbo if result.test else None,
    }
    print(
        f"median {summary['median_samples_per_s']:,.0f} samples/s, {summary['median_epoch_seconds']:.2f} s per "
        f"epoch ({summary['threads']} threads, {summary['device']}); fit() {total:.1f} s in all; "
        f"peak resident memory {summary['peak_rss_mb']:.0f} MB"
    )
    print("test ELBO after epochs " + ", ".join(f"{e}: {v:.2f}" for e, v in summary["test_elbo"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "epochs": rows}, f, indent=1)


if __name__ == "__main__":
    main()

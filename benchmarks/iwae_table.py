"""Reproduce Table 1 of Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders" (ICLR 2016):
one stochastic layer (784-200-200-50, tanh), dynamically binarized MNIST, test NLL from k=5000.

    python benchmarks/iwae_table.py --budget 3280            # the paper's 3280 epochs per model (a GPU)
    python benchmarks/iwae_table.py --budget 30m --jobs 5    # 30 minutes per model, 5 at once on one GPU
    python benchmarks/iwae_table.py --budget 1 --train-limit 2000 --eval-k 100 --eval-limit 200  # smoke test

As in the paper (and its code, github.com/yburda/iwae): 59,600 training images (the 60,000 minus
400 for validation), fresh binary pixels every epoch, decoder output bias set to the logit of the
mean training image, Adam (eps 1e-4), batch 20, learning rate 1e-3 * 10^(-i/7) for 3^i epochs,
i = 0..7. A shorter --budget keeps that shape: the 8 stages shrink in proportion (stage 0 is always
one epoch; with a budget in minutes, its duration sets the number of epochs that fit). The test set
is binarized once with a fixed seed (the same pixels `vaelab eval` uses on an MNIST run).

The VAE rows train the k-sample ELBO, the IWAE rows the k-sample importance-weighted bound; with
k = 1 both are the same objective, so one model fills both k = 1 rows (as in the paper, 86.76 twice).
Each model writes a run folder (OUT/NAME, readable by `vaelab eval`) and OUT/NAME/result.json; the
table goes to OUT/iwae_table.md and OUT/iwae_table.json. Finished models are skipped on a rerun
unless --overwrite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
import torch

from vaelab.config import DataConfig, EvalConfig, RunConfig
from vaelab.config_io import load_preset, replace
from vaelab.data import DataSplits, ImageData, load_splits
from vaelab.errors import ConfigError
from vaelab.evaluation.report import evaluate
from vaelab.models import VAE
from vaelab.platform.cpu import default_threads, keep_freed_memory
from vaelab.platform.device import resolve_device
from vaelab.training import burda_stage_ends, fit, mean_pixel

logger = logging.getLogger("iwae_table")

# Burda et al. 2016, Table 1, MNIST, one stochastic layer: test NLL in nats (k = 5000).
PUBLISHED = {
    ("VAE", 1): 86.76,
    ("VAE", 5): 86.47,
    ("VAE", 50): 86.35,
    ("IWAE", 1): 86.76,
    ("IWAE", 5): 85.54,
    ("IWAE", 50): 84.78,
}
# name -> (objective, k). IWAE with k = 1 is the VAE with k = 1 (the same objective).
MODELS = {
    "vae-k1": ("elbo", 1),
    "vae-k5": ("elbo", 5),
    "vae-k50": ("elbo", 50),
    "iwae-k5": ("iwae", 5),
    "iwae-k50": ("iwae", 50),
}
ROWS = [
    ("VAE", 1, "vae-k1"),
    ("VAE", 5, "vae-k5"),
    ("VAE", 50, "vae-k50"),
    ("IWAE", 1, "vae-k1"),
    ("IWAE", 5, "iwae-k5"),
    ("IWAE", 50, "iwae-k50"),
]
PAPER_EPOCHS = 3280  # 3^0 + 3^1 + ... + 3^7
STAGES = 8
VALIDATION = 400  # the paper's code holds out the last 400 training images


# -- data and model ----------------------------------------------------------------------------


def burda_splits(data_dir: str | None = None, train_limit: int | None = None, seed: int = 0) -> DataSplits:
    """MNIST as in the paper, through the product (`--data.val_size 400`): 59,600 grey training
    images (binarized afresh by the trainer each epoch), the last 400 training images and the
    10,000 test images binarized once (seeds seed + 1 and seed + 2)."""
    splits = load_splits(
        DataConfig(dataset="mnist", data_dir=data_dir, binarize="dynamic", binarize_seed=seed, val_size=VALIDATION)
    )
    if train_limit is not None:
        splits = dataclasses.replace(splits, train=splits.train.subset(min(len(splits.train), train_limit)))
    return splits


def init_output_bias(model: VAE, train: ImageData) -> None:
    """Decoder output bias = logit of the mean training pixel: the product's init (train.init_output_bias)."""
    model.init_output_bias(mean_pixel(train))


# -- the schedule --------------------------------------------------------------------------------


stage_ends = burda_stage_ends  # the product's "burda-scaled" schedule lays its stages out the same way


def stage_lr(base_lr: float, stage: int) -> float:
    return base_lr * 10 ** (-stage / 7)


def parse_budget(text: str) -> tuple[str, float]:
    """'3280' or '3280e' -> ('epochs', 3280); '30m' -> ('minutes', 30); '2h' -> ('minutes', 120)."""
    t = text.strip().lower()
    try:
        if t.endswith("m"):
            value, kind = float(t[:-1]), "minutes"
        elif t.endswith("h"):
            value, kind = 60 * float(t[:-1]), "minutes"
        else:
            value, kind = float(t.removesuffix("e")), "epochs"
    except ValueError:
        value, kind = float("nan"), ""
    if not (value > 0 and math.isfinite(value)) or (kind == "epochs" and value != int(value)):
        raise ConfigError(f"--budget {text!r}: give whole epochs (3280), minutes (30m) or hours (2h)")
    return kind, value


# -- one model -----------------------------------------------------------------------------------


def train_staged(
    model: VAE, splits: DataSplits, cfg: RunConfig, run_dir: Path, budget: tuple[str, float], on_stage: Any = None
) -> dict[str, Any]:
    """Run the 8 learning-rate stages as successive fit() calls that resume one checkpoint
    (optimizer moments and RNG states carry over). Returns epochs, steps, minutes, how it stopped.

    fit() validates on splits.val every epoch and reports a one-sample ELBO on splits.test at the end
    of each call; pass small sets there (the test-set NLL is measured afterwards). Minutes are the
    wall clock of the fit() calls: training, per-epoch validation and checkpoint writes.
    """
    kind, value = budget
    base_lr = cfg.train.lr
    max_minutes = value if kind == "minutes" else None  # fit() counts its own time across resumes
    ends = stage_ends(int(value)) if kind == "epochs" else [1]
    res = None
    stage, done, seconds = 0, 0, 0.0
    while stage < STAGES:
        end = ends[stage]
        if end > done:
            tc = dataclasses.replace(
                cfg.train, epochs=end, lr=stage_lr(base_lr, stage), schedule="constant", max_minutes=max_minutes
            )
            t0 = time.monotonic()
            res = fit(model, splits, dataclasses.replace(cfg, train=tc), run_dir, resume=done > 0, progress=False)
            seconds += time.monotonic() - t0
            done = res.epochs
            if on_stage is not None:
                on_stage(stage, res)
            if res.stopped != "completed":
                break
        if kind == "minutes" and stage == 0:  # stage 0 (one epoch) measured the speed: plan the rest
            ends = stage_ends(max(done, int(value * 60 / max(seconds, 1e-3))))
        stage += 1
    assert res is not None
    return {"epochs": res.epochs, "steps": res.steps, "train_minutes": seconds / 60, "stopped": res.stopped}


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train and evaluate one model of the table; writes OUT/NAME (a run folder) and its result.json."""
    objective, k = MODELS[name]
    run_dir = Path(args.out) / name
    result_path = run_dir / "result.json"
    if result_path.is_file() and not args.overwrite:
        logger.info("%s: done already (%s); --overwrite to redo it", name, result_path)
        return json.loads(result_path.read_text())
    device = resolve_device(args.device)
    threads = args.threads or max(1, default_threads() // max(1, args.jobs))
    torch.set_num_threads(threads)
    splits = burda_splits(args.data_dir, args.train_limit, args.seed)
    cfg = load_preset("iwae-paper")
    cfg = replace(
        cfg,
        {
            "train.objective": objective,
            "train.k": k,
            "train.device": device.type,
            "train.threads": threads,
            "train.seed": args.seed,
            **dict(args.set or []),
        },
    )
    if run_dir.exists() and args.overwrite:
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    model = VAE(cfg.model)
    if not args.no_bias_init:
        init_output_bias(model, splits.train)
    # fit() reports a test ELBO at the end of each stage: give it the 400 validation images, and
    # keep the test set for the NLL below
    fit_splits = dataclasses.replace(splits, test=splits.val)
    budget = parse_budget(args.budget)
    logger.info(
        "%s: %s k=%d, %d training images, budget %s, %s, %d threads",
        name,
        objective,
        k,
        len(splits.train),
        args.budget,
        device,
        threads,
    )
    info = train_staged(
        model,
        fit_splits,
        cfg,
        run_dir,
        budget,
        on_stage=lambda i, r: logger.info(
            "%s: stage %d done: epoch %d, lr %.2e, val ELBO %.2f",
            name,
            i,
            r.epochs,
            r.metrics[-1]["lr"],
            r.metrics[-1]["val_elbo"],
        ),
    )

    test = splits.test if args.eval_limit is None else splits.test.subset(args.eval_limit)
    big = device.type != "cpu"
    ecfg = EvalConfig(
        k=args.eval_k,
        batch_size=args.eval_batch or (500 if big else 100),
        chunk=args.eval_chunk or (1000 if big else 50),
        seed=0,
    )
    t1 = time.monotonic()
    model.to(device)
    report = evaluate(model, test, ecfg, pixels="dynamic")
    eval_minutes = (time.monotonic() - t1) / 60
    result = {
        "name": name,
        "objective": objective,
        "k": k,
        "nll": report.nll,
        "nll_stderr": report.nll_stderr,
        "elbo": report.elbo,
        "kl": report.kl,
        "active_units": report.active_units,
        "eval_k": args.eval_k,
        "eval_images": report.num_images,
        "eval_minutes": eval_minutes,
        "train_images": len(splits.train),
        "device": str(device),
        "threads": threads,
        "budget": args.budget,
        **info,
    }
    harness.save(run_dir / "result.json", result)
    logger.info(
        "%s: NLL %.2f +- %.2f nats (k=%d, %d images), %d epochs, %.1f min",
        name,
        report.nll,
        report.nll_stderr,
        args.eval_k,
        report.num_images,
        info["epochs"],
        info["train_minutes"],
    )
    return result


# -- the table -------------------------------------------------------------------------------------


def table_row(family: str, k: int, r: dict[str, Any] | None) -> list[Any]:
    pub = f"{PUBLISHED[(family, k)]:.2f}"
    if r is None:
        return [family, k, pub, "not run", None, None, None, None, None]
    same = " (= VAE k=1)" if family == "IWAE" and k == 1 else ""
    return [
        f"{family}{same}", k, pub, f"{r['nll']:.2f}", f"{r['nll_stderr']:.2f}", r["epochs"],
        f"{r['train_minutes']:.2f}", f"{r['eval_k']} / {r['eval_images']}", f"{r['active_units']} / 50",
    ]  # fmt: skip


def render_table(results: dict[str, dict[str, Any]]) -> str:
    columns = ["model", "k", "published NLL", "our NLL", "± s.e.", "epochs", "train minutes", "eval k / images"]
    lines = [
        harness.md_table(
            [*columns, "active units"], "lrrrrrrrr", (table_row(f, k, results.get(name)) for f, k, name in ROWS)
        )
    ]
    any_r = next(iter(results.values()), None)
    if any_r is not None:
        lines += [
            "",
            f"Device {any_r['device']}, {any_r['train_images']} training images, budget {any_r['budget']} "
            f"per model. NLL = -mean log p(x) over the test images, in nats (lower is better); s.e. is "
            f"its standard error over images. Published: Burda et al. 2016, Table 1 (3280 epochs, k=5000).",
        ]
    return "\n".join(lines) + "\n"


def _worker_argv(args: argparse.Namespace, name: str) -> list[str]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--budget",
        args.budget,
        "--out",
        args.out,
        "--device",
        args.device,
        "--eval-k",
        str(args.eval_k),
        "--seed",
        str(args.seed),
        "--only",
        name,
        "--jobs",
        "1",
        "--worker",
    ]
    for flag, value in (
        ("--train-limit", args.train_limit),
        ("--eval-limit", args.eval_limit),
        ("--eval-batch", args.eval_batch),
        ("--eval-chunk", args.eval_chunk),
        ("--data-dir", args.data_dir),
        ("--threads", args.threads or max(1, default_threads() // args.jobs)),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for key, value in args.set or []:
        argv += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return argv + (["--overwrite"] if args.overwrite else []) + (["--no-bias-init"] if args.no_bias_init else [])


def main(argv: list[str] | None = None) -> None:
    p = harness.parser(__doc__)
    p.add_argument(
        "--budget", default="3280", help="per model: epochs (3280, the paper's), or minutes (30m) / hours (2h)"
    )
    p.add_argument("--only", help="comma-separated subset of " + ",".join(MODELS))
    p.add_argument("--jobs", type=int, default=1, help="models trained at once (separate processes; e.g. 5 on a GPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--threads", type=int, help="CPU threads per model [default: usable cores / jobs]")
    p.add_argument("--eval-k", type=int, default=5000, help="importance samples per test image (the paper: 5000)")
    p.add_argument("--eval-limit", type=int, help="evaluate the first N test images only")
    p.add_argument("--eval-batch", type=int, help="test images per pass [default: 100 on CPU, 500 on a GPU]")
    p.add_argument("--eval-chunk", type=int, help="importance samples per pass [default: 50 on CPU, 1000 on a GPU]")
    p.add_argument("--train-limit", type=int, help="train on the first N images only (smoke tests)")
    p.add_argument("--data-dir", help="folder with the MNIST IDX files")
    p.add_argument("--seed", type=int, default=0)
    harness.add_set_option(p, "train.compile=true")
    p.add_argument("--no-bias-init", action="store_true", help="leave the decoder output bias at its random init")
    p.add_argument("--out", default="runs/iwae_table", help="folder for the run folders and the table")
    p.add_argument("--overwrite", action="store_true", help="retrain models that have a result.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("vaelab").setLevel(logging.WARNING)  # not one "resuming" line per stage/epoch
    keep_freed_memory()
    names = harness.pick(p, args.only, MODELS, unknown="--only: unknown model(s)")
    parse_budget(args.budget)  # fail now, not after loading data
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    Path(args.out).mkdir(parents=True, exist_ok=True)

    if args.jobs == 1:
        results = {n: run_model(n, args) for n in names}
    else:  # one process per model: small models on one GPU overlap each other's launch gaps

        def launch(name: str) -> tuple[str, int]:
            with open(Path(args.out) / f"{name}.log", "w") as log:
                return name, subprocess.call(_worker_argv(args, name), stdout=log, stderr=subprocess.STDOUT)

        with ThreadPoolExecutor(args.jobs) as pool:
            codes = dict(pool.map(launch, names))
        failed = [n for n, c in codes.items() if c != 0]
        if failed:
            raise SystemExit(f"models {failed} failed; see {args.out}/NAME.log")
        results = {n: json.loads((Path(args.out) / n / "result.json").read_text()) for n in names}
    if args.worker:
        return
    done = {p.parent.name: json.loads(p.read_text()) for p in Path(args.out).glob("*/result.json")}
    table = render_table({**done, **results})
    (Path(args.out) / "iwae_table.md").write_text(table)
    harness.save(Path(args.out) / "iwae_table.json", {**done, **results})
    print(table)


if __name__ == "__main__":
    harness.main_of(main, "iwae_table")

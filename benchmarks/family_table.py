"""Table A of the VAE family: every model under one protocol and one CPU time budget.

    python benchmarks/family_table.py --minutes 10                 # every row not done yet
    python benchmarks/family_table.py --minutes 10 --rows vae,vamp # some rows
    python benchmarks/family_table.py --phase train                # train every row, evaluate none
    python benchmarks/family_table.py --phase eval                 # evaluate the trained rows
    python benchmarks/family_table.py --table                      # print the table of finished rows

Protocol, the same for every row: dynamically binarized MNIST with Burda et al.'s split (59,600
training images, the last 400 training images binarized once for validation, `--data.val_size
400`), the 10,000 test images binarized once (seed 2); `--seed 0`; training ends by the time budget
(`--max-minutes`) with the learning rate following the clock (`--schedule time`, 3e-3 falling 1.5
decades), batch 100, the decoder's output bias started at the mean training pixel; then
`vaelab eval RUN --k 5000` on all 10,000 test images: the importance-sampled NLL, nats, with its
standard error over images.

Every number comes from `vaelab train` and `vaelab eval`, run as subprocesses with the command
written into the row's result. Each row is saved to RESULTS/ROW.json as soon as it finishes, and a
rerun skips the rows whose file exists, so a table can be spread over several sessions. Keep the
machine otherwise idle while it trains: the budget is wall-clock minutes. The evaluation has no
budget, so `--phase train` then `--phase eval` lets other work share the machine during the
evaluations only; a trained row waits in RUNS/ROW/train.json for its evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import harness

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "family_table"

# The budget recipe (what the mnist-best preset ships), applied to every row but mnist-best itself.
RECIPE = [
    "--binarize",
    "dynamic",
    "--data.val_size",
    "400",
    "--batch-size",
    "100",
    "--lr",
    "3e-3",
    "--schedule",
    "time",
    "--seed",
    "0",
]

ROWS: dict[str, tuple[str, list[str]]] = {
    "vae": ("iwae-paper", []),
    "iwae-k5": ("iwae-paper", ["--objective", "iwae", "--k", "5"]),
    "iwae-k5-dreg": ("iwae-paper", ["--objective", "iwae", "--k", "5", "--estimator", "dreg"]),
    "iwae-k50": ("iwae-paper", ["--objective", "iwae", "--k", "50"]),
    "iwae-k50-dreg": ("iwae-paper", ["--objective", "iwae", "--k", "50", "--estimator", "dreg"]),
    "vamp": ("iwae-paper", ["--prior", "vamp"]),
    "iaf": ("iwae-paper", ["--posterior", "iaf"]),
    "planar": ("iwae-paper", ["--posterior", "planar"]),
    "2l-vae": ("iwae-paper-2l", []),
    "2l-iwae-k5": ("iwae-paper-2l", ["--objective", "iwae", "--k", "5"]),
    "miwae-m2-k5": ("iwae-paper", ["--objective", "miwae", "--m", "2", "--k", "5"]),
    "vamp-100-warmup": ("iwae-paper", ["--prior", "vamp", "--prior-components", "100", "--warmup", "20"]),
    "iwae-k5-dreg-ar": (
        "iwae-paper",
        ["--objective", "iwae", "--k", "5", "--estimator", "dreg", "--likelihood", "bernoulli-ar"],
    ),
    # mnist-best as it was before it took the autoregressive likelihood (Bernoulli pixels)
    "mnist-best-bernoulli": ("mnist-best", ["--likelihood", "bernoulli"]),
    "mnist-best-bernoulli-15min": ("mnist-best", ["--likelihood", "bernoulli"]),
    "mnist-best-15min": ("mnist-best", []),
}
# Rows with a budget of their own: the preset's target measurement (the table's rows share one).
OWN_MINUTES = {"mnist-best-bernoulli-15min": 15.0, "mnist-best-15min": 15.0}


def train_row(name: str, minutes: float, runs: Path, threads: int | None) -> harness.Record:
    """Train one row within its budget; its record goes to RUNS/ROW/train.json."""
    preset, flags = ROWS[name]
    out = runs / name
    extra = [] if preset == "mnist-best" else RECIPE
    minutes = OWN_MINUTES.get(name, minutes)
    train = harness.vaelab(
        "train", "--preset", preset, *extra, *flags, "--max-minutes", str(minutes), *harness.threads_args(threads),
        "--out", str(out), "--overwrite", "--no-plots", "-q",
    )  # fmt: skip
    output, seconds = harness.run(train, name)
    cfg = json.loads((out / "config.json").read_text())
    record = {
        "row": name,
        "minutes": minutes,
        "epochs": len(harness.metrics(out)),
        "train_output": output.strip(),
        "train_seconds": seconds,
        "threads": cfg["train"]["threads"],
        "commands": [harness.shown(train)],
        "date": harness.now(),
    }
    harness.save(out / "train.json", record)
    return record


def eval_row(name: str, eval_k: int, runs: Path, threads: int | None) -> harness.Record:
    """Evaluate a trained row (RUNS/ROW/train.json) with `vaelab eval --k EVAL_K`."""
    out = runs / name
    record = json.loads((out / "train.json").read_text())
    ev = harness.vaelab("eval", str(out), "--k", str(eval_k), "--json", *harness.threads_args(threads))
    report, seconds = harness.run_json(ev, name)
    return {
        **record,
        "nll": report["nll"],
        "nll_stderr": report["nll_stderr"],
        "elbo": report["elbo"],
        "kl": report["kl"],
        "active_units": report["active_units"],
        "eval_seconds": seconds,
        "commands": [*record["commands"], harness.shown(ev)],
    }


def measure(name: str, args: argparse.Namespace) -> harness.Record | None:
    """--phase all: train (unless trained before) and evaluate; train: train only (nothing to save
    yet); eval: evaluate a row trained before."""
    runs = Path(args.runs)
    trained = (runs / name / "train.json").is_file()
    if args.phase in ("all", "train") and not trained:
        r = train_row(name, args.minutes, runs, args.threads)
        print(f"{name}: trained, {r['epochs']} epochs in {r['minutes']:g} minutes", flush=True)
        trained = True
    if args.phase in ("all", "eval") and trained:
        return eval_row(name, args.eval_k, runs, args.threads)
    return None


def table(results: Path) -> str:
    done = harness.finished(results, ROWS)
    return harness.md_table(
        ["row", "test NLL (k=5000), nats", "ELBO", "epochs", "minutes", "threads"],
        "lrrrrr",
        (
            [
                name,
                f"{r['nll']:.2f} ± {r['nll_stderr']:.2f}",
                f"{r['elbo']:.2f}",
                r["epochs"],
                f"{r['minutes']:g}",
                r["threads"],
            ]
            if (r := done.get(name))
            else [name, "(not run yet)", None, None, None, None]
            for name in ROWS
        ),
    )


def main(argv: list[str] | None = None) -> None:
    p = harness.parser(__doc__)
    p.add_argument("--minutes", type=float, default=10.0, help="training budget of every row")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--threads", type=int, help="CPU threads [default: vaelab's, the usable cores]")
    p.add_argument(
        "--phase",
        choices=["all", "train", "eval"],
        default="all",
        help="all: train and evaluate each row in turn; train: only train (the timed part); "
        "eval: only evaluate the rows trained before",
    )
    harness.add_row_options(p, ROWS, RESULTS, runs="runs/family_table")
    args = p.parse_args(argv)
    results = Path(args.results)
    if args.table:
        print(table(results))
        return
    names = harness.pick(p, args.rows, ROWS)
    harness.run_rows(
        results,
        names,
        lambda name: measure(name, args),
        lambda r: f"NLL {r['nll']:.2f} +- {r['nll_stderr']:.2f} nats, {r['epochs']} epochs",
    )
    print(table(results))


if __name__ == "__main__":
    main()

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
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

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


def vaelab(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaelab", *args]


def train_row(name: str, minutes: float, runs: Path, threads: int | None) -> dict:
    """Train one row within its budget; its record goes to RUNS/ROW/train.json."""
    preset, flags = ROWS[name]
    out = runs / name
    extra = [] if preset == "mnist-best" else RECIPE
    minutes = OWN_MINUTES.get(name, minutes)
    thr = ["--threads", str(threads)] if threads else []
    train = vaelab(
        "train",
        "--preset",
        preset,
        *extra,
        *flags,
        "--max-minutes",
        str(minutes),
        *thr,
        "--out",
        str(out),
        "--overwrite",
        "--no-plots",
        "-q",
    )
    t0 = time.monotonic()
    proc = subprocess.run(train, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: vaelab train failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    cfg = json.loads((out / "config.json").read_text())
    metrics = (out / "metrics.csv").read_text().strip().splitlines()
    record = {
        "row": name,
        "minutes": minutes,
        "epochs": len(metrics) - 1,
        "train_output": proc.stdout.strip(),
        "train_seconds": time.monotonic() - t0,
        "threads": cfg["train"]["threads"],
        "commands": [_shell(train)],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    (out / "train.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def eval_row(name: str, eval_k: int, runs: Path, threads: int | None) -> dict:
    """Evaluate a trained row (RUNS/ROW/train.json) with `vaelab eval --k EVAL_K`."""
    out = runs / name
    record = json.loads((out / "train.json").read_text())
    thr = ["--threads", str(threads)] if threads else []
    ev = vaelab("eval", str(out), "--k", str(eval_k), "--json", *thr)
    t0 = time.monotonic()
    proc = subprocess.run(ev, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: vaelab eval failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    return {
        **record,
        "nll": report["nll"],
        "nll_stderr": report["nll_stderr"],
        "elbo": report["elbo"],
        "kl": report["kl"],
        "active_units": report["active_units"],
        "eval_seconds": time.monotonic() - t0,
        "commands": [*record["commands"], _shell(ev)],
    }


def _shell(cmd: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in ["vaelab", *cmd[3:]])


def table(results: Path) -> str:
    rows = ["| row | test NLL (k=5000), nats | ELBO | epochs | minutes | threads |", "|---|---:|---:|---:|---:|---:|"]
    for name in ROWS:
        f = results / f"{name}.json"
        if not f.is_file():
            rows.append(f"| {name} | (not run yet) | | | | |")
            continue
        r = json.loads(f.read_text())
        rows.append(
            f"| {name} | {r['nll']:.2f} ± {r['nll_stderr']:.2f} | {r['elbo']:.2f} | {r['epochs']} | "
            f"{r['minutes']:g} | {r['threads']} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=10.0, help="training budget of every row")
    p.add_argument("--rows", help=f"comma-separated rows [default: all]: {', '.join(ROWS)}")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--threads", type=int, help="CPU threads [default: vaelab's, the usable cores]")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--runs", default="runs/family_table")
    p.add_argument(
        "--phase",
        choices=["all", "train", "eval"],
        default="all",
        help="all: train and evaluate each row in turn; train: only train (the timed part); "
        "eval: only evaluate the rows trained before",
    )
    p.add_argument("--table", action="store_true", help="only print the table of the finished rows")
    args = p.parse_args(argv)
    results = Path(args.results)
    if args.table:
        print(table(results))
        return
    names = args.rows.split(",") if args.rows else list(ROWS)
    bad = [n for n in names if n not in ROWS]
    if bad:
        p.error(f"unknown rows {bad}; choose from {', '.join(ROWS)}")
    results.mkdir(parents=True, exist_ok=True)
    runs = Path(args.runs)
    for name in names:
        path = results / f"{name}.json"
        if path.is_file():
            print(f"{name}: done before, skipped ({path})", flush=True)
            continue
        trained = (runs / name / "train.json").is_file()
        if args.phase in ("all", "train") and not trained:
            r = train_row(name, args.minutes, runs, args.threads)
            print(f"{name}: trained, {r['epochs']} epochs in {r['minutes']:g} minutes", flush=True)
            trained = True
        if args.phase in ("all", "eval") and trained:
            r = eval_row(name, args.eval_k, runs, args.threads)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(r, indent=2) + "\n")
            os.replace(tmp, path)  # a row is saved whole or not at all
            print(f"{name}: NLL {r['nll']:.2f} +- {r['nll_stderr']:.2f} nats, {r['epochs']} epochs", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()

"""Discrete latents under Table A's protocol: VQ-VAE (+ its learned code prior) and Gumbel-softmax.

    python benchmarks/discrete_table.py                       # every row not done yet
    python benchmarks/discrete_table.py --rows vq-mnist       # one row
    python benchmarks/discrete_table.py --table               # the table of finished rows

Protocol (Table A's budget and test set, the presets' own training settings): `vaelab train
--preset P --max-minutes 10` on dynamically binarized MNIST (or Fashion-MNIST) with a Bernoulli
decoder, 2 CPU threads, the presets' split (50,000 / 10,000) and learning rate; the 10,000 test
images binarized once with seed 2, as in Table A. Then for VQ-VAE `vaelab train-prior RUN --epochs
10` and `vaelab eval RUN` (the deterministic bound -log p(x|z_q) - log p(z_q), with the codebook
perplexity), for Gumbel-softmax `vaelab eval RUN --k 5000` (importance-sampled NLL of the discrete
model). Reconstruction: -E log p(x|z) of the test ELBO in nats, and the mean squared error per
pixel of `model.reconstruct(x)` against the binarized test images (the public API).
Every row is saved to RESULTS/ROW.json when it finishes,
with its commands; a rerun skips finished rows. Keep the machine otherwise idle while it trains.
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
RESULTS = HERE / "results" / "discrete"

ROWS: dict[str, tuple[str, str, list[str]]] = {
    "vq-mnist": ("VQ-VAE + transformer prior, MNIST", "vqvae", []),
    "vq-fashion": ("VQ-VAE + transformer prior, Fashion-MNIST", "vqvae", ["--dataset", "fashion-mnist"]),
    "gumbel-mnist": ("Gumbel-softmax, 30 x 10 categories, MNIST", "gumbel", []),
}


def vaelab(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaelab", *args]


def _shell(cmd: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in ["vaelab", *cmd[3:]])


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {_shell(cmd)}\n{proc.stderr[-2000:]}")
    return proc.stdout


def reconstruction_mse(run: Path) -> float:
    """Mean squared error per pixel of reconstruct(x) on the run's (binarized) test images."""
    import torch

    import vaelab
    from vaelab.checkpoint import read_config
    from vaelab.data import iter_batches, to_float

    model = vaelab.load(run)
    test = vaelab.load_splits(read_config(run).data).test
    total, n = 0.0, 0
    with torch.no_grad():
        for xb, _ in iter_batches(test, 500):
            x = to_float(xb)
            total += float((model.reconstruct(x) - x).pow(2).sum())
            n += x.numel()
    return total / n


def run_row(name: str, minutes: float, prior_epochs: int, k: int, runs: Path, threads: int) -> dict:
    label, preset, extra = ROWS[name]
    out = runs / name
    thr = ["--threads", str(threads)]
    train = vaelab(
        "train", "--preset", preset, *extra, "--max-minutes", str(minutes), "--epochs", "1000", *thr,
        "--out", str(out), "--overwrite", "-q",
    )  # fmt: skip
    t0 = time.monotonic()
    _run(train, name)
    train_s = time.monotonic() - t0
    commands = [_shell(train)]
    prior_s = None
    if preset == "vqvae":
        prior = vaelab("train-prior", str(out), "--epochs", str(prior_epochs), *thr, "-q")
        t1 = time.monotonic()
        _run(prior, name)
        prior_s = time.monotonic() - t1
        commands.append(_shell(prior))
    ev = vaelab("eval", str(out), "--json", "--k", str(k), *thr)
    report = json.loads(_run(ev, name))
    commands.append(_shell(ev))
    metrics = (out / "metrics.csv").read_text().strip().splitlines()
    last = dict(zip(metrics[0].split(","), metrics[-1].split(",")))
    return {
        "row": name,
        "label": label,
        "minutes": minutes,
        "epochs": int(float(last["epoch"])),
        "steps": int(float(last["step"])),
        "train_seconds": train_s,
        "prior_seconds": prior_s,
        "nll": report["nll"],
        "nll_stderr": report["nll_stderr"],
        "nll_is_bound": report["nll_is_bound"],
        "k": report["k"],
        "elbo": report["elbo"],
        "reconstruction_nats": -report["log_px_z"],
        "kl": report["kl"],
        "perplexity": report["perplexity"],
        "mse": reconstruction_mse(out),
        "commands": commands,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def table(results: Path) -> str:
    rows = [
        "| model | NLL, nats | kind | recon., nats | KL / -log p(z), nats | MSE per pixel | perplexity | epochs |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, (label, _, _) in ROWS.items():
        f = results / f"{name}.json"
        if not f.is_file():
            rows.append(f"| {label} | | | | | | | |")
            continue
        r = json.loads(f.read_text())
        kind = "bound (k = 1)" if r["nll_is_bound"] else f"IS, k = {r['k']}"
        ppl = "" if r["perplexity"] is None else f"{r['perplexity']:.1f}"
        rows.append(
            f"| {label} | {r['nll']:.2f} ± {r['nll_stderr']:.2f} | {kind} | {r['reconstruction_nats']:.2f} | "
            f"{r['kl']:.2f} | {r['mse']:.4f} | {ppl} | {r['epochs']} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=10.0, help="training budget of every row (Table A: 10)")
    p.add_argument("--prior-epochs", type=int, default=10, help="vaelab train-prior --epochs")
    p.add_argument("--k", type=int, default=5000, help="importance samples of the Gumbel rows' NLL")
    p.add_argument("--rows", help=f"comma-separated rows [default: all]: {', '.join(ROWS)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--runs", default="runs/discrete")
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
    for name in names:
        path = results / f"{name}.json"
        if path.is_file():
            print(f"{name}: done before, skipped ({path})", flush=True)
            continue
        r = run_row(name, args.minutes, args.prior_epochs, args.k, Path(args.runs), args.threads)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(r, indent=2) + "\n")
        os.replace(tmp, path)  # a row is saved whole or not at all
        print(f"{name}: NLL {r['nll']:.2f} ({'bound' if r['nll_is_bound'] else 'IS'})", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()

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
from pathlib import Path

import harness

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "discrete"

ROWS: dict[str, tuple[str, str, list[str]]] = {
    "vq-mnist": ("VQ-VAE + transformer prior, MNIST", "vqvae", []),
    "vq-fashion": ("VQ-VAE + transformer prior, Fashion-MNIST", "vqvae", ["--dataset", "fashion-mnist"]),
    "gumbel-mnist": ("Gumbel-softmax, 30 x 10 categories, MNIST", "gumbel", []),
}


def reconstruction_mse(run: Path) -> float:
    """Mean squared error per pixel of reconstruct(x) on the run's (binarized) test images."""
    import torch

    import vaelab
    from vaelab.data import iter_batches, to_float
    from vaelab.run.checkpoint import read_config

    model = vaelab.load(run)
    test = vaelab.load_splits(read_config(run).data).test
    total, n = 0.0, 0
    with torch.no_grad():
        for xb, _ in iter_batches(test, 500):
            x = to_float(xb)
            total += float((model.reconstruct(x) - x).pow(2).sum())
            n += x.numel()
    return total / n


def run_row(name: str, args: argparse.Namespace) -> harness.Record:
    label, preset, extra = ROWS[name]
    out = Path(args.runs) / name
    thr = ["--threads", str(args.threads)]
    train = harness.vaelab(
        "train", "--preset", preset, *extra, "--max-minutes", str(args.minutes), "--epochs", "1000", *thr,
        "--out", str(out), "--overwrite", "-q",
    )  # fmt: skip
    _, train_s = harness.run(train, name)
    commands = [harness.shown(train)]
    prior_s = None
    if preset == "vqvae":
        prior = harness.vaelab("train-prior", str(out), "--epochs", str(args.prior_epochs), *thr, "-q")
        _, prior_s = harness.run(prior, name)
        commands.append(harness.shown(prior))
    ev = harness.vaelab("eval", str(out), "--json", "--k", str(args.k), *thr)
    report, _ = harness.run_json(ev, name)
    commands.append(harness.shown(ev))
    last = harness.metrics(out)[-1]
    return {
        "row": name,
        "label": label,
        "minutes": args.minutes,
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
        "date": harness.now(),
    }


def cells(label: str, r: harness.Record | None) -> list[str | None]:
    if r is None:
        return [label, *[None] * 7]
    kind = "bound (k = 1)" if r["nll_is_bound"] else f"IS, k = {r['k']}"
    ppl = "" if r["perplexity"] is None else f"{r['perplexity']:.1f}"
    return [
        label, f"{r['nll']:.2f} ± {r['nll_stderr']:.2f}", kind, f"{r['reconstruction_nats']:.2f}", f"{r['kl']:.2f}",
        f"{r['mse']:.4f}", ppl, str(r["epochs"]),
    ]  # fmt: skip


def table(results: Path) -> str:
    done = harness.finished(results, ROWS)
    return harness.md_table(
        ["model", "NLL, nats", "kind", "recon., nats", "KL / -log p(z), nats", "MSE per pixel", "perplexity", "epochs"],
        "lrlrrrrr",
        (cells(label, done.get(name)) for name, (label, _, _) in ROWS.items()),
    )


def main(argv: list[str] | None = None) -> None:
    p = harness.parser(__doc__)
    p.add_argument("--minutes", type=float, default=10.0, help="training budget of every row (Table A: 10)")
    p.add_argument("--prior-epochs", type=int, default=10, help="vaelab train-prior --epochs")
    p.add_argument("--k", type=int, default=5000, help="importance samples of the Gumbel rows' NLL")
    p.add_argument("--threads", type=int, default=2)
    harness.add_row_options(p, ROWS, RESULTS, runs="runs/discrete")
    args = p.parse_args(argv)
    results = Path(args.results)
    if args.table:
        print(table(results))
        return
    names = harness.pick(p, args.rows, ROWS)
    harness.run_rows(
        results,
        names,
        lambda name: run_row(name, args),
        lambda r: f"NLL {r['nll']:.2f} ({'bound' if r['nll_is_bound'] else 'IS'})",
    )
    print(table(results))


if __name__ == "__main__":
    main()

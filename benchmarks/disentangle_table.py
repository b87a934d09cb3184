"""The disentanglement table: five objectives x three seeds on shapes2d, each within one CPU budget.

    python benchmarks/disentangle_table.py --minutes 4                  # every row not done yet
    python benchmarks/disentangle_table.py --minutes 4 --rows btc-b6    # one model, its seeds
    python benchmarks/disentangle_table.py --table                      # the table of finished rows

Protocol: the `dsprites` preset (disentanglement_lib's architecture: 4 stride-2 convolutions, dense
256, 10 latents, Bernoulli pixels, batch 64) on `--dataset shapes2d` (737,280 images of dSprites'
factor grid, rendered here), trained by `vaelab train` for `--minutes` of wall clock at the learning
rate `--lr` (the preset's 1e-4 is for disentanglement_lib's 300,000 steps, which a CPU budget of
minutes does not reach), seeds 0, 1, 2; then `vaelab disentangle RUN` on the 10,000 test images
(MIG, SAP, DCI, the beta-VAE and FactorVAE scores with disentanglement_lib's protocols, seed 0)
and the reconstruction term -E_q log p(x|z) of the test ELBO, nats.

Every number comes from `vaelab train` and `vaelab disentangle` run as subprocesses, with the
commands written into each result. Each (model, seed) is saved to RESULTS/MODEL-sSEED.json as soon
as it finishes and a rerun skips the finished ones. Keep the machine otherwise idle while it trains.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import harness

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "disentangle"

MODELS: dict[str, tuple[str, list[str]]] = {
    "vae": ("β-VAE, β = 1 (the VAE)", ["--objective", "elbo"]),
    "bvae-b4": ("β-VAE, β = 4", ["--objective", "elbo", "--beta", "4"]),
    "btc-b6": ("β-TCVAE, β = 6", ["--objective", "betatc", "--beta", "6"]),
    "factor-g35": ("FactorVAE, γ = 35", ["--objective", "factor", "--train.factor_gamma", "35"]),
    "dip-i": ("DIP-VAE-I, λ_od = 10, λ_d = 100", ["--objective", "dip-i"]),
}
SEEDS = (0, 1, 2)
METRICS = [
    ("mig", "MIG"),
    ("dci_disentanglement", "DCI dis."),
    ("factor_vae_score", "FactorVAE score"),
    ("beta_vae_score", "β-VAE score"),
    ("reconstruction_nats", "recon., nats"),
]


def run_row(model: str, seed: int, args: argparse.Namespace) -> harness.Record:
    out = Path(args.runs) / f"{model}-s{seed}"
    thr = harness.threads_args(args.threads)
    what = f"{model} seed {seed}"
    train = harness.vaelab(
        "train", "--preset", "dsprites", *MODELS[model][1], "--lr", str(args.lr), "--seed", str(seed),
        "--max-minutes", str(args.minutes), *thr, "--out", str(out), "--overwrite", "--no-plots", "-q",
    )  # fmt: skip
    _, train_s = harness.run(train, what)
    steps = int(float(harness.metrics(out)[-1]["step"]))
    ev = harness.vaelab("disentangle", str(out), "--json", *thr)
    report, _ = harness.run_json(ev, what)
    return {
        **report,  # first: its "seed" is the metrics' seed, which the training seed must not lose to
        "model": model,
        "seed": seed,
        "metric_seed": report.get("seed"),
        "minutes": args.minutes,
        "lr": args.lr,
        "steps": steps,
        "images_seen": steps * 64,
        "train_seconds": train_s,
        "commands": [harness.shown(train), harness.shown(ev)],
        "date": harness.now(),
    }


def _mean_spread(values: list[float]) -> str:
    if not values:
        return ""
    m = statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.3g}"
    return f"{m:.3g} ± {statistics.stdev(values):.2g}"


def table(results: Path) -> str:
    lines = []
    for model, (label, _) in MODELS.items():
        rs = list(harness.finished(results, [f"{model}-s{s}" for s in SEEDS]).values())
        if not rs:
            lines.append([label, 0, *[None] * (len(METRICS) + 2)])
            continue
        cells = [_mean_spread([r[key] for r in rs if r.get(key) is not None]) for key, _ in METRICS]
        med = statistics.median(r["mig"] for r in rs)
        steps = statistics.fmean(r["steps"] for r in rs)
        lines.append([label, len(rs), *cells, f"{med:.3f}", f"{steps:,.0f}"])
    columns = ["model", "seeds", *(name for _, name in METRICS), "median MIG", "steps"]
    return harness.md_table(columns, "l" + "r" * (len(columns) - 1), lines)


def main(argv: list[str] | None = None) -> None:
    p = harness.parser(__doc__)
    p.add_argument("--minutes", type=float, default=4.0, help="training budget of every run")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam's learning rate (the preset's is 1e-4)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--threads", type=int, help="CPU threads [default: vaelab's, the usable cores]")
    harness.add_row_options(p, MODELS, RESULTS, runs="runs/disentangle", what="models")
    args = p.parse_args(argv)
    results = Path(args.results)
    if args.table:
        print(table(results))
        return
    names = harness.pick(p, args.rows, MODELS, unknown="unknown models")
    seeds = [int(s) for s in args.seeds.split(",")]
    # seed-major: a table spread over sessions fills every model at once
    runs = [(name, seed) for seed in seeds for name in names]
    harness.run_rows(
        results,
        runs,
        lambda row: run_row(*row, args),
        lambda r: f"MIG {r['mig']:.3f}, DCI {r['dci_disentanglement']:.3f}",
        key=lambda row: f"{row[0]}-s{row[1]}",
        label=lambda row: f"{row[0]} seed {row[1]}",
    )
    print(table(results))


if __name__ == "__main__":
    main()

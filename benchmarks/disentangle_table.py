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
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


def vaelab(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaelab", *args]


def _shell(cmd: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in ["vaelab", *cmd[3:]])


def run_row(model: str, seed: int, minutes: float, lr: float, runs: Path, threads: int | None) -> dict:
    out = runs / f"{model}-s{seed}"
    thr = ["--threads", str(threads)] if threads else []
    train = vaelab(
        "train", "--preset", "dsprites", *MODELS[model][1], "--lr", str(lr), "--seed", str(seed),
        "--max-minutes", str(minutes), *thr, "--out", str(out), "--overwrite", "--no-plots", "-q",
    )  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(train, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{model} seed {seed}: vaelab train failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    train_s = time.monotonic() - t0
    metrics = (out / "metrics.csv").read_text().strip().splitlines()
    last = dict(zip(metrics[0].split(","), metrics[-1].split(",")))
    ev = vaelab("disentangle", str(out), "--json", *thr)
    proc = subprocess.run(ev, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{model} seed {seed}: vaelab disentangle failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    return {
        **report,  # first: its "seed" is the metrics' seed, which the training seed must not lose to
        "model": model,
        "seed": seed,
        "metric_seed": report.get("seed"),
        "minutes": minutes,
        "lr": lr,
        "steps": int(float(last["step"])),
        "images_seen": int(float(last["step"])) * 64,
        "train_seconds": train_s,
        "commands": [_shell(train), _shell(ev)],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def _mean_spread(values: list[float]) -> str:
    if not values:
        return ""
    m = statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.3g}"
    return f"{m:.3g} ± {statistics.stdev(values):.2g}"


def table(results: Path) -> str:
    head = "| model | seeds | " + " | ".join(name for _, name in METRICS) + " | median MIG | steps |"
    rows = [head, "|---|---:|" + "---:|" * (len(METRICS) + 2)]
    for model, (label, _) in MODELS.items():
        rs = [json.loads(f.read_text()) for s in SEEDS if (f := results / f"{model}-s{s}.json").is_file()]
        if not rs:
            rows.append(f"| {label} | 0 |" + " |" * (len(METRICS) + 2))
            continue
        cells = []
        for key, _ in METRICS:
            vals = [r[key] for r in rs if r.get(key) is not None]
            cells.append(_mean_spread(vals))
        med = statistics.median(r["mig"] for r in rs)
        steps = statistics.fmean(r["steps"] for r in rs)
        rows.append(f"| {label} | {len(rs)} | " + " | ".join(cells) + f" | {med:.3f} | {steps:,.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=4.0, help="training budget of every run")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam's learning rate (the preset's is 1e-4)")
    p.add_argument("--rows", help=f"comma-separated models [default: all]: {', '.join(MODELS)}")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--threads", type=int, help="CPU threads [default: vaelab's, the usable cores]")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--runs", default="runs/disentangle")
    p.add_argument("--table", action="store_true", help="only print the table of the finished rows")
    args = p.parse_args(argv)
    results = Path(args.results)
    if args.table:
        print(table(results))
        return
    names = args.rows.split(",") if args.rows else list(MODELS)
    bad = [n for n in names if n not in MODELS]
    if bad:
        p.error(f"unknown models {bad}; choose from {', '.join(MODELS)}")
    results.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:  # seed-major: a table spread over sessions fills every model at once
        for name in names:
            path = results / f"{name}-s{seed}.json"
            if path.is_file():
                print(f"{name} seed {seed}: done before, skipped ({path})", flush=True)
                continue
            r = run_row(name, seed, args.minutes, args.lr, Path(args.runs), args.threads)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(r, indent=2) + "\n")
            os.replace(tmp, path)  # a row is saved whole or not at all
            print(f"{name} seed {seed}: MIG {r['mig']:.3f}, DCI {r['dci_disentanglement']:.3f}", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()

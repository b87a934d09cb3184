"""Does a change of the code's layout change what it computes? Train a fixed set of short runs with two
versions of vaelab and compare their final weights tensor by tensor.

    python benchmarks/bit_identity.py run --out /tmp/before --commit 738db3a   # a frozen copy of a commit
    python benchmarks/bit_identity.py run --out /tmp/after                     # the work tree
    python benchmarks/bit_identity.py compare /tmp/before /tmp/after

Every run is a `vaelab train` command line (the product, not a private API) of 2 epochs on the first
2,000 MNIST training images with one thread and seed 0, so that it is deterministic on one machine.
The set covers every family the design issue (#22) names: the tutorial's VAE, IWAE with DReG, the
VampPrior, IAF and planar flows, two stochastic layers, the autoregressive likelihood, the three
disentangling objectives with penalties (betatc, factor with its discriminator, dip-i), the VQ-VAE,
the Gumbel-softmax VAE, a conditional VAE and a 2-process torchrun run. `compare` prints, per run,
"identical" or the largest absolute difference of any weight, and exits 1 if any differs by more
than --tolerance (default 1e-6; 0 demands bit-identity). Compare runs made on the same machine only:
another CPU may round differently.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

COMMON = ["--epochs", "2", "--data.limit", "2000", "--threads", "1", "--seed", "0", "--no-plots", "-q"]
MNIST_BINARY = ["--preset", "iwae-paper", "--data.val_size", "400", "--batch-size", "100", "--schedule", "constant"]

RUNS: dict[str, list[str]] = {
    "seed": ["--preset", "seed"],
    "iwae-k5-dreg": [*MNIST_BINARY, "--objective", "iwae", "--k", "5", "--estimator", "dreg"],
    "vamp": [*MNIST_BINARY, "--prior", "vamp", "--prior-components", "50"],
    "iaf": [*MNIST_BINARY, "--posterior", "iaf"],
    "planar": [*MNIST_BINARY, "--posterior", "planar"],
    "two-layers": ["--preset", "iwae-paper-2l", "--batch-size", "100", "--schedule", "constant"],
    "bernoulli-ar": [*MNIST_BINARY, "--likelihood", "bernoulli-ar"],
    "betatc": ["--preset", "seed", "--latent-dim", "10", "--objective", "betatc", "--beta", "6"],
    "factor": ["--preset", "seed", "--latent-dim", "10", "--objective", "factor"],
    "dip-i": ["--preset", "seed", "--latent-dim", "10", "--objective", "dip-i"],
    "vqvae": ["--preset", "vqvae"],
    "gumbel": ["--preset", "gumbel"],
    "conditional": ["--preset", "seed", "--conditional"],
    "torchrun-2": ["--preset", "seed", "--nproc", "2"],
}


def frozen_copy(commit: str, into: Path) -> Path:
    """`git archive` of `commit` unpacked into `into`; returns its src folder (for PYTHONPATH)."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", commit], capture_output=True, check=True).stdout
    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(archive)
        f.flush()
        with tarfile.open(f.name) as tar:
            tar.extractall(into, filter="data")
    return into / "src"


def run_all(out: Path, commit: str | None, only: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if commit is not None:
        src = frozen_copy(commit, out / f"code-{commit}")
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    record = {}
    for name in only:
        cmd = [sys.executable, "-m", "vaelab", "train", *RUNS[name], *COMMON, "--out", str(out / name), "--overwrite"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        record[name] = {"command": shlex.join(["vaelab", *cmd[3:]]), "returncode": proc.returncode}
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        print(f"{name}: {status}", flush=True)
    (out / "runs.json").write_text(json.dumps({"commit": commit, "runs": record}, indent=2) + "\n")


def compare(a: Path, b: Path, tolerance: float) -> int:
    from safetensors.torch import load_file

    worst = 0.0
    for name in RUNS:
        fa, fb = a / name / "model.safetensors", b / name / "model.safetensors"
        if not (fa.is_file() and fb.is_file()):
            print(
                f"{name}: missing in {'both' if not fa.is_file() and not fb.is_file() else (a if not fa.is_file() else b)}"
            )
            worst = max(worst, float("inf"))
            continue
        ta, tb = load_file(str(fa)), load_file(str(fb))
        if set(ta) != set(tb):
            print(
                f"{name}: different tensors: only in A {sorted(set(ta) - set(tb))[:3]}, only in B {sorted(set(tb) - set(ta))[:3]}"
            )
            worst = float("inf")
            continue
        diff = max(((ta[k].double() - tb[k].double()).abs().max().item() if ta[k].numel() else 0.0) for k in ta)
        same = all(ta[k].shape == tb[k].shape and bool((ta[k] == tb[k]).all()) for k in ta)
        print(f"{name}: {'identical' if same else f'max |difference| {diff:.3g}'}")
        worst = max(worst, 0.0 if same else diff)
    print(f"worst: {worst:.3g} (tolerance {tolerance:g})")
    return 0 if worst <= tolerance else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="train every run into OUT")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--commit", help="train with a frozen copy of this commit instead of the work tree")
    r.add_argument("--only", help="comma-separated runs (default all): " + ", ".join(RUNS))
    c = sub.add_parser("compare", help="compare the weights of two `run` folders")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--tolerance", type=float, default=1e-6)
    args = ap.parse_args()
    if args.action == "run":
        only = args.only.split(",") if args.only else list(RUNS)
        unknown = [n for n in only if n not in RUNS]
        if unknown:
            ap.error(f"unknown run(s) {unknown}; choose from {', '.join(RUNS)}")
        run_all(args.out, args.commit, only)
    else:
        raise SystemExit(compare(args.a, args.b, args.tolerance))


if __name__ == "__main__":
    main()

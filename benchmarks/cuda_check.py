"""Checks of the CUDA path that the CPU test suite cannot make (run on a GPU machine).

    python benchmarks/cuda_check.py                 # on a machine with a CUDA GPU
    python benchmarks/cuda_check.py --device cpu    # the same checks on the CPU (a dry run)

1. One training step on the device equals the same step on the CPU (same weights, same noise):
   loss and every gradient, to float32 tolerance (TF32 matmuls are switched off for this check).
2. fit() on the device: the whole dataset resident, the ELBO improves, a checkpoint resumed in the
   middle of an epoch ends where the uninterrupted run ends.
3. No host synchronisation inside an epoch: torch.cuda.set_sync_debug_mode("warn") counts the
   synchronising calls of a 1-epoch and a 3-epoch run; per-step syncs would grow with the steps.
Prints one line per check and exits non-zero if any fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import load_splits
from vaelab.models import VAE
from vaelab.objectives.base import training_objective
from vaelab.training import fit


def check_step(device: torch.device) -> tuple[bool, str]:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cpu = VAE(ModelConfig())
    dev = VAE(ModelConfig()).to(device)
    dev.load_state_dict(cpu.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.rand(128, 1, 28, 28, generator=g)
    eps = torch.randn(1, 128, 2, generator=g)
    worst = 0.0
    losses = []
    for model, xx, ee in ((cpu, x, eps), (dev, x.to(device), eps.to(device))):
        loss = -training_objective(model(xx, None, ee), TrainConfig()).surrogate.mean()
        loss.backward()
        losses.append(loss.item())
    for p, q in zip(cpu.parameters(), dev.parameters()):
        rel = float((p.grad - q.grad.cpu()).norm() / p.grad.norm().clamp_min(1e-30))
        worst = max(worst, rel)
    ok = abs(losses[0] - losses[1]) / abs(losses[0]) < 1e-5 and worst < 1e-4
    return ok, f"loss cpu {losses[0]:.6f} vs {device.type} {losses[1]:.6f}; worst relative gradient error {worst:.2e}"


def _cfg(device: torch.device, epochs: int, **train) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="mnist", limit=20_000, binarize="dynamic"),
        model=ModelConfig(hidden=(256,), latent_dim=8),
        train=TrainConfig(epochs=epochs, batch_size=256, device=device.type, seed=0, **train),
    )


def check_fit_and_resume(device: torch.device, splits) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _cfg(device, 3, checkpoint_every=100)
        torch.manual_seed(0)
        full = fit(VAE(cfg.model), splits, cfg, Path(tmp) / "full", progress=False)
        torch.manual_seed(0)
        short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2))
        fit(VAE(cfg.model), splits, short, Path(tmp) / "res", progress=False)
        torch.manual_seed(0)
        res = fit(VAE(cfg.model), splits, cfg, Path(tmp) / "res", resume=True, progress=False)
    a, b = full.model.state_dict(), res.model.state_dict()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    elbos = [r["val_elbo"] for r in full.metrics]
    ok = elbos[-1] > elbos[0] and diff < 1e-4 and next(full.model.parameters()).device.type == device.type
    return ok, (
        f"val ELBO by epoch {', '.join(f'{e:.2f}' for e in elbos)}; resumed vs uninterrupted max |dw| "
        f"{diff:.2e}; {full.metrics[-1]['samples_per_s']:.0f} samples/s at batch 256"
    )


def check_no_sync(device: torch.device, splits) -> tuple[bool, str]:
    if device.type != "cuda":
        return True, "skipped: not a CUDA device"
    counts = []
    for epochs in (1, 3):
        cfg = _cfg(device, epochs)
        torch.manual_seed(0)
        model = VAE(cfg.model)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fit(model, splits, cfg, None, progress=False)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(x.message).lower() for x in w))
    steps = 20_000 // 256 + 1
    per_epoch = (counts[1] - counts[0]) / 2
    ok = per_epoch < steps / 4
    return ok, (
        f"synchronising calls: {counts[0]} for 1 epoch, {counts[1]} for 3 epochs -> {per_epoch:.0f} per "
        f"epoch of {steps} steps (validation and metrics only if this is far below the step count)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    splits = load_splits(DataConfig(dataset="mnist", limit=20_000, binarize="dynamic"))
    failed = 0
    for name, fn in (
        ("step equals CPU", lambda: check_step(device)),
        ("fit + resume", lambda: check_fit_and_resume(device, splits)),
        ("no per-step sync", lambda: check_no_sync(device, splits)),
    ):
        try:
            ok, msg = fn()
        except Exception as e:  # report and go on: one call of a lent GPU must say as much as it can
            ok, msg = False, f"{type(e).__name__}: {e}"
        failed += not ok
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {msg}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

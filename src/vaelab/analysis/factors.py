"""A trained model against the ground-truth factors of its data: the disentanglement metrics of its
codes (`vaelab disentangle RUN` writes them to RUN/disentanglement.json) and its latent traversals.

The codes are the posterior means, encode_mean(x) (B, D), as in disentanglement_lib. The metrics
themselves are in :mod:`vaelab.analysis.disentanglement` and take plain arrays.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaelab.analysis import disentanglement as dis
from vaelab.data import DataSplits, ImageData, iter_batches, to_float
from vaelab.errors import ConfigError
from vaelab.evaluation.estimates import encode_means
from vaelab.maths import gaussian_kl
from vaelab.models import BaseVAE

REPORT = "disentanglement.json"

logger = logging.getLogger(__name__)
TRAVERSAL_RANGE = 3.0  # traversals sweep each dimension over [-3, 3], the bulk of the N(0, 1) prior


@torch.no_grad()
def kl_per_dimension(model: BaseVAE, data: ImageData, limit: int = 1000, batch_size: int = 500) -> np.ndarray:
    """Average KL(q(z_d|x) || N(0, 1)) of each latent dimension over the first `limit` images, (D,)
    nats: how much each dimension is used (a collapsed one is near 0)."""
    model.eval()
    total, seen = None, 0
    for xb, _ in iter_batches(data, batch_size):
        if seen >= limit:
            break
        x = to_float(xb[: limit - seen].to(model.device))
        loc, logvar = model.encode(x)
        kl = gaussian_kl(loc[..., None], logvar[..., None]).sum(0).double().cpu()  # (D,)
        total = kl if total is None else total + kl
        seen += len(x)
    assert total is not None
    return (total / seen).numpy()


@torch.no_grad()
def traversals(
    model: BaseVAE, x: Tensor, steps: int = 10, span: float = TRAVERSAL_RANGE, order: np.ndarray | None = None
) -> tuple[Tensor, Tensor, np.ndarray]:
    """Decode, for each latent dimension d, the code of image x (C, H, W) with z_d swept over
    `steps` values from -span to span, the other dimensions kept.

    Returns (images (D, steps, C, H, W) pixel means in [0, 1], values (steps,), the dimensions in the
    order of the rows: `order`, default 0..D-1).
    """
    if steps < 2:
        raise ConfigError(f"traversal steps {steps}: give at least 2")
    if not span > 0:
        raise ConfigError(f"traversal span {span}: give a positive number (the sweep is -span..span)")
    model.eval()
    z = model.encode_mean(x[None].to(model.device))[0]  # (D,)
    order = np.arange(len(z)) if order is None else np.asarray(order)
    values = torch.linspace(-span, span, steps, device=z.device, dtype=z.dtype)
    grid = z.repeat(len(order), steps, 1)  # (rows, steps, D)
    for row, dim in enumerate(order):
        grid[row, :, int(dim)] = values
    return model.decode(grid), values.cpu(), order


def traversal_order(model: BaseVAE, data: ImageData, limit: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The latent dimensions by average KL, largest first, and those KLs (D,) nats."""
    kl = kl_per_dimension(model, data, limit)
    return np.argsort(-kl, kind="stable"), kl


@dataclass(frozen=True)
class DisentanglementReport:
    """The standard metrics of a model's codes against its data's factors (disentanglement.json)."""

    split: str
    points: int
    factor_names: tuple[str, ...]
    mig: float
    sap: float
    dci_disentanglement: float
    dci_completeness: float
    dci_informativeness: float  # the classifiers' mean test accuracy
    beta_vae_score: float  # eval accuracy
    factor_vae_score: float  # eval accuracy
    active_dims: int  # dimensions the FactorVAE score keeps (standard deviation >= 0.05)
    kl_per_dim: list[float]  # average KL of each dimension, nats
    reconstruction_nats: float | None  # -E_q[log p(x|z)] on the test split, from training's end
    seconds: dict[str, float] = field(default_factory=dict)  # each metric's time, and encoding's
    seed: int = 0
    mig_per_factor: dict[str, float] = field(default_factory=dict)  # each factor's gap; MIG is their mean

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def table(self) -> list[str]:
        """The lines `vaelab disentangle` prints: the images and factors, then each number."""
        rows = [
            ("MIG", self.mig),
            ("SAP", self.sap),
            ("DCI disentanglement", self.dci_disentanglement),
            ("DCI completeness", self.dci_completeness),
            ("DCI informativeness", self.dci_informativeness),
            ("beta-VAE score", self.beta_vae_score),
            ("FactorVAE score", self.factor_vae_score),
        ]
        lines = [f"{self.points} {self.split} images, factors {', '.join(self.factor_names)} (seed {self.seed})"]
        lines += [f"  {name:<22}{value:.3f}" for name, value in rows]
        if self.mig_per_factor:
            each = ", ".join(f"{name} {value:.3f}" for name, value in self.mig_per_factor.items())
            lines.insert(2, f"  {'  per factor':<22}{each}")
        lines.append(f"  {'active dimensions':<22}{self.active_dims} of {len(self.kl_per_dim)}")
        if self.reconstruction_nats is not None:
            lines.append(f"  {'reconstruction':<22}{self.reconstruction_nats:.2f} nats (test, -E_q log p(x|z))")
        return lines


def measure(
    model: BaseVAE,
    splits: DataSplits,
    split: str = "test",
    points: int = 10_000,
    seed: int = 0,
    reconstruction_nats: float | None = None,
) -> DisentanglementReport:
    """Every metric of :mod:`vaelab.analysis.disentanglement` on the posterior means of the first `points`
    images of `split`, each with its disentanglement_lib protocol and `seed`."""
    data: ImageData = getattr(splits, split)
    if data.factors is None or not splits.factor_names:
        raise ConfigError(
            f"{splits.name} has no ground-truth factors: disentanglement needs data that has them "
            f"(--dataset shapes2d, or dsprites with --data-dir)"
        )
    if points < 2:
        raise ConfigError(f"--points {points}: give at least 2 (disentanglement_lib's protocol uses 10,000)")
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    codes = encode_means(model, data, points, batch_size=500).astype(np.float32, copy=False)
    factors = data.factors[: len(codes)]
    seconds["encode"] = time.perf_counter() - t

    # Each metric announces itself and its time on the module logger (INFO): DCI alone fits 2 x D
    # gradient-boosted classifiers and takes minutes on 10,000 points, which must not look like a hang.
    stages = {
        "mig": "MIG",
        "sap": "SAP",
        "dci": "DCI (gradient-boosted trees: the slow one, minutes on 10,000 points)",
        "beta_vae_score": "beta-VAE score",
        "factor_vae_score": "FactorVAE score",
    }
    logger.info("[1/%d] encoded %d images in %.1f s", len(stages) + 1, len(codes), seconds["encode"])

    def timed(name: str, fn: Any) -> Any:
        logger.info("[%d/%d] %s ...", list(stages).index(name) + 2, len(stages) + 1, stages[name])
        t0 = time.perf_counter()
        out = fn(codes, factors, seed=seed)
        seconds[name] = time.perf_counter() - t0
        logger.info("      %s: %.1f s", name, seconds[name])
        return out

    per_factor = timed("mig", dis.mig_per_factor)
    sap = timed("sap", dis.sap)
    dci = timed("dci", dis.dci)
    beta = timed("beta_vae_score", dis.beta_vae_score)
    factor = timed("factor_vae_score", dis.factor_vae_score)
    _, kl = traversal_order(model, data)
    return DisentanglementReport(
        split=split,
        points=len(codes),
        factor_names=tuple(splits.factor_names),
        mig=float(np.mean(per_factor)),
        sap=sap,
        dci_disentanglement=dci["disentanglement"],
        dci_completeness=dci["completeness"],
        dci_informativeness=dci["informativeness_test"],
        beta_vae_score=beta["eval_accuracy"],
        factor_vae_score=factor["eval_accuracy"],
        active_dims=factor["num_active_dims"],
        kl_per_dim=[float(v) for v in kl],
        reconstruction_nats=reconstruction_nats,
        seconds=seconds,
        seed=seed,
        mig_per_factor={name: float(v) for name, v in zip(splits.factor_names, per_factor)},
    )


def measure_run(
    run_dir: str | Path,
    split: str = "test",
    points: int = 10_000,
    seed: int = 0,
    weights: str = "model.safetensors",
    device: str | torch.device = "cpu",
) -> DisentanglementReport:
    """`vaelab disentangle`: load a run, measure it (:func:`measure`) and write
    RUN/disentanglement.json (atomically; not into a shipped model's folder, whose file records its
    row). device: "auto", "cpu", "cuda", "mps" or a torch.device."""
    from vaelab.data import load_splits
    from vaelab.platform.device import resolve_device
    from vaelab.platform.storage import atomic_write_text
    from vaelab.run.checkpoint import load, read_config, read_state
    from vaelab.run.folder import is_shipped

    device = resolve_device(device) if isinstance(device, str) else device
    run = Path(run_dir)
    cfg = read_config(run)
    splits = load_splits(cfg.data)
    if not splits.factor_names:  # before loading the model: the error the user can act on
        raise ConfigError(
            f"{run}: its data ({cfg.data.dataset}) has no ground-truth factors; disentanglement needs "
            f"a dataset that has them (shapes2d, dsprites)"
        )
    model = load(run, weights=weights, device=device, cfg=cfg)
    test = read_state(run).get("test", {})
    rec = -float(test["log_px_z"]) if "log_px_z" in test else None
    report = measure(model, splits, split, points, seed, rec)
    if not is_shipped(run):
        atomic_write_text(run / REPORT, report.to_json())
    return report

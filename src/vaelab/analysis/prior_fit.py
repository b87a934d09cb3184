"""Fit a VQ-VAE's code prior (a causal transformer, vaelab.models.code_prior) on the code grids of
its training images, and write it into the run folder: `vaelab train-prior RUN`.

The training images are encoded once: grey images of a dynamically binarized run are binarized
once with `seed` (the encoder was trained on binary draws of them). The prior maximises the mean
log p(codes) by Adam, in nats per image; the validation split is encoded the same way and scored
each epoch. The weights go into model.safetensors, best.safetensors and the checkpoint (only the
`code_prior.` tensors change, so a resumed run keeps the fitted prior), and prior.json records the
settings and the curve.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.data import ImageData, iter_batches, to_float
from vaelab.errors import ConfigError

logger = logging.getLogger(__name__)
PRIOR_RECORD = "prior.json"


@dataclass(frozen=True)
class PriorFit:
    """What `fit_code_prior` did: nats per image (-log p(codes), lower is better) per epoch."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    train_nats: list[float]
    val_nats: list[float]
    uniform_nats: float  # -log p(codes) under the uniform prior, H' W' log K, for comparison
    seconds: float


@torch.no_grad()
def encode_codes(model: torch.nn.Module, data: ImageData, binarize_seed: int | None, batch_size: int = 500) -> Tensor:
    """The code grids (N, H', W') of `data`; binarized once with `binarize_seed` unless None."""
    g = None if binarize_seed is None else torch.Generator().manual_seed(binarize_seed)
    out = []
    model.eval()
    for xb, _ in iter_batches(data, batch_size):
        x = to_float(xb)
        if g is not None:
            x = (torch.rand(x.shape, generator=g) < x).to(x.dtype)
        out.append(model.codes(x.to(next(model.parameters()).device)).cpu())  # type: ignore[operator]
    return torch.cat(out)


def _mean_nats(prior: torch.nn.Module, codes: Tensor, batch_size: int) -> float:
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(codes), batch_size):
            total += -float(prior.log_prob(codes[i : i + batch_size]).double().sum())  # type: ignore[operator]
    return total / max(1, len(codes))


def fit_code_prior(
    model: torch.nn.Module,
    train: ImageData,
    val: ImageData,
    binarize: bool,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> PriorFit:
    """Train `model.code_prior` (in place) on the codes of `train`; returns the record."""
    prior = getattr(model, "code_prior", None)
    if prior is None:
        posterior = getattr(getattr(model, "cfg", None), "posterior", "?")
        raise ConfigError(
            f"train-prior fits the code prior of a VQ-VAE (posterior vq); this model's posterior is {posterior}, "
            f"whose prior is trained with it"
        )
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    t0 = time.monotonic()
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    train_codes = encode_codes(model, train, seed if binarize else None).to(device)
    val_codes = encode_codes(model, val, None).to(device)
    prior.trained.fill_(True)  # log_prob now uses the transformer
    prior.requires_grad_(True)
    prior.train()
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    uniform = prior.length * math.log(prior.num_codes)
    train_nats, val_nats = [], []
    for epoch in range(epochs):
        perm = torch.randperm(len(train_codes), generator=g).to(train_codes.device)
        total, seen = 0.0, 0
        for i in range(0, len(perm), batch_size):
            c = train_codes[perm[i : i + batch_size]].flatten(1)
            logits = prior.logits(c)
            loss = F.cross_entropy(logits.reshape(-1, prior.num_codes), c.reshape(-1), reduction="sum") / len(c)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(c)
            seen += len(c)
        prior.eval()
        train_nats.append(total / seen)
        val_nats.append(_mean_nats(prior, val_codes, 500))
        prior.train()
        if progress:
            logger.info(
                "prior epoch %d: train %.2f, val %.2f nats per image (uniform %.2f)",
                epoch + 1, train_nats[-1], val_nats[-1], uniform,
            )  # fmt: skip
    prior.requires_grad_(False)
    prior.eval()
    return PriorFit(epochs, lr, batch_size, seed, train_nats, val_nats, uniform, time.monotonic() - t0)


def write_prior(run_dir: Path, model: torch.nn.Module, record: PriorFit) -> None:
    """Put the fitted code prior into every weights file of the run, then write prior.json."""
    from vaelab.platform.storage import atomic_write_text
    from vaelab.run.checkpoint import replace_tensors

    prior = getattr(model, "code_prior")  # noqa: B009 (a VQ-VAE's; fit_code_prior checked it)
    tensors = {f"code_prior.{k}": v for k, v in prior.state_dict().items()}
    replace_tensors(run_dir, tensors)
    atomic_write_text(run_dir / PRIOR_RECORD, json.dumps(asdict(record), indent=2) + "\n")


def fit_run_prior(
    run_dir: str | Path,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> PriorFit:
    """`vaelab train-prior`: load a VQ-VAE's run folder and its data, :func:`fit_code_prior` on its
    training codes (binarized with `seed` for a dynamically binarized run) and :func:`write_prior`."""
    from vaelab.data import load_splits
    from vaelab.run.checkpoint import load_run
    from vaelab.run.folder import refuse_shipped

    refuse_shipped(run_dir, "fitting its code prior")
    model, cfg = load_run(run_dir, device)
    splits = load_splits(cfg.data)
    binarize = cfg.data.binarize == "dynamic"
    record = fit_code_prior(model, splits.train, splits.val, binarize, epochs, lr, batch_size, seed, progress)
    write_prior(Path(run_dir), model, record)
    return record

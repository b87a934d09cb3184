"""The estimates of an evaluation, each a function of a model and images: the importance-sampled
log-likelihood (Burda et al. 2016) in nats,

log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),

computed `chunk` importance samples of `batch` images per pass (the passes planned within
EvalConfig.memory_mb by :mod:`vaelab.evaluation.plan`); the one-draw ELBO terms; active units; code
perplexity; and :func:`encode_means`, the one loop that encodes a split to its posterior means (the
CLI's encode, the pictures, the explorer, the disentanglement metrics).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaelab import maths
from vaelab.config import EvalConfig
from vaelab.data import ImageData, iter_batches, to_float
from vaelab.errors import NotADensity
from vaelab.evaluation.plan import ENCODE_BATCH, PassPlan, plan_passes
from vaelab.evaluation.records import density_note
from vaelab.models import BaseVAE as VAE


@dataclass(frozen=True)
class LikelihoodEstimate:
    """Mean NLL (positive, nats per image) with its standard error over images, from K samples."""

    nll: float
    nll_stderr: float
    num_samples: int  # K
    num_images: int
    per_image: Tensor = field(repr=False)  # (N,) float64 log p(x) estimates, nats (negative)


# -- the estimates --------------------------------------------------------------------------


@torch.no_grad()
def log_weights(
    model: VAE,
    x: Tensor,
    k: int,
    generator: torch.Generator | None = None,
    y: Tensor | None = None,
) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for K draws z_k ~ q(z|x): the model's
    answer (vaelab.models.Draws), whatever its prior, posterior or layers.

    x: (B, C, H, W). Returns (K, B) nats.
    """
    dtype = next(model.parameters()).dtype
    eps = torch.randn((k, x.shape[0], model.noise_dim), generator=generator, device=x.device, dtype=dtype)
    return model(x, y, eps).log_w


@torch.no_grad()
def log_likelihood_batch(
    model: VAE, x: Tensor, k: int, chunk: int = 500, generator: torch.Generator | None = None, y: Tensor | None = None
) -> Tensor:
    """Importance-sampled log p(x) of each image, (B,) nats, from K samples drawn `chunk` at a time.

    Each pass encodes the B images and decodes chunk * B latents, which bounds memory.
    """
    log_w = torch.empty((k, x.shape[0]), device=x.device, dtype=next(model.parameters()).dtype)  # (K, B)
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        log_w[start : start + n] = log_weights(model, x, n, generator, y)
    return maths.iwae_bound(log_w)


def labels_for(model: VAE, yb: Tensor | None) -> Tensor | None:
    """The labels `model` takes with a batch: yb (B,) on the model's device for a conditional model,
    None for an unconditional one or for data without labels."""
    return yb.to(model.device) if (yb is not None and model.cfg.num_classes) else None


@torch.no_grad()
def encode_means(model: VAE, data: ImageData, limit: int | None = None, batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """Posterior means (N, D) of the first `limit` images of `data` (all of them by default), in the
    model's dtype: encode_mean(x, y), a flow's image of its base mean, a VQ-VAE's quantised code.
    A conditional model is given each image's label. `batch_size` images per pass."""
    return _encode(model, data, limit, batch_size, logvar=False)[0]


@torch.no_grad()
def encode_posteriors(
    model: VAE, data: ImageData, limit: int | None = None, batch_size: int = ENCODE_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`encode_means` and the log-variances of q(z|x) (a flow's base Gaussian): two (N, D)."""
    means, logvars = _encode(model, data, limit, batch_size, logvar=True)
    assert logvars is not None
    return means, logvars


def _encode(
    model: VAE, data: ImageData, limit: int | None, batch_size: int, logvar: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    model.eval()
    locs, logvars = [], []
    seen = 0
    for xb, yb in iter_batches(data, batch_size):
        if limit is not None and seen >= limit:
            break
        x, y = to_float(xb.to(model.device)), labels_for(model, yb)
        locs.append(model.encode_mean(x, y).cpu().numpy())
        if logvar:
            logvars.append(model.encode(x, y)[1].cpu().numpy())
        seen += len(xb)
    n = seen if limit is None else min(seen, limit)
    return np.concatenate(locs)[:n], np.concatenate(logvars)[:n] if logvar else None


def _progress(enabled: bool, total: int, desc: str) -> Any:
    """A tqdm bar on stderr (images done / total, rate, ETA), or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True, leave=False, smoothing=0.1)


@torch.no_grad()
def log_likelihood(
    model: VAE,
    data: ImageData,
    cfg: EvalConfig = EvalConfig(),
    plan: PassPlan | None = None,
    progress: bool = False,
    binary: bool | None = None,
) -> LikelihoodEstimate:
    """Importance-sampled log-likelihood of every image in `data`, with K = cfg.k samples each.

    Pixels are used as stored. Returns the mean NLL in nats per image (positive), its standard
    error over images, and the per-image log p(x) estimates (N,). The passes are those of
    `plan` (default: :func:`plan_passes`, within cfg.memory_mb). progress: a bar on stderr.
    binary: whether the pixels are binary, when the caller has checked already (a pass over `data`).

    Raises:
        NotADensity: when the model's likelihood is not a density of these pixels (a Bernoulli on
            grey pixels, a continuous density on binary ones): importance sampling would then
            estimate a score, not log p(x). Binarize the data, or call :func:`evaluate`, which
            reports the ELBO and says why there is no NLL.
        ConfigError: when one image with one latent does not fit in cfg.memory_mb.
    """
    binary = is_binary(data) if binary is None else binary
    lik = model.likelihood
    if not (lik.density_of_binary if binary else lik.density_of_grey):
        fix = "grey pixels" if binary else "binary pixels (--binarize dynamic, DataConfig(binarize='dynamic'))"
        raise NotADensity(
            f"log_likelihood: {density_note(model.cfg.likelihood, binary, False)}. Evaluate "
            f"on {fix}, or use vaelab.evaluate(), which reports the ELBO and this reason"
        )
    was_training = model.training
    model.eval()
    device = model.device
    k = 1 if model.deterministic_posterior else cfg.k  # a point-mass q: every draw is the same
    plan = plan_passes(model, cfg, k) if plan is None else plan
    g = torch.Generator(device).manual_seed(cfg.seed)
    bar = _progress(progress, len(data), f"log p(x), k={k}")
    out = []
    for xb, yb in iter_batches(data, plan.batch_size):
        x = to_float(xb.to(device))  # (B, C, H, W) in [0, 1]
        out.append(log_likelihood_batch(model, x, k, plan.chunk, g, labels_for(model, yb)).double().cpu())
        if bar is not None:
            bar.update(len(xb))
    if bar is not None:
        bar.close()
    model.train(was_training)
    lp = torch.cat(out)
    return LikelihoodEstimate(
        nll=-float(lp.mean()), nll_stderr=standard_error(lp), num_samples=k, num_images=len(lp), per_image=lp
    )


@torch.no_grad()
def code_perplexity(model: VAE, data: ImageData, batch_size: int = 1000) -> float | None:
    """exp(entropy) of how often each code is used over `data`: between 1 and the codebook size
    (every code equally often). None for a model without a codebook."""
    model.eval()
    total: Tensor | None = None
    for xb, _ in iter_batches(data, batch_size):
        counts = model.code_counts(to_float(xb.to(model.device)))
        if counts is None:
            return None
        total = counts.double().cpu() if total is None else total + counts.double().cpu()
    if total is None:
        return None
    p = total / total.sum()
    return float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))


def standard_error(v: Tensor) -> float:
    """Standard error of the mean over images: sd / sqrt(N) (NaN for one image)."""
    return float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def is_binary(data: ImageData, batch_size: int | None = None) -> bool:
    """True when every pixel of `data` is 0 or 255 (i.e. 0 or 1 after scaling). Reads ~16M pixels
    at a time unless batch_size says otherwise."""
    if batch_size is None:
        batch_size = max(1, (1 << 24) // max(1, math.prod(data.shape)))
    for xb, _ in iter_batches(data, batch_size):
        if not bool(((xb == 0) | (xb == 255)).all()):
            return False
    return True


@torch.no_grad()
def active_units(model: VAE, data: ImageData, threshold: float = 0.01, batch_size: int = 1000) -> int:
    """Burda et al. 2016, sec. 5.2: unit d is active if Var_x(E_q[z_d | x]) > threshold, over `data`."""
    mu = torch.from_numpy(encode_means(model, data, batch_size=batch_size)).double()  # (N, D)
    return int((mu.var(0, unbiased=True) > threshold).sum()) if len(mu) > 1 else 0


@torch.no_grad()
def elbo_batches(
    model: VAE, data: ImageData, batch_size: int, seed: int, shard: tuple[int, int] = (0, 1)
) -> Iterator[Any]:
    """The one-draw ELBO terms (ElboTerms: elbo, log_px_z, kl, each (b,) nats) of each batch of `data`,
    with fixed noise from `seed`, in the model's current mode: the one copy of this loop, for
    evaluation (:func:`elbo_terms`) and for fit's validation and test ELBO.

    shard (rank, world): this process's batches of a pass split over processes; the noise of the
    others' batches is drawn and discarded, so N processes use the noise of one.
    """
    g = torch.Generator(model.device).manual_seed(seed)
    rank, world = shard
    dtype = next(model.parameters()).dtype
    for i, start in enumerate(range(0, len(data), batch_size)):
        if i % world != rank:
            size = min(batch_size, len(data) - start)
            torch.randn((1, size, model.noise_dim), generator=g, device=model.device, dtype=dtype)
            continue
        xb, yb = data.batch(slice(start, start + batch_size))
        yield model.elbo(to_float(xb.to(model.device, non_blocking=True)), labels_for(model, yb), generator=g)


def elbo_terms(model: VAE, data: ImageData, batch_size: int = 100, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image one-sample ELBO, E_q[log p(x|z)] and KL over `data`: three (N,) float64 tensors, nats."""
    model.eval()
    elbos, recs, kls = [], [], []
    for t in elbo_batches(model, data, batch_size, seed):
        elbos.append(t.elbo.double().cpu())
        recs.append(t.log_px_z.double().cpu())
        kls.append(t.kl.double().cpu())
    return torch.cat(elbos), torch.cat(recs), torch.cat(kls)


@torch.no_grad()
def kl_is_closed_form(model: VAE) -> bool:
    """Whether the model's KL(q(z|x) || p(z)) is in closed form (Draws.kl: a Gaussian posterior with
    the N(0, I) prior, a categorical with the uniform prior, a VQ-VAE's point mass) rather than the
    one-draw estimate log q(z|x) - log p(z) (VampPrior, mixture prior, flows, hierarchies)."""
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    x = torch.zeros((1, *model.cfg.input_shape), device=model.device, dtype=dtype)
    y = torch.zeros(1, dtype=torch.long, device=model.device) if model.cfg.num_classes else None
    eps = torch.zeros((1, 1, model.noise_dim), device=model.device, dtype=dtype)
    closed = model(x, y, eps).kl is not None
    model.train(was_training)
    return closed

"""Evaluation the way papers do it: importance-sampled log-likelihood (Burda et al. 2016) in nats.

log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),

computed in chunks of importance samples so that memory stays at batch * chunk * pixels floats
however large K is. The estimate is a stochastic lower bound on log p(x) that tightens with K.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from vaelab import objectives as obj
from vaelab.config import EvalConfig
from vaelab.data import ImageData, iter_batches, to_float
from vaelab.models import VAE


@dataclass(frozen=True)
class LikelihoodEstimate:
    """Mean NLL (positive, nats per image) with its standard error over images, from K samples."""

    nll: float
    nll_stderr: float
    num_samples: int  # K
    num_images: int
    per_image: Tensor  # (N,) log p(x) estimates, nats (negative)


@dataclass(frozen=True)
class EvalReport:
    """Everything `vaelab eval` prints and writes to eval.json (nats per image unless named)."""

    nll: float | None  # None when the likelihood is not a density of the evaluated pixels
    nll_stderr: float | None
    elbo: float
    elbo_stderr: float
    log_px_z: float
    kl: float
    bpd: float | None  # bits per dimension of the NLL
    active_units: int
    latent_dim: int
    k: int
    pixels: str  # none | dynamic | static: how the evaluated pixels were made
    likelihood: str
    is_density: bool
    split: str
    num_images: int
    seconds: float
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@torch.no_grad()
def log_weights(model: VAE, x: Tensor, k: int, generator: torch.Generator | None = None, y: Tensor | None = None) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for K draws z_k ~ q(z|x). x: (B, C, H, W). Returns (K, B)."""
    loc, logvar = model.encode(x, y)
    eps = torch.randn((k, *loc.shape), generator=generator, device=loc.device, dtype=loc.dtype)
    z = obj.reparameterize(loc, logvar, eps)  # (K, B, D)
    log_px_z = model.log_px_z(x, model.decode_params(z, y))  # (K, B)
    return obj.log_importance_weights(log_px_z, z, loc, logvar)


@torch.no_grad()
def log_likelihood_batch(
    model: VAE, x: Tensor, k: int, chunk: int = 500, generator: torch.Generator | None = None, y: Tensor | None = None
) -> Tensor:
    """Importance-sampled log p(x) of each image, (B,) nats, from K samples drawn `chunk` at a time."""
    parts = [log_weights(model, x, min(chunk, k - start), generator, y) for start in range(0, k, chunk)]
    return obj.iwae_bound(torch.cat(parts, 0))


@torch.no_grad()
def log_likelihood(model: VAE, data: ImageData, cfg: EvalConfig = EvalConfig()) -> LikelihoodEstimate:
    """Importance-sampled log-likelihood of every image in `data` (pixels as stored: binarize first
    when the model's likelihood is for binary pixels)."""
    model.eval()
    device = model.device
    g = torch.Generator(device).manual_seed(cfg.seed)
    out = []
    for xb, yb in iter_batches(data, cfg.batch_size):
        x = to_float(xb.to(device))
        y = yb.to(device) if (yb is not None and model.cfg.num_classes) else None
        out.append(log_likelihood_batch(model, x, cfg.k, cfg.chunk, g, y).double().cpu())
    lp = torch.cat(out)
    return LikelihoodEstimate(nll=-float(lp.mean()), nll_stderr=_stderr(lp), num_samples=cfg.k,
                              num_images=len(lp), per_image=lp)


def _stderr(v: Tensor) -> float:
    return float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


@torch.no_grad()
def active_units(model: VAE, data: ImageData, threshold: float = 0.01, batch_size: int = 1000) -> int:
    """Burda et al. 2016, sec. 5.2: unit d is active if Cov_x(E_q[z_d | x]) > threshold."""
    model.eval()
    means = []
    for xb, yb in iter_batches(data, batch_size):
        y = yb.to(model.device) if (yb is not None and model.cfg.num_classes) else None
        means.append(model.encode_mean(to_float(xb.to(model.device)), y).double().cpu())
    mu = torch.cat(means)
    return int((mu.var(0, unbiased=True) > threshold).sum()) if len(mu) > 1 else 0


@torch.no_grad()
def evaluate(model: VAE, data: ImageData, cfg: EvalConfig, pixels: str) -> EvalReport:
    """ELBO and parts, importance-sampled NLL, bits/dim and active units of `model` on `data`."""
    t0 = time.monotonic()
    model.eval()
    g = torch.Generator(model.device).manual_seed(cfg.seed)
    elbos, recs, kls = [], [], []
    for xb, yb in iter_batches(data, cfg.batch_size):
        x = to_float(xb.to(model.device))
        y = yb.to(model.device) if (yb is not None and model.cfg.num_classes) else None
        t = model.elbo(x, y, generator=g)
        elbos.append(t.elbo.double().cpu()); recs.append(t.log_px_z.double().cpu()); kls.append(t.kl.double().cpu())
    elbo = torch.cat(elbos)
    lik = model.likelihood
    binary = pixels in ("dynamic", "static")
    is_density = lik.density_of_binary if binary else lik.density_of_grey
    note = ""
    if is_density:
        est = log_likelihood(model, data, cfg)
        nll, se = est.nll, est.nll_stderr
        bpd = float(obj.bits_per_dim(nll, model.cfg.num_pixels))
    else:
        nll = se = bpd = None
        note = (f"{model.cfg.likelihood} likelihood on {'binary' if binary else 'grey'} pixels is not a "
                f"density of the data: the ELBO is a cross-entropy score, and no NLL is reported")
    return EvalReport(
        nll=nll, nll_stderr=se, elbo=float(elbo.mean()), elbo_stderr=_stderr(elbo),
        log_px_z=float(torch.cat(recs).mean()), kl=float(torch.cat(kls).mean()), bpd=bpd,
        active_units=active_units(model, data), latent_dim=model.cfg.latent_dim, k=cfg.k, pixels=pixels,
        likelihood=model.cfg.likelihood, is_density=is_density, split=cfg.split, num_images=len(elbo),
        seconds=time.monotonic() - t0, note=note,
    )

"""Evaluation the way papers do it: importance-sampled log-likelihood (Burda et al. 2016) in nats.

log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),

computed `chunk` importance samples at a time, so that memory stays at about
batch * chunk * (pixels * params + 2 * hidden) floats however large K is (the (K, B) table of
log-weights itself is small). The estimate is a stochastic lower bound on log p(x) that tightens
with K (in expectation); its mean over images is reported as a positive NLL with the standard error
of that mean over images.

Whether an NLL may be reported at all depends on the pixels: a Bernoulli likelihood is a
probability of binary pixels, and on grey pixels its "log-likelihood" is a cross-entropy, not the
log of anything that sums to one; continuous likelihoods are densities of grey pixels in [0, 1].
:func:`evaluate` looks at the pixels it is given and reports no NLL when the two do not match.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from vaelab import objectives as obj
from vaelab.config import EvalConfig
from vaelab.data import ImageData, iter_batches, to_float
from vaelab.errors import NotADensity
from vaelab.models import BaseVAE as VAE


@dataclass(frozen=True)
class LikelihoodEstimate:
    """Mean NLL (positive, nats per image) with its standard error over images, from K samples."""

    nll: float
    nll_stderr: float
    num_samples: int  # K
    num_images: int
    per_image: Tensor = field(repr=False)  # (N,) float64 log p(x) estimates, nats (negative)


@dataclass(frozen=True)
class EvalReport:
    """Everything `vaelab eval` prints and writes to eval.json (nats per image unless named)."""

    nll: float | None  # -mean log p(x) (positive); None when the likelihood is not a density of the pixels
    nll_stderr: float | None  # standard error of that mean over images (sd / sqrt(N))
    elbo: float  # mean one-sample ELBO, higher is better (so elbo <= -nll up to noise)
    elbo_stderr: float
    log_px_z: float  # mean E_q[log p(x|z)] (one sample), the reconstruction part of the ELBO
    kl: float  # mean KL(q(z|x) || p(z)): closed form where one exists, else one draw; elbo = log_px_z - kl
    bpd: float | None  # nll / (pixels * ln 2), for discrete (binary) pixels only
    active_units: int  # Burda et al.: Var_x(E_q[z_d|x]) > 0.01
    latent_dim: int  # the size of the flat latent z (D * H' * W' for a VQ-VAE's grid)
    k: int  # importance samples per image
    pixels: str  # none | dynamic | static: how the evaluated pixels were made (from the run config)
    binary_pixels: bool  # every evaluated pixel is 0 or 1 (checked on the data)
    likelihood: str
    is_density: bool  # the likelihood is a probability/density of these pixels: nll is meaningful
    split: str
    num_images: int
    seconds: float
    note: str = ""  # why no NLL (or no bpd) is reported, or that it is a bound, when that is the case
    nll_is_bound: bool = False  # nll is the deterministic bound -log p(x|z_q) - log p(z_q) (VQ-VAE), not an estimate
    perplexity: float | None = None  # exp(entropy of the code usage) over the images (models with a codebook)
    per_image: Tensor | None = field(default=None, repr=False, compare=False)  # (N,) log p(x), nats

    def to_dict(self) -> dict[str, object]:
        """The JSON-able fields (everything but per_image)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "per_image"}


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
    return obj.iwae_bound(log_w)


def _labels(model: VAE, yb: Tensor | None) -> Tensor | None:
    return yb.to(model.device) if (yb is not None and model.cfg.num_classes) else None


@torch.no_grad()
def log_likelihood(model: VAE, data: ImageData, cfg: EvalConfig = EvalConfig()) -> LikelihoodEstimate:
    """Importance-sampled log-likelihood of every image in `data`, with K = cfg.k samples each.

    Pixels are used as stored. Returns the mean NLL in nats per image (positive), its standard
    error over images, and the per-image log p(x) estimates (N,).

    Raises:
        NotADensity: when the model's likelihood is not a density of these pixels (a Bernoulli on
            grey pixels, a continuous density on binary ones): importance sampling would then
            estimate a score, not log p(x). Binarize the data, or call :func:`evaluate`, which
            reports the ELBO and says why there is no NLL.
    """
    binary = is_binary(data)
    lik = model.likelihood
    if not (lik.density_of_binary if binary else lik.density_of_grey):
        fix = "grey pixels" if binary else "binary pixels (--binarize dynamic, DataConfig(binarize='dynamic'))"
        raise NotADensity(
            f"log_likelihood: {_density_note(model.cfg.likelihood, binary, False)}. Evaluate "
            f"on {fix}, or use vaelab.evaluate(), which reports the ELBO and this reason"
        )
    was_training = model.training
    model.eval()
    device = model.device
    g = torch.Generator(device).manual_seed(cfg.seed)
    k = 1 if model.deterministic_posterior else cfg.k  # a point-mass q: every draw is the same
    out = []
    for xb, yb in iter_batches(data, cfg.batch_size):
        x = to_float(xb.to(device))  # (B, C, H, W) in [0, 1]
        out.append(log_likelihood_batch(model, x, k, cfg.chunk, g, _labels(model, yb)).double().cpu())
    model.train(was_training)
    lp = torch.cat(out)
    return LikelihoodEstimate(
        nll=-float(lp.mean()), nll_stderr=_stderr(lp), num_samples=k, num_images=len(lp), per_image=lp
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


def _stderr(v: Tensor) -> float:
    """Standard error of the mean over images: sd / sqrt(N) (NaN for one image)."""
    return float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def is_binary(data: ImageData, batch_size: int = 10_000) -> bool:
    """True when every pixel of `data` is 0 or 255 (i.e. 0 or 1 after scaling)."""
    for xb, _ in iter_batches(data, batch_size):
        if not bool(((xb == 0) | (xb == 255)).all()):
            return False
    return True


@torch.no_grad()
def active_units(model: VAE, data: ImageData, threshold: float = 0.01, batch_size: int = 1000) -> int:
    """Burda et al. 2016, sec. 5.2: unit d is active if Var_x(E_q[z_d | x]) > threshold, over `data`."""
    model.eval()
    means = []
    for xb, yb in iter_batches(data, batch_size):
        means.append(model.encode_mean(to_float(xb.to(model.device)), _labels(model, yb)).double().cpu())
    mu = torch.cat(means)  # (N, D)
    return int((mu.var(0, unbiased=True) > threshold).sum()) if len(mu) > 1 else 0


@torch.no_grad()
def elbo_terms(model: VAE, data: ImageData, batch_size: int = 100, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image one-sample ELBO, E_q[log p(x|z)] and KL over `data`: three (N,) float64 tensors, nats."""
    model.eval()
    g = torch.Generator(model.device).manual_seed(seed)
    elbos, recs, kls = [], [], []
    for xb, yb in iter_batches(data, batch_size):
        t = model.elbo(to_float(xb.to(model.device)), _labels(model, yb), generator=g)
        elbos.append(t.elbo.double().cpu())
        recs.append(t.log_px_z.double().cpu())
        kls.append(t.kl.double().cpu())
    return torch.cat(elbos), torch.cat(recs), torch.cat(kls)


def _density_note(likelihood: str, binary: bool, is_density: bool, eight_bit: bool = False) -> str:
    if eight_bit:
        return ""  # a probability of the 8-bit values: the NLL and bits/dim are discrete, for any pixels
    if not is_density:
        kind = "binary" if binary else "grey"
        return (
            f"{likelihood} likelihood on {kind} pixels is not a density of the data: the ELBO is "
            f"a score, not a bound on a log-likelihood, and no NLL is reported"
        )
    if not binary:
        return (
            f"{likelihood} is a density of grey pixels in [0, 1] (no dequantisation): the NLL can be "
            f"negative and is not comparable with discrete NLLs or bits/dim, so no bpd is reported"
        )
    return ""


@torch.no_grad()
def evaluate(model: VAE, data: ImageData, cfg: EvalConfig, pixels: str) -> EvalReport:
    """ELBO and parts, importance-sampled NLL, bits/dim and active units of `model` on `data`.

    `pixels` records how the data were binarized (none | dynamic | static); whether the pixels are
    binary is checked on `data` itself, and decides (with the likelihood) whether an NLL exists.
    """
    t0 = time.monotonic()
    model.eval()
    elbo, rec, kl = elbo_terms(model, data, cfg.batch_size, cfg.seed)
    lik = model.likelihood
    binary = is_binary(data)
    is_density = lik.density_of_binary if binary else lik.density_of_grey
    nll = se = bpd = per_image = None
    if is_density:
        est = log_likelihood(model, data, cfg)
        nll, se, per_image = est.nll, est.nll_stderr, est.per_image
        if binary or lik.eight_bit:  # a probability of discrete values: bits per dimension
            bpd = float(obj.bits_per_dim(nll, model.cfg.num_pixels))
    bound = is_density and model.deterministic_posterior
    note = _density_note(model.cfg.likelihood, binary, is_density, lik.eight_bit)
    if bound:
        note = model.bound_note + (f"; {note}" if note else "")
    return EvalReport(
        nll=nll,
        nll_stderr=se,
        elbo=float(elbo.mean()),
        elbo_stderr=_stderr(elbo),
        log_px_z=float(rec.mean()),
        kl=float(kl.mean()),
        bpd=bpd,
        active_units=active_units(model, data),
        latent_dim=model.latent_size,
        k=1 if model.deterministic_posterior else cfg.k,
        pixels=pixels,
        binary_pixels=binary,
        likelihood=model.cfg.likelihood,
        is_density=is_density,
        split=cfg.split,
        num_images=len(elbo),
        seconds=time.monotonic() - t0,
        note=note,
        nll_is_bound=bound,
        perplexity=code_perplexity(model, data),
        per_image=per_image,
    )

"""Evaluation the way papers do it: importance-sampled log-likelihood (Burda et al. 2016) in nats.

log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),

computed `chunk` importance samples of `batch` images per pass. What one decoded latent costs
(its decoder activations and the likelihood's temporaries: ~7 KB for MNIST's MLP, ~9.5 MB for the
celeba64 ResNet) is measured on a tiny probe before the pass (:func:`plan_passes`), and batch, then
chunk, shrink until a pass fits `EvalConfig.memory_mb`, however large K is (the (K, B) table of
log-weights itself is small). The estimate is a stochastic lower bound on log p(x) that tightens
with K (in expectation); its mean over images is reported as a positive NLL with the standard error
of that mean over images.

Whether an NLL may be reported at all depends on the pixels: a Bernoulli likelihood is a
probability of binary pixels, and on grey pixels its "log-likelihood" is a cross-entropy, not the
log of anything that sums to one; continuous likelihoods are densities of grey pixels in [0, 1].
:func:`evaluate` looks at the pixels it is given and reports no NLL when the two do not match.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vaelab import maths
from vaelab.config import EvalConfig
from vaelab.data import ImageData, iter_batches, to_float
from vaelab.errors import ConfigError, NotADensity
from vaelab.models import BaseVAE as VAE

logger = logging.getLogger(__name__)

EVAL_JSON = "eval.json"
MB = 1 << 20
# The probe counts the tensors torch's operators allocate, not the scratch buffers inside kernels
# (a convolution's im2col, oneDNN's workspace) or the allocator's slack: the plan budgets this much
# more than it counted. Measured with it, the peak RSS of `vaelab eval` on the cifar and celeba64
# presets was the ~0.4 GB of the process before the first pass plus 0.98-1.0 GB of the 1 GB budget.
SAFETY = 1.25
ENCODE_BATCH = 1000  # images per pass of the encoder alone (active units, code perplexity), at most


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
    kl_sampled: bool = (
        False  # kl is the one-draw estimate log q(z|x) - log p(z): no closed form (VampPrior, mixture, flows)
    )
    batch_size: int = 0  # images per pass of the NLL, as planned within memory_mb
    chunk: int = 0  # importance samples per pass of the NLL, as planned
    memory_mb: int = 0  # the working-memory budget the passes were planned for, MB
    per_image: Tensor | None = field(default=None, repr=False, compare=False)  # (N,) log p(x), nats

    def to_dict(self) -> dict[str, object]:
        """The JSON-able fields (everything but per_image)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "per_image"}


# -- memory: what a pass costs, measured on a probe, and the passes that fit -------------------


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the storages torch's operators allocate inside the `with` block, and the
    peak of those alive at once. Deterministic: it counts tensors, not the process's memory."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._counted: set[int] = set()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing is compiled inside the probe: spare the ~1.5 s import of torch._dynamo

    def _freed(self, key: int, nbytes: int) -> None:
        self._counted.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, Tensor):
                continue
            st = t.untyped_storage()
            if st.data_ptr() in inputs or id(st) in self._counted:  # a view, or an in-place result
                continue
            self._counted.add(id(st))
            self.live += st.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(st, self._freed, id(st), st.nbytes())
        return out


def _probe_peak(fn: Any) -> int:
    """Peak bytes of the tensors that fn() allocates (its result freed before returning)."""
    with torch.no_grad(), _LiveBytes() as live:
        result = fn()
        del result
    return live.peak


@dataclass(frozen=True)
class PassCost:
    """What the passes of evaluation cost on one model, in bytes, measured by :func:`measure_pass_cost`:
    a pass of B images with K' importance samples each holds about
    fixed + B * (per_image + K' * per_latent) bytes of tensors at its peak."""

    per_latent: int  # one decoded latent: decoder activations, p(x|z)'s parameters and temporaries
    per_image: int  # one image beyond its latents: its slice of the encoder, q(z|x), the draws' noise
    fixed: int  # whatever does not grow with B or K' (a VampPrior's pseudo-inputs, a code prior)
    per_encoded: int  # one image through the encoder alone (active units, perplexity)

    def pass_bytes(self, batch: int, chunk: int) -> int:
        """Estimated peak of one NLL pass of `batch` images x `chunk` samples, SAFETY included."""
        return math.ceil(SAFETY * (self.fixed + batch * (self.per_image + self.per_encoded + chunk * self.per_latent)))


@torch.no_grad()
def measure_pass_cost(model: VAE) -> PassCost:
    """Count the bytes of the tensors one forward pass allocates, on blank probe images, for 1 and
    2 images with 2 and 4 draws each and the encoder alone for 2 and 4 images; fit them linearly.

    Exact for a given model and torch version (no timing, no RSS), so the plan, and with it the
    random draws of each pass, is reproducible. Draws from its own generator: the evaluation's
    random numbers are untouched."""
    was_training = model.training
    model.eval()
    device, dtype = model.device, next(model.parameters()).dtype
    shape = tuple(model.cfg.input_shape)

    def inputs(b: int) -> tuple[Tensor, Tensor | None]:
        x = torch.zeros((b, *shape), device=device, dtype=dtype)
        y = torch.zeros(b, dtype=torch.long, device=device) if model.cfg.num_classes else None
        return x, y

    def weights(b: int, n: int) -> int:
        x, y = inputs(b)
        return _probe_peak(lambda: log_weights(model, x, n, torch.Generator(device).manual_seed(0), y))

    def encoded(b: int) -> int:
        x, y = inputs(b)
        return _probe_peak(lambda: model.encode_mean(x, y))

    p12, p14, p22 = weights(1, 2), weights(1, 4), weights(2, 2)
    model.train(was_training)
    per_latent = max(0, (p14 - p12) // 2)
    per_image = max(0, p22 - p12 - 2 * per_latent)
    fixed = max(0, p12 - per_image - 2 * per_latent)
    per_encoded = max(0, (encoded(4) - encoded(2)) // 2)
    return PassCost(per_latent, per_image, fixed, per_encoded)


@dataclass(frozen=True)
class PassPlan:
    """How many images and importance samples go into one pass, so that each stays within
    EvalConfig.memory_mb (estimated from a :class:`PassCost`)."""

    batch_size: int  # images per pass of the importance-sampled NLL
    chunk: int  # importance samples per image and pass (K is drawn chunk at a time)
    elbo_batch_size: int  # images per pass of the one-sample ELBO
    encode_batch_size: int  # images per pass of the encoder alone (active units, perplexity)
    peak_mb: float  # the estimated peak of one NLL pass
    cost: PassCost


def plan_passes(model: VAE, cfg: EvalConfig, k: int | None = None, cost: PassCost | None = None) -> PassPlan:
    """The largest passes, up to cfg.batch_size images x cfg.chunk samples, whose estimated peak
    stays within cfg.memory_mb: fewer images first (the encoder runs once per chunk, so a long
    chunk amortises it), then fewer samples. The plan depends on K only while K < cfg.chunk.

    Raises:
        ConfigError: when even one image with one decoded latent does not fit; the message gives
            the memory_mb (--memory-mb) that would.
    """
    cost = measure_pass_cost(model) if cost is None else cost
    k = cfg.k if k is None else k
    budget = cfg.memory_mb * MB
    one = cost.pass_bytes(1, 1)
    if one > budget:
        need = math.ceil(one / MB)
        raise ConfigError(
            f"memory_mb {cfg.memory_mb}: one image with one decoded latent needs ~{need} MB on this model "
            f"({cost.per_latent / MB:.1f} MB per decoded latent); give at least --memory-mb {need} "
            f"(EvalConfig(memory_mb={need}))"
        )
    chunk = min(cfg.chunk, k)

    def most_images(c: int, cap: int) -> int:
        per = SAFETY * (cost.per_image + cost.per_encoded + c * cost.per_latent)
        b = max(0, min(cap, int((budget - SAFETY * cost.fixed) // max(per, 1))))
        while b > 0 and cost.pass_bytes(b, c) > budget:  # the rounding of pass_bytes' ceil
            b -= 1
        return b

    batch = most_images(chunk, cfg.batch_size)
    if batch == 0:  # one image with `chunk` samples is too much: fewer samples per pass
        batch = 1
        spare = budget / SAFETY - cost.fixed - cost.per_image - cost.per_encoded
        chunk = max(1, min(chunk, int(spare // max(cost.per_latent, 1))))
        while chunk > 1 and cost.pass_bytes(1, chunk) > budget:  # the rounding of SAFETY's ceil
            chunk -= 1
    encode_per = math.ceil(SAFETY * max(cost.per_encoded, 1))
    return PassPlan(
        batch_size=batch,
        chunk=chunk,
        elbo_batch_size=max(1, most_images(1, cfg.batch_size)),
        encode_batch_size=max(1, min(ENCODE_BATCH, (budget - math.ceil(SAFETY * cost.fixed)) // encode_per)),
        peak_mb=cost.pass_bytes(batch, chunk) / MB,
        cost=cost,
    )


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


def _labels(model: VAE, yb: Tensor | None) -> Tensor | None:
    return yb.to(model.device) if (yb is not None and model.cfg.num_classes) else None


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
            f"log_likelihood: {_density_note(model.cfg.likelihood, binary, False)}. Evaluate "
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
        out.append(log_likelihood_batch(model, x, k, plan.chunk, g, _labels(model, yb)).double().cpu())
        if bar is not None:
            bar.update(len(xb))
    if bar is not None:
        bar.close()
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
def evaluate(model: VAE, data: ImageData, cfg: EvalConfig, pixels: str, progress: bool = False) -> EvalReport:
    """ELBO and parts, importance-sampled NLL, bits/dim and active units of `model` on `data`.

    `pixels` records how the data were binarized (none | dynamic | static); whether the pixels are
    binary is checked on `data` itself, and decides (with the likelihood) whether an NLL exists.
    Every pass is planned within cfg.memory_mb (:func:`plan_passes`); progress: a bar on stderr
    while the NLL is estimated.

    Raises:
        ConfigError: when one image with one latent does not fit in cfg.memory_mb.
    """
    t0 = time.monotonic()
    model.eval()
    k = 1 if model.deterministic_posterior else cfg.k
    plan = plan_passes(model, cfg, k)
    elbo, rec, kl = elbo_terms(model, data, plan.elbo_batch_size, cfg.seed)
    lik = model.likelihood
    binary = is_binary(data)
    is_density = lik.density_of_binary if binary else lik.density_of_grey
    nll = se = bpd = per_image = None
    if is_density:
        est = log_likelihood(model, data, cfg, plan, progress, binary)
        nll, se, per_image = est.nll, est.nll_stderr, est.per_image
        if binary or lik.eight_bit:  # a probability of discrete values: bits per dimension
            bpd = float(maths.bits_per_dim(nll, model.cfg.num_pixels))
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
        active_units=active_units(model, data, batch_size=plan.encode_batch_size),
        latent_dim=model.latent_size,
        k=k,
        pixels=pixels,
        binary_pixels=binary,
        likelihood=model.cfg.likelihood,
        is_density=is_density,
        split=cfg.split,
        num_images=len(elbo),
        seconds=time.monotonic() - t0,
        note=note,
        nll_is_bound=bound,
        perplexity=code_perplexity(model, data, plan.encode_batch_size),
        kl_sampled=not kl_is_closed_form(model),
        batch_size=plan.batch_size,
        chunk=plan.chunk,
        memory_mb=cfg.memory_mb,
        per_image=per_image,
    )


# -- eval.json: the latest evaluation, and one record per (split, k, images, weights) ---------

EVAL_KEY = ("split", "k", "num_images", "weights")  # what makes two evaluations comparable


def evaluation_key(doc: dict[str, Any]) -> tuple[Any, ...]:
    """(split, k, num_images, weights) of one evaluation record of eval.json."""
    return tuple(doc.get(name) for name in EVAL_KEY)


def read_evaluations(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluation records of RUN/eval.json, oldest first (the last is the latest); [] when there
    is none or it is not readable. An eval.json written before the records existed is one record."""
    path = Path(run_dir) / EVAL_JSON
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        logger.warning("warning: %s is not readable JSON (%s); its evaluations are ignored", path, e)
        return []
    if not isinstance(doc, dict):
        return []
    records = doc.get("evaluations")
    if isinstance(records, list) and all(isinstance(r, dict) for r in records):
        return list(records)
    return [{k: v for k, v in doc.items() if k != "evaluations"}]


def record_evaluation(run_dir: str | Path, doc: dict[str, Any]) -> dict[str, Any]:
    """Write RUN/eval.json (atomically): `doc` at the top level, as the latest evaluation, and under
    "evaluations" one record per (split, k, num_images, weights): `doc` replaces the record of an
    earlier evaluation with the same key and keeps the others. Returns what was written."""
    from vaelab.storage import atomic_write_text

    key = evaluation_key(doc)
    kept = [r for r in read_evaluations(run_dir) if evaluation_key(r) != key]
    written = {**doc, "evaluations": [*kept, doc]}
    atomic_write_text(Path(run_dir) / EVAL_JSON, json.dumps(written, indent=2) + "\n")
    return written

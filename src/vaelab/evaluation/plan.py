"""How large each pass of an evaluation may be: what one pass costs, measured on a probe, and the
largest passes that fit EvalConfig.memory_mb (see :mod:`vaelab.evaluation`).

What one decoded latent costs (its decoder activations and the likelihood's temporaries: ~7 KB for
MNIST's MLP, ~9.5 MB for the celeba64 ResNet) is counted on a tiny probe before the pass
(:func:`measure_pass_cost`), and batch, then chunk, shrink until a pass fits (:func:`plan_passes`),
however large K is (the (K, B) table of log-weights itself is small).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vaelab.config import EvalConfig
from vaelab.errors import ConfigError
from vaelab.models import BaseVAE as VAE

MB = 1 << 20
# The probe counts the tensors torch's operators allocate, not the scratch buffers inside kernels
# (a convolution's im2col, oneDNN's workspace) or the allocator's slack: the plan budgets this much
# more than it counted. Measured with it, the peak RSS of `vaelab eval` on the cifar and celeba64
# presets was the ~0.4 GB of the process before the first pass plus 0.98-1.0 GB of the 1 GB budget.
SAFETY = 1.25
ENCODE_BATCH = 1000  # images per pass of the encoder alone (active units, code perplexity), at most


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

    from vaelab.evaluation.estimates import log_weights  # the pass itself; estimates imports this module

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

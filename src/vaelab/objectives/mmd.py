"""Objectives with a maximum mean discrepancy between the aggregate posterior q(z) and the prior p(z):
WAE-MMD (Tolstikhin et al. 2018, "Wasserstein Auto-Encoders") and InfoVAE / MMD-VAE (Zhao et al.
2019, "InfoVAE: Balancing Learning and Inference in Variational Autoencoders").

The MMD compares the batch's codes, one draw z_i ~ q(z|x_i) per image, with as many draws from the
N(0, I) prior, which fit() takes from the run's seeded generator (ObjectiveSpec.noise "normal"), so a
resumed run is bit-identical. It estimates a divergence, not a bound: neither objective is a bound on
log p(x), and eval reports their ELBO and NLL as for any Gaussian model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from vaelab.maths import mmd
from vaelab.objectives.base import ModelAnswer, Outcome, Step, elbo_parts

if TYPE_CHECKING:
    from vaelab.config import TrainConfig


def _mmd(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Tensor:
    if step.noise is None:
        raise ValueError(f"objective {cfg.objective} needs draws of the prior (Step.noise, (B, D))")
    z = d.z[0]  # (B, D): one code per image
    return mmd(z, step.noise.to(z.dtype), cfg.mmd_kernel, cfg.mmd_scale)


def wae(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """WAE-MMD: E_q log p(x|z) - mmd_weight MMD(q(z), p(z)), the reconstruction term in nats (the
    paper's cost c(x, G(z)) is this negative log-likelihood) and lambda = train.mmd_weight."""
    elbo_value, rec, kl = elbo_parts(d)
    penalty = _mmd(d, cfg, step)
    value = rec - cfg.mmd_weight * penalty
    return Outcome(value, value, elbo_value, rec, kl, {"mmd": penalty.expand(rec.shape[0])})


def infovae(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """InfoVAE (Zhao et al. 2019, eq. 6 with the MMD divergence): E_q log p(x|z) - (1 - alpha) KL(q(z|x)
    || p(z)) - (alpha + lambda - 1) MMD(q(z), p(z)), alpha = train.info_alpha, lambda = train.mmd_weight.
    alpha 0, lambda 1 is the ELBO; alpha 1 drops the KL (the "MMD-VAE")."""
    elbo_value, rec, kl = elbo_parts(d)
    penalty = _mmd(d, cfg, step)
    alpha, lam = cfg.info_alpha, cfg.mmd_weight
    value = rec - (1.0 - alpha) * kl - (alpha + lam - 1.0) * penalty
    return Outcome(value, value, elbo_value, rec, kl, {"mmd": penalty.expand(rec.shape[0])})

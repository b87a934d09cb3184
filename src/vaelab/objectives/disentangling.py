"""The disentangling objectives as training objectives: betatc (Chen et al. 2018), factor (Kim & Mnih
2018, with its discriminator as the spec's auxiliary network), dip-i / dip-ii (Kumar et al. 2018),
capacity (Burgess et al. 2018). Each is a one-draw ELBO (closed-form KL, as disentanglement_lib) with a
penalty, written on one Gaussian q(z|x) (d.z (1, B, D), d.loc, d.logvar (B, D)) and the N(0, I) prior."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vaelab.maths import beta_tc_terms, capacity_objective, dip_covariance, dip_penalty
from vaelab.objectives.base import ModelAnswer, Outcome, Step, elbo_parts, klw_of
from vaelab.objectives.discriminator import DISC_BETAS, FactorDiscriminator, discriminator_loss

if TYPE_CHECKING:
    from vaelab.config import TrainConfig


def _gaussian(d: ModelAnswer, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if d.loc is None or d.logvar is None:
        raise ValueError(f"objective {name} needs the Gaussian (loc, logvar) of q(z|x), which this model lacks")
    return d.loc, d.logvar


def betatc(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """ELBO - (klw - 1) TC, TC estimated over the batch of a data set of step.dataset_size images by
    train.tc_estimator (maths.beta_tc_terms). Terms mi, tc, dwkl add up to the one-draw KL."""
    elbo_value, rec, kl = elbo_parts(d)
    loc, logvar = _gaussian(d, cfg.objective)
    mi, tc, dwkl = beta_tc_terms(d.z[0], loc, logvar, step.dataset_size, cfg.tc_estimator)
    value = elbo_value - (klw_of(cfg, step) - 1.0) * tc
    return Outcome(value, value, elbo_value, rec, kl, {"mi": mi, "tc": tc, "dwkl": dwkl})


def build_discriminator(latent_dim: int, cfg: TrainConfig) -> tuple[FactorDiscriminator, torch.optim.Optimizer]:
    """factor's auxiliary network: disentanglement_lib's discriminator and its Adam (betas 0.5, 0.9)."""
    disc = FactorDiscriminator(latent_dim)
    return disc, torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=DISC_BETAS)


def factor(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """ELBO - factor_gamma TC, TC = logit_0 - logit_1 of the discriminator step.aux (the density-ratio
    trick); the term disc_loss trains the discriminator on the codes and their per-dimension shuffle
    by the uniforms step.noise (B, D)."""
    if step.aux is None:
        raise ValueError("objective factor needs its discriminator (Step.aux)")
    tc_logits = step.aux(d.z[0])
    elbo_value, rec, kl = elbo_parts(d)
    _gaussian(d, cfg.objective)
    tc_est = tc_logits[:, 0] - tc_logits[:, 1]  # log D(z) / (1 - D(z))
    value = elbo_value - cfg.factor_gamma * tc_est
    terms = {"tc_disc": tc_est}
    if step.noise is not None:
        terms["disc_loss"] = discriminator_loss(step.aux, d.z[0], step.noise)
    return Outcome(value, value, elbo_value, rec, kl, terms)


def dip_lambda_diag(cfg: TrainConfig) -> float:
    """DIP-VAE's weight on (C_ii - 1)^2: train.dip_lambda_d, or disentanglement_lib's default for the
    variant, 10 x dip_lambda_od (dip-i) or dip_lambda_od (dip-ii)."""
    if cfg.dip_lambda_d is not None:
        return cfg.dip_lambda_d
    return cfg.dip_lambda_od * (10.0 if cfg.objective == "dip-i" else 1.0)


def _dip(d: ModelAnswer, cfg: TrainConfig, variant: str, lambda_d: float) -> Outcome:
    elbo_value, rec, kl = elbo_parts(d)
    loc, logvar = _gaussian(d, cfg.objective)
    penalty = dip_penalty(dip_covariance(loc, logvar, variant), cfg.dip_lambda_od, lambda_d)
    value = elbo_value - penalty
    return Outcome(value, value, elbo_value, rec, kl, {"dip_penalty": penalty.expand(rec.shape[0])})


def dip_i(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """ELBO - lambda_od sum_{i!=j} C_ij^2 - lambda_d sum_i (C_ii - 1)^2, C = Cov[loc] over the batch;
    lambda_d defaults to 10 lambda_od (disentanglement_lib's)."""
    return _dip(d, cfg, "i", dip_lambda_diag(cfg))


def dip_ii(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """As dip-i with C = E[diag(exp(logvar))] + Cov[loc]; lambda_d defaults to lambda_od."""
    return _dip(d, cfg, "ii", dip_lambda_diag(cfg))


def capacity(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """log p(x|z) - capacity_gamma |mean KL - C|, C = step.capacity (maths.capacity_at)."""
    elbo_value, rec, kl = elbo_parts(d)
    _gaussian(d, cfg.objective)
    value = capacity_objective(rec, kl, cfg.capacity_gamma, step.capacity)
    return Outcome(value, value, elbo_value, rec, kl, {"capacity": torch.full_like(rec, step.capacity)})


__all__ = ["betatc", "build_discriminator", "capacity", "dip_i", "dip_ii", "dip_lambda_diag", "factor"]

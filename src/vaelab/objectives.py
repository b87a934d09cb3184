"""The training objectives, written once against a model's answer (vaelab.models.Draws): what training
maximises, its value and the terms it reports. The maths they are made of is in vaelab.maths.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.maths import (
    beta_tc_terms,
    capacity_objective,
    ciwae_bound,
    dip_covariance,
    dip_penalty,
    dreg_surrogate,
    elbo,
    elbo_free_bits,
    gaussian_kl_per_dim,
    iwae_bound,
    miwae_bound,
)

DISENTANGLING = ("betatc", "factor", "dip-i", "dip-ii", "capacity")

OBJECTIVE_TERMS: dict[str, tuple[str, ...]] = {
    "betatc": ("mi", "tc", "dwkl"),
    "factor": ("tc_disc",),  # train.py adds the discriminator's own loss, disc_loss
    "dip-i": ("dip_penalty",),
    "dip-ii": ("dip_penalty",),
    "capacity": ("capacity",),
}


def disentangling_objective(
    d: ModelAnswer,
    objective: str,
    elbo_value: Tensor,
    rec: Tensor,
    kl: Tensor,
    weight: float = 1.0,
    dataset_size: int = 0,
    capacity: float = 0.0,
    gamma: float = 1.0,
    lambda_od: float = 10.0,
    lambda_d: float = 10.0,
    tc_logits: Tensor | None = None,
    tc_estimator: str = "mws",
) -> tuple[Tensor, dict[str, Tensor]]:
    """The value (B,) nats-scaled (higher is better) and the reported terms of one disentangling
    objective, from one draw per image (d.z (1, B, D), d.loc and d.logvar (B, D), N(0, I) prior):

      betatc:   ELBO - (weight - 1) TC, TC estimated over the batch of a data set of `dataset_size`
                images by `tc_estimator`, "mws" (minibatch-weighted, disentanglement_lib's) or "mss"
                (stratified): :func:`beta_tc_terms` (Chen et al. 2018; the closed-form KL keeps the
                ELBO's variance low, as disentanglement_lib does). Terms mi, tc, dwkl (they add up
                to the one-draw KL).
      factor:   ELBO - gamma TC, TC = logit_0 - logit_1 of a discriminator told codes (class 0) from
                codes permuted per dimension (class 1): `tc_logits` (B, 2) (Kim & Mnih 2018).
      dip-i/ii: ELBO - lambda_od sum_{i!=j} C_ij^2 - lambda_d sum_i (C_ii - 1)^2 (Kumar et al. 2018).
      capacity: log p(x|z) - gamma |mean KL - C|, C = `capacity` (Burgess et al. 2018).
    """
    b = rec.shape[0]
    if d.loc is None or d.logvar is None:
        raise ValueError(f"objective {objective} needs the Gaussian (loc, logvar) of q(z|x), which this model lacks")
    if objective == "betatc":
        mi, tc, dwkl = beta_tc_terms(d.z[0], d.loc, d.logvar, dataset_size, tc_estimator)
        return elbo_value - (weight - 1.0) * tc, {"mi": mi, "tc": tc, "dwkl": dwkl}
    if objective == "factor":
        if tc_logits is None:
            raise ValueError("objective factor needs the discriminator's logits tc_logits (B, 2)")
        tc_est = tc_logits[:, 0] - tc_logits[:, 1]  # log D(z) / (1 - D(z)): the density-ratio trick
        return elbo_value - gamma * tc_est, {"tc_disc": tc_est}
    if objective in ("dip-i", "dip-ii"):
        penalty = dip_penalty(dip_covariance(d.loc, d.logvar, objective[4:]), lambda_od, lambda_d)
        return elbo_value - penalty, {"dip_penalty": penalty.expand(b)}
    if objective == "capacity":
        value = capacity_objective(rec, kl, gamma, capacity)
        return value, {"capacity": torch.full_like(rec, capacity)}
    raise ValueError(f"unknown disentangling objective {objective!r}")


class ModelAnswer(Protocol):
    """What a model answers for K draws z ~ q(z|x) (vaelab.models.Draws is the implementation):
    per-draw log p(x|z), log p(z), log q(z|x) and log w = their sum, each (K, B) nats, the draws z
    (K, B, D), the closed-form KL (B,) where one exists (else None), and the parameters (B, D) of
    q(z|x)'s Gaussian where the model has one (else None); a training penalty (B,) of the model's own
    parts (else None) and the terms it reports."""

    z: Tensor
    log_px_z: Tensor
    kl: Tensor | None
    loc: Tensor | None
    logvar: Tensor | None
    penalty: Tensor | None
    terms: dict[str, Tensor]

    @property
    def log_pz(self) -> Tensor: ...

    @property
    def log_qz_x(self) -> Tensor: ...

    @property
    def log_w(self) -> Tensor: ...


def training_objective(
    d: ModelAnswer,
    objective: str,
    estimator: str,
    m: int = 1,
    klw: float = 1.0,
    ciwae_beta: float = 0.5,
    free_bits: float = 0.0,
    **disentangling: Any,
) -> tuple[Tensor | tuple[Tensor, Tensor], Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Every training objective, written once against a model's answer `d` (vaelab.models.Draws).

    Returns (surrogate, bound, elbo, log_px_z, kl, terms), each (B,) nats except as noted:
      surrogate: what training maximises (its gradient is the estimator's);
      bound: the objective's value (equals the surrogate except for DReG);
      elbo, log_px_z, kl: the ELBO and its parts from the same draws, for logging. kl is the closed
        form where the model has one, else the mean of log q - log p over the draws.
    The ELBO uses the closed-form KL when the model gives one (same expectation, lower variance);
    with estimator "stl" it uses log q(z|x) at stopped parameters instead, whose gradient is the
    path derivative alone (Roeder et al. 2017). piwae: the surrogate is a pair (generative,
    inference), IWAE over all m * K draws for the generative parameters and MIWAE(m, K) for the
    posterior's (Rainforth et al. 2018); the caller differentiates each for its own parameters.
      terms: what the objective reports beside those (OBJECTIVE_TERMS; {} for the bounds).
    The disentangling objectives (DISENTANGLING) take klw as their weight and the keyword arguments
    of :func:`disentangling_objective`.
    free_bits > 0 (elbo only): the surrogate and bound are :func:`elbo_free_bits` with weight klw,
    on the per-dimension KL of q(z|x)'s Gaussian against N(0, I) (ConfigError for a model without
    one); the elbo returned stays the plain ELBO. free_bits = 0 leaves every value bit-identical.

    A model's own penalty (d.penalty, e.g. VQ-VAE's commitment loss) is subtracted from the
    surrogate alone, and its terms (d.terms) join the objective's: neither is part of a bound.
    """
    out = _objective(d, objective, estimator, m, klw, ciwae_beta, free_bits, **disentangling)
    penalty, terms = d.penalty, d.terms
    if penalty is None and not terms:
        return out
    surrogate, bound, elbo_value, rec, kl, own = out
    if penalty is not None:
        if isinstance(surrogate, tuple):
            raise ValueError("a model with a training penalty has no two-part (piwae) surrogate")
        surrogate = surrogate - penalty
    return surrogate, bound, elbo_value, rec, kl, {**own, **terms}


def _objective(
    d: ModelAnswer,
    objective: str,
    estimator: str,
    m: int = 1,
    klw: float = 1.0,
    ciwae_beta: float = 0.5,
    free_bits: float = 0.0,
    **disentangling: Any,
) -> tuple[Tensor | tuple[Tensor, Tensor], Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    if free_bits and objective != "elbo":
        raise ConfigError(
            f"train.free_bits {free_bits:g} applies to objective elbo alone, not {objective}: set train.free_bits 0"
        )
    rec = d.log_px_z.mean(0)  # (B,)
    if d.kl is not None:
        kl = d.kl
    else:
        kl = (d.log_qz_x - d.log_pz).mean(0)
    elbo_value = elbo(rec, kl)
    if objective == "elbo":
        if free_bits:
            value = elbo_free_bits(rec, _kl_per_dim(d, free_bits), free_bits, klw)
            return value, value, elbo_value, rec, kl, {}
        value = elbo_value if klw == 1.0 else elbo(rec, kl, klw)
        return value, value, elbo_value, rec, kl, {}
    if objective in DISENTANGLING:
        value, terms = disentangling_objective(d, objective, elbo_value, rec, kl, klw, **disentangling)
        return value, value, elbo_value, rec, kl, terms
    log_w = d.log_w  # (M*K, B)
    if objective == "iwae" or objective == "miwae":
        groups = m if objective == "miwae" else 1
        bound = miwae_bound(log_w, groups)
        if estimator == "dreg":
            return dreg_surrogate(log_w, d.z, groups), bound.detach(), elbo_value, rec, kl, {}
        return bound, bound, elbo_value, rec, kl, {}
    if objective == "ciwae":
        bound = ciwae_bound(log_w, ciwae_beta)
        return bound, bound, elbo_value, rec, kl, {}
    if objective == "piwae":
        bound = iwae_bound(log_w)
        return (bound, miwae_bound(log_w, m)), bound, elbo_value, rec, kl, {}
    raise ValueError(f"unknown objective {objective!r}")


def _kl_per_dim(d: ModelAnswer, free_bits: float) -> Tensor:
    """(B, D) KL of each latent dimension, for free bits: there only where the model's KL is the
    closed form of a diagonal Gaussian q(z|x) against N(0, I) (d.kl, d.loc, d.logvar all given)."""
    if d.kl is None or d.loc is None or d.logvar is None:
        raise ConfigError(
            f"train.free_bits {free_bits:g} clamps the KL of each latent dimension, which needs a diagonal "
            f"Gaussian q(z|x), the N(0, I) prior and estimator reparam; this model has no per-dimension KL "
            f"(a flow posterior, a mog or vamp prior, model.layers, discrete latents or estimator stl): "
            f"set train.free_bits 0"
        )
    return gaussian_kl_per_dim(d.loc, d.logvar)

"""The bounds on log p(x) as training objectives: elbo (with beta and free bits), iwae, miwae, piwae,
ciwae. Each takes (draws, TrainConfig, Step) and returns an Outcome; registered in OBJECTIVES."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.maths import ciwae_bound, dreg_surrogate, elbo_free_bits, gaussian_kl_per_dim, iwae_bound, miwae_bound
from vaelab.maths import elbo as elbo_of
from vaelab.objectives.base import ModelAnswer, Outcome, Step, elbo_parts, klw_of

if TYPE_CHECKING:
    from vaelab.config import TrainConfig


def elbo(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """E_q log p(x|z) - klw KL (klw: beta, or its warm-up); with train.free_bits > 0 the KL of each
    latent dimension counts as at least free_bits (maths.elbo_free_bits; the elbo reported stays
    the plain ELBO). free_bits 0 leaves every value bit-identical."""
    elbo_value, rec, kl = elbo_parts(d)
    klw = klw_of(cfg, step)
    if cfg.free_bits:
        value = elbo_free_bits(rec, _kl_per_dim(d, cfg.free_bits), cfg.free_bits, klw)
        return Outcome(value, value, elbo_value, rec, kl)
    value = elbo_value if klw == 1.0 else elbo_of(rec, kl, klw)
    return Outcome(value, value, elbo_value, rec, kl)


def _importance(d: ModelAnswer, cfg: TrainConfig, groups: int) -> Outcome:
    elbo_value, rec, kl = elbo_parts(d)
    log_w = d.log_w  # (M*K, B)
    bound = miwae_bound(log_w, groups)
    if cfg.estimator == "dreg":
        return Outcome(dreg_surrogate(log_w, d.z, groups), bound.detach(), elbo_value, rec, kl)
    return Outcome(bound, bound, elbo_value, rec, kl)


def iwae(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """log 1/K sum_k w_k (Burda et al. 2016); estimator dreg: Tucker et al. 2018's surrogate."""
    return _importance(d, cfg, 1)


def miwae(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """The mean of train.m IWAE bounds of k draws each (Rainforth et al. 2018)."""
    return _importance(d, cfg, cfg.m)


def ciwae(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """train.ciwae_beta ELBO + (1 - ciwae_beta) IWAE from the same draws (Rainforth et al. 2018)."""
    elbo_value, rec, kl = elbo_parts(d)
    bound = ciwae_bound(d.log_w, cfg.ciwae_beta)
    return Outcome(bound, bound, elbo_value, rec, kl)


def piwae(d: ModelAnswer, cfg: TrainConfig, step: Step) -> Outcome:
    """IWAE over all m * k draws for the generative parameters, MIWAE(m, k) for the posterior's
    (Rainforth et al. 2018): the surrogate and Outcome.inference, each differentiated for its part."""
    elbo_value, rec, kl = elbo_parts(d)
    log_w = d.log_w
    bound = iwae_bound(log_w)
    return Outcome(bound, bound, elbo_value, rec, kl, inference=miwae_bound(log_w, cfg.m))


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

"""The maths of VAEs as small pure functions: tensors in, per-example tensors out, nats, torch only.

Names carry their sign: ``elbo``, ``*_bound`` and ``log_*`` are higher-is-better log-densities,
anything called ``nll`` is positive. densities: log-densities, KLs, the reparameterization; bounds:
ELBO, IWAE, MIWAE, CIWAE and the DReG surrogate; penalties: the disentangling objectives' terms.
"""

from __future__ import annotations

from vaelab.maths.bounds import (
    bits_per_dim,
    ciwae_bound,
    dreg_surrogate,
    elbo,
    elbo_free_bits,
    free_bits_kl,
    iwae_bound,
    log_weights,
    miwae_bound,
)
from vaelab.maths.densities import (
    LOG_2PI,
    bernoulli_log_prob,
    continuous_bernoulli_log_norm,
    continuous_bernoulli_log_prob,
    continuous_bernoulli_mean,
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_mean,
    gaussian_components_log_prob,
    gaussian_kl,
    gaussian_kl_per_dim,
    gaussian_log_prob,
    gaussian_pixel_log_prob,
    pairwise_gaussian_log_density,
    reparameterize,
    std_normal_log_prob,
)
from vaelab.maths.penalties import (
    IMQ_SCALES,
    beta_tc_terms,
    capacity_at,
    capacity_objective,
    dip_covariance,
    dip_penalty,
    mmd,
    mmd_kernel,
)

__all__ = [
    "IMQ_SCALES",
    "LOG_2PI",
    "bernoulli_log_prob",
    "beta_tc_terms",
    "bits_per_dim",
    "capacity_at",
    "capacity_objective",
    "ciwae_bound",
    "continuous_bernoulli_log_norm",
    "continuous_bernoulli_log_prob",
    "continuous_bernoulli_mean",
    "dip_covariance",
    "dip_penalty",
    "discretized_logistic_mixture_log_prob",
    "discretized_logistic_mixture_mean",
    "dreg_surrogate",
    "elbo",
    "elbo_free_bits",
    "free_bits_kl",
    "gaussian_components_log_prob",
    "gaussian_kl",
    "gaussian_kl_per_dim",
    "gaussian_log_prob",
    "gaussian_pixel_log_prob",
    "iwae_bound",
    "log_weights",
    "miwae_bound",
    "mmd",
    "mmd_kernel",
    "pairwise_gaussian_log_density",
    "reparameterize",
    "std_normal_log_prob",
]

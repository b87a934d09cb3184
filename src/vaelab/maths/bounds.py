"""Bounds on log p(x) and their gradient surrogates: the ELBO, free bits, IWAE, MIWAE, CIWAE, DReG.

Per-example tensors out, nats, higher is better; nothing reduces over the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def elbo(log_px_z: Tensor, kl: Tensor, beta: float = 1.0) -> Tensor:
    """Evidence lower bound E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)). (B,) nats, higher is better.

    beta = 1 gives the true bound on log p(x); other values give the beta-VAE objective.
    """
    return log_px_z - beta * kl


def free_bits_kl(kl_per_dim: Tensor, free_bits: float) -> Tensor:
    """The KL term of the free-bits objective, per example: (B,) nats whose batch mean is
    sum_d max(free_bits, mean_b KL_bd).

    kl_per_dim: (B, D) KL of each latent dimension of each image (:func:`gaussian_kl_per_dim`);
    free_bits: lambda, nats per dimension. Kingma et al. 2016 (IAF, arXiv:1606.04934), appendix
    "Free bits": L = E_{x~M}[E_q log p(x|z)] - sum_j max(lambda, E_{x~M}[KL(q(z_j|x) || p(z_j))]) over
    a minibatch M and groups j of latents; here every dimension is its own group. Per example:
    sum_d (KL_bd if mean_b KL_bd >= lambda else lambda), whose batch mean is the paper's term, with
    its gradient: a dimension whose batch-mean KL is below lambda contributes the constant lambda,
    so nothing pulls it towards the prior (at equality the dimension counts as above). The batch
    is the caller's: in a multi-process run, each process's own slice.
    """
    mean = kl_per_dim.detach().mean(0)  # (D,) each dimension's KL averaged over the batch
    return torch.where(mean >= free_bits, kl_per_dim, torch.full_like(kl_per_dim, free_bits)).sum(-1)


def elbo_free_bits(log_px_z: Tensor, kl_per_dim: Tensor, free_bits: float, beta: float = 1.0) -> Tensor:
    """log p(x|z) - beta * free_bits_kl(kl_per_dim, free_bits): the ELBO with free bits, (B,) nats.

    log_px_z: (B,); kl_per_dim: (B, D). Not a bound on log p(x) for free_bits > 0 (it charges at
    least D * free_bits nats of KL): a training objective; report the plain :func:`elbo`.
    """
    return log_px_z - beta * free_bits_kl(kl_per_dim, free_bits)


def log_weights(log_px_z: Tensor, log_pz: Tensor, log_qz_x: Tensor) -> Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x): (K, B) nats from three (K, B) tensors."""
    return log_px_z + log_pz - log_qz_x


def iwae_bound(log_w: Tensor) -> Tensor:
    """log(1/K sum_k exp(log_w_k)). log_w: (K, B). Returns (B,) nats. Burda et al. 2016, eq. (8).

    With K = 1 this is a one-sample ELBO; it rises with K and tends to log p(x).
    """
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def bits_per_dim(nll: Tensor | float, num_dims: int) -> Tensor | float:
    """Convert a positive NLL in nats per example to bits per dimension: nll / (D ln 2)."""
    return nll / (num_dims * math.log(2.0))


def miwae_bound(log_w: Tensor, m: int) -> Tensor:
    """MIWAE (Rainforth et al. 2018): the mean of m IWAE bounds of K = rows / m draws each.

    log_w: (m * K, B), group j being rows j*K .. (j+1)*K - 1. Returns (B,) nats. m = 1 is the IWAE
    bound, K = 1 the ELBO (a mean over m draws).
    """
    return iwae_bound(log_w.view(m, -1, log_w.shape[-1]).transpose(0, 1)).mean(0)


def ciwae_bound(log_w: Tensor, beta: float) -> Tensor:
    """CIWAE (Rainforth et al. 2018): beta * ELBO + (1 - beta) * IWAE, from the same K draws.

    log_w: (K, B). Returns (B,) nats. beta = 1 is the ELBO (mean of log_w), beta = 0 the IWAE bound.
    """
    return beta * log_w.mean(0) + (1.0 - beta) * iwae_bound(log_w)


def dreg_surrogate(log_w: Tensor, z: Tensor, m: int = 1) -> Tensor:
    """The doubly reparameterized IWAE / MIWAE gradient (Tucker et al. 2018, eq. 5), as a surrogate.

    log_w: (m * K, B) computed with log q(z|x) at stopped posterior parameters (the STL form); z:
    (m * K, B, D) the draws it was computed from. With w~ the weights normalised within each group,
    the surrogate's gradient is sum_k w~_k d log w_k / d theta for the generative parameters (the
    IWAE gradient) and sum_k w~_k^2 (d log w_k / d z_k)(d z_k / d phi) for the posterior's (DReG):
    the z-path gradient is scaled by w~ once more with a hook on z. Returns (B,); its value is
    sum_k w~_k log w_k, not the bound: report :func:`miwae_bound` of log_w.detach() instead.
    """
    b = log_w.shape[-1]
    with torch.no_grad():
        w = torch.softmax(log_w.detach().view(m, -1, b), 1).view(-1, b)  # (m*K, B), each group sums to 1
    if z.requires_grad:
        z.register_hook(lambda g: g * w.unsqueeze(-1).to(g.dtype))
    return (w * log_w).view(m, -1, b).sum(1).mean(0)

"""The maths of VAEs as small pure functions. Tensors in, per-example tensors out, nats.

Nothing here reduces over the batch: callers take ``.mean()``. Names carry their sign: ``elbo``
and ``log_*`` are higher-is-better log-densities, anything called ``nll`` is positive.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(loc: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(loc, exp(logvar)) || N(0, I)) = 0.5 * sum_d(exp(logvar) + loc^2 - 1 - logvar).

    loc, logvar: (..., D). Returns (...) nats. Kingma & Welling 2014, Appendix B.
    Written with expm1(logvar) - logvar, which keeps float32 precision for posteriors near the prior.
    """
    return 0.5 * (torch.expm1(logvar) - logvar + loc.square()).sum(-1)


def gaussian_log_prob(z: Tensor, loc: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; loc, diag(exp(logvar))) summed over the last dim. Shapes broadcast; returns (...) nats."""
    return -0.5 * (LOG_2PI + logvar + (z - loc).square() * torch.exp(-logvar)).sum(-1)


def gaussian_components_log_prob(z: Tensor, loc: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; loc_k, diag(exp(logvar_k))) for every z and every component k: (..., K) nats.

    z: (..., D); loc, logvar: (K, D). The square is expanded, sum_d (z - m)^2 / v = z^2 . (1/v)
    - 2 z . (m/v) + sum m^2/v, so the work is two (N, D) x (D, K) matrix products and the memory
    (..., K), where broadcasting would hold (..., K, D): 500 MB for a VampPrior's 500 components
    at 50 samples x 100 images x 50 latents.
    """
    inv_var = torch.exp(-logvar)  # (K, D)
    const = (LOG_2PI + logvar + loc.square() * inv_var).sum(-1)  # (K,)
    quad = z.square() @ inv_var.T - 2.0 * (z @ (loc * inv_var).T)  # (..., K)
    return -0.5 * (quad + const)


def std_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dim. z: (..., D). Returns (...) nats."""
    return -0.5 * (LOG_2PI + z.square()).sum(-1)


def reparameterize(loc: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = loc + exp(logvar / 2) * eps; gradients flow to loc and logvar. eps: (..., B, D)."""
    return loc + torch.exp(0.5 * logvar) * eps


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """sum_i [x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i)] = -BCE(x, sigmoid(l)), from logits.

    x: (B, C, H, W) in [0, 1] (grey values are allowed: this is then a cross-entropy, not a
    density); logits: (..., B, C, H, W). Returns (..., B) nats. Computed as x*l - softplus(l),
    which is stable for any logit (never log(sigmoid)); torch's fused BCE-with-logits kernel does
    exactly that in one pass.
    """
    if not (torch.is_grad_enabled() and logits.requires_grad) and logits.shape[-4:] == x.shape:
        # No gradient wanted (evaluation): sum_i x_i l_i is a batched dot product that needs no
        # (..., B, C*H*W) copy of x, then one softplus pass. 2-3x faster on CPU than the BCE kernel,
        # whose fused backward is what makes it the right choice for training.
        xl = torch.einsum("...bp,bp->...b", logits.flatten(-3), x.flatten(1).to(logits.dtype))
        return xl - F.softplus(logits).flatten(-3).sum(-1)
    if x.shape != logits.shape:
        x = x.expand_as(logits)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(-3).sum(-1)


def gaussian_pixel_log_prob(x: Tensor, loc: Tensor, logvar: Tensor) -> Tensor:
    """Diagonal Gaussian density of the pixels. x: (B, C, H, W); loc, logvar broadcast to (..., B, C, H, W).

    Returns (..., B) nats. A density on R^(CHW): compare with discrete likelihoods only after
    dequantisation.
    """
    return -0.5 * (LOG_2PI + logvar + (x - loc).square() * torch.exp(-logvar)).flatten(-3).sum(-1)


def continuous_bernoulli_log_norm(logits: Tensor) -> Tensor:
    """log C(lambda) of the continuous Bernoulli, lambda = sigmoid(logits), elementwise.

    C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) for lambda != 1/2, and 2 at lambda = 1/2.
    In logits: 1 - 2 lambda = -tanh(l/2) and 2 artanh(-tanh(l/2)) = -l, so C = l / tanh(l/2).
    Near l = 0 a Taylor expansion log C = log 2 + l^2/12 - 7 l^4/1440 avoids 0/0.
    Loaiza-Ganem & Cunningham 2019, eq. (7).
    """
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    # l / tanh(l/2) = |l| / tanh(|l|/2); written with logs for large |l|:
    # log|l| - log tanh(|l|/2) and log tanh(a) = log(1 - e^{-2a}) - log(1 + e^{-2a}).
    a = safe.abs()
    log_tanh_half = torch.log1p(-torch.exp(-a)) - torch.log1p(torch.exp(-a))
    exact = torch.log(a) - log_tanh_half
    taylor = math.log(2.0) + logits.square() / 12.0 - 7.0 * logits.pow(4) / 1440.0
    return torch.where(small, taylor, exact)


def continuous_bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """Continuous Bernoulli density on [0, 1]^(CHW): Bernoulli term plus log normaliser.

    x: (B, C, H, W) in [0, 1]; logits: (..., B, C, H, W). Returns (..., B) nats, a true density of
    grey-valued pixels. Loaiza-Ganem & Cunningham 2019.
    """
    return (x * logits - F.softplus(logits) + continuous_bernoulli_log_norm(logits)).flatten(-3).sum(-1)


def continuous_bernoulli_mean(logits: Tensor) -> Tensor:
    """Mean of the continuous Bernoulli: lambda/(2 lambda - 1) + 1/(2 artanh(1 - 2 lambda)).

    In logits l (lambda = sigmoid(l)): 1/(1 - e^{-l}) - 1/l, with mean 1/2 at l = 0.
    """
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = -1.0 / torch.expm1(-safe) - 1.0 / safe
    taylor = 0.5 + logits / 12.0
    return torch.where(small, taylor, exact)


def elbo(log_px_z: Tensor, kl: Tensor, beta: float = 1.0) -> Tensor:
    """Evidence lower bound E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)). (B,) nats, higher is better.

    beta = 1 gives the true bound on log p(x); other values give the beta-VAE objective.
    """
    return log_px_z - beta * kl


def gaussian_kl_per_dim(loc: Tensor, logvar: Tensor) -> Tensor:
    """The per-dimension terms of :func:`gaussian_kl`: 0.5 * (exp(logvar) + loc^2 - 1 - logvar).

    loc, logvar: (..., D). Returns (..., D) nats, KL(q(z_d|x) || N(0, 1)) of each dimension (a
    diagonal Gaussian against N(0, I) factorises over d); their sum over D is gaussian_kl.
    """
    return 0.5 * (torch.expm1(logvar) - logvar + loc.square())


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


def discretized_logistic_mixture_log_prob(
    x: Tensor, logit_probs: Tensor, means: Tensor, log_scales: Tensor, coeffs: Tensor
) -> Tensor:
    """log P(x) of 8-bit pixels under a mixture of K discretized logistics (Salimans et al. 2017,
    PixelCNN++), summed over pixels: a probability of the integer values, so NLL and bits/dim are
    honest.

    x: (..., B, C, H, W) pixels k/255 in [0, 1] (any leading batch dims broadcast against the
    parameters). logit_probs: (..., B, K, H, W) mixture weights, shared by the channels.
    means, log_scales: (..., B, K, C, H, W) in the [-1, 1] pixel scale; log_scales clamp at -7.
    coeffs: (..., B, K, 3, H, W) tanh-squashed here; for C = 3 the green mean moves by
    coeffs[0] * red and the blue one by coeffs[1] * red + coeffs[2] * green, as in PixelCNN++ (for
    other C the channels are independent given the component, and coeffs are unused).

    Each of the 256 values of a channel gets the logistic's mass on its bin of width 2/255; the edge
    bins 0 and 255 take the tails; bins with a mass under 1e-5 use the density at the bin centre
    times the width (PixelCNN++'s guard against log(0) in float32). Returns (..., B) nats.
    """
    xs = (2.0 * x - 1.0).unsqueeze(-4)  # (..., B, 1, C, H, W) in [-1, 1]
    c = xs.shape[-3]
    log_scales = log_scales.clamp(min=-7.0)
    if c == 3:
        k = torch.tanh(coeffs)
        r, g = xs[..., 0, :, :], xs[..., 1, :, :]
        means = torch.stack(
            [
                means[..., 0, :, :],
                means[..., 1, :, :] + k[..., 0, :, :] * r,
                means[..., 2, :, :] + k[..., 1, :, :] * r + k[..., 2, :, :] * g,
            ],
            -3,
        )
    centred = xs - means
    inv_s = torch.exp(-log_scales)
    plus_in = inv_s * (centred + 1.0 / 255.0)
    min_in = inv_s * (centred - 1.0 / 255.0)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in): the bottom bin, value 0
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)): the top bin, value 255
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_s * centred
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)  # log density at the bin centre
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid - math.log(127.5))
    log_probs = torch.where(xs < -0.999, log_cdf_plus, torch.where(xs > 0.999, log_one_minus_cdf_min, inner))
    per_component = log_probs.sum(-3) + torch.log_softmax(logit_probs, -3)  # (..., B, K, H, W)
    return torch.logsumexp(per_component, -3).flatten(-2).sum(-1)


def discretized_logistic_mixture_mean(logit_probs: Tensor, means: Tensor, coeffs: Tensor) -> Tensor:
    """The mixture's mean pixel (..., B, C, H, W) in [0, 1], for pictures: each component's channel
    means chained through its coefficients at the component's own means (the mean of the
    continuous logistics; the discretisation and the clipping at 0 and 255 move it slightly)."""
    c = means.shape[-3]
    if c == 3:
        k = torch.tanh(coeffs)
        r = means[..., 0, :, :]
        g = means[..., 1, :, :] + k[..., 0, :, :] * r
        b = means[..., 2, :, :] + k[..., 1, :, :] * r + k[..., 2, :, :] * g
        means = torch.stack([r, g, b], -3)
    w = torch.softmax(logit_probs, -3).unsqueeze(-3)  # (..., B, K, 1, H, W)
    return ((w * means).sum(-4).clamp(-1.0, 1.0) + 1.0) / 2.0


# -- disentangling objectives (Chen et al. 2018; Kumar et al. 2018; Burgess et al. 2018) ------------


def pairwise_gaussian_log_density(z: Tensor, loc: Tensor, logvar: Tensor) -> Tensor:
    """log N(z_i,d; loc_j,d, exp(logvar_j,d)) for every pair (i, j) of a batch: z, loc, logvar (B, D)
    -> (B, B, D) nats, row i the draw, column j the image whose posterior is evaluated."""
    zi, mj, lvj = z[:, None, :], loc[None, :, :], logvar[None, :, :]
    return -0.5 * (LOG_2PI + lvj + (zi - mj) ** 2 * torch.exp(-lvj))


def beta_tc_terms(
    z: Tensor, loc: Tensor, logvar: Tensor, dataset_size: int, estimator: str = "mws"
) -> tuple[Tensor, Tensor, Tensor]:
    """The KL of a VAE split into index-code mutual information, total correlation and
    dimension-wise KL (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs"), per draw.

    z: (B, D) one draw z_i from each image's q(z|x_i) = N(loc_i, exp(logvar_i)); loc, logvar: (B, D);
    the prior is N(0, I). The aggregate posterior q(z) = 1/N sum_n q(z|x_n) over a data set of
    N = max(dataset_size, B) images, and its marginals q(z_d), are estimated from the batch, with
    m_ijd = log q(z_id|x_j) (:func:`pairwise_gaussian_log_density`), by `estimator`:

      "mws", minibatch-weighted sampling (Chen et al. 2018, appendix C.1):
        log q(z_i)   ~ logsumexp_j sum_d m_ijd - log(N B),
        log q(z_id)  ~ logsumexp_j m_ijd - log(N B),
        i.e. log(1/(N B) sum_j q(z_i|x_j)), with Chen et al.'s -log(N B) constants included. It is
        rtqichen/beta-tcvae's default and disentanglement_lib's `total_correlation`, which drops
        the constants: its TC is this one minus (D - 1) log(N B), with the same gradient. Biased:
        when every posterior is the same it gives mi = log N and tc = (D - 1) log N, not 0; when
        the batch is the whole data set (B = N), tc is the exact TC plus (D - 1) log N.
      "mss", stratified (close to Chen et al.'s minibatch stratified sampling, appendix C.2): the
        draw's own image gets weight w_ii = 1/N and each of the B - 1 others w_ij =
        (N - 1) / (N (B - 1)); log q(z_i) ~ logsumexp_j (log w_ij + sum_d m_ijd), and log q(z_id)
        ~ logsumexp_j (log w_ij + m_ijd). Its estimate of q(z_i) is unbiased (of log q(z_i),
        biased low, by Jensen); exact when all posteriors agree or when the batch is the data set.

    Returns (mi, tc, dwkl), each (B,) nats:
      mi = log q(z|x) - log q(z),  tc = log q(z) - sum_d log q(z_d),  dwkl = sum_d log q(z_d) - log p(z),
    whose sum is log q(z|x) - log p(z), the one-draw KL estimate, for either estimator.
    """
    b, dims = z.shape
    n = max(int(dataset_size), b)
    m = pairwise_gaussian_log_density(z, loc, logvar)  # (B, B, D)
    log_qz_x = m.diagonal(dim1=0, dim2=1).sum(0)  # (B,): each draw under its own image's posterior
    if estimator == "mws":
        log_nb = math.log(n * b)
        log_qz = torch.logsumexp(m.sum(2), 1) - log_nb  # (B,)
        log_prod_qzd = torch.logsumexp(m, 1).sum(1) - dims * log_nb  # (B,)
    elif estimator == "mss":
        log_other = math.log((n - 1) / (n * (b - 1))) if b > 1 else 0.0
        log_w = torch.full((b, b), log_other, dtype=z.dtype, device=z.device)
        log_w.fill_diagonal_(math.log(1.0 / n) if b > 1 else 0.0)
        log_qz = torch.logsumexp(log_w + m.sum(2), 1)  # (B,)
        log_prod_qzd = torch.logsumexp(log_w[:, :, None] + m, 1).sum(1)  # (B,)
    else:
        raise ValueError(f"total-correlation estimator {estimator!r}: choose mws or mss")
    log_pz = std_normal_log_prob(z)
    return log_qz_x - log_qz, log_qz - log_prod_qzd, log_prod_qzd - log_pz


def dip_covariance(loc: Tensor, logvar: Tensor, variant: str) -> Tensor:
    """The covariance that DIP-VAE pushes to the identity (Kumar et al. 2018): of the posterior means
    over the batch, Cov[loc] (D, D) for "i"; of the aggregate posterior, E[diag(exp(logvar))] +
    Cov[loc], for "ii"."""
    centred = loc - loc.mean(0, keepdim=True)
    cov = centred.t() @ centred / loc.shape[0]
    if variant == "ii":
        cov = cov + torch.diag(torch.exp(logvar).mean(0))
    elif variant != "i":
        raise ValueError(f"DIP-VAE variant {variant!r}: choose i or ii")
    return cov


def dip_penalty(cov: Tensor, lambda_od: float, lambda_d: float) -> Tensor:
    """lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2: a () batch-level penalty, in the
    units of the objective it is subtracted from (nats per example in vaelab's DIP-VAE objectives)."""
    diag = torch.diagonal(cov)
    off = cov - torch.diag(diag)
    return lambda_od * off.pow(2).sum() + lambda_d * (diag - 1).pow(2).sum()


def capacity_at(step: int, capacity_max: float, anneal_steps: int) -> float:
    """The KL capacity C of Burgess et al. 2018 after `step` steps: linear from 0 to capacity_max
    nats over anneal_steps, then constant."""
    if anneal_steps <= 0:
        return float(capacity_max)
    return float(capacity_max) * min(1.0, step / anneal_steps)


def capacity_objective(log_px_z: Tensor, kl: Tensor, gamma: float, capacity: float) -> Tensor:
    """log p(x|z) - gamma |mean KL - C| (Burgess et al. 2018, "Understanding disentangling in
    beta-VAE"): (B,) nats-scaled, higher is better, like the ELBO it replaces. The KL is the batch
    mean, as in disentanglement_lib's annealed VAE: the capacity bounds the code's average rate,
    not every image's."""
    return log_px_z - gamma * (kl.mean() - capacity).abs()


# The objectives whose penalties need the encoder's Gaussian (loc, logvar) and a batch of codes.
DISENTANGLING = ("betatc", "factor", "dip-i", "dip-ii", "capacity")
# What each one reports beside the ELBO's parts, each (B,) nats (metrics.csv: train_NAME).
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

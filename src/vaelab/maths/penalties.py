"""The penalties of the disentangling objectives (Chen et al. 2018; Kumar et al. 2018; Burgess et al.
2018): total correlation, DIP-VAE's covariance, the KL capacity. Nats, per example or per batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.maths.densities import pairwise_gaussian_log_density, std_normal_log_prob


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


# -- maximum mean discrepancy (WAE-MMD, Tolstikhin et al. 2018; InfoVAE, Zhao et al. 2019) ----------

# the multiples of the base scale C that the IMQ kernel sums over (Tolstikhin et al.'s code)
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def mmd_kernel(x: Tensor, y: Tensor, kernel: str, scale: float) -> Tensor:
    """k(x_i, y_j) for every pair: x (N, D), y (M, D) -> (N, M).

    "imq", the inverse multiquadratic sum_s sC / (sC + ||x - y||^2) over s in IMQ_SCALES with
    C = 2 D scale (Tolstikhin et al. 2018, with scale = the prior's variance, 1 for N(0, I));
    "rbf", exp(-||x - y||^2 / (2 D scale)) (Zhao et al. 2019's Gaussian kernel, bandwidth scaled by D).
    """
    d2 = (x.unsqueeze(1) - y.unsqueeze(0)).square().sum(-1)  # (N, M)
    base = 2.0 * x.shape[-1] * scale
    if kernel == "imq":
        return sum((s * base) / (s * base + d2) for s in IMQ_SCALES)  # type: ignore[return-value]
    if kernel == "rbf":
        return torch.exp(-d2 / base)
    raise ValueError(f"MMD kernel {kernel!r}: choose imq or rbf")


def mmd(x: Tensor, y: Tensor, kernel: str = "imq", scale: float = 1.0, unbiased: bool = True) -> Tensor:
    """The squared maximum mean discrepancy between the samples x (N, D) and y (M, D) under `kernel`,
    a () tensor.

    unbiased (the U-statistic, Gretton et al. 2012, eq. 3): the within-sample means leave out the
    diagonal, mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j); its
    expectation is the MMD^2 of the two distributions (it can be negative). unbiased=False (the
    V-statistic) keeps the diagonals: >= 0, and exactly 0 for two identical sample sets.
    """
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = mmd_kernel(x, x, kernel, scale), mmd_kernel(y, y, kernel, scale), mmd_kernel(x, y, kernel, scale)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError(f"the unbiased MMD needs two or more samples on each side, got {n} and {m}")
        within = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        within = kxx.mean() + kyy.mean()
    return within - 2.0 * kxy.mean()

"""Log-densities, KL divergences and the reparameterization: tensors in, per-example tensors out, nats.

Nothing here reduces over the batch: callers take ``.mean()``. ``log_*`` are higher-is-better
log-densities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

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


def gaussian_kl_per_dim(loc: Tensor, logvar: Tensor) -> Tensor:
    """The per-dimension terms of :func:`gaussian_kl`: 0.5 * (exp(logvar) + loc^2 - 1 - logvar).

    loc, logvar: (..., D). Returns (..., D) nats, KL(q(z_d|x) || N(0, 1)) of each dimension (a
    diagonal Gaussian against N(0, I) factorises over d); their sum over D is gaussian_kl.
    """
    return 0.5 * (torch.expm1(logvar) - logvar + loc.square())


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


def pairwise_gaussian_log_density(z: Tensor, loc: Tensor, logvar: Tensor) -> Tensor:
    """log N(z_i,d; loc_j,d, exp(logvar_j,d)) for every pair (i, j) of a batch: z, loc, logvar (B, D)
    -> (B, B, D) nats, row i the draw, column j the image whose posterior is evaluated."""
    zi, mj, lvj = z[:, None, :], loc[None, :, :], logvar[None, :, :]
    return -0.5 * (LOG_2PI + lvj + (zi - mj) ** 2 * torch.exp(-lvj))

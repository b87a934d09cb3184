"""Pixel likelihoods p(x|z): how many decoder outputs per pixel, the log-probability of the pixels,
their mean, exact seeded draws x ~ p(x|z), and whether that log-probability is a density of grey or
of binary pixels.

One likelihood has weights of its own: "bernoulli-ar", whose pixels also depend on the pixels
before them (:class:`PixelAutoregression`). The model registers that module (``pixel_net``), so its
weights are trained, saved and loaded with the decoder's."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from vaelab import maths
from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.models.registry import LIKELIHOODS
from vaelab.registry import resolve

# Smallest pixel log-variance of the learned-variance Gaussian: without a floor, pixels that are
# always 0 (MNIST borders) drive the variance to 0 and the density to infinity.
MIN_PIXEL_LOGVAR = -9.0

# What `decode` and `sample` give of p(x|z): its pixel means, or one exact draw x ~ p(x|z)
PixelMode = Literal["mean", "draw"]
PIXEL_MODES: tuple[PixelMode, ...] = ("mean", "draw")


@dataclass(frozen=True)
class PixelLikelihood:
    """A family p(x|z) over pixels: how many parameters per pixel, its log-density, mean and draws."""

    num_params: int
    log_prob: Callable[[Tensor, Tensor], Tensor]  # (x (B,C,H,W), params (...,B,P,C,H,W)) -> (...,B)
    mean: Callable[[Tensor], Tensor]  # params (...,B,P,C,H,W) -> (...,B,C,H,W) in [0, 1]
    # (params (...,B,P,C,H,W), generator) -> one exact draw x ~ p(x|z), (...,B,C,H,W): {0, 1} pixels
    # (Bernoulli families), k/255 (logistic mixture), [0, 1] (continuous Bernoulli) or real (Gaussians)
    draw: Callable[[Tensor, torch.Generator | None], Tensor]
    density_of_grey: bool  # True when log_prob is a density of grey values in [0, 1]
    density_of_binary: bool  # True when log_prob is a probability of {0, 1} pixels
    # True when log_prob is a probability of 8-bit values k/255 (binary pixels are two of them):
    # the NLL is then a discrete one, and bits/dim are reported, for grey and binary pixels alike
    eight_bit: bool = False
    # True when the first parameter is each pixel's logit (the Bernoulli family): init_output_bias then
    # starts it at the logit of the mean training pixel
    bias_is_logit: bool = False
    # the likelihood's own weights (an nn.Module the model registers), or None
    module: nn.Module | None = None
    # what ONNX / pt2 export cannot write of this likelihood ("" when it exports: mean is one pass)
    not_exportable: str = ""
    # what `mean` gives, in words, for picture titles ("mean-field pass" where it is no exact mean)
    mean_name: str = "pixel means"

    def pixels(self, params: Tensor, mode: PixelMode = "mean", generator: torch.Generator | None = None) -> Tensor:
        """The pixels (..., B, C, H, W) of p(x|z) for its parameters (..., B, P, C, H, W): mode "mean"
        the means, mode "draw" one exact draw x ~ p(x|z) from `generator` (the global one if None)."""
        if mode == "mean":
            return self.mean(params)
        if mode == "draw":
            return self.draw(params, generator)
        raise ConfigError(f"pixel mode {mode!r}: use one of {', '.join(PIXEL_MODES)}")

    def describe(self, mode: PixelMode = "mean") -> str:
        """What `pixels(params, mode)` shows, in words, for picture titles."""
        if mode not in PIXEL_MODES:
            raise ConfigError(f"pixel mode {mode!r}: use one of {', '.join(PIXEL_MODES)}")
        return "draws x ~ p(x|z)" if mode == "draw" else f"{self.mean_name} of p(x|z)"


class PixelAutoregression(nn.Module):
    """Linear connections from every pixel to the pixels after it, in raster order (channel, row,
    column): pixel i's logit is f_i(z) + sum_{j<i} W_ij x_j, with f(z) the decoder's output.

    Given z, p(x|z) = prod_i Bernoulli(x_i; sigmoid(f_i(z) + sum_{j<i} W_ij x_j)) is a fully visible
    sigmoid belief network (Frey 1998) whose biases come from the decoder, as in the visible layer of
    DARN (Gregor et al. 2014). It is an exact, normalised probability of binary images, computed in
    one masked (D, D) matrix product, so the ELBO, IWAE and the importance-sampled NLL apply as they
    are. The decoder's network need only model what the neighbouring pixels do not already say (the
    strokes' edges). W starts at zero: the model starts as the plain Bernoulli decoder.

    The mean has no closed form (E[x_i|z] sums over the earlier pixels): :meth:`mean` is the
    deterministic mean-field pass p_i = sigmoid(f_i + sum_{j<i} W_ij p_j), D sequential steps, and
    not a draw; :meth:`draw` is the exact ancestral draw, also D steps.
    """

    mask: Tensor

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        d = math.prod(shape)
        self.weight = nn.Parameter(torch.zeros(d, d))  # row i: pixel i's weights on the pixels j < i
        self.register_buffer("mask", torch.ones(d, d).tril(-1), persistent=False)

    def masked_weight(self) -> Tensor:
        return self.weight * self.mask

    def offsets(self, x: Tensor) -> Tensor:
        """sum_{j<i} W_ij x_j for every pixel i: x (B, C, H, W) -> (B, C, H, W)."""
        w = self.masked_weight()
        return (x.flatten(1).to(w.dtype) @ w.T).view(x.shape)

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return maths.bernoulli_log_prob(x, _single(params) + self.offsets(x))

    def mean(self, params: Tensor) -> Tensor:
        """The mean-field pass p_i = sigmoid(f_i + sum_{j<i} W_ij p_j): (..., B, C, H, W) in [0, 1]."""
        return self._raster_pass(params, lambda a, i: torch.sigmoid(a))

    def draw(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One exact ancestral draw x ~ p(x|z) per image: x_i ~ Bernoulli(sigmoid(f_i + sum_{j<i}
        W_ij x_j)) with the pixels j < i already drawn, D sequential steps. (..., B, C, H, W) in {0, 1}."""
        u = _uniform(_single(params).flatten(-3), generator)  # (..., B, D): one uniform per pixel
        return self._raster_pass(params, lambda a, i: (u[..., i] < torch.sigmoid(a)).to(a.dtype))

    def _raster_pass(self, params: Tensor, pixel: Callable[[Tensor, int], Tensor]) -> Tensor:
        """Visit the pixels in raster order: v_i = pixel(a_i, i) with a_i = f_i + sum_{j<i} W_ij v_j."""
        logits = _single(params)  # (..., B, C, H, W)
        acc = logits.flatten(-3)  # (..., B, D): f_i + the contributions of the pixels done so far
        w = self.masked_weight().to(acc.dtype)
        values = []
        for i in range(acc.shape[-1]):
            v = pixel(acc[..., i], i)  # (..., B)
            values.append(v)
            acc = acc + v[..., None] * w[:, i]  # pixel i's share in the logits of the pixels after it
        return torch.stack(values, -1).view(logits.shape)


def _single(params: Tensor) -> Tensor:
    """(..., B, 1, C, H, W) -> (..., B, C, H, W) for a one-parameter family. A squeeze is a view in
    both directions; params[..., 0, :, :, :] would make every backward fill a zero tensor and copy
    the gradient into it (a tenth of the non-matmul time of a CPU step at batch 512)."""
    return params.squeeze(-4)


def _gaussian_parts(params: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sigmoid(params[..., 0, :, :, :]), params[..., 1, :, :, :].clamp(min=MIN_PIXEL_LOGVAR)


def _logistic_parts(params: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The discretized logistic mixture's parameters in the layout (..., B, 4K, C, H, W): the K
    mixture logits in channel 0 of block 0 (the other channels' slots are unused), then per channel
    the K means and K log-scales, then the K x 3 channel coefficients across the first three
    channel slots of block 3 (used for C = 3 only)."""
    logits = params[..., :k, 0, :, :]  # (..., B, K, H, W)
    means = params[..., k : 2 * k, :, :, :]  # (..., B, K, C, H, W)
    log_scales = params[..., 2 * k : 3 * k, :, :, :]
    coeffs = params[..., 3 * k :, :3, :, :]  # (..., B, K, min(C, 3), H, W)
    return logits, means, log_scales, coeffs


def _uniform(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) numbers of `like`'s shape, dtype and device, from `generator`."""
    return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _bernoulli_draw(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """x ~ Bernoulli(sigmoid(logits)) elementwise: {0, 1} in logits' shape and dtype."""
    return (_uniform(logits, generator) < torch.sigmoid(logits)).to(logits.dtype)


def _gaussian_draw(loc: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
    """x ~ N(loc, exp(logvar)) elementwise: real grey values (the density is on R, not [0, 1])."""
    eps = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
    return loc + torch.exp(0.5 * logvar) * eps


def continuous_bernoulli_icdf(u: Tensor, logits: Tensor) -> Tensor:
    """The inverse CDF of the continuous Bernoulli CB(sigmoid(logits)) at u in [0, 1), elementwise:
    x in [0, 1], so x = F^-1(u) with u ~ U[0, 1) is a draw (Loaiza-Ganem & Cunningham 2019).

    In logits l the CDF is F(x) = expm1(x l) / expm1(l), so x = log1p(u expm1(l)) / l. It is written
    for l < 0 and mirrored for l > 0, where CB(l) is the law of 1 - x with x ~ CB(-l) at 1 - u. With
    a = |l| > 1 the argument 1 - w (1 - e^-a) of the log cancels as w -> 1, so there the log is
    logaddexp(log(1 - w), log w - a), with log u and log(1 - u) taken from u itself. x = u at l = 0.
    torch.distributions.ContinuousBernoulli.icdf is the same inverse in probabilities, which lose
    the tails at large |l| and treat |l| < 0.004 as uniform.
    """
    pos = logits > 0
    a = logits.abs()
    safe = torch.where(a == 0, torch.ones_like(a), a)
    log_u, log_1mu = torch.log(u), torch.log1p(-u)
    log_w, log_1mw = torch.where(pos, log_1mu, log_u), torch.where(pos, log_u, log_1mu)  # w: the mirrored u
    small = torch.log1p(torch.exp(log_w) * torch.expm1(-safe)) / -safe
    large = torch.logaddexp(log_1mw, log_w - safe) / -safe
    x = torch.where(a == 0, u, torch.where(a <= 1, small, large).clamp(0.0, 1.0))
    return torch.where(pos, 1.0 - x, x)


def _logistic_mixture_draw(params: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """One draw of 8-bit pixels k/255 from the discretized logistic mixture (layout of
    :func:`_logistic_parts`; the log-probability is maths.discretized_logistic_mixture_log_prob): per
    pixel a component by the Gumbel-max trick, then per channel a logistic draw y = mean + s logit(u)
    in the [-1, 1] scale, rounded to its bin (the edge bins take the tails). For C = 3 the green and
    blue means move with the drawn red (and green) values, as in the log-probability."""
    logits, means, log_scales, coeffs = _logistic_parts(params, k)
    gumbel = -torch.log(-torch.log(_uniform(logits, generator)))
    idx = (logits + gumbel).argmax(-3, keepdim=True).unsqueeze(-3)  # (..., B, 1, 1, H, W)

    def pick(t: Tensor) -> Tensor:  # the chosen component's (..., B, K, C', H, W) -> (..., B, C', H, W)
        return t.gather(-4, idx.expand(*t.shape[:-4], 1, *t.shape[-3:])).squeeze(-4)

    u = _uniform(means[..., 0, :, :, :], generator)  # (..., B, C, H, W)
    y = pick(means) + pick(log_scales).clamp(min=-7.0).exp() * (torch.log(u) - torch.log1p(-u))

    def level(t: Tensor) -> Tensor:  # [-1, 1] scale -> the bin's value in the [-1, 1] scale
        return ((t.clamp(-1.0, 1.0) + 1.0) * 127.5).round() / 127.5 - 1.0

    if y.shape[-3] == 3:
        c = torch.tanh(pick(coeffs))  # (..., B, 3, H, W)
        r = level(y[..., 0, :, :])
        g = level(y[..., 1, :, :] + c[..., 0, :, :] * r)
        b = level(y[..., 2, :, :] + c[..., 1, :, :] * r + c[..., 2, :, :] * g)
        xs = torch.stack([r, g, b], -3)
    else:
        xs = level(y)
    return ((xs + 1.0) * 127.5).round() / 255.0  # exactly k/255


def make_likelihood(cfg: ModelConfig) -> PixelLikelihood:
    """p(x|z) of the config: its LIKELIHOODS entry's implementation, called with the config."""
    return resolve(LIKELIHOODS[cfg.likelihood].impl)(cfg)


# -- the built-in likelihoods, named by their entries in vaelab.models.registry.LIKELIHOODS ------------
def bernoulli(cfg: ModelConfig) -> PixelLikelihood:
    return PixelLikelihood(
        1,
        lambda x, p: maths.bernoulli_log_prob(x, _single(p)),
        lambda p: torch.sigmoid(_single(p)),
        lambda p, g: _bernoulli_draw(_single(p), g),
        density_of_grey=False,
        density_of_binary=True,
        bias_is_logit=True,
    )


def continuous_bernoulli(cfg: ModelConfig) -> PixelLikelihood:
    return PixelLikelihood(
        1,
        lambda x, p: maths.continuous_bernoulli_log_prob(x, _single(p)),
        lambda p: maths.continuous_bernoulli_mean(_single(p)),
        lambda p, g: continuous_bernoulli_icdf(_uniform(_single(p), g), _single(p)),
        density_of_grey=True,
        density_of_binary=False,
    )


def gaussian(cfg: ModelConfig) -> PixelLikelihood:
    return PixelLikelihood(
        2,
        lambda x, p: maths.gaussian_pixel_log_prob(x, *_gaussian_parts(p)),
        lambda p: _gaussian_parts(p)[0],
        lambda p, g: _gaussian_draw(*_gaussian_parts(p), g),
        density_of_grey=True,
        density_of_binary=False,
    )


def gaussian_fixed(cfg: ModelConfig) -> PixelLikelihood:
    fixed_logvar = 2.0 * math.log(cfg.fixed_scale)
    return PixelLikelihood(
        1,
        lambda x, p: maths.gaussian_pixel_log_prob(
            x, torch.sigmoid(_single(p)), torch.full_like(_single(p), fixed_logvar)
        ),
        lambda p: torch.sigmoid(_single(p)),
        lambda p, g: _gaussian_draw(torch.sigmoid(_single(p)), torch.full_like(_single(p), fixed_logvar), g),
        density_of_grey=True,
        density_of_binary=False,
    )


def bernoulli_ar(cfg: ModelConfig) -> PixelLikelihood:
    ar = PixelAutoregression(cfg.input_shape)
    return PixelLikelihood(
        1,
        ar.log_prob,  # bound methods: a deepcopy of the model keeps them on its own copy of `ar`
        ar.mean,
        ar.draw,
        density_of_grey=False,
        density_of_binary=True,
        bias_is_logit=True,
        module=ar,
        not_exportable="an autoregressive pixel likelihood (bernoulli-ar: its mean is a sequential pass)",
        mean_name="mean-field pass",
    )


def logistic_mixture(cfg: ModelConfig) -> PixelLikelihood:
    k = cfg.mixture_components
    return PixelLikelihood(
        4 * k,
        lambda x, p: maths.discretized_logistic_mixture_log_prob(x, *_logistic_parts(p, k)),
        lambda p: maths.discretized_logistic_mixture_mean(*(_logistic_parts(p, k)[i] for i in (0, 1, 3))),
        lambda p, g: _logistic_mixture_draw(p, k, g),
        density_of_grey=True,
        density_of_binary=True,
        eight_bit=True,
    )

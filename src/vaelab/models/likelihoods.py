"""Pixel likelihoods p(x|z): how many decoder outputs per pixel, the log-probability of the pixels,
their mean, and whether that log-probability is a density of grey or of binary pixels.

One likelihood has weights of its own: "bernoulli-ar", whose pixels also depend on the pixels
before them (:class:`PixelAutoregression`). The model registers that module (``pixel_net``), so its
weights are trained, saved and loaded with the decoder's."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaelab import objectives as obj
from vaelab.config import ModelConfig

# Smallest pixel log-variance of the learned-variance Gaussian: without a floor, pixels that are
# always 0 (MNIST borders) drive the variance to 0 and the density to infinity.
MIN_PIXEL_LOGVAR = -9.0


@dataclass(frozen=True)
class PixelLikelihood:
    """A family p(x|z) over pixels: how many parameters per pixel, its log-density and mean."""

    num_params: int
    log_prob: Callable[[Tensor, Tensor], Tensor]  # (x (B,C,H,W), params (...,B,P,C,H,W)) -> (...,B)
    mean: Callable[[Tensor], Tensor]  # params (...,B,P,C,H,W) -> (...,B,C,H,W) in [0, 1]
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
    deterministic mean-field pass p_i = sigmoid(f_i + sum_{j<i} W_ij p_j), D sequential steps.
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
        return obj.bernoulli_log_prob(x, _single(params) + self.offsets(x))

    def mean(self, params: Tensor) -> Tensor:
        logits = _single(params)  # (..., B, C, H, W)
        acc = logits.flatten(-3)  # (..., B, D): f_i + the contributions of the pixels done so far
        w = self.masked_weight().to(acc.dtype)
        probs = []
        for i in range(acc.shape[-1]):
            p = torch.sigmoid(acc[..., i])
            probs.append(p)
            acc = acc + p[..., None] * w[:, i]  # pixel i's share in the logits of the pixels after it
        return torch.stack(probs, -1).view(logits.shape)


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


def make_likelihood(cfg: ModelConfig) -> PixelLikelihood:
    fixed_logvar = 2.0 * math.log(cfg.fixed_scale)
    table = {
        "bernoulli": PixelLikelihood(
            1,
            lambda x, p: obj.bernoulli_log_prob(x, _single(p)),
            lambda p: torch.sigmoid(_single(p)),
            density_of_grey=False,
            density_of_binary=True,
            bias_is_logit=True,
        ),
        "continuous-bernoulli": PixelLikelihood(
            1,
            lambda x, p: obj.continuous_bernoulli_log_prob(x, _single(p)),
            lambda p: obj.continuous_bernoulli_mean(_single(p)),
            density_of_grey=True,
            density_of_binary=False,
        ),
        "gaussian": PixelLikelihood(
            2,
            lambda x, p: obj.gaussian_pixel_log_prob(x, *_gaussian_parts(p)),
            lambda p: _gaussian_parts(p)[0],
            density_of_grey=True,
            density_of_binary=False,
        ),
        "gaussian-fixed": PixelLikelihood(
            1,
            lambda x, p: obj.gaussian_pixel_log_prob(
                x, torch.sigmoid(_single(p)), torch.full_like(_single(p), fixed_logvar)
            ),
            lambda p: torch.sigmoid(_single(p)),
            density_of_grey=True,
            density_of_binary=False,
        ),
    }
    if cfg.likelihood == "bernoulli-ar":
        ar = PixelAutoregression(cfg.input_shape)
        return PixelLikelihood(
            1,
            ar.log_prob,  # bound methods: a deepcopy of the model keeps them on its own copy of `ar`
            ar.mean,
            density_of_grey=False,
            density_of_binary=True,
            bias_is_logit=True,
            module=ar,
            not_exportable="an autoregressive pixel likelihood (bernoulli-ar: its mean is a sequential pass)",
        )
    if cfg.likelihood == "logistic-mixture":
        k = cfg.mixture_components
        return PixelLikelihood(
            4 * k,
            lambda x, p: obj.discretized_logistic_mixture_log_prob(x, *_logistic_parts(p, k)),
            lambda p: obj.discretized_logistic_mixture_mean(*(_logistic_parts(p, k)[i] for i in (0, 1, 3))),
            density_of_grey=True,
            density_of_binary=True,
            eight_bit=True,
        )
    return table[cfg.likelihood]

"""Pixel likelihoods p(x|z): how many decoder outputs per pixel, the log-probability of the pixels,
their mean, and whether that log-probability is a density of grey or of binary pixels."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

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

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


def _single(params: Tensor) -> Tensor:
    """(..., B, 1, C, H, W) -> (..., B, C, H, W) for a one-parameter family. A squeeze is a view in
    both directions; params[..., 0, :, :, :] would make every backward fill a zero tensor and copy
    the gradient into it (a tenth of the non-matmul time of a CPU step at batch 512)."""
    return params.squeeze(-4)


def _gaussian_parts(params: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sigmoid(params[..., 0, :, :, :]), params[..., 1, :, :, :].clamp(min=MIN_PIXEL_LOGVAR)


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
    return table[cfg.likelihood]

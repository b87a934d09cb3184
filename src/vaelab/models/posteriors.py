"""Posterior families q(z|x): draw z from the encoder's outputs and give log q(z|x) of the draws.

A posterior is built on the encoder's Gaussian (loc, logvar) and, for a flow, its features h:

    z0 = loc + exp(logvar / 2) * eps,   log q0 = log N(z0; loc, exp(logvar))
    z  = f_T(... f_1(z0; h) ...; h),    log q(z|x) = log q0 - sum_t log |det df_t/dz|

(Rezende & Mohamed 2015, eq. 6; Kingma et al. 2016 for IAF). The Gaussian is the flow with T = 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from vaelab import maths
from vaelab.config import ModelConfig
from vaelab.models.registry import POSTERIORS
from vaelab.registry import resolve


class PosteriorDraw(NamedTuple):
    """K draws of q(z|x) for B images: z (K, B, D) and log q(z|x) (K, B) nats."""

    z: Tensor
    log_qz_x: Tensor


class GaussianPosterior(nn.Module):
    """Diagonal Gaussian N(loc, diag(exp(logvar))), Kingma & Welling 2014. No parameters of its own.

    `stop_gradient=True` gives log q with loc and logvar detached: the density is then differentiated
    along the path of z alone, as "sticking the landing" (Roeder et al. 2017) and DReG need.
    """

    has_flow = False

    def draw(self, loc: Tensor, logvar: Tensor, h: Tensor, eps: Tensor, stop_gradient: bool = False) -> PosteriorDraw:
        z = maths.reparameterize(loc, logvar, eps)  # (K, B, D)
        if stop_gradient:
            loc, logvar = loc.detach(), logvar.detach()
        return PosteriorDraw(z, maths.gaussian_log_prob(z, loc, logvar))

    def mean(self, loc: Tensor, logvar: Tensor, h: Tensor) -> Tensor:
        return loc


class FlowPosterior(nn.Module):
    """The Gaussian pushed through planar or IAF steps conditioned on the encoder features h.

    STL and DReG are not offered: log q at a given z with the flow's parameters stopped needs the
    inverse of the flow at that z with those parameters, which IAF computes in D passes and planar
    flows only by root finding.
    """

    has_flow = True

    def __init__(self, cfg: ModelConfig, context_dim: int):
        super().__init__()
        hidden = cfg.flow_hidden or max(64, 2 * cfg.latent_dim)
        flow = POSTERIORS[cfg.posterior].flow
        if flow is None:
            raise ValueError(f"posterior {cfg.posterior} has no flow: build it with make_posterior")
        self.flow = resolve(flow)(cfg.latent_dim, cfg.flow_steps, context_dim, hidden)

    def draw(self, loc: Tensor, logvar: Tensor, h: Tensor, eps: Tensor, stop_gradient: bool = False) -> PosteriorDraw:
        if stop_gradient:
            raise ValueError("a flow posterior has no stop-gradient density (see FlowPosterior)")
        z0 = maths.reparameterize(loc, logvar, eps)  # (K, B, D)
        z, logabsdet = self.flow(z0, h)  # (K, B, D), (K, B)
        return PosteriorDraw(z, maths.gaussian_log_prob(z0, loc, logvar) - logabsdet)

    def mean(self, loc: Tensor, logvar: Tensor, h: Tensor) -> Tensor:
        """The flow's image of the base mean, f(loc; h): a point estimate of z, not E_q[z]."""
        return self.flow(loc, h)[0]


def make_posterior(cfg: ModelConfig, context_dim: int) -> GaussianPosterior | FlowPosterior:
    """q(z|x) of a VAE: the Gaussian, pushed through its registry entry's flow where it names one."""
    return GaussianPosterior() if POSTERIORS[cfg.posterior].flow is None else FlowPosterior(cfg, context_dim)


def gaussian_distribution(loc: Tensor, logvar: Tensor) -> torch.distributions.Distribution:
    """Independent(Normal(loc, exp(logvar / 2)), 1): the API-edge form of a diagonal Gaussian."""
    return torch.distributions.Independent(torch.distributions.Normal(loc, torch.exp(0.5 * logvar)), 1)

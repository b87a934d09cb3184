"""A VAE with several stochastic layers (Burda et al. 2016, section 5: 784-(200,200)-100-(100,100)-50).

Layers are numbered bottom-up, z_1 next to the pixels and z_L at the top. Inference is bottom-up:

    q(z_1..z_L | x) = q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1})

and the generative model is top-down:

    p(x, z_1..z_L) = p(z_L) p(z_{L-1} | z_L) ... p(z_1 | z_2) p(x | z_1),

each conditional a diagonal Gaussian from an MLP (the decoder of layer l mirrors the widths of
its encoder), p(z_L) the configured prior (N(0, I) or a learned mixture). No KL has a closed form
here, so every objective uses the draws. The verbs work on the top layer: `encode_mean` passes
means upward, `decode` passes means downward, `sample` draws ancestrally from p(z_L) down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from vaelab import maths
from vaelab.config import ModelConfig
from vaelab.models.base import Draws, PriorModel, full
from vaelab.models.likelihoods import PixelMode
from vaelab.models.networks import MLPDecoder, MLPEncoder, _mlp
from vaelab.models.priors import make_prior


class GaussianMLP(nn.Module):
    """z (..., B, D_in) -> MLP -> (loc, logvar), each (..., B, D_out): one conditional Gaussian layer."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], d_out: int, activation: str):
        super().__init__()
        self.body = _mlp([d_in, *hidden], activation)
        self.head = nn.Linear(hidden[-1], 2 * d_out)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        loc, logvar = self.head(self.body(z)).chunk(2, dim=-1)
        return full(loc), full(logvar)  # densities at full precision under a bf16 autocast


class HierarchicalVAE(PriorModel):
    """Stochastic layers cfg.layers (bottom first); see the module docstring for the order."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.set_likelihood(cfg)
        bottom = dataclasses.replace(cfg, layers=(), hidden=cfg.layers[0].hidden, latent_dim=cfg.layers[0].latent_dim)
        self.encoder = MLPEncoder(bottom)  # q(z_1 | x)
        self.decoder = MLPDecoder(bottom, self.likelihood.num_params)  # p(x | z_1)
        sizes = [layer.latent_dim for layer in cfg.layers]
        self.up = nn.ModuleList(  # q(z_l | z_{l-1}), l = 2..L
            GaussianMLP(sizes[i - 1], cfg.layers[i].hidden, sizes[i], cfg.activation) for i in range(1, len(sizes))
        )
        self.down = nn.ModuleList(  # p(z_{l-1} | z_l), l = 2..L
            GaussianMLP(sizes[i], tuple(reversed(cfg.layers[i].hidden)), sizes[i - 1], cfg.activation)
            for i in range(1, len(sizes))
        )
        self.prior = make_prior(cfg.prior, sizes[-1], cfg.components, cfg.input_shape)  # p(z_L)
        self.sizes = sizes

    @property
    def noise_dim(self) -> int:
        return sum(self.sizes)

    def forward(
        self, x: Tensor, y: Tensor | None = None, eps: Tensor | None = None, stop_gradient: bool = False
    ) -> Draws:
        """Bottom-up draws z_1..z_L with the noise eps (K, B, sum of D_l), then the top-down densities."""
        if stop_gradient:
            raise ValueError("a hierarchical model has no stop-gradient density (STL/DReG are refused in fit)")
        if eps is None:
            eps = torch.randn(1, x.shape[0], self.noise_dim, device=x.device, dtype=x.dtype)
        noise = eps.split(self.sizes, -1)
        loc, logvar = (full(t) for t in self.encoder(x))  # (B, D_1) each
        z = maths.reparameterize(loc, logvar, noise[0])  # (K, B, D_1)
        zs, log_q = [z], maths.gaussian_log_prob(z, loc, logvar)  # (K, B)
        for net, e in zip(self.up, noise[1:]):
            loc, logvar = net(zs[-1])  # (K, B, D_l)
            zs.append(maths.reparameterize(loc, logvar, e))
            log_q = log_q + maths.gaussian_log_prob(zs[-1], loc, logvar)
        log_p = self.prior.log_prob(zs[-1])  # (K, B)
        for net, upper, lower in zip(self.down, zs[1:], zs[:-1]):
            loc, logvar = net(upper)
            log_p = log_p + maths.gaussian_log_prob(lower, loc, logvar)
        params = full(self.decoder(zs[0]))  # (K, B, P, C, H, W)
        return Draws(zs[-1], params, self.log_px_z(x, params), lambda: log_p, lambda: log_q, None)

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.encoder.parameters()
        yield from self.up.parameters()

    # -- the verbs, on the top layer ------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(loc, logvar) of q(z_L | mean of z_{L-1}), each (B, D_L): means passed up the layers."""
        self.one_hot(y, x.shape[0])  # refuses labels
        loc, logvar = self.encoder(x)
        for net in self.up:
            loc, logvar = net(loc)
        return loc, logvar

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.encode(x, y)[0]

    def decode_params(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Parameters of p(x | z_1) with z_1 the means passed down from z_L (..., B, D_L)."""
        self.one_hot(y, z.shape[-2])
        for net in reversed(self.down):
            z = net(z)[0]
        return self.decoder(z)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.prior.sample(n, generator)

    def sample(
        self,
        n: int,
        y: Tensor | int | None = None,
        generator: torch.Generator | None = None,
        *,
        mode: PixelMode = "mean",
    ) -> Tensor:
        """Ancestral draws z_L ~ p(z_L), z_{l-1} ~ p(z_{l-1} | z_l), then the pixel means of p(x | z_1)
        (mode "mean") or one exact draw x ~ p(x | z_1) (mode "draw"; see BaseVAE.decode)."""
        if y is not None:
            self.one_hot(torch.as_tensor(y), n)
        z = self.prior.sample(n, generator)
        for net in reversed(self.down):
            loc, logvar = net(z)
            z = maths.reparameterize(
                loc, logvar, torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
            )
        return self.likelihood.pixels(self.decoder(z), mode, generator)

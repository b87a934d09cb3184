"""Encoder q(z|x), decoder p(x|z) and the VAE that holds them. Networks output distribution
parameters and compute no loss; the maths lives in :mod:`vaelab.objectives`.

Shapes: x (B, C, H, W) pixels in [0, 1]; z (B, D) or (K, B, D) for K samples per image;
y (B,) integer labels for a conditional model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab import objectives as obj
from vaelab.config import ModelConfig
from vaelab.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}

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


def _mlp(sizes: list[int], act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x (B, C, H, W) [+ one-hot y] -> hidden layers -> (loc, logvar), each (B, D)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        act = ACTIVATIONS[cfg.activation]
        self.body = _mlp([cfg.num_pixels + cfg.num_classes, *cfg.hidden], act)
        # One linear layer for both heads: the same maths as two heads (loc, logvar) in one matmul.
        self.head = nn.Linear(cfg.hidden[-1] if cfg.hidden else cfg.num_pixels + cfg.num_classes, 2 * cfg.latent_dim)

    def forward(self, x: Tensor, y1h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = x.flatten(1)  # (B, C*H*W)
        if y1h is not None:
            h = torch.cat([h, y1h], 1)
        loc, logvar = self.head(self.body(h)).chunk(2, dim=-1)  # (B, D) each
        return loc, logvar


class MLPDecoder(nn.Module):
    """z (..., B, D) [+ one-hot y] -> hidden layers (mirrored) -> params (..., B, P, C, H, W)."""

    def __init__(self, cfg: ModelConfig, num_params: int):
        super().__init__()
        act = ACTIVATIONS[cfg.activation]
        hidden = list(reversed(cfg.hidden))
        self.body = _mlp([cfg.latent_dim + cfg.num_classes, *hidden], act)
        self.out = nn.Linear(hidden[-1] if hidden else cfg.latent_dim + cfg.num_classes, num_params * cfg.num_pixels)
        self.shape = (num_params, *cfg.input_shape)

    def forward(self, z: Tensor, y1h: Tensor | None = None) -> Tensor:
        if y1h is not None:
            z = torch.cat([z, y1h.expand(*z.shape[:-1], y1h.shape[-1])], -1)
        out = self.out(self.body(z))  # (..., B, P*C*H*W)
        return out.view(*out.shape[:-1], *self.shape)  # (..., B, P, C, H, W)


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions halve H and W per layer, then a dense layer to (loc, logvar)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        act = ACTIVATIONS[cfg.activation]
        c, h, w = cfg.input_shape
        layers: list[nn.Module] = []
        for ch in cfg.channels:
            layers += [nn.Conv2d(c, ch, 4, stride=2, padding=1), act()]
            c, h, w = ch, h // 2, w // 2
        self.convs = nn.Sequential(*layers)
        width = cfg.hidden[0] if cfg.hidden else 256
        self.dense = nn.Sequential(nn.Linear(c * h * w + cfg.num_classes, width), act())
        self.head = nn.Linear(width, 2 * cfg.latent_dim)

    def forward(self, x: Tensor, y1h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.convs(x).flatten(1)  # (B, C'*H'*W')
        if y1h is not None:
            h = torch.cat([h, y1h], 1)
        loc, logvar = self.head(self.dense(h)).chunk(2, dim=-1)
        return loc, logvar


class ConvDecoder(nn.Module):
    """Dense layer to a (C', H', W') feature map, then stride-2 transposed convolutions."""

    def __init__(self, cfg: ModelConfig, num_params: int):
        super().__init__()
        act = ACTIVATIONS[cfg.activation]
        c, h, w = cfg.input_shape
        factor = 2 ** len(cfg.channels)
        self.start = (cfg.channels[-1], h // factor, w // factor)
        width = cfg.hidden[0] if cfg.hidden else 256
        self.dense = nn.Sequential(
            nn.Linear(cfg.latent_dim + cfg.num_classes, width), act(),
            nn.Linear(width, math.prod(self.start)), act(),
        )
        layers: list[nn.Module] = []
        chans = list(reversed(cfg.channels))
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), act()]
        layers.append(nn.ConvTranspose2d(chans[-1], num_params * c, 4, stride=2, padding=1))
        self.deconvs = nn.Sequential(*layers)
        self.shape = (num_params, *cfg.input_shape)

    def forward(self, z: Tensor, y1h: Tensor | None = None) -> Tensor:
        if y1h is not None:
            z = torch.cat([z, y1h.expand(*z.shape[:-1], y1h.shape[-1])], -1)
        lead = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).view(-1, *self.start)  # (N, C', H', W')
        out = self.deconvs(h)  # (N, P*C, H, W)
        return out.view(*lead, *self.shape)  # (..., B, P, C, H, W)


ARCHITECTURES: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "mlp": (MLPEncoder, MLPDecoder),
    "conv": (ConvEncoder, ConvDecoder),
}


class VAEOutput(NamedTuple):
    """What one forward pass returns: posterior parameters, the latent draws, decoder parameters."""

    loc: Tensor  # (B, D)
    logvar: Tensor  # (B, D)
    z: Tensor  # (K, B, D), or (B, D) when eps was (B, D)
    params: Tensor  # (..., B, P, C, H, W) parameters of p(x|z)


@dataclass(frozen=True)
class ElboTerms:
    """Per-example ELBO and its parts, all (B,) nats. elbo = log_px_z - kl (higher is better)."""

    elbo: Tensor
    log_px_z: Tensor  # E_q[log p(x|z)], the (negative) reconstruction term
    kl: Tensor  # KL(q(z|x) || N(0, I)), closed form


class VAE(nn.Module):
    """Variational autoencoder with a Gaussian posterior and a N(0, I) prior (Kingma & Welling 2014).

    Build it from a :class:`ModelConfig`; the verbs (`encode`, `decode`, `reconstruct`, `sample`,
    `elbo`, `interpolate`) are the ones the CLI and the web page use.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.likelihood = make_likelihood(cfg)
        enc, dec = ARCHITECTURES[cfg.arch]
        self.encoder = enc(cfg)
        self.decoder = dec(cfg, self.likelihood.num_params)

    # -- building blocks -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def one_hot(self, y: Tensor | None, batch: int) -> Tensor | None:
        """(B,) labels -> (B, num_classes) one-hot; checks range and presence for a conditional model."""
        n = self.cfg.num_classes
        if n == 0:
            if y is not None:
                raise ConfigError("this model is not conditional (num_classes = 0): pass no label")
            return None
        if y is None:
            raise ConfigError(f"this model is conditional on {n} classes: pass labels y in 0..{n - 1}")
        y = torch.as_tensor(y, device=self.device).long().reshape(-1)
        if y.numel() == 1 and batch > 1:
            y = y.expand(batch)
        if y.numel() != batch:
            raise ConfigError(f"got {y.numel()} labels for a batch of {batch}")
        if bool(((y < 0) | (y >= n)).any()):
            bad = y[(y < 0) | (y >= n)][0].item()
            raise ConfigError(f"label {bad} is out of range: this model knows labels 0..{n - 1}")
        return F.one_hot(y, n).to(next(self.parameters()).dtype)

    def forward(self, x: Tensor, y: Tensor | None = None, eps: Tensor | None = None) -> VAEOutput:
        """Encode, draw z = loc + exp(logvar/2) * eps, decode. eps: (K, B, D) or (B, D); None draws (B, D)."""
        y1h = self.one_hot(y, x.shape[0])
        loc, logvar = self.encoder(x, y1h)
        if eps is None:
            eps = torch.randn_like(loc)
        z = obj.reparameterize(loc, logvar, eps)
        return VAEOutput(loc, logvar, z, self.decoder(z, y1h))

    def log_px_z(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x|z) summed over pixels. x: (B, C, H, W); params: (..., B, P, C, H, W). Returns (..., B)."""
        return self.likelihood.log_prob(x, params)

    # -- the public verbs ------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior parameters (loc, logvar), each (B, D), for images x (B, C, H, W) in [0, 1]."""
        return self.encoder(x, self.one_hot(y, x.shape[0]))

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The posterior mean (B, D): the tutorial's "encoder" model."""
        return self.encode(x, y)[0]

    def posterior(self, x: Tensor, y: Tensor | None = None) -> torch.distributions.Distribution:
        """q(z|x) as a torch.distributions object, Independent(Normal(loc, scale), 1)."""
        loc, logvar = self.encode(x, y)
        return torch.distributions.Independent(torch.distributions.Normal(loc, torch.exp(0.5 * logvar)), 1)

    def decode_params(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Parameters of p(x|z), (..., B, P, C, H, W), for latents z (..., B, D)."""
        return self.decoder(z, self.one_hot(y, z.shape[-2]))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Pixel means of p(x|z), (..., B, C, H, W) in [0, 1], for latents z (..., B, D)."""
        return self.likelihood.mean(self.decode_params(z, y))

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """decode(encode_mean(x)): (B, C, H, W) pixel means in [0, 1]."""
        return self.decode(self.encode_mean(x, y), y)

    def sample(
        self, n: int, y: Tensor | int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Decode n draws z ~ N(0, I): (n, C, H, W) pixel means in [0, 1]."""
        z = torch.randn(n, self.cfg.latent_dim, generator=generator, device=self.device)
        return self.decode(z, None if y is None else torch.as_tensor(y))

    def elbo(
        self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None, beta: float = 1.0
    ) -> ElboTerms:
        """One-sample ELBO of each image with the closed-form KL: (B,) nats, higher is better."""
        loc, logvar = self.encode(x, y)
        eps = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
        z = obj.reparameterize(loc, logvar, eps)
        log_px_z = self.log_px_z(x, self.decode_params(z, y))
        kl = obj.gaussian_kl(loc, logvar)
        return ElboTerms(obj.elbo(log_px_z, kl, beta), log_px_z, kl)

    def interpolate(
        self, x1: Tensor, x2: Tensor, steps: int = 10, spherical: bool = False,
        y1: Tensor | None = None, y2: Tensor | None = None,
    ) -> Tensor:
        """Decode the path between the latent means of two images (C, H, W): (steps, C, H, W)."""
        z1 = self.encode_mean(x1[None], y1)[0]
        z2 = self.encode_mean(x2[None], y2)[0]
        z = interpolate_latents(z1, z2, steps, spherical)
        y = None if y1 is None else torch.as_tensor(y1).reshape(1).expand(steps)
        return self.decode(z, y)


def interpolate_latents(z1: Tensor, z2: Tensor, steps: int, spherical: bool = False) -> Tensor:
    """Points from z1 to z2 (D,), endpoints included: (steps, D). Spherical follows the great circle
    (slerp, Shoemake 1985; White 2016 for VAEs), falling back to linear for (anti)parallel vectors."""
    t = torch.linspace(0, 1, steps, device=z1.device, dtype=z1.dtype)[:, None]
    if spherical:
        n1, n2 = z1.norm(), z2.norm()
        cos = torch.clamp((z1 @ z2) / (n1 * n2).clamp_min(1e-12), -1.0, 1.0)
        omega = torch.arccos(cos)
        if float(omega.detach().sin()) > 1e-6:  # a branch on the value, not part of the graph
            s = omega.sin()
            return (torch.sin((1 - t) * omega) / s) * z1 + (torch.sin(t * omega) / s) * z2
    return (1 - t) * z1 + t * z2

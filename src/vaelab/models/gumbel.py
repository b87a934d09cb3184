"""Categorical latents trained with the Gumbel-softmax (Concrete) relaxation (Jang et al. 2017;
Maddison et al. 2017).

z is latent_dim = N categorical variables of C = `categories` classes each, written one-hot as a flat
(B, N * C) vector; the prior is uniform over the C^N values, q(z|x) = prod_n Cat(softmax(logits_n)).

- Training (module in train mode) decodes the relaxed sample softmax((log q + g) / tau), with Gumbel
  noise g and the temperature tau = max(temperature_min, temperature * exp(-temperature_rate * step)),
  step counted by a buffer (so a resumed run continues the schedule exactly). The KL to the uniform
  prior is in closed form: sum_n sum_c q_nc log(C q_nc).
- Evaluation (eval mode) decodes exact one-hot samples (the Gumbel-max trick: argmax(log q + g)), so
  the ELBO, log q(z|x), log p(z) = -N log C and the importance-sampled NLL are those of the discrete
  model, honest bounds on its log p(x).

The Gumbel noise is made from the standard normal eps that every model takes (fit draws it from its
seeded generator): u = Phi(eps) is uniform, g = -log(-log u), computed as -log(-log_ndtr(eps)).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.models.base import BaseVAE, Draws, full
from vaelab.models.registry import ARCHITECTURES


def gumbel_noise(eps: Tensor) -> Tensor:
    """Standard Gumbel noise from standard normal eps: -log(-log Phi(eps)), elementwise."""
    return -torch.log((-torch.special.log_ndtr(eps)).clamp_min(torch.finfo(eps.dtype).tiny))


def categorical_kl_uniform(log_q: Tensor) -> Tensor:
    """KL(Cat(q) || uniform) summed over the variables: log_q (..., N, C) -> (...,) nats."""
    c = log_q.shape[-1]
    return (log_q.exp() * (log_q + math.log(c))).sum((-1, -2))


class GumbelVAE(BaseVAE):
    """The model of a config with posterior "gumbel" (prior "uniform"): see the module docstring."""

    supports_bounds = False
    continuous_latents = False
    term_names = ("temperature",)
    step: Tensor

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.set_likelihood(cfg)
        n, c = cfg.latent_dim, cfg.categories
        enc, dec = ARCHITECTURES[cfg.arch].networks()
        self.encoder = enc(cfg)
        self.encoder.head = nn.Linear(self.encoder.features_dim, n * c)  # logits, not (loc, logvar)
        self.decoder = dec(dataclasses.replace(cfg, latent_dim=n * c), self.likelihood.num_params)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def latent_size(self) -> int:
        return self.cfg.latent_dim * self.cfg.categories

    @property
    def noise_dim(self) -> int:
        return self.latent_size

    @property
    def temperature(self) -> float:
        c = self.cfg
        return max(c.temperature_min, c.temperature * math.exp(-c.temperature_rate * int(self.step)))

    def log_q(self, x: Tensor) -> Tensor:
        """log q(z_n = c | x), (B, N, C)."""
        logits = self.encoder.head(self.encoder.features(x)).view(len(x), self.cfg.latent_dim, self.cfg.categories)
        return F.log_softmax(full(logits), -1)

    def forward(
        self, x: Tensor, y: Tensor | None = None, eps: Tensor | None = None, stop_gradient: bool = False
    ) -> Draws:
        """K draws (eps (K, B, N*C) standard normal; None: one): relaxed in training, one-hot in eval."""
        self.one_hot(y, x.shape[0])  # refuses a label: this model is unconditional
        n, c = self.cfg.latent_dim, self.cfg.categories
        log_q = self.log_q(x)  # (B, N, C)
        if eps is None:
            eps = torch.randn(1, len(x), n * c, device=x.device, dtype=log_q.dtype)
        scores = log_q + gumbel_noise(eps.to(log_q.dtype)).view(len(eps), len(x), n, c)  # (K, B, N, C)
        hard = F.one_hot(scores.argmax(-1), c).to(log_q.dtype)  # an exact categorical draw
        temperature = self.temperature
        if self.training:
            z = F.softmax(scores / temperature, -1)
            self.step += 1
        else:
            z = hard
        z = z.flatten(-2)  # (K, B, N*C)
        params = full(self.decoder(z))
        log_qz = (hard * log_q).sum((-1, -2))  # (K, B): log q of the drawn categories
        log_pz = torch.full_like(log_qz, -n * math.log(c))
        return Draws(
            z,
            params,
            self.log_px_z(x, params),
            lambda: log_pz,
            lambda: log_qz,
            categorical_kl_uniform(log_q),
            terms={"temperature": torch.full((len(x),), temperature, device=x.device)},
        )

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.encoder.parameters()

    # -- the verbs ---------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise ConfigError(
            "posterior gumbel: q(z|x) is categorical, not a Gaussian with (loc, logvar); encode_mean gives "
            "its class probabilities, log_q their logarithms"
        )

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """E_q[z] of the one-hot z: the class probabilities, (B, N * C)."""
        self.one_hot(y, x.shape[0])
        return self.log_q(x).exp().flatten(1)

    def decode_params(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decoder(z)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n one-hot draws from the uniform prior, (n, N * C)."""
        device = next(self.parameters()).device
        k = torch.randint(self.cfg.categories, (n, self.cfg.latent_dim), generator=generator, device=device)
        return F.one_hot(k, self.cfg.categories).to(next(self.parameters()).dtype).flatten(1)

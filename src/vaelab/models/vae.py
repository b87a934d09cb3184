"""The one-layer VAE (Kingma & Welling 2014) with any registered prior, posterior, likelihood and
architecture, and :func:`build_model`, which builds the model family a config describes."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from vaelab import maths
from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.models.base import BaseVAE, Draws, PriorModel, full
from vaelab.models.posteriors import FlowPosterior, GaussianPosterior, gaussian_distribution, make_posterior
from vaelab.models.priors import VampPrior, make_prior
from vaelab.models.registry import ARCHITECTURES, POSTERIORS
from vaelab.registry import resolve


class VAE(PriorModel):
    """One stochastic layer (Kingma & Welling 2014): encoder -> q(z|x) -> z -> decoder -> p(x|z),
    with the prior and posterior of its config (N(0, I) and a diagonal Gaussian by default).

    Build it from a :class:`ModelConfig`; the verbs (`encode`, `decode`, `reconstruct`, `sample`,
    `elbo`, `interpolate`) are the ones the CLI and the web page use.
    """

    posterior_family: GaussianPosterior | FlowPosterior

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.layers or POSTERIORS[cfg.posterior].model is not None:
            what = "model.layers" if cfg.layers else f"posterior {cfg.posterior}"
            raise ConfigError(f"this config has {what}: build it with vaelab.build_model(cfg)")
        self.cfg = cfg
        self.set_likelihood(cfg)
        enc, dec = ARCHITECTURES[cfg.arch].networks()
        self.encoder = enc(cfg)
        self.decoder = dec(cfg, self.likelihood.num_params)
        self.prior = make_prior(cfg.prior, cfg.latent_dim, cfg.components, cfg.input_shape)
        if isinstance(self.prior, VampPrior):
            self.prior.attach(self.encoder)  # p(z) = mean of q(z|u_k); not a second copy of the encoder
        self.posterior_family = make_posterior(cfg, self.encoder.features_dim)
        self.supports_stop_gradient = not self.posterior_family.has_flow

    @property
    def closed_form_kl(self) -> bool:
        """KL(q(z|x) || p(z)) has a closed form: a Gaussian q and a prior that says it is N(0, I).
        Asked of the prior the model holds now, so a prior swapped in (model.prior = ...) is honoured."""
        return self.prior.standard_normal and not self.posterior_family.has_flow

    @property
    def supports_disentangling(self) -> bool:
        return self.closed_form_kl

    def forward(
        self, x: Tensor, y: Tensor | None = None, eps: Tensor | None = None, stop_gradient: bool = False
    ) -> Draws:
        """Encode, draw z from q(z|x) with the noise eps (K, B, D) (None: one draw), decode.

        stop_gradient: log q(z|x) with the posterior's parameters detached (STL, DReG).
        """
        y1h = self.one_hot(y, x.shape[0])
        h = self.encoder.features(x, y1h)  # (B, F)
        loc, logvar = (full(t) for t in self.encoder.params(h))  # (B, D) each
        if eps is None:
            eps = torch.randn_like(loc)[None]
        z, log_qz_x = (
            full(t) for t in self.posterior_family.draw(loc, logvar, h, eps, stop_gradient)
        )  # (K, B, D), (K, B)
        params = full(self.decoder(z, y1h))  # (K, B, P, C, H, W)
        kl = maths.gaussian_kl(loc, logvar) if self.closed_form_kl and not stop_gradient else None
        return Draws(
            z, params, self.log_px_z(x, params), lambda: self.prior.log_prob(z), lambda: log_qz_x, kl, loc, logvar
        )

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.encoder.parameters()
        yield from self.posterior_family.parameters()

    # -- the verbs ---------------------------------------------------------------------------
    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Parameters (loc, logvar), each (B, D), of q(z|x)'s Gaussian (a flow's base distribution)."""
        return self.encoder(x, self.one_hot(y, x.shape[0]))

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The posterior mean (B, D): the tutorial's "encoder" model. With a flow posterior, the
        flow's image of the base mean (a point estimate, not E_q[z])."""
        h = self.encoder.features(x, self.one_hot(y, x.shape[0]))
        loc, logvar = self.encoder.params(h)
        return self.posterior_family.mean(loc, logvar, h)

    def posterior(self, x: Tensor, y: Tensor | None = None) -> torch.distributions.Distribution:
        """q(z|x) as a torch.distributions object, Independent(Normal(loc, scale), 1)."""
        if self.posterior_family.has_flow:
            raise ConfigError(
                f"posterior {self.cfg.posterior}: a flow posterior has no torch.distributions "
                f"form here; model(x).log_qz_x gives its log-density at the draws"
            )
        return gaussian_distribution(*self.encode(x, y))

    def decode_params(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Parameters of p(x|z), (..., B, P, C, H, W), for latents z (..., B, D)."""
        return self.decoder(z, self.one_hot(y, z.shape[-2]))

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.prior.sample(n, generator)


def build_model(cfg: ModelConfig) -> BaseVAE:
    """The model a config describes: the model family its posterior's registry entry names (VQVAE for
    posterior vq, GumbelVAE for gumbel), else a :class:`HierarchicalVAE` for model.layers, else a :class:`VAE`."""
    family = POSTERIORS[cfg.posterior].model
    if family is None:
        family = "vaelab.models.hierarchy:HierarchicalVAE" if cfg.layers else VAE
    model: BaseVAE = resolve(family)(cfg)
    if cfg.weight_init == "he":
        he_init(model)
    return model


def he_init(model: nn.Module) -> None:
    """Every linear layer's weights from N(0, 2 / fan_in) (He et al. 2015), biases as they are: the
    VampPrior code's he_init. Draws from torch's global generator, in module order."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, math.sqrt(2.0 / m.in_features))

"""What every model shares: the answer it gives the objectives (:class:`Draws`) and :class:`BaseVAE`,
the verbs built on encode/decode.

Every model answers one question for the objectives (:mod:`vaelab.objectives`): for K draws
z_k ~ q(z|x) of each of B images, ``model(x, y, eps)`` returns :class:`Draws` with the per-draw
log p(x|z), log p(z) and log q(z|x), each (K, B) nats, plus the closed-form KL where one exists.
Training, evaluation and the CLI use that answer and the verbs below, and nothing else: they never
ask which prior or posterior a model has.

Shapes: x (B, C, H, W) pixels in [0, 1]; z (B, D) or (K, B, D); y (B,) integer labels of a
conditional model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab import maths
from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.models.likelihoods import PixelLikelihood, PixelMode, make_likelihood
from vaelab.models.networks import ConvDecoder, GaussianEncoder, MLPDecoder
from vaelab.models.priors import Prior, prior_settings
from vaelab.models.registry import PRIORS


def full(t: Tensor) -> Tensor:
    """`t` in float32 if a bf16/fp16 autocast (--amp) made it narrower, else `t` itself (float32 and
    float64 models keep their dtype): densities are computed at full precision."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class Draws:
    """A model's answer for K draws z_k ~ q(z|x) of B images (nats; higher is better).

    Attributes:
        z: (K, B, D) the draws (the top layer's in a hierarchy).
        params: (K, B, P, C, H, W) parameters of p(x|z).
        log_px_z: (K, B) log p(x|z_k), summed over pixels.
        log_pz: (K, B) log p(z_k) (a hierarchy: every layer's prior terms).
        log_qz_x: (K, B) log q(z_k|x).
        kl: (B,) closed-form KL(q(z|x) || p(z)) where one exists (Gaussian posterior, N(0, I) prior),
            else None. The ELBO uses it when it exists: same expectation, lower variance.
        loc, logvar: (B, D) the Gaussian of q(z|x) (a flow's base), where the model has one, else
            None: the disentangling objectives' penalties are written on them.
        penalty: (B,) a training loss of the model's own parts that is not part of any bound (VQ-VAE's
            commitment and codebook losses), or None. Training subtracts it from the objective.
        terms: (B,) values the model reports in metrics.csv beside the objective's (its term_names).
    log_pz and log_qz_x are computed when first read, so an objective that uses the closed-form KL
    pays nothing for them.
    """

    def __init__(
        self,
        z: Tensor,
        params: Tensor,
        log_px_z: Tensor,
        log_pz: Callable[[], Tensor],
        log_qz_x: Callable[[], Tensor],
        kl: Tensor | None,
        loc: Tensor | None = None,
        logvar: Tensor | None = None,
        penalty: Tensor | None = None,
        terms: dict[str, Tensor] | None = None,
    ):
        self.z, self.params, self.log_px_z, self.kl = z, params, log_px_z, kl
        self.loc, self.logvar = loc, logvar
        self.penalty, self.terms = penalty, terms or {}
        self._log_pz, self._log_qz_x = log_pz, log_qz_x

    @cached_property
    def log_pz(self) -> Tensor:
        return self._log_pz()

    @cached_property
    def log_qz_x(self) -> Tensor:
        return self._log_qz_x()

    @property
    def log_w(self) -> Tensor:
        """log importance weights log p(x|z) + log p(z) - log q(z|x), (K, B)."""
        return maths.log_weights(self.log_px_z, self.log_pz, self.log_qz_x)


@dataclass(frozen=True)
class ElboTerms:
    """Per-example ELBO and its parts, all (B,) nats. elbo = log_px_z - kl (higher is better)."""

    elbo: Tensor
    log_px_z: Tensor  # E_q[log p(x|z)], the (negative) reconstruction term
    kl: Tensor  # KL(q(z|x) || p(z)): closed form where one exists, else the one-draw log q - log p


class BaseVAE(nn.Module):
    """What every model shares: labels, the device, the verbs built on encode/decode, the ELBO."""

    cfg: ModelConfig
    likelihood: PixelLikelihood
    encoder: GaussianEncoder  # q(z_1|x)'s network (the bottom layer's, in a hierarchy)
    decoder: MLPDecoder | ConvDecoder  # p(x|z_1)'s network
    prior: Prior  # p(z) (p(z_L), the top layer's, in a hierarchy)
    # STL and DReG need log q(z|x) with the posterior's parameters stopped (see posteriors.py)
    supports_stop_gradient = False
    # the importance-weighted objectives (iwae, miwae, piwae, ciwae) need log q and log p at the draws
    # with their gradients; a discrete latent's training draws (straight-through, relaxed) have none
    supports_bounds = True
    # q(z|x) is a point mass (VQ-VAE): every draw is the same, so the ELBO -log p(x|z) - log p(z) is
    # already the importance-sampled bound for any K, and evaluation draws once
    deterministic_posterior = False
    # the state of a training step depends on the whole batch (a codebook's EMA): one process only
    single_process = False
    # z is a Gaussian's (or a flow's) point in R^D, with encode's (loc, logvar): traversals and the
    # 2-D manifold apply. Codes and categories are not.
    continuous_latents = True
    term_names: tuple[str, ...] = ()  # what `forward` reports in Draws.terms (metrics.csv train_<name>)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def supports_disentangling(self) -> bool:
        """One Gaussian q(z|x) and the N(0, I) prior, with the closed-form KL per dimension: what the
        disentangling objectives and free bits are written on (objectives)."""
        return False

    @property
    def prior_description(self) -> str:
        """p(z) in words, for picture titles."""
        return PRIORS[self.cfg.prior].description or self.cfg.prior

    @property
    def bound_note(self) -> str:
        """For a deterministic posterior: what its NLL bound is, for eval.json's note."""
        return ""

    @property
    def latent_size(self) -> int:
        """The size D of the flat latent z (B, D) that encode_mean gives and decode takes."""
        return self.cfg.latent_dim

    def code_counts(self, x: Tensor) -> Tensor | None:
        """How often each code of a codebook is used by the images x (K,), or None (no codebook)."""
        return None

    @property
    def noise_dim(self) -> int:
        """Standard-normal numbers per draw that `forward` takes as eps: (K, B, noise_dim)."""
        return self.cfg.latent_dim

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

    def set_likelihood(self, cfg: ModelConfig) -> None:
        """p(x|z) of the config, with its own weights (if it has any) registered as `pixel_net`."""
        self.likelihood = make_likelihood(cfg)
        if self.likelihood.module is not None:
            self.pixel_net = self.likelihood.module

    def log_px_z(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x|z) summed over pixels. x: (B, C, H, W); params: (..., B, P, C, H, W). Returns (..., B)."""
        return self.likelihood.log_prob(x, params)

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of q(z|x) (encoder and flow); the rest are the generative model's."""
        raise NotImplementedError

    def generative_parameters(self) -> Iterator[nn.Parameter]:
        ids = {id(p) for p in self.inference_parameters()}
        return (p for p in self.parameters() if id(p) not in ids)

    def init_output_bias(self, mean: Tensor) -> None:
        """Start p(x|z) at the mean training pixel `mean` (C, H, W) in [0, 1] (Burda et al.'s init)."""
        self.decoder.init_output_bias(mean)

    # -- the verbs ---------------------------------------------------------------------------
    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """A point estimate of z for each image (B, D): the posterior mean (the tutorial's "encoder")."""
        raise NotImplementedError

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Parameters (loc, logvar), each (B, D), of q(z|x)'s Gaussian (of the bottom layer, in a hierarchy)."""
        raise NotImplementedError

    def decode_params(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Parameters of p(x|z), (..., B, P, C, H, W), for latents z (..., B, D)."""
        raise NotImplementedError

    def decode(
        self,
        z: Tensor,
        y: Tensor | None = None,
        *,
        mode: PixelMode = "mean",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Pixels of p(x|z), (..., B, C, H, W), for latents z (..., B, D).

        mode "mean": the pixel means in [0, 1] (bernoulli-ar: the mean-field pass, not an exact
        mean). mode "draw": one exact draw x ~ p(x|z) per z from `generator`: {0, 1} pixels for the
        Bernoulli families (bernoulli-ar pixel by pixel, given the pixels drawn before), k/255 for
        the logistic mixture, [0, 1] for the continuous Bernoulli, real values for the Gaussians.
        """
        return self.likelihood.pixels(self.decode_params(z, y), mode, generator)

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """decode(encode_mean(x)): (B, C, H, W) pixel means in [0, 1]."""
        return self.decode(self.encode_mean(x, y), y)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws z ~ p(z) from the model's own prior: (n, D)."""
        raise NotImplementedError

    def sample(
        self,
        n: int,
        y: Tensor | int | None = None,
        generator: torch.Generator | None = None,
        *,
        mode: PixelMode = "mean",
    ) -> Tensor:
        """Decode n draws z ~ p(z) of the model's own prior: (n, C, H, W) pixels of p(x|z), its pixel
        means in [0, 1] (mode "mean") or exact draws x ~ p(x|z) (mode "draw"; see :meth:`decode`).
        z, then the pixels, come from `generator`."""
        z = self.sample_latents(n, generator)
        return self.decode(z, None if y is None else torch.as_tensor(y), mode=mode, generator=generator)

    def elbo(
        self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None, beta: float = 1.0
    ) -> ElboTerms:
        """One-draw ELBO of each image: (B,) nats, higher is better. The KL is closed form where one
        exists, else the one-draw estimate log q(z|x) - log p(z)."""
        eps = torch.randn(
            (1, x.shape[0], self.noise_dim), generator=generator, device=x.device, dtype=next(self.parameters()).dtype
        )
        d = self(x, y, eps)
        log_px_z = d.log_px_z[0]
        kl = d.kl if d.kl is not None else (d.log_qz_x - d.log_pz)[0]
        return ElboTerms(maths.elbo(log_px_z, kl, beta), log_px_z, kl)

    def interpolate(
        self,
        x1: Tensor,
        x2: Tensor,
        steps: int = 10,
        spherical: bool = False,
        y1: Tensor | None = None,
        y2: Tensor | None = None,
    ) -> Tensor:
        """Decode the path between the latent means of two images (C, H, W): (steps, C, H, W)."""
        z1 = self.encode_mean(x1[None], y1)[0]
        z2 = self.encode_mean(x2[None], y2)[0]
        z = interpolate_latents(z1, z2, steps, spherical)
        y = None if y1 is None else torch.as_tensor(y1).reshape(1).expand(steps)
        return self.decode(z, y)


class PriorModel(BaseVAE):
    """A model whose p(z) (its top layer's, in a hierarchy) is a :class:`Prior` module, ``prior``."""

    def __setattr__(self, name: str, value: Any) -> None:
        """``model.prior = p`` also records p in ``model.cfg`` (its registered name and the settings
        that rebuild it), so that a run saved from this model reloads the prior it has."""
        if name == "prior" and isinstance(value, Prior) and isinstance(self.__dict__.get("cfg"), ModelConfig):
            cfg = self.cfg
            new = dataclasses.replace(cfg, **prior_settings(value, cfg))
            if new != cfg:
                self.cfg = new
        super().__setattr__(name, value)


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

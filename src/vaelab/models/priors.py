"""Priors p(z) over the latent space: N(0, I), a learned Gaussian mixture, the VampPrior, and a
flow prior (masked autoregressive flow on N(0, I)).

Every prior answers ``log_prob(z)`` for z (..., D) with (...) nats, and ``sample(n)`` with (n, D)
draws on its own device and dtype. The hot path uses plain tensors and the pure functions of
:mod:`vaelab.maths`; ``to_distribution()`` offers the equivalent ``torch.distributions``
object at the API edge (and is what the tests compare against).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab import maths
from vaelab.errors import ConfigError
from vaelab.models import registry
from vaelab.models.flows import MAF
from vaelab.models.registry import Implementations
from vaelab.registry import load_plugins

if TYPE_CHECKING:
    from vaelab.config import ModelConfig

Encode = Callable[[Tensor], tuple[Tensor, Tensor]]  # x (K, C, H, W) -> (loc, logvar), each (K, D)


class Prior(nn.Module):
    """Base class of the priors p(z). Subclasses define ``log_prob`` and ``sample``.

    Attributes:
        latent_dim: D, the size of z.
        standard_normal: True only for N(0, I). The model then uses the closed-form Gaussian KL;
            for any other prior the KL is estimated from draws as log q(z|x) - log p(z).
    """

    standard_normal: bool = False

    def __init__(self, latent_dim: int):
        super().__init__()
        if latent_dim < 1:
            raise ConfigError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = latent_dim

    @classmethod
    def build(cls, latent_dim: int, components: int, input_shape: tuple[int, int, int]) -> Prior:
        """Construct from the model's sizes; each subclass takes the arguments it needs."""
        return cls(latent_dim)

    def settings(self) -> dict[str, Any]:
        """The ModelConfig settings, besides the latent size, that build this prior again (a mixture:
        prior_components), so that a model holding it is saved and reloaded with it."""
        return {}

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z). z: (..., D). Returns (...) nats."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws z ~ p(z): (n, D). Reparameterised: gradients reach learned prior parameters."""
        raise NotImplementedError

    def forward(self, z: Tensor) -> Tensor:
        return self.log_prob(z)

    def _anchor(self) -> Tensor:
        """A tensor on the prior's device and dtype (a parameter or buffer)."""
        for t in self.parameters():
            return t
        return next(self.buffers())

    def _randn(self, n: int, generator: torch.Generator | None) -> Tensor:
        a = self._anchor()
        return torch.randn(n, self.latent_dim, generator=generator, device=a.device, dtype=a.dtype)


class StandardNormal(Prior):
    """p(z) = N(0, I), the prior of Kingma & Welling 2014."""

    standard_normal = True
    _ref: Tensor  # a 0-d buffer: the device and dtype of draws

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        # No parameters, yet .to(device, dtype) must tell sample() where to draw: a scalar buffer
        # follows the module; persistent=False keeps it out of state_dict (nothing to save).
        self.register_buffer("_ref", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I). z: (..., D). Returns (...) nats."""
        return maths.std_normal_log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, D) draws from N(0, I)."""
        return self._randn(n, generator)

    def to_distribution(self) -> torch.distributions.Distribution:
        """Independent(Normal(0, 1), 1) with event shape (D,)."""
        zeros = self._ref.expand(self.latent_dim)
        return torch.distributions.Independent(torch.distributions.Normal(zeros, torch.ones_like(zeros)), 1)


class MixturePrior(Prior):
    """A learned mixture of K diagonal Gaussians: p(z) = sum_k pi_k N(z; loc_k, diag(exp(logvar_k))).

    pi = softmax(logits). Parameters: ``logits`` (K,), ``loc`` (K, D), ``logvar`` (K, D).
    """

    def __init__(self, latent_dim: int, components: int = 10):
        super().__init__(latent_dim)
        if components < 1:
            raise ConfigError(f"a mixture prior needs components >= 1, got {components}")
        self.logits = nn.Parameter(torch.zeros(components))
        # Means drawn from N(0, I) (global torch RNG, so torch.manual_seed fixes them): distinct
        # components break the symmetry (identical ones get identical gradients and never split),
        # and a unit spread puts them where N(0, I)-initialised encoders place their posteriors.
        self.loc = nn.Parameter(torch.randn(components, latent_dim))
        self.logvar = nn.Parameter(torch.zeros(components, latent_dim))

    @classmethod
    def build(cls, latent_dim: int, components: int, input_shape: tuple[int, int, int]) -> Prior:
        return cls(latent_dim, components)

    @property
    def components(self) -> int:
        return self.logits.shape[0]

    def settings(self) -> dict[str, Any]:
        return {"prior_components": self.components}

    def log_prob(self, z: Tensor) -> Tensor:
        """logsumexp_k [log pi_k + log N(z; loc_k, exp(logvar_k))]. z: (..., D). Returns (...) nats."""
        log_pz_k = maths.gaussian_components_log_prob(z, self.loc, self.logvar)  # (..., K)
        return torch.logsumexp(F.log_softmax(self.logits, -1) + log_pz_k, -1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, D): a component k ~ Categorical(pi), then z ~ N(loc_k, exp(logvar_k))."""
        k = torch.multinomial(F.softmax(self.logits.detach(), -1), n, replacement=True, generator=generator)
        return maths.reparameterize(self.loc[k], self.logvar[k], self._randn(n, generator))

    def to_distribution(self) -> torch.distributions.Distribution:
        """The same density as torch.distributions.MixtureSameFamily, event shape (D,)."""
        d = torch.distributions
        comp = d.Independent(d.Normal(self.loc, torch.exp(0.5 * self.logvar)), 1)
        return d.MixtureSameFamily(d.Categorical(logits=self.logits), comp)


class VampPrior(Prior):
    """p(z) = 1/K sum_k q(z | u_k): the model's Gaussian encoder at K learned pseudo-inputs u_k.

    Tomczak & Welling 2018, "VAE with a VampPrior"; cf. jmtomczak/vae_vampprior. The encoder is
    not owned by the prior: hand it over with :meth:`attach` (or the ``encode`` argument). It is
    stored outside nn.Module's registry, so its parameters appear once in the model's state_dict
    (under the encoder) and never under the prior. ``copy.deepcopy`` of a model that holds both
    keeps them linked, because deepcopy copies a bound method's ``__self__`` through its memo.

    Args:
        latent_dim: D.
        components: K, the number of pseudo-inputs.
        input_shape: (C, H, W) of the images the encoder reads.
        encode: x (K, C, H, W) in [0, 1] -> (loc, logvar), each (K, D); usually the bound method
            ``model.encoder.forward`` (a conditional encoder needs a wrapper that adds labels).
    """

    _encode: Encode | None

    def __init__(
        self, latent_dim: int, components: int, input_shape: tuple[int, int, int], encode: Encode | None = None
    ):
        super().__init__(latent_dim)
        if components < 1:
            raise ConfigError(f"a VampPrior needs components >= 1, got {components}")
        self.input_shape = tuple(input_shape)
        # Pseudo-pixels are sigmoid(pseudo_logits). The reference maps raw values through
        # hardtanh(0, 1), whose gradient is exactly 0 outside [0, 1]: a pseudo-pixel that steps past
        # an edge is frozen for good (its MNIST loader starts them at N(0.05, 0.01), near the lower
        # edge; its command-line default, mean -0.05, would start most of them frozen). Sigmoid keeps
        # pixels in (0, 1) and never stops the gradient. Starting at logits N(0, 0.04^2) gives pixels
        # 0.5 +- 0.01, a grey image with small noise, seeded by the global torch RNG: a start that
        # differs from the reference's, written down in the vampprior preset.
        self.pseudo_logits = nn.Parameter(0.04 * torch.randn(components, *self.input_shape))
        object.__setattr__(self, "_encode", None)
        if encode is not None:
            self.attach(encode)

    @classmethod
    def build(cls, latent_dim: int, components: int, input_shape: tuple[int, int, int]) -> Prior:
        return cls(latent_dim, components, input_shape)

    @property
    def components(self) -> int:
        return self.pseudo_logits.shape[0]

    def settings(self) -> dict[str, Any]:
        return {"prior_components": self.components}

    def attach(self, encode: Encode) -> VampPrior:
        """Use ``encode`` as q(z|x). Stored with object.__setattr__ so that nn.Module registers
        nothing, even when ``encode`` is an nn.Module. Returns self."""
        if not callable(encode):
            raise TypeError(f"encode must be callable x -> (loc, logvar), got {type(encode).__name__}")
        object.__setattr__(self, "_encode", encode)
        return self

    def pseudo_inputs(self) -> Tensor:
        """The K pseudo-inputs u_k: (K, C, H, W), pixels in (0, 1)."""
        return torch.sigmoid(self.pseudo_logits)

    def component_params(self) -> tuple[Tensor, Tensor]:
        """(loc, logvar), each (K, D): the encoder's posterior at every pseudo-input."""
        if self._encode is None:
            raise RuntimeError("VampPrior has no encoder: call prior.attach(model.encoder) first")
        return self._encode(self.pseudo_inputs())

    def log_prob(self, z: Tensor) -> Tensor:
        """logsumexp_k log q(z | u_k) - log K. z: (..., D). Returns (...) nats.

        The pseudo-inputs are encoded once per call; the component densities are two matrix
        products (objectives.gaussian_components_log_prob), so memory is (..., K).
        """
        loc, logvar = self.component_params()  # (K, D) each
        log_qz_k = maths.gaussian_components_log_prob(z, loc, logvar)  # (..., K)
        return torch.logsumexp(log_qz_k, -1) - math.log(self.components)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, D): k uniform in 0..K-1, then z ~ q(z | u_k)."""
        loc, logvar = self.component_params()
        k = torch.randint(self.components, (n,), generator=generator, device=loc.device)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=loc.device, dtype=loc.dtype)
        return maths.reparameterize(loc[k], logvar[k], eps)


class FlowPrior(Prior):
    """p(z) = N(u; 0, I) |det du/dz| with u = f(z), f a masked autoregressive flow (MAF,
    Papamakarios et al. 2017): T MAF steps made of MADE layers, the order of z reversed between
    steps. The flow runs from z to the noise u, so that log p(z) is one pass per step, what the
    KL estimate log q(z|x) - log p(z) needs at every training step; a draw inverts it, z = f^-1(u)
    with u ~ N(0, I) from the given generator, in D passes per step (seeded and exact).

    The steps start near the identity (see :class:`vaelab.models.flows.MAFStep`), so the prior
    starts near N(0, I). Not N(0, I) itself (``standard_normal`` is False): the KL comes from the
    draws.

    Args:
        latent_dim: D.
        steps: T, the number of MAF steps (the config's prior_components; default 4).
        hidden: the MADE's hidden width(s); None: max(64, 2 D), flow_hidden's default.
    """

    def __init__(self, latent_dim: int, steps: int = 4, hidden: int | tuple[int, ...] | None = None):
        super().__init__(latent_dim)
        if steps < 1:
            raise ConfigError(f"a flow prior needs steps (prior_components) >= 1, got {steps}")
        self.flow = MAF(latent_dim, steps, 0, max(64, 2 * latent_dim) if hidden is None else hidden)

    @classmethod
    def build(cls, latent_dim: int, components: int, input_shape: tuple[int, int, int]) -> Prior:
        return cls(latent_dim, components)

    @property
    def steps(self) -> int:
        return self.flow.steps

    def settings(self) -> dict[str, Any]:
        return {"prior_components": self.steps}

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(f(z); 0, I) + log |det df/dz|. z: (..., D). Returns (...) nats."""
        u, logabsdet = self.flow(z)
        return maths.std_normal_log_prob(u) + logabsdet

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, D): u ~ N(0, I) from `generator`, then z = f^-1(u). Differentiable in the flow's weights."""
        return self.flow.inverse(self._randn(n, generator))[0]


# name -> Prior class: a live view of the registry's entries that build a module (all but uniform,
# which the discrete models hold themselves). Register a prior in vaelab.models.registry.PRIORS.
PRIORS: Mapping[str, type[Prior]] = Implementations(registry.PRIORS, "impl")


def make_prior(name: str, latent_dim: int, components: int, input_shape: tuple[int, int, int]) -> Prior:
    """Build the prior called ``name`` (a key of PRIORS). A VampPrior still needs ``attach(encode)``.

    Raises:
        ConfigError: ``name`` is not a key of PRIORS.
    """
    if name not in PRIORS:
        load_plugins()  # a plugin may register it
    if name not in PRIORS:
        raise ConfigError(f"unknown prior {name!r}: choose one of {', '.join(sorted(PRIORS))}")
    return PRIORS[name].build(latent_dim, components, input_shape)


def prior_settings(prior: Prior, cfg: ModelConfig) -> dict[str, Any]:
    """The ModelConfig settings that rebuild `prior` in a model of `cfg`: its registered name, and
    prior_components where the prior has a number of components other than cfg would give it.

    Raises:
        ConfigError: the prior's class is not registered (a run folder could not name it).
    """
    names = [name for name, cls in PRIORS.items() if type(prior) is cls]
    if not names:
        raise ConfigError(
            f"{type(prior).__name__} is not a registered prior, so a run folder could not record it: register "
            f"it first, vaelab.models.registry.PRIORS.register(PriorEntry(NAME, SUMMARY, {type(prior).__name__}))"
        )
    out: dict[str, Any] = {"prior": names[0]}
    k = prior.settings().get("prior_components")
    default = cfg.prior_components or registry.PRIORS[names[0]].default_components
    if k is not None and k != default:
        out["prior_components"] = k
    return out

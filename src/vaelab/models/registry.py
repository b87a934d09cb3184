"""The model parts' registries: PRIORS, POSTERIORS, LIKELIHOODS and ARCHITECTURES.

Each built-in part is one entry here: its name (spelled nowhere else), a one-line summary for
--help, the implementation it builds (a "package.module:attribute" string, imported on first use,
or a callable), and the flags that say what it goes with. ``ModelConfig`` checks a config by asking
each of its parts (:func:`check_parts`), so the rules of which part goes with which live with the
parts, and a part added from your own code brings its rules along::

    from vaelab.models.registry import PRIORS, PriorEntry
    PRIORS.register(PriorEntry("student-t", "a Student-t per dimension", StudentT))

This module imports no torch (``vaelab.config`` reads it before torch loads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vaelab import registry as _registry  # the module, so that this one holds registries alone
from vaelab.errors import ConfigError
from vaelab.registry import resolve

if TYPE_CHECKING:
    from vaelab.config import ModelConfig

Ref = Callable[..., Any] | str  # an implementation, or "package.module:attribute" naming one


def _or(names: list[str]) -> str:
    """["a"] -> "a"; ["a", "b", "c"] -> "a, b or c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


@dataclass(frozen=True)
class PriorEntry:
    """A prior p(z): `impl` is a :class:`vaelab.models.priors.Prior` subclass, built with
    ``impl.build(latent_dim, components, input_shape)`` (the base class calls ``impl(latent_dim)``),
    or None for the discrete models' uniform prior (which the model holds itself).

    Whether the closed-form Gaussian KL applies is asked of the built prior (``standard_normal``),
    never of its name."""

    name: str
    summary: str
    impl: Ref | None
    description: str = ""  # p(z) in words for picture titles ("" : the name)
    discrete: bool = False  # the prior of the discrete posteriors, and of them alone
    hierarchy: bool = True  # may be the top layer's prior of a hierarchy (model.layers)
    # why a conditional model (num_classes > 0) cannot use it; "" when it can
    unconditional: str = ""
    default_components: int = 10  # what prior_components None means (mixtures: components, vamp: pseudo-inputs)

    def check(self, cfg: ModelConfig) -> None:
        if self.unconditional and cfg.num_classes:
            ok = [e.name for e in PRIORS if not e.unconditional and not e.discrete]
            raise ConfigError(
                f"prior {self.name}: {self.unconditional}, so a conditional model cannot use it; "
                f"use prior {_or(ok)} with --conditional"
            )


@dataclass(frozen=True)
class PosteriorEntry:
    """A posterior family q(z|x). `flow`: the transform (``cls(dim, steps, context_dim, hidden)``,
    returning (z, logabsdet)) that pushes the encoder's Gaussian forward, None for the Gaussian itself.
    `model`: the model class (``cls(cfg)``) of a posterior that makes its own family (VQ-VAE's codes,
    Gumbel-softmax categories); None builds a VAE, or a HierarchicalVAE for model.layers."""

    name: str
    summary: str
    flow: Ref | None = None
    model: Ref | None = None
    discrete: bool = False  # discrete latents: prior uniform, one layer, no labels
    grid: bool = False  # quantizes a grid of encoder outputs: needs an architecture with a grid
    categorical: bool = False  # latent_dim categorical variables of `categories` classes
    hierarchy: bool = False  # may be every layer's posterior of a hierarchy (model.layers)
    description: str = ""  # the latents in words, for messages ("": the posterior's name)

    def check(self, cfg: ModelConfig) -> None:
        if self.discrete != PRIORS[cfg.prior].discrete:
            discrete = ", ".join(e.name for e in POSTERIORS if e.discrete)
            uniform = " or ".join(e.name for e in PRIORS if e.discrete)
            raise ConfigError(
                f"posterior {cfg.posterior} with prior {cfg.prior}: the discrete posteriors ({discrete}) take "
                f"prior {uniform} (a vq model's code prior is learned afterwards by `vaelab train-prior`), and "
                f"prior {uniform} belongs to them alone"
                + (f" (use --prior {uniform}, or the vqvae / gumbel preset)" if self.discrete else "")
            )
        if self.discrete and (cfg.layers or cfg.num_classes):
            raise ConfigError(
                f"posterior {self.name}: discrete latents here are one layer and unconditional; "
                f"drop model.layers and num_classes"
            )
        if self.grid and not ARCHITECTURES[cfg.arch].grid:
            grids = _or([e.name for e in ARCHITECTURES if e.grid])
            raise ConfigError(
                f"posterior {self.name} quantizes a grid of encoder outputs: use arch {grids}, not {cfg.arch}"
            )
        if self.categorical and cfg.categories < 2:
            raise ConfigError(f"posterior {self.name} needs categories >= 2, got {cfg.categories}")


@dataclass(frozen=True)
class LikelihoodEntry:
    """A pixel likelihood p(x|z): `impl(cfg)` returns a :class:`vaelab.models.likelihoods.PixelLikelihood`,
    whose flags (density_of_grey, bias_is_logit, ...) training and evaluation read instead of its name."""

    name: str
    summary: str
    impl: Ref

    def check(self, cfg: ModelConfig) -> None:
        """Every setting of a built-in likelihood is checked on its own (fixed_scale, mixture_components)."""


@dataclass(frozen=True)
class ArchitectureEntry:
    """The encoder and decoder networks: ``encoder(cfg)`` gives q(z|x)'s (loc, logvar) from x,
    ``decoder(cfg, num_params)`` p(x|z)'s parameters from z."""

    name: str
    summary: str
    encoder: Ref
    decoder: Ref
    dense: bool = False  # dense layers (the gated activation, and hierarchies, need them)
    grid: bool = False  # stride-2 convolutions over `channels`: H and W divisible by 2**len(channels)
    residual: bool = False  # cfg.res_blocks residual blocks at the coarsest scale, each side

    def networks(self) -> tuple[Any, Any]:
        """(encoder class, decoder class)."""
        return resolve(self.encoder), resolve(self.decoder)

    def check(self, cfg: ModelConfig) -> None:
        if cfg.activation == "gated" and not self.dense:
            raise ConfigError(f"activation gated is a dense layer of MLP models; arch {self.name} takes another")
        if self.grid:
            c, h, w = cfg.input_shape
            factor = 2 ** len(cfg.channels)
            if not cfg.channels or h % factor or w % factor:
                raise ConfigError(
                    f"{self.name} arch needs H and W divisible by 2**len(channels) = {factor}; "
                    f"got input_shape {cfg.input_shape} and channels {cfg.channels}: resize the images "
                    f"(--image-size) or use {len(cfg.channels) - 1 or 1} stride-2 layers"
                )


PRIORS: _registry.Registry[PriorEntry] = _registry.Registry("prior", "model.prior")
POSTERIORS: _registry.Registry[PosteriorEntry] = _registry.Registry("posterior", "model.posterior")
LIKELIHOODS: _registry.Registry[LikelihoodEntry] = _registry.Registry("likelihood", "model.likelihood")
ARCHITECTURES: _registry.Registry[ArchitectureEntry] = _registry.Registry("architecture", "model.arch")

_P = "vaelab.models.priors:"
PRIORS.register(PriorEntry("normal", "N(0, I)", _P + "StandardNormal", description="N(0, I)"))
PRIORS.register(
    PriorEntry("mog", "a learned mixture of Gaussians", _P + "MixturePrior", description="the learned mixture prior")
)
PRIORS.register(
    PriorEntry(
        "vamp",
        "the VampPrior (the encoder at learned pseudo-inputs)",
        _P + "VampPrior",
        description="the VampPrior",
        hierarchy=False,
        unconditional="the pseudo-inputs carry no label",
        default_components=500,
    )
)
PRIORS.register(
    PriorEntry(
        "flow",
        "a masked autoregressive flow on N(0, I) (prior_components: its steps)",
        _P + "FlowPrior",
        description="the flow prior",
        default_components=4,
    )
)
PRIORS.register(
    PriorEntry(
        "uniform",
        "uniform over the codes or categories (the discrete posteriors')",
        None,
        description="the uniform prior over the categories",
        discrete=True,
        hierarchy=False,
    )
)

POSTERIORS.register(PosteriorEntry("gaussian", "a diagonal Gaussian", hierarchy=True))
POSTERIORS.register(
    PosteriorEntry("planar", "the Gaussian through planar flow steps", flow="vaelab.models.flows:PlanarFlows")
)
POSTERIORS.register(
    PosteriorEntry("iaf", "the Gaussian through inverse autoregressive flow steps", flow="vaelab.models.flows:IAF")
)
POSTERIORS.register(
    PosteriorEntry(
        "vq",
        "VQ-VAE: the nearest of codebook_size codes (prior uniform)",
        model="vaelab.models.vqvae:VQVAE",
        discrete=True,
        grid=True,
        description="VQ-VAE codes (a quantizer and a code prior)",
    )
)
POSTERIORS.register(
    PosteriorEntry(
        "gumbel",
        "categorical latents, Gumbel-softmax relaxed (prior uniform)",
        model="vaelab.models.gumbel:GumbelVAE",
        discrete=True,
        categorical=True,
        description="categorical (Gumbel-softmax) latents",
    )
)

_L = "vaelab.models.likelihoods:"
for _name, _summary, _impl in (
    ("bernoulli", "binary pixels", "bernoulli"),
    ("bernoulli-ar", "binary pixels, each also given the pixels before it", "bernoulli_ar"),
    ("gaussian", "a Gaussian per pixel, learned variance", "gaussian"),
    ("gaussian-fixed", "a Gaussian per pixel of std fixed_scale", "gaussian_fixed"),
    ("continuous-bernoulli", "the continuous Bernoulli on [0, 1]", "continuous_bernoulli"),
    ("logistic-mixture", "8-bit pixels, a discretized logistic mixture", "logistic_mixture"),
):
    LIKELIHOODS.register(LikelihoodEntry(_name, _summary, _L + _impl))

_N = "vaelab.models.networks:"
ARCHITECTURES.register(ArchitectureEntry("mlp", "dense layers", _N + "MLPEncoder", _N + "MLPDecoder", dense=True))
ARCHITECTURES.register(
    ArchitectureEntry("conv", "stride-2 convolutions", _N + "ConvEncoder", _N + "ConvDecoder", grid=True)
)
ARCHITECTURES.register(
    ArchitectureEntry(
        "resnet",
        "conv with residual blocks (res_blocks)",
        _N + "ConvEncoder",
        _N + "ConvDecoder",
        grid=True,
        residual=True,
    )
)


def check_hierarchy(cfg: ModelConfig) -> None:
    """A hierarchy (model.layers) is made of the parts whose entries say they stack."""
    if not cfg.layers:
        return
    clash = [
        f"{k} {getattr(cfg, k)!r}"
        for k, ok in (
            ("arch", ARCHITECTURES[cfg.arch].dense),
            ("posterior", POSTERIORS[cfg.posterior].hierarchy),
            ("prior", PRIORS[cfg.prior].hierarchy),
            ("num_classes", cfg.num_classes == 0),
        )
        if not ok
    ]
    if clash:
        priors = _or([e.name for e in PRIORS if e.hierarchy])
        raise ConfigError(
            f"a hierarchical model (model.layers) is an MLP with Gaussian layers, a {priors} prior on the top "
            f"layer and no labels; got {', '.join(clash)}"
        )


def check_parts(cfg: ModelConfig) -> None:
    """Each part of `cfg` checks what it needs of the others (ModelConfig calls this last)."""
    POSTERIORS[cfg.posterior].check(cfg)
    PRIORS[cfg.prior].check(cfg)
    check_hierarchy(cfg)
    ARCHITECTURES[cfg.arch].check(cfg)
    LIKELIHOODS[cfg.likelihood].check(cfg)


class Implementations(Mapping[str, Any]):
    """name -> the resolved `field` of each entry of `registry` that has one, read live (entries
    registered later appear): priors.PRIORS (the Prior classes) and flows.FLOWS are such views."""

    def __init__(self, registry: _registry.Registry[Any], field: str):
        self._registry, self._field = registry, field

    def _refs(self) -> dict[str, Any]:
        return {e.name: ref for e in self._registry if (ref := getattr(e, self._field)) is not None}

    def __getitem__(self, name: str) -> Any:
        return resolve(self._refs()[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs())

    def __len__(self) -> int:
        return len(self._refs())

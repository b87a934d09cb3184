"""The training objectives: one :class:`ObjectiveSpec` per name in the OBJECTIVES registry.

A spec says everything the rest of vaelab needs to know about an objective, so that nothing else
spells its name: the function that computes it (tensors, in a module of this package, imported on
first use), the terms it reports, the gradient estimators and draws it takes, the settings it reads,
the model capabilities it needs, whether it can run in several processes, an optional auxiliary
network trained beside the model (FactorVAE's discriminator) and the extra seeded noise it draws
per step. Config checks, `fit`, the CLI's --objective choices and `vaelab compare` all read it.

Add one from your own code (docs/family.md, "Adding an objective")::

    from vaelab.objectives import OBJECTIVES, ObjectiveSpec
    OBJECTIVES.register(ObjectiveSpec("my-elbo", "the ELBO, mine", value=my_value_function))

This module imports no torch (the CLI reads it before torch loads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vaelab.errors import ConfigError
from vaelab.registry import Registry, resolve

if TYPE_CHECKING:
    from vaelab.config import TrainConfig

# The model capabilities an objective may need (BaseVAE flags):
#   "gaussian": one diagonal Gaussian q(z|x) and the N(0, I) prior (loc, logvar; supports_disentangling)
#   "weights":  log p(z) - log q(z|x) with gradients at every draw (continuous latents; supports_bounds)
CAPABILITIES = ("gaussian", "weights")


@dataclass(frozen=True)
class Auxiliary:
    """A network trained beside the model with its own optimizer, saved in the training checkpoint
    (not in model.safetensors). `build(latent_dim, train_config)` returns (module, optimizer); the
    objective's value function gets the module and returns its loss as the term `loss_term`, which
    fit() minimises with that optimizer after the model's step."""

    build: Callable[..., Any] | str
    loss_term: str


@dataclass(frozen=True)
class ObjectiveSpec:
    """One training objective.

    value: (draws, cfg, step) -> Outcome, or "module:function"; see vaelab.objectives.base.
    terms: what it reports beside the ELBO's parts, each (B,) nats (metrics.csv train_NAME).
    estimators: the gradient estimators it takes (reparam, stl, dreg).
    draws: "k" (k importance samples per image), "groups" (m groups of k: train.m applies) or
        "one" (one draw per image: k 1 and estimator reparam).
    kl_weight: beta and warm-up weigh its KL ("beta"), or it is a bound on log p(x) with no KL
        weight (None), or another setting weighs its penalty (the setting's name; beta then refused,
        except where the setting is "beta" itself).
    is_bound: its value is a lower bound on log p(x) (reported as such); False for penalised ones.
    needs: model capabilities (CAPABILITIES) it needs.
    whole_batch: its penalty is estimated from the whole batch's codes: one process only.
    two_gradients: its surrogate has a part per half of the model (piwae): one process only.
    settings: the TrainConfig fields it reads (documentation, and `vaelab compare`).
    noise: extra seeded noise drawn per step for the global batch, shape (batch, latent_dim):
        "uniform" or "normal" (None: none); passed to `value` as step.noise, this process's slice.
    auxiliary: an Auxiliary network, or None.
    free_bits: takes train.free_bits (the per-dimension KL floor).
    estimator_note: the advice given when an estimator is refused (default: the ones it takes).
    check: extra checks of a TrainConfig (raise ConfigError), beyond the generic ones above.
    """

    name: str
    summary: str
    value: Callable[..., Any] | str
    terms: tuple[str, ...] = ()
    estimators: tuple[str, ...] = ("reparam", "stl")
    draws: str = "k"
    kl_weight: str | None = "beta"
    is_bound: bool = True
    needs: tuple[str, ...] = ()
    whole_batch: bool = False
    two_gradients: bool = False
    settings: tuple[str, ...] = ()
    noise: str | None = None
    auxiliary: Auxiliary | None = None
    free_bits: bool = False
    estimator_note: str = ""
    check: Callable[[TrainConfig], None] | str | None = None

    def __post_init__(self) -> None:
        if self.draws not in ("k", "groups", "one"):
            raise ConfigError(f"objective {self.name}: draws must be k, groups or one, got {self.draws!r}")
        if self.noise not in (None, "uniform", "normal"):
            raise ConfigError(f"objective {self.name}: noise must be None, uniform or normal, got {self.noise!r}")
        unknown = set(self.needs) - set(CAPABILITIES)
        if unknown:
            raise ConfigError(f"objective {self.name}: unknown capabilities {sorted(unknown)}; known: {CAPABILITIES}")

    @property
    def compute(self) -> Callable[..., Any]:
        """The value function, imported on first use."""
        return resolve(self.value)

    def all_terms(self) -> tuple[str, ...]:
        """Its terms, then its auxiliary network's loss (in metrics.csv order)."""
        return self.terms + ((self.auxiliary.loss_term,) if self.auxiliary else ())


OBJECTIVES: Registry[ObjectiveSpec] = Registry("objective", "train.objective")


def _names(test: Callable[[ObjectiveSpec], bool]) -> str:
    names = [s.name for s in OBJECTIVES if test(s)]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def check_train_config(tc: TrainConfig) -> None:
    """The generic rules that tie train.objective to the other training settings, read from its spec
    (called by TrainConfig's constructor)."""
    spec = OBJECTIVES[tc.objective]
    if tc.m > 1 and spec.draws != "groups":
        raise ConfigError(
            f"m {tc.m} groups of samples belong to the {_names(lambda s: s.draws == 'groups')} objectives; "
            f"objective {spec.name} uses k alone (set m 1)"
        )
    if spec.draws == "one" and (tc.k != 1 or tc.estimator != "reparam"):
        raise ConfigError(
            f"objective {spec.name} is a one-draw ELBO with a penalty: use k 1 and estimator reparam "
            f"(got k {tc.k}, estimator {tc.estimator})"
        )
    if tc.estimator not in spec.estimators:
        if tc.estimator == "dreg":
            raise ConfigError(
                f"estimator dreg (doubly reparameterized) is for the {_names(lambda s: 'dreg' in s.estimators)} "
                f"objectives; with {spec.name} use estimator {' or '.join(reversed(spec.estimators))}"
            )
        raise ConfigError(
            f"estimator {tc.estimator} with objective {spec.name}: "
            + (spec.estimator_note or f"use estimator {' or '.join(spec.estimators)}")
        )
    if tc.free_bits and (not spec.free_bits or tc.estimator != "reparam"):
        raise ConfigError(
            f"free_bits {tc.free_bits:g} clamps the per-dimension KL of objective elbo with estimator "
            f"reparam; objective {spec.name} with estimator {tc.estimator} has none: set free_bits 0"
        )
    if spec.kl_weight is None and (tc.beta != 1.0 or tc.warmup_epochs):
        raise ConfigError(
            f"the {spec.name} objective is a bound on log p(x) with no KL weight: drop beta {tc.beta!r} "
            f"and warmup_epochs {tc.warmup_epochs!r}, or use objective elbo"
        )
    if spec.kl_weight not in (None, "beta"):
        if tc.warmup_epochs:
            raise ConfigError(
                f"objective {spec.name} has no KL warm-up: drop warmup_epochs {tc.warmup_epochs}"
                + (" (capacity anneals its target with capacity_steps)" if "capacity_steps" in spec.settings else "")
            )
        if tc.beta != 1.0:
            raise ConfigError(
                f"objective {spec.name} weighs its penalty with {spec.kl_weight}, not beta: drop beta {tc.beta!r}"
            )
    if spec.check is not None:
        resolve(spec.check)(tc)


def check_model(spec: ObjectiveSpec, model: Any, world: int, describe: str) -> None:
    """Refuse a model (BaseVAE) or a process count that `spec` cannot train, naming them."""
    if "gaussian" in spec.needs and not model.supports_disentangling:
        raise ConfigError(
            f"objective {spec.name} is written on one Gaussian q(z|x) and the N(0, I) prior; this model "
            f"({describe}, prior {model.cfg.prior}) has another: use posterior gaussian, "
            f"prior normal and no model.layers"
        )
    if spec.whole_batch and world > 1:
        raise ConfigError(
            f"objective {spec.name} estimates its penalty from the codes of the whole batch, which "
            f"one process of several does not see; train it in one process"
        )
    if "weights" in spec.needs and not model.supports_bounds:
        raise ConfigError(
            f"objective {spec.name} weighs importance samples by log p(z) - log q(z|x) with their gradients, "
            f"which this model's discrete latents ({describe}) do not have; use objective elbo"
        )
    if spec.two_gradients and world > 1:
        raise ConfigError(
            f"objective {spec.name} takes two gradients per step, which DistributedDataParallel does not "
            f"average; train it in one process"
        )


def describe(tc: TrainConfig) -> str:
    """A short description of the training objective, e.g. "elbo beta=4", "iwae k=5 dreg"."""
    spec = OBJECTIVES[tc.objective]
    if spec.kl_weight == "beta" and spec.draws == "k":
        text = spec.name if tc.beta == 1 else f"{spec.name} beta={tc.beta:g}"
    else:
        text = f"{spec.name} k={tc.k}" + (f" m={tc.m}" if spec.draws == "groups" else "")
    return text if tc.estimator == "reparam" else f"{text} {tc.estimator}"


def _check_infovae(tc: TrainConfig) -> None:
    if not 0.0 <= tc.info_alpha <= 1.0:
        raise ConfigError(f"info_alpha must lie in [0, 1] (1 - info_alpha weighs the KL), got {tc.info_alpha!r}")
    if tc.info_alpha + tc.mmd_weight - 1.0 < 0:
        raise ConfigError(
            f"info_alpha {tc.info_alpha:g} + mmd_weight {tc.mmd_weight:g} - 1 weighs the MMD and must be >= 0: "
            f"raise mmd_weight to at least {1.0 - tc.info_alpha:g}"
        )


# What the penalised ELBOs share: one draw per image, the reparameterization gradient, one Gaussian
# q(z|x) with the N(0, I) prior, a penalty estimated over the whole batch (one process), not a bound
_PENALISED: dict[str, Any] = {
    "estimators": ("reparam",),
    "draws": "one",
    "is_bound": False,
    "needs": ("gaussian",),
    "whole_batch": True,
}
_BOUNDS = "vaelab.objectives.bounds"
_DIS = "vaelab.objectives.disentangling"
for _spec in (
    ObjectiveSpec(
        "elbo",
        "the ELBO, E_q log p(x|z) - beta KL (beta-VAE for beta != 1; train.free_bits)",
        f"{_BOUNDS}:elbo",
        settings=("beta", "warmup_epochs", "free_bits"),
        free_bits=True,
    ),
    ObjectiveSpec(
        "iwae",
        "the importance-weighted bound of k draws (Burda et al. 2016)",
        f"{_BOUNDS}:iwae",
        estimators=("reparam", "stl", "dreg"),
        kl_weight=None,
        needs=("weights",),
        settings=("k",),
    ),
    ObjectiveSpec(
        "miwae",
        "the mean of m IWAE bounds of k draws each (Rainforth et al. 2018)",
        f"{_BOUNDS}:miwae",
        estimators=("reparam", "stl", "dreg"),
        draws="groups",
        kl_weight=None,
        needs=("weights",),
        settings=("k", "m"),
    ),
    ObjectiveSpec(
        "piwae",
        "IWAE of m*k draws for the decoder, MIWAE(m, k) for the encoder (Rainforth et al. 2018)",
        f"{_BOUNDS}:piwae",
        estimators=("reparam",),
        draws="groups",
        kl_weight=None,
        needs=("weights",),
        two_gradients=True,
        settings=("k", "m"),
        estimator_note="piwae already takes a gradient per part of the model; use estimator reparam, "
        "or objective miwae with estimator stl or dreg",
    ),
    ObjectiveSpec(
        "ciwae",
        "beta ELBO + (1 - beta) IWAE from the same k draws (train.ciwae_beta; Rainforth et al. 2018)",
        f"{_BOUNDS}:ciwae",
        kl_weight=None,
        needs=("weights",),
        settings=("k", "ciwae_beta"),
    ),
    ObjectiveSpec(
        "betatc",
        "ELBO - (beta - 1) TC, the total correlation estimated over the batch (Chen et al. 2018)",
        f"{_DIS}:betatc",
        terms=("mi", "tc", "dwkl"),
        kl_weight="beta",
        **_PENALISED,
        settings=("beta", "tc_estimator"),
    ),
    ObjectiveSpec(
        "factor",
        "ELBO - gamma TC, TC from a discriminator trained beside the model (Kim & Mnih 2018)",
        f"{_DIS}:factor",
        terms=("tc_disc",),
        kl_weight="factor_gamma",
        **_PENALISED,
        settings=("factor_gamma", "disc_lr"),
        noise="uniform",
        auxiliary=Auxiliary(f"{_DIS}:build_discriminator", "disc_loss"),
    ),
    ObjectiveSpec(
        "dip-i",
        "ELBO - DIP-VAE-I's penalty on the covariance of the posterior means (Kumar et al. 2018)",
        f"{_DIS}:dip_i",
        terms=("dip_penalty",),
        kl_weight="dip_lambda_od",
        **_PENALISED,
        settings=("dip_lambda_od", "dip_lambda_d"),
    ),
    ObjectiveSpec(
        "dip-ii",
        "ELBO - DIP-VAE-II's penalty on the aggregate posterior's covariance (Kumar et al. 2018)",
        f"{_DIS}:dip_ii",
        terms=("dip_penalty",),
        kl_weight="dip_lambda_od",
        **_PENALISED,
        settings=("dip_lambda_od", "dip_lambda_d"),
    ),
    ObjectiveSpec(
        "capacity",
        "log p(x|z) - gamma |KL - C|, C rising to capacity_max (Burgess et al. 2018)",
        f"{_DIS}:capacity",
        terms=("capacity",),
        kl_weight="capacity_gamma",
        **_PENALISED,
        settings=("capacity_max", "capacity_steps", "capacity_gamma"),
    ),
    ObjectiveSpec(
        "wae",
        "WAE-MMD: log p(x|z) - mmd_weight MMD(q(z), N(0, I)), train.mmd_kernel imq or rbf (Tolstikhin et al. 2018)",
        "vaelab.objectives.mmd:wae",
        terms=("mmd",),
        kl_weight="mmd_weight",
        **_PENALISED,
        settings=("mmd_weight", "mmd_kernel", "mmd_scale"),
        noise="normal",
    ),
    ObjectiveSpec(
        "infovae",
        "InfoVAE: log p(x|z) - (1 - info_alpha) KL - (info_alpha + mmd_weight - 1) MMD (Zhao et al. 2019)",
        "vaelab.objectives.mmd:infovae",
        terms=("mmd",),
        kl_weight="mmd_weight",
        **_PENALISED,
        settings=("mmd_weight", "info_alpha", "mmd_kernel", "mmd_scale"),
        noise="normal",
        check=_check_infovae,
    ),
):
    OBJECTIVES.register(_spec)

__all__ = ["CAPABILITIES", "OBJECTIVES", "Auxiliary", "ObjectiveSpec", "check_model", "check_train_config", "describe"]

"""What every objective is written against: a model's answer (:class:`ModelAnswer`), the step's
inputs (:class:`Step`), and what it returns (:class:`Outcome`); :func:`training_objective` runs the
spec of a TrainConfig's objective on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor

from vaelab.maths import elbo
from vaelab.objectives import OBJECTIVES

if TYPE_CHECKING:
    from vaelab.config import TrainConfig


class ModelAnswer(Protocol):
    """What a model answers for K draws z ~ q(z|x) (vaelab.models.Draws is the implementation):
    per-draw log p(x|z), log p(z), log q(z|x) and log w = their sum, each (K, B) nats, the draws z
    (K, B, D), the closed-form KL (B,) where one exists (else None), and the parameters (B, D) of
    q(z|x)'s Gaussian where the model has one (else None); a training penalty (B,) of the model's own
    parts (else None) and the terms it reports."""

    z: Tensor
    log_px_z: Tensor
    kl: Tensor | None
    loc: Tensor | None
    logvar: Tensor | None
    penalty: Tensor | None
    terms: dict[str, Tensor]

    @property
    def log_pz(self) -> Tensor: ...

    @property
    def log_qz_x(self) -> Tensor: ...

    @property
    def log_w(self) -> Tensor: ...


@dataclass(frozen=True)
class Step:
    """The inputs of one training step beside the model's answer and the TrainConfig:
    klw, the KL weight now (None: train.beta; warm-up makes it rise); capacity, the KL target C now
    (capacity); dataset_size, the training set's size (betatc's estimator); aux, the objective's
    auxiliary network (ObjectiveSpec.auxiliary) or None; noise, this process's slice of the extra
    noise the spec draws (ObjectiveSpec.noise) or None."""

    klw: float | None = None
    capacity: float = 0.0
    dataset_size: int = 0
    aux: Any = None
    noise: Tensor | None = None


@dataclass
class Outcome:
    """An objective's answer, each (B,) nats, higher is better:
    surrogate: what training maximises (its gradient is the estimator's);
    bound: the objective's value (equals the surrogate except for DReG);
    elbo, log_px_z, kl: the ELBO and its parts from the same draws, for logging (kl is the closed
      form where the model has one, else the mean of log q - log p over the draws);
    terms: what the objective (ObjectiveSpec.terms) and the model report beside those;
    inference: for an objective with two gradients (piwae), the surrogate of q(z|x)'s parameters
      (surrogate is then the generative parameters'); None otherwise."""

    surrogate: Tensor
    bound: Tensor
    elbo: Tensor
    log_px_z: Tensor
    kl: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    inference: Tensor | None = None


def elbo_parts(d: ModelAnswer) -> tuple[Tensor, Tensor, Tensor]:
    """(elbo, log_px_z, kl) of the draws, (B,) nats: the closed-form KL where the model gives one
    (same expectation, lower variance), else the mean of log q(z|x) - log p(z) over the draws."""
    rec = d.log_px_z.mean(0)  # (B,)
    kl = d.kl if d.kl is not None else (d.log_qz_x - d.log_pz).mean(0)
    return elbo(rec, kl), rec, kl


def training_objective(d: ModelAnswer, cfg: TrainConfig, step: Step | None = None) -> Outcome:
    """The objective cfg.objective (a name in OBJECTIVES) on a model's answer `d`, with the
    settings of `cfg` and the step's inputs.

    A model's own penalty (d.penalty, e.g. VQ-VAE's commitment loss) is subtracted from the
    surrogate alone, and its terms (d.terms) join the objective's: neither is part of a bound.
    """
    spec = OBJECTIVES[cfg.objective]
    out: Outcome = spec.compute(d, cfg, step or Step())
    if d.penalty is not None:
        if out.inference is not None:
            raise ValueError("a model with a training penalty has no two-part (piwae) surrogate")
        out.surrogate = out.surrogate - d.penalty
    if d.terms:
        out.terms = {**out.terms, **d.terms}
    return out


def klw_of(cfg: TrainConfig, step: Step) -> float:
    """The KL weight of this step: step.klw, else cfg.beta."""
    return cfg.beta if step.klw is None else step.klw


__all__ = ["ModelAnswer", "Outcome", "Step", "elbo_parts", "klw_of", "training_objective"]

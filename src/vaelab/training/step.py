"""One training step, apart from the loop that repeats it: the optimizer (Adam, fused where the build
has it), the objective's auxiliary network, the differentiable forward pass (the model's draws, then
the objective; compiled on request) and the update (the loss over the global batch, its gradients,
clipping, the optimizer steps). fit (loop.py) calls these in this order."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from vaelab.config import TrainConfig
from vaelab.models import BaseVAE
from vaelab.objectives import ObjectiveSpec
from vaelab.objectives.base import Outcome, Step, training_objective
from vaelab.registry import resolve
from vaelab.training.batches import Batch


def compile_mode() -> str | None:
    """torch.compile mode of the training step (TrainConfig.compile): env VAELAB_COMPILE_MODE, e.g.
    "reduce-overhead" (CUDA graphs) or "max-autotune-no-cudagraphs"; unset, inductor's default."""
    return os.environ.get("VAELAB_COMPILE_MODE") or None


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam; fused (one kernel for all parameters) where this torch build supports it, else foreach.
    (train.optimizer adam-normgrad is this Adam given normalised gradients: see `update`.)"""
    try:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, foreach=True)


def wrap_ddp(model: BaseVAE, device: torch.device) -> torch.nn.Module:
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def auxiliary(
    spec: ObjectiveSpec, model: BaseVAE, tc: TrainConfig, device: torch.device
) -> tuple[torch.nn.Module, torch.optim.Optimizer] | None:
    """The objective's auxiliary network and its optimizer (FactorVAE's discriminator), or None."""
    if spec.auxiliary is None:
        return None
    net, optimizer = resolve(spec.auxiliary.build)(model.cfg.latent_dim, tc)
    return net.to(device).train(), optimizer


def make_forward(
    net: torch.nn.Module,
    tc: TrainConfig,
    device: torch.device,
) -> Callable[[Batch, Step], Outcome]:
    """The differentiable part of a step: the model's draws, then the objective; compiled on request
    (on a GPU kernel launches bound a small model, docs/speed.md; on CPU eager is faster, torch 2.13)."""
    amp = torch.bfloat16 if tc.amp == "bf16" else None
    stop_q = tc.estimator in ("stl", "dreg")

    def forward(batch: Batch, step: Step) -> Outcome:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return training_objective(net(batch.x, batch.y, batch.eps, stop_q), tc, step)

    return torch.compile(forward, mode=compile_mode()) if tc.compile else forward


def update(
    model: BaseVAE,
    optimizer: torch.optim.Optimizer,
    aux: tuple[torch.nn.Module, torch.optim.Optimizer] | None,
    spec: ObjectiveSpec,
    out: Outcome,
    tc: TrainConfig,
    world: int,
    batch: Batch,
    device: torch.device,
) -> bool:
    """One optimizer step of the model (and then of the auxiliary network, on its loss term); False,
    with nothing changed, when the loss is not finite (checked on CPU, where it costs no sync)."""
    loss = _loss(out.surrogate, world, batch.size)
    if device.type == "cpu" and not math.isfinite(loss.item()):
        return False
    optimizer.zero_grad(set_to_none=True)
    if out.inference is not None:  # piwae: each part of the model has its own objective
        _backward_by_part(model, loss, _loss(out.inference, world, batch.size))
    else:
        loss.backward()
    if tc.optimizer == "adam-normgrad":
        normalize_gradients(model.parameters())
    if tc.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    optimizer.step()
    if aux is not None and spec.auxiliary is not None:  # the model's loss left gradients in it too
        aux[1].zero_grad(set_to_none=True)
        out.terms[spec.auxiliary.loss_term].mean().backward()
        aux[1].step()
    return True


def normalize_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Divide each tensor's gradient by its L2 norm + 1e-7, in place: the step of AdamNormGrad in the
    VampPrior code (jmtomczak/vae_vampprior, utils/optimizer.py) before its Adam update."""
    for p in params:
        if p.grad is not None:
            p.grad.div_(p.grad.norm() + 1e-7)


def _loss(surrogate: Tensor, world: int, gb: int) -> Tensor:
    """-mean of the surrogate over the global batch (DDP averages gradients over ranks, so the sum
    times world / gb)."""
    return -surrogate.mean() if world == 1 else -surrogate.sum() * (world / gb)


def _backward_by_part(model: BaseVAE, generative: Tensor, inference: Tensor) -> None:
    """Gradients of `generative` for the generative parameters and of `inference` for q(z|x)'s."""
    gen, inf = list(model.generative_parameters()), list(model.inference_parameters())
    for params, loss, keep in ((gen, generative, True), (inf, inference, False)):
        grads = torch.autograd.grad(loss, params, retain_graph=keep, allow_unused=True)
        for p_, g in zip(params, grads):
            p_.grad = g

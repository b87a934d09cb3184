"""Training: `fit()` is one loop that reads top to bottom (device, data, objective, optimizer, state,
then epochs of steps, each epoch ending in validation and a checkpoint).

Hot path choices, each measured in benchmarks/ (see BENCHMARKS.md):
- the whole dataset is one uint8 tensor on the device; a batch is an index into it, converted to
  float per batch (no per-sample Dataset/DataLoader, no host copies on a GPU; batches.py);
- shuffling, dynamic binarization and the reparameterization noise use explicit torch.Generators,
  whose states go into every checkpoint, so a resumed run is bit-identical on CPU (state.py);
- the running sums of an epoch stay on the device: no `.item()` per step on a GPU;
- fused Adam where the build has it (step.py, with the forward pass and the update of one step).

The objective is the spec OBJECTIVES[train.objective] (vaelab.objectives): its value function, its
terms, its auxiliary network (trained after each model step with its own optimizer) and its noise.
The process-group plumbing is in platform/distributed.py, the clean stop on SIGINT/SIGTERM in
platform/stop.py.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from vaelab import maths
from vaelab.config import RunConfig, TrainConfig
from vaelab.config_io import replace as replace_config
from vaelab.data import DataSplits, ImageData
from vaelab.errors import ConfigError, TrainingDiverged, TrainingInterrupted
from vaelab.evaluation.estimates import elbo_batches
from vaelab.models import BaseVAE
from vaelab.objectives import OBJECTIVES, check_model
from vaelab.objectives.base import Step
from vaelab.platform.cpu import flush_denormal, keep_freed_memory, resolve_threads, usable_cores
from vaelab.platform.device import resolve_device
from vaelab.platform.distributed import dist_info, peer_failures
from vaelab.platform.stop import AgreedStopFlag, StopFlag
from vaelab.run.checkpoint import BEST, load_weights, save_weights
from vaelab.run.folder import refuse_shipped
from vaelab.training.batches import Batches, mean_pixel
from vaelab.training.progress import Progress
from vaelab.training.schedules import kl_weight, lr_at
from vaelab.training.state import RunState
from vaelab.training.step import auxiliary, make_forward, make_optimizer, update, wrap_ddp

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochStats:
    """Mean ELBO and parts over a data split, nats per example (ELBO higher is better)."""

    elbo: float
    log_px_z: float
    kl: float
    n: int


@dataclass
class TrainResult:
    """What `fit` returns: the trained model, where it was written, the metrics and why it stopped."""

    model: BaseVAE
    run_dir: Path | None
    epochs: int
    steps: int
    metrics: list[dict[str, float]] = field(default_factory=list)
    test: EpochStats | None = None
    stopped: str = "completed"  # completed | early-stopping | time-budget


@peer_failures
@flush_denormal()  # subnormal Adam moments made every epoch after the first 35-40% slower on CPU
def fit(
    model: BaseVAE,
    splits: DataSplits,
    cfg: RunConfig,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    on_log: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
    preset: str | None = None,
) -> TrainResult:
    """Train `model` on `splits.train`, validating on `splits.val` each epoch; test ELBO at the end.

    Writes config.json (with `preset`, the name the run was made from, when given), checkpoint/model/
    best safetensors and metrics.csv into `run_dir` (rank 0), each atomically. With `resume=True` it
    continues exactly from run_dir's checkpoint; a shipped model's folder (zoo/ROW) is refused
    (ConfigError) before anything is written. Raises TrainingDiverged on a NaN/inf loss and
    TrainingInterrupted on SIGINT/SIGTERM, in both cases after leaving a good checkpoint behind.
    """
    cfg = replace(cfg, model=model.cfg)  # config.json records the model as it is (a prior swapped in, say)
    rank, world = dist_info()
    is_main = rank == 0
    run_path = Path(run_dir) if run_dir is not None else None
    if run_path is not None:  # the CLI refuses it before loading anything; this is the library's guard
        refuse_shipped(run_path, "training into it", "train into another folder")
    device, cfg = _device_and_threads(cfg)
    tc = cfg.train
    model.to(device).train()
    check_trainable(model, tc, world)
    if tc.batch_size % world:
        raise ConfigError(f"batch_size {tc.batch_size} must be divisible by the number of processes {world}")
    noise = torch.Generator(device).manual_seed(tc.seed + 1)  # reparameterization eps and binarization
    spec = OBJECTIVES[tc.objective]
    batches = Batches(splits, model, cfg, spec, device, (rank, world))
    optimizer = make_optimizer(model, tc, device)
    net = model if world == 1 else wrap_ddp(model, device)
    aux = auxiliary(spec, model, tc, device)
    term_names = spec.terms + model.term_names + ((spec.auxiliary.loss_term,) if spec.auxiliary else ())
    forward = make_forward(net, tc, device)
    state = RunState(run_path, is_main, model, optimizer, noise, aux, torch.zeros(4 + len(term_names), device=device))
    if resume:
        state.resume(cfg, device)
    else:
        if tc.init_output_bias and model.likelihood.bias_is_logit:
            model.init_output_bias(mean_pixel(splits.train).to(device))  # every rank computes the same mean
        state.start(cfg, preset)
    st, sums, spe = state.st, state.sums, batches.steps_per_epoch

    t_start = time.monotonic() - st["elapsed"]
    bar = Progress(progress and is_main, tc, spe, st["step"], t_start)
    first_bad = None
    best_state: dict[str, Tensor] | None = None  # restore_best: the best validation epoch's weights
    try:
        with StopFlag() if world == 1 else AgreedStopFlag() as stop:
            while st["epoch"] < tc.epochs and st["stopped"] == "completed":
                epoch = st["epoch"]
                lr = lr_at(tc, epoch, time.monotonic() - t_start)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                perm = batches.permutation(epoch)
                t_epoch, steps_this_run = time.monotonic(), 0
                for s in range(st["step_in_epoch"], spe):
                    batch = batches.draw(perm, s, noise)
                    step = Step(
                        kl_weight(tc, st["step"], spe),
                        maths.capacity_at(st["step"], tc.capacity_max, tc.capacity_steps),
                        batches.n,
                        None if aux is None else aux[0],
                        batch.noise,
                    )
                    out = forward(batch, step)  # (b,) nats
                    if not update(model, optimizer, aux, spec, out, tc, world, batch, device):
                        first_bad = st["step"]
                        break
                    with torch.no_grad():
                        sums += torch.stack(
                            [out.bound, out.elbo, out.log_px_z, out.kl, *(out.terms[t] for t in term_names)]
                        ).sum(1)
                    st["step"] += 1
                    st["step_in_epoch"] = s + 1
                    steps_this_run += 1
                    end_of_epoch = s + 1 == spe
                    if world > 1 and (
                        st["step"] % tc.log_every == 0
                        or end_of_epoch
                        or (tc.checkpoint_every and st["step"] % tc.checkpoint_every == 0)
                    ):
                        dist.all_reduce(sums)  # rank 0 keeps the sums of all ranks, the others start again
                        if not is_main:
                            sums.zero_()
                        stop.agree(device, is_main and _budget_spent(tc, t_start))
                    if st["step"] % tc.log_every == 0 or end_of_epoch:
                        bar.running(st["step"], epoch, sums, s, device)
                    if (tc.checkpoint_every and st["step"] % tc.checkpoint_every == 0) or stop.signal is not None:
                        st["elapsed"] = time.monotonic() - t_start
                        state.save(device)
                    if stop.signal is not None:
                        raise TrainingInterrupted(
                            stop.signal,
                            f"stopped by signal {signal.Signals(stop.signal).name} at step {st['step']}; "
                            f"checkpoint saved, continue with `vaelab train --resume {run_path}`",
                        )
                    if stop.budget_spent if world > 1 else _budget_spent(tc, t_start):
                        st["stopped"] = "time-budget"
                        break

                # A non-finite loss (checked per step on CPU; on GPU once per epoch, to avoid syncs)
                if first_bad is not None or not bool(torch.isfinite(sums).all()):
                    where = f"step {first_bad}" if first_bad is not None else f"epoch {epoch + 1}"
                    raise TrainingDiverged(
                        f"the loss became NaN/inf at {where} (lr {lr:g}); the last good checkpoint is kept. "
                        f"Check that pixels lie in [0, 1] and try a smaller --lr or --train.grad_clip"
                    )
                # -- end of epoch (or of the time budget): validate, log, checkpoint -------------
                seen = min(st["step_in_epoch"] * tc.batch_size, batches.n)
                means = (sums / max(1, seen)).tolist()
                dt = time.monotonic() - t_epoch
                val = evaluate_elbo(model, splits.val, seed=tc.seed, shard=(rank, world))
                row = _epoch_row(st, tc, lr, spe, means, term_names, val, dt, steps_this_run)
                st["metrics"].append(row)
                if on_log is not None and is_main:
                    on_log(row)
                bar.epoch_end(epoch, means[1], val.elbo)
                if val.elbo > st["best_val"]:
                    st["best_val"], st["bad_epochs"] = val.elbo, 0
                    if run_path is not None and is_main:
                        save_weights(run_path / BEST, model)
                    if tc.restore_best:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    st["bad_epochs"] += 1
                    if tc.patience is not None and st["bad_epochs"] >= tc.patience:
                        st["stopped"] = "early-stopping"
                st["epoch"] += 1
                st["step_in_epoch"] = 0
                sums.zero_()
                st["elapsed"] = time.monotonic() - t_start
                state.save(device)
    finally:  # before any error's message: a bar closed later is redrawn below it
        bar.close()
    if tc.restore_best:  # the best validation epoch's weights, kept in memory or (resumed since) on disk
        if best_state is not None:
            model.load_state_dict(best_state)
        elif run_path is not None and (run_path / BEST).is_file():
            load_weights(run_path / BEST, model)

    test = evaluate_elbo(model, splits.test, seed=tc.seed + 2, shard=(rank, world))
    if run_path is not None and is_main:
        st["test"] = {"elbo": test.elbo, "log_px_z": test.log_px_z, "kl": test.kl, "n": test.n}
        state.save(device)
    model.eval()
    return TrainResult(model, run_path, st["epoch"], st["step"], st["metrics"], test, st["stopped"])


# -- the parts of fit ---------------------------------------------------------------------------------


def _device_and_threads(cfg: RunConfig) -> tuple[torch.device, RunConfig]:
    """The device, and on CPU torch's thread count, recorded into the config (a resume uses it again)."""
    tc = cfg.train
    device = resolve_device(tc.device)
    if device.type == "cpu":
        threads = resolve_threads(tc.threads)
        torch.set_num_threads(threads)
        keep_freed_memory()
        if tc.threads != threads:  # config.json records the count, so a resume uses it whatever the load
            if tc.threads == "auto":
                logger.info("threads auto: %d (of %d usable cores)", threads, usable_cores())
            cfg = replace_config(cfg, {"train.threads": threads})
    return device, cfg


def _budget_spent(tc: TrainConfig, t_start: float) -> bool:
    return tc.max_minutes is not None and time.monotonic() - t_start > 60 * tc.max_minutes


def _epoch_row(
    st: dict[str, Any],
    tc: TrainConfig,
    lr: float,
    spe: int,
    means: list[float],
    term_names: tuple[str, ...],
    val: EpochStats,
    dt: float,
    steps_this_run: int,
) -> dict[str, float]:
    """metrics.csv's row of the epoch that just ended."""
    return {
        "epoch": st["epoch"] + 1,
        "step": st["step"],
        "lr": lr,
        "kl_weight": kl_weight(tc, st["step"], spe),
        "train_objective": means[0],
        "train_elbo": means[1],
        "train_log_px_z": means[2],
        "train_kl": means[3],
        **{f"train_{t}": means[4 + i] for i, t in enumerate(term_names)},
        "val_elbo": val.elbo,
        "val_log_px_z": val.log_px_z,
        "val_kl": val.kl,
        "epoch_seconds": dt,
        "samples_per_s": steps_this_run * tc.batch_size / max(dt, 1e-9),
        # < 1 when the time budget ended the epoch early (it still counts as an epoch)
        "epoch_fraction": st["step_in_epoch"] / spe,
    }


def check_trainable(model: BaseVAE, tc: TrainConfig, world: int = 1) -> None:
    """Refuse the combinations of a model and training settings that do not exist, naming them: the
    objective's own needs (its spec), then the estimator's and the model's."""
    if tc.estimator != "reparam" and not model.supports_stop_gradient:
        raise ConfigError(
            f"estimator {tc.estimator} needs log q(z|x) at stopped posterior parameters, which this "
            f"model ({_describe(model.cfg)}) does not offer; use estimator reparam"
        )
    if tc.free_bits and not model.supports_disentangling:  # before config.json is written
        raise ConfigError(
            f"free_bits {tc.free_bits:g} clamps the per-dimension KL to N(0, I) of a Gaussian q(z|x); this model "
            f"({_describe(model.cfg)}, prior {model.cfg.prior}) has none in closed form: set train.free_bits 0"
        )
    check_model(OBJECTIVES[tc.objective], model, world, _describe(model.cfg))
    if model.single_process and world > 1:
        raise ConfigError(
            f"{_describe(model.cfg)}: a training step updates state from the whole batch (the codebook's EMA "
            f"and restarts), which one process of several does not see; train it in one process"
        )


def _describe(cfg: Any) -> str:
    parts = [f"posterior {cfg.posterior}"] + (["layers"] if cfg.layers else [])
    return ", ".join(parts)


@torch.no_grad()
def evaluate_elbo(
    model: BaseVAE, data: ImageData, batch_size: int = 1000, seed: int = 0, shard: tuple[int, int] = (0, 1)
) -> EpochStats:
    """Mean one-sample ELBO over `data` with fixed noise (seed), under eval mode and no_grad.

    shard (rank, world) splits the images over processes; the sums are all-reduced.
    """
    was_training = model.training
    model.eval()
    device = model.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    n = 0
    for t in elbo_batches(model, data, batch_size, seed, shard):
        sums += torch.stack([t.elbo.sum(), t.log_px_z.sum(), t.kl.sum()]).double()
        n += len(t.elbo)
    counts = torch.tensor([float(n)], dtype=torch.float64, device=device)
    if shard[1] > 1:
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    model.train(was_training)
    total = max(1.0, float(counts.item()))
    s = (sums / total).tolist()
    return EpochStats(elbo=s[0], log_px_z=s[1], kl=s[2], n=int(counts.item()))

"""Training: `fit()` is one loop that reads top to bottom (seed, data, optimizer, loop, eval, checkpoint).

Hot path choices, each measured in benchmarks/ (see BENCHMARKS.md):
- the whole dataset is one uint8 tensor on the device; a batch is an index into it, converted to
  float per batch (no per-sample Dataset/DataLoader, no host copies on a GPU);
- shuffling, dynamic binarization and the reparameterization noise use explicit torch.Generators,
  whose states go into every checkpoint, so a resumed run is bit-identical on CPU;
- the running sums of an epoch stay on the device: no `.item()` per step on a GPU;
- fused Adam where the build has it.

Distributed (torchrun): every rank draws the same permutation and the noise of the whole global
batch, and takes its own slice, so N processes compute the same update as one process with the
same global batch (up to float summation order). The process-group plumbing is in distributed.py,
the clean stop on SIGINT/SIGTERM in stop.py.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from vaelab import maths
from vaelab import objectives as obj
from vaelab.checkpoint import (
    BEST,
    CHECKPOINT,
    MODEL,
    START_AGAIN,
    check_not_complete,
    check_resumable,
    load_checkpoint,
    load_weights,
    remove_stale_temps,
    save_checkpoint,
    save_weights,
    write_config,
    write_metrics,
)
from vaelab.config import RunConfig, TrainConfig
from vaelab.config import replace as replace_config
from vaelab.cpu import default_threads, flush_denormal, keep_freed_memory, resolve_threads, usable_cores  # noqa: F401
from vaelab.data import DataSplits, ImageData, to_float
from vaelab.device import resolve_device
from vaelab.distributed import (  # noqa: F401 (init/finish/timeout: their old home, for scripts)
    _first_line,
    _is_peer_failure,
    dist_info,
    dist_timeout,
    finish_distributed,
    init_distributed,
    peer_failures,
)
from vaelab.errors import CheckpointError, ConfigError, TrainingDiverged, TrainingInterrupted
from vaelab.models import BaseVAE as VAE
from vaelab.models.discriminator import DISC_BETAS, FactorDiscriminator, discriminator_loss
from vaelab.stop import AgreedStopFlag, StopFlag

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

    model: VAE
    run_dir: Path | None
    epochs: int
    steps: int
    metrics: list[dict[str, float]] = field(default_factory=list)
    test: EpochStats | None = None
    stopped: str = "completed"  # completed | early-stopping | time-budget


def compile_mode() -> str | None:
    """torch.compile mode of the training step (TrainConfig.compile): env VAELAB_COMPILE_MODE, e.g.
    "reduce-overhead" (CUDA graphs) or "max-autotune-no-cudagraphs"; unset, inductor's default."""
    return os.environ.get("VAELAB_COMPILE_MODE") or None


def lr_at(cfg: TrainConfig, epoch: int, elapsed_s: float = 0.0) -> float:
    """Learning rate of an epoch (0-based) that starts `elapsed_s` seconds into training.

    burda: lr * 10^(-i/7) for the epochs in stage i of 3^0, 3^1, ... (Burda et al. 2016, sec. 5);
    burda-scaled: the same 8 stages shrunk in proportion to cfg.epochs (:func:`burda_stage_ends`);
    exp: lr * 10^(-lr_decay * epoch / epochs), the epoch-counted twin of "time";
    cosine: to 0 over cfg.epochs; time: lr * 10^(-lr_decay * elapsed / budget), for a run that ends
    by --max-minutes rather than by an epoch count (an epoch schedule that a 15-minute run never
    gets through leaves its rate high). The time schedule follows the clock, so its numbers depend
    on the machine's speed, and a resumed run continues from the recorded elapsed time.
    """
    if cfg.schedule == "time":
        budget = 60.0 * (cfg.max_minutes or 1.0)
        return cfg.lr * 10 ** (-cfg.lr_decay * min(1.0, elapsed_s / budget))
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "burda":
        stage, start = 0, 0
        while epoch >= start + 3**stage:
            start += 3**stage
            stage += 1
        return cfg.lr * 10 ** (-stage / 7)
    if cfg.schedule == "burda-scaled":
        ends = burda_stage_ends(cfg.epochs)
        stage = next((i for i, end in enumerate(ends) if epoch < end), len(ends) - 1)
        return cfg.lr * 10 ** (-stage / 7)
    if cfg.schedule == "exp":
        return cfg.lr * 10 ** (-cfg.lr_decay * epoch / cfg.epochs)
    return cfg.lr


BURDA_EPOCHS = 3280  # 3^0 + 3^1 + ... + 3^7: the paper's 8 stages


def burda_stage_ends(total_epochs: int) -> list[int]:
    """The epoch (exclusive) at which each of Burda et al.'s 8 learning-rate stages ends, shrunk in
    proportion to a budget of `total_epochs`.

    3280 gives the paper's 1, 4, 13, 40, 121, 364, 1093, 3280 (stage i lasts 3^i epochs); fewer epochs
    shrink every stage by total_epochs / 3280, rounded (stage 0 stays one epoch; a stage may become
    empty), so a shorter run still ends at the paper's final rate lr * 10^(-1).
    """
    if total_epochs < 1:
        raise ConfigError(f"the epoch budget must be >= 1, got {total_epochs}")
    ends, cum = [], 0
    for i in range(8):
        cum += 3**i
        ends.append(max(1, round(total_epochs * cum / BURDA_EPOCHS)))
    ends[-1] = total_epochs
    return [max(e, ends[i - 1] if i else 1) for i, e in enumerate(ends)]


def kl_weight(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """beta, reached linearly from 0 over `warmup_epochs` epochs (Sønderby et al. 2016)."""
    if cfg.warmup_epochs == 0:
        return cfg.beta
    return cfg.beta * min(1.0, step / (cfg.warmup_epochs * steps_per_epoch))


@torch.no_grad()
def evaluate_elbo(
    model: VAE, data: ImageData, batch_size: int = 1000, seed: int = 0, shard: tuple[int, int] = (0, 1)
) -> EpochStats:
    """Mean one-sample ELBO over `data` with fixed noise (seed), under eval mode and no_grad.

    shard (rank, world) splits the images over processes; the sums are all-reduced.
    """
    was_training = model.training
    model.eval()
    device = model.device
    g = torch.Generator(device).manual_seed(seed)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    n = 0
    rank, world = shard
    dtype = next(model.parameters()).dtype
    for i, start in enumerate(range(0, len(data), batch_size)):
        if i % world != rank:  # draw this batch's noise anyway: N processes use the noise of one
            torch.randn(
                (1, min(batch_size, len(data) - start), model.noise_dim), generator=g, device=device, dtype=dtype
            )
            continue
        xb, yb = data.batch(slice(start, start + batch_size))
        x = to_float(xb.to(device, non_blocking=True))
        y = None if (yb is None or model.cfg.num_classes == 0) else yb.to(device)
        t = model.elbo(x, y, generator=g)
        sums += torch.stack([t.elbo.sum(), t.log_px_z.sum(), t.kl.sum()]).double()
        n += len(x)
    counts = torch.tensor([float(n)], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    model.train(was_training)
    total = max(1.0, float(counts.item()))
    s = (sums / total).tolist()
    return EpochStats(elbo=s[0], log_px_z=s[1], kl=s[2], n=int(counts.item()))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam; fused (one kernel for all parameters) where this torch build supports it, else foreach."""
    try:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, foreach=True)


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> Tensor:
    """The shuffled order of epoch `epoch`: a function of (seed, epoch) alone, so resume can rebuild it."""
    g = torch.Generator(device).manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g, device=device)


def check_trainable(model: VAE, tc: TrainConfig, world: int = 1) -> None:
    """Refuse the combinations of a model and training settings that do not exist, naming them."""
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
    if tc.objective in obj.DISENTANGLING:
        if not model.supports_disentangling:
            raise ConfigError(
                f"objective {tc.objective} is written on one Gaussian q(z|x) and the N(0, I) prior; this model "
                f"({_describe(model.cfg)}, prior {model.cfg.prior}) has another: use posterior gaussian, "
                f"prior normal and no model.layers"
            )
        if world > 1:
            raise ConfigError(
                f"objective {tc.objective} estimates its penalty from the codes of the whole batch, which "
                f"one process of several does not see; train it in one process"
            )
    if tc.objective not in ("elbo", *obj.DISENTANGLING) and not model.supports_bounds:
        raise ConfigError(
            f"objective {tc.objective} weighs importance samples by log p(z) - log q(z|x) with their gradients, "
            f"which this model's discrete latents ({_describe(model.cfg)}) do not have; use objective elbo"
        )
    if model.single_process and world > 1:
        raise ConfigError(
            f"{_describe(model.cfg)}: a training step updates state from the whole batch (the codebook's EMA "
            f"and restarts), which one process of several does not see; train it in one process"
        )
    if tc.objective == "piwae" and world > 1:
        raise ConfigError(
            "objective piwae takes two gradients per step, which DistributedDataParallel does not "
            "average; train it in one process"
        )


# the terms in metrics.csv that are not nats: a codebook's perplexity and usage, a temperature
UNITLESS_TERMS = ("perplexity", "codes_used", "temperature")


@peer_failures
@flush_denormal()  # subnormal Adam moments made every epoch after the first 35-40% slower on CPU
def fit(
    model: VAE,
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
    best safetensors and metrics.csv into `run_dir` (rank 0), each atomically. With `resume=True` it continues exactly from run_dir's checkpoint.
    Raises TrainingDiverged on a NaN/inf loss and TrainingInterrupted on SIGINT/SIGTERM, in both
    cases after leaving a good checkpoint behind.
    """
    tc = cfg.train
    rank, world = dist_info()
    is_main = rank == 0
    run_path = Path(run_dir) if run_dir is not None else None

    # -- seed and device ------------------------------------------------------------------
    device = resolve_device(tc.device)
    if device.type == "cpu":
        threads = resolve_threads(tc.threads)
        torch.set_num_threads(threads)
        keep_freed_memory()
        if tc.threads != threads:  # config.json records the count, so a resume uses it whatever the load
            if tc.threads == "auto":
                logger.info("threads auto: %d (of %d usable cores)", threads, usable_cores())
            cfg = replace_config(cfg, {"train.threads": threads})
            tc = cfg.train
    model.to(device).train()
    check_trainable(model, tc, world)
    if tc.batch_size % world:
        raise ConfigError(f"batch_size {tc.batch_size} must be divisible by the number of processes {world}")
    noise = torch.Generator(device).manual_seed(tc.seed + 1)  # reparameterization eps and binarization

    # -- data: one uint8 tensor on the device, or a memory-mapped array read per batch ---------
    train = splits.train
    resident = torch.is_tensor(train.images)
    images = train.images.to(device) if resident else train.images
    if model.cfg.num_classes and train.labels is None:
        raise ConfigError(
            f"a conditional model (num_classes {model.cfg.num_classes}) needs labelled data; {splits.name} has none"
        )
    labels = train.labels.to(device) if (resident and model.cfg.num_classes and train.labels is not None) else None
    n = len(train)
    steps_per_epoch = math.ceil(n / tc.batch_size)  # a last partial batch is split over the processes too
    if steps_per_epoch == 0:
        raise ConfigError(f"{n} training images are fewer than one batch of {tc.batch_size} per {world} processes")
    dynamic = cfg.data.binarize == "dynamic"
    c, h, w = model.cfg.input_shape
    if tuple(train.shape) != (c, h, w):
        raise ConfigError(f"data images are {train.shape} but the model expects input_shape {(c, h, w)}")

    # -- optimizer, DDP, state ------------------------------------------------------------------
    optimizer = make_optimizer(model, tc, device)
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    amp = torch.bfloat16 if tc.amp == "bf16" else None

    stop_q = tc.estimator in ("stl", "dreg")
    # FactorVAE's discriminator and its optimizer: trained beside the model, saved in the checkpoint
    disc, disc_opt = None, None
    if tc.objective == "factor":
        disc = FactorDiscriminator(model.cfg.latent_dim).to(device).train()
        disc_opt = torch.optim.Adam(disc.parameters(), lr=tc.disc_lr, betas=DISC_BETAS)
    aux = None if disc is None or disc_opt is None else (disc, disc_opt)
    term_names = (
        obj.OBJECTIVE_TERMS.get(tc.objective, ()) + model.term_names + (("disc_loss",) if disc is not None else ())
    )

    def forward_terms(
        x: Tensor, y: Tensor | None, eps: Tensor, klw: float, capacity: float, u: Tensor | None
    ) -> tuple[Any, Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """The differentiable part of a step: the model's draws, then the objective (objectives.py):
        (surrogate, bound, elbo, log_px_z, kl, terms), each (b,) nats."""
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            draws = net(x, y, eps, stop_q)
            extra: dict[str, Any] = {}
            if tc.objective in obj.DISENTANGLING:
                extra = {
                    "dataset_size": n,
                    "tc_estimator": tc.tc_estimator,
                    "capacity": capacity,
                    "gamma": tc.capacity_gamma if tc.objective == "capacity" else tc.factor_gamma,
                    "lambda_od": tc.dip_lambda_od,
                    "lambda_d": tc.dip_lambda_diag,
                    "tc_logits": None if disc is None else disc(draws.z[0]),
                }
            out = obj.training_objective(
                draws, tc.objective, tc.estimator, tc.m, klw, tc.ciwae_beta, tc.free_bits, **extra
            )
            if disc is not None and u is not None:
                out[5]["disc_loss"] = discriminator_loss(disc, draws.z[0], u)
            return out

    # compiled, forward and backward are a few fused kernels: on a GPU, kernel launches are what
    # bounds a small model (docs/speed.md); on CPU eager is faster than compiled (torch 2.13)
    step_terms = torch.compile(forward_terms, mode=compile_mode()) if tc.compile else forward_terms
    # objective, elbo, log_px_z, kl and the objective's own terms, summed over this epoch
    sums = torch.zeros(4 + len(term_names), device=device)
    st: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "step_in_epoch": 0,
        "best_val": -math.inf,
        "bad_epochs": 0,
        "metrics": [],
        "elapsed": 0.0,
        "stopped": "completed",
    }
    if resume:
        if run_path is None:
            raise ConfigError("resume needs a run folder")
        try:
            rng, extra, st = load_checkpoint(run_path, model, optimizer, aux)
        except CheckpointError as e:
            raise CheckpointError(f"{e}{START_AGAIN.format(run=run_path)}") from e
        check_resumable(run_path, rng, extra, st)
        try:
            noise.set_state(rng["noise"])
        except RuntimeError as e:  # CPU and CUDA generators have different states (and streams)
            raise CheckpointError(
                f"{run_path / CHECKPOINT}: its random-number state was saved on another device type than "
                f"{device.type}; resume with the --device the run was trained on"
            ) from e
        if "torch_cpu" in rng:  # the global generators: unused by the loop today, restored for user code
            torch.set_rng_state(rng["torch_cpu"])
        if "torch_cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["torch_cuda"], device)
        sums = extra["sums"]
        if not is_main:  # rank 0 saved the sums of all ranks
            sums.zero_()
        if st["stopped"] == "time-budget" and (tc.max_minutes is None or 60 * tc.max_minutes > st["elapsed"]):
            st["stopped"] = "completed"  # resumed with a larger (or no) --max-minutes: go on
        check_not_complete(run_path, st, tc)
        if is_main:
            remove_stale_temps(run_path)  # temporary files of a write that a crash interrupted
        if is_main:
            write_config(run_path, cfg)  # resume may extend --epochs (the recorded preset is kept)
        logger.info("resuming %s at epoch %d step %d", run_path, st["epoch"] + 1, st["step"])
    else:
        if tc.init_output_bias and model.likelihood.bias_is_logit:
            model.init_output_bias(mean_pixel(train).to(device))  # every rank computes the same mean
        if run_path is not None and is_main:
            run_path.mkdir(parents=True, exist_ok=True)
            write_config(run_path, cfg, preset)

    def checkpoint() -> None:
        if run_path is None or not is_main:
            return
        rng = {"noise": noise.get_state(), "torch_cpu": torch.get_rng_state()}
        if device.type == "cuda":
            rng["torch_cuda"] = torch.cuda.get_rng_state(device)
        save_checkpoint(run_path, model, optimizer, rng, {"sums": sums}, st, aux)
        save_weights(run_path / MODEL, model)
        write_metrics(run_path, st["metrics"])

    # -- the loop -------------------------------------------------------------------------------
    t_start = time.monotonic() - st["elapsed"]
    # the bar counts images, so its rate reads in images/s
    # with a time budget the epoch count is only an upper bound: no total (and no ETA) then
    bar = _progress(
        progress and is_main,
        total=None if tc.max_minutes is not None else tc.epochs * steps_per_epoch * tc.batch_size,
        initial=st["step"] * tc.batch_size,
    )

    def postfix(text: str) -> str:
        """The bar's text; under a time budget, which has no total to count down, the minutes left."""
        if tc.max_minutes is None:
            return text
        left = max(0.0, 60 * tc.max_minutes - (time.monotonic() - t_start))
        return f"{text}, {left / 60:.1f} of {tc.max_minutes:g} min left"

    first_bad = None
    best_state: dict[str, Tensor] | None = None  # restore_best: the best validation epoch's weights
    try:
        with StopFlag() if world == 1 else AgreedStopFlag() as stop:
            while st["epoch"] < tc.epochs and st["stopped"] == "completed":
                epoch = st["epoch"]
                lr = lr_at(tc, epoch, time.monotonic() - t_start)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                perm = epoch_permutation(n, tc.seed, epoch, device if resident else torch.device("cpu"))
                t_epoch = time.monotonic()
                steps_this_run = 0
                for s in range(st["step_in_epoch"], steps_per_epoch):
                    idx = perm[s * tc.batch_size : (s + 1) * tc.batch_size]  # the global batch
                    gb = len(idx)
                    per = -(-gb // world)  # batch_size / world, or fewer in a last partial batch
                    lo, hi = min(rank * per, gb), min((rank + 1) * per, gb)
                    mine = idx[lo:hi]  # my slice of the global batch
                    # index_select copies whole rows: 10-16x faster than images[mine] on CPU (docs/speed.md)
                    xb = images.index_select(0, mine) if resident else train.batch(mine)[0]
                    x = to_float(xb.to(device, non_blocking=True))  # (b, C, H, W) in [0, 1]
                    if dynamic:  # a fresh binary image per use; draw for the global batch, keep my slice
                        u = torch.rand((gb, c, h, w), generator=noise, device=device)
                        x = (u[lo:hi] < x).to(x.dtype)
                    eps = torch.randn((tc.m * tc.k, gb, model.noise_dim), generator=noise, device=device)
                    eps = eps[:, lo:hi]
                    y = None
                    if model.cfg.num_classes:
                        y = labels.index_select(0, mine) if resident else train.labels[mine].to(device)  # type: ignore[union-attr,index]

                    # factor: the uniforms whose argsort shuffles each latent dimension over the batch
                    shuffle: Tensor | None = None
                    if disc is not None:
                        shuffle = torch.rand((gb, model.cfg.latent_dim), generator=noise, device=device)[lo:hi]
                    klw = kl_weight(tc, st["step"], steps_per_epoch)
                    cap = maths.capacity_at(st["step"], tc.capacity_max, tc.capacity_steps)
                    surrogate, objective, elbo, log_px_z, kl, terms = step_terms(
                        x, y, eps, klw, cap, shuffle
                    )  # (b,) nats
                    loss = _loss(surrogate, world, gb)
                    if device.type == "cpu" and not math.isfinite(loss.item()):  # free on CPU: no device sync
                        first_bad = st["step"]
                        break
                    optimizer.zero_grad(set_to_none=True)
                    if isinstance(surrogate, tuple):  # piwae: each part of the model has its own objective
                        _backward_by_part(model, _loss(surrogate[0], world, gb), _loss(surrogate[1], world, gb))
                    else:
                        loss.backward()
                    if tc.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    optimizer.step()
                    if disc is not None and disc_opt is not None:  # the model's loss left gradients in disc too
                        disc_opt.zero_grad(set_to_none=True)
                        terms["disc_loss"].mean().backward()
                        disc_opt.step()
                    with torch.no_grad():
                        sums += torch.stack([objective, elbo, log_px_z, kl, *(terms[t] for t in term_names)]).sum(1)
                    st["step"] += 1
                    st["step_in_epoch"] = s + 1
                    steps_this_run += 1
                    if world > 1 and (
                        st["step"] % tc.log_every == 0
                        or s + 1 == steps_per_epoch
                        or (tc.checkpoint_every and st["step"] % tc.checkpoint_every == 0)
                    ):
                        dist.all_reduce(sums)  # rank 0 keeps the sums of all ranks, the others start again
                        if not is_main:
                            sums.zero_()
                        stop.agree(
                            device,
                            is_main and tc.max_minutes is not None and time.monotonic() - t_start > 60 * tc.max_minutes,
                        )
                    if bar is not None and (st["step"] % tc.log_every == 0 or s + 1 == steps_per_epoch):
                        bar.update(st["step"] * tc.batch_size - bar.n)
                        if device.type == "cpu":
                            bar.set_postfix_str(
                                postfix(f"epoch {epoch + 1} elbo {sums[1].item() / ((s + 1) * tc.batch_size):.2f}")
                            )
                    if tc.checkpoint_every and st["step"] % tc.checkpoint_every == 0:
                        st["elapsed"] = time.monotonic() - t_start
                        checkpoint()
                    if stop.signal is not None:
                        st["elapsed"] = time.monotonic() - t_start
                        checkpoint()
                        raise TrainingInterrupted(
                            stop.signal,
                            f"stopped by signal {signal.Signals(stop.signal).name} at step {st['step']}; "
                            f"checkpoint saved, continue with `vaelab train --resume {run_path}`",
                        )
                    if (
                        stop.budget_spent
                        if world > 1
                        else tc.max_minutes is not None and time.monotonic() - t_start > 60 * tc.max_minutes
                    ):
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
                seen = min(st["step_in_epoch"] * tc.batch_size, n)
                means = (sums / max(1, seen)).tolist()
                dt = time.monotonic() - t_epoch
                val = evaluate_elbo(model, splits.val, seed=tc.seed, shard=(rank, world))
                row = {
                    "epoch": epoch + 1,
                    "step": st["step"],
                    "lr": lr,
                    "kl_weight": kl_weight(tc, st["step"], steps_per_epoch),
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
                    "epoch_fraction": st["step_in_epoch"] / steps_per_epoch,
                }
                st["metrics"].append(row)
                if on_log is not None and is_main:
                    on_log(row)
                if bar is not None:
                    bar.set_postfix_str(postfix(f"epoch {epoch + 1} elbo {means[1]:.2f} val {val.elbo:.2f}"))
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
                checkpoint()
    finally:  # before any error's message: a bar closed later is redrawn below it
        if bar is not None:
            bar.close()
    if tc.restore_best:  # the best validation epoch's weights, kept in memory or (resumed since) on disk
        if best_state is not None:
            model.load_state_dict(best_state)
        elif run_path is not None and (run_path / BEST).is_file():
            load_weights(run_path / BEST, model)

    test = evaluate_elbo(model, splits.test, seed=tc.seed + 2, shard=(rank, world))
    if run_path is not None and is_main:
        st["test"] = {"elbo": test.elbo, "log_px_z": test.log_px_z, "kl": test.kl, "n": test.n}
        checkpoint()
    model.eval()
    return TrainResult(model, run_path, st["epoch"], st["step"], st["metrics"], test, st["stopped"])


@torch.no_grad()
def mean_pixel(data: ImageData, batch_size: int = 10_000) -> Tensor:
    """The mean training image (C, H, W), pixels in [0, 1], float64 sums over `data`."""
    total = torch.zeros(data.shape, dtype=torch.float64)
    for start in range(0, len(data), batch_size):
        total += to_float(data.batch(slice(start, start + batch_size))[0]).double().sum(0)
    return (total / max(1, len(data))).float()


def _loss(surrogate: Tensor | tuple[Tensor, Tensor], world: int, gb: int) -> Tensor:
    """-mean of the surrogate over the global batch (DDP averages gradients over ranks, so the sum
    times world / gb). A pair (piwae) gives the first part's loss, for the NaN check."""
    s = surrogate[0] if isinstance(surrogate, tuple) else surrogate
    return -s.mean() if world == 1 else -s.sum() * (world / gb)


def _backward_by_part(model: VAE, generative: Tensor, inference: Tensor) -> None:
    """Gradients of `generative` for the generative parameters and of `inference` for q(z|x)'s."""
    gen, inf = list(model.generative_parameters()), list(model.inference_parameters())
    for params, loss, keep in ((gen, generative, True), (inf, inference, False)):
        grads = torch.autograd.grad(loss, params, retain_graph=keep, allow_unused=True)
        for p_, g in zip(params, grads):
            p_.grad = g


def _describe(cfg: Any) -> str:
    parts = [f"posterior {cfg.posterior}"] + (["layers"] if cfg.layers else [])
    return ", ".join(parts)


def _progress(enabled: bool, total: int | None, initial: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True, leave=True, smoothing=0.1
    )


class TensorBoardLog:
    """An `on_log` hook for fit(): each epoch's scalars and image grids, written to `log_dir` for
    TensorBoard (`tensorboard --logdir RUN/tensorboard`).

    Scalars (nats per image unless named otherwise): train/ and val/ elbo_nats, log_px_z_nats,
    kl_nats; train/objective_nats, train/lr, train/kl_weight, train/samples_per_s, and an
    objective's own terms (train/tc_nats, ...), at the global step. Images: `reconstructions` (n validation images above their reconstructions) and
    `samples` (decoded from n draws of the model's prior with a fixed seed; labels 0, 1, ... for a conditional model).
    Needs the tensorboard package (pip install 'vaelab[tensorboard]'), imported only here.
    Call it on rank 0 only; `close()` at the end.
    """

    SCALARS = {
        "train_elbo": "train/elbo_nats",
        "train_log_px_z": "train/log_px_z_nats",
        "train_kl": "train/kl_nats",
        "train_objective": "train/objective_nats",
        "val_elbo": "val/elbo_nats",
        "val_log_px_z": "val/log_px_z_nats",
        "val_kl": "val/kl_nats",
        "lr": "train/lr",
        "kl_weight": "train/kl_weight",
        "samples_per_s": "train/samples_per_s",
    }

    def __init__(self, log_dir: str | os.PathLike[str], model: VAE, images: ImageData, n: int = 8, seed: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'vaelab[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(log_dir))
        self.model = model
        xb, yb = images.batch(slice(0, n))
        self.x = to_float(xb)  # (n, C, H, W), moved to the model's device when used
        k = model.cfg.num_classes
        self.y = None if k == 0 else yb
        self.seed = seed  # the same draws of the model's own prior at every epoch
        self.n = n
        self.y_samples = None if k == 0 else torch.arange(n) % k

    @torch.no_grad()
    def __call__(self, row: dict[str, float]) -> None:
        step = int(row["step"])
        for key, tag in self.SCALARS.items():
            if key in row:
                self.writer.add_scalar(tag, row[key], step)
        for key in row.keys() - self.SCALARS.keys():  # an objective's or a model's own terms (train_tc, ...)
            if key.startswith("train_"):
                unit = "" if key[6:] in UNITLESS_TERMS else "_nats"
                self.writer.add_scalar(f"train/{key[6:]}{unit}", row[key], step)
        model, device = self.model, self.model.device
        was_training = model.training
        model.eval()
        try:
            x = self.x.to(device)
            rec = model.reconstruct(x, None if self.y is None else self.y.to(device))
            z = model.sample_latents(self.n, torch.Generator(device).manual_seed(self.seed))
            samples = model.decode(z, None if self.y_samples is None else self.y_samples.to(device))
        finally:
            model.train(was_training)
        self.writer.add_images("reconstructions", torch.cat([x, rec]).float().clamp(0, 1).cpu(), step)
        self.writer.add_images("samples", samples.float().clamp(0, 1).cpu(), step)
        self.writer.flush()  # a crash loses nothing that was logged

    def close(self) -> None:
        self.writer.close()

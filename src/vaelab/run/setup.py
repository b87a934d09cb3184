"""Creating and resuming a run: its config, its data and its folder, set up in one call.

    >>> from vaelab.run.setup import prepare_run, train_run
    >>> run = prepare_run("seed", overrides={"train.epochs": 2}, out="runs/demo")
    >>> result = train_run(run)        # vaelab.training.fit on the prepared model, data and folder

`prepare_run` checks everything that can be wrong before it writes anything: the preset, the
config file and the overrides (unknown keys, bad values), what a resume may change, the device,
the data, the model and its training settings, and whether the folder can be written. Only then
does it clear a folder that `overwrite` replaces. `vaelab train` is this call, a header line
(`Run.header`), `train_run`, the pictures (`draw_pictures`) and the final line (`summary`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaelab.config import RunConfig
from vaelab.config_io import load_preset, merge_file, replace
from vaelab.errors import CheckpointError, ConfigError
from vaelab.run.folder import CONFIG, is_shipped, read_preset, refuse_shipped  # no torch: checks answer before it loads

if TYPE_CHECKING:
    from vaelab.data import DataSplits
    from vaelab.models import BaseVAE
    from vaelab.training import TrainResult

logger = logging.getLogger(__name__)

# What may change when a run is resumed: how long and where it runs, not what it computes.
RESUMABLE = frozenset(
    {"train.epochs", "train.max_minutes", "train.device", "train.threads", "train.checkpoint_every", "data.data_dir"}
)


@dataclass
class Run:
    """A run ready to train: checked config, loaded data, built model, writable folder."""

    cfg: RunConfig
    run_dir: Path
    splits: DataSplits
    model: BaseVAE
    resume: bool  # continue from the folder's checkpoint (False for a new run, or a resume of a
    #               run that stopped before its first checkpoint: it starts again from step 0)
    label: str  # the preset's name, or "resume of PRESET" (the name config.json records)
    rank: int = 0  # this process under torchrun (0 of 1 otherwise)
    world: int = 1

    def header(self) -> str:
        """The line `vaelab train` logs before training: the recipe, the data, the model's size, the
        settings and the folder."""
        from vaelab._version import __version__

        cfg, splits = self.cfg, self.splits
        n_params = sum(p.numel() for p in self.model.parameters())
        where = self.world > 1 and f"{self.world} processes" or cfg.train.device
        threads = f", {_count(cfg.train.threads, 'thread')}" if isinstance(cfg.train.threads, int) else ""
        return (
            f"vaelab {__version__}: {self.label}, {splits.name} ({len(splits.train)} images), {n_params} parameters, "
            f"{_count(cfg.train.epochs, 'epoch')}, batch {cfg.train.batch_size}, {where}{threads} -> {self.run_dir}"
        )


def configure(
    preset: str = "seed",
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: str | Path | None = None,
    conditional: bool = False,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> tuple[RunConfig, Path, bool]:
    """The run's config and folder, checked; nothing is read but configs, nothing is written.

    Returns (config, run folder, from_start): from_start is True for a resume of a run that has no
    checkpoint yet. For a new run, the config is the preset, then `config_file` (TOML tables
    [data]/[model]/[train]), then `overrides` ({"train.lr": 3e-4, ...}).
    """
    overrides = dict(overrides or {})
    if resume is not None:
        from vaelab.run import checkpoint as ckpt

        run_dir = Path(resume)
        if is_shipped(run_dir):  # the preset's name is read for the message only
            name = read_preset(run_dir) or "PRESET"
            refuse_shipped(
                run_dir, "--resume", f"train its preset into a folder of your own: vaelab train --preset {name}"
            )
        try:
            cfg = ckpt.read_config(run_dir)
            state = ckpt.read_state(run_dir)
        except CheckpointError as e:
            raise CheckpointError(f"{e}{ckpt.START_AGAIN.format(run=run_dir)}") from e
        frozen = sorted(set(overrides) - RESUMABLE)
        if frozen or conditional:
            raise ConfigError(
                f"--resume continues a run as it was configured; cannot change {frozen or ['--conditional']} "
                f"(allowed: {', '.join(sorted(RESUMABLE))})"
            )
        cfg = replace(cfg, overrides)
        from_start = not (run_dir / ckpt.CHECKPOINT).is_file()
        if from_start and (run_dir / ckpt.MODEL).is_file():  # trained, then the checkpoint went
            raise ConfigError(
                f"--resume {run_dir}: its {ckpt.CHECKPOINT} is missing but the run has trained weights "
                f"({ckpt.MODEL}); resuming would start again from step 0 and overwrite them. Restore the "
                f"checkpoint to continue{ckpt.START_AGAIN.format(run=run_dir)}"
            )
        if from_start:  # stopped before its first checkpoint
            logger.warning(
                "--resume %s: no %s yet, so the run starts again from step 0 with its config.json",
                run_dir,
                ckpt.CHECKPOINT,
            )
        elif state:  # nothing left to train: say so before anything is printed or loaded
            ckpt.check_not_complete(run_dir, state, cfg.train)
        return cfg, run_dir, from_start
    cfg = load_preset(preset)
    if config_file is not None:
        cfg = merge_file(cfg, Path(config_file))
    cfg = replace(cfg, overrides)
    ignored = sorted({"model.latent_dim", "model.hidden"} & set(overrides))
    if cfg.model.layers and ignored:
        raise ConfigError(
            f"{', '.join(ignored)}: this model is a hierarchy, whose sizes are its model.layers "
            f"(top latent_dim {cfg.model.latent_dim}); set --model.layers instead"
        )
    run_dir = Path(out or f"runs/{preset}")
    refuse_shipped(run_dir, "training into it", "give another --out")  # before --resume / --overwrite advice
    if (run_dir / CONFIG).exists() and not overwrite:
        raise ConfigError(
            f"--out {run_dir} already holds a run; use --resume {run_dir} to continue it, "
            f"--overwrite to replace it, or another --out"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; give a folder")
    return cfg, run_dir, False


def prepare_run(
    preset: str = "seed",
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: str | Path | None = None,
    conditional: bool = False,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> Run:
    """Set up a new run (or a resume) from its config, its data and its folder, in one call.

    `configure`s, joins the process group under torchrun, checks the device, loads the data,
    fixes the model's input shape (and its classes for `conditional`), builds the model and checks
    its training settings. A folder that `overwrite` replaces is cleared last, when nothing can
    fail any more. Raises ConfigError / DataError naming the bad value.
    """
    cfg, run_dir, from_start = configure(
        preset,
        config_file=config_file,
        overrides=overrides,
        resume=resume,
        conditional=conditional,
        out=out,
        overwrite=overwrite,
    )
    import torch  # only now: a bad preset or flag answers without the second that importing torch takes

    from vaelab.data import load_splits
    from vaelab.models import build_model
    from vaelab.platform.device import resolve_device
    from vaelab.platform.distributed import dist_info, init_distributed
    from vaelab.run import checkpoint as ckpt
    from vaelab.training import check_trainable

    init_distributed()
    rank, world = dist_info()
    device = resolve_device(cfg.train.device)  # no CUDA here: one line, before anything is printed or written
    if device.type == "cpu" and not isinstance(cfg.train.threads, int):
        # the count is chosen once, here, so that the header shows it and config.json records it
        from vaelab.platform.cpu import resolve_threads, usable_cores

        threads = resolve_threads(cfg.train.threads)
        if cfg.train.threads == "auto":
            logger.info("threads auto: %d (of %d usable cores)", threads, usable_cores())
        cfg = replace(cfg, {"train.threads": threads})
    splits = load_splits(cfg.data)
    if resume is None:
        model_over: dict[str, Any] = {"model.input_shape": list(splits.shape)}
        if conditional:
            if splits.num_classes == 0:
                raise ConfigError(f"--conditional needs labelled data; {splits.name} has no labels")
            if splits.num_classes > 10_000:
                raise ConfigError(
                    f"--conditional: the largest label of {splits.name} is {splits.num_classes - 1}; "
                    f"labels must be class indices 0..K-1 with K <= 10000"
                )
            model_over["model.num_classes"] = splits.num_classes
        cfg = replace(cfg, model_over)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    check_trainable(model, cfg.train, world)  # before anything is written
    if rank == 0:
        if resume is None:
            if overwrite and run_dir.is_dir():
                clear_run(run_dir)
            check_writable(run_dir)
        ckpt.remove_stale_temps(run_dir)  # left by a crash of an earlier attempt in this folder
    return Run(
        cfg,
        run_dir,
        splits,
        model,
        resume=resume is not None and not from_start,
        label=preset if resume is None else f"resume of {_recorded_preset(run_dir)}",
        rank=rank,
        world=world,
    )


def train_run(
    run: Run,
    *,
    progress: bool = True,
    on_log: Callable[[dict[str, float]], None] | None = None,
    tensorboard: bool = False,
) -> TrainResult:
    """`vaelab.training.fit` on a prepared run: its model, data, config and folder. on_log: called with
    each epoch's row (metrics.csv's). tensorboard: also log scalars and image grids each epoch to
    RUN/tensorboard/ (pip install 'vaelab[tensorboard]'). Leaves the process group that
    `prepare_run` joined under torchrun."""
    from vaelab.platform.distributed import finish_distributed
    from vaelab.training import fit

    log = on_log
    tb = None
    if tensorboard and run.rank == 0:  # before training: a missing package fails at once
        from vaelab.training import TensorBoardLog

        tb = TensorBoardLog(run.run_dir / "tensorboard", run.model, run.splits.val, seed=run.cfg.train.seed)

        def log(row: dict[str, float]) -> None:
            if on_log is not None:
                on_log(row)
            tb(row)

    preset = None if run.label.startswith("resume of ") else run.label
    result = fit(
        run.model, run.splits, run.cfg, run.run_dir, resume=run.resume, progress=progress, on_log=log, preset=preset
    )
    if tb is not None:
        tb.close()
    finish_distributed()
    return result


def epoch_line(row: dict[str, float]) -> str:
    """One epoch of metrics.csv in words, as `vaelab train` logs it."""
    part = "" if row["epoch_fraction"] >= 1 else f" (partial: {row['epoch_fraction']:.2f} of an epoch)"
    return (
        f"epoch {int(row['epoch'])}{part}: train ELBO {row['train_elbo']:.2f}, val ELBO {row['val_elbo']:.2f} nats "
        f"({row['epoch_seconds']:.1f} s, {row['samples_per_s']:.0f} samples/s)"
    )


def draw_pictures(run: Run, result: TrainResult, invert: bool = False) -> list[Path]:
    """The pictures of a trained run (vaelab.run.outputs.save_run_pictures), from the model `fit` returned."""
    from vaelab.run.outputs import save_run_pictures

    splits = run.splits
    return save_run_pictures(
        result.model,
        splits.test,
        run.run_dir,
        result.metrics,
        splits.class_names,
        seed=run.cfg.train.seed,
        invert=invert,
    )


def summary(run: Run, result: TrainResult) -> str:
    """The line `vaelab train` ends with: the test ELBO and its parts, the epochs, why it stopped."""
    t = result.test
    assert t is not None
    return (
        f"test ELBO {t.elbo:.2f} nats per image (log p(x|z) {t.log_px_z:.2f}, KL {t.kl:.2f}) over "
        f"{run.splits.describe('test')}; {_epochs_done(result.metrics, result.epochs)} ({result.stopped}); "
        f"run folder {run.run_dir}"
    )


def _count(n: int, noun: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {noun}{'s' * (n != 1)}"


def _epochs_done(metrics: list[dict[str, float]], epochs: int) -> str:
    """'1 epoch', '6 epochs', or '31 epochs and 0.41 of epoch 32' after a time budget ended one early."""
    last = metrics[-1].get("epoch_fraction", 1.0) if metrics else 1.0
    if last < 1:
        whole = epochs - 1
        return f"{whole} epoch{'s' * (whole != 1)} and {last:.2f} of epoch {epochs}"
    return f"{epochs} epoch{'s' * (epochs != 1)}"


def _recorded_preset(run_dir: Path) -> str:
    from vaelab.run.checkpoint import read_preset

    return read_preset(run_dir) or "a run from before presets were recorded"


def clear_run(run_dir: Path) -> None:
    """Delete the files of the run that `overwrite` replaces (and nothing else in the folder): what
    training wrote, and what later commands derived from it (a fitted code prior, the
    disentanglement report), which would otherwise be claimed by the new run."""
    from vaelab.analysis.factors import REPORT
    from vaelab.analysis.prior_fit import PRIOR_RECORD
    from vaelab.evaluation.records import EVAL_JSON
    from vaelab.run import checkpoint as ckpt
    from vaelab.run.outputs import PICTURES

    derived = (EVAL_JSON, PRIOR_RECORD, REPORT)
    for name in (ckpt.CONFIG, ckpt.MODEL, ckpt.BEST, ckpt.CHECKPOINT, ckpt.METRICS, *derived, *PICTURES.values()):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)  # events of the run being replaced


def check_writable(run_dir: Path) -> None:
    """Fail before training, not after it, when the run folder cannot be written."""
    existed = run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".vaelab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        if not existed and run_dir.exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise ConfigError(f"--out {run_dir}: cannot write there ({e.strerror}); choose a writable folder") from None

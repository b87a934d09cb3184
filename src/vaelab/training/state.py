"""The state of a training run and its checkpoints: start a run folder, save the state (weights,
optimizer, the auxiliary network, the random-number generators, the epoch's running sums, the
counters) atomically, and resume from it exactly."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaelab.config import RunConfig
from vaelab.errors import CheckpointError, ConfigError
from vaelab.models import BaseVAE
from vaelab.run.checkpoint import (
    CHECKPOINT,
    MODEL,
    START_AGAIN,
    check_not_complete,
    check_resumable,
    load_checkpoint,
    remove_stale_temps,
    save_checkpoint,
    save_weights,
    write_config,
    write_metrics,
)

logger = logging.getLogger(__name__)


def new_state() -> dict[str, Any]:
    """The counters of a run that has not started (the checkpoint's "state")."""
    return {
        "epoch": 0,
        "step": 0,
        "step_in_epoch": 0,
        "best_val": -math.inf,
        "bad_epochs": 0,
        "metrics": [],
        "elapsed": 0.0,
        "stopped": "completed",
    }


class RunState:
    """A run's mutable state (the counters `st`, the epoch's running sums) and where it is saved.

    Everything a resume needs goes into one checkpoint: model, optimizer, the auxiliary network and
    its optimizer (`aux`), the noise generator and torch's global ones, the sums and the counters.
    Only rank 0 writes (`is_main`); without a run folder nothing is written.
    """

    def __init__(
        self,
        run_path: Path | None,
        is_main: bool,
        model: BaseVAE,
        optimizer: torch.optim.Optimizer,
        noise: torch.Generator,
        aux: tuple[torch.nn.Module, torch.optim.Optimizer] | None,
        sums: Tensor,
    ) -> None:
        self.run_path, self.is_main = run_path, is_main
        self.model, self.optimizer, self.noise, self.aux = model, optimizer, noise, aux
        self.sums = sums
        self.st = new_state()

    def start(self, cfg: RunConfig, preset: str | None) -> None:
        """A new run: write config.json (with the preset's name) into a fresh folder."""
        if self.run_path is not None and self.is_main:
            self.run_path.mkdir(parents=True, exist_ok=True)
            write_config(self.run_path, cfg, preset)

    def resume(self, cfg: RunConfig, device: torch.device) -> None:
        """Restore everything from the run folder's checkpoint, refusing one that cannot continue."""
        run_path, tc = self.run_path, cfg.train
        if run_path is None:
            raise ConfigError("resume needs a run folder")
        try:
            rng, extra, st = load_checkpoint(run_path, self.model, self.optimizer, self.aux)
        except CheckpointError as e:
            raise CheckpointError(f"{e}{START_AGAIN.format(run=run_path)}") from e
        check_resumable(run_path, rng, extra, st)
        try:
            self.noise.set_state(rng["noise"])
        except RuntimeError as e:  # CPU and CUDA generators have different states (and streams)
            raise CheckpointError(
                f"{run_path / CHECKPOINT}: its random-number state was saved on another device type than "
                f"{device.type}; resume with the --device the run was trained on"
            ) from e
        if "torch_cpu" in rng:  # the global generators: unused by the loop today, restored for user code
            torch.set_rng_state(rng["torch_cpu"])
        if "torch_cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["torch_cuda"], device)
        self.sums = extra["sums"]
        if not self.is_main:  # rank 0 saved the sums of all ranks
            self.sums.zero_()
        if st["stopped"] == "time-budget" and (tc.max_minutes is None or 60 * tc.max_minutes > st["elapsed"]):
            st["stopped"] = "completed"  # resumed with a larger (or no) --max-minutes: go on
        check_not_complete(run_path, st, tc)
        self.st = st
        if self.is_main:
            remove_stale_temps(run_path)  # temporary files of a write that a crash interrupted
            write_config(run_path, cfg)  # resume may extend --epochs (the recorded preset is kept)
        logger.info("resuming %s at epoch %d step %d", run_path, st["epoch"] + 1, st["step"])

    def save(self, device: torch.device) -> None:
        """Checkpoint, model.safetensors and metrics.csv, each written atomically (rank 0)."""
        if self.run_path is None or not self.is_main:
            return
        rng = {"noise": self.noise.get_state(), "torch_cpu": torch.get_rng_state()}
        if device.type == "cuda":
            rng["torch_cuda"] = torch.cuda.get_rng_state(device)
        save_checkpoint(self.run_path, self.model, self.optimizer, rng, {"sums": self.sums}, self.st, self.aux)
        save_weights(self.run_path / MODEL, self.model)
        write_metrics(self.run_path, self.st["metrics"])

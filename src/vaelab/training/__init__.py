"""Training: `fit()` (loop.py) and its parts: the batches and their seeded noise (batches.py), one
optimizer step (step.py), the run's state and checkpoints (state.py), the learning-rate and KL
schedules (schedules.py), the progress bar (progress.py), TensorBoard logging (tensorboard.py)."""

from __future__ import annotations

from vaelab.training.batches import Batch, Batches, epoch_permutation, mean_pixel
from vaelab.training.loop import EpochStats, TrainResult, check_trainable, evaluate_elbo, fit
from vaelab.training.schedules import BURDA_EPOCHS, burda_stage_ends, kl_weight, lr_at
from vaelab.training.state import RunState, new_state
from vaelab.training.step import compile_mode, make_optimizer
from vaelab.training.tensorboard import UNITLESS_TERMS, TensorBoardLog

__all__ = [
    "BURDA_EPOCHS",
    "UNITLESS_TERMS",
    "Batch",
    "Batches",
    "EpochStats",
    "RunState",
    "TensorBoardLog",
    "TrainResult",
    "burda_stage_ends",
    "check_trainable",
    "compile_mode",
    "epoch_permutation",
    "evaluate_elbo",
    "fit",
    "kl_weight",
    "lr_at",
    "make_optimizer",
    "mean_pixel",
    "new_state",
]

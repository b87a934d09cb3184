"""The learning-rate schedules and the KL warm-up, as functions of the epoch or step (or, for the
"time" schedule, of the elapsed time)."""

from __future__ import annotations

import math

from vaelab.config import TrainConfig
from vaelab.errors import ConfigError


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

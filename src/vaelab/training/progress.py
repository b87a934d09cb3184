"""The progress bar of fit (tqdm), counting images so that its rate reads in images/s."""

from __future__ import annotations

import time

import torch
from torch import Tensor

from vaelab.config import TrainConfig


class Progress:
    """The progress bar (tqdm), counting images so that its rate reads in images/s; with a time
    budget the epoch count is only an upper bound: no total (and no ETA), the minutes left instead."""

    def __init__(self, enabled: bool, tc: TrainConfig, spe: int, step: int, t_start: float) -> None:
        self.tc, self.t_start, self.bar = tc, t_start, None
        if enabled:
            from tqdm.auto import tqdm

            total = None if tc.max_minutes is not None else tc.epochs * spe * tc.batch_size
            self.bar = tqdm(
                total=total,
                initial=step * tc.batch_size,
                unit="img",
                unit_scale=True,
                dynamic_ncols=True,
                leave=True,
                smoothing=0.1,
            )

    def _postfix(self, text: str) -> str:
        tc = self.tc
        if tc.max_minutes is None:
            return text
        left = max(0.0, 60 * tc.max_minutes - (time.monotonic() - self.t_start))
        return f"{text}, {left / 60:.1f} of {tc.max_minutes:g} min left"

    def running(self, step: int, epoch: int, sums: Tensor, s: int, device: torch.device) -> None:
        if self.bar is None:
            return
        self.bar.update(step * self.tc.batch_size - self.bar.n)
        if device.type == "cpu":  # the running ELBO costs a sync on a GPU
            elbo = sums[1].item() / ((s + 1) * self.tc.batch_size)
            self.bar.set_postfix_str(self._postfix(f"epoch {epoch + 1} elbo {elbo:.2f}"))

    def epoch_end(self, epoch: int, train_elbo: float, val_elbo: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix(f"epoch {epoch + 1} elbo {train_elbo:.2f} val {val_elbo:.2f}"))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

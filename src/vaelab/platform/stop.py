"""Stopping cleanly: SIGINT / SIGTERM set a flag that the training loop reads after each step, so a
checkpoint is saved and the run can be resumed bit-identically (tests/test_crash.py)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch
import torch.distributed as dist


def threading_is_main() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step and stops cleanly."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.budget_spent = False  # set by `agree` (the distributed form); one process checks its clock
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading_is_main():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def agree(self, device: torch.device, budget_spent: bool) -> None:
        """One process agrees with itself: its own signal and clock decide."""
        self.budget_spent = budget_spent


class AgreedStopFlag(StopFlag):
    """The distributed form of StopFlag: every rank must stop after the same step, or the next
    collective pairs one rank's gradients with another's validation sums. A signal is only noted
    here; `agree` (an all-reduce every log_every steps) makes it, and rank 0's time budget, common.
    Launchers forward the signal they receive, so a rank sees it twice: only a third one stops at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: int | None = None
        self.count = 0
        self.budget_spent = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count >= 3:
            raise KeyboardInterrupt
        self.pending = self.pending or signum

    def agree(self, device: torch.device, budget_spent: bool) -> None:
        flags = torch.tensor([self.pending or 0, int(budget_spent)], dtype=torch.int64, device=device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if int(flags[0]):
            self.signal = int(flags[0])
        self.budget_spent = bool(flags[1])

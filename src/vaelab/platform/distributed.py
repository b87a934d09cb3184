"""torchrun: joining and leaving the process group, collective timeouts, and a peer's failure.

Every rank draws the same permutation and the noise of the whole global batch and takes its own
slice (train.py), so N processes compute the update of one process with the same global batch.
What lives here is the plumbing around that: gloo on CPU, NCCL on GPU, a timeout so that a dead
peer ends the run in seconds rather than PyTorch's 30 minutes, and one clear error when it does.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from vaelab.errors import ConfigError, DistributedError

F = TypeVar("F", bound=Callable[..., Any])


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(timeout_s: float | None = None) -> None:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set): gloo on CPU, NCCL on GPU.

    A peer that dies makes collectives fail after `timeout_s` (env VAELAB_DIST_TIMEOUT, default 120 s)
    instead of hanging for PyTorch's default 30 minutes.
    """
    import datetime

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return
    timeout = timeout_s or dist_timeout()
    backend = os.environ.get("VAELAB_DIST_BACKEND") or "gloo"
    if torch.cuda.is_available() and "VAELAB_DIST_BACKEND" not in os.environ:
        # CPU tensors (--device cpu on a GPU machine) go through gloo, CUDA tensors through NCCL
        backend = "cpu:gloo,cuda:nccl"
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local < torch.cuda.device_count():
            torch.cuda.set_device(local)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as e:  # DistStoreError, DistNetworkError, a bad backend name
        raise DistributedError(
            f"process {os.environ['RANK']} of {os.environ['WORLD_SIZE']} could not join the process group at "
            f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')} ({_first_line(e)}); "
            f"start every process (torchrun --nnodes/--nproc-per-node) with the same rendezvous endpoint"
        ) from e


def finish_distributed() -> None:
    """Wait for every process, then leave the process group (a process that exits while the group is
    alive can abort with SIGABRT when the rendezvous store goes away first)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def dist_timeout() -> float:
    """Seconds a collective waits for its peers (env VAELAB_DIST_TIMEOUT, default 120)."""
    text = os.environ.get("VAELAB_DIST_TIMEOUT", "120")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"VAELAB_DIST_TIMEOUT={text!r}: give a positive number of seconds, e.g. 120")
    return value


def _first_line(e: BaseException) -> str:
    """The gist of a gloo/NCCL message: its first line, without the C++ source location."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0][:300]  # gloo goes on with "This is typically caused by ..."


def _is_peer_failure(e: BaseException) -> bool:
    if isinstance(e, dist.DistError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        w in text for w in ("gloo", "nccl", "connection reset", "connection closed", "timed out")
    )


def peer_failures(fn: F) -> F:
    """Turn the RuntimeError of a collective whose peer died or hung into a DistributedError."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:
            rank, world = dist_info()
            if world == 1 or not _is_peer_failure(e):
                raise
            raise DistributedError(
                f"process {rank} of {world}: another process died or stopped answering ({_first_line(e)}); "
                f"stopping too. The first error in the other processes' output says why; the last "
                f"checkpoint is kept (continue with --resume RUN). Collectives wait "
                f"VAELAB_DIST_TIMEOUT={dist_timeout():g} s for a silent peer"
            ) from e

    return wrapper  # type: ignore[return-value]


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Run `vaelab ARGV` (less its --nproc) under torchrun with N local processes (rendezvous on
    127.0.0.1); returns torchrun's exit status."""
    import logging
    import subprocess
    import sys

    if nproc <= 0:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc}")
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "vaelab",
        *out,
    ]
    logging.getLogger("vaelab").info("launching: %s", " ".join(cmd))
    return subprocess.call(cmd)

"""How many CPU threads to use, and how to keep the allocator from faulting pages in every step.

Separate from train.py because evaluation, the CLI and the benchmarks use it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import torch

from vaelab.platform.omp import affinity, busy_cores

# torch's default intra-op thread count (the physical cores), read once: torch.get_num_threads()
# later returns whatever the last set_num_threads() chose.
_TORCH_DEFAULT_THREADS = torch.get_num_threads()


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped at torch's default (the physical
    core count) and at a container's cgroup quota. A fact of the machine, not of its load."""
    n = max(1, min(len(affinity()), _TORCH_DEFAULT_THREADS))
    quota = cpu_quota()
    if quota is not None:  # a container may own fewer CPUs than it sees
        n = max(1, min(n, int(quota)))
    return n


def default_threads() -> int:
    """Intra-op threads when none are asked for: the usable cores (OMP_NUM_THREADS if set).

    It never depends on how busy the machine is, because the thread count changes the numbers:
    torch splits reductions by thread, so 1 and 2 threads train the seed preset to weights that
    differ by ~2e-5 after 2 epochs, and by far more later (MKL_CBWR=AUTO,STRICT does not make them
    agree: measured 1e-4, the non-GEMM kernels differ too). The same command therefore gives the
    same numbers on the same machine, idle or busy. `--threads auto` (:func:`auto_threads`) trades
    that for speed on a shared machine.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return max(1, _TORCH_DEFAULT_THREADS)
    return usable_cores()


def auto_threads() -> int:
    """`--threads auto`: the usable cores less those that other processes keep busy right now.

    OpenMP threads wait for each other at the end of every parallel region, so one thread sharing
    its core with another process stalls all of them: on a 2-core machine with the other core busy,
    2 threads trained the seed preset about 10x slower than 1 thread (docs/speed.md). How busy our
    cores are is sampled over 0.2 s from /proc/stat (the 1-minute load average elsewhere), and
    ceil(busy - 0.25) cores are left out, so even a half-busy core is. The count chosen is recorded
    in the run folder, so a resumed run uses it again whatever the load then.
    """
    n = usable_cores()
    if n == 1:
        return n
    return max(1, n - math.ceil(busy_cores(affinity()) - 0.25))


def resolve_threads(threads: int | str | None) -> int:
    """The thread count for a `threads` setting: an integer as given, "auto" (load-aware) or None
    (the usable cores, :func:`default_threads`)."""
    if threads == "auto":
        return auto_threads()
    if threads is None:
        return default_threads()
    return int(threads)


def cpu_quota() -> float | None:
    """CPUs granted by a cgroup quota (docker --cpus, Kubernetes limits.cpu); None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000"
    except (OSError, ValueError):
        try:  # cgroup v1: quota -1 means unlimited
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max"
        return None
    return q / p if q > 0 and p > 0 else None


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks below 32 MB instead of handing them back to the kernel.

    A CPU training step frees and reallocates the same few MB of activations and gradients. With
    glibc's defaults the heap top is trimmed and large blocks are unmapped on free, so every step
    faults hundreds of pages back in (zeroed by the kernel): 15-25% of a seed-preset step on CPU,
    measured in benchmarks/speed.py. Process-wide and idempotent; a no-op off glibc or when the user
    set MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ (or GLIBC_TUNABLES) in the environment.
    Returns whether the setting was applied.
    """
    if platform.libc_ver()[0] != "glibc" or any(
        k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
    ):
        return False
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 128 << 20))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def flush_denormal() -> Iterator[None]:
    """Flush subnormal floats to zero on the CPU inside the block (or the decorated function), then
    restore the previous mode: it is processor state that other code (hypothesis, for one) relies on.

    Why training wants it: Adam's moments of parameters whose gradient is always 0 (weights of
    MNIST's blank border pixels) decay as 0.9^step into subnormals after ~800 steps, and x86
    arithmetic on subnormals is slow: without this, epoch 2 onwards of the seed preset ran 35-40%
    slower than epoch 1 (BENCHMARKS.md). Flushing them changes no printed digit.
    """
    was = _flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)


def _flushing_denormals() -> bool:
    """True when the CPU currently treats subnormal float32 values as zero."""
    return float(torch.tensor([1e-39], dtype=torch.float32).mul(1.0)[0]) == 0.0

"""How busy this machine's cores are, and the OpenMP wait policy that follows: no torch here.

torch's CPU kernels run on OpenMP (libgomp), whose threads spin at the end of every parallel region
until the others arrive. When another process keeps one of our cores busy, the thread that shares
that core is descheduled for a time slice while its partner spins, at every one of the thousands of
regions in a step: 2 threads trained the seed preset at 3,500 samples/s against 16,500 idle
(BENCHMARKS.md, "Threads on a busy machine"). Waiting passively (OMP_WAIT_POLICY=PASSIVE: sleep on a
futex instead of spinning) more than halves that loss, and changes no number, since the threads
still split every reduction the same way. On an idle machine passive waiting costs up to 40 %, so
the `vaelab` command chooses it only when a core is busy as it starts. libgomp reads the variable
when torch loads it, hence this module: it must run before `import torch`.
"""

from __future__ import annotations

import os
import sys
import time

# A core counts as busy from this fraction of it: ceil(busy - 0.25) in vaelab.platform.cpu.auto_threads.
BUSY = 0.75

# What choose_wait_policy() measured: the busy cores as the command started (None: not measured).
busy_at_start: float | None = None


def affinity() -> set[int]:
    """The CPUs this process may run on."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # macOS
        return set(range(os.cpu_count() or 1))


def busy_cores(cpus: set[int], window_s: float = 0.2) -> float:
    """How many of `cpus` were busy (steal time included) over the next `window_s` seconds while
    this process sleeps, from /proc/stat; elsewhere the 1-minute load average; 0.0 if neither exists."""

    def sample() -> tuple[int, int]:
        busy = total = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                    total += sum(ticks)
                    busy += sum(ticks) - ticks[3] - ticks[4]
        return busy, total

    try:
        b0, t0 = sample()
        time.sleep(window_s)
        b1, t1 = sample()
        return len(cpus) * (b1 - b0) / max(1, t1 - t0)
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0


def choose_wait_policy(window_s: float = 0.1) -> str | None:
    """Set OMP_WAIT_POLICY=PASSIVE when another process keeps a core busy; return what was set.

    A no-op (None) once torch is imported (libgomp has read its settings by then), when the user
    set OMP_WAIT_POLICY or GOMP_SPINCOUNT themselves, or on a single CPU. Records the measurement
    in `busy_at_start` for :func:`busy_warning`.
    """
    global busy_at_start
    cpus = affinity()
    if "torch" in sys.modules or len(cpus) < 2 or {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
        return None
    busy_at_start = busy_cores(cpus, window_s)
    if busy_at_start < BUSY:
        return None
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "PASSIVE"


def busy_warning(threads: int) -> str | None:
    """A one-line warning when `threads` > 1 share cores that were busy at start, with the fix."""
    if threads < 2 or busy_at_start is None or busy_at_start < BUSY:
        return None
    return (
        f"{busy_at_start:.1f} of the {len(affinity())} cores are busy with other processes: {threads} threads "
        f"wait for each other (passively, OMP_WAIT_POLICY=PASSIVE) and run 1.5-3x slower than when idle. "
        f"--threads 1 or --threads auto is faster here; any fixed --threads N gives the same numbers "
        f"under any load, and a resume keeps the count the run started with"
    )

"""speed.py's child side, the tools every measurement shares: threads, data, the run's config, a
timed loop. Each measurement runs in its own process (`speed.py --child JOB`), which imports torch
and vaelab; the parent never does."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 / 1024 if sys.platform == "darwin" else r / 1024


def set_threads(threads: str) -> int:
    """Apply a thread setting: an integer, "default" (vaelab's default, the usable cores) or "auto"
    (vaelab.platform.cpu.auto_threads: the usable cores less the busy ones)."""
    import torch

    from vaelab.platform.cpu import resolve_threads

    n = resolve_threads(None if threads == "default" else threads if threads == "auto" else int(threads))
    torch.set_num_threads(n)
    return n


def load_mnist_or_synthetic(n_train: int | None = None) -> tuple[Any, str]:
    """MNIST's splits (50k/10k/10k) from the local cache, else a synthetic stand-in of the same shape."""
    from vaelab.config import DataConfig
    from vaelab.data import load_splits

    try:
        splits = load_splits(DataConfig(dataset="mnist", limit=n_train))
        return splits, "MNIST"
    except Exception as e:  # noqa: BLE001 - offline without a cache: time synthetic images instead
        print(f"note: MNIST unavailable ({e}); timing synthetic images", file=sys.stderr)
        return synthetic_splits(n_train or 50_000), "synthetic"


def synthetic_splits(n: int, seed: int = 0) -> Any:
    """n random uint8 28x28 images for training (+ 1000 each for val/test). Cost does not depend on pixels."""
    import torch

    from vaelab.data import DataSplits, ImageData

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n + 2000, 1, 28, 28), dtype=torch.uint8, generator=g)
    return DataSplits("synthetic", ImageData(x[:n]), ImageData(x[n : n + 1000]), ImageData(x[n + 1000 :]), 0)


def run_cfg(job: dict[str, Any]) -> Any:
    from vaelab.config_io import load_preset, replace

    over = {
        "train.epochs": 1,
        "train.batch_size": job["batch"],
        "train.device": job["device"],
        "train.threads": None
        if job["threads"] == "default"
        else job["threads"]
        if job["threads"] == "auto"
        else int(job["threads"]),
    }
    over.update(job.get("overrides", {}))
    return replace(load_preset(job["preset"]), over)


def timed_loop(fn: Callable[[], Any], seconds: float, sync: Callable[[], None]) -> tuple[int, float]:
    """Call fn until `seconds` have passed (at least 3 times); (calls, elapsed seconds)."""
    fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= 3:
            sync()
            dt = time.perf_counter() - t0
            if dt >= seconds:
                return n, dt


def device_sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

"""Shared fixtures: seeded randomness, a tiny synthetic dataset and tiny trained runs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.data import DataSplits, ImageData


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)  # small tensors: 1 thread is fastest and deterministic
    yield


def make_images(n: int, hw: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 images (n, 1, hw, hw) of 4 classes (a bright quadrant per class) plus noise, with labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 60, (n, 1, hw, hw)).astype(np.uint8)
    h = hw // 2
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 0, r * h : (r + 1) * h, col * h : (col + 1) * h] = rng.integers(180, 256, (h, h))
    return x, y.astype(np.int64)


@pytest.fixture
def tiny_splits() -> DataSplits:
    x, y = make_images(600)
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    return DataSplits(
        "synthetic",
        ImageData(t(x[:400]), t(y[:400])),
        ImageData(t(x[400:500]), t(y[400:500])),
        ImageData(t(x[500:]), t(y[500:])),
        num_classes=4,
    )


@pytest.fixture
def tiny_cfg() -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="synthetic"),
        model=ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2),
        train=TrainConfig(epochs=2, batch_size=40, seed=0, device="cpu", threads=1, log_every=5),
    )


def with_train(cfg: RunConfig, latent_dim: int = 4, **train: object) -> RunConfig:
    """`cfg` (e.g. the tiny_cfg fixture) with `latent_dim` latents and the given TrainConfig fields."""
    import dataclasses

    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, latent_dim=latent_dim),
        train=dataclasses.replace(cfg.train, **train),
    )


def fit_seeded(cfg: RunConfig, splits: DataSplits, run_dir=None, resume: bool = False):
    """fit() a VAE of cfg.model built after seeding torch with cfg.train.seed (a resume is exact)."""
    from vaelab.models import VAE
    from vaelab.training import fit

    torch.manual_seed(cfg.train.seed)
    return fit(VAE(cfg.model), splits, cfg, run_dir, resume=resume, progress=False)


@pytest.fixture
def npz_dataset(tmp_path):
    """A small .npz dataset on disk (600 8x8 images with labels)."""
    x, y = make_images(600)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x[:, 0], y=y)
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `vaelab ARGS` in-process: (exit code, stdout, stderr). main() exits only on errors."""
    from vaelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def train_tiny_run(
    root,
    *,
    n: int = 600,
    hw: int = 8,
    hidden: tuple[int, ...] = (16,),
    latent_dim: int = 2,
    epochs: int = 2,
    batch_size: int = 40,
    name: str = "data",
    **train: object,
):
    """The one helper that trains a small run folder for tests: `n` quadrant images of hw x hw (4
    classes, make_images) written to ROOT/NAME.npz (the run's dataset name), an MLP of `hidden` widths and `latent_dim`,
    `epochs` of fit() with seed 0 and one thread (plus any TrainConfig field in `train`). Returns
    ROOT/run, a run folder as `vaelab train` writes it."""
    from pathlib import Path

    from vaelab.data import load_splits
    from vaelab.models import build_model
    from vaelab.training import fit

    root = Path(root)
    x, y = make_images(n, hw=hw)
    np.savez(root / f"{name}.npz", x=x[:, 0], y=y)
    cfg = RunConfig(
        data=DataConfig(dataset=str(root / f"{name}.npz")),
        model=ModelConfig(input_shape=(1, hw, hw), hidden=hidden, latent_dim=latent_dim),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, seed=0, device="cpu", threads=1, **train),  # type: ignore[arg-type]
    )
    torch.manual_seed(0)
    fit(build_model(cfg.model), load_splits(cfg.data), cfg, root / "run", progress=False)
    return root / "run"


def crash_fit_at_step(monkeypatch, step: int, run: Callable[[], object]) -> None:
    """Run `run()` (a fit) with a simulated crash as training reaches optimizer step `step` (the
    last checkpoint left behind is the one before it), then undo the patch."""
    import vaelab.training.loop as T

    real = T.kl_weight

    def crash(tc, s, steps_per_epoch):
        if s == step:
            raise RuntimeError("simulated crash")
        return real(tc, s, steps_per_epoch)

    monkeypatch.setattr(T, "kl_weight", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run()
    monkeypatch.setattr(T, "kl_weight", real)

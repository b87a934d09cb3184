"""TensorBoard logging of a training run: an `on_log` hook for fit()."""

from __future__ import annotations

import os

import torch

from vaelab.data import ImageData, to_float
from vaelab.errors import ConfigError
from vaelab.models import BaseVAE

# the terms in metrics.csv that are not nats: a codebook's perplexity and usage, a temperature
UNITLESS_TERMS = ("perplexity", "codes_used", "temperature")


class TensorBoardLog:
    """An `on_log` hook for fit(): each epoch's scalars and image grids, written to `log_dir` for
    TensorBoard (`tensorboard --logdir RUN/tensorboard`).

    Scalars (nats per image unless named otherwise): train/ and val/ elbo_nats, log_px_z_nats,
    kl_nats; train/objective_nats, train/lr, train/kl_weight, train/samples_per_s, and an
    objective's own terms (train/tc_nats, ...), at the global step. Images: `reconstructions` (n validation images above their reconstructions) and
    `samples` (decoded from n draws of the model's prior with a fixed seed; labels 0, 1, ... for a conditional model).
    Needs the tensorboard package (pip install 'vaelab[tensorboard]'), imported only here.
    Call it on rank 0 only; `close()` at the end.
    """

    SCALARS = {
        "train_elbo": "train/elbo_nats",
        "train_log_px_z": "train/log_px_z_nats",
        "train_kl": "train/kl_nats",
        "train_objective": "train/objective_nats",
        "val_elbo": "val/elbo_nats",
        "val_log_px_z": "val/log_px_z_nats",
        "val_kl": "val/kl_nats",
        "lr": "train/lr",
        "kl_weight": "train/kl_weight",
        "samples_per_s": "train/samples_per_s",
    }

    def __init__(self, log_dir: str | os.PathLike[str], model: BaseVAE, images: ImageData, n: int = 8, seed: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'vaelab[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(log_dir))
        self.model = model
        xb, yb = images.batch(slice(0, n))
        self.x = to_float(xb)  # (n, C, H, W), moved to the model's device when used
        k = model.cfg.num_classes
        self.y = None if k == 0 else yb
        self.seed = seed  # the same draws of the model's own prior at every epoch
        self.n = n
        self.y_samples = None if k == 0 else torch.arange(n) % k

    @torch.no_grad()
    def __call__(self, row: dict[str, float]) -> None:
        step = int(row["step"])
        for key, tag in self.SCALARS.items():
            if key in row:
                self.writer.add_scalar(tag, row[key], step)
        for key in row.keys() - self.SCALARS.keys():  # an objective's or a model's own terms (train_tc, ...)
            if key.startswith("train_"):
                unit = "" if key[6:] in UNITLESS_TERMS else "_nats"
                self.writer.add_scalar(f"train/{key[6:]}{unit}", row[key], step)
        model, device = self.model, self.model.device
        was_training = model.training
        model.eval()
        try:
            x = self.x.to(device)
            rec = model.reconstruct(x, None if self.y is None else self.y.to(device))
            z = model.sample_latents(self.n, torch.Generator(device).manual_seed(self.seed))
            samples = model.decode(z, None if self.y_samples is None else self.y_samples.to(device))
        finally:
            model.train(was_training)
        self.writer.add_images("reconstructions", torch.cat([x, rec]).float().clamp(0, 1).cpu(), step)
        self.writer.add_images("samples", samples.float().clamp(0, 1).cpu(), step)
        self.writer.flush()  # a crash loses nothing that was logged

    def close(self) -> None:
        self.writer.close()

"""The training batches as the loop draws them: shuffled order, this process's slice, dynamic
binarization, the reparameterization noise and an objective's extra noise, all from one seeded
generator in a fixed order, so that a resumed run draws exactly what an unbroken one would.

Distributed (torchrun): every rank draws the same permutation and the noise of the whole global
batch, and takes its own slice, so N processes compute the same update as one process with the
same global batch (up to float summation order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.config import RunConfig
from vaelab.data import DataSplits, ImageData, to_float
from vaelab.errors import ConfigError
from vaelab.models import BaseVAE
from vaelab.objectives import ObjectiveSpec


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> Tensor:
    """The shuffled order of epoch `epoch`: a function of (seed, epoch) alone, so resume can rebuild it."""
    g = torch.Generator(device).manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g, device=device)


@torch.no_grad()
def mean_pixel(data: ImageData, batch_size: int = 10_000) -> Tensor:
    """The mean training image (C, H, W), pixels in [0, 1], float64 sums over `data`."""
    total = torch.zeros(data.shape, dtype=torch.float64)
    for start in range(0, len(data), batch_size):
        total += to_float(data.batch(slice(start, start + batch_size))[0]).double().sum(0)
    return (total / max(1, len(data))).float()


@dataclass
class Batch:
    """This process's part of one global batch of `size` images: x (b, C, H, W) in [0, 1], labels y
    (b,) or None, eps (draws, b, noise_dim), and the objective's extra noise (b, latent_dim) or None."""

    x: Tensor
    y: Tensor | None
    eps: Tensor
    noise: Tensor | None
    size: int


class Batches:
    """The training split of `splits`, checked against the model, as one uint8 tensor on the device
    (or a memory-mapped array read per batch), cut into `steps_per_epoch` global batches."""

    def __init__(
        self,
        splits: DataSplits,
        model: BaseVAE,
        cfg: RunConfig,
        spec: ObjectiveSpec,
        device: torch.device,
        shard: tuple[int, int],
    ) -> None:
        tc, train = cfg.train, splits.train
        self.rank, self.world = shard
        self.train, self.model, self.tc, self.spec, self.device = train, model, tc, spec, device
        self.resident = torch.is_tensor(train.images)
        self.images = train.images.to(device) if self.resident else train.images
        if model.cfg.num_classes and train.labels is None:
            raise ConfigError(
                f"a conditional model (num_classes {model.cfg.num_classes}) needs labelled data; {splits.name} has none"
            )
        self.labels = (
            train.labels.to(device) if (self.resident and model.cfg.num_classes and train.labels is not None) else None
        )
        self.n = len(train)
        # a last partial batch is split over the processes too
        self.steps_per_epoch = math.ceil(self.n / tc.batch_size)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{self.n} training images are fewer than one batch of {tc.batch_size} per {self.world} processes"
            )
        self.dynamic = cfg.data.binarize == "dynamic"
        self.shape = model.cfg.input_shape
        if tuple(train.shape) != tuple(self.shape):
            raise ConfigError(f"data images are {train.shape} but the model expects input_shape {self.shape}")

    def permutation(self, epoch: int) -> Tensor:
        return epoch_permutation(self.n, self.tc.seed, epoch, self.device if self.resident else torch.device("cpu"))

    def draw(self, perm: Tensor, s: int, noise: torch.Generator) -> Batch:
        """Global batch `s` of the epoch whose order is `perm`: its noise drawn from `noise` for the
        whole global batch (binarization, eps, the objective's), this process's slice kept."""
        tc, device, model = self.tc, self.device, self.model
        idx = perm[s * tc.batch_size : (s + 1) * tc.batch_size]  # the global batch
        gb = len(idx)
        per = -(-gb // self.world)  # batch_size / world, or fewer in a last partial batch
        lo, hi = min(self.rank * per, gb), min((self.rank + 1) * per, gb)
        mine = idx[lo:hi]
        # index_select copies whole rows: 10-16x faster than images[mine] on CPU (docs/speed.md)
        xb = self.images.index_select(0, mine) if self.resident else self.train.batch(mine)[0]
        x = to_float(xb.to(device, non_blocking=True))  # (b, C, H, W) in [0, 1]
        if self.dynamic:  # a fresh binary image per use
            u = torch.rand((gb, *self.shape), generator=noise, device=device)
            x = (u[lo:hi] < x).to(x.dtype)
        eps = torch.randn((tc.m * tc.k, gb, model.noise_dim), generator=noise, device=device)[:, lo:hi]
        y = None
        if model.cfg.num_classes:
            y = self.labels.index_select(0, mine) if self.labels is not None else self.train.labels[mine].to(device)
        extra = None
        if self.spec.noise is not None:
            draw = torch.rand if self.spec.noise == "uniform" else torch.randn
            extra = draw((gb, model.cfg.latent_dim), generator=noise, device=device)[lo:hi]
        return Batch(x, y, eps, extra, gb)

"""The containers every data source fills: uint8 images (N, C, H, W) in ImageData, three splits in
DataSplits, and the checks and splits that the sources share."""

from __future__ import annotations

import mmap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from vaelab.errors import DataError


@dataclass(frozen=True)
class ImageData:
    """Images as uint8 (N, C, H, W) (a tensor, or a memory-mapped numpy array) and optional labels (N,)."""

    images: Any  # torch.Tensor uint8, or np.memmap uint8 for data larger than memory
    labels: Tensor | None = None  # int64
    factors: np.ndarray | None = None  # (N, F) ground-truth factor values, for data that has them

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, n: int) -> ImageData:
        return ImageData(
            self.images[:n],
            None if self.labels is None else self.labels[:n],
            None if self.factors is None else self.factors[:n],
        )

    def batch(self, index: Tensor | slice) -> tuple[Tensor, Tensor | None]:
        """uint8 images and labels at `index` as tensors (reads only those rows of a memmap)."""
        if isinstance(self.images, np.ndarray):
            if isinstance(index, slice):
                rows = np.array(self.images[index])  # a copy: the tensor must not point into the file
            else:
                i = index.cpu().numpy()
                order = np.argsort(i, kind="stable")
                rows = np.empty((len(i), *self.images.shape[1:]), self.images.dtype)
                rows[order] = self.images[i[order]]  # read in file order, return in the order asked
            release_mapped_pages(self.images)
            return torch.from_numpy(rows), None if self.labels is None else self.labels[index]
        return self.images[index], None if self.labels is None else self.labels[index]


def release_mapped_pages(array: np.ndarray) -> None:
    """Unmap the file pages that reading a memory-mapped `array` mapped into this process.

    They stay in the page cache, so reading them again is fast, but they leave this process's
    resident set: without this, the kernel maps 16 pages around every page a random read touches,
    and the RSS of one epoch over a 2 GB file grows to 2 GB (benchmarks/memmap.py). Costs ~0.15 ms
    per batch of 100 random rows. A no-op for arrays in memory and where madvise is missing.
    """
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, mmap.mmap) and hasattr(base, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        base.madvise(mmap.MADV_DONTNEED)


SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataSplits:
    """Train, validation and test sets of one dataset."""

    name: str
    train: ImageData
    val: ImageData
    test: ImageData
    num_classes: int  # 0 when there are no labels
    class_names: tuple[str, ...] = ()
    factor_names: tuple[str, ...] = ()  # data with ground-truth factors (ImageData.factors): their names
    factor_sizes: tuple[int, ...] = ()  # and how many values each takes
    # DataConfig.limit (--limit N) keeps the first N training images and the first N // 5 validation
    # and test images: the (train, val, test) sizes before that cut. None when no limit was applied.
    uncut_sizes: tuple[int, int, int] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape

    def describe(self, split: Literal["train", "val", "test"]) -> str:
        """How many images `split` holds, saying when --limit cut it: "10,000 test images", or
        "400 of 10,000 test images (--limit)". For summaries: "test ELBO ... over " + this."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)}")
        n = len(getattr(self, split))
        noun = {"train": "training", "val": "validation", "test": "test"}[split]
        full = None if self.uncut_sizes is None else self.uncut_sizes[SPLITS.index(split)]
        if full is None or full == n:
            return f"{n:,} {noun} image{'s' * (n != 1)}"
        return f"{n:,} of {full:,} {noun} images (--limit)"


def to_float(images: Tensor) -> Tensor:
    """uint8 (B, C, H, W) -> float32 pixels in [0, 1] (k/255), in one pass (uint8 / float promotes to float32)."""
    return images.div(255.0) if images.dtype == torch.uint8 else images.to(torch.float32).div_(255.0)


def binarize_once(images: Tensor, seed: int) -> Tensor:
    """A fixed Bernoulli draw of each pixel from its grey value: uint8 0/255, reproducible by seed."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(images)
    for start in range(0, len(images), 10_000):  # chunks keep the float copy small
        chunk = to_float(images[start : start + 10_000])
        out[start : start + 10_000] = (torch.rand(chunk.shape, generator=g) < chunk).to(torch.uint8) * 255
    return out


def iter_batches(data: ImageData, batch_size: int) -> Iterable[tuple[Tensor, Tensor | None]]:
    """Sequential uint8 batches (for evaluation and encoding)."""
    for start in range(0, len(data), batch_size):
        yield data.batch(slice(start, start + batch_size))


def _split_train_val(images: np.ndarray, labels: np.ndarray | None, val: int) -> tuple[ImageData, ImageData]:
    x = torch.from_numpy(np.ascontiguousarray(images))
    y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    return (
        ImageData(x[:-val], None if y is None else y[:-val]),
        ImageData(x[-val:], None if y is None else y[-val:]),
    )


def _check_images(x: np.ndarray, source: str) -> np.ndarray:
    """Validate an image array and return uint8 (N, C, H, W)."""
    if x.dtype == np.bool_:
        x = x.astype(np.uint8) * 255
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (N, H, W, C) -> (N, C, H, W)
            x = np.moveaxis(x, -1, 1)
    else:
        raise DataError(f"{source}: x has shape {x.shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C)")
    if len(x) == 0:
        raise DataError(f"{source}: x holds no images")
    if 0 in x.shape:
        raise DataError(f"{source}: x has shape {x.shape}; images need positive sizes")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{source}: x contains NaN or infinite values; clean the data first")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"{source}: float pixels must lie in [0, 1], found range [{lo:g}, {hi:g}]; divide by 255 or store uint8"
            )
        return np.ascontiguousarray(np.rint(x * 255).astype(np.uint8))
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{source}: integer pixels must lie in [0, 255], found range [{lo}, {hi}]")
        return np.ascontiguousarray(x.astype(np.uint8))
    raise DataError(f"{source}: x has dtype {x.dtype}; store uint8 in [0, 255] or floats in [0, 1]")


def _check_labels(y: np.ndarray, n: int, source: str) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: y must be integer labels of shape (N,), got {y.dtype} {y.shape}")
    if len(y) != n:
        raise DataError(f"{source}: x has {n} images but y has {len(y)} labels")
    if len(y) and y.min() < 0:
        raise DataError(f"{source}: labels must be >= 0, found {int(y.min())}")
    return y.astype(np.int64)


def _check_val_size(val_size: int, available: int, source: str) -> None:
    """`val_size` of the `available` images validate: refuse a val_size that leaves none to train on."""
    if val_size >= available:
        raise DataError(
            f"{source}: val_size {val_size} leaves no training images of the {available} there; "
            f"give --data.val_size below {available} (e.g. {max(1, available // 10)}), or drop it"
        )


def _random_splits(
    name: str, x: np.ndarray, y: np.ndarray | None, seed: int = 0, val_size: int | None = None, source: str = ""
) -> DataSplits:
    """80/10/10 split by a fixed permutation (seed 0) for data that ships no split of its own;
    `val_size` images validate in place of the 10% (the test set stays 10%). `source`: the file
    or folder that errors name (default: `name`)."""
    n = len(x)
    source = source or name
    if n < 3:
        raise DataError(f"{source}: {n} images are too few to split into train/val/test (need >= 3)")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, n // 10)
    n_val = n_test if val_size is None else val_size
    if val_size is not None:
        _check_val_size(val_size, n - n_test, f"{source} ({n} images, {n_test} of them test)")
    parts = np.split(perm, [n - n_val - n_test, n - n_test])
    xt = torch.from_numpy(x)
    yt = None if y is None else torch.from_numpy(y)
    sets = [ImageData(xt[p], None if yt is None else yt[p]) for p in parts]
    k = 0 if y is None else int(y.max()) + 1
    return DataSplits(name, sets[0], sets[1], sets[2], num_classes=k)

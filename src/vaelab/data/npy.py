"""A folder of .npy arrays (`images.npy`, optional labels and test set), memory-mapped: data larger
than memory trains with only the rows of each batch read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaelab.data.core import DataSplits, ImageData, _check_labels, _check_val_size
from vaelab.errors import DataError


def _open_npy(path: Path, what: str, mapped: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mapped else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read it as {what} ({e}); write it with np.save") from e


def _npy_images(path: Path) -> np.ndarray:
    """Memory-map a uint8 image array as (N, C, H, W) without reading it."""
    x = _open_npy(path, "a memory-mapped .npy array", mapped=True)
    if x.dtype != np.uint8:
        raise DataError(
            f"{path}: memory-mapped images must be uint8 in [0, 255], got {x.dtype}; convert once "
            f"with np.save(path, np.rint(x * 255).astype(np.uint8)) for floats in [0, 1]"
        )
    if x.ndim == 3:
        x = x.reshape(x.shape[0], 1, *x.shape[1:])  # a view: nothing is read
    if x.ndim != 4:
        raise DataError(f"{path}: expected images of shape (N, H, W) or (N, C, H, W), got {x.shape}")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        raise DataError(
            f"{path}: shape {x.shape} looks channels-last (N, H, W, C); memory-mapped images must be "
            f"(N, C, H, W): save np.moveaxis(x, -1, 1)"
        )
    return x


def load_npy_folder(folder: Path, val_size: int | None = None) -> DataSplits:
    """A folder with `images.npy` (uint8 (N, H, W) or (N, C, H, W)) and optional `labels.npy`, memory-mapped.

    Batches read only the rows they need (see ImageData.batch), so the data can be larger than
    memory. Optional `test_images.npy`/`test_labels.npy` give the test set, and the last 10% (at most
    10k) of images.npy validate; otherwise the last 10% (at most 10k) images are the test set and
    the 10% before them validate. `val_size` images validate in place of that 10%. The splits are
    contiguous runs of the file, in order: train, validation, test. Labels (int, (N,)) are small
    and read into memory.
    """
    x = _npy_images(folder / "images.npy")
    y = None
    if (folder / "labels.npy").exists():
        y = _check_labels(_open_npy(folder / "labels.npy", "labels", mapped=False), len(x), str(folder / "labels.npy"))
    yt = None if y is None else torch.from_numpy(y)
    n = len(x)
    if (folder / "test_images.npy").exists():
        xte = _npy_images(folder / "test_images.npy")
        if xte.shape[1:] != x.shape[1:]:
            raise DataError(
                f"{folder / 'test_images.npy'}: images {xte.shape[1:]} differ from images.npy's {x.shape[1:]}"
            )
        yte = None
        if (folder / "test_labels.npy").exists():
            yte = _check_labels(
                _open_npy(folder / "test_labels.npy", "labels", mapped=False), len(xte), str(folder / "test_labels.npy")
            )
        elif y is not None:
            raise DataError(f"{folder}: labels.npy is there but test_labels.npy is not; add it or remove labels.npy")
        if n < 2:
            raise DataError(f"{folder / 'images.npy'}: {n} image(s) are too few to split into train/val (need >= 2)")
        if val_size is not None:
            _check_val_size(val_size, n, f"{folder / 'images.npy'} ({n} images)")
        cut = n - (max(1, min(10_000, n // 10)) if val_size is None else val_size)
        test = ImageData(xte, None if yte is None else torch.from_numpy(yte))
        k = 0 if y is None else int(max(y.max(), -1 if yte is None else yte.max())) + 1
    else:
        if n < 3:
            raise DataError(
                f"{folder / 'images.npy'}: {n} image(s) are too few to split into train/val/test (need >= 3)"
            )
        n_hold = max(1, min(10_000, n // 10))
        if val_size is not None:
            _check_val_size(val_size, n - n_hold, f"{folder / 'images.npy'} ({n} images, the last {n_hold} test)")
        cut, n = n - n_hold - (n_hold if val_size is None else val_size), n - n_hold
        test = ImageData(x[n:], None if yt is None else yt[n:])
        k = 0 if y is None else int(y.max()) + 1
    train = ImageData(x[:cut], None if yt is None else yt[:cut])
    val = ImageData(x[cut:n], None if yt is None else yt[cut:n])
    return DataSplits(folder.name, train, val, test, num_classes=k)

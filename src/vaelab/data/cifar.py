"""CIFAR-10's binary version (https://www.cs.toronto.edu/~kriz/cifar.html, "CIFAR-10 binary
version (suitable for C programs)"): data_batch_1.bin ... data_batch_5.bin and test_batch.bin, each
10,000 records of 1 label byte and 3,072 pixel bytes (the red, then green, then blue 32 x 32 plane,
row-major). Plain bytes: nothing is unpickled. batches.meta.txt, when present, names the classes.

Splits: the 50,000 training images less the last 5,000 train, those 5,000 validate (or the last
`val_size`, DataConfig.val_size), test_batch is the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaelab.data.core import DataSplits, ImageData, _check_val_size, _split_train_val
from vaelab.errors import DataError

CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD = 1 + 3 * 32 * 32
CIFAR_VAL = 5000


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file: images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % RECORD:
        raise DataError(
            f"{path}: {data.size} bytes is not a whole number of CIFAR-10 records ({RECORD} bytes each: a label "
            f"byte and 3,072 pixels); the file is truncated or not CIFAR-10's binary version"
        )
    rec = data.reshape(-1, RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(
            f"{path}: label {int(labels.max())} is out of range 0..9; this is not CIFAR-10's binary version"
        )
    return np.ascontiguousarray(rec[:, 1:].reshape(-1, 3, 32, 32)), labels


def load_cifar10(folder: str | Path | None, val_size: int | None = None) -> DataSplits:
    """The splits of CIFAR-10 from its binary files in `folder` (--data-dir); the last `val_size`
    training images (default 5,000) validate."""
    if folder is None:
        raise DataError(
            "--dataset cifar10 reads CIFAR-10's binary version from --data-dir DIR (data_batch_1.bin ... "
            "data_batch_5.bin, test_batch.bin, from cifar-10-binary.tar.gz); it is not downloaded"
        )
    folder = Path(folder).expanduser()
    missing = [f for f in (*CIFAR_TRAIN, CIFAR_TEST) if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"--data-dir {folder}: missing {', '.join(missing)}; give the folder of CIFAR-10's binary version "
            f"(cifar-10-batches-bin)"
        )
    parts = [read_cifar_batch(folder / f) for f in CIFAR_TRAIN]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    xt, yt = read_cifar_batch(folder / CIFAR_TEST)
    if val_size is not None:
        _check_val_size(val_size, len(x), f"cifar10 ({len(x)} training images)")
    val = min(CIFAR_VAL, len(x) // 10 or 1) if val_size is None else val_size
    train, valid = _split_train_val(x, y, val)
    names: tuple[str, ...] = CIFAR_CLASSES
    meta = folder / "batches.meta.txt"
    if meta.is_file():
        listed = tuple(line.strip() for line in meta.read_text().splitlines() if line.strip())
        if len(listed) == 10:
            names = listed
    test = ImageData(torch.from_numpy(xt), torch.from_numpy(yt))
    return DataSplits("cifar10", train, valid, test, num_classes=10, class_names=names)

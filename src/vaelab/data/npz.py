"""An .npz file of plain arrays: `x` (images), optional `y` (labels), `x_test` / `y_test`."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from vaelab.data.core import DataSplits, ImageData, _check_images, _check_labels, _random_splits, _split_train_val
from vaelab.errors import DataError


def load_npz(path: Path) -> DataSplits:
    """An .npz with `x` (images) and optional `y` (labels); `x_test`/`y_test` if present give the test set."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04" and not magic.startswith(b"\x93NUM"):
        raise DataError(
            f"{path}: not a valid .npz (zip) file (it starts with {magic!r}, not PK); save images "
            f"with np.savez(f, x=images, y=labels)"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{path}: a single .npy array, not an .npz archive; save with np.savez(f, x=images, y=labels)"
                )
            arrays = {k: f[k] for k in f.files}
    # zipfile and numpy's header parser raise these on corrupt archives; MemoryError on a header
    # that declares a huge array. Object arrays (pickles) are refused by allow_pickle=False.
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        struct.error,
        NotImplementedError,
        RuntimeError,
        OverflowError,
        MemoryError,
        KeyError,
    ) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    bad = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
    if bad:
        raise DataError(f"{path}: member(s) {bad} are not .npy arrays; save with np.savez(f, x=images, y=labels)")
    if "x" not in arrays:
        raise DataError(
            f"{path}: no array named 'x' (found {sorted(arrays) or 'none'}); save with np.savez(f, x=images, y=labels)"
        )
    x = _check_images(arrays["x"], f"{path} x")
    y = _check_labels(arrays["y"], len(x), f"{path} y") if "y" in arrays else None
    if "x_test" in arrays:
        xte = _check_images(arrays["x_test"], f"{path} x_test")
        if xte.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: x_test images {xte.shape[1:]} differ from x images {x.shape[1:]}")
        yte = _check_labels(arrays["y_test"], len(xte), f"{path} y_test") if "y_test" in arrays else None
        if len(x) < 2:
            raise DataError(f"{path}: need at least 2 training images")
        n_val = max(1, len(x) // 10)
        train, val = _split_train_val(x, y, n_val)
        test = ImageData(torch.from_numpy(xte), None if yte is None else torch.from_numpy(yte))
        k = 0 if y is None else int(max(y.max(), -1 if yte is None else yte.max())) + 1
        return DataSplits(path.stem, train, val, test, num_classes=k)
    return _random_splits(path.stem, x, y)

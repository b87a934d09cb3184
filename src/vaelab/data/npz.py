"""An .npz file of plain arrays: `x` (images), optional `y` (labels), `x_val` / `y_val`, `x_test` / `y_test`."""

from __future__ import annotations

import logging
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from vaelab.data.core import (
    DataSplits,
    ImageData,
    _check_images,
    _check_labels,
    _check_val_size,
    _random_splits,
)
from vaelab.errors import DataError

logger = logging.getLogger("vaelab.data")  # one logger for every data source
MEMBERS = ("x", "y", "x_val", "y_val", "x_test", "y_test")  # the arrays load_npz reads


def load_npz(path: Path, val_size: int | None = None) -> DataSplits:
    """An .npz with `x` (images) and optional `y` (labels), and optionally its own split.

    `x_val` / `y_val` and `x_test` / `y_test`, when present, are the validation and test sets, and
    all of `x` trains. A set the file does not give is cut from `x`: with `x_test` alone, the last
    `val_size` images of `x` validate (default: 10%); with `x_val` alone, the last 10% of `x` test.
    With neither, a fixed permutation (seed 0) splits `x` 80/10/10, or with `val_size` validation
    images and 10% test. `val_size` together with `x_val` is refused: the file already chose.
    """
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
    unknown = sorted(set(arrays) - set(MEMBERS))
    if unknown:
        logger.warning("%s: ignored member(s) %s; vaelab reads %s", path, unknown, ", ".join(MEMBERS))
    for xk, yk in (("x_val", "y_val"), ("x_test", "y_test")):
        if yk in arrays and xk not in arrays:
            raise DataError(f"{path}: {yk} is there but {xk} is not; add the {xk} images it labels, or drop {yk}")
    if "x_val" in arrays and val_size is not None:
        raise DataError(
            f"{path}: x_val holds the validation images, and val_size {val_size} asks to take them from x; "
            f"drop --data.val_size (or drop x_val from the file)"
        )
    x = _check_images(arrays["x"], f"{path} x")
    y = _check_labels(arrays["y"], len(x), f"{path} y") if "y" in arrays else None
    held: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}  # the sets the file gives: val, test
    for part in ("val", "test"):
        if f"x_{part}" not in arrays:
            continue
        xp = _check_images(arrays[f"x_{part}"], f"{path} x_{part}")
        if xp.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: x_{part} images {xp.shape[1:]} differ from x images {x.shape[1:]}")
        yp = _check_labels(arrays[f"y_{part}"], len(xp), f"{path} y_{part}") if f"y_{part}" in arrays else None
        if part == "val" and (y is None) != (yp is None):  # a conditional model validates on labels
            raise DataError(
                f"{path}: y labels x but x_val has no y_val; add y_val, or drop y"
                if yp is None
                else f"{path}: y_val labels x_val but x has no y; add y, or drop y_val"
            )
        held[part] = (xp, yp)
    if not held:
        return _random_splits(path.stem, x, y, val_size=val_size, source=str(path))
    if len(held) == 1:  # the set the file does not give is cut from the end of x, in file order
        missing = "test" if "val" in held else "val"
        if len(x) < 2:
            raise DataError(f"{path}: {len(x)} image(s) in x are too few to take a {missing} set from (need >= 2)")
        n_cut = max(1, len(x) // 10)
        if missing == "val" and val_size is not None:
            _check_val_size(val_size, len(x), f"{path} x ({len(x)} images)")
            n_cut = val_size
        held[missing] = (x[-n_cut:], None if y is None else y[-n_cut:])
        x, y = x[:-n_cut], None if y is None else y[:-n_cut]
    train, val, test = (
        ImageData(torch.from_numpy(xp), None if yp is None else torch.from_numpy(yp))
        for xp, yp in ((x, y), held["val"], held["test"])
    )
    k = 0 if y is None else max(int(a.max()) for a in (y, held["val"][1], held["test"][1]) if a is not None) + 1
    return DataSplits(path.stem, train, val, test, num_classes=k)

"""LeCun's IDX format (MNIST, Fashion-MNIST): parse, read (gzip or not), write, find in a folder."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.errors import DataError

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise DataError(f"{path}: file not found") from e
        raise DataError(
            f"{path}: cannot read it ({e}); the file is truncated or corrupt: delete it and fetch it again"
        ) from e


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (LeCun's format: magic 0x0000TTNN, N big-endian uint32 sizes, then data)."""
    if len(data) < 4:
        raise DataError(f"{source}: {len(data)} bytes is too short for an IDX file (4-byte header at least)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{source}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000TTNN with type TT in "
            f"{sorted(hex(t) for t in IDX_DTYPES)} and NN >= 1 dimensions); is this an IDX file?"
        )
    if ndim > 32:  # numpy arrays have at most 32 (numpy 1) or 64 dimensions
        raise DataError(
            f"{source}: IDX header declares {ndim} dimensions (at most 32 are supported); is this an IDX file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = dtype.itemsize
    for d in dims:  # Python ints: a product of four 32-bit sizes overflows int64
        expected *= d
    if len(data) - header != expected:
        raise DataError(
            f"{source}: IDX header says shape {tuple(dims)} ({expected} data bytes) but the file holds "
            f"{len(data) - header}; the file is truncated or corrupt: fetch it again"
        )
    try:
        array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    except ValueError as e:  # e.g. shape (0, 2**31, 2**31, 8): no data, but too big for numpy
        raise DataError(f"{source}: IDX header shape {tuple(dims)} is not a valid array shape ({e})") from e
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes (the inverse of parse_idx for uint8 data)."""
    if array.dtype != np.uint8:
        raise DataError(f"idx_bytes writes uint8 arrays only, got {array.dtype}")
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _find_idx(folder: Path, stem: str) -> Path | None:
    # torchvision keeps them under MNIST/raw/, keras users have them flat; '.' or '-' variants exist.
    for sub in ("", "raw", "MNIST/raw"):
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
            p = folder / sub / name
            if p.is_file():
                return p
    return None


def load_idx_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four IDX files of an MNIST-like dataset in `folder`: train images/labels, test images/labels."""
    paths = {}
    for key, stem in MNIST_FILES.items():
        p = _find_idx(folder, stem)
        if p is None:
            raise DataError(
                f"{folder}: no {stem} or {stem}.gz; --data-dir must hold the four MNIST IDX files "
                f"({', '.join(MNIST_FILES.values())})"
            )
        paths[key] = p
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        imgs, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim != 3 or imgs.dtype != np.uint8:
            raise DataError(
                f"{paths[f'{split}_images']}: expected uint8 images (N, H, W), got {imgs.dtype} {imgs.shape}"
            )
        if labels.ndim != 1:
            raise DataError(f"{paths[f'{split}_labels']}: expected labels (N,), got shape {labels.shape}")
        if len(imgs) != len(labels):
            raise DataError(
                f"{paths[f'{split}_images']} has {len(imgs)} images but {paths[f'{split}_labels']} has "
                f"{len(labels)} labels; the files do not belong together"
            )
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]

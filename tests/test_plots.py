"""Plot helpers: grids, PCA axes, the manifold grid; figures render."""

from __future__ import annotations

import inspect
import io
from statistics import NormalDist

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from vaelab import plots
from vaelab.run import outputs


def test_image_grid_layout():
    imgs = np.stack([np.full((1, 2, 3), i / 10, np.float32) for i in range(5)])
    g = plots.image_grid(imgs, ncols=2, pad=1)
    assert g.shape == (3 * 3 - 1, 2 * 4 - 1)
    assert g[0, 0] == 0.0 and g[0, 4] == np.float32(0.1) and g[6, 0] == np.float32(0.4)
    # padding row, padding column and the empty last cell: mid grey, the same under invert
    assert g[2, 0] == g[0, 3] == g[6, 4] == 0.5
    assert plots.image_grid(imgs, ncols=2, pad_value=1.0)[2, 0] == 1.0
    rgb = plots.image_grid(np.zeros((2, 3, 2, 2), np.float32), ncols=2)
    assert rgb.shape == (2, 5, 3) and (rgb[:, 2] == 0.5).all()


# -- colours: pixels are drawn as they are; invert is the caller's choice ------------------------


def _render(fig) -> np.ndarray:
    """(H, W, 3) uint8 pixels of the figure as saved at its dpi."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _cell_centre(fig, grid_rc: tuple[int, int]) -> tuple[int, int]:
    """Figure pixel (row, col) over grid pixel grid_rc of the first image of the figure."""
    ax = next(a for a in fig.axes if a.images)
    h, w = ax.images[0].get_array().shape[:2]
    box = ax.get_window_extent(fig.canvas.get_renderer())
    col = box.x0 + (grid_rc[1] + 0.5) * box.width / w
    row_from_bottom = box.y0 + (h - grid_rc[0] - 0.5) * box.height / h
    return int(fig.bbox.height - row_from_bottom), int(col)


def test_grey_images_are_drawn_as_they_are_and_invert_on_request():
    # two 4x4 images: all black (0) and all white (1)
    imgs = np.stack([np.zeros((1, 4, 4)), np.ones((1, 4, 4))]).astype(np.float32)
    for invert, (black, white) in ((False, (0, 255)), (True, (255, 0))):
        fig = plots.plot_samples(imgs, ncols=2, invert=invert)
        px = _render(fig)
        np.testing.assert_array_equal(px[_cell_centre(fig, (2, 2))], [black] * 3)  # image 0
        np.testing.assert_array_equal(px[_cell_centre(fig, (2, 7))], [white] * 3)  # image 1
        assert fig.axes[0].images[0].get_cmap().name == "gray"
        assert abs(int(px[_cell_centre(fig, (2, 4))][0]) - 128) <= 1  # the padding column: mid grey


def test_colour_images_are_drawn_as_rgb_and_inverted_only_on_request():
    red = np.zeros((1, 3, 4, 4), np.float32)
    red[:, 0] = 1.0
    for invert, want in ((False, [255, 0, 0]), (True, [0, 255, 255])):
        fig = plots.plot_samples(red, ncols=1, invert=invert)
        np.testing.assert_array_equal(_render(fig)[_cell_centre(fig, (1, 1))], want)


def test_every_image_figure_uses_the_one_colour_path():
    assert "gray_r" not in inspect.getsource(plots)
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 5, 5))
    for invert in (False, True):
        figs = [
            plots.plot_reconstructions(x, x, invert=invert),
            plots.plot_samples(x, invert=invert),
            plots.plot_manifold(x, plots.manifold_axis(2), invert=invert),
        ]
        for fig in figs:
            for ax in fig.axes:
                for im in ax.images:
                    assert im.get_cmap().name == "gray" and im.get_clim() == (0, 1)
                    want = 1 - plots.image_grid(x, 2, pad=0) if invert else plots.image_grid(x, 2, pad=0)
                    if im.get_array().shape == want.shape:  # the manifold: no padding
                        np.testing.assert_allclose(im.get_array(), want, rtol=0, atol=1e-6)


# -- layout: titles fit and image cells stay readable --------------------------------------------


def _check_layout(fig, min_cell_px: float = 40) -> None:
    """Every title lies inside the figure; every image cell is >= min_cell_px wide as saved."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    titles = [t for t in [fig._suptitle, *(a.title for a in fig.axes)] if t is not None and t.get_text()]
    assert titles
    for t in titles:
        b = t.get_window_extent(r)
        assert fig.bbox.x0 <= b.x0 and b.x1 <= fig.bbox.x1 and fig.bbox.y0 <= b.y0 and b.y1 <= fig.bbox.y1, (
            t.get_text(),
            b,
            fig.bbox,
        )
    for ax in fig.axes:
        for im in ax.images:
            grid_w = im.get_array().shape[1]
            px_per_pixel = ax.get_window_extent(r).width / grid_w  # figure pixels per image pixel
            assert px_per_pixel * 28 >= min_cell_px, (grid_w, ax.get_window_extent(r))  # 28-pixel images


@pytest.mark.parametrize("n", [1, 7, 32])
def test_small_and_large_grids_keep_titles_inside_and_cells_readable(n):
    rng = np.random.default_rng(n)
    x = rng.random((n, 1, 28, 28))
    _check_layout(plots.plot_reconstructions(x, x))  # as `vaelab reconstruct -n N` draws it
    _check_layout(plots.plot_samples(x, ncols=min(n, 8)))  # as `vaelab sample -n N`
    _check_layout(plots.plot_samples(x, ncols=8, title="Samples per class (rows), z ~ N(0, I)"))
    rgb = rng.random((n, 3, 28, 28))
    _check_layout(plots.plot_samples(rgb, ncols=min(n, 8), title="Samples: decoded z ~ N(0, I), label 7"))


@pytest.mark.parametrize("n", [1, 3, 20])
def test_manifold_title_fits_and_cells_are_readable(n):
    x = np.random.default_rng(n).random((n * n, 1, 28, 28))
    _check_layout(
        plots.plot_manifold(
            x, plots.manifold_axis(n), label=9, class_names=[f"class {i}" for i in range(9)] + ["Ankle boot"]
        )
    )


def test_saved_one_image_grid_is_not_tiny():
    fig = plots.plot_reconstructions(np.zeros((1, 1, 28, 28)), np.zeros((1, 1, 28, 28)))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # at the default dpi, as the CLI saves it
    from PIL import Image

    with Image.open(buf) as im:
        w, h = im.size
    assert w >= 400 and h >= 2 * 40  # the 82x262 picture is gone


def test_pca_axes_are_labelled_for_high_dimensional_latents():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 5)) * np.array([5, 2, 0.1, 0.1, 0.1])
    pts, xl, yl = plots.latent_axes(z)
    assert pts.shape == (500, 2) and xl.startswith("PC 1") and yl.startswith("PC 2")
    _, ratio = plots.pca2(z)
    assert ratio[0] > 0.8 and ratio[0] > ratio[1]
    assert plots.latent_axes(z[:, :2])[1] == "$z_1$"


def test_manifold_grid_is_the_inverse_normal_cdf_of_a_uniform_grid():
    g = plots.manifold_grid(4)
    q = [NormalDist().inv_cdf(u) for u in (0.125, 0.375, 0.625, 0.875)]
    np.testing.assert_allclose(g[:4, 0], q, rtol=1e-6)
    np.testing.assert_allclose(g[0::4, 1], q[::-1], rtol=1e-6)  # z2 decreases downwards


def _tick_values(texts) -> list[float]:
    return [float(t.get_text().replace("\u2212", "-")) for t in texts]


@pytest.mark.parametrize("n", [5, 20, 45])
def test_manifold_ticks_give_the_z_of_the_tile_under_them(n):
    """#23: the tiles sit at Phi^-1((i + 0.5) / n) but the ticks were on a linear z axis, so the
    tile under "1.0" was decoded at z = 0.76. Each tile here carries its own grid point in its
    pixels (red = Phi(z1), green = Phi(z2)); the tile under each tick must be the z its label says."""
    nd = NormalDist()
    pts = plots.manifold_grid(n)  # the points the tiles are decoded at, row-major from the top left
    u = np.array([[nd.cdf(float(a)), nd.cdf(float(b))] for a, b in pts])  # (n*n, 2) in (0, 1)
    images = np.zeros((n * n, 3, 4, 4), np.float32)
    images[:, :2] = u[:, :, None, None]
    fig = plots.plot_manifold(images, plots.manifold_axis(n))
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    ax = fig.axes[0]
    im = ax.images[0]
    grid = np.asarray(im.get_array())  # (4n, 4n, 3)
    left, right, bottom, top = im.get_extent()
    hh, ww = grid.shape[:2]

    xs, x_labels = ax.get_xticks(), _tick_values(ax.get_xticklabels())
    ys, y_labels = ax.get_yticks(), _tick_values(ax.get_yticklabels())
    for p, label in zip(xs, x_labels):
        col = (p - left) / (right - left) * ww  # image pixels from the left
        z1 = nd.inv_cdf(float(grid[hh // 2, int(col), 0]))
        assert abs(label - z1) <= 0.005 + 1e-4, (p, label, z1)
        assert abs(col % 4 - 2) < 1e-6  # at the centre of a tile
    for p, label in zip(ys, y_labels):
        row = (top - p) / (top - bottom) * hh  # image pixels from the top
        z2 = nd.inv_cdf(float(grid[int(row), ww // 2, 1]))
        assert abs(label - z2) <= 0.005 + 1e-4, (p, label, z2)
        assert abs(row % 4 - 2) < 1e-6
    assert len(xs) == len(x_labels) >= min(n, 10) and len(ys) == len(y_labels) >= min(n, 10)
    assert x_labels == y_labels == [-v for v in x_labels[::-1]]  # symmetric about z = 0
    if n <= plots.MAX_MANIFOLD_TICKS:
        assert len(x_labels) == n  # every tile labelled


def test_manifold_refuses_values_that_do_not_match_the_images():
    from vaelab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"9 images need 3 ascending values.*manifold_axis"):
        plots.plot_manifold(np.zeros((9, 1, 4, 4)), plots.manifold_axis(4))


def _line(ax, label: str):
    (line,) = [ln for ln in ax.lines if ln.get_label() == label]
    return line


TRAIN, VAL = "train ELBO (mean over the epoch's steps)", "validation ELBO (at the step it was measured)"


def test_learning_curves_of_a_run_shorter_than_an_epoch_are_drawn_by_step():
    """#23: a 2-minute run of one partial epoch drew one dot on an epoch axis. With < 3 epoch rows
    the x axis is the step: validation at the step it was measured, train as a segment over the
    steps it averages; nothing is invented between the rows."""
    one = [{"epoch": 1.0, "step": 37.0, "train_elbo": -210.0, "val_elbo": -190.0, "epoch_fraction": 0.37}]
    ax = plots.plot_learning_curves(one).axes[0]
    assert ax.get_xlabel() == "step"
    assert list(_line(ax, TRAIN).get_xdata()) == [37] and list(_line(ax, TRAIN).get_ydata()) == [-210.0]
    assert list(_line(ax, VAL).get_xdata()) == [37] and list(_line(ax, VAL).get_ydata()) == [-190.0]
    spans = [ln for ln in ax.lines if ln.get_label().startswith("_")]
    assert [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in spans] == [([0, 37], [-210.0, -210.0])]
    assert "1 epoch row" in ax.get_title() and "37% done" in ax.get_title()
    assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > 37

    two = [
        {"epoch": 1, "step": 100, "train_elbo": -200.0, "val_elbo": -180.0, "epoch_fraction": 1.0},
        {"epoch": 2, "step": 150, "train_elbo": -170.0, "val_elbo": -165.0, "epoch_fraction": 0.5},
    ]
    ax = plots.plot_learning_curves(two).axes[0]
    assert ax.get_xlabel() == "step" and "2 epoch rows" in ax.get_title()
    assert list(_line(ax, VAL).get_xdata()) == [100, 150] and list(_line(ax, VAL).get_ydata()) == [-180.0, -165.0]
    spans = [ln for ln in ax.lines if ln.get_label().startswith("_")]
    assert [list(ln.get_xdata()) for ln in spans] == [[0, 100], [100, 150]]


def test_learning_curves_of_three_epochs_or_more_stay_by_epoch():
    rows = [{"epoch": e, "step": 100 * e, "train_elbo": -200.0 + e, "val_elbo": -190.0 + e} for e in (1, 2, 3)]
    ax = plots.plot_learning_curves(rows).axes[0]
    assert ax.get_xlabel() == "epoch" and ax.get_title() == "Learning curves"
    assert [list(ln.get_xdata()) for ln in ax.lines] == [[1, 2, 3], [1, 2, 3]]
    # an older run's row without a step column (read_metrics gives NaN): by epoch, as before
    old = [{"epoch": 1.0, "step": float("nan"), "train_elbo": -200.0, "val_elbo": -190.0}]
    assert plots.plot_learning_curves(old).axes[0].get_xlabel() == "epoch"


def test_figures_render_to_png():
    rng = np.random.default_rng(0)
    figs = [
        plots.plot_latent(rng.normal(size=(100, 2)), rng.integers(0, 10, 100), [str(i) for i in range(10)]),
        plots.plot_reconstructions(rng.random((8, 1, 5, 5)), rng.random((8, 1, 5, 5))),
        plots.plot_samples(rng.random((16, 1, 5, 5))),
        plots.plot_manifold(rng.random((9, 1, 5, 5)), plots.manifold_axis(3)),
        plots.plot_learning_curves(
            [{"epoch": 1, "train_elbo": -200, "val_elbo": -190}, {"epoch": 2, "train_elbo": -150, "val_elbo": -160}]
        ),
    ]
    for f in figs:
        buf = io.BytesIO()
        f.savefig(buf, format="png")
        assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the manifold of a conditional model names its label -----------------------------------------


@pytest.fixture
def tiny_cvae():
    import vaelab
    from vaelab.data import ImageData

    torch.manual_seed(0)
    model = vaelab.VAE(vaelab.ModelConfig(input_shape=(1, 6, 6), hidden=(8,), latent_dim=2, num_classes=3))
    g = torch.Generator().manual_seed(0)
    test = ImageData(torch.randint(0, 256, (12, 1, 6, 6), dtype=torch.uint8, generator=g), torch.arange(12) % 3)
    return model, test


def _capture(monkeypatch, name: str) -> list:
    figs = []
    real = getattr(plots, name)
    monkeypatch.setattr(plots, name, lambda *a, **k: figs.append(real(*a, **k)) or figs[-1])
    return figs


@pytest.mark.parametrize("label, want", [(None, "label 0 (zero)"), (2, "label 2 (two)")])
def test_conditional_manifold_decodes_and_names_the_chosen_label(tiny_cvae, tmp_path, monkeypatch, label, want):
    model, test = tiny_cvae
    figs = _capture(monkeypatch, "plot_manifold")
    written = outputs.save_run_pictures(model, test, tmp_path, [], ("zero", "one", "two"), manifold_label=label)
    assert tmp_path / "manifold.png" in written
    (fig,) = figs
    assert want in fig.axes[0].get_title()
    # the picture is the decoder given that label, not label 0 by accident
    pts = torch.from_numpy(plots.manifold_grid(20))
    with torch.no_grad():
        dec = model.decode(pts, torch.full((400,), label or 0)).numpy()
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), plots.image_grid(dec, 20, pad=0), rtol=0, atol=1e-6)
    _check_layout(fig, min_cell_px=0)


def test_manifold_label_is_checked_and_unconditional_titles_name_none(tiny_cvae, tmp_path, monkeypatch):
    import vaelab
    from vaelab.errors import ConfigError

    model, test = tiny_cvae
    with pytest.raises(ConfigError, match=r"out of range: this model knows labels 0\.\.2"):
        outputs.save_run_pictures(model, test, tmp_path, [], manifold_label=3)
    assert not list(tmp_path.iterdir())  # refused before drawing anything
    torch.manual_seed(0)
    plain = vaelab.VAE(vaelab.ModelConfig(input_shape=(1, 6, 6), hidden=(8,), latent_dim=2))
    with pytest.raises(ConfigError, match="not conditional"):
        outputs.save_run_pictures(plain, test, tmp_path, [], manifold_label=0)
    figs = _capture(monkeypatch, "plot_manifold")
    outputs.save_run_pictures(plain, test, tmp_path, [])
    assert "label" not in figs[0].axes[0].get_title()


def test_save_run_pictures_inverts_only_on_request(tiny_cvae, tmp_path, monkeypatch):
    model, test = tiny_cvae
    arrays = {}
    for invert in (False, True):
        figs = _capture(monkeypatch, "plot_samples")
        outputs.save_run_pictures(model, test, tmp_path, [], seed=0, invert=invert)
        arrays[invert] = np.asarray(figs[0].axes[0].images[0].get_array())
    np.testing.assert_allclose(arrays[True], 1 - arrays[False], rtol=0, atol=1e-6)


@pytest.mark.parametrize("c", [1, 2, 3, 4, 5])
def test_every_channel_count_is_drawn_by_one_rule(c, tmp_path):
    """1 grey, 3 RGB; 2 channels show the first as grey, 4+ the first three as RGB (plots and explorer)."""
    imgs = np.random.default_rng(c).random((3, c, 6, 5)).astype(np.float32)
    g = plots.image_grid(imgs, ncols=3, pad=1)
    want = imgs[0, 0] if c < 3 else imgs[0, :3].transpose(1, 2, 0)  # (H, W) grey or (H, W, 3)
    np.testing.assert_array_equal(g[:6, :5], want)
    plots.plot_samples(imgs, ncols=3).savefig(tmp_path / "s.png")  # imshow takes what the grid gives


def test_the_runs_sample_picture_says_what_it_shows(tmp_path, monkeypatch):
    """#23 item 8: samples.png of a bernoulli-ar run is titled a mean-field pass, with the model's prior."""
    from vaelab import plots
    from vaelab.config import ModelConfig
    from vaelab.models import build_model

    titles = []
    real = plots.plot_samples
    monkeypatch.setattr(plots, "plot_samples", lambda *a, **k: titles.append(k.get("title")) or real(*a, **k))
    torch.manual_seed(0)
    model = build_model(ModelConfig(input_shape=(1, 8, 8), hidden=(8,), latent_dim=3, likelihood="bernoulli-ar"))
    from vaelab.data import ImageData

    images = ImageData(torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8), None)
    outputs.save_run_pictures(model, images, tmp_path, [], ())
    assert titles == ["Samples: mean-field pass of p(x|z), z ~ N(0, I)"]

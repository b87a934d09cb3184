"""Plot helpers: grids, PCA axes, the manifold grid; figures render."""

from __future__ import annotations

import io
from statistics import NormalDist

import numpy as np

from vaelab import plots


def test_image_grid_layout():
    imgs = np.stack([np.full((1, 2, 3), i / 10, np.float32) for i in range(5)])
    g = plots.image_grid(imgs, ncols=2, pad=1)
    assert g.shape == (3 * 3 - 1, 2 * 4 - 1)
    assert g[0, 0] == 0.0 and g[0, 4] == np.float32(0.1) and g[6, 0] == np.float32(0.4)
    assert g[2, 0] == 0.0  # padding row, white under the reversed grey map


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


def test_figures_render_to_png():
    rng = np.random.default_rng(0)
    figs = [
        plots.plot_latent(rng.normal(size=(100, 2)), rng.integers(0, 10, 100), [str(i) for i in range(10)]),
        plots.plot_reconstructions(rng.random((8, 1, 5, 5)), rng.random((8, 1, 5, 5))),
        plots.plot_samples(rng.random((16, 1, 5, 5))),
        plots.plot_manifold(rng.random((9, 1, 5, 5)), 3, (-1.0, 1.0)),
        plots.plot_learning_curves([{"epoch": 1, "train_elbo": -200, "val_elbo": -190},
                                    {"epoch": 2, "train_elbo": -150, "val_elbo": -160}]),
    ]
    for f in figs:
        buf = io.BytesIO()
        f.savefig(buf, format="png")
        assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"

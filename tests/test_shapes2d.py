"""shapes2d, the dSprites-like dataset rendered here: its factor grid, its pictures, its cache, and
what load_splits makes of it. A small grid keeps the test fast; the full one is the same code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaelab.config import DataConfig
from vaelab.data import load_splits
from vaelab.data import shapes2d as S
from vaelab.errors import DataError

SMALL = (3, 2, 4, 4, 3)  # shape, scale, orientation, x, y: 288 images


def test_the_full_grid_is_dsprites_grid():
    assert S.FACTOR_SIZES == (3, 6, 40, 32, 32) and int(np.prod(S.FACTOR_SIZES)) == 737_280
    v = S.factor_values()
    np.testing.assert_allclose(v[1], np.linspace(0.5, 1, 6))
    assert v[2][0] == 0 and v[2][-1] < 2 * np.pi and len(v[2]) == 40  # orientations, endpoint excluded
    np.testing.assert_allclose([v[3][0], v[3][-1]], [0, 1])


def test_each_shape_has_the_area_of_its_formula_and_shrinks_with_its_scale():
    for shape, area in [(0, (1.6 * S.HALF_SIZE) ** 2), (1, np.pi * S.HALF_SIZE * 0.55 * S.HALF_SIZE)]:
        big = S.render(shape, 1.0, 0.0, np.array([0.5]), np.array([0.5]))[0].sum()
        small = S.render(shape, 0.5, 0.0, np.array([0.5]), np.array([0.5]))[0].sum()
        assert abs(big - area) / area < 0.08
        assert 0.2 < small / big < 0.35  # scale 0.5: a quarter of the area, up to whole pixels
    heart = S.render(2, 1.0, 0.0, np.array([0.5]), np.array([0.5]))[0]
    rows = np.flatnonzero(heart.any(1))
    top, bottom = heart[rows[0] + 2], heart[rows[-1] - 1]
    assert top.sum() > bottom.sum()  # wide lobes above, the point below: it is upright
    np.testing.assert_array_equal(heart, heart[:, ::-1])  # and symmetric


def test_position_and_orientation_move_and_turn_the_shape():
    a = S.render(0, 1.0, 0.0, np.array([0.0, 1.0]), np.array([0.0, 0.0]))
    cols = [np.flatnonzero(m.any(0)).mean() for m in a]
    assert cols[1] - cols[0] == pytest.approx(S.POS_SPAN, abs=1)
    turned = S.render(0, 1.0, np.pi / 4, np.array([0.5]), np.array([0.5]))[0]
    straight = S.render(0, 1.0, 0.0, np.array([0.5]), np.array([0.5]))[0]
    assert np.flatnonzero(turned.any(0)).size > np.flatnonzero(straight.any(0)).size  # a diamond is wider
    assert not a[:, :, [0, -1]].any() and not a[:, [0, -1], :].any()  # nothing touches the border


def test_generate_writes_every_grid_point_once_in_a_fixed_random_order(tmp_path):
    folder = S.generate(tmp_path / "s", SMALL, block=50)
    images = np.load(folder / "images.npy", mmap_mode="r")
    classes, factors = np.load(folder / "classes.npy"), np.load(folder / "factors.npy")
    n = int(np.prod(SMALL))
    assert images.shape == (n, 1, 64, 64) and images.dtype == np.uint8 and set(np.unique(images)) <= {0, 255}
    flat = np.ravel_multi_index(classes.T.astype(np.int64), SMALL)
    assert sorted(flat) == list(range(n)) and not (flat == np.arange(n)).all()  # all points, shuffled
    values = S.factor_values(SMALL)
    for i in (0, 7, n - 1):  # each stored image is the rendering of its stored factors
        k = classes[i]
        want = S.render(int(k[0]), values[1][k[1]], values[2][k[2]], values[3][k[3:4]], values[4][k[4:5]])[0]
        np.testing.assert_array_equal(images[i, 0] == 255, want)
        np.testing.assert_allclose(factors[i], [values[j][k[j]] for j in range(5)])
    again = S.generate(tmp_path / "t", SMALL)
    np.testing.assert_array_equal(np.load(again / "images.npy"), np.asarray(images))  # deterministic
    assert json.loads((folder / "meta.json").read_text())["factor_sizes"] == list(SMALL)
    assert not (tmp_path / "s.tmp").exists()


def test_load_splits_gives_images_with_their_factors(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    monkeypatch.setattr(S, "FACTOR_SIZES", SMALL)
    s = load_splits(DataConfig(dataset="shapes2d"))
    n = int(np.prod(SMALL))
    assert len(s.train) + len(s.val) + len(s.test) == n and s.shape == (1, 64, 64)
    assert s.factor_names == S.FACTOR_NAMES and s.factor_sizes == SMALL
    assert s.class_names == ("square", "ellipse", "heart") and s.num_classes == 3
    for split in (s.train, s.val, s.test):
        assert split.factors.shape == (len(split), 5)
        np.testing.assert_array_equal(split.labels.numpy(), split.factors[:, 0] - 1)  # label = shape
    limited = load_splits(DataConfig(dataset="shapes2d", limit=40))
    assert len(limited.train) == 40 and limited.train.factors.shape == (40, 5)
    np.testing.assert_array_equal(limited.train.factors, s.train.factors[:40])
    assert (tmp_path / S.VERSION / "meta.json").is_file()  # cached where the next load finds it


def test_dsprites_without_the_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir"):
        load_splits(DataConfig(dataset="dsprites"))
    with pytest.raises(DataError, match="dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"):
        load_splits(DataConfig(dataset="dsprites", data_dir=str(tmp_path)))


def test_a_dsprites_file_is_read_without_pickles(tmp_path):
    imgs = np.zeros((12, 64, 64), dtype=np.uint8)
    imgs[:, 10:20, 10:20] = 1
    latents = np.column_stack(
        [
            np.ones(12),
            np.repeat([1, 2, 3], 4),
            np.tile([0.5, 1.0], 6),
            np.zeros(12),
            np.linspace(0, 1, 12),
            np.linspace(1, 0, 12),
        ]
    )
    path = tmp_path / S.DSPRITES_FILE
    np.savez(path, imgs=imgs, latents_values=latents, metadata=np.array([{"pickled": True}], dtype=object))
    images, values = S.load_dsprites(path)
    assert images.shape == (12, 1, 64, 64) and images.max() == 255 and values.shape == (12, 5)
    np.testing.assert_array_equal(values, latents[:, 1:])


def test_generating_shows_a_progress_bar_of_blocks_and_a_one_time_log_line(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setattr(S, "FACTOR_SIZES", SMALL)
    with caplog.at_level("INFO", logger="vaelab.data"):
        S.ensure_shapes2d(tmp_path, SMALL)
    (rec,) = [r for r in caplog.records if r.name == "vaelab.data"]
    msg = rec.getMessage()
    assert "one-time generation of 0.0 GB (288 images of 64x64)" in msg and str(tmp_path / S.VERSION) in msg
    # 3 x 2 x 4 sprites of 4 x 3 positions, in blocks of at most 1,024: 24 blocks, counted on stderr
    assert "24/24" in capsys.readouterr().err
    caplog.clear()
    S.ensure_shapes2d(tmp_path, SMALL)  # cached: no log line, no bar
    assert not caplog.records and capsys.readouterr().err == ""
    S.generate(tmp_path / "quiet", SMALL, block=5, progress=False)
    assert capsys.readouterr().err == ""
    S.generate(tmp_path / "blocks", SMALL, block=5)  # 12 positions in blocks of 5: 3 per sprite
    assert "72/72" in capsys.readouterr().err


def test_val_size_takes_the_images_before_the_test_set_with_their_factors(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    monkeypatch.setattr(S, "FACTOR_SIZES", SMALL)
    s = load_splits(DataConfig(dataset="shapes2d"))
    v = load_splits(DataConfig(dataset="shapes2d", val_size=40))
    assert (len(s.train), len(s.val), len(s.test)) == (232, 28, 28)
    assert (len(v.train), len(v.val), len(v.test)) == (220, 40, 28)
    factors = np.load(tmp_path / S.VERSION / "factors.npy")
    np.testing.assert_array_equal(v.val.factors, factors[220:260])
    np.testing.assert_array_equal(v.test.factors, s.test.factors)  # the test set does not move
    images = np.load(tmp_path / S.VERSION / "images.npy", mmap_mode="r")
    np.testing.assert_array_equal(np.asarray(v.val.images), images[220:260])

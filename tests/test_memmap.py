"""Datasets larger than memory: a folder of .npy files, memory-mapped, read batch by batch by index."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_images
from vaelab.cli import main
from vaelab.config import DataConfig
from vaelab.data import DataSplits, ImageData, load_splits
from vaelab.errors import DataError
from vaelab.training import fit


@pytest.fixture
def npy_folder(tmp_path):
    """200 labelled 8x8 images as images.npy (N, H, W) + labels.npy."""
    x, y = make_images(200)
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "images.npy", x[:, 0])
    np.save(folder / "labels.npy", y)
    return folder, x, y


def mapped_kb(name: str) -> int:
    """Resident kB of this process's mappings of files called `name` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if "-" in line.split(" ", 1)[0]:
                inside = line.rstrip().endswith(name)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def in_memory(splits: DataSplits) -> DataSplits:
    t = lambda d: ImageData(torch.from_numpy(np.array(d.images)), d.labels)  # noqa: E731
    return DataSplits(splits.name, t(splits.train), t(splits.val), t(splits.test), splits.num_classes)


def test_npy_folder_is_memory_mapped_and_split_80_10_10(npy_folder):
    folder, x, y = npy_folder
    s = load_splits(DataConfig(dataset=str(folder)))
    assert all(isinstance(d.images, np.memmap) for d in (s.train, s.val, s.test))  # nothing read yet
    assert (len(s.train), len(s.val), len(s.test)) == (160, 20, 20)
    assert s.shape == (1, 8, 8) and s.num_classes == 4
    np.testing.assert_array_equal(np.asarray(s.test.images), x[180:])
    np.testing.assert_array_equal(s.val.labels.numpy(), y[160:180])


def test_batch_reads_the_rows_asked_for_in_the_order_asked(npy_folder):
    folder, x, y = npy_folder
    train = load_splits(DataConfig(dataset=str(folder))).train
    index = torch.tensor([7, 3, 150, 3, 0, 42])  # unsorted, with a repeat
    imgs, labels = train.batch(index)
    assert imgs.dtype == torch.uint8 and imgs.shape == (6, 1, 8, 8)
    np.testing.assert_array_equal(imgs.numpy(), x[index.numpy()])
    np.testing.assert_array_equal(labels.numpy(), y[index.numpy()])
    part, _ = train.batch(slice(10, 20))
    np.testing.assert_array_equal(part.numpy(), x[10:20])
    assert part.numpy().flags.writeable  # a copy, not a view of the read-only file


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_reading_batches_leaves_no_file_pages_mapped(tmp_path):
    """After each batch the pages read are unmapped: the process's resident set does not grow
    towards the size of the file as an epoch goes on (they stay in the page cache)."""
    folder = tmp_path / "big"
    folder.mkdir()
    x = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(20_000, 28, 28))
    x[:] = np.arange(20_000, dtype=np.uint64).astype(np.uint8)[:, None, None]  # 15.7 MB, row i is i % 256
    x.flush()
    del x
    train = load_splits(DataConfig(dataset=str(folder))).train
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        index = torch.randint(0, len(train), (100,), generator=g)
        imgs, _ = train.batch(index)
        assert torch.equal(imgs[:, 0, 0, 0], (index % 256).to(torch.uint8))
        assert mapped_kb("images.npy") == 0


def test_memory_mapped_training_equals_in_memory_training(npy_folder, tiny_cfg):
    """The memmap path (rows read by index on the CPU) and the resident fast path see the same
    batches: the weights come out identical."""
    folder, _, _ = npy_folder
    mapped = load_splits(DataConfig(dataset=str(folder)))
    cfg = tiny_cfg
    torch.manual_seed(0)
    from vaelab.models import VAE

    a = fit(VAE(cfg.model), mapped, cfg, progress=False).model
    torch.manual_seed(0)
    b = fit(VAE(cfg.model), in_memory(mapped), cfg, progress=False).model
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_cli_trains_evaluates_and_plots_from_a_npy_folder(npy_folder, tmp_path, capsys):
    folder, _, _ = npy_folder
    run = tmp_path / "run"
    main(
        [
            "train",
            "--dataset",
            str(folder),
            "--hidden",
            "16",
            "--latent-dim",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "40",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--conditional",
            "-q",
            "--out",
            str(run),
        ]
    )
    assert re.search(r"over 20 (test )?images", capsys.readouterr().out)  # either wording of the summary
    assert load_file(run / "model.safetensors")
    assert any(p.suffix == ".png" for p in run.iterdir())
    main(["eval", str(run), "--k", "4", "--limit", "10"])
    assert "NLL" in capsys.readouterr().out


def test_separate_test_files(tmp_path):
    x, y = make_images(120)
    folder = tmp_path / "d"
    folder.mkdir()
    np.save(folder / "images.npy", x[:100])  # (N, C, H, W) is kept as is
    np.save(folder / "labels.npy", y[:100])
    np.save(folder / "test_images.npy", x[100:, 0])
    np.save(folder / "test_labels.npy", y[100:])
    s = load_splits(DataConfig(dataset=str(folder)))
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 20)
    np.testing.assert_array_equal(np.asarray(s.test.images), x[100:])
    np.testing.assert_array_equal(s.test.labels.numpy(), y[100:])


def _folder(tmp_path, **arrays):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", a, allow_pickle=True)
    return folder


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((10, 8, 8), np.float32)}, r"must be uint8 in \[0, 255\], got float32"),
        ({"images": np.zeros((10, 8, 8, 1), np.uint8)}, r"looks channels-last \(N, H, W, C\)"),
        (
            {"images": np.zeros((10, 64), np.uint8)},
            r"expected images of shape \(N, H, W\) or \(N, C, H, W\), got \(10, 64\)",
        ),
        ({"images": np.zeros((2, 8, 8), np.uint8)}, r"2 image\(s\) are too few"),
        (
            {"images": np.zeros((10, 8, 8), np.uint8), "labels": np.zeros(9, np.int64)},
            r"x has 10 images but y has 9 labels",
        ),
        (
            {"images": np.zeros((10, 8, 8), np.uint8), "labels": np.array([None] * 10, dtype=object)},
            r"labels.npy: cannot read it as labels",
        ),
        (
            {"images": np.zeros((10, 8, 8), np.uint8), "test_images": np.zeros((4, 9, 9), np.uint8)},
            r"test_images.npy: images \(1, 9, 9\) differ from images.npy's \(1, 8, 8\)",
        ),
        (
            {
                "images": np.zeros((10, 8, 8), np.uint8),
                "labels": np.zeros(10, np.int64),
                "test_images": np.zeros((4, 8, 8), np.uint8),
            },
            r"labels.npy is there but test_labels.npy is not",
        ),
    ],
)
def test_bad_npy_folders_name_the_problem(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        load_splits(DataConfig(dataset=str(_folder(tmp_path, **arrays))))


def test_truncated_images_file(tmp_path):
    folder = _folder(tmp_path, images=np.zeros((100, 8, 8), np.uint8))
    data = (folder / "images.npy").read_bytes()
    (folder / "images.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"images.npy: cannot read it as a memory-mapped .npy array"):
        load_splits(DataConfig(dataset=str(folder)))


def test_binarization_of_mapped_data_is_refused(npy_folder):
    folder, _, _ = npy_folder
    with pytest.raises(DataError, match="binarization of memory-mapped data is not supported"):
        load_splits(DataConfig(dataset=str(folder), binarize="dynamic"))

"""Conditional VAE: `vaelab sample --label 7` draws the chosen class, and labels reach the likelihood."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from vaelab.cli import main
from vaelab.config import EvalConfig
from vaelab.data import ImageData, load_splits
from vaelab.evaluation.estimates import log_likelihood
from vaelab.run import checkpoint as ckpt


def ten_class_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """8x8 images of 10 classes: class c lights the 2x2 block c of the 4x4 grid of blocks (row-major)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 40, (n, 8, 8)).astype(np.uint8)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 4)
        x[i, 2 * r : 2 * r + 2, 2 * col : 2 * col + 2] = rng.integers(200, 256, (2, 2))
    return x, y


def block_means(imgs: np.ndarray) -> np.ndarray:
    """(N, 1, 8, 8) -> (N, 16) mean intensity of each 2x2 block."""
    return imgs.reshape(len(imgs), 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(imgs), 16)


_run = run_cli  # tests/conftest.py


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvae")
    x, y = ten_class_images(1000)
    np.savez(root / "ten.npz", x=x, y=y)
    run_dir = root / "run"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--dataset",
                str(root / "ten.npz"),
                "--conditional",
                "--binarize",
                "dynamic",
                "--hidden",
                "32",
                "--epochs",
                "30",
                "--batch-size",
                "50",
                "--lr",
                "3e-3",
                "--out",
                str(run_dir),
                "--quiet",
                "--threads",
                "1",
                "--no-plots",
            ]
        )
        raise SystemExit(0)
    assert e.value.code == 0
    return run_dir


def test_conditional_run_records_its_classes(cvae_run):
    cfg = ckpt.read_config(cvae_run)
    assert cfg.model.num_classes == 10


@pytest.mark.parametrize("label", [7, 0, 9])
def test_sample_label_draws_the_chosen_class(cvae_run, tmp_path, capsys, label):
    npy = tmp_path / "s.npy"
    code, out, _ = _run(
        [
            "sample",
            str(cvae_run),
            "--label",
            str(label),
            "-n",
            "32",
            "--seed",
            "1",
            "-o",
            str(tmp_path / "s.png"),
            "--npy",
            str(npy),
        ],
        capsys,
    )
    assert code == 0 and (tmp_path / "s.png").is_file()
    blocks = block_means(np.load(npy))  # (32, 16)
    assert (blocks.argmax(1) == label).mean() >= 0.9  # nearly every sample lights block `label`
    others = np.delete(blocks.mean(0), label)
    assert blocks.mean(0)[label] > others.max() + 0.3  # by a wide margin, in pixel units [0, 1]


def test_sample_label_errors(cvae_run, tmp_path, capsys):
    for args, msg in (
        (["-n", "4"], "pass --label in 0..9"),
        (["--label", "10"], "out of range"),
        (["--label", "-1"], "out of range"),
    ):
        code, _, err = _run(["sample", str(cvae_run), "-o", str(tmp_path / "s.png"), *args], capsys)
        assert code == 2 and msg in err and err.count("\n") == 1, err


def test_label_on_an_unconditional_model_is_an_error(tmp_path, npz_dataset, capsys):
    run_dir = tmp_path / "plain"
    code, _, _ = _run(
        [
            "train",
            "--preset",
            "tiny",
            "--dataset",
            str(npz_dataset),
            "--epochs",
            "1",
            "--out",
            str(run_dir),
            "-q",
            "--threads",
            "1",
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0
    code, _, err = _run(["sample", str(run_dir), "--label", "3", "-o", str(tmp_path / "s.png")], capsys)
    assert code == 2 and "not conditional" in err


def test_labels_reach_the_log_likelihood(cvae_run, capsys):
    """log p(x | y) with the true label beats the same images with a wrong label."""
    from vaelab.run.checkpoint import load

    model = load(cvae_run)
    cfg = ckpt.read_config(cvae_run)
    test = load_splits(cfg.data).test
    ecfg = EvalConfig(k=50, chunk=50)
    right = log_likelihood(model, test, ecfg)
    wrong = log_likelihood(model, ImageData(test.images, (test.labels + 1) % 10), ecfg)
    diff = wrong.per_image - right.per_image  # paired over the same images
    assert float(diff.mean()) < -5 * float(diff.std() / len(diff) ** 0.5)
    assert float((diff < 0).double().mean()) > 0.9
    code, _, _ = _run(["eval", str(cvae_run), "--k", "50", "--chunk", "50"], capsys)  # the command passes labels too
    doc = json.loads((cvae_run / "eval.json").read_text())
    assert code == 0 and doc["nll"] == pytest.approx(right.nll)

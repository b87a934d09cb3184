"""The `vaelab` command on tiny data: every subcommand, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaelab import checkpoint as ckpt
from vaelab.cli import main
from vaelab.plots import PICTURES
from conftest import run_cli


run = run_cli  # tests/conftest.py


@pytest.fixture
def trained(tmp_path_factory, npz_dataset):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    code = None
    with pytest.raises(SystemExit) as e:
        main(["train", "--preset", "tiny", "--dataset", str(npz_dataset), "--hidden", "16", "--epochs", "2",
              "--batch-size", "40", "--out", str(run_dir), "--quiet", "--threads", "1", "--no-plots"])
        raise SystemExit(0)
    code = e.value.code
    assert code == 0
    return run_dir


def test_train_writes_a_complete_run_with_pictures(tmp_path, npz_dataset, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(["train", "--preset", "tiny", "--dataset", str(npz_dataset), "--epochs", "1",
                           "--out", str(out), "-q", "--threads", "1"], capsys)
    assert code == 0
    assert "test ELBO" in stdout and "nats per image" in stdout
    for name in (*PICTURES.values(), ckpt.CONFIG, ckpt.MODEL, ckpt.CHECKPOINT, ckpt.METRICS):
        assert (out / name).is_file(), name
    cfg = json.loads((out / ckpt.CONFIG).read_text())
    assert cfg["model"]["input_shape"] == [1, 8, 8] and cfg["train"]["epochs"] == 1


def test_mnist_tiny_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "mnist"
    code, stdout, _ = run(["train", "--preset", "tiny", "--epochs", "1", "--limit", "500", "--out", str(out),
                           "-q", "--no-plots"], capsys)
    assert code == 0 and "over 100 images" in stdout
    code, stdout, _ = run(["eval", str(out), "--k", "20", "--limit", "50"], capsys)
    assert code == 0
    assert "not a density" in stdout and "NLL (k=" not in stdout  # grey MNIST + Bernoulli: no NLL claimed


def test_eval_sample_reconstruct_encode_plot(trained, tmp_path, capsys):
    code, stdout, _ = run(["eval", str(trained), "--k", "50", "--threads", "1"], capsys)
    assert code == 0 and "ELBO" in stdout
    doc = json.loads((trained / "eval.json").read_text())
    assert doc["k"] == 50 and doc["pixels"] == "none" and doc["elbo"] < 0
    code, stdout, _ = run(["sample", str(trained), "-n", "16", "-o", str(tmp_path / "s.png")], capsys)
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 1000
    code, _, _ = run(["reconstruct", str(trained), "-n", "8", "-o", str(tmp_path / "r.png")], capsys)
    assert code == 0 and (tmp_path / "r.png").is_file()
    code, _, _ = run(["encode", str(trained), "-o", str(tmp_path / "z.npy")], capsys)
    z = np.load(tmp_path / "z.npy")
    assert code == 0 and z.shape == (60, 2) and np.isfinite(z).all()
    code, _, _ = run(["encode", str(trained), "-o", str(tmp_path / "z.csv")], capsys)
    lines = (tmp_path / "z.csv").read_text().splitlines()
    assert lines[0] == "z1,z2,label" and len(lines) == 61
    code, stdout, _ = run(["plot", str(trained)], capsys)
    assert code == 0 and all((trained / p).is_file() for p in PICTURES.values())


def test_resume_extends_a_run(trained, capsys):
    code, stdout, _ = run(["train", "--resume", str(trained), "--epochs", "3", "-q", "--no-plots"], capsys)
    assert code == 0 and "3 epochs" in stdout
    assert [r["epoch"] for r in ckpt.read_metrics(trained)] == [1, 2, 3]
    code, _, err = run(["train", "--resume", str(trained), "--lr", "0.1"], capsys)
    assert code == 2 and "cannot change ['train.lr']" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--batch-size", "0"], "batch_size must be a positive integer, got 0"),
        (["train", "--lr", "-1"], "lr must be a positive number, got -1.0"),
        (["train", "--latent-dim", "0"], "latent_dim must be a positive integer, got 0"),
        (["train", "--epochs", "x"], "'x' is not a valid integer"),
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--train.lrr=1"], "unknown key(s) ['lrr']"),
        (["train", "--dataset", "/no/such.npz"], "no such file or folder"),
        (["eval", "/no/such/run"], "no such run folder"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(args, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_out_folder_that_holds_a_run_is_not_overwritten(trained, capsys):
    code, _, err = run(["train", "--out", str(trained)], capsys)
    assert code == 2 and "already holds a run" in err


def test_help_of_every_command(capsys):
    for cmd in ("train", "eval", "sample", "reconstruct", "encode", "plot", "prepare"):
        code, stdout, _ = run([cmd, "--help"], capsys)
        assert code == 0 and "Usage: vaelab" in stdout

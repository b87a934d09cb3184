"""The `vaelab` command on tiny data: every subcommand, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli
from vaelab.cli import main
from vaelab.run import checkpoint as ckpt
from vaelab.run.outputs import PICTURES

TWO_D_PICTURES = [p for k, p in PICTURES.items() if k != "traversals"]  # what a 2-D model's run draws

run = run_cli  # tests/conftest.py


@pytest.fixture
def trained(tmp_path_factory, npz_dataset):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    code = None
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--dataset",
                str(npz_dataset),
                "--hidden",
                "16",
                "--epochs",
                "2",
                "--batch-size",
                "40",
                "--out",
                str(run_dir),
                "--quiet",
                "--threads",
                "1",
                "--no-plots",
            ]
        )
        raise SystemExit(0)
    code = e.value.code
    assert code == 0
    return run_dir


def test_train_writes_a_complete_run_with_pictures(tmp_path, npz_dataset, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(
        [
            "train",
            "--preset",
            "tiny",
            "--dataset",
            str(npz_dataset),
            "--epochs",
            "1",
            "--out",
            str(out),
            "-q",
            "--threads",
            "1",
        ],
        capsys,
    )
    assert code == 0
    assert "test ELBO" in stdout and "nats per image" in stdout
    assert not (out / PICTURES["traversals"]).exists()  # drawn for D > 2 only; this model has 2
    for name in (*TWO_D_PICTURES, ckpt.CONFIG, ckpt.MODEL, ckpt.CHECKPOINT, ckpt.METRICS):
        assert (out / name).is_file(), name
    cfg = json.loads((out / ckpt.CONFIG).read_text())
    assert cfg["model"]["input_shape"] == [1, 8, 8] and cfg["train"]["epochs"] == 1


def test_mnist_tiny_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "mnist"
    code, stdout, _ = run(
        ["train", "--preset", "tiny", "--epochs", "1", "--limit", "500", "--out", str(out), "-q", "--no-plots"], capsys
    )
    # --limit 500 also cut the test set to 100 of its 10,000 images, and the summary says so (#23 item 15)
    assert code == 0 and "over 100 of 10,000 test images (--limit)" in stdout
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
    assert code == 0 and all((trained / p).is_file() for p in TWO_D_PICTURES)


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
    """Every registered command, not a list kept by hand: its help prints, with a description."""
    from vaelab.cli import cli

    assert len(cli.commands) >= 13
    for cmd, command in cli.commands.items():
        code, stdout, _ = run([cmd, "--help"], capsys)
        assert code == 0 and f"Usage: vaelab {cmd}" in stdout, cmd
        assert command.help and command.help.split("\n")[0].strip()[:30] in stdout, cmd


# -- issue 14, items 5-7: output and help texts that must be true --------------------------------


def test_eval_says_when_k_is_not_used(trained, capsys):
    code, stdout, _ = run(["eval", str(trained), "--k", "1000", "--threads", "1"], capsys)
    assert code == 0 and "NLL" not in stdout.split("note:")[0]
    assert "note: --k 1000 was not used: it sets the importance samples of the NLL, and there is none here" in stdout
    code, stdout, _ = run(["eval", str(trained), "--threads", "1"], capsys)  # the default k: no such note
    assert code == 0 and "--k" not in stdout


def test_encode_with_logvar_says_what_it_wrote(trained, tmp_path, capsys):
    code, stdout, _ = run(["encode", str(trained), "-o", str(tmp_path / "z.npy"), "--logvar"], capsys)
    n = np.load(tmp_path / "z.npy").shape
    assert code == 0 and n[1] == 4
    assert f"wrote {n[0]} x 4 (2 latent means, then 2 log-variances) of the test split" in stdout
    code, stdout, _ = run(["encode", str(trained), "-o", str(tmp_path / "z.csv")], capsys)
    assert "x 3 (2 latent means, then the label)" in stdout


def test_help_texts_are_true(capsys):
    code, stdout, _ = run(["--help"], capsys)
    assert "prints its test ELBO" in stdout and "seed preset's grey" in stdout.replace("\n", " ").replace("  ", " ")
    code, stdout, _ = run(["train", "--help"], capsys)
    assert "No progress bar, header or epoch lines" in stdout


def _subprocess_train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vaelab", "train", *args], capture_output=True, text=True, timeout=300)


def test_quiet_hides_the_header_and_epochs_and_one_epoch_is_singular(tmp_path, npz_dataset):
    args = ["--preset", "tiny", "--dataset", str(npz_dataset), "--epochs", "1", "--no-plots", "--threads", "1"]
    quiet = _subprocess_train(*args, "--out", str(tmp_path / "a"), "-q")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert "1 epoch (completed)" in quiet.stdout and "1 epochs" not in quiet.stdout
    loud = _subprocess_train(*args, "--out", str(tmp_path / "b"))
    assert "vaelab 0.1.0: tiny" in loud.stderr and "epoch 1: train ELBO" in loud.stderr


def test_the_bar_of_a_time_budget_shows_the_minutes_left(tmp_path, npz_dataset):
    """Under --max-minutes the bar has no total (the epochs are an upper bound): it counts down time."""
    args = ["--preset", "tiny", "--dataset", str(npz_dataset), "--epochs", "1", "--no-plots", "--threads", "1"]
    proc = _subprocess_train(*args, "--max-minutes", "5", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert " of 5 min left" in proc.stderr


def test_log_lines_are_written_above_the_live_progress_bar_not_into_it(tmp_path, npz_dataset):
    """tqdm's logging redirect clears the bar (a carriage return) before each epoch line."""
    proc = _subprocess_train(
        "--preset",
        "tiny",
        "--dataset",
        str(npz_dataset),
        "--epochs",
        "2",
        "--no-plots",
        "--threads",
        "1",
        "--out",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 0, proc.stderr
    for epoch in (1, 2):
        i = proc.stderr.index(f"epoch {epoch}: train ELBO")
        assert proc.stderr[i - 1] in "\r\n", repr(proc.stderr[i - 80 : i + 20])  # not "...val -43.41]epoch"


def test_a_partial_last_epoch_is_marked_in_the_log_and_metrics(tmp_path, npz_dataset, capsys, caplog, monkeypatch):
    import logging

    import vaelab.training.loop

    clock = iter(range(0, 10**6, 3))  # every reading of the clock is 3 s later: a 0.2-minute budget ends
    monkeypatch.setattr(vaelab.training.loop.time, "monotonic", lambda: float(next(clock)))  # after a few steps
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    code, stdout, err = run(
        [
            "train",
            "--preset",
            "tiny",
            "--dataset",
            str(npz_dataset),
            "--epochs",
            "3",
            "--batch-size",
            "40",
            "--max-minutes",
            "0.2",
            "--out",
            str(out),
            "--no-plots",
            "--threads",
            "1",
            "-q",
        ],
        capsys,
    )
    assert code == 0, err
    rows = ckpt.read_metrics(out)
    assert rows[-1]["epoch_fraction"] < 1 and all(r["epoch_fraction"] == 1 for r in rows[:-1])
    frac = rows[-1]["epoch_fraction"]
    assert f"epoch {len(rows)} (partial: {frac:.2f} of an epoch)" in caplog.text
    assert f"and {frac:.2f} of epoch {len(rows)} (time-budget)" in stdout


def test_invert_and_the_manifold_label_reach_the_pictures(trained, tmp_path, capsys):
    from PIL import Image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert run(["sample", str(trained), "-n", "4", "-o", str(a)], capsys)[0] == 0
    assert run(["sample", str(trained), "-n", "4", "-o", str(b), "--invert"], capsys)[0] == 0
    pa = np.asarray(Image.open(a).convert("L"), dtype=np.float64)
    pb = np.asarray(Image.open(b).convert("L"), dtype=np.float64)
    assert pa.shape == pb.shape and np.abs(pa - pb).mean() > 10  # the grids differ: 1 - x was drawn
    code, _, err = run(["plot", str(trained), "--label", "1"], capsys)
    assert code == 2 and "label" in err and "not conditional" in err, err


def test_help_lists_the_presets_and_explains_device_and_activation(capsys):
    """#23 item 18: --preset listed no preset, --device and --activation had no help, and eval's
    default device (cpu) differed from train's (auto)."""
    from vaelab.config_io import preset_names

    code, out, _ = run(["train", "--help"], capsys)
    flat, joined = " ".join(out.split()), "".join(out.split())  # help text wraps, even at hyphens
    assert code == 0 and all(f"{name}," in joined or f"{name}." in joined for name in preset_names())
    assert "Where the model runs: auto (CUDA, then Apple MPS, then the CPU)" in flat
    assert "gated: each dense layer is (Wx + b) * sigmoid(Vx + c)" in flat
    for cmd in ("eval", "sample", "reconstruct", "encode", "plot", "traverse", "disentangle", "train-prior"):
        code, out, _ = run([cmd, "--help"], capsys)
        assert "Where the model runs" in " ".join(out.split()) and "[default: auto]" in out, cmd


@pytest.mark.parametrize("n,cols", [(36, 6), (64, 8), (16, 4), (10, 5), (7, 7), (13, 4), (1, 1), (144, 12)])
def test_sample_grids_have_no_blank_cells_when_n_allows(n, cols):
    """#23 item 18: `sample -n 36` gave 8 columns and 4 blank cells."""
    from vaelab.plots import grid_columns

    assert grid_columns(n) == cols

"""A resume that cannot go on says why and how to start again, before it prints or writes anything
(issue #23, item 14)."""

from __future__ import annotations

import subprocess
import sys

from conftest import run_cli

TINY = ["--preset", "tiny", "--epochs", "1", "--no-plots", "--threads", "1"]


def _train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vaelab", "train", *args], capture_output=True, text=True, timeout=300)


def _tiny_run(tmp_path, npz_dataset, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", *TINY, "--dataset", str(npz_dataset), "--out", str(run)], capsys)
    assert code == 0, err
    return run


def test_resume_without_its_checkpoint_refuses_to_overwrite_the_trained_weights(tmp_path, npz_dataset, capsys):
    run = _tiny_run(tmp_path, npz_dataset, capsys)
    weights = (run / "model.safetensors").read_bytes()
    (run / "checkpoint.safetensors").unlink()
    code, _, err = run_cli(["train", "--resume", str(run)], capsys)
    assert code == 2
    assert "checkpoint.safetensors is missing but the run has trained weights" in err
    assert f"--out {run} --overwrite" in err
    assert (run / "model.safetensors").read_bytes() == weights  # untouched


def test_damaged_checkpoint_and_missing_config_name_the_way_to_start_again(tmp_path, npz_dataset, capsys):
    run = _tiny_run(tmp_path, npz_dataset, capsys)
    ckpt = run / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # truncated
    code, _, err = run_cli(["train", "--resume", str(run), "--epochs", "2"], capsys)
    assert code == 2 and f"--out {run} --overwrite" in err, err
    (run / "config.json").unlink()
    code, _, err = run_cli(["train", "--resume", str(run)], capsys)
    assert code == 2 and "config.json: missing" in err and f"--out {run} --overwrite" in err, err


def test_a_refused_resume_prints_no_header_and_a_resume_names_its_preset(tmp_path, npz_dataset):
    run = tmp_path / "run"
    first = _train(*TINY, "--dataset", str(npz_dataset), "--out", str(run))
    assert first.returncode == 0, first.stderr
    done = _train("--resume", str(run))  # already complete
    assert done.returncode == 2 and "already complete" in done.stderr
    assert "vaelab 0.1.0:" not in done.stderr  # refused before the header
    more = _train("--resume", str(run), "--epochs", "2", "--no-plots")
    assert more.returncode == 0, more.stderr
    assert "vaelab 0.1.0: resume of tiny, " in more.stderr


def test_after_ctrl_c_the_resume_instruction_is_the_last_line(tmp_path, npz_dataset):
    """The live bar is closed before the message, so it is not redrawn below "--resume RUN"."""
    import os
    import signal
    import time

    run = tmp_path / "run"
    args = ["--preset", "tiny", "--dataset", str(npz_dataset), "--epochs", "100000", "--no-plots", "--threads", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "train", *args, "--train.log_every=1", "--out", str(run)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").is_file() and time.monotonic() < deadline:  # an epoch is done: the bar runs
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    last = [line for line in err.replace("\r", "\n").split("\n") if line.strip()][-1]
    assert f"vaelab train --resume {run}" in last, repr(err[-400:])


def test_overwrite_clears_what_later_commands_derived_from_the_old_run(tmp_path, npz_dataset, capsys):
    """After --overwrite the new run must not claim the old one's fitted code prior or its
    disentanglement report (issue #22)."""
    run = _tiny_run(tmp_path, npz_dataset, capsys)
    for name in ("prior.json", "disentanglement.json"):
        (run / name).write_text("{}")
    (run / "notes.txt").write_text("mine")  # not vaelab's: kept
    code, _, err = run_cli(["train", *TINY, "--dataset", str(npz_dataset), "--out", str(run), "--overwrite"], capsys)
    assert code == 0, err
    assert not (run / "prior.json").exists() and not (run / "disentanglement.json").exists()
    assert (run / "notes.txt").read_text() == "mine"

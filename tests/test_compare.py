"""`vaelab compare`: the table and the overlaid curves come from the run folders alone."""

from __future__ import annotations

import json
import struct

import pytest

from conftest import run_cli
from vaelab.analysis import compare as cmp
from vaelab.config_io import load_preset, replace
from vaelab.plots import plot_compared_curves
from vaelab.run import checkpoint as ckpt


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny runs on an .npz dataset: `a` with the tiny preset as it is and evaluated, `b` with
    IWAE k=3 and 2 epochs, not evaluated."""
    import numpy as np

    from conftest import make_images
    from vaelab.cli import main

    root = tmp_path_factory.mktemp("compare")
    x, y = make_images(300)
    np.savez(root / "d.npz", x=x, y=y)
    common = ["--dataset", str(root / "d.npz"), "--binarize", "static", "--no-plots", "-q", "--threads", "1"]
    for args in (
        ["train", "--preset", "tiny", "--epochs", "1", "--out", str(root / "a"), *common],
        [
            "train",
            "--preset",
            "tiny",
            "--epochs",
            "2",
            "--objective",
            "iwae",
            "--k",
            "3",
            "--out",
            str(root / "b"),
            *common,
        ],
        ["eval", str(root / "a"), "--k", "4", "--threads", "1"],
    ):
        try:
            main(args)
        except SystemExit as e:
            assert e.code == 0, args
    return root


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_compare_prints_each_run_and_draws_the_curves(two_runs, capsys, tmp_path):
    out = tmp_path / "curves.png"
    code, stdout, stderr = run_cli(["compare", str(two_runs / "a"), str(two_runs / "b"), "-o", str(out)], capsys)
    assert code == 0, stderr
    lines = stdout.strip().splitlines()
    assert lines[0].startswith(
        "| run | preset | model | objective | epochs | test ELBO at training end (images) | NLL ± se (k, images) |"
    )
    row_a = next(r for r in lines if r.startswith("| a |"))
    row_b = next(r for r in lines if r.startswith("| b |"))
    ev = json.loads((two_runs / "a" / "eval.json").read_text())
    n = ev["num_images"]
    # the evaluated run shows its NLL with the k and the images of that evaluation
    assert f"{ev['nll']:.2f} ± {ev['nll_stderr']:.2f} (k=4, {n} test)" in row_a
    assert row_b.split("|")[7].strip() == "-"  # b was never evaluated: no NLL is made up
    test_a = ckpt.read_state(two_runs / "a")["test"]
    assert f"| {test_a['elbo']:.2f} ({test_a['n']}) |" in row_a  # training's test ELBO, over its images
    assert stderr == "" and lines[-1] == f"curves: {out}"
    assert "| tiny (+" in row_a and "| elbo |" in row_a  # the tiny preset on another dataset
    assert "| iwae k=3 |" in row_b and "train.k" in row_b and "train.objective" in row_b
    assert "| 1 |" in row_a and "| 2 |" in row_b  # epochs
    w, h = _png_size(out)
    assert w > 500 and h > 300


def test_compare_json_matches_the_run_folders(two_runs, capsys, tmp_path):
    code, stdout, _ = run_cli(
        ["compare", str(two_runs / "a"), str(two_runs / "b"), "-o", str(tmp_path / "c.png"), "--json"], capsys
    )
    assert code == 0
    doc = {d["name"]: d for d in json.loads(stdout)}
    state = ckpt.read_state(two_runs / "b")
    assert doc["b"]["test_elbo"] == pytest.approx(state["test"]["elbo"])
    assert doc["b"]["epochs"] == 2 and doc["b"]["stopped"] == "completed"
    seconds = sum(r["epoch_seconds"] for r in ckpt.read_metrics(two_runs / "b"))
    assert doc["b"]["train_minutes"] == pytest.approx(seconds / 60)
    assert doc["a"]["nll_k"] == 4 and doc["b"]["nll"] is None
    ev = json.loads((two_runs / "a" / "eval.json").read_text())
    assert doc["a"]["nll_images"] == ev["num_images"] and doc["a"]["nll_split"] == "test"
    assert doc["a"]["nll_weights"] == "model.safetensors" and doc["a"]["evaluations"] == 1
    assert doc["b"]["test_elbo_images"] == state["test"]["n"]


def _copies(two_runs, tmp_path):
    import shutil

    for name in ("a", "b"):
        shutil.copytree(two_runs / name, tmp_path / name)
    return tmp_path / "a", tmp_path / "b"


def _eval(run, capsys, *args):
    code, _, err = run_cli(["eval", str(run), "--threads", "1", *args], capsys)
    assert code == 0, err


def test_compare_warns_when_the_nlls_were_evaluated_differently(two_runs, capsys, tmp_path):
    a, b = _copies(two_runs, tmp_path)  # a: k=4 on every test image
    n = json.loads((a / "eval.json").read_text())["num_images"]
    _eval(b, capsys, "--k", "6", "--limit", "10")
    code, stdout, stderr = run_cli(["compare", str(a), str(b), "-o", str(tmp_path / "c.png")], capsys)
    assert code == 0
    assert f"(k=4, {n} test)" in stdout and "(k=6, 10 test)" in stdout
    assert stderr.startswith("warning: the NLLs were evaluated differently (a: k=4, ")
    assert f"a: k=4, {n} test images, last weights; b: k=6, 10 test images, last weights" in stderr
    assert "not comparable" in stderr and stderr.count("\n") == 1

    _eval(b, capsys, "--k", "4")  # now alike: b's latest is a's
    code, stdout, stderr = run_cli(["compare", str(a), str(b), "-o", str(tmp_path / "c.png")], capsys)
    assert stdout.count(f"(k=4, {n} test)") == 2 and stderr == ""

    _eval(b, capsys, "--k", "6", "--limit", "10")  # b's latest differs again, but both have k=4 on n
    code, stdout, stderr = run_cli(["compare", str(a), str(b), "-o", str(tmp_path / "c.png")], capsys)
    b_k4 = next(r for r in json.loads((b / "eval.json").read_text())["evaluations"] if r["k"] == 4)
    row_b = next(r for r in stdout.splitlines() if r.startswith("| b |"))
    assert f"{b_k4['nll']:.2f} ± {b_k4['nll_stderr']:.2f} (k=4, {n} test)" in row_b
    assert "the NLLs are those of the evaluation every run has (k=4" in stderr and "b also has a later one" in stderr


def test_compare_json_draws_no_picture_unless_asked_and_never_replaces_one_silently(
    two_runs, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    runs = [str(two_runs / "a"), str(two_runs / "b")]
    code, stdout, stderr = run_cli(["compare", *runs, "--json"], capsys)
    assert code == 0 and len(json.loads(stdout)) == 2 and stderr == ""
    assert not (tmp_path / "compare.png").exists()
    code, stdout, _ = run_cli(["compare", *runs], capsys)
    assert stdout.strip().splitlines()[-1] == "curves: compare.png" and (tmp_path / "compare.png").is_file()
    code, stdout, _ = run_cli(["compare", *runs], capsys)
    assert stdout.strip().splitlines()[-1] == "curves: compare.png (replaced the file that was there)"
    code, stdout, stderr = run_cli(["compare", *runs, "--json", "-o", "c.svg"], capsys)
    assert len(json.loads(stdout)) == 2 and stderr == "curves: c.svg\n" and (tmp_path / "c.svg").is_file()


def test_compare_refuses_a_folder_that_is_not_a_run_and_writes_nothing(two_runs, capsys, tmp_path):
    out = tmp_path / "c.png"
    code, _, stderr = run_cli(["compare", str(two_runs / "a"), str(tmp_path / "nope"), "-o", str(out)], capsys)
    assert code == 2 and "nope" in stderr and "no such run folder" in stderr
    assert not out.exists()


def test_runs_with_one_name_are_told_apart_by_their_paths(two_runs, capsys, tmp_path):
    code, stdout, _ = run_cli(
        ["compare", str(two_runs / "a"), str(two_runs / "a"), "-o", str(tmp_path / "c.png")], capsys
    )
    assert code == 0 and stdout.count(f"| {two_runs / 'a'} |") == 2


def test_closest_preset_names_the_settings_that_differ():
    assert cmp.closest_preset(load_preset("iwae-paper")) == "iwae-paper"
    cfg = replace(load_preset("iwae-paper"), {"train.k": 50, "train.objective": "iwae"})
    assert cmp.closest_preset(cfg) == "iwae-paper (+train.k, train.objective)"


def test_compared_curves_refuse_an_unknown_axis():
    from vaelab.errors import ConfigError

    with pytest.raises(ConfigError, match="epoch or minutes"):
        plot_compared_curves({}, x="steps")


def test_discrete_latents_are_described_by_their_codes_not_flow_steps():
    """#22: a VQ-VAE read 'posterior vq x4' and a Gumbel model 'gumbel x4', as if they were flows."""
    from vaelab.analysis.compare import describe_model
    from vaelab.config_io import load_preset

    assert describe_model(load_preset("vqvae")).endswith("posterior vq (128 codes)")
    assert describe_model(load_preset("gumbel")).endswith("posterior gumbel (10 categories)")
    iaf = load_preset("iwae-paper").override({"model.posterior": "iaf", "model.flow_steps": 4})
    assert describe_model(iaf).endswith("posterior iaf x4")

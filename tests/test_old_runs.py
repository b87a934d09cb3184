"""A run folder written before the VAE-family redesign (vaelab 0.1.0 at 639ff5d, format vaelab-run-1:
one Gaussian layer, no prior/posterior/layers keys) keeps loading, evaluating and resuming, and
its resume matches the old code's own uninterrupted run.

"Matches" is bit-identical on a machine whose CPU kernels are the ones that wrote the fixture (an
AVX-512 Xeon: measured 0 difference), and within float32 rounding on others: MKL and ATen pick
their kernels by instruction set, and their sums round differently (measured 3e-8 with the AVX2 and
the portable kernels, weights up to 0.7). The tolerance, 1e-6, is 30 times that and 1,000 times
smaller than anything a lost optimizer or generator state does to a step (about lr = 1e-3).
Bit-identical resume on one machine is tested by test_train.py and test_crash.py.

tests/fixtures/run-format1 holds that code's 1-epoch run of the tiny preset on fixtures/tiny.npz
(seed 3); run-format1-epoch2-model.safetensors is the same code's 2-epoch run of the same command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

import vaelab
from conftest import run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "old"
    shutil.copytree(FIXTURES / "run-format1", run)
    cfg = json.loads((run / "config.json").read_text())
    assert "prior" not in cfg["model"] and cfg["format"] == "vaelab-run-1"  # written before the redesign
    cfg["data"]["dataset"] = str(FIXTURES / "tiny.npz")  # the folder moved: point at its data
    (run / "config.json").write_text(json.dumps(cfg, indent=2))
    return run


def test_an_old_run_loads_with_the_default_parts(tmp_path):
    model = vaelab.load(old_run(tmp_path))
    assert isinstance(model, vaelab.VAE)
    assert (model.cfg.prior, model.cfg.posterior, model.cfg.layers) == ("normal", "gaussian", ())
    x = torch.rand(3, 1, 8, 8)
    assert model.encode_mean(x).shape == (3, 2) and model.sample(2).shape == (2, 1, 8, 8)


def test_an_old_run_evaluates_and_resumes_as_the_old_code_trained(tmp_path, capsys):
    run = old_run(tmp_path)
    code, out, err = run_cli(["eval", str(run), "--k", "10", "--threads", "1"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--resume", str(run), "--epochs", "2", "--no-plots", "-q"], capsys)
    assert code == 0, err
    new, old = load_file(run / "model.safetensors"), load_file(FIXTURES / "run-format1-epoch2-model.safetensors")
    assert sorted(new) == sorted(old)
    for k in old:
        torch.testing.assert_close(new[k], old[k], rtol=0, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")

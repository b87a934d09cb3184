"""`vaelab eval` plans its passes within a memory budget (issue #23, item 2) and shows progress (item 4).

No timing and no RSS here: the plan comes from counting the bytes of the tensors a probe pass
allocates (deterministic), and the tests check the plan and the same count on the real passes.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from conftest import run_cli
from vaelab.config import EvalConfig, ModelConfig, RunConfig
from vaelab.config_io import load_preset, replace
from vaelab.data import ImageData
from vaelab.errors import ConfigError
from vaelab.evaluation.estimates import log_likelihood
from vaelab.evaluation.plan import MB, _LiveBytes, measure_pass_cost, plan_passes
from vaelab.models import build_model
from vaelab.run import checkpoint as ckpt

# A small colour model whose latents cost what a colour model's do: the logistic mixture's
# temporaries, (K, B, M, 3, H, W) floats each, are ~170 KB per decoded latent here.
COLOUR = ModelConfig(
    input_shape=(3, 16, 16),
    arch="conv",
    channels=(8, 16),
    hidden=(32,),
    latent_dim=4,
    likelihood="logistic-mixture",
    mixture_components=3,
)


@pytest.fixture(scope="module")
def colour_model():
    torch.manual_seed(0)
    return build_model(COLOUR).eval()


def _images(n: int, shape=(3, 16, 16), seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8))


def test_probe_counts_the_bytes_a_decoded_latent_costs(colour_model):
    cost = measure_pass_cost(colour_model)
    # at least the float32 parameters of p(x|z) for one latent: (P * 3 * 16 * 16) floats
    params = colour_model.likelihood.num_params * 3 * 16 * 16 * 4
    assert params < cost.per_latent < 50 * params
    assert measure_pass_cost(colour_model) == cost  # a count, not a measurement: the same every time


def test_the_plan_stays_within_the_budget_and_does_not_grow_with_k(colour_model):
    cost = measure_pass_cost(colour_model)
    plans = {k: plan_passes(colour_model, EvalConfig(k=k, memory_mb=4), cost=cost) for k in (50, 500, 5000, 50_000)}
    first = plans[50]
    assert all((p.batch_size, p.chunk) == (first.batch_size, first.chunk) for p in plans.values())
    assert first.peak_mb <= 4 and cost.pass_bytes(first.batch_size, first.chunk) <= 4 * MB
    # the defaults (100 images x 50 samples = 5,000 latents, ~850 MB here) would not have fitted
    assert first.batch_size * first.chunk < 100 * 50
    assert cost.pass_bytes(100, 50) > 4 * MB
    # below `chunk`, K itself is the chunk
    assert plan_passes(colour_model, EvalConfig(k=3, memory_mb=4), cost=cost).chunk == 3


def test_fewer_images_first_then_fewer_samples(colour_model):
    cost = measure_pass_cost(colour_model)
    roomy = plan_passes(colour_model, EvalConfig(memory_mb=1024), cost=cost)
    assert roomy.chunk == 50 and 1 < roomy.batch_size < 100  # ~0.2 MB per latent: ~95 images of 50 samples
    tight = plan_passes(colour_model, EvalConfig(memory_mb=2), cost=cost)
    assert tight.batch_size == 1 and 1 <= tight.chunk < 50
    assert cost.pass_bytes(1, tight.chunk) <= 2 * MB < cost.pass_bytes(1, tight.chunk + 1)


def test_the_real_passes_allocate_no_more_than_the_plan_whatever_k(colour_model):
    """The same byte count as the probe, on log_likelihood itself: the peak stays under the budget
    and is the same for K = 100 and K = 1000 up to the (K, B) table of log-weights."""
    data = _images(12)
    peaks = {}
    for k in (100, 1000):
        cfg = EvalConfig(k=k, memory_mb=3, seed=1)
        plan = plan_passes(colour_model, cfg)
        with _LiveBytes() as live:
            log_likelihood(colour_model, data, cfg, plan)
        peaks[k] = live.peak
        assert live.peak <= 3 * MB
    table = (1000 - 100) * 12 * 8 * 4  # (K, B) log-weights, float32 and their float64 copy, twice over
    assert abs(peaks[1000] - peaks[100]) <= table


def test_one_latent_that_does_not_fit_is_refused_with_the_budget_that_would():
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(input_shape=(3, 32, 32), hidden=(8,), latent_dim=2, likelihood="logistic-mixture")
    ).eval()
    with pytest.raises(ConfigError, match=r"memory_mb 1: one image with one decoded latent needs ~(\d+) MB") as e:
        plan_passes(model, EvalConfig(memory_mb=1))
    need = int(str(e.value).split("--memory-mb ")[1].split(" ")[0])
    plan = plan_passes(model, EvalConfig(memory_mb=need))
    assert plan.batch_size == 1 and plan.chunk >= 1


@pytest.mark.parametrize("preset", ["cifar", "celeba64"])
def test_the_colour_presets_fit_the_default_budget(preset):
    """At the defaults the passes of the ResNet presets were 100 x 50 latents (~12 GB for cifar,
    ~48 GB for celeba64); now they are planned within EvalConfig.memory_mb (1 GB)."""
    torch.manual_seed(0)
    model = build_model(load_preset(preset).model).eval()
    cfg = EvalConfig()
    plan = plan_passes(model, cfg)
    assert plan.peak_mb <= cfg.memory_mb
    assert plan.cost.pass_bytes(cfg.batch_size, cfg.chunk) > 10 * cfg.memory_mb * MB  # the old passes
    assert plan.cost.pass_bytes(plan.elbo_batch_size, 1) <= cfg.memory_mb * MB
    assert plan.encode_batch_size * plan.cost.per_encoded <= cfg.memory_mb * MB


# -- the `vaelab eval` command on a colour run ----------------------------------------------


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """A run folder holding a freshly initialised COLOUR model and an .npz of random colour images."""
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    np.savez(
        root / "d.npz",
        x=rng.integers(0, 256, (20, 3, 16, 16), dtype=np.uint8),
        x_test=rng.integers(0, 256, (6, 3, 16, 16), dtype=np.uint8),
    )
    cfg = replace(RunConfig(model=COLOUR), {"data.dataset": str(root / "d.npz"), "data.binarize": "none"})
    run = root / "run"
    run.mkdir()
    ckpt.write_config(run, cfg)
    torch.manual_seed(0)
    ckpt.save_weights(run / ckpt.MODEL, build_model(cfg.model))
    return run


def test_eval_refuses_a_budget_too_small_for_one_latent_and_writes_nothing(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8))
    model_cfg = ModelConfig(input_shape=(3, 32, 32), hidden=(8,), latent_dim=2, likelihood="logistic-mixture")
    cfg = replace(RunConfig(model=model_cfg), {"data.dataset": str(tmp_path / "d.npz"), "data.binarize": "none"})
    run = tmp_path / "run"
    run.mkdir()
    ckpt.write_config(run, cfg)
    ckpt.save_weights(run / ckpt.MODEL, build_model(model_cfg))
    code, out, err = run_cli(["eval", str(run), "--memory-mb", "1", "--threads", "1"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "memory_mb 1: one image with one decoded latent needs" in err and "give at least --memory-mb" in err
    assert not (run / "eval.json").exists()


def test_eval_json_records_the_passes_and_stdout_is_only_json(colour_run, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: --json still draws no bar
    code, out, err = run_cli(["eval", str(colour_run), "--k", "20", "--memory-mb", "2", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["memory_mb"] == 2 and doc["batch_size"] == 1 and 1 <= doc["chunk"] < 20
    assert "img" not in err and "log p(x)" not in err
    assert json.loads((colour_run / "eval.json").read_text())["chunk"] == doc["chunk"]


def test_eval_shows_progress_on_a_terminal_only(colour_run, capsys, monkeypatch):
    code, out, err = run_cli(["eval", str(colour_run), "--k", "20"], capsys)  # captured: not a terminal
    assert code == 0 and "log p(x)" not in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run_cli(["eval", str(colour_run), "--k", "20"], capsys)
    assert code == 0 and "log p(x), k=20" in err and "0/6 [" in err and "img/s" in err  # images done / total
    assert "log p(x)" not in out and "NLL (k=20)" in out


def test_eval_says_when_the_passes_asked_for_were_made_smaller(colour_run, capsys):
    code, out, _ = run_cli(["eval", str(colour_run), "--k", "20", "--chunk", "20", "--memory-mb", "2"], capsys)
    assert code == 0
    doc = json.loads((colour_run / "eval.json").read_text())
    assert f"note: passes of 1 image x {doc['chunk']} samples (asked: 100 x 20) fit --memory-mb 2" in out

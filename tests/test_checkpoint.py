"""Run folders: weights round trip, configs as JSON, mismatches named."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch.testing import assert_close

import vaelab
from vaelab.config import ModelConfig, RunConfig
from vaelab.errors import CheckpointError
from vaelab.models import VAE
from vaelab.run import checkpoint as ckpt


def _run(tmp_path, model_cfg=ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=3)):
    cfg = RunConfig(model=model_cfg)
    model = VAE(model_cfg)
    ckpt.write_config(tmp_path, cfg)
    ckpt.save_weights(tmp_path / ckpt.MODEL, model)
    return model, cfg


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model, cfg = _run(tmp_path)
    loaded = vaelab.load(tmp_path)
    assert loaded.cfg == cfg.model and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2
        assert torch.equal(a, b)
    x = torch.rand(2, 1, 4, 4)
    assert_close(loaded.encode_mean(x), model.encode_mean(x))
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc["versions"]["torch"] == torch.__version__ and doc["model"]["latent_dim"] == 3


def test_optimizer_and_rng_survive_a_checkpoint(tmp_path):
    model, _ = _run(tmp_path)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(3, 1, 4, 4)).params.sum().backward()
    opt.step()
    g = torch.Generator().manual_seed(5)
    torch.rand(3, generator=g)
    ckpt.save_checkpoint(tmp_path, model, opt, {"noise": g.get_state()}, {"sums": torch.arange(4.0)}, {"epoch": 2})
    model2 = VAE(model.cfg)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    rng, extra, state = ckpt.load_checkpoint(tmp_path, model2, opt2)
    assert state == {"epoch": 2}
    assert torch.equal(extra["sums"], torch.arange(4.0))
    g2 = torch.Generator()
    g2.set_state(rng["noise"])
    assert torch.equal(torch.rand(5, generator=g), torch.rand(5, generator=g2))
    for q1, q2 in zip(model.parameters(), model2.parameters()):
        s1, s2 = opt.state[q1], opt2.state[q2]
        assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and torch.equal(s1["exp_avg_sq"], s2["exp_avg_sq"])
        assert float(s1["step"]) == float(s2["step"]) == 1.0


def test_weights_of_another_architecture_are_named(tmp_path):
    _run(tmp_path)
    other = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(9,), latent_dim=3))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / ckpt.MODEL)
    with pytest.raises(
        CheckpointError,
        match=r"tensor 'encoder.body.0.weight' is torch.float32 \(9, 16\) but config.json builds torch.float32 \(8, 16\)",
    ):
        vaelab.load(tmp_path)


def test_missing_and_altered_files(tmp_path):
    _run(tmp_path)
    (tmp_path / ckpt.MODEL).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        vaelab.load(tmp_path)
    (tmp_path / ckpt.MODEL).unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: missing"):
        vaelab.load(tmp_path)
    (tmp_path / ckpt.CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        vaelab.load(tmp_path)
    with pytest.raises(CheckpointError, match="no such run folder"):
        vaelab.load(tmp_path / "nope")

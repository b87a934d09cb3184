"""The flow prior ("flow": a masked autoregressive flow on N(0, I)): its density by quadrature and by
the change of variables, its seeded draws, its registry entry, and a model with it through
training, resume, save, load, eval and sample (issue #22)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_parts_base import quadrature_grid, random_flow_prior
from torch.autograd.functional import jacobian
from torch.testing import assert_close

import vaelab
from conftest import crash_fit_at_step, make_images
from vaelab import maths
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.models import VAE, build_model
from vaelab.models.flows import MAFStep
from vaelab.models.hierarchy import HierarchicalVAE
from vaelab.models.priors import FlowPrior, StandardNormal
from vaelab.models.registry import PRIORS

F64 = torch.float64


@pytest.mark.parametrize("dim, half_width, n", [(1, 12.0, 6000), (2, 10.0, 500)])
def test_density_integrates_to_one(dim, half_width, n):
    prior = random_flow_prior(dim)
    points, volume = quadrature_grid(dim, half_width, n)
    with torch.no_grad():
        total = prior.log_prob(points).exp().sum() * volume
    assert_close(total, torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-6)


def test_log_prob_of_draws_is_the_change_of_variables():
    """z = g(u), g the sampler's map from the noise u ~ N(0, I): log p(z) = log N(u) - log|det dg/du|,
    with the Jacobian of g by autograd; and sample() is g at u drawn from the generator it is given."""
    prior = random_flow_prior(3)
    u = torch.randn(6, 3, generator=torch.Generator().manual_seed(11), dtype=F64)

    def g(x: torch.Tensor) -> torch.Tensor:
        return prior.flow.inverse(x[None])[0][0]

    z = prior.sample(6, torch.Generator().manual_seed(11)).detach()
    assert torch.equal(z, prior.flow.inverse(u)[0].detach())
    with torch.no_grad():
        log_p = prior.log_prob(z)
    for b in range(6):
        logdet = torch.linalg.slogdet(jacobian(g, u[b])).logabsdet
        assert_close(log_p[b], maths.std_normal_log_prob(u[b]) - logdet, rtol=1e-9, atol=1e-9)


def test_draws_are_seeded_and_leave_the_global_generator_alone():
    prior = random_flow_prior(4)
    state = torch.get_rng_state()
    a = prior.sample(8, torch.Generator().manual_seed(0))
    b = prior.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, prior.sample(8, torch.Generator().manual_seed(1)))
    assert torch.equal(torch.get_rng_state(), state)


def test_draws_carry_gradients_to_the_flow():
    prior = FlowPrior(3, steps=2)
    prior.sample(5, torch.Generator().manual_seed(0)).square().sum().backward()
    grads = [p.grad for p in prior.parameters()]
    assert all(g is not None for g in grads) and any(bool(g.abs().sum() > 0) for g in grads if g is not None)


def test_starts_near_the_standard_normal_and_is_not_it():
    torch.manual_seed(0)
    prior = FlowPrior(5)  # 4 steps, MADE width max(64, 2 D)
    assert not prior.standard_normal and prior.steps == 4 and prior.settings() == {"prior_components": 4}
    z = torch.randn(100, 5)
    with torch.no_grad():
        gap = (prior.log_prob(z) - StandardNormal(5).log_prob(z)).abs().max()
    assert 0 < gap < 0.2
    made = prior.flow.transforms[0].made
    assert isinstance(prior.flow.transforms[0], MAFStep) and made.hidden[0].out_features == 64


def test_the_entry_and_its_settings():
    entry = PRIORS["flow"]
    assert not entry.discrete and entry.hierarchy and not entry.unconditional and entry.default_components == 4
    mc = ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=3, prior="flow", prior_components=2)
    torch.manual_seed(0)
    model = build_model(mc)
    assert isinstance(model.prior, FlowPrior) and model.prior.steps == 2 and model(torch.rand(2, 1, 8, 8)).kl is None
    with pytest.raises(ConfigError, match="take prior uniform"):
        ModelConfig(input_shape=(1, 8, 8), prior="flow", posterior="gumbel")
    model = build_model(ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2))
    model.prior = FlowPrior(2, steps=3)  # swapped in: recorded in the config, so the run reloads it
    assert (model.cfg.prior, model.cfg.components) == ("flow", 3)


def test_a_conditional_model_takes_it():
    torch.manual_seed(0)
    mc = ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2, prior="flow", num_classes=4)
    model = build_model(mc)
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    assert torch.isfinite(model.elbo(x, y).elbo).all()
    assert model.sample(2, y=1).shape == (2, 1, 8, 8)


def test_a_hierarchy_trains_with_it_on_top(tiny_cfg, tiny_splits):
    layers = ({"hidden": (16,), "latent_dim": 4}, {"hidden": (8,), "latent_dim": 2})
    cfg = dataclasses.replace(
        tiny_cfg,
        model=dataclasses.replace(tiny_cfg.model, prior="flow", layers=layers),
        train=dataclasses.replace(tiny_cfg.train, epochs=1),
    )
    torch.manual_seed(0)
    model = build_model(cfg.model)
    assert isinstance(model, HierarchicalVAE) and isinstance(model.prior, FlowPrior)
    before = [p.detach().clone() for p in model.prior.parameters()]
    res = vaelab.fit(model, tiny_splits, cfg, None, progress=False)
    assert np.isfinite(res.metrics[-1]["train_elbo"])
    assert any(not torch.equal(a, b) for a, b in zip(before, res.model.prior.parameters()))  # p(z_L) learns
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 8, 8)


def _cfg(tiny_cfg: RunConfig, **train: object) -> RunConfig:
    return dataclasses.replace(
        tiny_cfg,
        model=dataclasses.replace(tiny_cfg.model, latent_dim=3, prior="flow", prior_components=2),
        train=dataclasses.replace(tiny_cfg.train, **train),  # type: ignore[arg-type]
    )


def _fit(cfg: RunConfig, splits, run_dir: Path | None = None, resume: bool = False):
    torch.manual_seed(cfg.train.seed)
    return vaelab.fit(VAE(cfg.model), splits, cfg, run_dir, resume=resume, progress=False)


def test_trains_and_resumes_bit_identically(tiny_cfg, tiny_splits, tmp_path, monkeypatch):
    cfg = _cfg(tiny_cfg, epochs=2, checkpoint_every=3)
    full = _fit(cfg, tiny_splits, tmp_path / "full")
    assert all(np.isfinite(r["train_elbo"]) for r in full.metrics)
    crash_fit_at_step(monkeypatch, 14, lambda: _fit(cfg, tiny_splits, tmp_path / "r"))
    torch.manual_seed(99)  # the resume must not depend on the global generator
    resumed = _fit(cfg, tiny_splits, tmp_path / "r", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert any(k.startswith("prior.flow.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    from vaelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    return e.value.code, capsys.readouterr().err


def test_a_run_saves_loads_evaluates_and_samples(tmp_path, capsys):
    x, y = make_images(600)
    np.savez(tmp_path / "data.npz", x=x[:, 0], y=y)
    cfg = RunConfig(
        data=DataConfig(dataset=str(tmp_path / "data.npz")),
        model=ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2, prior="flow", prior_components=3),
        train=TrainConfig(epochs=1, batch_size=40, seed=0, device="cpu", threads=1),
    )
    torch.manual_seed(0)
    model = build_model(cfg.model)
    run = tmp_path / "run"
    vaelab.fit(model, vaelab.load_splits(cfg.data), cfg, run, progress=False)

    loaded = vaelab.load(run)
    assert isinstance(loaded.prior, FlowPrior) and loaded.prior.steps == 3 and loaded.cfg.prior == "flow"
    z = torch.randn(5, 2)
    with torch.no_grad():
        assert_close(loaded.prior.log_prob(z), model.prior.cpu().log_prob(z), rtol=0, atol=0)
        g = torch.Generator().manual_seed(4)
        assert_close(
            loaded.sample(3, generator=g), model.cpu().eval().sample(3, generator=torch.Generator().manual_seed(4))
        )

    code, err = _cli(["eval", str(run), "--k", "20", "--threads", "1"], capsys)
    assert code == 0, err
    result = json.loads((run / "eval.json").read_text())
    assert result  # the importance-sampled NLL and the ELBO of a model with a learned prior

    pictures = []
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        out = tmp_path / f"{name}.png"
        args = ["sample", str(run), "-n", "4", "--seed", str(seed), "--out", str(out)]
        code, err = _cli([*args, "--npy", str(tmp_path / f"{name}.npy"), "--threads", "1"], capsys)
        assert code == 0, err
        assert out.is_file()
        pictures.append(np.load(tmp_path / f"{name}.npy"))
    assert np.array_equal(pictures[0], pictures[1]) and not np.array_equal(pictures[0], pictures[2])

    # and it serves: the explorer's sample endpoint draws from the flow prior, seeded
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vaelab.serve.app import app_from_run

    client = TestClient(app_from_run(run), base_url="http://localhost")
    assert client.get("/api/info").json()["prior"] == "flow"
    first = client.post("/api/sample", json={"n": 3, "seed": 5}).json()
    again = client.post("/api/sample", json={"n": 3, "seed": 5}).json()
    assert first["images"] == again["images"] and len(first["images"]) > 0

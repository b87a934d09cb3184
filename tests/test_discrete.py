"""Discrete latents: the VQ-VAE with its code prior (`vaelab train-prior`) and the Gumbel-softmax model.

Known answers: the uniform code prior is H'W' log K nats; the learned prior's probabilities of all
K^(H'W') grids sum to 1; a point-mass posterior's importance-sampled bound equals its ELBO for any K;
the Gumbel noise made from normal eps is exactly the Gumbel transform of Phi(eps); the categorical KL
to the uniform prior matches torch.distributions; resume is bit-identical with the codebook's EMA
state and the temperature schedule.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch

from conftest import crash_fit_at_step, run_cli
from vaelab.analysis.prior_fit import fit_code_prior, write_prior
from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.config_io import load_preset
from vaelab.errors import ConfigError
from vaelab.evaluation.estimates import log_likelihood_batch
from vaelab.models import build_model
from vaelab.models.code_prior import CodePrior
from vaelab.models.gumbel import GumbelVAE, categorical_kl_uniform, gumbel_noise
from vaelab.models.vqvae import VQVAE
from vaelab.run import checkpoint as ckpt
from vaelab.training import fit

STRIP = ("epoch_seconds", "samples_per_s")


def vq_cfg(tiny_cfg, **model) -> RunConfig:
    m = dict(
        arch="conv", channels=(16,), latent_dim=4, posterior="vq", prior="uniform", codebook_size=8,
        prior_layers=1, prior_width=16,
    )  # fmt: skip
    m.update(model)
    return dataclasses.replace(
        tiny_cfg,
        data=dataclasses.replace(tiny_cfg.data, binarize="dynamic"),
        model=dataclasses.replace(tiny_cfg.model, **m),
    )


def gumbel_cfg(tiny_cfg, **model) -> RunConfig:
    m = dict(latent_dim=3, categories=4, posterior="gumbel", prior="uniform", temperature_rate=0.05)
    m.update(model)
    return dataclasses.replace(
        tiny_cfg,
        data=dataclasses.replace(tiny_cfg.data, binarize="dynamic"),
        model=dataclasses.replace(tiny_cfg.model, **m),
    )


def _fit(cfg, splits, run_dir=None, resume=False):
    torch.manual_seed(cfg.train.seed)
    return fit(build_model(cfg.model), splits, cfg, run_dir, resume=resume, progress=False)


def binary(n: int, shape=(1, 8, 8), seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed)) < 0.4).float()


# -- VQ-VAE ----------------------------------------------------------------------------------
def test_vq_answer_uniform_prior_and_bound(tiny_cfg):
    model = build_model(vq_cfg(tiny_cfg).model).eval()
    assert isinstance(model, VQVAE) and model.grid == (4, 4) and model.latent_size == 4 * 16
    x = binary(5)
    d = model(x, None, torch.zeros(3, 5, 1))
    # the uniform code prior: 16 positions, 8 codes each; q is a point mass, so log q = 0
    torch.testing.assert_close(d.kl, torch.full((5,), 16 * math.log(8)))
    torch.testing.assert_close(d.log_qz_x, torch.zeros(3, 5))
    # every draw is the same: the importance-sampled bound is the ELBO, for any K
    elbo = d.log_px_z[0] - d.kl
    for k in (1, 7):
        torch.testing.assert_close(log_likelihood_batch(model, x, k), elbo)
    # the penalty is the commitment loss: beta * sum over positions of ||z_e - e||^2
    z_e = model.encoder(x)
    e = model.code_vectors(model.codes(x)).view(5, 4, 4, 4)  # (B, D, H', W')
    torch.testing.assert_close(d.penalty, 0.25 * (z_e - e).pow(2).flatten(1).sum(1))


def test_the_learned_code_prior_is_a_normalised_distribution():
    torch.manual_seed(0)
    prior = CodePrior(num_codes=3, grid=(1, 3), layers=1, width=16).eval()
    grids = torch.tensor(list(itertools.product(range(3), repeat=3))).view(27, 1, 3)
    # untrained: uniform, -3 log 3 for every grid
    torch.testing.assert_close(prior.log_prob(grids), torch.full((27,), -3 * math.log(3)))
    prior.trained.fill_(True)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(torch.randn_like(p))  # far from uniform
        lp = prior.log_prob(grids).double()
    assert float(lp.std()) > 0.1  # not uniform
    assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-5)  # the 27 grids sum to 1
    # sampling follows the same distribution: frequencies of 20,000 draws against exp(log p)
    draws = prior.sample(20_000, torch.Generator().manual_seed(1))
    index = (draws.view(-1, 3) * torch.tensor([9, 3, 1])).sum(1)
    freq = torch.bincount(index, minlength=27).double() / 20_000
    assert float((freq - lp.exp()).abs().max()) < 0.015


def test_vq_training_resumes_bit_identically_with_the_codebook_state(tiny_cfg, tiny_splits, tmp_path, monkeypatch):
    cfg = dataclasses.replace(vq_cfg(tiny_cfg), train=dataclasses.replace(tiny_cfg.train, epochs=2, checkpoint_every=4))
    full = _fit(cfg, tiny_splits, tmp_path / "full")
    crash_fit_at_step(monkeypatch, 14, lambda: _fit(cfg, tiny_splits, tmp_path / "r"))
    torch.manual_seed(99)  # the resume restores the global generator that k-means and restarts use
    resumed = _fit(cfg, tiny_splits, tmp_path / "r", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert any(k.startswith("quantizer.ema_") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in STRIP} for r in rows]  # noqa: E731
    assert strip(full.metrics) == strip(resumed.metrics)
    row = full.metrics[-1]
    assert 1 <= row["train_perplexity"] <= row["train_codes_used"] <= 8 and row["train_commitment"] > 0
    assert row["train_kl"] == pytest.approx(16 * math.log(8), rel=1e-6)


def test_train_prior_fits_the_codes_and_rewrites_only_the_prior(tiny_cfg, tiny_splits, tmp_path):
    cfg = vq_cfg(tiny_cfg)
    run = tmp_path / "vq"
    result = _fit(cfg, tiny_splits, run)
    before = {f: ckpt._read_safetensors(run / f)[0] for f in (ckpt.MODEL, ckpt.BEST, ckpt.CHECKPOINT)}
    model = ckpt.load(run)
    record = fit_code_prior(model, tiny_splits.train, tiny_splits.val, True, epochs=15, lr=3e-3, seed=0, progress=False)
    assert record.val_nats[-1] < record.uniform_nats == pytest.approx(16 * math.log(8))
    write_prior(run, model, record)
    for f, old in before.items():
        new, _ = ckpt._read_safetensors(run / f)  # the SHA-256 still matches
        changed = {k for k in old if not torch.equal(old[k], new[k])}
        assert changed and all("code_prior." in k for k in changed), f
    loaded = ckpt.load(run)
    assert loaded.code_prior.is_trained
    x = result.model.encoder.convs[0].weight.new_zeros(2, 1, 8, 8)
    assert loaded.sample(3).shape == (3, 1, 8, 8)
    assert torch.isfinite(loaded(x).kl).all()
    assert json.loads((run / "prior.json").read_text())["epochs"] == 15


def test_vq_cli_path_train_prior_eval_and_sample(tmp_path, capsys, npz_dataset):
    run = tmp_path / "vq"
    args = [
        "train", "--preset", "vqvae", "--dataset", str(npz_dataset), "--epochs", "1", "--model.input_shape", "[1, 8, 8]",
        "--model.channels", "[8]", "--model.res_blocks", "1", "--model.codebook_size", "8", "--model.prior_layers", "1",
        "--model.prior_width", "16", "--batch-size", "50", "--threads", "1", "--out", str(run), "-q",
    ]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert (run / "samples.png").is_file() and not (run / "traversals.png").exists()
    code, out, err = run_cli(["train-prior", str(run), "--epochs", "2", "--threads", "1", "-q"], capsys)
    assert code == 0, err
    assert "nats per image on the validation codes" in out
    code, out, err = run_cli(["eval", str(run), "--json", "--threads", "1"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["nll_is_bound"] and doc["k"] == 1 and "learned code prior" in doc["note"]
    assert doc["nll"] == pytest.approx(-doc["elbo"]) and 1 <= doc["perplexity"] <= 8
    code, out, err = run_cli(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")], capsys)
    assert code == 0, err


def test_train_prior_refuses_a_gaussian_run(tmp_path, capsys, npz_dataset):
    run = tmp_path / "g"
    args = ["train", "--preset", "tiny", "--dataset", str(npz_dataset), "--model.input_shape", "[1, 8, 8]"]
    code, _, err = run_cli([*args, "--epochs", "1", "--out", str(run), "--no-plots", "-q"], capsys)
    assert code == 0, err
    before = sorted(p.name for p in run.iterdir())
    code, _, err = run_cli(["train-prior", str(run)], capsys)
    assert code == 2 and "posterior is gaussian" in err
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written


@pytest.mark.parametrize(
    "model,train,match",
    [
        ({"posterior": "vq", "prior": "normal", "arch": "conv", "channels": (16,)}, {}, "prior uniform"),
        ({"posterior": "gaussian", "prior": "uniform"}, {}, "belongs to them alone"),
        ({"posterior": "vq", "prior": "uniform"}, {}, "use arch conv or resnet"),
        ({"posterior": "gumbel", "prior": "uniform", "num_classes": 3}, {}, "unconditional"),
        ({"posterior": "gumbel", "prior": "uniform", "temperature_min": 2.0}, {}, "temperature_min"),
    ],
)
def test_bad_discrete_configs_are_refused(model, train, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(input_shape=(1, 8, 8), **model)


@pytest.mark.parametrize("cfg_of", [vq_cfg, gumbel_cfg])
def test_importance_weighted_objectives_are_refused_for_discrete_latents(tiny_cfg, tiny_splits, cfg_of):
    cfg = cfg_of(tiny_cfg)
    cfg = dataclasses.replace(cfg, train=TrainConfig(epochs=1, batch_size=40, objective="iwae", k=3, threads=1))
    with pytest.raises(ConfigError, match="use objective elbo"):
        _fit(cfg, tiny_splits)


# -- Gumbel-softmax --------------------------------------------------------------------------
def test_gumbel_noise_is_the_gumbel_transform_of_the_normal_cdf():
    eps = torch.linspace(-6, 6, 101, dtype=torch.float64)
    u = 0.5 * torch.erfc(-eps / math.sqrt(2))  # Phi(eps)
    torch.testing.assert_close(gumbel_noise(eps), -torch.log(-torch.log(u)))
    # and its distribution: P(g <= t) = exp(-exp(-t)) for a standard Gumbel
    g = gumbel_noise(torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    for t in (-1.0, 0.0, 1.0, 2.5):
        assert float((g <= t).double().mean()) == pytest.approx(math.exp(-math.exp(-t)), abs=4e-3)


def test_categorical_kl_to_uniform_matches_torch_distributions():
    logits = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0))
    log_q = torch.log_softmax(logits, -1)
    q = torch.distributions.Categorical(logits=logits)
    u = torch.distributions.Categorical(logits=torch.zeros(5, 3, 4))
    torch.testing.assert_close(categorical_kl_uniform(log_q), torch.distributions.kl_divergence(q, u).sum(-1))


def test_gumbel_evaluation_draws_are_exact_one_hot_categoricals(tiny_cfg):
    model = build_model(gumbel_cfg(tiny_cfg).model).eval()
    assert isinstance(model, GumbelVAE) and model.latent_size == 12
    x = binary(6)
    eps = torch.randn(4, 6, 12, generator=torch.Generator().manual_seed(0))
    d = model(x, None, eps)
    z = d.z.view(4, 6, 3, 4)
    assert torch.equal(z.sum(-1), torch.ones(4, 6, 3)) and set(z.unique().tolist()) == {0.0, 1.0}
    log_q = model.log_q(x)  # (6, 3, 4)
    torch.testing.assert_close(d.log_qz_x, (z * log_q).sum((-1, -2)))
    torch.testing.assert_close(d.log_pz, torch.full((4, 6), -3 * math.log(4)))
    # and the ELBO's closed-form KL is the expectation of log q - log p over the draws
    torch.testing.assert_close(d.kl, categorical_kl_uniform(log_q))


def test_gumbel_temperature_anneals_by_step_and_resumes(tiny_cfg, tiny_splits, tmp_path, monkeypatch):
    cfg = gumbel_cfg(tiny_cfg)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2, checkpoint_every=4))
    full = _fit(cfg, tiny_splits, tmp_path / "full")
    steps = full.steps
    assert int(full.model.step) == steps
    assert full.model.temperature == pytest.approx(max(0.5, math.exp(-0.05 * steps)))
    crash_fit_at_step(monkeypatch, 14, lambda: _fit(cfg, tiny_splits, tmp_path / "r"))
    resumed = _fit(cfg, tiny_splits, tmp_path / "r", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    temps = [r["train_temperature"] for r in full.metrics]
    assert temps[0] > temps[1]


def test_the_presets_build(tiny_cfg):
    for name, kind in (("vqvae", VQVAE), ("gumbel", GumbelVAE)):
        cfg = load_preset(name)
        assert cfg.data.binarize == "dynamic" and cfg.model.likelihood == "bernoulli"
        assert isinstance(build_model(cfg.model), kind)


@pytest.mark.parametrize("cfg_of", [vq_cfg, gumbel_cfg])
def test_the_explorer_serves_discrete_models(tiny_cfg, cfg_of):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from conftest import make_images
    from vaelab.data import ImageData
    from vaelab.serve import Explorer, ServeConfig, create_app

    torch.manual_seed(0)
    model = build_model(cfg_of(tiny_cfg).model).eval()
    x, y = make_images(20, seed=1)
    ex = Explorer(model, ImageData(torch.from_numpy(x), torch.from_numpy(y)), ("a", "b", "c", "d"), ServeConfig())
    client = TestClient(create_app(ex), base_url="http://localhost")
    info = client.get("/api/info").json()
    assert info["latent_dim"] == model.latent_size and not info["can_traverse"]
    doc = client.post("/api/sample", json={"n": 3, "seed": 1}).json()
    assert doc["shape"] == [1, 8, 8] and len(doc["images"]) == 3
    enc = client.post("/api/encode", json={"pixels": (x[0, 0] / 255).tolist()}).json()
    assert enc["logvar"] is None and len(enc["loc"]) == model.latent_size
    dec = client.post("/api/decode", json={"z": [enc["loc"]]})
    assert dec.status_code == 200, dec.text


def test_export_says_why_it_cannot_write_discrete_latents(tiny_cfg, tmp_path):
    from vaelab.export import export_model

    for cfg_of, what in ((vq_cfg, "VQ-VAE codes"), (gumbel_cfg, "categorical")):
        with pytest.raises(ConfigError, match=what):
            export_model(build_model(cfg_of(tiny_cfg).model), tmp_path / "x")
    assert not (tmp_path / "x").exists()

"""The disentangling objectives in fit(): each trains and reports its terms, which relate to the
objective exactly as their formulas say; FactorVAE's discriminator and its optimizer resume
bit-identically; the combinations that do not exist are refused; the dsprites preset is the
disentanglement_lib architecture."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from conftest import crash_fit_at_step, fit_seeded, with_train
from vaelab.config import ModelConfig, TrainConfig
from vaelab.config_io import load_preset
from vaelab.errors import ConfigError
from vaelab.models import VAE, build_model
from vaelab.objectives import OBJECTIVES
from vaelab.objectives.base import Step, training_objective
from vaelab.objectives.discriminator import FactorDiscriminator, discriminator_loss, permute_dims
from vaelab.objectives.disentangling import dip_lambda_diag
from vaelab.run import checkpoint as ckpt
from vaelab.training import fit

STRIP = ("epoch_seconds", "samples_per_s")


def test_betatc_objective_is_the_elbo_minus_the_extra_weight_on_the_total_correlation(tiny_cfg, tiny_splits):
    res = fit_seeded(with_train(tiny_cfg, objective="betatc", beta=6.0, epochs=3), tiny_splits)
    for row in res.metrics:
        assert row["train_objective"] == pytest.approx(row["train_elbo"] - 5.0 * row["train_tc"], abs=1e-4)
    one = fit_seeded(with_train(tiny_cfg, objective="betatc", beta=1.0, epochs=3), tiny_splits)
    for row in one.metrics:
        assert row["train_objective"] == pytest.approx(row["train_elbo"], rel=1e-6)
    # the weight does what it is for: the total correlation ends lower than without it
    assert res.metrics[-1]["train_tc"] < one.metrics[-1]["train_tc"], (res.metrics[-1], one.metrics[-1])


def test_dip_objectives_subtract_their_penalty(tiny_cfg, tiny_splits):
    for variant in ("dip-i", "dip-ii"):
        res = fit_seeded(with_train(tiny_cfg, objective=variant, dip_lambda_od=5.0, epochs=1), tiny_splits)
        row = res.metrics[0]
        assert row["train_dip_penalty"] > 0
        assert row["train_objective"] == pytest.approx(row["train_elbo"] - row["train_dip_penalty"], rel=1e-5)


def test_dip_diagonal_weight_defaults_to_disentanglement_libs():
    assert dip_lambda_diag(TrainConfig(objective="dip-i", dip_lambda_od=3.0)) == 30.0
    assert dip_lambda_diag(TrainConfig(objective="dip-ii", dip_lambda_od=3.0)) == 3.0
    assert dip_lambda_diag(TrainConfig(objective="dip-i", dip_lambda_d=2.0)) == 2.0


def test_capacity_rises_with_the_steps_and_is_reported(tiny_cfg, tiny_splits):
    # 10 steps per epoch; C = 8 * min(1, step / 15) at steps 0..19
    res = fit_seeded(
        with_train(tiny_cfg, objective="capacity", capacity_max=8.0, capacity_steps=15, epochs=2), tiny_splits
    )
    expect = [sum(8.0 * min(1.0, s / 15) for s in range(e * 10, e * 10 + 10)) / 10 for e in (0, 1)]
    assert [r["train_capacity"] for r in res.metrics] == pytest.approx(expect, rel=1e-6)
    for row in res.metrics:
        assert row["train_objective"] <= row["train_log_px_z"] + 1e-4  # minus gamma |KL - C| >= 0


def test_factor_vae_trains_its_discriminator_beside_the_model(tiny_cfg, tiny_splits, tmp_path):
    res = fit_seeded(with_train(tiny_cfg, objective="factor", factor_gamma=10.0, epochs=2), tiny_splits, tmp_path)
    for row in res.metrics:
        assert row["train_objective"] == pytest.approx(row["train_elbo"] - 10.0 * row["train_tc_disc"], rel=1e-5)
        assert 0 < row["train_disc_loss"] < 1.0  # cross-entropy nats, log 2 = 0.69 for a coin flip
    tensors, meta = ckpt._read_safetensors(tmp_path / ckpt.CHECKPOINT)
    assert any(k.startswith("aux.model.net.") for k in tensors) and "aux_optimizer" in meta
    assert any(k.startswith("aux.optim.") for k in tensors)
    # the discriminator is training-time only: the model's weights file does not hold it
    weights, _ = ckpt._read_safetensors(tmp_path / ckpt.MODEL)
    assert not any("net." in k and k.startswith("aux") for k in weights)
    assert set(weights) == set(VAE(res.model.cfg).state_dict())


@pytest.mark.parametrize("where", ["epoch", "mid-epoch"])
def test_factor_vae_resumes_bit_identically(tiny_cfg, tiny_splits, tmp_path, monkeypatch, where):
    cfg = with_train(tiny_cfg, objective="factor", epochs=2, checkpoint_every=3)
    full = fit_seeded(cfg, tiny_splits, tmp_path / "full")
    if where == "epoch":
        fit_seeded(
            dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1)), tiny_splits, tmp_path / "r"
        )
    else:  # a crash at step 14: the last checkpoint is step 12's
        crash_fit_at_step(monkeypatch, 14, lambda: fit_seeded(cfg, tiny_splits, tmp_path / "r"))
    torch.manual_seed(99)  # the resume must not depend on the global generator
    resumed = fit_seeded(cfg, tiny_splits, tmp_path / "r", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ta, _ = ckpt._read_safetensors(tmp_path / "full" / ckpt.CHECKPOINT)
    tb, _ = ckpt._read_safetensors(tmp_path / "r" / ckpt.CHECKPOINT)
    aux = [k for k in ta if k.startswith("aux.")]
    assert aux and all(torch.equal(ta[k], tb[k]) for k in aux)  # discriminator and its Adam moments
    strip = lambda rows: [{k: v for k, v in r.items() if k not in STRIP} for r in rows]  # noqa: E731
    assert strip(full.metrics) == strip(resumed.metrics)


def test_a_checkpoint_without_the_discriminator_is_refused(tiny_cfg, tiny_splits, tmp_path):
    fit_seeded(with_train(tiny_cfg, epochs=1), tiny_splits, tmp_path)
    cfg = with_train(tiny_cfg, objective="factor", epochs=2)
    disc = FactorDiscriminator(4)
    model = VAE(cfg.model)
    with pytest.raises(ckpt.CheckpointError, match="holds no FactorDiscriminator"):
        ckpt.load_checkpoint(
            tmp_path, model, torch.optim.Adam(model.parameters()), (disc, torch.optim.Adam(disc.parameters()))
        )


def test_discriminator_loss_and_permutation():
    torch.manual_seed(0)
    z = torch.randn(6, 3)
    u = torch.rand(6, 3)
    p = permute_dims(z, u)
    for d in range(3):  # each column is a permutation of itself, by the argsort of its uniforms
        assert torch.equal(p[:, d], z[torch.argsort(u[:, d]), d])
    disc = FactorDiscriminator(3, hidden=8, layers=2)
    for m in disc.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
    # a discriminator that cannot tell: each cross-entropy is log 2
    torch.testing.assert_close(discriminator_loss(disc, z, u), torch.full((6,), 0.6931472), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "train, match",
    [
        ({"objective": "factor", "beta": 4.0}, "factor_gamma, not beta"),
        ({"objective": "dip-i", "k": 2}, "use k 1"),
        ({"objective": "capacity", "warmup_epochs": 2}, "capacity_steps"),
        ({"objective": "betatc", "estimator": "stl"}, "estimator reparam"),
        ({"objective": "factor", "disc_lr": 0.0}, "disc_lr"),
        ({"objective": "capacity", "capacity_steps": -1}, "capacity_steps"),
    ],
)
def test_impossible_settings_are_refused(train, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**train)


@pytest.mark.parametrize("model", [{"posterior": "iaf"}, {"prior": "vamp"}])
def test_models_without_one_gaussian_posterior_and_normal_prior_are_refused(tiny_cfg, tiny_splits, model):
    cfg = with_train(tiny_cfg, objective="betatc", epochs=1)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model))
    with pytest.raises(ConfigError, match="one Gaussian q\\(z\\|x\\) and the N\\(0, I\\) prior"):
        fit(build_model(cfg.model), tiny_splits, cfg, progress=False)


def test_cli_refuses_a_bad_weight_with_exit_code_2(capsys, tmp_path):
    from conftest import run_cli

    code, _, err = run_cli(
        ["train", "--preset", "tiny", "--objective", "factor", "--beta", "3", "--out", str(tmp_path / "r")], capsys
    )
    assert code == 2 and "factor_gamma, not beta" in err
    assert not (tmp_path / "r").exists()


def test_dsprites_preset_is_the_disentanglement_lib_architecture():
    cfg = load_preset("dsprites")
    assert cfg.data.dataset == "shapes2d" and cfg.model.likelihood == "bernoulli"
    assert (cfg.train.batch_size, cfg.train.lr) == (64, 1e-4)
    model = VAE(dataclasses.replace(cfg.model, input_shape=(1, 64, 64)))
    convs = [
        (m.in_channels, m.out_channels, m.kernel_size, m.stride)
        for m in model.encoder.modules()
        if isinstance(m, nn.Conv2d)
    ]
    assert convs == [
        (1, 32, (4, 4), (2, 2)),
        (32, 32, (4, 4), (2, 2)),
        (32, 64, (4, 4), (2, 2)),
        (64, 64, (4, 4), (2, 2)),
    ]
    dense = [(m.in_features, m.out_features) for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    assert dense == [(64 * 4 * 4, 256), (256, 2 * 10)]
    dec = [(m.in_features, m.out_features) for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    assert dec == [(10, 256), (256, 64 * 4 * 4)]
    deconvs = [(m.in_channels, m.out_channels) for m in model.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert deconvs == [(64, 64), (64, 32), (32, 32), (32, 1)]
    x = torch.rand(2, 1, 64, 64)
    assert model(x).params.shape == (1, 2, 1, 1, 64, 64)


def test_training_objective_reports_no_terms_for_the_bounds():
    m = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=3))
    d = m(torch.rand(5, 1, 4, 4), None, torch.randn(1, 5, 3))
    assert training_objective(d, TrainConfig()).terms == {}
    out = training_objective(d, TrainConfig(objective="betatc", beta=2.0), Step(dataset_size=100))
    assert set(out.terms) == set(OBJECTIVES["betatc"].terms)
    torch.testing.assert_close(out.surrogate, out.elbo - out.terms["tc"])

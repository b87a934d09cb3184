"""WAE-MMD and InfoVAE: the MMD estimator against closed forms and quadrature, the objectives against
their formulas, and both objectives through training, resume, eval, sample and serve."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.testing import assert_close

from conftest import crash_fit_at_step, fit_seeded, run_cli, train_tiny_run, with_train
from vaelab import maths
from vaelab.config import ModelConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.models import VAE
from vaelab.objectives.base import Step, training_objective

F64 = torch.float64


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_the_mmd_of_identical_samples_is_zero(kernel):
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert float(maths.mmd(x, x.clone(), kernel, unbiased=False)) == pytest.approx(0.0, abs=1e-12)
    y = x + 0.5
    assert float(maths.mmd(x, y, kernel, unbiased=False)) > 1e-3  # and it sees a shift


def _mean_and_se(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=F64)
    return float(t.mean()), float(t.std() / math.sqrt(len(t)))


def _repeated(kernel: str, shift: float, dims: int, reps: int = 300, n: int = 40) -> tuple[float, float]:
    g = torch.Generator().manual_seed(1)
    values = []
    for _ in range(reps):
        x = torch.randn(n, dims, generator=g, dtype=F64)
        y = torch.randn(n, dims, generator=g, dtype=F64)
        y[:, 0] += shift
        values.append(float(maths.mmd(x, y, kernel, scale=1.0)))
    return _mean_and_se(values)


def test_the_unbiased_rbf_mmd_has_the_closed_form_expectation():
    """X ~ N(0, I), Y ~ N(delta e_1, I) in D dims, k = exp(-|x - y|^2 / (2 l^2)) with l^2 = D (scale 1):
    E k(X, X') = (l^2 / (l^2 + 2))^(D/2) and E k(X, Y) = that times exp(-delta^2 / (2 (l^2 + 2))), so
    MMD^2 = 2 (l^2 / (l^2 + 2))^(D/2) (1 - exp(-delta^2 / (2 (l^2 + 2))))."""
    dims, delta = 2, 1.5
    l2 = float(dims)
    exact = 2 * (l2 / (l2 + 2)) ** (dims / 2) * (1 - math.exp(-(delta**2) / (2 * (l2 + 2))))
    mean, se = _repeated("rbf", delta, dims)
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
    null, se0 = _repeated("rbf", 0.0, dims)  # the same distribution: expectation 0
    assert abs(null) < 4 * se0


def test_the_unbiased_imq_mmd_has_the_expectation_quadrature_gives():
    """1-D: X, X' ~ N(0, 1), Y ~ N(delta, 1); X - X' ~ N(0, 2), X - Y ~ N(-delta, 2). Each E k is a
    1-D integral of sum_s sC / (sC + d^2) against a Gaussian density, C = 2 (D = 1, scale 1)."""
    delta = 1.0
    d = torch.linspace(-40, 40, 400_001, dtype=F64)

    def expected_k(mean: float) -> float:
        density = torch.exp(-((d - mean) ** 2) / 4) / math.sqrt(4 * math.pi)  # N(mean, 2)
        k = sum((s * 2.0) / (s * 2.0 + d**2) for s in maths.IMQ_SCALES)
        return float(torch.trapezoid(k * density, d))

    exact = 2 * expected_k(0.0) - 2 * expected_k(-delta)
    mean, se = _repeated("imq", delta, 1)
    assert abs(mean - exact) < 4 * se, (mean, exact, se)


def _answer():
    torch.manual_seed(0)
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=3))
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    return model(x, None, torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(3)))


def test_wae_and_infovae_are_their_formulas():
    d = _answer()
    prior = torch.randn(6, 3, generator=torch.Generator().manual_seed(4))
    penalty = maths.mmd(d.z[0], prior, "imq", 1.0)
    rec, kl = d.log_px_z[0], maths.gaussian_kl(d.loc, d.logvar)
    wae = training_objective(d, TrainConfig(objective="wae", mmd_weight=7.0), Step(noise=prior))
    assert_close(wae.surrogate, rec - 7.0 * penalty)
    assert_close(wae.terms["mmd"], penalty.expand(6))
    assert_close(wae.elbo, rec - kl)  # reported beside it, as for any Gaussian model
    info = training_objective(
        d, TrainConfig(objective="infovae", mmd_weight=5.0, info_alpha=0.25, mmd_kernel="rbf"), Step(noise=prior)
    )
    rbf = maths.mmd(d.z[0], prior, "rbf", 1.0)
    assert_close(info.surrogate, rec - 0.75 * kl - 4.25 * rbf)
    # alpha 0, lambda 1: the ELBO itself
    plain = training_objective(d, TrainConfig(objective="infovae", mmd_weight=1.0), Step(noise=prior))
    assert_close(plain.surrogate, rec - kl)


def test_the_mmd_objectives_refuse_what_they_do_not_take():
    with pytest.raises(ConfigError, match="weighs its penalty with mmd_weight, not beta"):
        TrainConfig(objective="wae", beta=4.0)
    with pytest.raises(ConfigError, match="one-draw ELBO with a penalty: use k 1"):
        TrainConfig(objective="infovae", k=5)
    with pytest.raises(ConfigError, match="info_alpha must lie in"):
        TrainConfig(objective="infovae", info_alpha=1.5)
    with pytest.raises(ConfigError, match="mmd_kernel must be one of imq, rbf"):
        TrainConfig(objective="wae", mmd_kernel="laplace")


@pytest.mark.parametrize("objective", ["wae", "infovae"])
def test_mmd_objectives_train_and_resume_bit_identically(tiny_cfg, tiny_splits, tmp_path, monkeypatch, objective):
    cfg = with_train(tiny_cfg, objective=objective, epochs=2, checkpoint_every=3, mmd_weight=20.0)
    full = fit_seeded(cfg, tiny_splits, tmp_path / "full")
    row = full.metrics[-1]
    assert row["train_mmd"] != 0.0 and math.isfinite(row["train_mmd"])
    if objective == "wae":
        assert row["train_objective"] == pytest.approx(row["train_log_px_z"] - 20.0 * row["train_mmd"], rel=1e-5)
    crash_fit_at_step(monkeypatch, 14, lambda: fit_seeded(cfg, tiny_splits, tmp_path / "r"))
    torch.manual_seed(99)  # the resume must not depend on the global generator
    resumed = fit_seeded(cfg, tiny_splits, tmp_path / "r", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_mmd_pulls_the_codes_towards_the_prior(tiny_cfg, tiny_splits):
    """The weight does what it is for: with a large mmd_weight the batch's codes end closer to N(0, I)
    (a smaller MMD) than with a small one, from the same start."""
    strong = fit_seeded(with_train(tiny_cfg, objective="wae", epochs=3, mmd_weight=100.0), tiny_splits)
    weak = fit_seeded(with_train(tiny_cfg, objective="wae", epochs=3, mmd_weight=0.0), tiny_splits)
    assert strong.metrics[-1]["train_mmd"] < weak.metrics[-1]["train_mmd"]


def test_a_wae_run_evaluates_samples_and_serves(tmp_path, capsys):
    run = train_tiny_run(tmp_path, objective="wae", latent_dim=2, epochs=1)
    code, out, err = run_cli(["eval", str(run), "--k", "20", "--threads", "1"], capsys)
    assert code == 0, err
    assert "ELBO " in out and "trained with objective wae, which is not a bound on log p(x)" in out
    assert json.loads((run / "eval.json").read_text())  # the NLL is there, as for any Gaussian model
    code, _, err = run_cli(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png"), "--threads", "1"], capsys)
    assert code == 0, err
    assert (tmp_path / "s.png").is_file()
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vaelab.serve.app import app_from_run

    client = TestClient(app_from_run(run), base_url="http://localhost")
    assert client.get("/api/info").status_code == 200

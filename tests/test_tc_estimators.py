"""beta-TCVAE's two total-correlation estimators (Chen et al. 2018) against their formulas written
out by hand: minibatch-weighted sampling ("mws", disentanglement_lib's and rtqichen/beta-tcvae's
default) and the stratified estimator ("mss"). On a batch that is the whole data set, mss is exact
and mws is the exact TC plus a constant; mws's gradient is disentanglement_lib's. The config's
default, its check, and old run folders (no tc_estimator key) reading as "mss", as they trained.

All in float64; tolerances are stated at each assert_close (float64 round-off, far below any
difference between the estimators)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.testing import assert_close

from vaelab import maths
from vaelab.config import RunConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.models import VAE
from vaelab.objectives.base import Step, training_objective
from vaelab.run import checkpoint as ckpt

F64 = torch.float64
TOL = {"atol": 1e-10, "rtol": 1e-10}  # float64: the loops and the vectorised code differ by round-off


def _batch(seed: int, b: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(b, d, generator=g, dtype=F64)
    logvar = 0.5 * torch.randn(b, d, generator=g, dtype=F64)
    z = loc + torch.exp(0.5 * logvar) * torch.randn(b, d, generator=g, dtype=F64)
    return z, loc, logvar


def _q(z: float, loc: float, logvar: float) -> float:
    """The density N(z; loc, exp(logvar)) of one coordinate, by the textbook formula."""
    var = math.exp(logvar)
    return math.exp(-((z - loc) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)


def _by_hand(z, loc, logvar, n: int, estimator: str) -> tuple[list[float], list[float], list[float]]:
    """(mi, tc, dwkl) per draw from the papers' formulas, with explicit loops over i, j, d:
    mws: q(z_i) ~ 1/(N B) sum_j q(z_i|x_j), q(z_id) ~ 1/(N B) sum_j q(z_id|x_j);
    mss: q(z_i) ~ 1/N q(z_i|x_i) + (N - 1)/(N (B - 1)) sum_{j != i} q(z_i|x_j), likewise per d."""
    b, dims = z.shape
    z, loc, logvar = z.tolist(), loc.tolist(), logvar.tolist()

    def weight(i: int, j: int) -> float:
        if estimator == "mws":
            return 1.0 / (n * b)
        return 1.0 / n if i == j else (n - 1) / (n * (b - 1))

    mi, tc, dwkl = [], [], []
    for i in range(b):
        q_own = 1.0
        for d in range(dims):
            q_own *= _q(z[i][d], loc[i][d], logvar[i][d])
        qz = 0.0
        for j in range(b):
            q_ij = 1.0
            for d in range(dims):
                q_ij *= _q(z[i][d], loc[j][d], logvar[j][d])
            qz += weight(i, j) * q_ij
        log_prod_qzd = 0.0
        log_pz = 0.0
        for d in range(dims):
            qzd = 0.0
            for j in range(b):
                qzd += weight(i, j) * _q(z[i][d], loc[j][d], logvar[j][d])
            log_prod_qzd += math.log(qzd)
            log_pz += math.log(_q(z[i][d], 0.0, 0.0))
        mi.append(math.log(q_own) - math.log(qz))
        tc.append(math.log(qz) - log_prod_qzd)
        dwkl.append(log_prod_qzd - log_pz)
    return mi, tc, dwkl


@pytest.mark.parametrize("estimator", ["mws", "mss"])
@pytest.mark.parametrize("n", [7, 1000])
def test_each_estimator_matches_its_formula_computed_by_hand(estimator, n):
    z, loc, logvar = _batch(0, b=7, d=3)
    got = maths.beta_tc_terms(z, loc, logvar, dataset_size=n, estimator=estimator)
    want = _by_hand(z, loc, logvar, n, estimator)
    for g, w in zip(got, want):
        assert_close(g, torch.tensor(w, dtype=F64), **TOL)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_the_three_terms_add_up_to_the_one_draw_kl_for_either_estimator(estimator):
    z, loc, logvar = _batch(1, b=16, d=5)
    mi, tc, dwkl = maths.beta_tc_terms(z, loc, logvar, dataset_size=60_000, estimator=estimator)
    log_q = torch.distributions.Normal(loc, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
    assert_close(mi + tc + dwkl, log_q - maths.std_normal_log_prob(z), **TOL)


def _exact_on_the_data_set(z, loc, logvar) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact log q(z_i) = log(1/N sum_n q(z_i|x_n)) and sum_d log q(z_id) when the N images are
    the batch's, from torch.distributions (independent of objectives.py)."""
    n = z.shape[0]
    per_d = torch.distributions.Normal(loc[None], torch.exp(0.5 * logvar[None])).log_prob(z[:, None])  # (N, N, D)
    log_qz = torch.logsumexp(per_d.sum(2), 1) - math.log(n)
    log_prod_qzd = (torch.logsumexp(per_d, 1) - math.log(n)).sum(1)
    return log_qz, log_prod_qzd


def test_on_the_whole_data_set_mss_is_exact_and_mws_is_exact_plus_a_constant():
    """With the batch the whole data set (B = N): mss's weights are all 1/N, so its log q(z), its
    marginals, hence mi, tc and dwkl are exact. mws divides each sum by N B = N^2 instead of N, so
    log q(z) and each of the D log q(z_d) are low by log N: mi is the exact MI + log N, tc the exact
    TC + (D - 1) log N, dwkl the exact dimension-wise KL - D log N."""
    n, dims = 9, 4
    z, loc, logvar = _batch(2, b=n, d=dims)
    log_qz, log_prod_qzd = _exact_on_the_data_set(z, loc, logvar)
    log_qz_x = torch.distributions.Normal(loc, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
    log_pz = maths.std_normal_log_prob(z)
    exact = (log_qz_x - log_qz, log_qz - log_prod_qzd, log_prod_qzd - log_pz)

    mss = maths.beta_tc_terms(z, loc, logvar, dataset_size=n, estimator="mss")
    for got, want in zip(mss, exact):
        assert_close(got, want, **TOL)

    mi, tc, dwkl = maths.beta_tc_terms(z, loc, logvar, dataset_size=n, estimator="mws")
    assert_close(mi, exact[0] + math.log(n), **TOL)
    assert_close(tc, exact[1] + (dims - 1) * math.log(n), **TOL)
    assert_close(dwkl, exact[2] - dims * math.log(n), **TOL)


def test_mss_is_zero_and_mws_is_its_constant_when_every_posterior_is_the_same():
    g = torch.Generator().manual_seed(3)
    b, dims, n = 8, 4, 1000
    loc = torch.randn(1, dims, generator=g, dtype=F64).expand(b, dims)
    logvar = torch.full((b, dims), -0.5, dtype=F64)
    z = loc + torch.exp(0.5 * logvar) * torch.randn(b, dims, generator=g, dtype=F64)
    mi, tc, _ = maths.beta_tc_terms(z, loc, logvar, dataset_size=n, estimator="mss")
    assert_close(mi, torch.zeros(b, dtype=F64), atol=1e-12, rtol=0)
    assert_close(tc, torch.zeros(b, dtype=F64), atol=1e-12, rtol=0)
    mi, tc, _ = maths.beta_tc_terms(z, loc, logvar, dataset_size=n, estimator="mws")
    assert_close(mi, torch.full((b,), math.log(n), dtype=F64), atol=1e-12, rtol=0)
    assert_close(tc, torch.full((b,), (dims - 1) * math.log(n), dtype=F64), atol=1e-12, rtol=0)


def _dlib_gaussian_log_density(samples, mean, log_var):
    """disentanglement_lib's methods/unsupervised/vae.py gaussian_log_density, in torch."""
    normalization = math.log(2.0 * math.pi)
    inv_sigma = torch.exp(-log_var)
    tmp = samples - mean
    return -0.5 * (tmp * tmp * inv_sigma + log_var + normalization)


def _dlib_total_correlation(z, z_mean, z_logvar):
    """disentanglement_lib's total_correlation (vae.py), in torch: no -log(N B) constants."""
    log_qz_prob = _dlib_gaussian_log_density(z[:, None], z_mean[None], z_logvar[None])  # [j, i, l]
    log_qz_product = torch.logsumexp(log_qz_prob, 1).sum(1)
    log_qz = torch.logsumexp(log_qz_prob.sum(2), 1)
    return (log_qz - log_qz_product).mean()


def test_mws_has_disentanglement_libs_gradient_and_its_value_up_to_the_constants():
    b, dims, n = 32, 6, 737_280  # dSprites' size
    z, loc, logvar = (t.requires_grad_() for t in _batch(4, b=b, d=dims))
    _, tc, _ = maths.beta_tc_terms(z, loc, logvar, dataset_size=n, estimator="mws")
    ours = torch.autograd.grad(tc.mean(), (z, loc, logvar))
    dlib_tc = _dlib_total_correlation(z, loc, logvar)
    theirs = torch.autograd.grad(dlib_tc, (z, loc, logvar))
    for g_ours, g_theirs in zip(ours, theirs):
        assert_close(g_ours, g_theirs, **TOL)
    # the values differ by the dropped constants: ours = theirs + (D - 1) log(N B)
    assert_close(tc.mean().detach(), dlib_tc.detach() + (dims - 1) * math.log(n * b), **TOL)
    # and mss's gradient is another one (the reason the choice matters for a tuned beta)
    _, tc_mss, _ = maths.beta_tc_terms(z, loc, logvar, dataset_size=n, estimator="mss")
    g_mss = torch.autograd.grad(tc_mss.mean(), loc)[0]
    cos = torch.nn.functional.cosine_similarity(g_mss.flatten(), ours[1].flatten(), 0)
    assert float(cos) < 0.99


def test_an_unknown_estimator_is_refused():
    z, loc, logvar = _batch(5, b=4, d=2)
    with pytest.raises(ValueError, match="'mwss'"):
        maths.beta_tc_terms(z, loc, logvar, dataset_size=10, estimator="mwss")


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_the_objective_uses_the_estimator_it_is_given(estimator):
    from vaelab.config import ModelConfig

    torch.manual_seed(6)
    m = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=3))
    d = m(torch.rand(5, 1, 4, 4), None, torch.randn(1, 5, 3))
    out = training_objective(
        d, TrainConfig(objective="betatc", beta=3.0, tc_estimator=estimator), Step(dataset_size=100)
    )
    value, elbo, terms = out.surrogate, out.elbo, out.terms
    _, tc, _ = maths.beta_tc_terms(d.z[0], d.loc, d.logvar, 100, estimator)
    assert_close(terms["tc"], tc, rtol=0, atol=0)
    assert_close(value, elbo - 2.0 * tc, rtol=1e-6, atol=1e-6)  # float32 model


def test_fit_passes_the_configured_estimator(tiny_cfg, tiny_splits, monkeypatch):
    import dataclasses

    from vaelab.training import fit

    seen = []
    real = maths.beta_tc_terms

    def spy(z, loc, logvar, dataset_size, estimator="mws"):
        seen.append(estimator)
        return real(z, loc, logvar, dataset_size, estimator)

    import vaelab.objectives.disentangling

    monkeypatch.setattr(vaelab.objectives.disentangling, "beta_tc_terms", spy)
    cfg = dataclasses.replace(
        tiny_cfg, train=dataclasses.replace(tiny_cfg.train, objective="betatc", tc_estimator="mss", epochs=1)
    )
    torch.manual_seed(0)
    fit(VAE(cfg.model), tiny_splits, cfg, None, progress=False)
    assert seen and set(seen) == {"mss"}


def test_config_default_is_mws_and_a_bad_value_is_refused():
    assert TrainConfig().tc_estimator == "mws"
    assert TrainConfig(objective="betatc", tc_estimator="mss").tc_estimator == "mss"
    with pytest.raises(ConfigError, match="tc_estimator must be one of mws, mss; got 'mwss'"):
        TrainConfig(tc_estimator="mwss")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tc_estimator"):
        RunConfig().override({"train.tc_estimator": "exact"})


def test_a_run_written_before_tc_estimator_reads_as_mss(tmp_path):
    cfg = RunConfig().override({"train.objective": "betatc", "train.beta": 6.0})
    ckpt.write_config(tmp_path, cfg)
    assert ckpt.read_config(tmp_path).train.tc_estimator == "mws"  # a new run keeps what it wrote
    doc = json.loads((tmp_path / ckpt.CONFIG).read_text())
    del doc["train"]["tc_estimator"]  # as written before the key existed
    (tmp_path / ckpt.CONFIG).write_text(json.dumps(doc))
    old = ckpt.read_config(tmp_path)
    assert old.train.tc_estimator == "mss"
    assert old.train.objective == "betatc" and old.train.beta == 6.0

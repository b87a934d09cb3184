"""The maths of the disentangling objectives against exact answers: the beta-TCVAE decomposition
adds up to the one-draw KL, its total correlation vanishes when the aggregate posterior factorises,
and its estimate of log q(z) matches the exact aggregate posterior of a small data set; the
DIP-VAE covariances and penalty; the capacity schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from vaelab import maths

F64 = torch.float64


def test_pairwise_density_matches_normal_log_prob():
    g = torch.Generator().manual_seed(0)
    z, loc, logvar = (torch.randn(4, 3, generator=g, dtype=F64) for _ in range(3))
    m = maths.pairwise_gaussian_log_density(z, loc, logvar)
    want = torch.distributions.Normal(loc[None], torch.exp(0.5 * logvar[None])).log_prob(z[:, None])
    assert_close(m, want)


def test_the_three_terms_add_up_to_the_one_draw_kl():
    g = torch.Generator().manual_seed(1)
    loc, logvar = torch.randn(16, 5, generator=g, dtype=F64), 0.3 * torch.randn(16, 5, generator=g, dtype=F64)
    z = loc + torch.exp(0.5 * logvar) * torch.randn(16, 5, generator=g, dtype=F64)
    mi, tc, dwkl = maths.beta_tc_terms(z, loc, logvar, dataset_size=60_000)
    log_q = torch.distributions.Normal(loc, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
    assert_close(mi + tc + dwkl, log_q - maths.std_normal_log_prob(z))


def test_total_correlation_is_zero_and_mi_is_zero_when_every_posterior_is_the_same():
    # q(z|x) = N(m, s^2 I) for every x: q(z) = q(z|x), which factorises; so MI = TC = 0 exactly,
    # and dwkl is the whole KL. The stratified (mss) weights make this exact for any N (mws, the
    # default, is biased here: test_tc_estimators.py).
    g = torch.Generator().manual_seed(2)
    loc = torch.randn(1, 4, generator=g, dtype=F64).expand(8, 4)
    logvar = torch.full((8, 4), -0.5, dtype=F64)
    z = loc + torch.exp(0.5 * logvar) * torch.randn(8, 4, generator=g, dtype=F64)
    for n in (8, 1000, 60_000):
        mi, tc, dwkl = maths.beta_tc_terms(z, loc, logvar, dataset_size=n, estimator="mss")
        assert_close(mi, torch.zeros(8, dtype=F64), atol=1e-12, rtol=0)
        assert_close(tc, torch.zeros(8, dtype=F64), atol=1e-12, rtol=0)


def test_log_q_z_is_exact_for_the_whole_data_set_as_the_batch():
    # N = B: the batch is the data set; the stratified (mss) weights are 1/N for the draw's own image and
    # (N - 1) / (N (N - 1)) = 1/N for the others: exactly the aggregate posterior 1/N sum_n q(z|x_n).
    g = torch.Generator().manual_seed(3)
    loc, logvar = torch.randn(6, 2, generator=g, dtype=F64), 0.2 * torch.randn(6, 2, generator=g, dtype=F64)
    z = torch.randn(6, 2, generator=g, dtype=F64)
    mi, _, _ = maths.beta_tc_terms(z, loc, logvar, dataset_size=6, estimator="mss")
    dens = torch.distributions.Normal(loc[None], torch.exp(0.5 * logvar[None])).log_prob(z[:, None]).sum(2)  # (6, 6)
    log_qz = torch.logsumexp(dens, 1) - math.log(6)
    assert_close(mi, dens.diagonal() - log_qz)


def test_total_correlation_is_positive_for_correlated_codes():
    g = torch.Generator().manual_seed(4)
    t = torch.randn(256, 1, generator=g, dtype=F64)
    loc = torch.cat([t, t + 0.05 * torch.randn(256, 1, generator=g, dtype=F64)], 1)  # z1 = z2
    logvar = torch.full((256, 2), math.log(0.01), dtype=F64)
    z = loc + 0.1 * torch.randn(256, 2, generator=g, dtype=F64)
    _, tc, _ = maths.beta_tc_terms(z, loc, logvar, dataset_size=256, estimator="mss")
    assert float(tc.mean()) > 1.0


def test_dip_covariances_and_penalty():
    loc = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]], dtype=F64)
    logvar = torch.log(torch.tensor([[0.5, 1.0]], dtype=F64)).expand(4, 2)
    cov_i = maths.dip_covariance(loc, logvar, "i")
    assert_close(cov_i, torch.tensor([[0.5, 0.0], [0.0, 2.0]], dtype=F64))
    cov_ii = maths.dip_covariance(loc, logvar, "ii")
    assert_close(cov_ii, torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=F64))
    # penalty: off-diagonal 0; diagonal (0.5 - 1)^2 + (2 - 1)^2 = 1.25
    assert float(maths.dip_penalty(cov_i, 10.0, 100.0)) == pytest.approx(125.0)
    c = torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=F64)
    assert float(maths.dip_penalty(c, 10.0, 100.0)) == pytest.approx(10.0 * 2 * 0.09)
    with pytest.raises(ValueError, match="i or ii"):
        maths.dip_covariance(loc, logvar, "iii")


def test_capacity_schedule_and_objective():
    assert maths.capacity_at(0, 25.0, 1000) == 0.0
    assert maths.capacity_at(500, 25.0, 1000) == pytest.approx(12.5)
    assert maths.capacity_at(5000, 25.0, 1000) == 25.0
    assert maths.capacity_at(3, 25.0, 0) == 25.0
    # |mean KL - C| over the batch (disentanglement_lib): mean KL 25, C 20
    rec, kl = torch.tensor([-100.0, -90.0]), torch.tensor([10.0, 40.0])
    assert_close(maths.capacity_objective(rec, kl, 1000.0, 20.0), torch.tensor([-100.0 - 5_000.0, -90.0 - 5_000.0]))

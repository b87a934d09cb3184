"""The maths against closed forms, Monte Carlo and exact integrals."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from vaelab import maths
from vaelab.config import ModelConfig
from vaelab.models import VAE


@pytest.mark.parametrize("dim", [1, 2, 20])
def test_gaussian_kl_matches_monte_carlo(dim):
    g = torch.Generator().manual_seed(1)
    loc = torch.randn(4, dim, generator=g, dtype=torch.float64)
    logvar = torch.randn(4, dim, generator=g, dtype=torch.float64) * 0.5
    z = loc + torch.exp(0.5 * logvar) * torch.randn(400_000, 4, dim, generator=g, dtype=torch.float64)
    mc = (maths.gaussian_log_prob(z, loc, logvar) - maths.std_normal_log_prob(z)).mean(0)
    kl = maths.gaussian_kl(loc, logvar)
    # the MC standard error is about sqrt(Var/N); 5e-3 * dim is several standard errors
    assert_close(kl, mc, atol=5e-3 * dim, rtol=0)


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert_close(maths.gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))
    assert (maths.gaussian_kl(torch.full((1, 2), 0.3), torch.zeros(1, 2)) > 0).all()
    # closed form for one dimension: 0.5 * (s^2 + m^2 - 1 - log s^2)
    m, s2 = 1.5, 0.25
    assert_close(
        maths.gaussian_kl(torch.tensor([[m]]), torch.tensor([[math.log(s2)]])),
        torch.tensor([0.5 * (s2 + m * m - 1 - math.log(s2))]),
    )


def test_gaussian_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    z, loc, logvar = (torch.randn(7, 3, generator=g) for _ in range(3))
    ref = torch.distributions.Independent(torch.distributions.Normal(loc, torch.exp(0.5 * logvar)), 1).log_prob(z)
    assert_close(maths.gaussian_log_prob(z, loc, logvar), ref)
    assert_close(maths.std_normal_log_prob(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_bernoulli_log_prob_is_minus_bce_and_stable_for_extreme_logits():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 1, 4, 4, generator=g)
    logits = torch.randn(5, 1, 4, 4, generator=g) * 3
    p = torch.sigmoid(logits)
    ref = (x * torch.log(p) + (1 - x) * torch.log1p(-p)).flatten(1).sum(1)
    assert_close(maths.bernoulli_log_prob(x, logits), ref, rtol=1e-5, atol=1e-4)
    big = torch.full((1, 1, 2, 2), 200.0)
    # x = 1 with logit +200: log p = -softplus(-200) ~ -1e-87, finite; x = 0: -200 per pixel exactly
    assert torch.isfinite(maths.bernoulli_log_prob(torch.ones_like(big), big)).all()
    assert_close(maths.bernoulli_log_prob(torch.zeros_like(big), big), torch.tensor([-800.0]))


def test_bernoulli_log_prob_broadcasts_over_samples():
    x = torch.rand(3, 1, 2, 2)
    logits = torch.randn(5, 3, 1, 2, 2)
    out = maths.bernoulli_log_prob(x, logits)
    assert out.shape == (5, 3)
    assert_close(out[2], maths.bernoulli_log_prob(x, logits[2]))


def test_continuous_bernoulli_density_integrates_to_one():
    # integrate exp(log p(x)) over x in [0, 1] for one pixel, several logits, by the trapezoid rule
    xs = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for lam in [-30.0, -4.0, -0.5, -1e-3, 0.0, 2e-3, 0.7, 5.0, 25.0]:
        logits = torch.full((len(xs), 1, 1, 1), lam, dtype=torch.float64)
        dens = maths.continuous_bernoulli_log_prob(xs.view(-1, 1, 1, 1), logits).exp()
        assert abs(torch.trapezoid(dens, xs).item() - 1.0) < 1e-4, lam
    # against torch.distributions (its normaliser away from 1/2)
    lg = torch.tensor([-3.0, 0.8, 4.0])
    x = torch.tensor([0.2, 0.5, 0.9])
    ref = torch.distributions.ContinuousBernoulli(logits=lg).log_prob(x)
    assert_close(
        maths.continuous_bernoulli_log_prob(x.view(3, 1, 1, 1), lg.view(3, 1, 1, 1)), ref, rtol=1e-5, atol=1e-5
    )
    assert_close(maths.continuous_bernoulli_mean(lg), torch.distributions.ContinuousBernoulli(logits=lg).mean)


def test_iwae_bound_of_equal_weights_and_k1():
    lw = torch.tensor([[-3.0, -1.0]]).repeat(10, 1)
    assert_close(maths.iwae_bound(lw), torch.tensor([-3.0, -1.0]))
    one = torch.tensor([[-5.0, 2.0]])
    assert_close(maths.iwae_bound(one), one[0])
    # log-mean-exp of 0 and log 3 is log 2
    assert_close(maths.iwae_bound(torch.tensor([[0.0], [math.log(3.0)]])), torch.tensor([math.log(2.0)]))


def test_bits_per_dim():
    assert maths.bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0)


def _exact_log_px_1d(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log integral p(x|z) N(z; 0, 1) dz for a 1-D latent, by the trapezoid rule on [-10, 10]."""
    zs = torch.linspace(-10, 10, 8001, dtype=torch.float64)
    with torch.no_grad():
        logits = model.decode_params(zs[:, None, None].expand(-1, len(x), 1))  # (Z, B, P, C, H, W)
        log_px_z = model.log_px_z(x, logits).double()  # (Z, B)
    log_joint = log_px_z + (-0.5 * (math.log(2 * math.pi) + zs**2))[:, None]
    dz = zs[1] - zs[0]
    w = torch.full_like(zs, dz.item())
    w[0] = w[-1] = dz.item() / 2
    return torch.logsumexp(log_joint + torch.log(w)[:, None], 0)


def test_elbo_is_below_exact_log_likelihood_and_iwae_approaches_it():
    torch.manual_seed(0)
    model = VAE(ModelConfig(input_shape=(1, 3, 3), hidden=(8,), latent_dim=1)).double().eval()
    x = (torch.rand(6, 1, 3, 3) > 0.5).double()
    exact = _exact_log_px_1d(model, x)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbos = torch.stack([model.elbo(x, generator=g).elbo for _ in range(4000)]).mean(0)
    assert (elbos < exact).all()
    from vaelab.evaluation.estimates import log_likelihood_batch

    with torch.no_grad():
        iw = log_likelihood_batch(model, x, k=20000, chunk=5000, generator=g)
    assert_close(iw, exact, atol=0.02, rtol=0)
    assert (iw >= elbos - 1e-6).all()

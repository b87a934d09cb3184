"""Pixel likelihoods p(x|z): each is a probability (Bernoulli, of binary pixels) or a density
(continuous Bernoulli and Gaussians, of grey pixels), checked by summing or integrating it."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from vaelab import maths
from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.models import MIN_PIXEL_LOGVAR, make_likelihood
from vaelab.models.likelihoods import continuous_bernoulli_icdf

# Both sides of the switches to series expansions (|l| = 1e-2 in log_norm, 1e-3 in mean) included.
LOGITS = [
    -80.0,
    -30.0,
    -5.0,
    -0.7,
    -1.5e-2,
    -1.001e-2,
    -0.999e-2,
    -1.001e-3,
    -0.999e-3,
    -1e-6,
    0.0,
    1e-6,
    0.999e-3,
    1.001e-3,
    0.999e-2,
    1.001e-2,
    1.5e-2,
    0.7,
    5.0,
    30.0,
    80.0,
]


def _simpson(f: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Composite Simpson rule over the last dim (an odd number of equally spaced points)."""
    n = f.shape[-1] - 1
    assert n % 2 == 0
    w = torch.ones(n + 1, dtype=f.dtype)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return (f * w).sum(-1) * (b - a) / (3 * n)


def _params(value: torch.Tensor, num_params: int) -> torch.Tensor:
    """Decoder output (N, P, 1, 1, 1) holding `value` (N,) as every parameter."""
    return value.view(-1, 1, 1, 1, 1).expand(-1, num_params, 1, 1, 1)


def test_bernoulli_sums_to_one_over_all_binary_images():
    lik = make_likelihood(ModelConfig(input_shape=(1, 2, 2), likelihood="bernoulli"))
    g = torch.Generator().manual_seed(0)
    params = torch.randn(3, 1, 1, 2, 2, generator=g, dtype=torch.float64) * 4  # (B, P, C, H, W)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64).view(16, 1, 1, 2, 2)
    with torch.no_grad():
        log_p = torch.stack([lik.log_prob(img.expand(3, 1, 2, 2), params) for img in images])  # (16, B)
    assert_close(torch.logsumexp(log_p, 0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert lik.density_of_binary and not lik.density_of_grey


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_continuous_bernoulli_normaliser_matches_numerical_integration(dtype):
    # C(lambda) = 1 / integral_0^1 lambda^x (1 - lambda)^(1 - x) dx; in logits the integrand is
    # exp(x lg - softplus(lg)). Simpson's rule with 4001 points is exact to ~1e-12 for these logits.
    lg = torch.tensor(LOGITS, dtype=torch.float64)
    xs = torch.linspace(0, 1, 4001, dtype=torch.float64)
    integral = _simpson(torch.exp(xs * lg[:, None] - F.softplus(lg)[:, None]), 0.0, 1.0)
    want = -torch.log(integral)
    got = maths.continuous_bernoulli_log_norm(lg.to(dtype)).double()
    tol = 1e-9 if dtype == torch.float64 else 2e-6
    assert_close(got, want, atol=tol, rtol=tol)
    assert_close(
        maths.continuous_bernoulli_log_norm(torch.zeros(1, dtype=dtype)), torch.full((1,), math.log(2.0), dtype=dtype)
    )


def test_continuous_bernoulli_density_integrates_to_one_and_mean_matches():
    lik = make_likelihood(ModelConfig(input_shape=(1, 1, 1), likelihood="continuous-bernoulli"))
    lg = torch.tensor(LOGITS, dtype=torch.float64)
    xs = torch.linspace(0, 1, 4001, dtype=torch.float64)
    params = _params(lg, 1)
    with torch.no_grad():
        dens = torch.stack([lik.log_prob(x.expand(len(lg), 1, 1, 1), params) for x in xs], -1).exp()  # (L, X)
    assert_close(_simpson(dens, 0.0, 1.0), torch.ones(len(lg), dtype=torch.float64), atol=1e-9, rtol=0)
    mean = _simpson(dens * xs, 0.0, 1.0)
    assert_close(lik.mean(params).flatten().double(), mean, atol=1e-9, rtol=0)
    assert lik.density_of_grey and not lik.density_of_binary


@pytest.mark.parametrize("name", ["gaussian", "gaussian-fixed"])
def test_gaussian_pixel_densities_integrate_to_one(name):
    cfg = ModelConfig(input_shape=(1, 1, 1), likelihood=name, fixed_scale=0.1)
    lik = make_likelihood(cfg)
    raw = torch.tensor([-2.0, 0.0, 1.5], dtype=torch.float64)
    params = _params(raw, lik.num_params)  # gaussian: loc param and logvar both = raw (clamped)
    xs = torch.linspace(-20, 20, 80001, dtype=torch.float64)  # +-9 sd for the widest (e^(1.5/2))
    with torch.no_grad():
        dens = torch.stack([lik.log_prob(x.expand(3, 1, 1, 1), params) for x in xs], -1).exp()
    assert_close(_simpson(dens, -20.0, 20.0), torch.ones(3, dtype=torch.float64), atol=1e-8, rtol=0)
    assert_close(lik.mean(params).flatten(), torch.sigmoid(raw))
    assert lik.density_of_grey and not lik.density_of_binary


def test_gaussian_fixed_uses_the_configured_scale_and_learned_variance_has_a_floor():
    fixed = make_likelihood(ModelConfig(input_shape=(1, 1, 1), likelihood="gaussian-fixed", fixed_scale=0.2))
    x = torch.full((1, 1, 1, 1), 0.3)
    p = torch.zeros(1, 1, 1, 1, 1)  # loc = sigmoid(0) = 0.5
    want = torch.distributions.Normal(0.5, 0.2).log_prob(torch.tensor(0.3))
    assert_close(fixed.log_prob(x, p), want.view(1))
    learned = make_likelihood(ModelConfig(input_shape=(1, 1, 1), likelihood="gaussian"))
    p2 = torch.tensor([0.0, -50.0]).view(1, 2, 1, 1, 1)  # logvar -50 is clamped to the floor
    sd = math.exp(MIN_PIXEL_LOGVAR / 2)
    assert_close(
        learned.log_prob(torch.full((1, 1, 1, 1), 0.5), p2),
        torch.distributions.Normal(0.5, sd).log_prob(torch.tensor(0.5)).view(1),
    )


def test_bernoulli_evaluation_path_equals_the_training_path():
    """Under no_grad bernoulli_log_prob takes a faster route (dot product + softplus); same numbers."""
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(6, 1, 5, 5, generator=g) < 0.3).double()
    logits = torch.randn(7, 6, 1, 5, 5, generator=g, dtype=torch.float64) * 8
    logits[0, 0, 0, 0, 0] = 300.0  # extreme logits stay finite and exact
    logits[0, 0, 0, 0, 1] = -300.0
    ref = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)
    with torch.no_grad():
        fast = maths.bernoulli_log_prob(x, logits)
        fast32 = maths.bernoulli_log_prob(x.float(), logits.float())
    assert_close(fast, ref, atol=1e-8, rtol=0)  # softplus(l) = l above l = 20: off by e^-20 per pixel
    assert_close(fast32.double(), ref, atol=2e-4, rtol=0)  # float32, ~200 nats per image
    with_grad = maths.bernoulli_log_prob(x, logits.clone().requires_grad_(True))
    assert_close(with_grad.detach(), ref)
    grey = torch.rand(6, 1, 5, 5, generator=g, dtype=torch.float64)  # grey targets: same cross-entropy
    with torch.no_grad():
        assert_close(
            maths.bernoulli_log_prob(grey, logits),
            -F.binary_cross_entropy_with_logits(logits, grey.expand_as(logits), reduction="none").flatten(-3).sum(-1),
            atol=1e-8,
            rtol=0,
        )


@pytest.mark.parametrize("name", ["bernoulli", "continuous-bernoulli", "gaussian", "gaussian-fixed"])
def test_log_prob_shapes_with_sample_dimensions(name):
    lik = make_likelihood(ModelConfig(input_shape=(1, 3, 4), likelihood=name))
    x = torch.rand(5, 1, 3, 4)
    params = torch.randn(2, 7, 5, lik.num_params, 1, 3, 4)  # (K1, K2, B, P, C, H, W)
    out = lik.log_prob(x, params)
    assert out.shape == (2, 7, 5)
    assert_close(out[1, 3], lik.log_prob(x, params[1, 3]))
    assert lik.mean(params).shape == (2, 7, 5, 1, 3, 4)


# -- draws x ~ p(x|z) ------------------------------------------------------------------------------

ALL = ["bernoulli", "bernoulli-ar", "continuous-bernoulli", "gaussian", "gaussian-fixed", "logistic-mixture"]


@pytest.mark.parametrize("name", ALL)
def test_every_likelihood_draws_seeded_with_sample_dimensions(name):
    shape = (3, 2, 3) if name == "logistic-mixture" else (1, 3, 4)
    lik = make_likelihood(ModelConfig(input_shape=shape, likelihood=name, mixture_components=2))
    params = torch.randn(2, 5, lik.num_params, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = lik.draw(params, torch.Generator().manual_seed(1))
        b = lik.pixels(params, "draw", torch.Generator().manual_seed(1))
        c = lik.draw(params, torch.Generator().manual_seed(2))
        assert torch.equal(lik.pixels(params), lik.mean(params))  # the default is the mean, as before
    assert a.shape == (2, 5, *shape) and a.dtype == params.dtype and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    if lik.density_of_binary and not lik.eight_bit:
        assert set(a.unique().tolist()) <= {0.0, 1.0}
    if lik.eight_bit:
        assert_close(a * 255, (a * 255).round(), atol=1e-4, rtol=0)
        assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert lik.describe("draw") == "draws x ~ p(x|z)"
    assert lik.describe("mean") == ("mean-field pass" if name == "bernoulli-ar" else "pixel means") + " of p(x|z)"
    with pytest.raises(ConfigError, match="pixel mode 'median'"):
        lik.pixels(params, "median")  # type: ignore[arg-type]


def test_bernoulli_draws_are_binary_with_mean_sigmoid_logits():
    lik = make_likelihood(ModelConfig(input_shape=(1, 2, 3), likelihood="bernoulli"))
    logits = torch.tensor([-4.0, -1.0, 0.0, 0.5, 2.0, 6.0], dtype=torch.float64).view(1, 1, 1, 2, 3)
    n = 50_000
    with torch.no_grad():
        x = lik.draw(logits.expand(n, 1, 1, 2, 3), torch.Generator().manual_seed(3))
    assert set(x.unique().tolist()) == {0.0, 1.0}
    p = torch.sigmoid(logits).view(1, 2, 3)
    sd = (p * (1 - p) / n).sqrt()
    assert ((x.mean(0) - p).abs() <= 4.5 * sd).all(), (x.mean(0), p)


@pytest.mark.parametrize("name", ["gaussian", "gaussian-fixed", "continuous-bernoulli"])
def test_grey_draws_follow_their_distribution(name):
    """Kolmogorov-Smirnov test of the draws of each parameter value against torch.distributions' CDF."""
    from scipy.stats import kstest

    lik = make_likelihood(ModelConfig(input_shape=(1, 1, 1), likelihood=name, fixed_scale=0.1))
    raw = torch.tensor([-5.0, -0.7, 0.0, 0.3, 5.0], dtype=torch.float64)
    n = 20_000
    params = _params(raw, lik.num_params)  # (L, P, 1, 1, 1); gaussian: logvar = raw too
    with torch.no_grad():
        x = lik.draw(params.repeat(n, 1, 1, 1, 1), torch.Generator().manual_seed(4)).view(n, len(raw))
    ref = {
        "gaussian": lambda r: torch.distributions.Normal(torch.sigmoid(r), torch.exp(r / 2)),
        "gaussian-fixed": lambda r: torch.distributions.Normal(torch.sigmoid(r), torch.tensor(0.1, dtype=r.dtype)),
        "continuous-bernoulli": lambda r: torch.distributions.ContinuousBernoulli(logits=r),
    }[name]
    for i, r in enumerate(raw):
        dist = ref(r)
        p_value = kstest(x[:, i].numpy(), lambda v, d=dist: d.cdf(torch.as_tensor(v)).numpy()).pvalue
        assert p_value > 1e-3, (name, float(r), p_value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_continuous_bernoulli_draws_stay_in_the_unit_interval_at_extreme_logits(dtype):
    lik = make_likelihood(ModelConfig(input_shape=(1, 1, 1), likelihood="continuous-bernoulli"))
    lg = torch.tensor(LOGITS, dtype=dtype)
    n = 20_000
    with torch.no_grad():
        x = lik.draw(_params(lg, 1).repeat(n, 1, 1, 1, 1), torch.Generator().manual_seed(5)).view(n, len(lg))
    assert torch.isfinite(x).all() and float(x.min()) >= 0 and float(x.max()) <= 1
    mean = maths.continuous_bernoulli_mean(lg.double())
    sd = x.double().std(0) / math.sqrt(n)  # the draws' own spread: 1/|l| at large |l|
    assert ((x.double().mean(0) - mean).abs() <= 4.5 * sd + 1e-6).all(), (x.mean(0), mean)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_continuous_bernoulli_icdf_inverts_the_cdf_even_at_the_ends(dtype):
    lg = torch.tensor(LOGITS, dtype=dtype)[:, None]  # (L, 1)
    tiny = torch.finfo(dtype).eps / 2
    u = torch.tensor([0.0, tiny, 0.1, 0.5, 0.9, 1 - tiny], dtype=dtype)  # torch.rand's range [0, 1)
    x = continuous_bernoulli_icdf(u, lg)  # (L, U)
    assert torch.isfinite(x).all() and float(x.min()) >= 0 and float(x.max()) <= 1
    assert (x.diff(dim=1) >= 0).all()  # monotone in u
    assert_close(x[:, 0], torch.zeros(len(lg), dtype=dtype), atol=1e-12, rtol=0)  # F^-1(0) = 0
    # F(F^-1(u)) = u, with F(x) = expm1(x l) / expm1(l) in float64 (exact to ~1e-15 for these l)
    l64, x64 = lg.double(), x.double()
    tol = 1e-12 if dtype == torch.float64 else 2e-5  # float32 x: 6e-8 relative, times dF/dx <= 80
    f = torch.where(l64 == 0, x64, torch.expm1(x64 * l64) / torch.expm1(torch.where(l64 == 0, 1.0, l64)))
    assert_close(f, u.double().expand_as(f), atol=tol, rtol=0)
    # and that F is torch.distributions' CDF, where its probabilities hold (0.5 <= |l| <= 5)
    moderate = (lg.abs().flatten() >= 0.5) & (lg.abs().flatten() <= 5)
    cdf = torch.distributions.ContinuousBernoulli(logits=l64[moderate]).cdf(x64[moderate])
    assert_close(cdf, f[moderate], atol=1e-12, rtol=0)


def test_logistic_mixture_draws_match_the_probability_of_every_8_bit_value():
    """One grey pixel, K = 3: the frequencies of the 256 values against exp(log_prob)."""
    from scipy.stats import chi2

    lik = make_likelihood(ModelConfig(input_shape=(1, 1, 1), likelihood="logistic-mixture", mixture_components=3))
    p = torch.zeros(1, 12, 1, 1, 1, dtype=torch.float64)
    p[0, 0:3, 0] = torch.tensor([0.5, -0.3, 0.0]).view(3, 1, 1)  # mixture logits
    p[0, 3:6, 0] = torch.tensor([-0.99, 0.1, 0.6]).view(3, 1, 1)  # means in [-1, 1]: one near black
    p[0, 6:9, 0] = torch.tensor([-3.0, -4.0, -2.5]).view(3, 1, 1)  # log-scales
    values = torch.arange(256, dtype=torch.float64).view(256, 1, 1, 1) / 255
    probs = lik.log_prob(values, p.expand(256, 12, 1, 1, 1)).exp()
    assert_close(probs.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-3, rtol=0)
    n = 100_000
    with torch.no_grad():
        x = lik.draw(p.expand(n, 12, 1, 1, 1), torch.Generator().manual_seed(6)).flatten()
    counts = torch.bincount((x * 255).round().long(), minlength=256).double()
    expected = n * probs / probs.sum()
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    stat = float(((obs - exp).square() / exp).sum())
    assert chi2.sf(stat, len(obs) - 1) > 1e-3
    assert counts[0] > 0.1 * n  # the component at -0.99 puts its left tail on the edge bin 0


def test_logistic_mixture_rgb_draws_chain_the_channels():
    """One RGB pixel, K = 2, small scales: the joint frequencies of (r, g, b) against exp(log_prob)
    on a window of 48^3 values around 127 (what falls outside is one pooled cell). Green's mean moves
    with the drawn red, blue's with red and green (PixelCNN++'s coefficients)."""
    from scipy.stats import chi2

    k = 2
    lik = make_likelihood(ModelConfig(input_shape=(3, 1, 1), likelihood="logistic-mixture", mixture_components=k))
    p = torch.zeros(1, 4 * k, 3, 1, 1, dtype=torch.float64)
    p[0, 0:2, 0] = torch.tensor([0.3, -0.2]).view(2, 1, 1)
    p[0, 2:4] = torch.tensor([[0.02, -0.03, 0.05], [-0.02, 0.03, 0.0]]).view(2, 3, 1, 1)  # means
    p[0, 4:6] = -4.5  # log-scales: s = 0.011, about 1.4 bins
    p[0, 6:8] = torch.tensor([[0.9, -0.6, 0.5], [-0.8, 0.4, 0.9]]).view(2, 3, 1, 1)  # tanh -> coefficients
    w = torch.arange(104, 152)
    grid = torch.stack(torch.meshgrid(w, w, w, indexing="ij"), -1).view(-1, 3, 1, 1).double() / 255
    probs = lik.log_prob(grid, p.expand(len(grid), 4 * k, 3, 1, 1)).exp()
    assert 1 - 1e-3 < float(probs.sum()) <= 1 + 1e-9
    n = 100_000
    with torch.no_grad():
        x = lik.draw(p.expand(n, 4 * k, 3, 1, 1), torch.Generator().manual_seed(7)).view(n, 3)
    v = (x * 255).round().long() - int(w[0])
    inside = ((v >= 0) & (v < len(w))).all(1)
    v = v[inside]
    counts = torch.bincount((v[:, 0] * len(w) + v[:, 1]) * len(w) + v[:, 2], minlength=len(grid)).double()
    expected = n * probs
    big = expected >= 5
    obs = torch.cat([counts[big], (counts[~big].sum() + (~inside).sum()).view(1)])
    exp = torch.cat([expected[big], (n - expected[big].sum()).view(1)])
    assert chi2.sf(float(((obs - exp).square() / exp).sum()), len(obs) - 1) > 1e-3
    # the test has power: the same draws with the channels shuffled across images (independent
    # channels with the right marginals) are rejected
    perm = torch.randperm(len(v), generator=torch.Generator().manual_seed(8))
    shuffled = torch.stack([v[:, 0], v[perm, 1], v[:, 2]], 1)
    counts = torch.bincount((shuffled[:, 0] * len(w) + shuffled[:, 1]) * len(w) + shuffled[:, 2], minlength=len(grid))
    obs = torch.cat([counts[big].double(), (counts[~big].sum() + (~inside).sum()).view(1).double()])
    assert chi2.sf(float(((obs - exp).square() / exp).sum()), len(obs) - 1) < 1e-6

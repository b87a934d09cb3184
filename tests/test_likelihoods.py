"""Pixel likelihoods p(x|z): each is a probability (Bernoulli, of binary pixels) or a density
(continuous Bernoulli and Gaussians, of grey pixels), checked by summing or integrating it."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from vaelab import objectives as obj
from vaelab.config import ModelConfig
from vaelab.models import MIN_PIXEL_LOGVAR, make_likelihood

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
    got = obj.continuous_bernoulli_log_norm(lg.to(dtype)).double()
    tol = 1e-9 if dtype == torch.float64 else 2e-6
    assert_close(got, want, atol=tol, rtol=tol)
    assert_close(
        obj.continuous_bernoulli_log_norm(torch.zeros(1, dtype=dtype)), torch.full((1,), math.log(2.0), dtype=dtype)
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
        fast = obj.bernoulli_log_prob(x, logits)
        fast32 = obj.bernoulli_log_prob(x.float(), logits.float())
    assert_close(fast, ref, atol=1e-8, rtol=0)  # softplus(l) = l above l = 20: off by e^-20 per pixel
    assert_close(fast32.double(), ref, atol=2e-4, rtol=0)  # float32, ~200 nats per image
    with_grad = obj.bernoulli_log_prob(x, logits.clone().requires_grad_(True))
    assert_close(with_grad.detach(), ref)
    grey = torch.rand(6, 1, 5, 5, generator=g, dtype=torch.float64)  # grey targets: same cross-entropy
    with torch.no_grad():
        assert_close(
            obj.bernoulli_log_prob(grey, logits),
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

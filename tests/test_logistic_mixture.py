"""The discretized logistic mixture (PixelCNN++) against known answers: the 256 values of a pixel
have probabilities that sum to 1, each is the difference of the logistic's CDF over its bin, and a
3-channel mixture with coupled channels is a probability over all 256^3 colours."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from vaelab import maths
from vaelab.config import ModelConfig
from vaelab.models import VAE, make_likelihood

F64 = torch.float64
VALUES = torch.arange(256, dtype=F64) / 255  # every 8-bit value, as vaelab's pixels k/255


def one_pixel(k: int, c: int, seed: int = 0, scale: float = 0.0):
    """Random parameters of a K-component mixture for one pixel with c channels, batch of one."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, k, 1, 1, generator=g, dtype=F64)
    means = 0.8 * torch.rand(1, k, c, 1, 1, generator=g, dtype=F64) * 2 - 0.8
    log_scales = torch.randn(1, k, c, 1, 1, generator=g, dtype=F64) * 0.5 - 2.5 + scale
    coeffs = torch.randn(1, k, min(c, 3), 1, 1, generator=g, dtype=F64)
    return logits, means, log_scales, coeffs


@pytest.mark.parametrize("k", [1, 3, 10])
def test_the_256_values_of_a_grey_pixel_have_probabilities_that_sum_to_one(k):
    params = one_pixel(k, 1)
    x = VALUES.view(256, 1, 1, 1)
    logp = maths.discretized_logistic_mixture_log_prob(x, *(p.expand(256, *p.shape[1:]) for p in params))
    assert logp.shape == (256,)
    assert_close(logp.exp().sum(), torch.tensor(1.0, dtype=F64), atol=1e-6, rtol=0)


def test_each_value_has_the_cdf_difference_over_its_bin():
    logits, means, log_scales, coeffs = one_pixel(1, 1)
    mu, s = float(means), math.exp(float(log_scales))
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    for v in (0, 1, 37, 128, 200, 254, 255):
        x = torch.full((1, 1, 1, 1), v / 255, dtype=F64)
        got = float(maths.discretized_logistic_mixture_log_prob(x, logits, means, log_scales, coeffs))
        xs = 2 * v / 255 - 1
        hi = 1.0 if v == 255 else sig((xs + 1 / 255 - mu) / s)
        lo = 0.0 if v == 0 else sig((xs - 1 / 255 - mu) / s)
        if hi - lo > 1e-5:  # the bins far in a tail use the density at the centre instead (checked below)
            assert got == pytest.approx(math.log(hi - lo), rel=1e-9)


def test_a_two_component_mixture_is_the_weighted_sum_of_its_components():
    logits, means, log_scales, coeffs = one_pixel(2, 1, seed=3)
    x = VALUES.view(256, 1, 1, 1)
    both = maths.discretized_logistic_mixture_log_prob(
        x, *(p.expand(256, *p.shape[1:]) for p in (logits, means, log_scales, coeffs))
    )
    w = torch.softmax(logits.flatten(), 0)
    parts = [
        maths.discretized_logistic_mixture_log_prob(
            x,
            torch.zeros(256, 1, 1, 1, dtype=F64),
            *(p[:, i : i + 1].expand(256, *p[:, i : i + 1].shape[1:]) for p in (means, log_scales, coeffs)),
        )
        for i in range(2)
    ]
    assert_close(both.exp(), w[0] * parts[0].exp() + w[1] * parts[1].exp(), rtol=1e-10, atol=0)


def test_a_coupled_colour_mixture_sums_to_one_over_all_256_cubed_colours():
    logits, means, log_scales, coeffs = one_pixel(2, 3, seed=1, scale=1.0)  # wider: fewer tail bins
    total = torch.zeros((), dtype=F64)
    r = VALUES.view(256, 1, 1)
    g = VALUES.view(1, 256, 1)
    for b0 in range(0, 256, 32):
        b = VALUES[b0 : b0 + 32].view(1, 1, -1)
        x = torch.stack(torch.broadcast_tensors(r, g, b), -1).reshape(-1, 3, 1, 1)  # (n, 3, 1, 1)
        n = len(x)
        logp = maths.discretized_logistic_mixture_log_prob(
            x, *(p.expand(n, *p.shape[1:]) for p in (logits, means, log_scales, coeffs))
        )
        total += logp.exp().sum()
    assert_close(total, torch.tensor(1.0, dtype=F64), atol=1e-5, rtol=0)


def test_the_likelihood_in_a_model_gives_a_discrete_nll_and_bits_per_dim():
    from vaelab.config import EvalConfig
    from vaelab.data import ImageData
    from vaelab.evaluation.report import evaluate

    torch.manual_seed(0)
    cfg = ModelConfig(
        input_shape=(3, 4, 4), hidden=(16,), latent_dim=2, likelihood="logistic-mixture", mixture_components=3
    )
    lik = make_likelihood(cfg)
    assert lik.num_params == 12 and lik.eight_bit
    model = VAE(cfg)
    x = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8)
    report = evaluate(model, ImageData(x), EvalConfig(k=8, batch_size=10), pixels="none")
    assert report.nll is not None and report.nll > 0 and report.note == ""
    assert report.bpd == pytest.approx(report.nll / (48 * math.log(2)))
    # a model that knows nothing spreads its mass over the 256 values: about 8 bits per dimension
    assert 4 < report.bpd < 12
    with torch.no_grad():
        means = model.decode(torch.zeros(5, 2))
    assert means.shape == (5, 3, 4, 4) and float(means.min()) >= 0 and float(means.max()) <= 1


def test_bad_mixture_components_are_refused():
    from vaelab.errors import ConfigError

    with pytest.raises(ConfigError, match="mixture_components"):
        ModelConfig(likelihood="logistic-mixture", mixture_components=0)

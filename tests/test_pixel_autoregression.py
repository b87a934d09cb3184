"""The autoregressive Bernoulli likelihood ("bernoulli-ar"): p(x|z) = prod_i Bernoulli(x_i;
sigmoid(f_i + sum_{j<i} W_ij x_j)). Checked against the exact sum over every binary image, a
hand-written two-pixel probability, and the mean-field recurrence written out pixel by pixel."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.testing import assert_close

from vaelab import objectives as obj
from vaelab.config import ModelConfig
from vaelab.models import build_model, make_likelihood


def _ar(shape: tuple[int, int, int], seed: int = 0, scale: float = 2.0):
    lik = make_likelihood(ModelConfig(input_shape=shape, likelihood="bernoulli-ar"))
    with torch.no_grad():
        lik.module.weight.copy_(torch.randn(lik.module.weight.shape, generator=torch.Generator().manual_seed(seed)))
        lik.module.weight.mul_(scale)
    return lik


def _all_images(shape: tuple[int, int, int]) -> torch.Tensor:
    d = shape[0] * shape[1] * shape[2]
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64).view(-1, *shape)


@pytest.mark.parametrize("shape", [(1, 2, 2), (2, 1, 3), (1, 3, 3)])
def test_probabilities_of_all_binary_images_sum_to_one(shape):
    lik = _ar(shape, seed=1, scale=3.0)
    lik.module.double()
    xs = _all_images(shape)
    f = 2 * torch.randn(4, 1, 1, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for b in range(4):  # one decoder output (one z), every image
        total = lik.log_prob(xs, f[b].expand(len(xs), 1, *shape)).exp().sum()
        assert_close(total, torch.tensor(1.0, dtype=torch.float64), atol=1e-12, rtol=0)


def test_two_pixels_match_the_chain_rule_by_hand():
    lik = _ar((1, 1, 2), scale=0.0)
    with torch.no_grad():
        lik.module.weight[1, 0] = 1.7  # pixel 2 sees pixel 1
        lik.module.weight[0, 1] = -9.0  # pixel 1 must not see pixel 2: masked
        lik.module.weight[0, 0] = 5.0  # nor itself
    f1, f2 = 0.3, -0.8
    params = torch.tensor([f1, f2]).view(1, 1, 1, 1, 2)
    s = torch.sigmoid
    for x1, x2 in itertools.product([0.0, 1.0], repeat=2):
        p1 = s(torch.tensor(f1)) if x1 else 1 - s(torch.tensor(f1))
        q = s(torch.tensor(f2 + 1.7 * x1))
        p2 = q if x2 else 1 - q
        got = lik.log_prob(torch.tensor([x1, x2]).view(1, 1, 1, 2), params)
        assert_close(got, (p1 * p2).log().view(1), atol=1e-6, rtol=0)


def test_zero_weights_are_the_plain_bernoulli_and_the_upper_triangle_is_ignored():
    shape = (1, 3, 3)
    lik = _ar(shape, scale=0.0)
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(5, *shape, generator=g) > 0.5).float()
    params = torch.randn(2, 5, 1, *shape, generator=g)
    assert_close(lik.log_prob(x, params), obj.bernoulli_log_prob(x, params.squeeze(-4)))
    assert_close(lik.mean(params), torch.sigmoid(params.squeeze(-4)))
    with torch.no_grad():
        lik.module.weight.copy_(torch.randn(9, 9, generator=g).triu())  # diagonal and above only
    assert_close(lik.log_prob(x, params), obj.bernoulli_log_prob(x, params.squeeze(-4)))
    loss = -lik.log_prob(x, params).sum()
    loss.backward()
    grad = lik.module.weight.grad
    assert torch.count_nonzero(grad.triu()) == 0 and torch.count_nonzero(grad.tril(-1)) > 0


def test_mean_is_the_mean_field_recurrence_pixel_by_pixel():
    shape = (1, 1, 4)
    lik = _ar(shape, seed=4, scale=1.5)
    w = lik.module.weight.detach()
    f = torch.randn(3, 1, *shape, generator=torch.Generator().manual_seed(5))
    want = torch.zeros(3, 4)
    for i in range(4):
        want[:, i] = torch.sigmoid(f.view(3, 4)[:, i] + want[:, :i] @ w[i, :i])
    assert_close(lik.mean(f), want.view(3, *shape))
    # and the first pixel's mean is exact: E[x_1 | z] = sigmoid(f_1), it depends on no other pixel
    assert_close(lik.mean(f)[..., 0, 0, 0], torch.sigmoid(f[:, 0, 0, 0, 0]))


def test_the_model_owns_the_weights_and_a_copy_keeps_them_linked():
    import copy

    model = build_model(ModelConfig(input_shape=(1, 3, 3), hidden=(4,), likelihood="bernoulli-ar"))
    assert "pixel_net.weight" in model.state_dict()
    assert any(p is model.pixel_net.weight for p in model.generative_parameters())
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.pixel_net.weight.fill_(0.5)
    x = torch.ones(2, 1, 3, 3)
    params = torch.zeros(1, 2, 1, 1, 3, 3)
    assert not torch.equal(twin.log_px_z(x, params), model.log_px_z(x, params))  # the copy uses its own W

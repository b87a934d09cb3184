"""The autoregressive Bernoulli likelihood ("bernoulli-ar"): p(x|z) = prod_i Bernoulli(x_i;
sigmoid(f_i + sum_{j<i} W_ij x_j)). Checked against the exact sum over every binary image, a
hand-written two-pixel probability, and the mean-field recurrence written out pixel by pixel."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.testing import assert_close

from vaelab import maths
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
    assert_close(lik.log_prob(x, params), maths.bernoulli_log_prob(x, params.squeeze(-4)))
    assert_close(lik.mean(params), torch.sigmoid(params.squeeze(-4)))
    with torch.no_grad():
        lik.module.weight.copy_(torch.randn(9, 9, generator=g).triu())  # diagonal and above only
    assert_close(lik.log_prob(x, params), maths.bernoulli_log_prob(x, params.squeeze(-4)))
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


def _chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square test of counts (M,) against probabilities (M,): the cells expected
    fewer than 5 times are pooled into one. Returns the p-value."""
    from scipy.stats import chi2

    n = counts.sum().double()
    expected = n * probs.double()
    big = expected >= 5
    obs = torch.cat([counts[big].double(), counts[~big].double().sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = exp > 0
    stat = ((obs[keep] - exp[keep]).square() / exp[keep]).sum()
    return float(chi2.sf(float(stat), int(keep.sum()) - 1))


def _image_index(x: torch.Tensor) -> torch.Tensor:
    """Binary images (N, C, H, W) -> their row in _all_images (raster order, first pixel the top bit)."""
    bits = x.flatten(1).long()
    return (bits * (2 ** torch.arange(bits.shape[1] - 1, -1, -1))).sum(1)


@pytest.mark.parametrize("shape", [(1, 2, 2), (1, 3, 3)])
def test_ancestral_draws_match_the_exact_probability_of_every_binary_image(shape):
    lik = _ar(shape, seed=6, scale=2.0)
    lik.module.double()
    xs = _all_images(shape)
    f = 1.5 * torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)  # one z
    probs = lik.log_prob(xs, f.expand(len(xs), 1, *shape)).exp().detach()  # (2^D,), sums to 1
    n = 40_000
    with torch.no_grad():
        x = lik.draw(f.expand(n, 1, *shape), torch.Generator().manual_seed(8))  # (n, C, H, W)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    counts = torch.bincount(_image_index(x), minlength=len(xs))
    assert _chi_square_p_value(counts, probs) > 1e-3
    # the test has power: independent Bernoulli pixels at the mean-field probabilities (what the
    # pictures showed before) are rejected, although they are right for the first pixel
    with torch.no_grad():
        mf = lik.mean(f.expand(n, 1, *shape))
    mean_field = (torch.rand(mf.shape, generator=torch.Generator().manual_seed(8), dtype=mf.dtype) < mf).double()
    assert _chi_square_p_value(torch.bincount(_image_index(mean_field), minlength=len(xs)), probs) < 1e-6


def test_draws_are_binary_seeded_and_keep_the_sample_dimensions():
    shape = (1, 3, 3)
    lik = _ar(shape, seed=9, scale=1.0)
    params = torch.randn(2, 5, 1, *shape, generator=torch.Generator().manual_seed(10))  # (K, B, 1, C, H, W)
    with torch.no_grad():
        a = lik.draw(params, torch.Generator().manual_seed(11))
        b = lik.draw(params, torch.Generator().manual_seed(11))
        c = lik.draw(params, torch.Generator().manual_seed(12))
    assert a.shape == (2, 5, *shape)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(lik.pixels(params, "draw", torch.Generator().manual_seed(11)), a)
    assert lik.describe("mean") == "mean-field pass of p(x|z)" and lik.describe("draw") == "draws x ~ p(x|z)"


def test_a_strong_weight_makes_the_drawn_pixels_copy_each_other():
    # f = (0, -20, 20), W_21 = 40, W_31 = -40: pixel 2's logit is +-20 as pixel 1 is 1 or 0, so it
    # copies pixel 1 (up to e^-20), and pixel 3 negates it. The mean-field pass is (1/2, 1/2, 1/2).
    lik = _ar((1, 1, 3), scale=0.0)
    with torch.no_grad():
        lik.module.weight[1, 0] = 40.0
        lik.module.weight[2, 0] = -40.0
    params = torch.tensor([0.0, -20.0, 20.0]).view(1, 1, 1, 1, 3).expand(2000, 1, 1, 1, 3)
    with torch.no_grad():
        x = lik.draw(params, torch.Generator().manual_seed(13)).view(-1, 3)
        assert_close(lik.mean(params[:1]).flatten(), torch.full((3,), 0.5))
    assert torch.equal(x[:, 1], x[:, 0]) and torch.equal(x[:, 2], 1 - x[:, 0])
    assert 0.45 < float(x[:, 0].mean()) < 0.55  # pixel 1 ~ Bernoulli(1/2): 2000 draws, 4.5 sd


def test_vaelab_sample_draw_writes_binary_draws_and_says_so_in_the_title(tmp_path, npz_dataset, capsys, monkeypatch):
    import numpy as np

    import vaelab.plots
    from conftest import run_cli

    run = tmp_path / "ar"
    train = ["train", "--preset", "tiny", "--dataset", str(npz_dataset), "--binarize", "dynamic", "--hidden", "12"]
    train += ["--likelihood", "bernoulli-ar", "--epochs", "1", "--threads", "1", "--out", str(run), "--no-plots", "-q"]
    code, _, err = run_cli(train, capsys)
    assert code == 0, err
    titles: list[str] = []
    real = vaelab.plots.plot_samples

    def spy(images, *args, **kwargs):
        titles.append(kwargs["title"])
        return real(images, *args, **kwargs)

    monkeypatch.setattr(vaelab.plots, "plot_samples", spy)
    for name, flags in (("mean", []), ("draw", ["--draw"]), ("again", ["--draw"])):
        args = ["sample", str(run), "-n", "6", "--seed", "3", "-o", str(tmp_path / f"{name}.png")]
        code, out, err = run_cli([*args, "--npy", str(tmp_path / f"{name}.npy"), "--threads", "1", *flags], capsys)
        assert code == 0, err
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    mean, draw, again = (np.load(tmp_path / f"{name}.npy") for name in ("mean", "draw", "again"))
    assert draw.shape == mean.shape == (6, 1, 8, 8)
    assert set(np.unique(draw).tolist()) <= {0.0, 1.0} and not set(np.unique(mean).tolist()) <= {0.0, 1.0}
    assert np.array_equal(draw, again)  # --seed makes the draws reproducible
    assert titles[0] == "Samples: mean-field pass of p(x|z), z ~ N(0, I)"
    assert titles[1] == titles[2] == "Samples: draws x ~ p(x|z), z ~ N(0, I)"

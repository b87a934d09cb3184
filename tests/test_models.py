"""Networks: shapes from the config, gradients through the reparameterization, the verbs."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.models import VAE, interpolate_latents


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(),  # the tutorial: 784-512-2
        ModelConfig(hidden=(400,), latent_dim=20),
        ModelConfig(hidden=(200, 200), latent_dim=50, activation="tanh"),
        ModelConfig(arch="conv", channels=(8, 16), hidden=(32,), latent_dim=4),
        ModelConfig(likelihood="gaussian", latent_dim=3),
        ModelConfig(hidden=(16,), num_classes=10),
    ],
    ids=["seed", "784-400-20", "784-200-200-50-tanh", "conv", "gaussian", "conditional"],
)
def test_shapes_follow_the_config(cfg):
    model = VAE(cfg)
    x = torch.rand(5, *cfg.input_shape)
    y = torch.arange(5) % 10 if cfg.num_classes else None
    loc, logvar = model.encode(x, y)
    assert loc.shape == logvar.shape == (5, cfg.latent_dim)
    assert model.decode(loc, y).shape == (5, *cfg.input_shape)
    assert model.decode(torch.randn(3, 5, cfg.latent_dim), y).shape == (3, 5, *cfg.input_shape)
    assert model.reconstruct(x, y).shape == x.shape
    terms = model.elbo(x, y)
    assert terms.elbo.shape == terms.kl.shape == terms.log_px_z.shape == (5,)
    assert_close(terms.elbo, terms.log_px_z - terms.kl)
    means = model.decode(loc, y).detach()
    assert float(means.min()) >= 0 and float(means.max()) <= 1


def test_seed_architecture_is_the_tutorials():
    model = VAE(ModelConfig())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "encoder.body.0.weight": (512, 784),
        "encoder.body.0.bias": (512,),
        "encoder.head.weight": (4, 512),
        "encoder.head.bias": (4,),  # mu (2) and logvar (2) heads
        "decoder.body.0.weight": (512, 2),
        "decoder.body.0.bias": (512,),
        "decoder.out.weight": (784, 512),
        "decoder.out.bias": (784,),
    }


def test_gradients_reach_loc_and_logvar():
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=2))
    x = torch.rand(3, 1, 4, 4)
    loc, logvar = model.encode(x)
    loc.retain_grad()
    logvar.retain_grad()
    eps = torch.randn(3, 2)
    z = loc + torch.exp(0.5 * logvar) * eps
    out = model.log_px_z(x, model.decode_params(z)).sum()
    out.backward()
    assert loc.grad is not None and logvar.grad is not None
    assert loc.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0
    # d out / d logvar = d out / d z * eps * 0.5 * exp(logvar / 2)
    assert_close(logvar.grad, loc.grad * eps * 0.5 * torch.exp(0.5 * logvar.detach()))


def test_forward_uses_given_noise():
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=2))
    x = torch.rand(3, 1, 4, 4)
    out = model(x, eps=torch.zeros(1, 3, 2))
    assert_close(out.z[0], model.encode(x)[0])  # eps = 0 draws the posterior mean
    out_k = model(x, eps=torch.randn(7, 3, 2))
    assert out_k.z.shape == (7, 3, 2) and out_k.params.shape == (7, 3, 1, 1, 4, 4)
    assert out_k.log_px_z.shape == out_k.log_pz.shape == out_k.log_qz_x.shape == (7, 3)


def test_sample_is_reproducible_with_a_generator():
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,)))
    a = model.sample(4, generator=torch.Generator().manual_seed(3))
    b = model.sample(4, generator=torch.Generator().manual_seed(3))
    assert_close(a, b)
    assert a.shape == (4, 1, 4, 4)


def test_conditional_labels_are_checked():
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), num_classes=3))
    with pytest.raises(ConfigError, match="label 3 is out of range"):
        model.sample(2, y=3)
    with pytest.raises(ConfigError, match="conditional"):
        model.sample(2)
    assert model.sample(2, y=2).shape == (2, 1, 4, 4)
    plain = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,)))
    with pytest.raises(ConfigError, match="not conditional"):
        plain.sample(2, y=1)


def test_interpolation_endpoints_and_slerp_norm():
    z1, z2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    lin = interpolate_latents(z1, z2, 5)
    assert_close(lin[0], z1)
    assert_close(lin[-1], z2)
    assert_close(lin[2], (z1 + z2) / 2)
    sl = interpolate_latents(z1, z2, 5, spherical=True)
    assert_close(sl[0], z1)
    assert_close(sl[-1], z2)
    # slerp between orthogonal unit vectors stays on the circle with uniform angle steps
    unit = interpolate_latents(z1, torch.tensor([0.0, 1.0]), 5, spherical=True)
    assert_close(unit.norm(dim=1), torch.ones(5))
    angles = torch.atan2(unit[:, 1], unit[:, 0])
    assert_close(angles.diff(), torch.full((4,), torch.pi / 8))
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,)))
    strip = model.interpolate(torch.rand(1, 4, 4), torch.rand(1, 4, 4), steps=6)
    assert strip.shape == (6, 1, 4, 4)


def test_posterior_distribution_matches_encode():
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=3))
    x = torch.rand(2, 1, 4, 4)
    q = model.posterior(x)
    loc, logvar = model.encode(x)
    assert_close(q.mean, loc)
    assert_close(q.variance, logvar.exp())


def test_sample_draws_x_given_the_same_z_as_the_means():
    """mode="draw" draws z ~ p(z) from the generator first, as mode="mean" does, then x ~ p(x|z):
    with the same seed the draws are Bernoulli draws of the very means that mode="mean" shows."""
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=2))
    with torch.no_grad():
        model.decoder.out.weight.mul_(8.0)  # pixel means near 0 or 1, as z says: a draw must follow z
        means = model.sample(3000, generator=torch.Generator().manual_seed(5))
        default = model.sample(3000, generator=torch.Generator().manual_seed(5), mode="mean")
        x = model.sample(3000, generator=torch.Generator().manual_seed(5), mode="draw")
        again = model.sample(3000, generator=torch.Generator().manual_seed(5), mode="draw")
    assert torch.equal(means, default)  # the default is unchanged: pixel means
    assert x.shape == means.shape == (3000, 1, 4, 4) and torch.equal(x, again)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    # sum of x - p over every pixel of every image, in standard deviations of a sum of Bernoullis
    z = float((x - means).sum() / (means * (1 - means)).sum().sqrt())
    assert abs(z) < 4.5, z
    # and x agrees with the likelier value of each pixel as often as the means say: E max(p, 1 - p)
    agree = (x == (means > 0.5)).double().sum()
    want = torch.maximum(means, 1 - means).double().sum()
    assert abs(float(agree - want)) < 4.5 * float((means * (1 - means)).double().sum().sqrt())


def test_decode_draws_keep_the_sample_dimensions_and_reject_unknown_modes():
    model = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=3, likelihood="gaussian"))
    z = torch.randn(2, 5, 3)
    with torch.no_grad():
        x = model.decode(z, mode="draw", generator=torch.Generator().manual_seed(0))
        y = model.decode(z, mode="draw", generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 5, 1, 4, 4) and torch.equal(x, y)
    assert not torch.equal(x, model.decode(z).detach())  # a draw, not the mean
    with pytest.raises(ConfigError, match="pixel mode 'binary'"):
        model.sample(2, mode="binary")  # type: ignore[arg-type]

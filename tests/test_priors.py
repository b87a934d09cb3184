"""Priors against torch.distributions, hand-computed mixtures, quadrature and Monte Carlo."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from vaelab.errors import ConfigError
from vaelab.models.priors import PRIORS, MixturePrior, Prior, StandardNormal, VampPrior, make_prior

F64 = torch.float64
INPUT_SHAPE = (1, 3, 3)


class LinearEncoder(nn.Module):
    """A small random linear Gaussian encoder x (K, C, H, W) -> (loc, logvar), each (K, D)."""

    def __init__(self, latent_dim: int, pixels: int = 9, scale: float = 1.0):
        super().__init__()
        self.lin = nn.Linear(pixels, 2 * latent_dim)
        with torch.no_grad():
            self.lin.weight.mul_(scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, logvar = self.lin(x.flatten(1)).chunk(2, -1)
        return loc, logvar


def random_mixture(dim: int, components: int) -> MixturePrior:
    prior = MixturePrior(dim, components).double()
    with torch.no_grad():  # unequal weights and widths, so that the test can tell components apart
        prior.logits.normal_()
        prior.logvar.uniform_(-1.0, 0.5)
    return prior


def vamp_with_encoder(dim: int, components: int) -> tuple[VampPrior, LinearEncoder]:
    prior = VampPrior(dim, components, INPUT_SHAPE).double()
    encoder = LinearEncoder(dim).double()
    with torch.no_grad():  # spread the pseudo-inputs out, or all K components nearly coincide
        prior.pseudo_logits.normal_(0.0, 2.0)
    return prior.attach(encoder), encoder


def grid(dim: int, half_width: float, n: int) -> tuple[torch.Tensor, float]:
    """Midpoints of an n^dim grid on [-half_width, half_width]^dim: (n^dim, dim) and cell volume."""
    h = 2 * half_width / n
    ticks = -half_width + h * (torch.arange(n, dtype=F64) + 0.5)
    points = torch.stack(torch.meshgrid(*[ticks] * dim, indexing="ij"), -1).reshape(-1, dim)
    return points, h**dim


@pytest.mark.parametrize("dim", [1, 2])
def test_standard_normal_matches_torch_distributions(dim):
    prior = StandardNormal(dim).double()
    z = torch.randn(4, 5, dim, dtype=F64)
    ref = torch.distributions.Independent(torch.distributions.Normal(0.0, 1.0).expand([dim]), 1).log_prob(z)
    assert_close(prior.log_prob(z), ref, rtol=1e-12, atol=1e-12)
    assert_close(prior.to_distribution().log_prob(z), ref, rtol=1e-12, atol=1e-12)
    assert prior.standard_normal and prior.log_prob(z).shape == (4, 5)


@pytest.mark.parametrize("dim", [1, 2])
def test_mixture_matches_mixture_same_family(dim):
    prior = random_mixture(dim, components=4)
    d = torch.distributions
    ref = d.MixtureSameFamily(
        d.Categorical(probs=torch.softmax(prior.logits, 0)),
        d.Independent(d.Normal(prior.loc, prior.logvar.mul(0.5).exp()), 1),
    )
    z = 2 * torch.randn(3, 6, dim, dtype=F64)
    with torch.no_grad():
        assert_close(prior.log_prob(z), ref.log_prob(z), rtol=1e-10, atol=1e-10)
        assert_close(prior.to_distribution().log_prob(z), ref.log_prob(z), rtol=1e-10, atol=1e-10)
    assert not prior.standard_normal


def test_one_component_mixture_is_that_gaussian():
    prior = random_mixture(3, components=1)
    z = torch.randn(10, 3, dtype=F64)
    normal = torch.distributions.Normal(prior.loc[0], prior.logvar[0].mul(0.5).exp())
    with torch.no_grad():
        assert_close(prior.log_prob(z), normal.log_prob(z).sum(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dim, n", [(1, 4000), (2, 400)])
def test_mixture_density_integrates_to_one(dim, n):
    prior = random_mixture(dim, components=5)
    points, volume = grid(dim, 10.0, n)  # means within ~3 of 0, stds <= 1.3: the box holds 5+ stds
    with torch.no_grad():
        total = prior.log_prob(points).exp().sum() * volume
    # The midpoint rule on a smooth Gaussian with spacing << std is accurate far beyond 1e-6.
    assert_close(total, torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-6)


def test_vamp_log_prob_by_hand():
    prior, encoder = vamp_with_encoder(dim=2, components=3)
    z = torch.randn(4, 2, dtype=F64)
    with torch.no_grad():
        density = torch.zeros(4, dtype=F64)
        for u in prior.pseudo_inputs():  # u (C, H, W): one component at a time, densities summed
            loc, logvar = encoder.lin(u.flatten()).chunk(2)
            density += torch.distributions.Normal(loc, logvar.mul(0.5).exp()).log_prob(z).sum(-1).exp()
        assert_close(prior.log_prob(z), torch.log(density / 3), rtol=1e-10, atol=1e-10)
        # K importance samples (K, B, D) broadcast: the same as one call per sample row
        zk = torch.randn(5, 4, 2, dtype=F64)
        assert_close(prior.log_prob(zk), torch.stack([prior.log_prob(r) for r in zk]), rtol=1e-12, atol=1e-12)


def test_vamp_pseudo_inputs_are_pixels_near_grey_at_init():
    u = VampPrior(2, 50, INPUT_SHAPE).pseudo_inputs()
    assert u.shape == (50, *INPUT_SHAPE) and bool(((u > 0) & (u < 1)).all())
    assert abs(u.mean().item() - 0.5) < 0.01 and 0.005 < u.std().item() < 0.02


def test_vamp_density_integrates_to_one():
    prior, _ = vamp_with_encoder(dim=2, components=4)
    with torch.no_grad():
        loc, logvar = prior.component_params()
        half_width = (loc.abs() + 6 * logvar.mul(0.5).exp()).max().item()
        points, volume = grid(2, half_width, 500)
        total = prior.log_prob(points).exp().sum() * volume
    assert_close(total, torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-4)


def mixture_moments(weights: torch.Tensor, loc: torch.Tensor, logvar: torch.Tensor):
    """Mean (D,) and variance (D,) of sum_k w_k N(loc_k, exp(logvar_k))."""
    mean = (weights[:, None] * loc).sum(0)
    second = (weights[:, None] * (logvar.exp() + loc.square())).sum(0)
    return mean, second - mean.square()


@pytest.mark.parametrize("name", ["normal", "mog", "vamp"])
def test_samples_match_the_density_moments(name):
    g = torch.Generator().manual_seed(7)
    n = 200_000
    if name == "normal":
        prior: Prior = StandardNormal(3).double()
        mean, var = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
    elif name == "mog":
        prior = random_mixture(3, components=4)
        mean, var = mixture_moments(torch.softmax(prior.logits, 0), prior.loc, prior.logvar)
    else:
        prior, _ = vamp_with_encoder(3, components=4)
        loc, logvar = prior.component_params()
        mean, var = mixture_moments(torch.full((4,), 0.25, dtype=F64), loc, logvar)
    with torch.no_grad():
        z = prior.sample(n, generator=g)
        mean, var = mean.detach(), var.detach()
    assert z.shape == (n, 3) and z.dtype == F64
    # 5 standard errors, each estimated from the draws themselves (mixtures are heavy-tailed)
    centred_sq = (z - mean).square()
    assert_close(z.mean(0), mean, rtol=0, atol=5 * (var / n).sqrt().max().item())
    assert_close(centred_sq.mean(0), var, rtol=0, atol=5 * (centred_sq.std(0) / math.sqrt(n)).max().item())


def test_sampling_is_reproducible_with_a_generator():
    prior = random_mixture(2, components=3)
    a = prior.sample(10, generator=torch.Generator().manual_seed(3))
    b = prior.sample(10, generator=torch.Generator().manual_seed(3))
    assert_close(a, b, rtol=0, atol=0)


def test_gradients_reach_pseudo_inputs_and_encoder():
    prior, encoder = vamp_with_encoder(dim=2, components=3)
    (prior.log_prob(torch.randn(6, 2, dtype=F64)).sum() + prior.sample(4).sum()).backward()
    for grad in (prior.pseudo_logits.grad, encoder.lin.weight.grad, encoder.lin.bias.grad):
        assert grad is not None and bool(grad.isfinite().all()) and grad.abs().sum() > 0


def test_vamp_state_dict_holds_only_pseudo_inputs():
    encoder = LinearEncoder(2)
    prior = VampPrior(2, 3, INPUT_SHAPE, encode=encoder.forward)
    assert list(prior.state_dict()) == ["pseudo_logits"]
    assert [n for n, _ in prior.named_parameters()] == ["pseudo_logits"]
    # Even an nn.Module handed over directly is not registered.
    assert list(VampPrior(2, 3, INPUT_SHAPE).attach(encoder).state_dict()) == ["pseudo_logits"]
    model = nn.ModuleDict({"encoder": encoder, "prior": prior})
    assert sorted(model.state_dict()) == ["encoder.lin.bias", "encoder.lin.weight", "prior.pseudo_logits"]
    assert len(list(model.parameters())) == 3


def test_deepcopy_keeps_the_prior_on_the_copied_encoder():
    encoder = LinearEncoder(2)
    model = nn.ModuleDict({"encoder": encoder, "prior": VampPrior(2, 3, INPUT_SHAPE, encode=encoder.forward)})
    twin = copy.deepcopy(model)
    assert twin["prior"]._encode.__self__ is twin["encoder"]
    with torch.no_grad():
        twin["encoder"].lin.bias.add_(1.0)
    z = torch.randn(4, 2)
    assert not torch.allclose(twin["prior"].log_prob(z), model["prior"].log_prob(z))


def test_vamp_without_encoder_says_how_to_fix_it():
    with pytest.raises(RuntimeError, match="attach"):
        VampPrior(2, 3, INPUT_SHAPE).log_prob(torch.zeros(1, 2))


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_make_prior_builds_each_registered_prior(name):
    prior = make_prior(name, latent_dim=4, components=3, input_shape=INPUT_SHAPE)
    assert isinstance(prior, PRIORS[name]) and prior.latent_dim == 4
    assert prior.standard_normal == (name == "normal")


def test_make_prior_rejects_unknown_names():
    with pytest.raises(ConfigError, match=r"'gauss'.*mog, normal, vamp"):
        make_prior("gauss", 2, 3, INPUT_SHAPE)


@pytest.mark.parametrize("name", ["normal", "mog"])
def test_samples_follow_the_prior_dtype(name):
    prior = make_prior(name, 2, 3, INPUT_SHAPE)
    assert prior.sample(2).dtype == torch.float32
    assert prior.double().sample(2).dtype == torch.float64

"""Shared checks for the model parts, in the manner of nflows' TransformTest: a prior, a flow or a pixel
likelihood gets its checks by subclassing PriorTest, FlowTest or LikelihoodTest and saying how to
build one (``make``) and what to compare it with. A new part inherits every check.

- PriorTest: log_prob against an independent reference (torch.distributions, or for a flow the
  change of variables with the autograd Jacobian); the density integrates to 1 on a 2-D grid;
  the draws' mean and covariance match the density's (by quadrature); draws are seeded.
- FlowTest: forward after inverse and inverse after forward are the identity; the log-determinant of
  either direction matches torch.autograd.functional.jacobian; sample dimensions broadcast.
- LikelihoodTest: log_prob against torch.distributions (or, for the autoregressive and 8-bit
  families, a reference written out pixel by pixel); the probabilities sum to 1 over the support
  (by enumeration or quadrature); the draws' mean and variance match the reference's; draws are
  seeded and lie in the support.

Everything runs in float64 with fixed seeds. The base classes' names do not start with "Test", so
pytest collects only the subclasses.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn
from torch.autograd.functional import jacobian
from torch.testing import assert_close

from vaelab.config import ModelConfig
from vaelab.models.flows import FLOWS, MAF, MAFStep
from vaelab.models.likelihoods import PixelLikelihood, make_likelihood
from vaelab.models.priors import FlowPrior, MixturePrior, Prior, StandardNormal, VampPrior

F64 = torch.float64
d = torch.distributions


def quadrature_grid(dim: int, half_width: float, n: int) -> tuple[Tensor, float]:
    """Midpoints of an n^dim grid on [-half_width, half_width]^dim: (n^dim, dim), and the cell volume."""
    h = 2 * half_width / n
    ticks = -half_width + h * (torch.arange(n, dtype=F64) + 0.5)
    return torch.stack(torch.meshgrid(*[ticks] * dim, indexing="ij"), -1).reshape(-1, dim), h**dim


def assert_within_standard_errors(samples: Tensor, expected: Tensor, k: float = 5.0) -> None:
    """The mean over dim 0 of `samples` lies within k standard errors of `expected` (elementwise)."""
    n = samples.shape[0]
    se = samples.std(0) / math.sqrt(n)
    err = (samples.mean(0) - expected).abs()
    assert bool((err <= k * se + 1e-12).all()), f"off by {(err / (se + 1e-300)).max():.1f} standard errors"


# -- priors ---------------------------------------------------------------------------------------------
class PriorTest(ABC):
    """Subclass, define ``make`` (a float64 prior with parameters away from their start) and
    ``reference_log_prob`` (log p(z) computed without the prior's log_prob)."""

    dim: ClassVar[int] = 2
    half_width: ClassVar[float] = 10.0  # the quadrature box: [-w, w]^2 must hold all but ~1e-6 of the mass
    grid: ClassVar[int] = 400
    draws: ClassVar[int] = 100_000

    @abstractmethod
    def make(self) -> Prior: ...

    @abstractmethod
    def reference_log_prob(self, prior: Prior, z: Tensor) -> Tensor:
        """log p(z) for z (B, D), independent of prior.log_prob."""

    def test_log_prob_matches_the_reference(self):
        torch.manual_seed(1)
        prior = self.make()
        z = 1.5 * torch.randn(3, 4, self.dim, dtype=F64)
        with torch.no_grad():
            got = prior.log_prob(z)
        assert got.shape == (3, 4) and got.dtype == F64
        ref = self.reference_log_prob(prior, z.reshape(-1, self.dim)).reshape(3, 4).detach()
        assert_close(got, ref, rtol=1e-9, atol=1e-9)

    def _density_on_grid(self, prior: Prior) -> tuple[Tensor, Tensor, float]:
        points, volume = quadrature_grid(self.dim, self.half_width, self.grid)
        with torch.no_grad():
            return points, prior.log_prob(points).exp(), volume

    def test_density_integrates_to_one(self):
        assert self.dim == 2, "the quadrature checks are written for a 2-D grid"
        _, density, volume = self._density_on_grid(self.make())
        assert_close(density.sum() * volume, torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-5)

    def test_draws_have_the_density_moments(self):
        prior = self.make()
        points, density, volume = self._density_on_grid(prior)
        w = density * volume
        mean = (w[:, None] * points).sum(0)
        centred = points - mean
        cov = (w[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)
        with torch.no_grad():
            z = prior.sample(self.draws, torch.Generator().manual_seed(3))
        assert z.shape == (self.draws, self.dim) and z.dtype == F64
        assert_within_standard_errors(z, mean)
        zc = z - mean
        assert_within_standard_errors((zc[:, :, None] * zc[:, None, :]).flatten(1), cov.flatten())

    def test_draws_follow_the_generator_alone(self):
        prior = self.make()
        state = torch.get_rng_state()
        with torch.no_grad():
            a = prior.sample(50, torch.Generator().manual_seed(5))
            b = prior.sample(50, torch.Generator().manual_seed(5))
            c = prior.sample(50, torch.Generator().manual_seed(6))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone


class LinearEncoder(nn.Module):
    """A random linear Gaussian encoder x (K, C, H, W) -> (loc, logvar), each (K, D): the VampPrior's q."""

    def __init__(self, latent_dim: int, pixels: int):
        super().__init__()
        self.lin = nn.Linear(pixels, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, logvar = self.lin(x.flatten(1)).chunk(2, -1)
        return loc, logvar


class TestStandardNormal(PriorTest):
    def make(self) -> Prior:
        return StandardNormal(self.dim).double()

    def reference_log_prob(self, prior: Prior, z: Tensor) -> Tensor:
        return d.MultivariateNormal(torch.zeros(self.dim, dtype=F64), torch.eye(self.dim, dtype=F64)).log_prob(z)


class TestMixturePrior(PriorTest):
    def make(self) -> Prior:
        torch.manual_seed(0)
        prior = MixturePrior(self.dim, 4).double()
        with torch.no_grad():  # unequal weights and widths, so that a mix-up of components shows
            prior.logits.normal_()
            prior.logvar.uniform_(-1.0, 0.5)
        return prior

    def reference_log_prob(self, prior: Prior, z: Tensor) -> Tensor:
        assert isinstance(prior, MixturePrior)
        mix = d.MixtureSameFamily(
            d.Categorical(logits=prior.logits),
            d.MultivariateNormal(prior.loc, torch.diag_embed(prior.logvar.exp())),
        )
        return mix.log_prob(z)


class TestVampPrior(PriorTest):
    shape = (1, 3, 3)

    def make(self) -> Prior:
        torch.manual_seed(0)
        encoder = LinearEncoder(self.dim, math.prod(self.shape)).double()
        prior = VampPrior(self.dim, 5, self.shape, encode=encoder).double()
        with torch.no_grad():  # spread the pseudo-inputs, or the K components nearly coincide
            prior.pseudo_logits.normal_(0.0, 2.0)
        return prior

    def reference_log_prob(self, prior: Prior, z: Tensor) -> Tensor:
        assert isinstance(prior, VampPrior) and prior._encode is not None
        loc, logvar = prior._encode(torch.sigmoid(prior.pseudo_logits))  # q(z | u_k), u_k = sigmoid(logits)
        k = loc.shape[0]
        mix = d.MixtureSameFamily(
            d.Categorical(probs=torch.full((k,), 1.0 / k, dtype=F64)),
            d.Independent(d.Normal(loc, logvar.mul(0.5).exp()), 1),
        )
        return mix.log_prob(z)


def randomise_maf(flow: nn.Module, seed: int, weight: float = 0.1, bias: float = 0.2) -> None:
    """Move every MAF step of `flow` away from its near-identity start: output weights N(0, weight^2)
    and biases N(0, bias^2) (larger ones make s(z) steep, and exp(s) tails too heavy for a grid)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for step in flow.modules():
            if isinstance(step, MAFStep):
                step.made.out.weight.normal_(0.0, weight)
                step.made.out.bias.normal_(0.0, bias)


def random_flow_prior(dim: int, steps: int = 3, seed: int = 1) -> FlowPrior:
    """A float64 flow prior far from N(0, I) (an L1 distance of 0.8 in 2-D) with tails light enough for a grid."""
    torch.manual_seed(seed)
    prior = FlowPrior(dim, steps, hidden=16).double()
    randomise_maf(prior, seed)
    return prior


class TestFlowPrior(PriorTest):
    def make(self) -> Prior:
        return random_flow_prior(self.dim)

    def reference_log_prob(self, prior: Prior, z: Tensor) -> Tensor:
        """The change of variables log N(f(z); 0, I) + log|det df/dz|, the determinant of the autograd
        Jacobian of the map f (not the flow's own log-determinants)."""
        assert isinstance(prior, FlowPrior)
        out = []
        for zb in z:
            u = prior.flow(zb[None])[0][0]
            jac = jacobian(lambda x: prior.flow(x[None])[0][0], zb)
            normal = d.MultivariateNormal(torch.zeros(self.dim, dtype=F64), torch.eye(self.dim, dtype=F64))
            out.append(normal.log_prob(u) + torch.linalg.slogdet(jac).logabsdet)
        return torch.stack(out)


# -- flows ----------------------------------------------------------------------------------------------
class FlowTest(ABC):
    """Subclass and define ``make``: a float64 flow with forward(z, h) and inverse(y, h), both returning
    (outputs, logabsdet), moved away from its near-identity start. ``context`` is the size of h (0:
    the flow takes h = None)."""

    dim: ClassVar[int] = 3
    context: ClassVar[int] = 0
    batch: ClassVar[int] = 5
    tol: ClassVar[float] = 1e-9

    @abstractmethod
    def make(self) -> nn.Module: ...

    def inputs(self, *lead: int) -> tuple[Tensor, Tensor | None]:
        torch.manual_seed(2)
        z = torch.randn(*lead, self.batch, self.dim, dtype=F64)
        h = torch.randn(self.batch, self.context, dtype=F64) if self.context else None
        return z, h

    @staticmethod
    def _row(h: Tensor | None, b: int) -> Tensor | None:
        return None if h is None else h[b : b + 1]

    def test_inverse_undoes_forward(self):
        flow = self.make()
        z, h = self.inputs()
        with torch.no_grad():
            y, _ = flow(z, h)
            back, _ = flow.inverse(y, h)
        assert_close(back, z, rtol=self.tol, atol=self.tol)
        assert (y - z).abs().max() > 1e-2  # not the identity: the test could tell

    def test_forward_undoes_inverse(self):
        flow = self.make()
        y, h = self.inputs()
        with torch.no_grad():
            z, _ = flow.inverse(y, h)
            again, _ = flow(z, h)
        assert_close(again, y, rtol=self.tol, atol=self.tol)

    def test_logabsdet_matches_the_autograd_jacobian(self):
        flow = self.make()
        z, h = self.inputs()
        _, logabsdet = flow(z, h)
        for b in range(self.batch):
            hb = self._row(h, b)
            jac = jacobian(lambda x, hb=hb: flow(x[None], hb)[0][0], z[b])  # (D, D)
            assert_close(logabsdet[b], torch.linalg.slogdet(jac).logabsdet, rtol=self.tol, atol=self.tol)

    def test_inverse_logabsdet_matches_the_autograd_jacobian(self):
        """log|det d inverse/dy| = -log|det d forward/dz| at z = inverse(y): the Jacobian of the forward
        map by autograd (a planar inverse is a bisection, with no gradient of its own)."""
        flow = self.make()
        y, h = self.inputs()
        with torch.no_grad():
            z, logabsdet = flow.inverse(y, h)
        for b in range(self.batch):
            hb = self._row(h, b)
            jac = jacobian(lambda x, hb=hb: flow(x[None], hb)[0][0], z[b])
            assert_close(logabsdet[b], -torch.linalg.slogdet(jac).logabsdet, rtol=self.tol, atol=self.tol)

    def test_sample_dims_broadcast_against_the_context(self):
        flow = self.make()
        z, h = self.inputs(4)  # (K, B, D)
        with torch.no_grad():
            for direction in (flow, flow.inverse):
                out, logabsdet = direction(z, h)
                assert out.shape == z.shape and logabsdet.shape == z.shape[:-1]
                rows = [direction(zk, h) for zk in z]
                assert_close(out, torch.stack([r[0] for r in rows]), rtol=1e-12, atol=1e-12)
                assert_close(logabsdet, torch.stack([r[1] for r in rows]), rtol=1e-12, atol=1e-12)


def scrambled(flow: nn.Module, scale: float = 0.5, seed: int = 0) -> nn.Module:
    """`flow` in float64 with every parameter moved by N(0, scale^2), so that the tests see curvature."""
    torch.manual_seed(seed)
    flow = flow.double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


class TestPlanarFlows(FlowTest):
    context = 4

    def make(self) -> nn.Module:
        torch.manual_seed(0)
        return scrambled(FLOWS["planar"](self.dim, 3, self.context, None))


class TestIAF(FlowTest):
    context = 4

    def make(self) -> nn.Module:
        torch.manual_seed(0)
        return scrambled(FLOWS["iaf"](self.dim, 3, self.context, (16, 16)))


class TestIAFWithoutContext(FlowTest):
    def make(self) -> nn.Module:
        torch.manual_seed(0)
        # less scrambled: without a context's spread, 0.5 drives some gates sigmoid(s + 2) to ~0, and
        # the inverse (y - (1 - sigma) m) / sigma out of floating-point range
        return scrambled(FLOWS["iaf"](self.dim, 3, 0, (16, 16)), scale=0.3)


class TestMAF(FlowTest):
    """The flow prior's MAF steps, as the prior builds them."""

    def make(self) -> nn.Module:
        return random_flow_prior(self.dim, steps=4).flow


class TestMAFWithContext(FlowTest):
    context = 4

    def make(self) -> nn.Module:
        torch.manual_seed(0)
        flow = MAF(self.dim, 3, self.context, (16, 16)).double()
        randomise_maf(flow, seed=0, weight=0.3, bias=0.3)
        with torch.no_grad():
            for step in flow.modules():
                if isinstance(step, MAFStep):
                    assert step.made.context is not None
                    step.made.context.weight.normal_(0.0, 0.3)
        return flow


# -- pixel likelihoods ----------------------------------------------------------------------------------
class LikelihoodTest(ABC):
    """Subclass and define ``random_params`` and ``reference_log_prob`` / ``reference_moments``
    (computed without the likelihood's own log_prob and mean). ``support`` says what a pixel takes:
    "binary" {0, 1}, "eight_bit" k/255, "unit" [0, 1] or "real". A factorised likelihood is checked
    to sum (or integrate) to 1 on one pixel; an autoregressive one on every image of `shape`."""

    name: ClassVar[str]
    support: ClassVar[str]
    shape: ClassVar[tuple[int, int, int]] = (1, 2, 2)
    batch: ClassVar[int] = 3
    factorised: ClassVar[bool] = True
    exact_mean: ClassVar[bool] = True  # likelihood.mean is E[x|z] (not a mean-field pass or approximation)
    tol: ClassVar[float] = 1e-9
    draws: ClassVar[int] = 20_000

    def config(self, shape: tuple[int, int, int]) -> ModelConfig:
        return ModelConfig(input_shape=shape, hidden=(4,), latent_dim=2, likelihood=self.name)

    def make(self, shape: tuple[int, int, int] | None = None) -> PixelLikelihood:
        """The likelihood for images of `shape`, its own weights (if any) in float64 and random."""
        lik = make_likelihood(self.config(shape or self.shape))
        if lik.module is not None:
            torch.manual_seed(4)
            lik.module.double()
            with torch.no_grad():
                for p in lik.module.parameters():
                    p.normal_(0.0, 1.0)
        return lik

    @abstractmethod
    def random_params(self, lik: PixelLikelihood, lead: tuple[int, ...], shape: tuple[int, int, int]) -> Tensor:
        """Parameters (*lead, P, C, H, W) in float64."""

    @abstractmethod
    def reference_log_prob(self, lik: PixelLikelihood, x: Tensor, params: Tensor) -> Tensor:
        """log p(x) (B,) for x (B, C, H, W) and params (B, P, C, H, W), independent of lik.log_prob."""

    @abstractmethod
    def reference_moments(self, lik: PixelLikelihood, params: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, variance) of every pixel, each (B, C, H, W)."""

    def support_values(self) -> Tensor:
        """A pixel's values: all of them (binary, eight_bit) or quadrature midpoints (unit, real)."""
        if self.support == "binary":
            return torch.tensor([0.0, 1.0], dtype=F64)
        if self.support == "eight_bit":
            return torch.arange(256, dtype=F64) / 255
        if self.support == "unit":
            return (torch.arange(20_000, dtype=F64) + 0.5) / 20_000
        return -4.0 + 9.0 * (torch.arange(90_000, dtype=F64) + 0.5) / 90_000  # real: [-4, 5]

    def data(self, n: int, shape: tuple[int, int, int]) -> Tensor:
        """n images (n, C, H, W) of pixels in the support."""
        torch.manual_seed(5)
        values = self.support_values()
        if self.support == "real":
            values = values[(values > -0.2) & (values < 1.2)]
        return values[torch.randint(len(values), (n, *shape))]

    def in_support(self, x: Tensor) -> bool:
        if self.support == "binary":
            return bool(((x == 0) | (x == 1)).all())
        if self.support == "eight_bit":
            return bool(((x * 255 - (x * 255).round()).abs() < 1e-9).all() and (x >= 0).all() and (x <= 1).all())
        if self.support == "unit":
            return bool(((x >= 0) & (x <= 1)).all())
        return bool(torch.isfinite(x).all())

    def test_log_prob_matches_the_reference(self):
        lik = self.make()
        params = self.random_params(lik, (self.batch,), self.shape)
        x = self.data(self.batch, self.shape)
        with torch.no_grad():
            got = lik.log_prob(x, params)
            ref = self.reference_log_prob(lik, x, params)
        assert got.shape == (self.batch,) and got.dtype == F64
        assert_close(got, ref, rtol=self.tol, atol=self.tol)

    def test_log_prob_broadcasts_over_draws(self):
        lik = self.make()
        params = self.random_params(lik, (4, self.batch), self.shape)  # (K, B, P, C, H, W)
        x = self.data(self.batch, self.shape)
        with torch.no_grad():
            got = lik.log_prob(x, params)
            rows = torch.stack([lik.log_prob(x, p) for p in params])
        assert got.shape == (4, self.batch)
        assert_close(got, rows, rtol=1e-12, atol=1e-12)

    def test_probabilities_sum_to_one(self):
        """Over every value of one pixel (by quadrature for grey densities), or over every image of
        `shape` for a likelihood whose pixels depend on each other."""
        shape = (self.shape[0], 1, 1) if self.factorised else self.shape
        lik = self.make(shape)
        params = self.random_params(lik, (self.batch,), shape)
        values = self.support_values()
        npix = math.prod(shape)
        if npix == 1:
            images = values.view(-1, 1, 1, 1)
        else:
            assert self.support == "binary", "enumerating whole images is written for binary pixels"
            images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=npix)), dtype=F64).view(-1, *shape)
        weight = 1.0 if self.support in ("binary", "eight_bit") else float(values[1] - values[0])
        n = images.shape[0]
        with torch.no_grad():  # every image against every parameter row, as one batch of N x B
            x = images[:, None].expand(n, self.batch, *shape).reshape(-1, *shape)
            log_p = lik.log_prob(x, params.expand(n, *params.shape).reshape(-1, *params.shape[1:])).view(n, -1)
        assert_close(log_p.exp().sum(0) * weight, torch.ones(self.batch, dtype=F64), rtol=0, atol=1e-6)

    def test_draws_have_the_reference_moments(self):
        lik = self.make()
        params = self.random_params(lik, (self.batch,), self.shape)
        mean, var = self.reference_moments(lik, params)
        with torch.no_grad():
            x = lik.draw(params.expand(self.draws, *params.shape), torch.Generator().manual_seed(6))
        assert x.shape == (self.draws, self.batch, *self.shape) and self.in_support(x)
        assert_within_standard_errors(x, mean)
        assert_within_standard_errors((x - mean).square(), var)

    def test_mean_is_the_reference_mean(self):
        if not self.exact_mean:
            pytest.skip("this likelihood's mean is not E[x|z] (a mean-field pass or an approximation)")
        lik = self.make()
        params = self.random_params(lik, (self.batch,), self.shape)
        with torch.no_grad():
            assert_close(lik.mean(params), self.reference_moments(lik, params)[0], rtol=self.tol, atol=self.tol)

    def test_draws_follow_the_generator_alone(self):
        lik = self.make()
        params = self.random_params(lik, (self.batch,), self.shape)
        state = torch.get_rng_state()
        with torch.no_grad():
            a = lik.draw(params.expand(20, *params.shape), torch.Generator().manual_seed(1))
            b = lik.draw(params.expand(20, *params.shape), torch.Generator().manual_seed(1))
            c = lik.draw(params.expand(20, *params.shape), torch.Generator().manual_seed(2))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert torch.equal(torch.get_rng_state(), state)


class _PerPixel(LikelihoodTest):
    """A factorised likelihood whose reference is one torch.distributions object per pixel."""

    def random_params(self, lik: PixelLikelihood, lead: tuple[int, ...], shape: tuple[int, int, int]) -> Tensor:
        torch.manual_seed(7)
        return torch.randn(*lead, lik.num_params, *shape, dtype=F64)

    @abstractmethod
    def pixel_distribution(self, params: Tensor) -> torch.distributions.Distribution:
        """params (B, P, C, H, W) -> a distribution of batch shape (B, C, H, W)."""

    def reference_log_prob(self, lik: PixelLikelihood, x: Tensor, params: Tensor) -> Tensor:
        return self.pixel_distribution(params).log_prob(x).flatten(1).sum(-1)

    def reference_moments(self, lik: PixelLikelihood, params: Tensor) -> tuple[Tensor, Tensor]:
        dist = self.pixel_distribution(params)
        return dist.mean, dist.variance


class TestBernoulli(_PerPixel):
    name, support = "bernoulli", "binary"

    def pixel_distribution(self, params: Tensor) -> torch.distributions.Distribution:
        return d.Bernoulli(logits=params[:, 0])


class TestContinuousBernoulli(_PerPixel):
    name, support = "continuous-bernoulli", "unit"
    tol = 1e-7  # torch's normaliser switches to a Taylor series within 0.001 of p = 0.5

    def pixel_distribution(self, params: Tensor) -> torch.distributions.Distribution:
        return d.ContinuousBernoulli(logits=params[:, 0])


class TestGaussian(_PerPixel):
    name, support = "gaussian", "real"

    def random_params(self, lik: PixelLikelihood, lead: tuple[int, ...], shape: tuple[int, int, int]) -> Tensor:
        params = super().random_params(lik, lead, shape)
        params[..., 1, :, :, :] = params[..., 1, :, :, :] - 3.0  # log-variances around -3, stds ~0.2
        return params

    def pixel_distribution(self, params: Tensor) -> torch.distributions.Distribution:
        # mean sigmoid(p0), log-variance p1 floored at -9 (likelihoods.MIN_PIXEL_LOGVAR)
        return d.Normal(torch.sigmoid(params[:, 0]), params[:, 1].clamp(min=-9.0).mul(0.5).exp())


class TestGaussianFixed(_PerPixel):
    name, support = "gaussian-fixed", "real"

    def pixel_distribution(self, params: Tensor) -> torch.distributions.Distribution:
        return d.Normal(torch.sigmoid(params[:, 0]), torch.full_like(params[:, 0], 0.1))  # fixed_scale 0.1


class TestLogisticMixture(LikelihoodTest):
    """8-bit pixels: every bin's mass from torch's Logistic CDF (a sigmoid-transformed Uniform)."""

    name, support = "logistic-mixture", "eight_bit"
    k = 3
    exact_mean = False  # the mean of the continuous logistics, before discretisation and clipping
    tol = 1e-8

    def config(self, shape: tuple[int, int, int]) -> ModelConfig:
        return ModelConfig(
            input_shape=shape, hidden=(4,), latent_dim=2, likelihood=self.name, mixture_components=self.k
        )

    def random_params(self, lik: PixelLikelihood, lead: tuple[int, ...], shape: tuple[int, int, int]) -> Tensor:
        torch.manual_seed(7)
        k = self.k
        params = torch.randn(*lead, 4 * k, *shape, dtype=F64)
        params[..., k : 2 * k, :, :, :] *= 0.6  # means in the [-1, 1] pixel scale
        params[..., 2 * k : 3 * k, :, :, :] = -2.5 + 0.5 * params[..., 2 * k : 3 * k, :, :, :]  # scales ~ 10 bins
        return params

    def bin_probs(self, params: Tensor) -> Tensor:
        """P(x = v/255) for v = 0..255: (256, B, C, H, W), the mixture of discretized logistics."""
        k = self.k
        logits = params[:, :k, 0]  # (B, K, H, W): the mixture weights, in channel 0's slot
        means, log_scales = params[:, k : 2 * k], params[:, 2 * k : 3 * k]  # (B, K, C, H, W)
        logistic = d.TransformedDistribution(
            d.Uniform(torch.zeros_like(means), torch.ones_like(means)),
            [d.SigmoidTransform().inv, d.AffineTransform(means, log_scales.exp())],
        )
        edges = (torch.arange(1, 256, dtype=F64) / 255 * 2 - 1 - 1 / 255).view(-1, 1, 1, 1, 1, 1)  # between bins
        cdf = logistic.cdf(edges.expand(-1, *means.shape))  # (255, B, K, C, H, W)
        ones = torch.ones_like(cdf[:1])
        mass = torch.cat([cdf, ones]) - torch.cat([0 * ones, cdf])  # (256, ...): the edge bins take the tails
        # the documented guard: a bin of mass under 1e-5 (not an edge bin) takes the density at its
        # centre times its width, 2/255 in the [-1, 1] scale
        centres = (torch.arange(256, dtype=F64) / 255 * 2 - 1).view(-1, 1, 1, 1, 1, 1)
        midpoint = logistic.log_prob(centres.expand(-1, *means.shape)).exp() * (2 / 255)
        inner = torch.zeros(256, 1, 1, 1, 1, 1, dtype=torch.bool)
        inner[1:-1] = True
        mass = torch.where(inner & (mass <= 1e-5), midpoint, mass)
        weights = torch.softmax(logits, 1)[:, :, None]  # (B, K, 1, H, W)
        return (mass * weights).sum(2)  # (256, B, C, H, W)

    def reference_moments(self, lik: PixelLikelihood, params: Tensor) -> tuple[Tensor, Tensor]:
        assert self.shape[0] == 1  # C = 1: given the weights, the pixels are independent
        values = (torch.arange(256, dtype=F64) / 255).view(-1, 1, 1, 1, 1)
        probs = self.bin_probs(params)
        mean = (probs * values).sum(0)
        return mean, (probs * (values - mean).square()).sum(0)

    def reference_log_prob(self, lik: PixelLikelihood, x: Tensor, params: Tensor) -> Tensor:
        probs = self.bin_probs(params)  # (256, B, 1, H, W)
        idx = (x * 255).round().long()[None]  # (1, B, 1, H, W)
        return probs.gather(0, idx)[0].log().flatten(1).sum(-1)


class TestBernoulliAutoregressive(LikelihoodTest):
    """Binary pixels, each given the pixels before it: the reference multiplies one
    torch.distributions.Bernoulli per pixel in raster order, with the weights read as written
    (pixel i's logit is f_i(z) + sum_{j<i} W_ij x_j), and lists all 16 images of 2 x 2."""

    name, support = "bernoulli-ar", "binary"
    factorised = False
    exact_mean = False  # its mean is the deterministic mean-field pass

    def random_params(self, lik: PixelLikelihood, lead: tuple[int, ...], shape: tuple[int, int, int]) -> Tensor:
        torch.manual_seed(7)
        return torch.randn(*lead, 1, *shape, dtype=F64)

    def reference_log_prob(self, lik: PixelLikelihood, x: Tensor, params: Tensor) -> Tensor:
        assert lik.module is not None
        w = lik.module.weight  # (D, D): row i, pixel i's weights on the pixels j
        f, xs = params[:, 0].flatten(1), x.flatten(1)  # (B, D) each
        total = torch.zeros(x.shape[0], dtype=F64)
        for i in range(xs.shape[1]):
            logit = f[:, i] + sum((w[i, j] * xs[:, j] for j in range(i)), torch.zeros_like(f[:, i]))
            total = total + d.Bernoulli(logits=logit).log_prob(xs[:, i])
        return total

    def reference_moments(self, lik: PixelLikelihood, params: Tensor) -> tuple[Tensor, Tensor]:
        """Sums over the 16 images of 2 x 2, each with its reference probability."""
        npix = math.prod(self.shape)
        images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=npix)), dtype=F64).view(-1, *self.shape)
        b = params.shape[0]
        probs = torch.stack([self.reference_log_prob(lik, img.expand(b, *self.shape), params) for img in images]).exp()
        assert_close(probs.sum(0), torch.ones(b, dtype=F64), rtol=0, atol=1e-12)  # the reference is normalised
        p = probs[:, :, None, None, None]  # (16, B, 1, 1, 1)
        mean = (p * images[:, None]).sum(0)
        return mean, (p * (images[:, None] - mean).square()).sum(0)

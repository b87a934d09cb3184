"""The model family against exact answers: marginals by quadrature, gradient estimators in expectation,
and the bounds at their limits (STYLE.md sections 2, 3 and 9).

Every model here has four binary pixels, so the exact log p(x) of all 16 images is a 1-D or 2-D
integral that a grid computes to ~1e-10, from the model's own networks but with torch.distributions
densities (not vaelab.objectives), and the 16 probabilities must sum to 1. Importance sampling, the
bounds and the gradient estimators are then checked against those numbers, within Monte Carlo error
computed from the draws themselves. Everything is float64 and seeded.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.testing import assert_close

from vaelab.config import ModelConfig, TrainConfig
from vaelab.evaluation.estimates import log_likelihood_batch, log_weights
from vaelab.maths import ciwae_bound, iwae_bound, miwae_bound
from vaelab.models import VAE, Draws, build_model
from vaelab.models.hierarchy import HierarchicalVAE
from vaelab.objectives.base import training_objective

F64 = torch.float64
Dist = torch.distributions
# every binary 2x2 image once: (16, 1, 2, 2)
ALL_IMAGES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=F64).view(16, 1, 2, 2)


# -- exact references (torch.distributions densities, grids) --------------------------------------
def bernoulli_log_px(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | logits) by torch.distributions: logits (N, P, C, H, W) or (N, C*H*W), x (B, C, H, W) -> (N, B)."""
    logits = logits.reshape(logits.shape[0], 1, -1)  # (N, 1, pixels)
    return Dist.Bernoulli(logits=logits).log_prob(x.reshape(1, x.shape[0], -1)).sum(-1)


def grid_1d(n: int, half: float) -> tuple[torch.Tensor, float]:
    g = torch.linspace(-half, half, n, dtype=F64)
    return g, math.log(float(g[1] - g[0]))


def grid_2d(n: int, half: float) -> tuple[torch.Tensor, float]:
    g, log_h = grid_1d(n, half)
    return torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2), 2 * log_h  # (n*n, 2)


def prior_distribution(model) -> torch.distributions.Distribution:
    """p(z) as torch.distributions: the prior's own to_distribution(), or the VampPrior rebuilt by hand
    as a uniform MixtureSameFamily of the encoder's Gaussians at the pseudo-inputs."""
    if hasattr(model.prior, "to_distribution"):
        return model.prior.to_distribution()
    loc, logvar = model.encoder(model.prior.pseudo_inputs())  # (K, D) each
    comp = Dist.Independent(Dist.Normal(loc, torch.exp(0.5 * logvar)), 1)
    return Dist.MixtureSameFamily(Dist.Categorical(logits=torch.zeros(loc.shape[0], dtype=F64)), comp)


@torch.no_grad()
def exact_log_px_2d(
    model: VAE, x: torch.Tensor, n: int = 400, half: float = 14.0, prior: torch.distributions.Distribution | None = None
) -> torch.Tensor:
    """log int p(z) p(x|z) dz over a 2-D latent on an n x n grid (rectangle rule, spectrally accurate
    for these smooth, fast-decaying integrands), with the model's prior unless `prior` is given.
    Returns (B,) nats."""
    zz, log_cell = grid_2d(n, half)
    log_pz = (prior or prior_distribution(model)).log_prob(zz)  # (n*n,)
    log_px_z = bernoulli_log_px(model.decoder(zz), x)  # (n*n, B)
    return torch.logsumexp(log_pz[:, None] + log_px_z, 0) + log_cell


@torch.no_grad()
def exact_log_px_hierarchy(
    model: HierarchicalVAE, x: torch.Tensor, n2: int = 300, half2: float = 8.0, n1: int = 800, half1: float = 20.0
) -> torch.Tensor:
    """log int int p(z2) p(z1|z2) p(x|z1) dz1 dz2 for 1-D z1 and z2, on an n2 x n1 grid (z1 needs the wider
    one: p(z1|z2) has standard deviations up to ~3.3 here). Returns (B,) nats."""
    g2, log_h2 = grid_1d(n2, half2)
    g1, log_h1 = grid_1d(n1, half1)
    log_p2 = prior_distribution(model).log_prob(g2[:, None])  # (n2,)
    loc, logvar = model.down[0](g2[:, None])  # p(z1 | z2) at every z2: (n2, 1) each
    log_p12 = Dist.Normal(loc, torch.exp(0.5 * logvar)).log_prob(g1[None, :])  # (n2, n1)
    log_px1 = bernoulli_log_px(model.decoder(g1[:, None]), x)  # (n1, B)
    inner = torch.logsumexp(log_p12[:, :, None] + log_px1[None], 1)  # (n2, B)
    return torch.logsumexp(log_p2[:, None] + inner, 0) + log_h2 + log_h1


def is_stderr(log_w: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of log mean_k w_k from (K, B) log-weights: sd(w) / (sqrt(K) mean(w))."""
    w = torch.exp(log_w - log_w.max(0).values)
    return w.std(0) / (w.mean(0) * math.sqrt(log_w.shape[0]))


def chunked_log_weights(model, x: torch.Tensor, k: int, chunk: int, seed: int) -> torch.Tensor:
    """The (K, B) log-weights that log_likelihood_batch(model, x, k, chunk, Generator(seed)) reduces."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([log_weights(model, x, min(chunk, k - s), g) for s in range(0, k, chunk)])


# -- models -------------------------------------------------------------------------------------
def hierarchy(prior: str = "normal", seed: int = 0) -> HierarchicalVAE:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        input_shape=(1, 2, 2),
        likelihood="bernoulli",
        activation="tanh",
        prior=prior,
        prior_components=3,
        layers=[{"hidden": [8], "latent_dim": 1}, {"hidden": [8], "latent_dim": 1}],
    )
    model = build_model(cfg).double()
    assert isinstance(model, HierarchicalVAE)
    with torch.no_grad():
        # a generative model away from its init: p(z1|z2) moves with z2, pixels depend on z1
        for p in model.down.parameters():
            p.mul_(3.0)
        for p in model.decoder.parameters():
            p.mul_(2.0)
        # proposals wider than the posteriors: q(z1|x) std ~4.5 covers p(z1|z2) (std up to ~3.3), q(z2|z1)
        # std ~2 covers p(z2) = N(0, 1); the weights then have a finite variance and the delta-method
        # standard error is honest (with std ~2 for q(z1|x) it was not: |t| up to 4.5)
        model.encoder.head.bias[1:] += 3.0
        model.up[0].head.bias[1:] += 1.5
        if prior == "mog":
            model.prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
            model.prior.loc.copy_(torch.tensor([[-2.0], [0.5], [2.0]]))
            model.prior.logvar.copy_(torch.tensor([[-1.0], [-0.5], [-1.5]]))
    return model.eval()


def single_layer(prior: str = "normal", posterior: str = "gaussian", seed: int = 0) -> VAE:
    """A 2-D latent VAE with 4 pixels, its prior and flow moved far from their (near-trivial) inits."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        input_shape=(1, 2, 2),
        hidden=(8,),
        latent_dim=2,
        activation="tanh",
        prior=prior,
        prior_components=3,
        posterior=posterior,
        flow_steps=2,
        flow_hidden=16,
    )
    model = VAE(cfg).double()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(2.0)
        model.decoder.body[0].weight.mul_(2.0)  # p(x|z) that varies with z: the prior's shape matters
        # a wide q(z|x) (or flow base): light-tailed weights
        model.encoder.head.bias[2:] += 1.0 if posterior == "gaussian" else 1.5
        if prior == "mog":
            model.prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
            model.prior.loc.copy_(torch.tensor([[-2.0, 1.0], [0.5, 0.0], [2.0, -2.0]]))
            model.prior.logvar.copy_(torch.tensor([[-1.0, -0.5], [0.0, -1.5], [-1.0, 0.5]]))
        if prior == "vamp":
            model.prior.pseudo_logits.normal_(0.0, 2.0)  # distinct pseudo-inputs ...
            model.encoder.head.weight[:2] *= 3.0  # ... and an encoder that tells them apart
        if posterior == "planar":
            flow = model.posterior_family.flow
            flow.params.weight.normal_(0.0, 0.3)
            flow.params.bias.normal_(0.0, 0.7)
        if posterior == "iaf":
            for step in model.posterior_family.flow.transforms:
                if hasattr(step, "made"):
                    step.made.out.weight.normal_(0.0, 0.3)
                    step.made.out.bias.normal_(0.0, 0.3)
    return model.eval()


# -- 1. exact marginals: two stochastic layers, mixture and VampPriors ------------------------------
@pytest.mark.parametrize("prior", ["normal", "mog"])
def test_hierarchy_importance_sampling_matches_the_quadrature_marginal(prior):
    model = hierarchy(prior)
    x = ALL_IMAGES
    exact = exact_log_px_hierarchy(model, x)
    # the reference is a distribution over the 16 images (measured 1 - sum = 2e-10) and converged
    assert_close(torch.logsumexp(exact, 0), torch.zeros((), dtype=F64), atol=1e-8, rtol=0)
    assert_close(exact_log_px_hierarchy(model, x, 200, 7.0, 600, 16.0), exact, atol=1e-6, rtol=0)
    k, chunk = 40_000, 5_000
    log_w = chunked_log_weights(model, x, k, chunk, seed=1)  # (K, 16)
    est = log_likelihood_batch(model, x, k, chunk=chunk, generator=torch.Generator().manual_seed(1))
    assert_close(est, iwae_bound(log_w), atol=1e-12, rtol=0)  # the chunks are reduced as one table
    se = is_stderr(log_w)
    assert ((est - exact).abs() < 4 * se + 1e-6).all(), ((est - exact) / se, se)
    # teeth: the tolerance is far below the gap to the ELBO, so a bound or a wrong density shows
    elbo = log_w.mean(0)
    assert float(se.max()) < 0.03  # measured ~0.014
    assert ((exact - elbo) > 5 * 4 * se).all(), (exact - elbo, se)


def test_hierarchy_iwae_bound_rises_with_k_and_stays_below_log_px():
    model = hierarchy()
    x = ALL_IMAGES
    exact = exact_log_px_hierarchy(model, x)  # (16,)
    blocks, size = 100, 1000
    pool = chunked_log_weights(model, x, blocks * size, 10_000, seed=2).view(blocks, size, -1)  # (100, 1000, 16)
    means, ses, per_block = {}, {}, {}
    for k in (1, 10, 100, 1000):
        # in each block of 1000 draws: the mean of the size/k bounds with k draws each, per image
        b = iwae_bound(pool.view(blocks, size // k, k, -1).movedim(2, 0))  # (blocks, size/k, 16)
        per_block[k] = b.mean(1)  # (blocks, 16)
    for k1, k2 in ((1, 10), (10, 100), (100, 1000)):
        gain = (per_block[k2] - per_block[k1]).mean(1)  # (blocks,), averaged over the 16 images
        mean, se = float(gain.mean()), float(gain.std() / math.sqrt(blocks))
        assert mean > 3 * se > 0, (k1, k2, mean, se)
    for k in (1, 1000):
        means[k] = per_block[k].mean(0)  # (16,)
        ses[k] = per_block[k].std(0) / math.sqrt(blocks)
    # below log p(x) image by image (within noise), and K = 1 (the ELBO) clearly below
    assert (means[1000] < exact + 3 * ses[1000]).all(), (means[1000] - exact, ses[1000])
    assert ((exact - means[1]) > 10 * ses[1]).all()
    # and approaching it: the K = 1000 gap is under a tenth of the ELBO's
    assert float((exact - means[1000]).mean()) < 0.1 * float((exact - means[1]).mean())


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_single_layer_with_a_learned_prior_matches_its_quadrature_marginal(prior):
    model = single_layer(prior)
    x = ALL_IMAGES
    with torch.no_grad():
        zz, log_cell = grid_2d(400, 14.0)
        # the model's log p(z) is the reference density, and that density integrates to 1 on the grid
        assert_close(model.prior.log_prob(zz), prior_distribution(model).log_prob(zz), atol=1e-10, rtol=0)
        mass = torch.logsumexp(model.prior.log_prob(zz), 0) + log_cell
    assert_close(mass, torch.zeros((), dtype=F64), atol=1e-7, rtol=0)
    exact = exact_log_px_2d(model, x)
    assert_close(torch.logsumexp(exact, 0), torch.zeros((), dtype=F64), atol=1e-7, rtol=0)
    log_w = chunked_log_weights(model, x, 20_000, 5_000, seed=3)
    est, se = iwae_bound(log_w), is_stderr(log_w)
    assert ((est - exact).abs() < 4 * se + 1e-6).all(), ((est - exact) / se, se)
    assert float(se.max()) < 0.03
    # teeth: the answer with an N(0, I) prior in its place is, on average, far outside the tolerance
    zero = torch.zeros(2, dtype=F64)
    wrong = exact_log_px_2d(model, x, prior=Dist.Independent(Dist.Normal(zero, zero + 1.0), 1))
    # (measured 3.2x for mog, 7.5x for vamp), and the ELBO is far below too
    assert float((exact - wrong).abs().mean()) > 2.5 * float(4 * se.mean()), ((exact - wrong).abs().mean(), se.mean())
    assert ((exact - log_w.mean(0)) > 5 * 4 * se).all()


# -- 2. flow posteriors: a normalised density whose IS answer does not depend on the posterior -------
def _flow_parts(model: VAE, x: torch.Tensor):
    h = model.encoder.features(x)  # (B, F)
    loc, logvar = model.encoder.params(h)  # (B, D) each
    return h, loc, logvar, model.posterior_family.flow


@pytest.mark.parametrize("posterior", ["planar", "iaf"])
def test_flow_draws_carry_the_density_of_the_change_of_variables(posterior):
    """log q(z_T|x) of the draws = log N(z0) - log|det J| with J the autograd Jacobian of the flow at z0,
    and z0 = f^{-1}(z_T) is the base draw loc + exp(logvar/2) eps."""
    model = single_layer(posterior=posterior)
    x = ALL_IMAGES[[3, 6, 9, 14]]
    eps = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    d = model(x, None, eps)
    h, loc, logvar, flow = _flow_parts(model, x)
    with torch.no_grad():
        z0 = loc + torch.exp(0.5 * logvar) * eps  # (3, 4, 2)
        assert_close(flow.inverse(d.z, h)[0], z0, atol=1e-9, rtol=0)
        # the flow moved z: it is not the identity (logabsdet ~ 0) that would make this trivial
        assert float((d.z - z0).abs().max()) > 0.3
    jac = torch.autograd.functional.jacobian(lambda z: flow(z, h)[0], z0)  # (3, 4, 2, 3, 4, 2)
    idx = torch.arange(3)[:, None], torch.arange(4)[None, :]
    blocks = jac[idx[0], idx[1], :, idx[0], idx[1], :]  # (3, 4, 2, 2): dz_T/dz0 of each draw
    log_det = torch.linalg.slogdet(blocks).logabsdet  # (3, 4)
    assert float(log_det.abs().max()) > 0.1
    ref = Dist.Independent(Dist.Normal(loc, torch.exp(0.5 * logvar)), 1).log_prob(z0) - log_det
    assert_close(d.log_qz_x.detach(), ref.detach(), atol=1e-9, rtol=0)


@pytest.mark.parametrize("posterior", ["planar", "iaf"])
def test_flow_posterior_integrates_to_one_on_a_grid_of_z_T(posterior):
    model = single_layer(posterior=posterior)
    x = ALL_IMAGES[[0, 5, 10, 15]]
    zz, log_cell = grid_2d(300, 12.0)
    with torch.no_grad():
        h, loc, logvar, flow = _flow_parts(model, x)
        zt = zz[:, None, :].expand(-1, len(x), 2)  # (n*n, 4, 2): every grid point for every image
        z0, inverse_logabsdet = flow.inverse(zt, h)
        back, logabsdet = flow(z0, h)
        assert_close(inverse_logabsdet, -logabsdet, atol=1e-8, rtol=0)  # nflows' convention, both ways
        assert_close(back, zt, atol=1e-8, rtol=0)  # every grid point was inverted
        log_q0 = Dist.Independent(Dist.Normal(loc, torch.exp(0.5 * logvar)), 1).log_prob(z0)  # (n*n, 4)
        mass = torch.logsumexp(log_q0 - logabsdet, 0) + log_cell  # (4,)
        without_det = torch.logsumexp(log_q0, 0) + log_cell
    assert_close(mass, torch.zeros_like(mass), atol=1e-4, rtol=0)
    assert float(without_det.abs().max()) > 0.05  # the log-determinant matters here


@pytest.mark.parametrize("posterior", ["planar", "iaf"])
def test_flow_posterior_importance_sampling_matches_the_quadrature_marginal(posterior):
    model = single_layer(posterior=posterior)
    x = ALL_IMAGES
    exact = exact_log_px_2d(model, x)  # prior x likelihood: no posterior in it
    assert_close(torch.logsumexp(exact, 0), torch.zeros((), dtype=F64), atol=1e-7, rtol=0)
    log_w = chunked_log_weights(model, x, 20_000, 5_000, seed=5)
    est, se = iwae_bound(log_w), is_stderr(log_w)
    assert ((est - exact).abs() < 4 * se + 1e-6).all(), ((est - exact) / se, se)
    assert float(se.max()) < 0.06  # measured 0.047 (planar), 0.015 (iaf)
    assert ((exact - log_w.mean(0)) > 5 * 4 * se).all()


# -- 3. gradient estimators in expectation (Roeder et al. 2017; Tucker et al. 2018) ----------------
X_GRAD = ALL_IMAGES[[1, 4, 7, 10, 11, 13, 14, 15]]  # (8, 1, 2, 2)


def grad_model(prior: str = "normal", seed: int = 0) -> VAE:
    """Gaussian q(z|x), N(0, I) prior (or another), 4 pixels, hidden (4,), latent 2, a sharper decoder."""
    torch.manual_seed(seed)
    model = VAE(
        ModelConfig(
            input_shape=(1, 2, 2), hidden=(4,), latent_dim=2, activation="tanh", prior=prior, prior_components=3
        )
    ).double()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(2.0)
    return model


def gradients(model: VAE, eps: torch.Tensor, objective: str, estimator: str, m: int = 1):
    """(encoder gradient, decoder gradient) of the loss -surrogate.mean() for one draw of noise eps."""
    d = model(X_GRAD, None, eps, stop_gradient=estimator != "reparam")
    surrogate = training_objective(d, TrainConfig(objective=objective, estimator=estimator, m=m)).surrogate
    enc, dec = list(model.inference_parameters()), list(model.generative_parameters())
    gs = torch.autograd.grad(-surrogate.mean(), enc + dec, allow_unused=True)
    flat = [torch.zeros_like(p).flatten() if g is None else g.flatten() for p, g in zip(enc + dec, gs)]
    return torch.cat(flat[: len(enc)]), torch.cat(flat[len(enc) :])


def replicate(model: VAE, rows: int, reps: int, objective: str, estimators: tuple[str, ...], m: int = 1, seed: int = 0):
    """{estimator: (encoder grads (R, P), decoder grads (R, P'))}, every estimator on the same noise."""
    g = torch.Generator().manual_seed(seed)
    out = {e: ([], []) for e in estimators}
    for _ in range(reps):
        eps = torch.randn(rows, len(X_GRAD), model.noise_dim, generator=g, dtype=F64)
        for e in estimators:
            enc, dec = gradients(model, eps, objective, e, m)
            out[e][0].append(enc)
            out[e][1].append(dec)
    return {e: (torch.stack(a), torch.stack(b)) for e, (a, b) in out.items()}


def t_statistics(diff: torch.Tensor) -> torch.Tensor:
    """Paired t statistic of each coordinate of (R, P) differences; 0 where the difference is exactly 0."""
    se = diff.std(0) / math.sqrt(diff.shape[0])
    return torch.where(se > 0, diff.mean(0) / se.clamp_min(1e-300), torch.zeros_like(se))


# vamp: the encoder is in log p(z) too (the pseudo-inputs' posteriors), a path the z hook must leave alone
@pytest.mark.parametrize(
    "objective,m,k,prior", [("iwae", 1, 5, "normal"), ("miwae", 2, 3, "normal"), ("iwae", 1, 5, "vamp")]
)
def test_dreg_is_unbiased_for_the_iwae_gradient(objective, m, k, prior):
    model = grad_model(prior)
    g = replicate(model, m * k, 400, objective, ("reparam", "dreg"), m, seed=6)
    t = t_statistics(g["dreg"][0] - g["reparam"][0])  # (40,) encoder coordinates, common random numbers
    assert float(t.abs().max()) < 4.0, t  # measured max |t| 1.4 (iwae), 1.2 (miwae), 2.1 (vamp)
    assert float((g["reparam"][0].mean(0)).abs().max()) > 1e-2  # a gradient that is not zero anyway
    # decoder: the same sum_k w~_k d log w_k / d theta on every draw, so equal draw by draw
    assert_close(g["dreg"][1], g["reparam"][1], atol=1e-12, rtol=0)


def test_stl_elbo_gradient_equals_the_closed_form_kl_gradient_in_expectation():
    model = grad_model()
    g = replicate(model, 1, 400, "elbo", ("reparam", "stl"), seed=7)
    t = t_statistics(g["stl"][0] - g["reparam"][0])
    assert float(t.abs().max()) < 4.0, t  # measured 1.4
    assert float((g["stl"][0] - g["reparam"][0]).abs().max()) > 1e-3  # different estimators draw by draw
    assert_close(g["stl"][1], g["reparam"][1], atol=1e-12, rtol=0)


def test_stl_on_iwae_is_biased_so_the_unbiasedness_tests_have_power():
    """Tucker et al. 2018 (sec. 3): for K > 1 dropping the score term of the IWAE gradient is biased
    (the DReG weights are w~^2, not w~). The library accepts estimator stl with objective iwae; this
    pins that it then follows a different expected gradient, and shows that the paired t test above
    sees a wrong weighting (measured max |t| 39 with 150 replicates)."""
    model = grad_model()
    g = replicate(model, 5, 150, "iwae", ("reparam", "stl"), seed=8)
    t = t_statistics(g["stl"][0] - g["reparam"][0])
    assert float(t.abs().max()) > 10.0, t
    assert_close(g["stl"][1], g["reparam"][1], atol=1e-12, rtol=0)


def test_dreg_encoder_gradient_has_far_lower_variance_than_reparam_at_k50():
    model = grad_model()
    g = replicate(model, 50, 150, "iwae", ("reparam", "dreg"), seed=9)
    var_reparam = float(g["reparam"][0].var(0).sum())
    var_dreg = float(g["dreg"][0].var(0).sum())
    # measured ratio 740 (~50 at K = 5): the reparameterised inference gradient's noise
    # does not fall with K, DReG's does (Rainforth et al. 2018; Tucker et al. 2018)
    assert var_reparam > 100 * var_dreg, (var_reparam, var_dreg)


# -- 4. bounds at their limits (pure functions, exact) -----------------------------------------------
def _log_w(rows: int, b: int = 3, seed: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(rows, b, generator=g, dtype=F64) - 20.0


def _log_mean_exp_by_hand(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


def test_iwae_bound_by_hand_and_at_extreme_values():
    lw = _log_w(7)
    ref = torch.tensor([_log_mean_exp_by_hand(lw[:, j].tolist()) for j in range(3)], dtype=F64)
    assert_close(iwae_bound(lw), ref, atol=1e-12, rtol=0)
    const = torch.full((6, 2), -1e4, dtype=F64)  # exp would underflow: the bound is still exact
    assert_close(iwae_bound(const), torch.full((2,), -1e4, dtype=F64), atol=1e-9, rtol=0)


def test_miwae_and_ciwae_at_their_limits():
    lw = _log_w(12)
    assert_close(miwae_bound(lw, 1), iwae_bound(lw), atol=1e-12, rtol=0)
    assert_close(miwae_bound(lw, 12), lw.mean(0), atol=1e-12, rtol=0)  # K = 1 per group: the ELBO
    assert_close(ciwae_bound(lw, 1.0), lw.mean(0), atol=1e-12, rtol=0)
    assert_close(ciwae_bound(lw, 0.0), iwae_bound(lw), atol=1e-12, rtol=0)
    # between: ELBO <= CIWAE <= IWAE
    mid = ciwae_bound(lw, 0.3)
    assert (lw.mean(0) <= mid).all() and (mid <= iwae_bound(lw)).all()


@pytest.mark.parametrize("m", [2, 3, 4, 6])
def test_miwae_is_the_mean_of_iwae_over_contiguous_groups(m):
    lw = _log_w(12)
    k = 12 // m
    ref = torch.tensor(
        [sum(_log_mean_exp_by_hand(lw[j * k : (j + 1) * k, b].tolist()) for j in range(m)) / m for b in range(3)],
        dtype=F64,
    )
    assert_close(miwae_bound(lw, m), ref, atol=1e-12, rtol=0)


def _fixed_draws(rows: int, b: int = 3) -> Draws:
    g = torch.Generator().manual_seed(11)
    px, pz, qz = (torch.randn(rows, b, generator=g, dtype=F64) for _ in range(3))
    return Draws(
        torch.zeros(rows, b, 2, dtype=F64),
        torch.zeros(rows, b, 1, 1, 2, 2, dtype=F64),
        px - 5.0,
        lambda: pz - 2.0,
        lambda: qz,
        None,
    )


def test_piwae_returns_iwae_over_all_draws_and_miwae_of_the_groups():
    d = _fixed_draws(12)
    lw = d.log_px_z + d.log_pz - d.log_qz_x
    out = training_objective(d, TrainConfig(objective="piwae", m=3))
    generative, inference = out.surrogate, out.inference
    assert out.terms == {}
    assert_close(generative, iwae_bound(lw), atol=1e-12, rtol=0)
    ref = torch.tensor(
        [sum(_log_mean_exp_by_hand(lw[4 * j : 4 * j + 4, b].tolist()) for j in range(3)) / 3 for b in range(3)],
        dtype=F64,
    )
    assert_close(inference, ref, atol=1e-12, rtol=0)
    assert_close(out.bound, iwae_bound(lw), atol=1e-12, rtol=0)
    assert_close(out.elbo, lw.mean(0), atol=1e-12, rtol=0)  # no closed-form KL: the mean of log w
    assert_close(out.log_px_z - out.kl, lw.mean(0), atol=1e-12, rtol=0)


@pytest.mark.parametrize("objective,m", [("iwae", 1), ("miwae", 3)])
def test_dreg_bound_and_decoder_gradient_are_the_bounds_exactly(objective, m):
    model = grad_model()
    eps = torch.randn(6, len(X_GRAD), 2, generator=torch.Generator().manual_seed(12), dtype=F64)
    dec = list(model.generative_parameters())
    d_dreg = model(X_GRAD, None, eps, stop_gradient=True)
    out = training_objective(d_dreg, TrainConfig(objective=objective, estimator="dreg", m=m))
    surrogate, bound = out.surrogate, out.bound
    d_ref = model(X_GRAD, None, eps)
    ref = miwae_bound(d_ref.log_w, m)  # the bound, through the reparameterised draws
    assert_close(bound, ref.detach(), atol=1e-12, rtol=0)
    assert not bound.requires_grad  # the value is reported, not trained
    g_dreg = torch.autograd.grad(surrogate.sum(), dec)
    g_ref = torch.autograd.grad(ref.sum(), dec)
    for a, b in zip(g_dreg, g_ref):
        assert_close(a, b, atol=1e-10, rtol=0)


def test_dreg_encoder_gradient_is_the_squared_weight_path_derivative():
    """Tucker et al. 2018, eq. (5), written without the library's hook: sum_k w~_k^2 d log w_k / d z_k dz_k/d phi
    with log q at stopped parameters, and w~ normalised within each of the m groups."""
    model = grad_model()
    m, k = 2, 4
    eps = torch.randn(m * k, len(X_GRAD), 2, generator=torch.Generator().manual_seed(13), dtype=F64)
    enc = list(model.inference_parameters())
    d = model(X_GRAD, None, eps, stop_gradient=True)
    surrogate = training_objective(d, TrainConfig(objective="miwae", estimator="dreg", m=m)).surrogate
    g_lib = torch.autograd.grad(surrogate.sum(), enc)
    d2 = model(X_GRAD, None, eps, stop_gradient=True)
    lw = d2.log_w.view(m, k, -1)
    w2 = torch.softmax(lw.detach(), 1).square()
    g_hand = torch.autograd.grad((w2 * lw).sum(1).mean(0).sum(), enc)
    for a, b in zip(g_lib, g_hand):
        assert_close(a, b, atol=1e-10, rtol=0)
    # and it is not the w~ (STL) weighting
    g_stl = torch.autograd.grad(miwae_bound(model(X_GRAD, None, eps, stop_gradient=True).log_w, m).sum(), enc)
    assert max(float((a - b).abs().max()) for a, b in zip(g_lib, g_stl)) > 1e-3


# -- 5. the model's answer: densities and the closed-form KL ------------------------------------------
def test_gaussian_draws_carry_torch_distributions_densities_and_the_kl_is_their_mean():
    model = grad_model()
    x = ALL_IMAGES
    eps = torch.randn(4, 16, 2, generator=torch.Generator().manual_seed(14), dtype=F64)
    with torch.no_grad():
        d = model(x, None, eps)
        loc, logvar = model.encode(x)
        q = Dist.Independent(Dist.Normal(loc, torch.exp(0.5 * logvar)), 1)
        assert_close(d.z, loc + torch.exp(0.5 * logvar) * eps, atol=1e-12, rtol=0)
        assert_close(d.log_qz_x, q.log_prob(d.z), atol=1e-12, rtol=0)
        assert_close(d.log_qz_x, model.posterior(x).log_prob(d.z), atol=1e-12, rtol=0)
        assert_close(d.log_pz, Dist.Normal(0.0, 1.0).log_prob(d.z).sum(-1), atol=1e-12, rtol=0)
        assert_close(
            d.log_px_z,
            bernoulli_log_px(d.params.reshape(-1, 4), x).view(4, 16, 16).diagonal(0, 1, 2),
            atol=1e-12,
            rtol=0,
        )
        # the stop-gradient answer has the same values and no closed-form KL
        s = model(x, None, eps, stop_gradient=True)
        assert s.kl is None
        assert_close(s.log_qz_x, d.log_qz_x, atol=0, rtol=0)
        # the closed-form KL is the Monte Carlo mean of log q - log p over many draws
        n = 200_000
        big = model(x, None, torch.randn(n, 16, 2, generator=torch.Generator().manual_seed(15), dtype=F64))
        diff = big.log_qz_x - big.log_pz  # (n, 16)
        mc, se = diff.mean(0), diff.std(0) / math.sqrt(n)
    assert ((d.kl - mc).abs() < 4 * se).all(), (d.kl - mc) / se
    assert_close(
        d.kl,
        torch.distributions.kl_divergence(
            q, Dist.Independent(Dist.Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
        ),
        atol=1e-12,
        rtol=0,
    )

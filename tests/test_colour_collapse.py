"""Issue #23: posterior collapse in the colour presets. Free bits (objectives.free_bits_kl, the
train.free_bits switch), the presets' defaults against collapse, and the colour_shapes data set."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from vaelab import maths
from vaelab.config import DataConfig, ModelConfig, RunConfig, StochasticLayer, TrainConfig
from vaelab.config_io import load_preset
from vaelab.data import DataSplits, ImageData, load_splits
from vaelab.data.colour_shapes import (
    BACKGROUND,
    FACTOR_NAMES,
    FACTOR_SIZES,
    FOREGROUND,
    factors_path,
    information_bits,
    make_colour_shapes,
    render,
    write_colour_shapes,
)
from vaelab.errors import ConfigError
from vaelab.models import build_model
from vaelab.objectives.base import Step, training_objective
from vaelab.training import fit

# -- the free-bits KL term --------------------------------------------------------------------


def test_free_bits_kl_is_the_hand_computed_formula():
    """lambda 0.5; per-dimension KLs of 3 images: dimension 0 averages 0.2 (under lambda), 1 averages 0.8.
    Per image: lambda + KL_b1 = 1.5, 1.3, 1.1; batch mean max(0.5, 0.2) + max(0.5, 0.8) = 1.3."""
    kl = torch.tensor([[0.1, 1.0], [0.2, 0.8], [0.3, 0.6]], dtype=torch.float64)
    fb = maths.free_bits_kl(kl, 0.5)
    torch.testing.assert_close(fb, torch.tensor([1.5, 1.3, 1.1], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(fb.mean(), torch.tensor(1.3, dtype=torch.float64), rtol=0, atol=1e-15)
    # both dimensions under lambda 2: every image is charged 2 x 2 nats; none under 0.1: the plain KL
    torch.testing.assert_close(maths.free_bits_kl(kl, 2.0), torch.full((3,), 4.0, dtype=torch.float64))
    torch.testing.assert_close(maths.free_bits_kl(kl, 0.1), kl.sum(-1), rtol=0, atol=0)
    log_px_z = torch.tensor([-10.0, -20.0, -30.0], dtype=torch.float64)
    torch.testing.assert_close(
        maths.elbo_free_bits(log_px_z, kl, 0.5, beta=0.25),
        log_px_z - 0.25 * torch.tensor([1.5, 1.3, 1.1], dtype=torch.float64),
        rtol=0,
        atol=1e-14,
    )


def test_free_bits_batch_mean_is_the_papers_sum_of_maxima():
    """Kingma et al. 2016: sum_d max(lambda, mean_b KL_bd), on random per-dimension KLs from (loc, logvar)."""
    g = torch.Generator().manual_seed(3)
    loc = torch.randn(16, 10, generator=g, dtype=torch.float64) * torch.linspace(0.05, 2.0, 10, dtype=torch.float64)
    logvar = torch.randn(16, 10, generator=g, dtype=torch.float64) * 0.3
    kl = maths.gaussian_kl_per_dim(loc, logvar)
    assert torch.equal(kl.sum(-1), maths.gaussian_kl(loc, logvar))  # the same terms, summed the same way
    expected = 0.5 * (logvar.exp() + loc**2 - 1 - logvar)
    torch.testing.assert_close(kl, expected, rtol=1e-12, atol=1e-14)
    for lam in (0.0, 0.05, 0.3, 1.0, 5.0):
        paper = torch.clamp(kl.mean(0), min=lam).sum()
        torch.testing.assert_close(maths.free_bits_kl(kl, lam).mean(), paper, rtol=1e-13, atol=1e-13)


def test_free_bits_kl_has_zero_gradient_below_the_threshold():
    g = torch.Generator().manual_seed(1)
    # dimensions 0-3 near the prior (batch-mean KL ~0.005 nats), 4-7 far from it (~2 nats)
    scale = torch.tensor([0.1] * 4 + [2.0] * 4, dtype=torch.float64)
    loc = (torch.randn(32, 8, generator=g, dtype=torch.float64) * scale).requires_grad_()
    logvar = (torch.randn(32, 8, generator=g, dtype=torch.float64) * 0.05).requires_grad_()
    lam = 0.5
    kl = maths.gaussian_kl_per_dim(loc, logvar)
    below = kl.detach().mean(0) < lam
    assert below.tolist() == [True] * 4 + [False] * 4
    maths.free_bits_kl(kl, lam).mean().backward()
    assert loc.grad is not None and logvar.grad is not None
    assert torch.all(loc.grad[:, below] == 0) and torch.all(logvar.grad[:, below] == 0)
    # above the threshold: exactly the plain KL's gradient
    loc2, logvar2 = loc.detach().clone().requires_grad_(), logvar.detach().clone().requires_grad_()
    maths.gaussian_kl(loc2, logvar2).mean().backward()
    assert loc2.grad is not None and logvar2.grad is not None
    torch.testing.assert_close(loc.grad[:, ~below], loc2.grad[:, ~below], rtol=0, atol=1e-15)
    torch.testing.assert_close(logvar.grad[:, ~below], logvar2.grad[:, ~below], rtol=0, atol=1e-15)
    assert torch.all(loc2.grad[:, below] != 0)  # which the plain KL would have pulled to the prior


# -- training_objective and fit ----------------------------------------------------------------


def _model(**kw):
    cfg = ModelConfig(input_shape=(1, 4, 4), hidden=(16,), latent_dim=3, **kw)
    return build_model(cfg)


@pytest.mark.parametrize("klw", [1.0, 0.3])
def test_free_bits_zero_is_the_plain_elbo_bit_for_bit(klw):
    torch.manual_seed(0)
    model = _model()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 4, 4, generator=g)
    eps = torch.randn(1, 5, 3, generator=g)
    plain = training_objective(model(x, None, eps), TrainConfig(), Step(klw=klw))
    zero = training_objective(model(x, None, eps), TrainConfig(free_bits=0.0), Step(klw=klw))
    for name in ("surrogate", "bound", "elbo", "log_px_z", "kl"):
        assert torch.equal(getattr(plain, name), getattr(zero, name))
    d = model(x, None, eps)
    assert torch.equal(zero.surrogate, maths.elbo(d.log_px_z[0], maths.gaussian_kl(d.loc, d.logvar), klw))


def test_free_bits_in_training_objective_charges_lambda_per_quiet_dimension():
    """An untrained encoder sits near the prior: with lambda 10 every dimension is under it, so the
    objective is log p(x|z) - klw * D * lambda, while the reported elbo keeps the true KL."""
    torch.manual_seed(0)
    model = _model()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 4, 4, generator=g)
    eps = torch.randn(1, 6, 3, generator=g)
    out = training_objective(model(x, None, eps), TrainConfig(free_bits=10.0), Step(klw=0.5))
    surrogate, bound, elbo, rec, kl, terms = out.surrogate, out.bound, out.elbo, out.log_px_z, out.kl, out.terms
    assert float(kl.detach().mean()) < 10.0 and terms == {}
    torch.testing.assert_close(surrogate, rec - 0.5 * 3 * 10.0, rtol=0, atol=1e-4)
    assert torch.equal(surrogate, bound)
    torch.testing.assert_close(elbo, rec - kl, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "train, match",
    [
        ({"objective": "iwae", "k": 5, "free_bits": 0.5}, "free_bits 0.5 .*objective iwae"),
        ({"objective": "ciwae", "k": 5, "free_bits": 0.5}, "free_bits"),
        ({"objective": "betatc", "beta": 6.0, "free_bits": 0.5}, "free_bits"),
        ({"objective": "elbo", "estimator": "stl", "free_bits": 0.5}, "estimator stl"),
        ({"free_bits": -0.1}, "free_bits must be >= 0"),
        ({"free_bits": math.inf}, "free_bits must be >= 0"),
    ],
)
def test_free_bits_is_refused_with_other_objectives(train, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**train)


@pytest.mark.parametrize(
    "model_kw",
    [
        {"posterior": "planar", "flow_steps": 2},  # a flow: no closed-form KL
        {"posterior": "iaf", "flow_steps": 1},
        {"prior": "mog", "prior_components": 2},  # no per-dimension KL against a mixture
        {"prior": "vamp", "prior_components": 2},
        {"posterior": "gumbel", "prior": "uniform", "categories": 3},  # discrete latents
        {"layers": (StochasticLayer((8,), 4), StochasticLayer((8,), 2))},  # a hierarchy
    ],
)
def test_free_bits_is_refused_for_models_without_a_per_dimension_kl(model_kw):
    torch.manual_seed(0)
    model = _model(**model_kw)
    x = torch.rand(4, 1, 4, 4)
    with pytest.raises(ConfigError, match="train.free_bits 0.25 .*set train.free_bits 0"):
        training_objective(model(x), TrainConfig(free_bits=0.25))


def _splits(n: int = 64) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n + 16, 1, 4, 4), generator=g, dtype=torch.uint8)
    return DataSplits("synthetic", ImageData(x[:n]), ImageData(x[n : n + 8]), ImageData(x[n + 8 :]), 0)


def _cfg(model: ModelConfig, **train) -> RunConfig:
    tc = TrainConfig(epochs=1, batch_size=16, device="cpu", threads=1, **train)
    return RunConfig(data=DataConfig(dataset="synthetic"), model=model, train=tc)


def test_fit_trains_on_the_free_bits_objective():
    """One epoch (4 steps) through fit: with free bits 10 nats (above every dimension's KL) the
    logged objective is log p(x|z) - 3 x 10 nats, the logged ELBO the plain one; with 0, the
    objective is the ELBO."""
    mcfg = ModelConfig(input_shape=(1, 4, 4), hidden=(16,), latent_dim=3, likelihood="gaussian")
    torch.manual_seed(0)
    row = fit(build_model(mcfg), _splits(), _cfg(mcfg, free_bits=10.0), progress=False).metrics[0]
    assert row["train_kl"] < 10.0
    assert row["train_objective"] == pytest.approx(row["train_log_px_z"] - 30.0, abs=1e-3)
    assert row["train_elbo"] == pytest.approx(row["train_log_px_z"] - row["train_kl"], abs=1e-3)
    torch.manual_seed(0)
    plain = fit(build_model(mcfg), _splits(), _cfg(mcfg), progress=False).metrics[0]
    assert plain["train_objective"] == plain["train_elbo"]


def test_fit_refuses_free_bits_for_a_flow_posterior():
    mcfg = ModelConfig(input_shape=(1, 4, 4), hidden=(16,), latent_dim=3, posterior="planar", flow_steps=2)
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="train.free_bits"):
        fit(build_model(mcfg), _splits(), _cfg(mcfg, free_bits=0.25), progress=False)


# -- the presets -------------------------------------------------------------------------------


def test_colour_presets_guard_against_collapse_and_the_guard_can_be_switched_off():
    cifar, celeba = load_preset("cifar").train, load_preset("celeba64").train
    assert (cifar.free_bits, cifar.warmup_epochs) == (0.25, 1)
    assert (celeba.free_bits, celeba.warmup_epochs) == (0.25, 0)
    old = load_preset("cifar").override({"train.warmup_epochs": 0, "train.free_bits": 0})
    assert (old.train.free_bits, old.train.warmup_epochs) == (0.0, 0)
    assert TrainConfig().free_bits == 0.0  # every other preset and old run folder: the plain ELBO


# -- the colour_shapes data set ------------------------------------------------------------------


def test_colour_shapes_are_seeded_and_their_factors_are_in_range():
    x, y, f = make_colour_shapes(300, 32, seed=5)
    assert x.shape == (300, 3, 32, 32) and x.dtype == np.uint8
    assert y.dtype == np.int64 and np.array_equal(y, f[:, 0])
    x2, _, f2 = make_colour_shapes(300, 32, seed=5)
    assert np.array_equal(x, x2) and np.array_equal(f, f2)
    x3, _, _ = make_colour_shapes(300, 32, seed=6)
    assert not np.array_equal(x, x3)
    assert f.shape == (300, len(FACTOR_NAMES)) and len(FACTOR_SIZES) == len(FACTOR_NAMES)
    for j, k in enumerate(FACTOR_SIZES):
        assert f[:, j].min() >= 0 and f[:, j].max() < k
        assert len(np.unique(f[:, j])) == k  # 300 uniform draws reach every value
    solid = f[:, 5] == 0
    assert np.array_equal(f[solid, 7], f[solid, 6]) and np.all(f[~solid, 7] != f[~solid, 6])
    assert information_bits(32) == pytest.approx(math.log2(6144) + math.log2(3) + (3 + 2 * math.log2(56)) / 3)
    assert information_bits(32) == pytest.approx(19.04, abs=0.01)


def test_colour_shapes_render_the_factors():
    # a square, colour 2, the largest scale (16 px at 32) centred at x 8, y 24 (position 0 and 7 of
    # 8, 16 to 8 px from the edges: columns 0-15, rows 16-31), on the solid background 4; and a
    # circle centred at (15, 15) on a horizontal gradient from background 0 to 7
    f = np.array([[1, 2, 3, 0, 7, 0, 4, 4], [0, 5, 0, 3, 3, 1, 0, 7]], dtype=np.int16)
    img = render(f, 32)
    assert img.shape == (2, 3, 32, 32)
    square = img[0]
    for row, col in ((16, 0), (31, 15), (24, 8)):
        assert np.array_equal(square[:, row, col], FOREGROUND[2])
    for row, col in ((15, 0), (16, 16), (0, 0)):
        assert np.array_equal(square[:, row, col], BACKGROUND[4])
    assert int((square == FOREGROUND[2][:, None, None]).all(0).sum()) == 16 * 16
    grad = img[1]
    np.testing.assert_allclose(grad[:, 0, 0], BACKGROUND[0])
    np.testing.assert_allclose(grad[:, 0, 31], BACKGROUND[7])
    np.testing.assert_allclose(grad[:, 5, 31], BACKGROUND[7])  # constant down each column
    assert np.array_equal(grad[:, 15, 15], FOREGROUND[5])


def test_colour_shapes_npz_is_a_vaelab_data_set(tmp_path, caplog):
    path = write_colour_shapes(tmp_path / "shapes.npz", n=100, size=32, seed=0, noise=3)
    with caplog.at_level("WARNING", logger="vaelab.data"):
        splits = load_splits(DataConfig(dataset=str(path)))
    assert not caplog.records  # no member the loader would ignore
    assert splits.train.shape == (3, 32, 32) and splits.num_classes == 3
    assert len(splits.train) + len(splits.val) + len(splits.test) == 100
    clean, y, factors = make_colour_shapes(100, 32, seed=0)
    with np.load(factors_path(path)) as z:
        assert tuple(z["factor_names"]) == FACTOR_NAMES and np.array_equal(z["factors"], factors)
    assert factors_path(path).name == "shapes-factors.npz"
    with np.load(path) as z:
        assert sorted(z.files) == ["x", "y"] and np.array_equal(z["y"], y)
        diff = z["x"].astype(int) - clean.astype(int)
    assert np.abs(diff).max() == 3 and diff.std() > 1  # noise in [-3, 3] on every sub-pixel
    x64, _, _ = make_colour_shapes(4, 64)
    assert x64.shape == (4, 3, 64, 64)


def test_colour_presets_train_on_colour_shapes_with_free_bits(tmp_path):
    """One step of the cifar preset (warm-up and free bits as shipped) on 32 x 32 colour shapes."""
    path = write_colour_shapes(tmp_path / "s.npz", n=40, size=32)
    cfg = load_preset("cifar")
    splits = load_splits(DataConfig(dataset=str(path)))
    cfg = dataclasses.replace(
        cfg,
        data=DataConfig(dataset=str(path)),
        train=dataclasses.replace(cfg.train, epochs=1, batch_size=32, device="cpu", threads=1),
    )
    torch.manual_seed(0)
    res = fit(build_model(cfg.model), splits, cfg, progress=False)
    row = res.metrics[0]
    assert res.steps == 1 and row["kl_weight"] == 1.0  # one step: the warm-up's epoch is over
    assert np.isfinite(row["train_objective"]) and np.isfinite(row["val_elbo"])


def test_free_bits_on_a_model_without_a_per_dimension_kl_is_refused_before_anything_is_written(tmp_path, capsys):
    from conftest import run_cli

    out = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--posterior", "planar", "--train.free_bits=0.25", "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "train.free_bits" in err and "planar" in err
    assert not (out / "config.json").exists()

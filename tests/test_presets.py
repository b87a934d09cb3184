"""The shipped presets: they load, build the architecture they describe, and take training steps."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from conftest import make_images
from vaelab.config import DataConfig
from vaelab.config_io import load_preset, preset_names
from vaelab.data import DataSplits, ImageData, load_splits
from vaelab.models import VAE, build_model
from vaelab.training import fit, lr_at

PRESETS = ["seed", "tiny", "iwae-paper", "conv", "latent2d"]


def _linear_sizes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_all_presets_are_shipped():
    assert set(PRESETS) <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_builds_and_runs_on_its_own_input_shape(name):
    """Every preset in vaelab/presets, not only the ones other tests name: it loads, builds, and
    encodes and decodes a batch of its own image shape to pixel parameters of that shape."""
    cfg = load_preset(name)
    model = build_model(cfg.model).eval()
    x = torch.rand(2, *cfg.model.input_shape)
    with torch.no_grad():
        assert model.reconstruct(x).shape == (2, *cfg.model.input_shape)
        assert model.decode(model.sample_latents(2)).shape == (2, *cfg.model.input_shape)


def test_iwae_paper_2l_is_burda_et_als_two_stochastic_layers():
    """784-(200,200)-100-(100,100)-50 tanh: q(z1|x) and p(x|z1) through 200-unit layers, q(z2|z1)
    and p(z1|z2) through 100-unit layers (Burda et al. 2016, sec. 5)."""
    cfg = load_preset("iwae-paper-2l")
    model = build_model(cfg.model)
    assert _linear_sizes(model.encoder) == [(784, 200), (200, 200), (200, 2 * 100)]
    assert _linear_sizes(model.decoder) == [(100, 200), (200, 200), (200, 784)]
    assert [_linear_sizes(m) for m in model.up] == [[(100, 100), (100, 100), (100, 2 * 50)]]
    assert [_linear_sizes(m) for m in model.down] == [[(50, 100), (100, 100), (100, 2 * 100)]]
    t = cfg.train
    assert (t.batch_size, t.lr, t.adam_eps, t.schedule, t.epochs) == (20, 1e-3, 1e-4, "burda", 3280)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_for_28x28_images(name):
    cfg = load_preset(name)
    model = build_model(cfg.model)
    x = torch.rand(3, 1, 28, 28)
    out = model(x)
    assert out.z.shape == (1, 3, cfg.model.latent_dim) and out.log_w.shape == (1, 3)
    assert model.encode_mean(x).shape == (3, cfg.model.latent_dim)
    assert model.decode(out.z[0]).shape == (3, 1, 28, 28)


def test_iwae_paper_is_burda_et_al_one_stochastic_layer():
    """784-200-200-50 tanh encoder, 50-200-200-784 decoder, Bernoulli pixels (Burda et al. 2016, sec. 5)."""
    cfg = load_preset("iwae-paper")
    model = VAE(cfg.model)
    assert _linear_sizes(model.encoder) == [(784, 200), (200, 200), (200, 2 * 50)]  # loc and logvar heads
    assert _linear_sizes(model.decoder) == [(50, 200), (200, 200), (200, 784)]
    acts = [
        type(m)
        for m in [*model.encoder.modules(), *model.decoder.modules()]
        if not list(m.children()) and not isinstance(m, nn.Linear)
    ]
    assert acts == [nn.Tanh] * 4
    assert sum(p.numel() for p in model.parameters()) == 425_284
    assert cfg.model.likelihood == "bernoulli" and cfg.data.binarize == "dynamic"
    t = cfg.train
    assert (t.batch_size, t.lr, t.adam_eps, t.schedule, t.epochs) == (20, 1e-3, 1e-4, "burda", 3280)
    # 3280 epochs = 3^0 + ... + 3^7: the last epoch is in stage 7, at lr 1e-3 * 10^(-7/7)
    assert lr_at(t, 3279) == pytest.approx(1e-4) and lr_at(t, 3279 - 3**7) == pytest.approx(1e-3 * 10 ** (-6 / 7))


def test_seed_preset_is_the_tutorials_vae():
    cfg = load_preset("seed")
    model = VAE(cfg.model)
    assert _linear_sizes(model.encoder) == [(784, 512), (512, 4)]
    assert _linear_sizes(model.decoder) == [(2, 512), (512, 784)]
    assert cfg.data.binarize == "none" and cfg.train.batch_size == 50


def _splits_28(n: int) -> DataSplits:
    x, y = make_images(n + 40, hw=28)
    t = torch.from_numpy
    return DataSplits(
        "synthetic28",
        ImageData(t(x[:n]), t(y[:n])),
        ImageData(t(x[n : n + 20]), t(y[n : n + 20])),
        ImageData(t(x[n + 20 :]), t(y[n + 20 :])),
        num_classes=4,
    )


@pytest.mark.parametrize(
    "name, objective, k",
    [
        ("seed", "elbo", 1),
        ("tiny", "elbo", 1),
        ("iwae-paper", "elbo", 1),
        ("iwae-paper", "iwae", 5),
        ("conv", "elbo", 1),
        ("latent2d", "elbo", 1),
    ],
)
def test_preset_takes_a_training_step(name, objective, k):
    cfg = load_preset(name)
    splits = _splits_28(cfg.train.batch_size)  # exactly one step per epoch
    cfg = dataclasses.replace(
        cfg,
        data=DataConfig(dataset="synthetic28", binarize=cfg.data.binarize),
        train=dataclasses.replace(cfg.train, epochs=1, device="cpu", threads=1, objective=objective, k=k),
    )
    torch.manual_seed(0)
    model = VAE(cfg.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = fit(model, splits, cfg, progress=False)
    assert res.steps == 1
    moved = [n for n, p in res.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)  # every parameter received a gradient and an Adam step
    row = res.metrics[0]
    assert torch.isfinite(torch.tensor([row["train_objective"], row["val_elbo"]])).all()
    assert row["lr"] == cfg.train.lr  # epoch 0 of every schedule is at the base rate


def test_mnist_best_uses_burdas_split_and_the_budget_recipe():
    cfg = load_preset("mnist-best")
    splits = load_splits(cfg.data)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (59_600, 400, 10_000)
    # the validation images are the last 400 of the 60,000 training images, binarized once
    grey = load_splits(DataConfig(dataset="mnist"))
    assert torch.equal(splits.train.images[-1], grey.val.images[-401])
    assert set(splits.val.images.unique().tolist()) <= {0, 255}
    tc = cfg.train
    assert (tc.schedule, tc.max_minutes, tc.batch_size, tc.lr, tc.init_output_bias) == ("time", 15.0, 100, 3e-3, True)
    assert (tc.objective, tc.k, tc.estimator) == ("iwae", 5, "dreg")  # Table A's best row
    assert cfg.model.likelihood == "bernoulli-ar"
    assert lr_at(tc, 0, 0.0) == pytest.approx(3e-3) and lr_at(tc, 5, 15 * 60.0) == pytest.approx(3e-3 * 10**-1.5)


def test_burda_scaled_at_3280_epochs_is_the_papers_schedule():
    """burda-scaled over the paper's 3280 epochs gives exactly the 3^i stages of schedule burda."""
    t = dataclasses.replace(load_preset("iwae-paper").train, epochs=3280)
    scaled = dataclasses.replace(t, schedule="burda-scaled")
    assert [lr_at(scaled, e) for e in range(3280)] == [lr_at(t, e) for e in range(3280)]


def test_burda_scaled_shrinks_the_stages_in_proportion():
    """328 epochs (the reproduction rows): stage i ends at round(328 * (3^0 + ... + 3^i) / 3280),
    stage 0 keeps one epoch, and the last epoch runs at the paper's final rate lr * 10^(-7/7)."""
    from vaelab.training import burda_stage_ends

    assert burda_stage_ends(3280) == [1, 4, 13, 40, 121, 364, 1093, 3280]
    assert burda_stage_ends(328) == [1, 1, 1, 4, 12, 36, 109, 328]
    t = load_preset("burda-vae").train
    assert (t.epochs, t.schedule, t.batch_size, t.adam_eps) == (328, "burda-scaled", 20, 1e-4)
    rates = [lr_at(t, e) for e in range(328)]
    assert rates[0] == pytest.approx(1e-3)
    assert rates[1] == pytest.approx(1e-3 * 10 ** (-3 / 7))  # stages 1 and 2 are empty at this budget
    assert rates[108] == pytest.approx(1e-3 * 10 ** (-6 / 7)) and rates[109] == pytest.approx(1e-4)
    assert rates[-1] == pytest.approx(1e-4)


def test_exp_schedule_falls_lr_decay_decades_over_the_epochs():
    t = load_preset("mnist-best-long").train
    assert t.schedule == "exp" and t.max_minutes is None
    assert lr_at(t, 0) == pytest.approx(3e-3)
    assert lr_at(t, t.epochs // 2) == pytest.approx(3e-3 * 10 ** (-0.75))
    assert lr_at(t, t.epochs) == pytest.approx(3e-3 * 10 ** (-1.5))


@pytest.mark.parametrize(
    "name,layers,objective,k,estimator",
    [
        ("burda-vae", 1, "elbo", 1, "reparam"),
        ("burda-iwae-k5", 1, "iwae", 5, "reparam"),
        ("burda-iwae-k5-dreg", 1, "iwae", 5, "dreg"),
        ("burda-2l-iwae-k5", 2, "iwae", 5, "reparam"),
        ("burda-iwae-k50", 1, "iwae", 50, "reparam"),
        ("burda-iwae-k50-dreg", 1, "iwae", 50, "dreg"),
        ("burda-2l-iwae-k50", 2, "iwae", 50, "reparam"),
    ],
)
def test_reproduction_presets_hold_burdas_recipe(name, layers, objective, k, estimator):
    cfg = load_preset(name)
    assert (cfg.data.binarize, cfg.data.val_size) == ("dynamic", 400)  # Burda's 59,600 / 400 split
    assert (cfg.train.objective, cfg.train.k, cfg.train.estimator) == (objective, k, estimator)
    assert (cfg.model.activation, cfg.model.likelihood) == ("tanh", "bernoulli")
    assert len(cfg.model.layers or [None]) == layers
    model = build_model(cfg.model)
    assert model.decode(model(torch.rand(2, 1, 28, 28)).z[0]).shape == (2, 1, 28, 28)


def test_k50_rows_differ_from_their_k5_rows_in_k_alone():
    for name in ("burda-iwae-k50", "burda-iwae-k50-dreg", "burda-2l-iwae-k50"):
        k50, k5 = load_preset(name), load_preset(name.replace("k50", "k5"))
        assert k50.train.k == 50 and dataclasses.replace(k50.train, k=5) == k5.train
        assert (k50.model, k50.data) == (k5.model, k5.data)


@pytest.mark.parametrize("name,prior", [("fashion-vae", "normal"), ("fashion-vampprior", "vamp")])
def test_fashion_rows_are_the_vampprior_recipe_on_fashion_mnist(name, prior):
    """The Exemplar VAE paper's Fashion-MNIST rows use the VampPrior code's MLP and training (their
    code is jmtomczak/vae_vampprior's for this model): the vampprior preset with the data changed
    and, for the VAE, the N(0, I) prior."""
    cfg, vamp = load_preset(name), load_preset("vampprior")
    assert (cfg.data.dataset, cfg.data.binarize, cfg.data.val_size) == ("fashion-mnist", "dynamic", None)
    assert cfg.train == vamp.train
    assert cfg.model.prior == prior
    assert dataclasses.replace(cfg.model, prior="vamp", prior_components=500) == vamp.model


def test_dsprites_short_is_dsprites_with_a_rate_for_minutes():
    """The docs' 30-minute command: the dsprites model, lr 5e-4 (1e-4 is paced for 300,000 steps)."""
    short, full = load_preset("dsprites-short"), load_preset("dsprites")
    assert short.model == full.model and short.data == full.data
    assert (short.train.lr, short.train.max_minutes, full.train.lr) == (5e-4, 30.0, 1e-4)

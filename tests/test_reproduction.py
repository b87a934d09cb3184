"""What the reproduction rows need from the product: gated dense layers, He initialisation, a bounded
logvar and early stopping that keeps the best epoch (the VampPrior code's recipe), checked against
the formulas and the reference code's parameter count."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.config_io import load_preset
from vaelab.data import ImageData
from vaelab.errors import ConfigError
from vaelab.models import build_model
from vaelab.models.networks import GatedDense
from vaelab.run.checkpoint import BEST, MODEL, load
from vaelab.training import fit


def test_gated_dense_is_a_linear_layer_times_a_sigmoid_gate():
    layer = GatedDense(3, 2)
    x = torch.randn(5, 3)
    h = x @ layer.h.weight.T + layer.h.bias
    g = 1 / (1 + torch.exp(-(x @ layer.g.weight.T + layer.g.bias)))
    torch.testing.assert_close(layer(x), h * g, rtol=1e-6, atol=1e-6)


def test_vampprior_preset_has_the_reference_models_parameter_count():
    """jmtomczak/vae_vampprior's MNIST MLP VampPrior: two GatedDense layers each side (784-300-300,
    40-300-300), heads 300 -> 40 + 40 and 300 -> 784, 500 bias-free pseudo-inputs of 784 pixels."""
    cfg = load_preset("vampprior")
    gated = lambda a, b: 2 * (a * b + b)  # noqa: E731
    encoder = gated(784, 300) + gated(300, 300) + 2 * (300 * 40 + 40)
    decoder = gated(40, 300) + gated(300, 300) + 300 * 784 + 784
    expected = encoder + decoder + 500 * 784
    assert sum(p.numel() for p in build_model(cfg.model).parameters()) == expected == 1_508_864
    t = cfg.train
    assert (t.lr, t.batch_size, t.patience, t.restore_best, t.init_output_bias) == (5e-4, 100, 50, True, False)
    assert cfg.data.val_size is None  # 50,000 / 10,000, as the code's dynamic MNIST


def test_he_init_draws_weights_with_variance_two_over_fan_in():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(1000,), latent_dim=40, weight_init="he"))
    first = model.encoder.body[0]
    assert isinstance(first, torch.nn.Linear) and first.in_features == 784
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.01)
    head = model.encoder.head
    assert head.weight.std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.02)
    default = build_model(ModelConfig(hidden=(1000,), latent_dim=40))  # torch: std 1 / sqrt(3 fan_in)
    assert default.encoder.body[0].weight.std().item() == pytest.approx(1 / math.sqrt(3 * 784), rel=0.01)


def test_logvar_range_bounds_the_encoders_logvar():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(8,), latent_dim=3, logvar_range=(-6.0, 2.0)))
    with torch.no_grad():
        model.encoder.head.bias[3:] = torch.tensor([-50.0, 0.5, 50.0])  # the logvar half of the head
        model.encoder.head.weight.zero_()
    _, logvar = model.encoder(torch.rand(2, 1, 28, 28))
    torch.testing.assert_close(logvar, torch.tensor([[-6.0, 0.5, 2.0]] * 2))
    with pytest.raises(ConfigError, match="logvar_range"):
        ModelConfig(logvar_range=(2.0, -6.0))
    with pytest.raises(ConfigError, match="activation gated"):
        ModelConfig(arch="conv", activation="gated", input_shape=(1, 28, 28), channels=(8, 8))


def test_restore_best_ends_with_the_best_validation_epochs_weights(tmp_path, tiny_cfg, tiny_splits):
    """20 training images, a wide model and a high learning rate: validation peaks before the last
    epoch (the test checks that it does), and restore_best leaves the best epoch's weights in
    model.safetensors and in the returned model."""
    splits = dataclasses.replace(
        tiny_splits, train=ImageData(tiny_splits.train.images[:20], tiny_splits.train.labels[:20])
    )
    cfg = dataclasses.replace(
        tiny_cfg,
        model=dataclasses.replace(tiny_cfg.model, hidden=(64,), latent_dim=8),
        train=dataclasses.replace(tiny_cfg.train, epochs=40, batch_size=4, lr=0.03, restore_best=True),
    )
    result = fit(build_model(cfg.model), splits, cfg, tmp_path / "run", progress=False)
    vals = [row["val_elbo"] for row in result.metrics]
    best = max(range(len(vals)), key=vals.__getitem__)
    assert best < len(vals) - 1, f"the test needs a run whose last epoch is not its best: {vals}"
    last, kept = load(tmp_path / "run", MODEL), load(tmp_path / "run", BEST)
    for a, b in zip(last.state_dict().values(), kept.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(result.model.state_dict().values(), kept.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

"""Configs: presets, overrides, and the checks that name the bad value."""

from __future__ import annotations

import pytest

from vaelab.config import ModelConfig, RunConfig, TrainConfig
from vaelab.config_io import load_preset, parse_value, preset_names, replace
from vaelab.errors import ConfigError


def test_presets_load_and_seed_is_the_tutorial():
    assert {"seed", "tiny", "iwae-paper", "conv"} <= set(preset_names())
    seed = load_preset("seed")
    assert seed.model.hidden == (512,) and seed.model.latent_dim == 2 and seed.model.activation == "relu"
    assert seed.train.batch_size == 50 and seed.train.lr == 1e-3 and seed.data.binarize == "none"
    iw = load_preset("iwae-paper")
    assert iw.model.hidden == (200, 200) and iw.model.latent_dim == 50 and iw.model.activation == "tanh"
    assert iw.data.binarize == "dynamic" and iw.train.schedule == "burda"


def test_overrides_apply_and_round_trip_through_json():
    cfg = replace(load_preset("seed"), {"train.lr": 3e-4, "model.hidden": [200, 200], "data.limit": 10})
    assert cfg.train.lr == 3e-4 and cfg.model.hidden == (200, 200) and cfg.data.limit == 10
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"train.batch_size": -5}, "batch_size must be a positive integer, got -5"),
        ({"train.lr": 0.0}, "lr must be a positive number, got 0.0"),
        ({"train.lr": -1e-3}, "lr must be a positive number"),
        ({"model.latent_dim": 0}, "latent_dim must be a positive integer, got 0"),
        ({"train.epochs": "ten"}, "epochs must be an integer, got 'ten'"),
        ({"train.lrr": 1.0}, "unknown key(s) ['lrr']"),
        ({"optim.lr": 1.0}, "SECTION one of data, model, train"),
        ({"model.activation": "swish"}, "activation must be one of"),
        ({"data.binarize": "yes"}, "binarize must be one of none, dynamic, static"),
        ({"train.objective": "iwae", "train.beta": 4.0}, "iwae objective is a bound on log p(x) with no KL weight"),
    ],
)
def test_bad_values_are_named(overrides, message):
    with pytest.raises(ConfigError) as e:
        replace(load_preset("seed"), overrides)
    assert message in str(e.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; choose one of: .*seed"):
        load_preset("nope")


def test_parse_value():
    assert parse_value("3e-4") == 3e-4
    assert parse_value("[400, 400]") == [400, 400]
    assert parse_value("true") is True
    assert parse_value("none") is None
    assert parse_value("fashion-mnist") == "fashion-mnist"


def test_conv_needs_divisible_sizes():
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(arch="conv", input_shape=(1, 30, 30), channels=(8, 16))
    TrainConfig(batch_size=1)

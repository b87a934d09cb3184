"""The model parts' registries (vaelab.models.registry): names spelled once, rules held by the parts,
parts added from a user's own code, and a prior swapped into a built model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import vaelab
from conftest import make_images
from vaelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.models import VAE, build_model
from vaelab.models.priors import MixturePrior, Prior, StandardNormal
from vaelab.models.registry import ARCHITECTURES, LIKELIHOODS, POSTERIORS, PRIORS, PriorEntry


def test_config_imports_without_torch():
    code = "import vaelab.config, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "field, registry",
    [("prior", PRIORS), ("posterior", POSTERIORS), ("likelihood", LIKELIHOODS), ("arch", ARCHITECTURES)],
)
def test_an_unknown_part_name_gets_the_registry_error(field, registry):
    setting = "model.arch" if field == "arch" else f"model.{field}"
    with pytest.raises(ConfigError, match=rf"{setting} must be one of {', '.join(registry.names())}; got 'nope'"):
        ModelConfig(**{field: "nope"})


def test_the_registries_hold_every_built_in_part():
    assert PRIORS.names() == ("normal", "mog", "vamp", "flow", "uniform")
    assert POSTERIORS.names() == ("gaussian", "planar", "iaf", "vq", "gumbel")
    assert set(LIKELIHOODS.names()) == {
        "bernoulli", "bernoulli-ar", "gaussian", "gaussian-fixed", "continuous-bernoulli", "logistic-mixture"
    }  # fmt: skip
    assert ARCHITECTURES.names() == ("mlp", "conv", "resnet")
    assert [e.name for e in POSTERIORS if e.discrete] == ["vq", "gumbel"]
    assert all(e.summary and "\n" not in e.summary for r in (PRIORS, POSTERIORS, LIKELIHOODS, ARCHITECTURES) for e in r)


@pytest.mark.parametrize(
    "kw, match",
    [
        (
            {"prior": "vamp", "num_classes": 3},
            "prior vamp: the pseudo-inputs carry no label, .* use prior normal, mog or flow",
        ),
        ({"posterior": "gaussian", "prior": "uniform"}, r"the discrete posteriors \(vq, gumbel\) take prior uniform"),
        ({"posterior": "vq", "prior": "uniform"}, "use arch conv or resnet, not mlp"),
        ({"activation": "gated", "arch": "conv", "channels": (8,)}, "activation gated is a dense layer"),
        ({"arch": "conv", "channels": (8, 8, 8, 8)}, r"conv arch needs H and W divisible by 2\*\*len\(channels\) = 16"),
        (
            {"prior": "vamp", "layers": ({"hidden": (8,), "latent_dim": 4}, {"hidden": (8,), "latent_dim": 2})},
            r"a normal, mog or flow prior on the top layer and no labels; got prior 'vamp'",
        ),
    ],
)
def test_the_parts_hold_the_cross_family_rules(kw, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(input_shape=(1, 8, 8), **kw)


# -- a prior swapped into a built model (issue #22) --------------------------------------------------
def _vae(**kw) -> VAE:
    torch.manual_seed(0)
    model = build_model(ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2, **kw))
    assert isinstance(model, VAE)
    return model


def test_a_prior_swapped_in_gets_the_kl_of_its_own_density():
    """Built with N(0, I), then given a mixture: the KL is log q - log p of the mixture, never the
    closed-form KL to N(0, I) (which the model used to keep, -550.66 against -546.47 in the issue)."""
    model = _vae()
    assert model.supports_disentangling
    model.prior = MixturePrior(2, 3)
    x, eps = torch.rand(4, 1, 8, 8), torch.randn(1, 4, 2)
    d = model(x, None, eps)
    assert d.kl is None and not model.supports_disentangling
    elbo = model.elbo(x, generator=torch.Generator().manual_seed(0))
    d = model(x, None, torch.randn((1, 4, 2), generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(elbo.elbo, (d.log_px_z - d.log_qz_x + model.prior.log_prob(d.z))[0], rtol=0, atol=0)


def test_the_closed_form_kl_is_asked_of_the_prior():
    model = _vae(prior="mog", prior_components=2)
    assert model(torch.rand(3, 1, 8, 8)).kl is None
    model.prior = StandardNormal(2)
    assert model(torch.rand(3, 1, 8, 8)).kl is not None and model.supports_disentangling


def test_a_swapped_prior_is_recorded_in_the_model_config():
    model = _vae()
    model.prior = MixturePrior(2, 3)
    assert (model.cfg.prior, model.cfg.components) == ("mog", 3)
    model.prior = StandardNormal(2)
    assert model.cfg.prior == "normal"

    class Unregistered(StandardNormal):
        pass

    with pytest.raises(ConfigError, match="Unregistered is not a registered prior"):
        model.prior = Unregistered(2)


def _npz(root: Path) -> str:
    x, y = make_images(200)
    np.savez(root / "data.npz", x=x[:, 0], y=y)
    return str(root / "data.npz")


def _fit(root: Path, model: vaelab.BaseVAE, cfg: RunConfig) -> Path:
    vaelab.fit(model, vaelab.load_splits(cfg.data), cfg, root / "run", progress=False)
    return root / "run"


def _run_config(root: Path, model: ModelConfig) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset=_npz(root)),
        model=model,
        train=TrainConfig(epochs=1, batch_size=40, seed=0, device="cpu", threads=1),
    )


def test_a_model_saved_with_a_swapped_prior_loads_with_it(tmp_path):
    cfg = _run_config(tmp_path, ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2))
    torch.manual_seed(0)
    model = vaelab.build_model(cfg.model)
    model.prior = MixturePrior(2, 3)
    run = _fit(tmp_path, model, cfg)
    loaded = vaelab.load(run)
    assert isinstance(loaded.prior, MixturePrior) and loaded.cfg.prior == "mog"
    torch.testing.assert_close(loaded.prior.loc, model.prior.loc.cpu(), rtol=0, atol=0)


def test_the_model_config_of_a_swapped_prior_rebuilds_it(tmp_path):
    """The part of the fix in the model: model.cfg rebuilds the prior it holds, weights included."""
    model = _vae()
    model.prior = MixturePrior(2, 3)
    twin = build_model(model.cfg)
    twin.load_state_dict(model.state_dict())  # strict: the same tensors, the mixture's included
    x = torch.rand(3, 1, 8, 8)
    eps = torch.randn(2, 3, 2)
    torch.testing.assert_close(twin(x, None, eps).log_w, model(x, None, eps).log_w, rtol=0, atol=0)


# -- a part added from a user's own code ----------------------------------------------------------------
class StudentT(Prior):
    """p(z) = prod_d StudentT(z_d; df, 0, 1), with a learned log df (a plugin's prior, for the test)."""

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        self.log_df = nn.Parameter(torch.tensor(1.0))

    def distribution(self) -> torch.distributions.Distribution:
        d = torch.distributions
        return d.Independent(d.StudentT(self.log_df.exp(), torch.zeros(self.latent_dim), 1.0), 1)

    def log_prob(self, z: Tensor) -> Tensor:
        return self.distribution().log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.distribution().rsample((n,))  # torch's StudentT draws from the global generator


@pytest.fixture
def student_t():
    entry = PRIORS.register(PriorEntry("student-t", "a Student-t per dimension, learned df", StudentT))
    try:
        yield entry
    finally:
        PRIORS.unregister("student-t")


def test_an_unregistered_prior_name_is_refused():
    assert "student-t" not in PRIORS
    with pytest.raises(
        ConfigError, match=r"model.prior must be one of normal, mog, vamp, flow, uniform; got 'student-t'"
    ):
        ModelConfig(prior="student-t")


def test_a_registered_prior_trains_saves_and_loads(student_t, tmp_path):
    mc = ModelConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2, prior="student-t")
    assert "student-t" in PRIORS.help()
    cfg = _run_config(tmp_path, mc)
    torch.manual_seed(0)
    model = vaelab.build_model(cfg.model)
    assert isinstance(model.prior, StudentT) and model(torch.rand(2, 1, 8, 8)).kl is None
    run = _fit(tmp_path, model, cfg)
    loaded = vaelab.load(run)
    assert isinstance(loaded.prior, StudentT) and loaded.cfg.prior == "student-t"
    assert loaded.prior.log_df.item() != 1.0  # learned, saved and read back
    torch.testing.assert_close(loaded.prior.log_df, model.prior.log_df.detach().cpu(), rtol=0, atol=0)
    assert loaded.sample(3).shape == (3, 1, 8, 8)

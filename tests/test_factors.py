"""A trained model against its data's factors: per-dimension KL against the closed form, the
traversals against direct decoding, and `vaelab disentangle` / `vaelab traverse` end to end on a
small shapes2d grid."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from conftest import run_cli
from vaelab.analysis.factors import REPORT, kl_per_dimension, traversal_order, traversals
from vaelab.config import ModelConfig
from vaelab.data import shapes2d as S
from vaelab.models import VAE

SMALL = (3, 2, 4, 4, 3)  # 288 images


def _model_with_fixed_posterior(logvar: list[float]) -> VAE:
    """A VAE whose encoder ignores x: loc 0, the given log-variances."""
    m = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=len(logvar)))
    head = m.encoder.head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0] * len(logvar) + logvar))
    return m.eval()


def test_kl_per_dimension_is_the_closed_form_and_orders_the_rows():
    from vaelab.data import ImageData

    lv = [0.0, -4.0, 0.0, -2.0]
    m = _model_with_fixed_posterior(lv)
    data = ImageData(torch.randint(0, 256, (30, 1, 4, 4), dtype=torch.uint8))
    kl = kl_per_dimension(m, data)
    want = [0.5 * (math.exp(v) - 1 - v) for v in lv]  # KL(N(0, e^v) || N(0, 1)) per dimension
    np.testing.assert_allclose(kl, want, rtol=1e-5, atol=1e-7)
    order, _ = traversal_order(m, data)
    assert order.tolist() == [1, 3, 0, 2]  # largest KL first; ties keep their order


def test_traversals_decode_the_code_with_one_dimension_swept():
    torch.manual_seed(0)
    m = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=3)).eval()
    x = torch.rand(1, 4, 4)
    imgs, values, dims = traversals(m, x, steps=5, span=2.0, order=np.array([2, 0, 1]))
    assert imgs.shape == (3, 5, 1, 4, 4) and dims.tolist() == [2, 0, 1]
    torch.testing.assert_close(values, torch.linspace(-2, 2, 5))
    z = m.encode_mean(x[None])[0]
    with torch.no_grad():
        for row, d in enumerate([2, 0, 1]):
            for col, v in enumerate(values):
                zz = z.clone()
                zz[d] = v
                torch.testing.assert_close(imgs[row, col], m.decode(zz[None])[0])


def test_traversals_refuse_bad_settings():
    m = VAE(ModelConfig(input_shape=(1, 4, 4), hidden=(8,), latent_dim=3))
    from vaelab.errors import ConfigError

    with pytest.raises(ConfigError, match="steps 1"):
        traversals(m, torch.rand(1, 4, 4), steps=1)
    with pytest.raises(ConfigError, match="span -1"):
        traversals(m, torch.rand(1, 4, 4), span=-1.0)


@pytest.fixture
def small_shapes2d(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(S, "FACTOR_SIZES", SMALL)
    return tmp_path


def test_disentangle_and_traverse_a_shapes2d_run(small_shapes2d, capsys, caplog):
    run = small_shapes2d / "run"
    small = ["--model.channels", "[4, 4, 8, 8]", "--model.hidden", "[16]", "--threads", "1"]
    code, out, err = run_cli(
        [
            "train",
            "--preset",
            "dsprites",
            "--epochs",
            "1",
            *small,
            "--objective",
            "betatc",
            "--beta",
            "6",
            "--out",
            str(run),
        ],
        capsys,
    )
    assert code == 0, err
    assert (run / "traversals.png").is_file()  # 10 latents: the run's pictures include the traversals
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_mi", "train_tc", "train_dwkl"} <= set(header)

    caplog.set_level(logging.INFO, logger="vaelab.analysis.factors")
    code, out, err = run_cli(["disentangle", str(run), "--points", "28"], capsys)
    assert code == 0, err
    # each metric is announced before it runs (DCI takes minutes on 10,000 points: issue #23)
    assert "[4/6] DCI (gradient-boosted trees" in caplog.text and "dci: " in caplog.text
    report = json.loads((run / REPORT).read_text())
    assert report["points"] == 28 and report["split"] == "test"
    assert report["factor_names"] == list(S.FACTOR_NAMES)
    for key in ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness"):
        assert 0.0 <= report[key] <= 1.0, key
    assert list(report["mig_per_factor"]) == list(S.FACTOR_NAMES)  # which factors the code separates
    assert report["mig"] == pytest.approx(np.mean(list(report["mig_per_factor"].values())), abs=1e-12)
    assert 0.0 <= report["beta_vae_score"] <= 1.0 and 0.0 <= report["factor_vae_score"] <= 1.0
    assert len(report["kl_per_dim"]) == 10 and report["reconstruction_nats"] > 0
    assert set(report["seconds"]) == {"encode", "mig", "sap", "dci", "beta_vae_score", "factor_vae_score"}
    assert "MIG" in out and "wrote" in out and "  per factor" in out
    # the same seed gives the same report (the timings aside)
    code, again, _ = run_cli(["disentangle", str(run), "--points", "28", "--json"], capsys)
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert code == 0 and strip(json.loads(again)) == strip(report)

    out_png = small_shapes2d / "t.png"
    code, out, err = run_cli(["traverse", str(run), "--index", "3", "--steps", "7", "-o", str(out_png)], capsys)
    assert code == 0, err
    assert out_png.is_file() and "10 traversals of 7 steps" in out
    code, _, err = run_cli(["traverse", str(run), "--index", "999"], capsys)
    assert code == 2 and "--index 999 is out of range" in err

    # shipped (zoo/ROW, marked by its result.json): measured and printed, its record left as it was
    (run / "result.json").write_text('{"row": "btcvae-dsprites", "preset": "btcvae-dsprites"}')
    (run / REPORT).write_text("the row's record")
    code, out, err = run_cli(["disentangle", str(run), "--points", "28"], capsys)
    assert code == 0 and "MIG" in out and f"not written: {run} is a shipped model" in out, err
    assert (run / REPORT).read_text() == "the row's record"


def test_disentangle_refuses_data_without_factors(tmp_path, capsys, npz_dataset):
    run = tmp_path / "run"
    code, _, err = run_cli(
        ["train", "--preset", "tiny", "--dataset", str(npz_dataset), "--epochs", "1", "--no-plots", "--out", str(run)],
        capsys,
    )
    assert code == 0, err
    code, _, err = run_cli(["disentangle", str(run)], capsys)
    assert code == 2 and "no ground-truth factors" in err
    assert not (run / REPORT).exists()

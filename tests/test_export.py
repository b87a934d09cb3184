"""Exports and logs: encoder and decoder as ONNX files (run in onnxruntime) and as torch.export
programs; TensorBoard event files of `vaelab train --tensorboard`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vaelab.cli import main
from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.export import DecoderGraph, EncoderGraph, export_model
from vaelab.models import VAE

ort = pytest.importorskip("onnxruntime")  # the export extra: pip install 'vaelab[export]'

CONFIGS = {  # (arch, likelihood, num_classes)
    "mlp-bernoulli": ("mlp", "bernoulli", 0),
    "mlp-gaussian-conditional": ("mlp", "gaussian", 4),
    "conv-continuous-bernoulli-conditional": ("conv", "continuous-bernoulli", 4),
    "conv-gaussian-fixed": ("conv", "gaussian-fixed", 0),
}


def make_model(arch: str, likelihood: str, k: int) -> VAE:
    torch.manual_seed(0)
    cfg = ModelConfig(
        input_shape=(1, 8, 8),
        hidden=(16, 12),
        latent_dim=3,
        arch=arch,
        channels=(4, 8),
        likelihood=likelihood,
        num_classes=k,
    )  # type: ignore[arg-type]
    return VAE(cfg).eval()


def inputs(model: VAE, batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    out = {
        "x": torch.rand(batch, *model.cfg.input_shape, generator=g),
        "z": 2 * torch.randn(batch, model.cfg.latent_dim, generator=g),
    }
    if model.cfg.num_classes:
        out["y"] = torch.arange(batch) % model.cfg.num_classes
    return out


def onehot(model: VAE, y: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y, model.cfg.num_classes).float()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnx_graphs_match_pytorch_in_onnxruntime(name, tmp_path):
    model = make_model(*CONFIGS[name])
    paths = export_model(model, tmp_path, "onnx")
    assert [p.name for p in paths] == ["encoder.onnx", "decoder.onnx", "export.json"]
    enc = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(tmp_path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    conditional = model.cfg.num_classes > 0
    assert [i.name for i in enc.get_inputs()] == (["x", "y_onehot"] if conditional else ["x"])
    assert [o.name for o in enc.get_outputs()] == ["loc", "logvar"]
    assert [i.name for i in dec.get_inputs()] == (["z", "y_onehot"] if conditional else ["z"])
    for batch in (1, 5):  # exported with a batch of 2: the batch dimension is dynamic
        t = inputs(model, batch)
        y1h = onehot(model, t["y"]) if conditional else None
        label = {"y_onehot": y1h.numpy()} if conditional else {}
        loc, logvar = enc.run(None, {"x": t["x"].numpy(), **label})
        (mean,) = dec.run(None, {"z": t["z"].numpy(), **label})
        with torch.no_grad():
            ref_loc, ref_logvar = model.encode(t["x"], t.get("y"))
            ref_mean = DecoderGraph(model)(t["z"], y1h)
        assert mean.shape == (batch, 1, 8, 8)
        torch.testing.assert_close(torch.from_numpy(loc), ref_loc, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(logvar), ref_logvar, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(mean), ref_mean, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_exported_decoder_is_the_models_decode(name):
    """DecoderGraph computes the pixel means in float64 (ONNX has no expm1): it equals VAE.decode
    in float32 up to float32 rounding, and up to the cancellation error of float32 in the continuous
    Bernoulli mean 1/(1 - e^-l) - 1/l (both terms ~1/l, 1e-7 relative each) near l = 0."""
    model = make_model(*CONFIGS[name])
    t = inputs(model, 64)
    y1h = onehot(model, t["y"]) if "y" in t else None
    with torch.no_grad():
        exported = DecoderGraph(model)(t["z"], y1h)
        ref = model.decode(t["z"], t.get("y"))
        ref64 = model.double().decode(t["z"].double(), t.get("y")).float()
        loc, logvar = EncoderGraph(model.float())(t["x"], y1h)
    torch.testing.assert_close(exported, ref64, rtol=0, atol=1e-6)
    atol = 1e-4 if model.cfg.likelihood == "continuous-bernoulli" else 1e-6
    torch.testing.assert_close(exported, ref, rtol=0, atol=atol)
    assert torch.equal(torch.stack([loc, logvar]), torch.stack(model.encode(t["x"], t.get("y"))))


@pytest.mark.parametrize("name", ["mlp-bernoulli", "conv-continuous-bernoulli-conditional"])
def test_pt2_programs_match_pytorch(name, tmp_path):
    model = make_model(*CONFIGS[name])
    export_model(model, tmp_path, "pt2")
    enc = torch.export.load(str(tmp_path / "encoder.pt2")).module()
    dec = torch.export.load(str(tmp_path / "decoder.pt2")).module()
    t = inputs(model, 5)
    extra = (onehot(model, t["y"]),) if "y" in t else ()
    with torch.no_grad():
        got = (*enc(t["x"], *extra), dec(t["z"], *extra))
        want = (*EncoderGraph(model)(t["x"], *extra), DecoderGraph(model)(t["z"], *extra))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_manifest_describes_the_graphs(tmp_path):
    model = make_model("mlp", "gaussian", 4)
    export_model(model, tmp_path, "onnx", extra={"run": "runs/x"})
    doc = json.loads((tmp_path / "export.json").read_text())
    assert doc["files"] == {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
    assert doc["encoder"]["inputs"] == {"x": ["B", 1, 8, 8], "y_onehot": ["B", 4]}
    assert doc["encoder"]["outputs"] == {"loc": ["B", 3], "logvar": ["B", 3]}
    assert doc["decoder"]["inputs"] == {"z": ["B", 3], "y_onehot": ["B", 4]}
    assert doc["decoder"]["outputs"] == {"mean": ["B", 1, 8, 8]}
    assert doc["model"]["likelihood"] == "gaussian" and doc["run"] == "runs/x" and doc["onnx_opset"] == 17
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_cli_export_of_a_trained_conditional_run(npz_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    main(
        [
            "train",
            "--dataset",
            str(npz_dataset),
            "--hidden",
            "16",
            "--epochs",
            "1",
            "--batch-size",
            "40",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--conditional",
            "--no-plots",
            "-q",
            "--out",
            str(run),
        ]
    )
    main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx"), "--weights", "best"])
    assert "wrote encoder.onnx, decoder.onnx, export.json" in capsys.readouterr().out
    from vaelab import load

    model = load(run, weights="best.safetensors")
    x = torch.rand(3, 1, 8, 8)
    y = torch.tensor([0, 1, 3])
    enc = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    loc, logvar = enc.run(None, {"x": x.numpy(), "y_onehot": onehot(model, y).numpy()})
    with torch.no_grad():
        ref = model.encode(x, y)
    np.testing.assert_allclose(loc, ref[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logvar, ref[1].numpy(), rtol=1e-5, atol=1e-5)
    main(["export", str(run), "--format", "pt2"])
    assert (run / "export-pt2" / "decoder.pt2").is_file()


def test_export_errors(tmp_path):
    model = make_model("mlp", "bernoulli", 0)
    with pytest.raises(ConfigError, match=r"--opset 13: use 15 or newer"):
        export_model(model, tmp_path / "a", "onnx", opset=13)
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"is a file; give a folder"):
        export_model(model, tmp_path / "file", "onnx")
    with pytest.raises(ConfigError, match=r"--format 'tflite': choose one of onnx, pt2"):
        export_model(model, tmp_path / "b", "tflite")  # type: ignore[arg-type]


def test_cli_export_of_a_missing_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "missing")])
    assert e.value.code == 2
    assert "missing: no such run folder" in capsys.readouterr().err


# -- TensorBoard ---------------------------------------------------------------------------------


def test_tensorboard_logs_the_metrics_and_image_grids_of_each_epoch(npz_dataset, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = tmp_path / "run"
    main(
        [
            "train",
            "--dataset",
            str(npz_dataset),
            "--hidden",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "40",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--conditional",
            "--no-plots",
            "-q",
            "--tensorboard",
            "--out",
            str(run),
        ]
    )
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    steps = [int(r["step"]) for r in rows]
    assert steps == [12, 24]  # 480 images / 40
    tags = acc.Tags()
    for key, tag in {
        "train_elbo": "train/elbo_nats",
        "val_elbo": "val/elbo_nats",
        "train_kl": "train/kl_nats",
        "val_log_px_z": "val/log_px_z_nats",
        "lr": "train/lr",
        "samples_per_s": "train/samples_per_s",
    }.items():
        assert tag in tags["scalars"]
        events = acc.Scalars(tag)
        assert [e.step for e in events] == steps
        assert [e.value for e in events] == pytest.approx([float(r[key]) for r in rows], rel=1e-6)
    for tag, rows_of_images in (("reconstructions", 2), ("samples", 1)):
        images = acc.Images(tag)
        assert [i.step for i in images] == steps
        assert (images[0].width, images[0].height) == (8 * 8, rows_of_images * 8)  # 8 images of 8x8 per row


def test_tensorboard_is_optional(npz_dataset, tmp_path, monkeypatch, capsys):
    code = "import sys, vaelab, vaelab.cli, vaelab.training, vaelab.export; print('tensorboard' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # imported only when --tensorboard asks for it
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if it were not installed
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train",
                "--dataset",
                str(npz_dataset),
                "--hidden",
                "16",
                "--epochs",
                "1",
                "--device",
                "cpu",
                "-q",
                "--tensorboard",
                "--out",
                str(tmp_path / "run"),
            ]
        )
    assert e.value.code == 2
    assert "--tensorboard needs the tensorboard package: pip install 'vaelab[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


@pytest.mark.parametrize("posterior,article", [("iaf", "an"), ("planar", "a")])
def test_a_flow_posterior_is_refused_in_plain_english(posterior, article, tmp_path):
    from vaelab.config import ModelConfig
    from vaelab.models import build_model

    model = build_model(ModelConfig(hidden=(8,), latent_dim=2, posterior=posterior, flow_steps=1))
    with pytest.raises(ConfigError, match=rf"this model has {article} {posterior} flow posterior"):
        export_model(model, tmp_path / "x", "onnx")

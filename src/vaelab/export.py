"""Export a trained model as two standard graphs, so that it runs without vaelab (or without Python).

    encoder: x (B, C, H, W) float32 pixels in [0, 1] [, y_onehot (B, K)] -> loc (B, D), logvar (B, D)
    decoder: z (B, D) float32                       [, y_onehot (B, K)] -> mean (B, C, H, W) in [0, 1]

`logvar` is the log-variance of q(z|x), so z = loc + exp(logvar / 2) * eps; `mean` is the mean of
p(x|z) (for a Bernoulli decoder, the pixel probabilities). A conditional model (num_classes K > 0)
takes the one-hot label as its second input. The batch dimension B is dynamic.

Formats:
  onnx  encoder.onnx, decoder.onnx for onnxruntime and other ONNX runtimes
        (needs `pip install 'vaelab[export]'`: onnx, onnxruntime)
  pt2   encoder.pt2, decoder.pt2 from torch.export; load with torch.export.load(path).module()
Each export folder also gets export.json: the files, their inputs and outputs with shapes, the
model config and the versions that wrote them. See docs/scale.md for loading examples.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from vaelab._version import __version__
from vaelab.errors import ConfigError
from vaelab.models import VAE

logger = logging.getLogger(__name__)

Format = Literal["onnx", "pt2"]
FORMATS: tuple[str, ...] = ("onnx", "pt2")
MANIFEST = "export.json"
ONNX_OPSET = 17  # onnxruntime >= 1.14 runs it; raise it with opset= when a consumer needs newer ops


class EncoderGraph(nn.Module):
    """x (B, C, H, W) [, y_onehot (B, K)] -> (loc, logvar), each (B, D): the encoder alone."""

    def __init__(self, model: VAE):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, x: Tensor, y_onehot: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.encoder(x, y_onehot)


class DecoderGraph(nn.Module):
    """z (B, D) [, y_onehot (B, K)] -> pixel means (B, C, H, W) in [0, 1]: decoder, then the mean of p(x|z).

    The means are computed in float64 and returned as float32. ONNX has no expm1, and the
    continuous Bernoulli mean 1/(1 - e^-l) - 1/l subtracts two terms of size 1/l: with exp(-l) - 1
    in float32 it would be off by 6e-4 at l = 0.01. In float64 it is exact to float32 precision
    (more accurate than VAE.decode in float32, which is off by up to 6e-5 just above |l| = 1e-3).
    """

    def __init__(self, model: VAE):
        super().__init__()
        self.decoder = model.decoder
        self.mean = model.likelihood.mean

    def forward(self, z: Tensor, y_onehot: Tensor | None = None) -> Tensor:
        return self.mean(self.decoder(z, y_onehot).double()).float()


def example_inputs(model: VAE, batch: int = 2) -> dict[str, tuple[Tensor, ...]]:
    """Inputs of the right shapes (zeros) for the two graphs: {"encoder": (x[, y]), "decoder": (z[, y])}."""
    cfg = model.cfg
    device = model.device
    x = torch.zeros(batch, *cfg.input_shape, device=device)
    z = torch.zeros(batch, cfg.latent_dim, device=device)
    if cfg.num_classes == 0:
        return {"encoder": (x,), "decoder": (z,)}
    y = torch.zeros(batch, cfg.num_classes, device=device)
    y[:, 0] = 1.0
    return {"encoder": (x, y), "decoder": (z, y)}


def signature(model: VAE) -> dict[str, dict[str, dict[str, list[int | str]]]]:
    """Names and shapes ("B" is the dynamic batch) of each graph's inputs and outputs."""
    cfg = model.cfg
    c, h, w = cfg.input_shape
    label: dict[str, list[int | str]] = {"y_onehot": ["B", cfg.num_classes]} if cfg.num_classes else {}
    return {
        "encoder": {
            "inputs": {"x": ["B", c, h, w], **label},
            "outputs": {"loc": ["B", cfg.latent_dim], "logvar": ["B", cfg.latent_dim]},
        },
        "decoder": {"inputs": {"z": ["B", cfg.latent_dim], **label}, "outputs": {"mean": ["B", c, h, w]}},
    }


def export_model(
    model: VAE,
    out_dir: str | os.PathLike[str],
    fmt: Format = "onnx",
    opset: int = ONNX_OPSET,
    extra: dict | None = None,
) -> list[Path]:
    """Write the encoder and decoder graphs of `model` (on the CPU, eval mode) into `out_dir`.

    Returns the paths written: the two graphs and export.json. Each file is written under a
    temporary name and renamed, so an interrupted export leaves no half-written graph.
    Raises ConfigError for an unknown format, a missing onnx package or an unusable folder.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    from vaelab.models.registry import POSTERIORS

    mc = model.cfg
    entry = POSTERIORS[mc.posterior]
    if mc.layers or entry.discrete or entry.flow is not None or model.likelihood.not_exportable:
        what = (
            "a hierarchy (model.layers)"
            if mc.layers
            else entry.description
            if entry.discrete
            else f"{_article(mc.posterior)} {mc.posterior} flow posterior"
            if entry.flow is not None
            else model.likelihood.not_exportable
        )
        raise ConfigError(
            f"export writes an encoder x -> (loc, logvar) of a Gaussian q(z|x) and a decoder z -> pixels; this "
            f"model has {what}, which those two graphs cannot express. Its weights are in model.safetensors "
            f"(vaelab.load reads them)"
        )
    if fmt == "onnx" and opset < 15:
        raise ConfigError(f"--opset {opset}: use 15 or newer (expm1 is written with CastLike, opset 15)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    model = model.to("cpu").eval()
    graphs = {"encoder": EncoderGraph(model), "decoder": DecoderGraph(model)}
    inputs = example_inputs(model)
    sig = signature(model)
    paths = []
    for name, graph in graphs.items():
        path = out / f"{name}.{fmt}"
        names = list(sig[name]["inputs"])
        outputs = list(sig[name]["outputs"])
        with _atomic(path) as tmp:
            if fmt == "onnx":
                _to_onnx(graph, inputs[name], tmp, names, outputs, opset)
            else:
                _to_pt2(graph, inputs[name], tmp, names)
        paths.append(path)
    manifest = {
        "format": fmt,
        **({"onnx_opset": opset} if fmt == "onnx" else {}),
        "files": {name: f"{name}.{fmt}" for name in graphs},
        **sig,
        "pixels": "x and mean are float32 pixels in [0, 1]; y_onehot is float32 one-hot",
        "latent": "z = loc + exp(logvar / 2) * eps, eps ~ N(0, I); "
        + (
            "z ~ N(0, I) samples the prior"
            if model.prior.standard_normal
            else f"the prior is {mc.prior} (learned): draw z with vaelab's model.sample_latents, not N(0, I)"
        ),
        "model": asdict(model.cfg),
        "versions": {"vaelab": __version__, "torch": torch.__version__},
        **(extra or {}),
    }
    with _atomic(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    paths.append(out / MANIFEST)
    return paths


class _atomic:
    """A temporary path beside `path`, renamed onto it when the block succeeds, removed otherwise."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        # same suffix: torch.export.save wants a name ending in .pt2
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix}")
        return self.tmp

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _to_onnx(
    graph: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: list[str], outputs: list[str], opset: int
) -> None:
    try:
        import onnx
    except ImportError:
        raise ConfigError("--format onnx needs the onnx package: pip install 'vaelab[export]'") from None
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1_symbolic, opset)
    dynamic = {n: {0: "B"} for n in inputs + outputs}
    with warnings.catch_warnings():
        # The TorchScript-based exporter: deprecated since torch 2.9 but complete for these
        # graphs, 20x faster than the torch.export-based one and free of its onnxscript dependency.
        # TODO(#7): move to dynamo=True when torch drops it.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            graph,
            args,
            str(path),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _expm1_symbolic(g: Any, x: Any) -> Any:
    """aten::expm1 -> Exp(x) - 1 (ONNX has no Expm1; DecoderGraph calls it in float64)."""
    one = g.op("CastLike", g.op("Constant", value_t=torch.tensor(1.0)), x)
    return g.op("Sub", g.op("Exp", x), one)


def _to_pt2(graph: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: list[str]) -> None:
    batch = torch.export.Dim("B")
    program = torch.export.export(graph, args, dynamic_shapes={name: {0: batch} for name in inputs})
    torch.export.save(program, str(path))


def _article(word: str) -> str:
    """'a' or 'an' before a word as it is read aloud: an iaf, a planar."""
    return "an" if word[:1].lower() in "aeio" else "a"


def export_run(
    run_dir: str | os.PathLike[str],
    fmt: Format = "onnx",
    out_dir: str | os.PathLike[str] | None = None,
    opset: int = ONNX_OPSET,
    weights: str = "model.safetensors",
) -> tuple[Path, list[Path]]:
    """`vaelab export`: :func:`export_model` of a run folder's model (on the CPU) into `out_dir`
    (default RUN/export-FORMAT), its export.json also naming the run and the weights. Returns the
    folder and the paths written."""
    from vaelab.run.checkpoint import load_run

    model, _ = load_run(run_dir, "cpu", weights)  # any model: export_model says which it cannot export
    folder = Path(out_dir or Path(run_dir) / f"export-{fmt}")
    extra = {"run": str(run_dir), "weights": weights}
    return folder, export_model(cast(VAE, model), folder, fmt, opset=opset, extra=extra)

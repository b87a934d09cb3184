"""vaelab: variational autoencoders in PyTorch, measured in nats.

    >>> import vaelab
    >>> model = vaelab.load("runs/seed")            # rebuild a trained model from its run folder
    >>> mu, logvar = model.encode(x)                # x: (B, 1, 28, 28) in [0, 1]
    >>> images = model.sample(16)                   # (16, 1, 28, 28) pixel means

The names below are imported on first use (PEP 562), so that `import vaelab.config` and the
`vaelab` command's --help do not pay for importing torch (about 1.4 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ["DataConfig", "EvalConfig", "ModelConfig", "RunConfig", "TrainConfig", "load_preset"], "vaelab.config"
    ),
    **dict.fromkeys(
        [
            "VaelabError",
            "ConfigError",
            "DataError",
            "NotADensity",
            "StorageError",
            "CheckpointError",
            "TrainingDiverged",
            "TrainingInterrupted",
        ],
        "vaelab.errors",
    ),
    **dict.fromkeys(["VAE", "BaseVAE", "Draws", "ElboTerms", "build_model", "interpolate_latents"], "vaelab.models"),
    "HierarchicalVAE": "vaelab.models.hierarchy",
    "load": "vaelab.checkpoint",
    **dict.fromkeys(["DataSplits", "ImageData", "load_splits"], "vaelab.data"),
    **dict.fromkeys(["EvalReport", "LikelihoodEstimate", "evaluate", "log_likelihood"], "vaelab.evaluate"),
    **dict.fromkeys(["TrainResult", "fit"], "vaelab.train"),
}

__all__ = [  # the same names as _EXPORTS (tests/test_cli.py checks), written out for readers and linters
    "__version__",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "load_preset",
    "VaelabError",
    "ConfigError",
    "DataError",
    "NotADensity",
    "StorageError",
    "CheckpointError",
    "TrainingDiverged",
    "TrainingInterrupted",
    "VAE",
    "BaseVAE",
    "Draws",
    "ElboTerms",
    "build_model",
    "interpolate_latents",
    "HierarchicalVAE",
    "load",
    "DataSplits",
    "ImageData",
    "load_splits",
    "EvalReport",
    "LikelihoodEstimate",
    "evaluate",
    "log_likelihood",
    "TrainResult",
    "fit",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what a type checker and an IDE see: the same names, imported eagerly
    from vaelab.checkpoint import load
    from vaelab.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig, load_preset
    from vaelab.data import DataSplits, ImageData, load_splits
    from vaelab.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        NotADensity,
        StorageError,
        TrainingDiverged,
        TrainingInterrupted,
        VaelabError,
    )
    from vaelab.evaluate import EvalReport, LikelihoodEstimate, evaluate, log_likelihood
    from vaelab.models import VAE, BaseVAE, Draws, ElboTerms, build_model, interpolate_latents
    from vaelab.models.hierarchy import HierarchicalVAE
    from vaelab.train import TrainResult, fit

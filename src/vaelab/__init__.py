"""vaelab: variational autoencoders in PyTorch, measured in nats.

    >>> import vaelab
    >>> model = vaelab.load("runs/seed")            # rebuild a trained model from its run folder
    >>> mu, logvar = model.encode(x)                # x: (B, 1, 28, 28) in [0, 1]
    >>> images = model.sample(16)                   # (16, 1, 28, 28) pixel means

The names below are imported on first use (PEP 562), so that `import vaelab.config` and the
`vaelab` command's --help do not pay for importing torch (about 1.4 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaelab._lazy import lazy_face
from vaelab._version import __version__

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["DataConfig", "EvalConfig", "ModelConfig", "RunConfig", "TrainConfig"], "vaelab.config"),
    "load_preset": "vaelab.config_io",
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
    "load": "vaelab.run.checkpoint",
    **dict.fromkeys(["DataSplits", "ImageData", "load_splits"], "vaelab.data"),
    **dict.fromkeys(
        ["EvalReport", "EvalRun", "LikelihoodEstimate", "encode_means", "evaluate", "evaluate_run", "log_likelihood"],
        "vaelab.evaluation",
    ),
    **dict.fromkeys(["TrainResult", "fit"], "vaelab.training"),
}

__all__ = ["__version__", *_EXPORTS]  # the public API: _EXPORTS is its one list


__getattr__, __dir__ = lazy_face("vaelab", _EXPORTS, globals())


# What a type checker and an IDE see: the names of _EXPORTS, imported eagerly (they cannot follow
# __getattr__, nor read __all__ built from _EXPORTS: hence the noqa). tests/test_cli.py checks that
# this block imports exactly _EXPORTS' names, each from its module there.
if TYPE_CHECKING:
    from vaelab.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig  # noqa: F401
    from vaelab.config_io import load_preset  # noqa: F401
    from vaelab.data import DataSplits, ImageData, load_splits  # noqa: F401
    from vaelab.errors import (  # noqa: F401
        CheckpointError,
        ConfigError,
        DataError,
        NotADensity,
        StorageError,
        TrainingDiverged,
        TrainingInterrupted,
        VaelabError,
    )
    from vaelab.evaluation import (  # noqa: F401
        EvalReport,
        EvalRun,
        LikelihoodEstimate,
        encode_means,
        evaluate,
        evaluate_run,
        log_likelihood,
    )
    from vaelab.models import VAE, BaseVAE, Draws, ElboTerms, build_model, interpolate_latents  # noqa: F401
    from vaelab.models.hierarchy import HierarchicalVAE  # noqa: F401
    from vaelab.run.checkpoint import load  # noqa: F401
    from vaelab.training import TrainResult, fit  # noqa: F401

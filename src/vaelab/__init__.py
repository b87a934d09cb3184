"""vaelab: variational autoencoders in PyTorch, measured in nats.

    >>> import vaelab
    >>> model = vaelab.load("runs/seed")            # rebuild a trained model from its run folder
    >>> mu, logvar = model.encode(x)                # x: (B, 1, 28, 28) in [0, 1]
    >>> images = model.sample(16)                   # (16, 1, 28, 28) pixel means
"""

__version__ = "0.1.0"

from vaelab.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig, load_preset  # noqa: E402
from vaelab.errors import (  # noqa: E402
    CheckpointError, ConfigError, DataError, NotADensity, StorageError, TrainingDiverged, TrainingInterrupted, VaelabError,
)
from vaelab.models import VAE, BaseVAE, Draws, ElboTerms, build_model, interpolate_latents  # noqa: E402
from vaelab.models.hierarchy import HierarchicalVAE  # noqa: E402
from vaelab.checkpoint import load  # noqa: E402
from vaelab.data import DataSplits, ImageData, load_splits  # noqa: E402
from vaelab.evaluate import EvalReport, LikelihoodEstimate, evaluate, log_likelihood  # noqa: E402
from vaelab.train import TrainResult, fit  # noqa: E402

__all__ = [
    "__version__", "DataConfig", "EvalConfig", "ModelConfig", "RunConfig", "TrainConfig", "load_preset",
    "VaelabError", "ConfigError", "DataError", "NotADensity", "StorageError", "CheckpointError", "TrainingDiverged", "TrainingInterrupted",
    "VAE", "BaseVAE", "HierarchicalVAE", "Draws", "ElboTerms", "build_model", "interpolate_latents", "load", "DataSplits", "ImageData", "load_splits",
    "EvalReport", "LikelihoodEstimate", "evaluate", "log_likelihood", "TrainResult", "fit",
]

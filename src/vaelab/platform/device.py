"""Which torch device a command runs on: `--device auto | cpu | cuda | mps`, checked once."""

from __future__ import annotations

import torch

from vaelab.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """auto: CUDA, else Apple MPS, else the CPU; a named device that this machine lacks is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: no Apple MPS device is available here; use --device cpu or auto")
    return torch.device(name)

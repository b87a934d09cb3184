"""Typed exceptions. Every message names the bad value and says how to fix it.

The CLI turns any :class:`VaelabError` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class VaelabError(Exception):
    """Base class of every error vaelab raises on purpose."""


class ConfigError(VaelabError, ValueError):
    """A setting has a bad value, an unknown key or the wrong type."""


class DataError(VaelabError, ValueError):
    """A data file or folder is missing, corrupt or does not match what was declared."""


class NotADensity(ConfigError):
    """A log-likelihood was asked of a likelihood that is not a density of the given pixels (a
    Bernoulli on grey values is a cross-entropy score, not log p(x))."""


class CheckpointError(VaelabError, ValueError):
    """A run folder is incomplete, altered, or belongs to another architecture."""


class TrainingDiverged(VaelabError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(VaelabError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved and training can be resumed."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class StorageError(VaelabError, OSError):
    """A file could not be written (disk full, read-only or missing folder); the previous file is kept."""


class DistributedError(VaelabError, RuntimeError):
    """A peer process failed or timed out during distributed training."""

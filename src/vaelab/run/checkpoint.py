"""Run folders: configs as JSON, tensors as safetensors, every write atomic. Nothing is unpickled.
The folder's names and its text files (config.json, metrics.csv) are in :mod:`vaelab.run.folder`;
the tensors are here.

A run folder holds:
  config.json              every setting, plus vaelab/torch/python versions
  model.safetensors        the model weights (what :func:`load` reads)
  best.safetensors         the weights with the best validation ELBO so far
  checkpoint.safetensors   weights + optimizer state + RNG states + training state (for --resume),
                           in one file so that one rename makes it consistent
  metrics.csv              one row per epoch
  *.png                    the pictures
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vaelab.config import RunConfig
from vaelab.errors import CheckpointError, TrainingDiverged
from vaelab.models import BaseVAE, build_model
from vaelab.platform.storage import atomic_write_bytes
from vaelab.run.folder import (  # noqa: F401 (the run folder's names and text files: importable here too)
    BEST,
    CHECKPOINT,
    CONFIG,
    FORMAT,
    METRICS,
    MODEL,
    START_AGAIN,
    check_not_complete,
    read_config,
    read_metrics,
    read_preset,
    remove_stale_temps,
    write_config,
    write_metrics,
)

logger = logging.getLogger(__name__)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the run folder is incomplete (train again or --resume)")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e}); it was altered or truncated") from e
    if "sha256" in meta and meta["sha256"] != tensor_digest(tensors, meta):
        raise CheckpointError(
            f"{path}: its contents do not match the SHA-256 recorded when it was written; "
            f"the file was altered or damaged: restore it or train again"
        )
    return tensors, meta


def tensor_digest(tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of `tensors` and the other metadata entries.

    Stored in the file's metadata as "sha256". safetensors has no checksum of its own: without
    this, flipped bytes in the data (or an edited training state) would load silently.
    """
    h = hashlib.sha256()
    for key in sorted(meta or {}):
        if key != "sha256":
            h.update(f"{key}={meta[key]}|".encode())  # type: ignore[index]
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _require_finite(tensors: dict[str, torch.Tensor], path: Path, when: str = "") -> None:
    """Refuse to write NaN/inf weights over a good file (on a GPU the loss is checked once per epoch)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TrainingDiverged(
                f"training diverged{when}: {name} holds NaN/inf, so {path} was not written and the last good "
                f"one is kept. Check that pixels lie in [0, 1] and try a smaller --lr or --grad-clip"
            )


def check_state_dict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the first tensor whose name, shape or dtype disagrees with the model."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{source}: tensors do not match config.json (missing {missing[:3]}, unexpected {extra[:3]}); "
            f"the weights belong to another architecture"
        )
    for name, want in expected.items():
        got = tensors[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(
                f"{source}: tensor {name!r} is {got.dtype} {tuple(got.shape)} but config.json builds "
                f"{want.dtype} {tuple(want.shape)}; the weights belong to another architecture"
            )


def save_weights(path: Path, model: torch.nn.Module) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _require_finite(tensors, path)
    meta = {"format": FORMAT}
    meta["sha256"] = tensor_digest(tensors, meta)
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load a weights file written by :func:`save_weights` into `model`, checked against it."""
    tensors, _ = _read_safetensors(path)
    check_state_dict(model, tensors, str(path))
    model.load_state_dict(tensors)


def load(
    run_dir: str | os.PathLike[str],
    weights: str = MODEL,
    device: str | torch.device = "cpu",
    cfg: RunConfig | None = None,
) -> BaseVAE:
    """Rebuild a trained model from its run folder alone, in eval mode.

    Args:
        run_dir: a folder written by `vaelab train`.
        weights: "model.safetensors" (last) or "best.safetensors" (best validation ELBO).
        device: where to put the model.
        cfg: the run's config when the caller has read it already (read_config), so it is read once.
    """
    run_dir = Path(run_dir)
    if weights in ("", ".", "..") or Path(weights).name != weights:
        raise CheckpointError(
            f"weights={weights!r}: give a file name inside the run folder, such as {MODEL!r} or {BEST!r}"
        )
    cfg = read_config(run_dir) if cfg is None else cfg
    model = build_model(cfg.model)
    load_weights(run_dir / weights, model)
    return model.to(device).eval()


def load_run(
    run_dir: str | os.PathLike[str], device: str | torch.device = "cpu", weights: str = MODEL
) -> tuple[BaseVAE, RunConfig]:
    """The model of a run folder (:func:`load`) and its config, config.json read once. device:
    "auto" (CUDA, then Apple MPS, then the CPU), "cpu", "cuda", "mps" or a torch.device."""
    from vaelab.platform.device import resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    cfg = read_config(Path(run_dir))
    return load(run_dir, weights=weights, device=dev, cfg=cfg), cfg


# -- full training checkpoints ----------------------------------------------------------------


def _flatten_optimizer(state: dict[str, Any], prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in state["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of _flatten_optimizer, given the tensors of one optimizer with the prefix removed."""
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = t
    for name, v in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = v
    return {"state": dict(sorted(state.items())), "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: dict[str, torch.Tensor],
    extra_tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    aux: tuple[torch.nn.Module, torch.optim.Optimizer] | None = None,
) -> None:
    """Write checkpoint.safetensors atomically: weights, optimizer, RNG states and the training state (JSON).

    aux: a network trained beside the model and its optimizer (FactorVAE's discriminator), stored
    under "aux." so that a resume restores it too.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    aux_meta = None
    if aux is not None:
        tensors.update({f"aux.model.{k}": v.detach().cpu().contiguous() for k, v in aux[0].state_dict().items()})
        aux_tensors, aux_meta = _flatten_optimizer(aux[1].state_dict(), "aux.")
        tensors.update(aux_tensors)
    tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in rng.items()})
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in extra_tensors.items()})
    _require_finite(tensors, run_dir / CHECKPOINT, f" at step {state.get('step')}")
    meta = {"format": FORMAT, "state": json.dumps(state), "optimizer": json.dumps(opt_meta)}
    if aux_meta is not None:
        meta["aux_optimizer"] = json.dumps(aux_meta)
    meta["sha256"] = tensor_digest(tensors, meta)
    atomic_write_bytes(run_dir / CHECKPOINT, st_save(tensors, metadata=meta))


def read_state(run_dir: Path) -> dict[str, Any]:
    """The training state of a run's checkpoint (epoch, step, elapsed seconds, why it stopped, and
    the final test ELBO under "test" once training ended), read from its metadata alone: no tensor
    is loaded. {} when the run has no checkpoint yet."""
    from safetensors import safe_open

    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = json.loads(meta.get("state", "{}"))
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read its training state ({e}); the file is damaged") from e
    return state if isinstance(state, dict) else {}


def load_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    aux: tuple[torch.nn.Module, torch.optim.Optimizer] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model and optimizer (and aux, see save_checkpoint) in place; return (rng states,
    extra tensors, training state)."""
    path = run_dir / CHECKPOINT
    tensors, meta = _read_safetensors(path)
    if meta.get("format") != FORMAT or "state" not in meta or "optimizer" not in meta:
        raise CheckpointError(f"{path}: not a vaelab training checkpoint (no training state in its metadata)")
    try:
        state, opt_meta = json.loads(meta["state"]), json.loads(meta["optimizer"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its training state is not valid JSON ({e}); the file was altered") from e
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: its training state is {type(state).__name__}, not a JSON object; the file was altered"
        )
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    check_state_dict(model, weights, str(path))
    device = next(model.parameters()).device
    model.load_state_dict(weights)
    _load_optimizer(path, optimizer, {k: v for k, v in tensors.items() if k.startswith("optim.")}, opt_meta, device)
    if aux is not None:
        if "aux_optimizer" not in meta:
            raise CheckpointError(
                f"{path}: it holds no {type(aux[0]).__name__} (the objective's second network); it was written "
                f"for another objective and cannot be resumed with this one"
            )
        aux_weights = {k[10:]: v for k, v in tensors.items() if k.startswith("aux.model.")}
        check_state_dict(aux[0], aux_weights, str(path))
        aux[0].load_state_dict(aux_weights)
        aux_opt = {k[4:]: v for k, v in tensors.items() if k.startswith("aux.optim.")}
        _load_optimizer(path, aux[1], aux_opt, json.loads(meta["aux_optimizer"]), device)
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    extra = {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("extra.")}
    return rng, extra, state


def _load_optimizer(
    path: Path, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: Any
) -> None:
    try:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta))
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: optimizer state does not fit this model ({e})") from e
    for st in optimizer.state.values():  # Adam keeps `step` on the CPU unless fused/capturable
        for k, v in st.items():
            if torch.is_tensor(v) and k != "step":
                st[k] = v.to(device)


# What fit() reads back from a training checkpoint.
STATE_KEYS = ("epoch", "step", "step_in_epoch", "best_val", "bad_epochs", "metrics", "elapsed", "stopped")


def check_resumable(run_dir: Path, rng: dict[str, Any], extra: dict[str, Any], state: dict[str, Any]) -> None:
    """Raise CheckpointError naming what a training checkpoint lacks for fit() to resume from it."""
    missing = [k for k in STATE_KEYS if k not in state]
    missing += [f"rng.{k}" for k in ("noise",) if k not in rng] + [f"extra.{k}" for k in ("sums",) if k not in extra]
    if missing:
        raise CheckpointError(
            f"{Path(run_dir) / CHECKPOINT}: the training state lacks {missing}; it was written "
            f"by another program or altered, and cannot be resumed"
        )


def replace_tensors(run_dir: Path, tensors: dict[str, torch.Tensor]) -> list[Path]:
    """Replace the named model tensors in every weights file of a run (model, best and the
    checkpoint, under "model." there), keeping everything else and each file's other metadata, and
    re-sign them. Every name must already be in each file with the same shape and dtype (the part
    of the model is refitted, not changed). Each file is replaced atomically. Returns the files."""
    run_dir = Path(run_dir)
    files = [(run_dir / MODEL, ""), (run_dir / BEST, ""), (run_dir / CHECKPOINT, "model.")]
    plans = []
    for path, prefix in files:
        if not path.is_file():
            continue
        old, meta = _read_safetensors(path)
        new = dict(old)
        for name, t in tensors.items():
            key = prefix + name
            if key not in old or old[key].shape != t.shape or old[key].dtype != t.dtype:
                raise CheckpointError(
                    f"{path}: it has no {key} of {t.dtype} {tuple(t.shape)}; it belongs to another model"
                )
            new[key] = t.detach().cpu().contiguous()
        meta = {k: v for k, v in meta.items() if k != "sha256"}
        meta["sha256"] = tensor_digest(new, meta)
        plans.append((path, st_save(new, metadata=meta)))
    for path, data in plans:  # every file checked before any is written
        atomic_write_bytes(path, data)
    return [p for p, _ in plans]

"""`vaelab compare RUN...`: several runs side by side, as a table and as overlaid learning curves.

Everything comes from what the run folders already hold: config.json (the model and the recipe),
metrics.csv (the curves and the training time), the checkpoint's training state (epochs, why it
stopped, the final test ELBO) and eval.json (the importance-sampled NLL, where `vaelab eval` ran).
No model is loaded and no data is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.config import RunConfig, load_preset, preset_names

# Settings that differ between runs of one preset without changing the recipe.
_NOT_RECIPE = {"model.input_shape", "model.num_classes", "train.threads", "train.device", "data.data_dir"}


@dataclass(frozen=True)
class RunSummary:
    """One run folder in numbers. ELBO is higher-is-better and NLL positive, both nats per image."""

    name: str
    path: Path
    preset: str  # the closest preset, with the settings that differ from it: "iwae-paper (+train.k)"
    model: str  # e.g. "mlp 200,200 -> 50 tanh, bernoulli; prior normal, posterior gaussian"
    objective: str  # e.g. "elbo", "iwae k=5 dreg"
    epochs: float  # epochs trained; a partial last epoch counts as its fraction
    stopped: str  # completed | time-budget | early-stopping | running (no final test ELBO yet)
    test_elbo: float | None
    nll: float | None
    nll_stderr: float | None
    nll_k: int | None
    train_minutes: float
    metrics: list[dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items() if k != "metrics"}


def _flat(cfg: RunConfig) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, table in cfg.to_dict().items() for k, v in table.items()}


def closest_preset(cfg: RunConfig) -> str:
    """The preset whose settings differ from `cfg` in the fewest keys, and those keys."""
    mine = _flat(cfg)
    best: tuple[int, str, list[str]] | None = None
    for name in preset_names():
        theirs = _flat(load_preset(name))
        diff = sorted(k for k in mine.keys() | theirs.keys() if k not in _NOT_RECIPE and mine.get(k) != theirs.get(k))
        if best is None or len(diff) < best[0]:
            best = (len(diff), name, diff)
    assert best is not None
    _, name, diff = best
    if not diff:
        return name
    shown = ", ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
    return f"{name} (+{shown})"


def describe_model(cfg: RunConfig) -> str:
    m = cfg.model
    if m.layers:
        sizes = " / ".join(f"{','.join(map(str, layer.hidden))} -> {layer.latent_dim}" for layer in m.layers)
    else:
        sizes = f"{','.join(map(str, m.hidden))} -> {m.latent_dim}"
    post = m.posterior if m.posterior == "gaussian" else f"{m.posterior} x{m.flow_steps}"
    return f"{m.arch} {sizes} {m.activation}, {m.likelihood}; prior {m.prior}, posterior {post}"


def describe_objective(cfg: RunConfig) -> str:
    t = cfg.train
    if t.objective == "elbo":
        text = "elbo" if t.beta == 1 else f"elbo beta={t.beta:g}"
    else:
        text = f"{t.objective} k={t.k}" + (f" m={t.m}" if t.objective in ("miwae", "piwae") else "")
    return text if t.estimator == "reparam" else f"{text} {t.estimator}"


def summarize(run_dir: str | Path) -> RunSummary:
    """Read one run folder. Raises CheckpointError when it is not one."""
    import json

    from vaelab import checkpoint as ckpt

    path = Path(run_dir)
    cfg = ckpt.read_config(path)
    metrics = ckpt.read_metrics(path)
    state = ckpt.read_state(path)
    test = state.get("test") or {}
    ev: dict[str, Any] = {}
    if (path / "eval.json").is_file():
        try:
            ev = json.loads((path / "eval.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            ev = {}
    fraction = metrics[-1].get("epoch_fraction", 1.0) if metrics else 1.0
    fraction = 1.0 if math.isnan(fraction) else fraction
    nll = ev.get("nll") if isinstance(ev.get("nll"), (int, float)) else None
    return RunSummary(
        name=path.name,
        path=path,
        preset=closest_preset(cfg),
        model=describe_model(cfg),
        objective=describe_objective(cfg),
        epochs=(len(metrics) - 1 + fraction) if metrics else 0.0,
        stopped=str(state.get("stopped", "running")) if test else "running",
        test_elbo=test.get("elbo"),
        nll=nll,
        nll_stderr=ev.get("nll_stderr") if nll is not None else None,
        nll_k=ev.get("k") if nll is not None else None,
        train_minutes=sum(r.get("epoch_seconds", 0.0) for r in metrics) / 60,
        metrics=metrics,
    )


def replace_name(summary: RunSummary, name: str) -> RunSummary:
    import dataclasses

    return dataclasses.replace(summary, name=name)


def table(runs: list[RunSummary]) -> str:
    """A Markdown table of the runs (readable as text too)."""
    head = "| run | preset | model | objective | epochs | test ELBO | NLL (k) | train minutes |"
    rows = [head, "|---|---|---|---|---:|---:|---:|---:|"]
    for r in runs:
        elbo = "-" if r.test_elbo is None else f"{r.test_elbo:.2f}"
        nll = "-" if r.nll is None else f"{r.nll:.2f} ± {r.nll_stderr or 0:.2f} ({r.nll_k})"
        epochs = f"{r.epochs:.2f}".rstrip("0").rstrip(".")
        rows.append(
            f"| {r.name} | {r.preset} | {r.model} | {r.objective} | {epochs} | {elbo} | {nll} | {r.train_minutes:.1f} |"
        )
    return "\n".join(rows)

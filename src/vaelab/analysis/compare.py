"""`vaelab compare RUN...`: several runs side by side, as a table and as overlaid learning curves.

Everything comes from what the run folders already hold: config.json (the model and the recipe),
metrics.csv (the curves and the training time), the checkpoint's training state (epochs, why it
stopped, the test ELBO at the end of training and over how many images) and eval.json (the
importance-sampled NLL of each `vaelab eval`, one record per split, k, number of images and
weights). No model is loaded and no data is read.

NLLs are only comparable when they were evaluated alike: :func:`compare_runs` shows each run's
latest evaluation when those are alike; otherwise the record of an evaluation that all evaluated
runs share (the most images, then the largest k), and when there is none, each run's latest with
a warning that names how they differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.config import RunConfig
from vaelab.config_io import load_preset, preset_names

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
    test_elbo: float | None  # training's own one-sample test ELBO at its end, not an `eval` figure
    test_elbo_images: int | None  # over how many test images (the run's --limit cuts them)
    nll: float | None  # from the eval.json record named by the nll_* fields below
    nll_stderr: float | None
    nll_k: int | None
    train_minutes: float
    metrics: list[dict[str, float]]
    nll_images: int | None = None  # images that evaluation covered (`vaelab eval --limit`)
    nll_split: str | None = None  # test | val
    nll_weights: str | None = None  # model.safetensors (last) | best.safetensors
    nll_latest: bool = True  # the NLL is the run's latest evaluation with one (else an earlier record)
    evaluations: int = 0  # evaluation records in eval.json

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items() if k != "metrics"}

    @property
    def nll_key(self) -> tuple[Any, ...] | None:
        """(split, k, images, weights) of the NLL shown, None without one."""
        return None if self.nll is None else (self.nll_split, self.nll_k, self.nll_images, self.nll_weights)

    def nll_source(self) -> str:
        """How the NLL was evaluated, in words: "k=100, 100 test images, last weights"."""
        weights = "best weights" if self.nll_weights == "best.safetensors" else "last weights"
        return f"k={self.nll_k}, {self.nll_images} {self.nll_split} images, {weights}"


@dataclass(frozen=True)
class Comparison:
    """Runs side by side, and the warnings that say where their numbers are not alike."""

    runs: list[RunSummary]
    warnings: list[str]


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
    from vaelab.models.registry import POSTERIORS

    entry = POSTERIORS[m.posterior]
    if entry.flow is not None:  # a flow: its steps
        post = f"{m.posterior} x{m.flow_steps}"
    elif entry.categorical:
        post = f"{m.posterior} ({m.categories} categories)"
    elif entry.discrete:
        post = f"{m.posterior} ({m.codebook_size} codes)"
    else:
        post = m.posterior
    return f"{m.arch} {sizes} {m.activation}, {m.likelihood}; prior {m.prior}, posterior {post}"


def describe_objective(cfg: RunConfig) -> str:
    from vaelab.objectives import describe

    return describe(cfg.train)


def _nll_records(path: Path) -> list[dict[str, Any]]:
    """eval.json's evaluation records that hold an NLL, oldest first."""
    from vaelab.evaluation.records import read_evaluations

    return [r for r in read_evaluations(path) if isinstance(r.get("nll"), (int, float))]


def summarize(run_dir: str | Path, evaluation: tuple[Any, ...] | None = None) -> RunSummary:
    """Read one run folder: its NLL from the eval.json record with the key `evaluation`
    ((split, k, images, weights), see vaelab.evaluation.evaluation_key) when it has one, else from
    its latest evaluation with an NLL. Raises CheckpointError when it is not a run folder."""
    from vaelab.evaluation.records import evaluation_key, read_evaluations
    from vaelab.run import checkpoint as ckpt

    path = Path(run_dir)
    cfg = ckpt.read_config(path)
    metrics = ckpt.read_metrics(path)
    state = ckpt.read_state(path)
    test = state.get("test") or {}
    records = _nll_records(path)
    chosen = [r for r in records if evaluation is not None and evaluation_key(r) == evaluation]
    ev: dict[str, Any] = (chosen or records or [{}])[-1]
    fraction = metrics[-1].get("epoch_fraction", 1.0) if metrics else 1.0
    fraction = 1.0 if math.isnan(fraction) else fraction
    nll = ev.get("nll")
    return RunSummary(
        name=path.name,
        path=path,
        preset=closest_preset(cfg),
        model=describe_model(cfg),
        objective=describe_objective(cfg),
        epochs=(len(metrics) - 1 + fraction) if metrics else 0.0,
        stopped=str(state.get("stopped", "running")) if test else "running",
        test_elbo=test.get("elbo"),
        test_elbo_images=test.get("n"),
        nll=nll,
        nll_stderr=ev.get("nll_stderr") if nll is not None else None,
        nll_k=ev.get("k") if nll is not None else None,
        train_minutes=sum(r.get("epoch_seconds", 0.0) for r in metrics) / 60,
        metrics=metrics,
        nll_images=ev.get("num_images") if nll is not None else None,
        nll_split=ev.get("split") if nll is not None else None,
        nll_weights=ev.get("weights", "model.safetensors") if nll is not None else None,
        nll_latest=not records or ev is records[-1],
        evaluations=len(read_evaluations(path)),
    )


def compare_runs(run_dirs: list[str | Path]) -> Comparison:
    """Summaries of the runs with their latest NLLs, or when those were evaluated differently, the
    NLLs of an evaluation they all share (the most images, then the largest k), and warnings where
    the rows are not alike.
    Raises CheckpointError (before anything else) when a folder is not a run."""
    from vaelab.evaluation.records import evaluation_key

    records = [_nll_records(Path(d)) for d in run_dirs]
    latest = {evaluation_key(r[-1]) for r in records if r}
    evaluated = [{evaluation_key(x) for x in r} for r in records if r]
    common = set.intersection(*evaluated) if len(latest) > 1 else set()  # alike already: the latest
    pick = max(common, key=lambda k: (k[2] or 0, k[1] or 0, k[0] == "test")) if common else None
    runs = [summarize(d, pick) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # runs/a/seed and runs/b/seed: tell them apart by their paths
        runs = [replace_name(r, str(r.path)) for r in runs]
    warnings = []
    shown = [r for r in runs if r.nll is not None]
    if len({r.nll_key for r in shown}) > 1:
        how = "; ".join(f"{r.name}: {r.nll_source()}" for r in shown)
        warnings.append(
            f"the NLLs were evaluated differently ({how}) and are not comparable: evaluate every run alike, "
            f"e.g. vaelab eval RUN --k 5000 on each"
        )
    elif pick is not None and any(not r.nll_latest for r in shown):
        later = ", ".join(r.name for r in shown if not r.nll_latest)
        warnings.append(
            f"the NLLs are those of the evaluation every run has ({shown[0].nll_source()}); {later} also "
            f"{'has' if ',' not in later else 'have'} a later one that the others lack"
        )
    elbo_images = {r.test_elbo_images for r in runs if r.test_elbo is not None}
    if len(elbo_images) > 1:
        how = "; ".join(f"{r.name}: {r.test_elbo_images}" for r in runs if r.test_elbo is not None)
        warnings.append(f"the test ELBOs at training end cover different numbers of test images ({how})")
    return Comparison(runs, warnings)


def replace_name(summary: RunSummary, name: str) -> RunSummary:
    import dataclasses

    return dataclasses.replace(summary, name=name)


def _nll_cell(r: RunSummary) -> str:
    if r.nll is None:
        return "-"
    best = ", best weights" if r.nll_weights == "best.safetensors" else ""
    return f"{r.nll:.2f} ± {r.nll_stderr or 0:.2f} (k={r.nll_k}, {r.nll_images} {r.nll_split}{best})"


def table(runs: list[RunSummary]) -> str:
    """A Markdown table of the runs (readable as text too). The test ELBO is the training run's own
    figure at its end, over the images it names; the NLL says which evaluation it comes from."""
    head = (
        "| run | preset | model | objective | epochs | test ELBO at training end (images) "
        "| NLL ± se (k, images) | train minutes |"
    )
    rows = [head, "|---|---|---|---|---:|---:|---:|---:|"]
    for r in runs:
        elbo = "-" if r.test_elbo is None else f"{r.test_elbo:.2f} ({r.test_elbo_images})"
        epochs = f"{r.epochs:.2f}".rstrip("0").rstrip(".")
        rows.append(
            f"| {r.name} | {r.preset} | {r.model} | {r.objective} | {epochs} | {elbo} | {_nll_cell(r)} "
            f"| {r.train_minutes:.1f} |"
        )
    return "\n".join(rows)

"""A run folder's names and its text files: config.json (every setting, plus versions) and
metrics.csv (one row per epoch), each written atomically. No torch here: `vaelab train`'s checks of
a folder and a config answer before torch is imported. The tensors are in :mod:`vaelab.run.checkpoint`.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

from vaelab._version import __version__
from vaelab.config import RunConfig, TrainConfig
from vaelab.errors import CheckpointError, ConfigError
from vaelab.platform.storage import atomic_write_text

CONFIG = "config.json"
MODEL = "model.safetensors"
BEST = "best.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.csv"
FORMAT = "vaelab-run-1"
SHIPPED = "result.json"  # beside a shipped model (zoo/ROW): the record of its reproduction row

logger = logging.getLogger(__name__)


def is_shipped(run_dir: str | Path) -> bool:
    """A shipped model's folder (zoo/ROW, from benchmarks/reproduce.py --ship): vaelab reads it as any
    run folder and never writes into it, so that its files stay the record of its row. Its result.json
    names the row and its preset; the result.json that other benchmark drivers leave in their run
    folders does not, and those stay writable."""
    try:
        doc = json.loads((Path(run_dir) / SHIPPED).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and {"row", "preset"} <= doc.keys()


def copy_command(run_dir: str | Path) -> str:
    """The shell command that copies a shipped model's folder into a run folder of one's own."""
    copy = f"{Path(run_dir).name}-copy"
    return f"cp -r {run_dir} {copy} && rm {copy}/{SHIPPED}"


def refuse_shipped(run_dir: str | Path, what: str, fix: str | None = None) -> None:
    """Raise ConfigError, before anything is written, when `what` would write into a shipped model's
    folder; `fix` (default: work on a copy) is how to do it without."""
    if is_shipped(run_dir):
        fix = fix or f"work on a copy without the {SHIPPED}: {copy_command(run_dir)}"
        raise ConfigError(
            f"{run_dir} is a shipped model (its {SHIPPED} records its row): {what} would change it; {fix}"
        )


def write_config(run_dir: Path, cfg: RunConfig, preset: str | None = None) -> None:
    """config.json: the settings, the preset they started from (kept from the file when not given,
    so a resume that rewrites it keeps the name), versions and time."""
    path = run_dir / CONFIG
    if preset is None and path.is_file():
        try:
            preset = json.loads(path.read_text()).get("preset")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            preset = None
    doc = {
        "format": FORMAT,
        **({"preset": preset} if preset else {}),
        **cfg.to_dict(),
        "versions": {"vaelab": __version__, "torch": _torch_version(), "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def _version_tuple(v: str) -> tuple[int, ...]:
    """'0.10.2' -> (0, 10, 2); non-numeric parts (rc1, dev) end the tuple."""
    out = []
    for part in v.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def read_preset(run_dir: Path) -> str | None:
    """The preset name a run's config.json records (runs written before it was recorded: None)."""
    try:
        doc = json.loads((Path(run_dir) / CONFIG).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    preset = doc.get("preset") if isinstance(doc, dict) else None
    return preset if isinstance(preset, str) else None


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder; train one with `vaelab train --out {run_dir}`")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {run_dir} is not a vaelab run folder (or it is incomplete)")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); the file was altered or truncated") from e
    fmt = doc.get("format") if isinstance(doc, dict) else None
    written_by = (doc.get("versions") or {}).get("vaelab") if isinstance(doc, dict) else None
    if isinstance(fmt, str) and fmt.startswith("vaelab-run-") and fmt != FORMAT:
        raise CheckpointError(
            f"{path}: written by vaelab {written_by or '?'} in format {fmt!r}; this vaelab {__version__} reads "
            f"{FORMAT!r}. Upgrade vaelab (pip install --upgrade vaelab) to read this run"
        )
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: not a vaelab run config (format {fmt!r}, expected {FORMAT!r})")
    if isinstance(written_by, str) and _version_tuple(written_by) > _version_tuple(__version__):
        logger.warning(
            "%s was written by vaelab %s, newer than this vaelab %s: settings it added may be "
            "refused or ignored; upgrade vaelab to be sure",
            path,
            written_by,
            __version__,
        )
    sections = {k: doc[k] for k in ("data", "model", "train") if k in doc}
    train = sections.get("train", {})
    if isinstance(train, dict) and "tc_estimator" not in train:
        # written before train.tc_estimator existed, when betatc always used the stratified
        # estimator: read it as "mss", so an old run resumes and reports as it was trained
        sections["train"] = {**train, "tc_estimator": "mss"}
    try:
        return RunConfig.from_dict(sections, source=str(path))
    except ConfigError as e:
        raise CheckpointError(str(e)) from e


def _torch_version() -> str:
    import torch  # loaded already when a run is written: this only names it

    return torch.__version__


def remove_stale_temps(run_dir: Path) -> list[Path]:
    """Delete the temporary files (.NAME.XXXX.tmp) that a crash during an atomic write leaves behind.

    They are never read: the file they were to replace is still the previous, complete version.
    """
    removed = []
    for name in (CONFIG, MODEL, BEST, CHECKPOINT, METRICS):
        for tmp in Path(run_dir).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(run_dir / METRICS, buf.getvalue())


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [
            {k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(f)
        ]


# appended to the errors of a resume that cannot go on: the other way out
START_AGAIN = "; to train {run} again from the start instead, give `vaelab train --out {run} --overwrite`"


def check_not_complete(run_path: Path, st: dict[str, Any], tc: TrainConfig) -> None:
    """A resume with nothing left to train is a mistake to report, not a run to redo the pictures of."""
    done = st["epoch"]
    if "test" not in st:  # killed after the last epoch but before the test ELBO: resume finishes that
        return
    if st["stopped"] == "time-budget":
        raise ConfigError(
            f"--resume {run_path}: the run already used its time budget of {tc.max_minutes:g} minutes "
            f"({st['elapsed'] / 60:.1f} min, {done} epochs); give a larger --max-minutes to train on"
        )
    if st["stopped"] == "early-stopping":
        raise ConfigError(
            f"--resume {run_path}: the run already stopped early after {done} epochs (patience "
            f"{tc.patience}); start a new run to train further"
        )
    if done >= tc.epochs:
        raise ConfigError(
            f"--resume {run_path}: the run is already complete ({done} of {done} epochs); to train further, "
            f"pass --epochs N with N above {done}, e.g. --resume {run_path} --epochs {done + max(1, done // 2)}"
        )

"""RUN/eval.json, the record of a run's evaluations, and what `vaelab eval` shows of one.

eval.json holds the latest evaluation at its top level and, under "evaluations", one record per
(split, k, number of images, weights): an evaluation with the same four replaces its record
(`vaelab compare` reads them). Reading it needs no torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vaelab.evaluation.report import EvalReport

logger = logging.getLogger(__name__)

EVAL_JSON = "eval.json"

EVAL_KEY = ("split", "k", "num_images", "weights")  # what makes two evaluations comparable


def evaluation_key(doc: dict[str, Any]) -> tuple[Any, ...]:
    """(split, k, num_images, weights) of one evaluation record of eval.json."""
    return tuple(doc.get(name) for name in EVAL_KEY)


def read_evaluations(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluation records of RUN/eval.json, oldest first (the last is the latest); [] when there
    is none or it is not readable. An eval.json written before the records existed is one record."""
    path = Path(run_dir) / EVAL_JSON
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        logger.warning("warning: %s is not readable JSON (%s); its evaluations are ignored", path, e)
        return []
    if not isinstance(doc, dict):
        return []
    records = doc.get("evaluations")
    if isinstance(records, list) and all(isinstance(r, dict) for r in records):
        return list(records)
    return [{k: v for k, v in doc.items() if k != "evaluations"}]


def record_evaluation(run_dir: str | Path, doc: dict[str, Any]) -> dict[str, Any]:
    """Write RUN/eval.json (atomically): `doc` at the top level, as the latest evaluation, and under
    "evaluations" one record per (split, k, num_images, weights): `doc` replaces the record of an
    earlier evaluation with the same key and keeps the others. Returns what was written."""
    from vaelab.platform.storage import atomic_write_text

    key = evaluation_key(doc)
    kept = [r for r in read_evaluations(run_dir) if evaluation_key(r) != key]
    written = {**doc, "evaluations": [*kept, doc]}
    atomic_write_text(Path(run_dir) / EVAL_JSON, json.dumps(written, indent=2) + "\n")
    return written


@dataclass(frozen=True)
class EvalRun:
    """What :func:`evaluate_run` did: the report, the record it wrote to eval.json and its table."""

    report: EvalReport
    record: dict[str, Any]  # eval.json's top level: the report, the run, weights, dataset, time
    dataset: str
    path: Path | None  # RUN/eval.json; None: not written (a shipped model's folder)
    replaced: bool  # the record replaced an earlier one with the same split, k, images and weights
    kept: int  # the other evaluations eval.json keeps
    codebook_size: int = 0  # of a VQ-VAE, for the perplexity row
    objective: str = "elbo"  # what training maximised (train.objective)

    def table(self) -> list[str]:
        """The lines `vaelab eval` prints: the numbers with their units, then the report's notes."""
        r = self.report
        rows = [("dataset / split", f"{self.dataset} / {r.split} ({r.num_images} images, pixels: {r.pixels})")]
        if r.nll is not None:
            rows.append(
                ("NLL bound" if r.nll_is_bound else f"NLL (k={r.k})", f"{r.nll:.2f} +- {r.nll_stderr:.2f} nats")
            )
            if r.bpd is not None:
                rows.append(("bits/dim", f"{r.bpd:.4f}"))
        if r.perplexity is not None:
            rows.append(("perplexity", f"{r.perplexity:.1f} of {self.codebook_size} codes"))
        rows += [
            ("ELBO", f"{r.elbo:.2f} +- {r.elbo_stderr:.2f} nats"),
            ("  log p(x|z)", f"{r.log_px_z:.2f} nats"),
            ("  KL (sampled)" if r.kl_sampled else "  KL", f"{r.kl:.2f} nats"),
            ("active units", f"{r.active_units} / {r.latent_dim}"),
            ("time", f"{r.seconds:.1f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        if r.note:
            lines.append(f"note: {r.note}")
        if r.kl_sampled:
            lines.append("note: KL is the one-draw estimate log q(z|x) - log p(z): this model has no closed form")
        from vaelab.objectives import OBJECTIVES

        if self.objective in OBJECTIVES and not OBJECTIVES[self.objective].is_bound:
            lines.append(
                f"note: trained with objective {self.objective}, which is not a bound on log p(x): training did "
                f"not maximise this ELBO; the ELBO and NLL measure the model as for any other"
            )
        return lines

    def saved(self) -> str:
        """The line that says where the record went, and what it replaced and kept."""
        kept = self.kept
        if self.path is None:
            from vaelab.run.folder import copy_command

            run = self.record["run"]
            return (
                f"not saved: {run} is a shipped model, whose eval.json records its row; to keep evaluations "
                f"of your own, evaluate a copy: {copy_command(run)}"
            )
        return (
            f"saved in {self.path}"
            + (
                " (replacing the earlier evaluation of this split, k, number of images and weights)"
                if self.replaced
                else ""
            )
            + (f"; {kept} other evaluation{'s' * (kept != 1)} kept there (vaelab compare)" if kept else "")
        )


def density_note(likelihood: str, binary: bool, is_density: bool, eight_bit: bool = False) -> str:
    if eight_bit:
        return ""  # a probability of the 8-bit values: the NLL and bits/dim are discrete, for any pixels
    if not is_density:
        kind = "binary" if binary else "grey"
        return (
            f"{likelihood} likelihood on {kind} pixels is not a density of the data: the ELBO is "
            f"a score, not a bound on a log-likelihood, and no NLL is reported"
        )
    if not binary:
        return (
            f"{likelihood} is a density of grey pixels in [0, 1] (no dequantisation): the NLL can be "
            f"negative and is not comparable with discrete NLLs or bits/dim, so no bpd is reported"
        )
    return ""

"""Evaluation the way papers do it: the importance-sampled log-likelihood (Burda et al. 2016) in
nats, the ELBO and its parts, bits/dim, active units.

- :mod:`~vaelab.evaluation.estimates`: the estimates, each a function of a model and images
  (:func:`log_likelihood`, :func:`elbo_terms`, :func:`active_units`, :func:`encode_means`, ...);
- :mod:`~vaelab.evaluation.plan`: how large each pass may be within EvalConfig.memory_mb, measured
  on a probe;
- :mod:`~vaelab.evaluation.report`: :func:`evaluate` (the report) and :func:`evaluate_run`
  (`vaelab eval` as one call);
- :mod:`~vaelab.evaluation.records`: RUN/eval.json, read and written (no torch).

The names below are imported on first use (PEP 562), so that reading eval.json
(vaelab.evaluation.records, as `vaelab compare` does) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaelab._lazy import lazy_face

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        [
            "LikelihoodEstimate",
            "active_units",
            "code_perplexity",
            "elbo_batches",
            "elbo_terms",
            "encode_means",
            "encode_posteriors",
            "is_binary",
            "kl_is_closed_form",
            "labels_for",
            "log_likelihood",
            "log_likelihood_batch",
            "log_weights",
            "standard_error",
        ],
        "vaelab.evaluation.estimates",
    ),
    **dict.fromkeys(["MB", "PassCost", "PassPlan", "measure_pass_cost", "plan_passes"], "vaelab.evaluation.plan"),
    **dict.fromkeys(
        ["EVAL_JSON", "EvalRun", "density_note", "evaluation_key", "read_evaluations", "record_evaluation"],
        "vaelab.evaluation.records",
    ),
    **dict.fromkeys(["EvalReport", "evaluate", "evaluate_run"], "vaelab.evaluation.report"),
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_face("vaelab.evaluation", _EXPORTS, globals())


if TYPE_CHECKING:  # what a type checker and an IDE see: the same names, imported eagerly
    from vaelab.evaluation.estimates import (  # noqa: F401
        LikelihoodEstimate,
        active_units,
        code_perplexity,
        elbo_batches,
        elbo_terms,
        encode_means,
        encode_posteriors,
        is_binary,
        kl_is_closed_form,
        labels_for,
        log_likelihood,
        log_likelihood_batch,
        log_weights,
        standard_error,
    )
    from vaelab.evaluation.plan import MB, PassCost, PassPlan, measure_pass_cost, plan_passes  # noqa: F401
    from vaelab.evaluation.records import (  # noqa: F401
        EVAL_JSON,
        EvalRun,
        density_note,
        evaluation_key,
        read_evaluations,
        record_evaluation,
    )
    from vaelab.evaluation.report import EvalReport, evaluate, evaluate_run  # noqa: F401

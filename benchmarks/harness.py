"""What the benchmark table drivers share: named rows, each measured through the `vaelab` command
line (the product, as a user runs it), saved to RESULTS/ROW.json the moment it finishes, skipped on
a rerun, and printed as a markdown table.

A driver keeps only its rows, how one row is measured and its table's columns:

    p = harness.parser(__doc__)
    p.add_argument("--minutes", type=float, default=10.0)
    harness.add_row_options(p, ROWS, RESULTS)
    args = p.parse_args(argv)
    if args.table:
        print(table(Path(args.results)))
        return
    names = harness.pick(p, args.rows, ROWS)
    harness.run_rows(Path(args.results), names, lambda name: run_row(name, args), summary)
    print(table(Path(args.results)))

where run_row builds `harness.vaelab("train", ...)`, runs it with `harness.run` (its output and
seconds) or `harness.run_json` (`vaelab eval --json` and the like), and returns the row's record
with its commands as a user types them (`harness.shown`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

Row = TypeVar("Row")
Record = dict[str, Any]


# -- the command line ------------------------------------------------------------------------------


def vaelab(*args: str) -> list[str]:
    """The `vaelab` command of this interpreter (the frozen copy's, when run from one)."""
    return [sys.executable, "-m", "vaelab", *args]


def shown(cmd: list[str]) -> str:
    """The command line as a user types it: `vaelab ...` for `python -m vaelab ...`."""
    return shlex.join(["vaelab", *cmd[3:]])


def threads_args(threads: int | None) -> list[str]:
    """`--threads N`, or nothing for vaelab's default (the usable cores)."""
    return ["--threads", str(threads)] if threads else []


def run(cmd: list[str], what: str, *, echo: bool = False) -> tuple[str, float]:
    """Run a command built by vaelab(); its standard output and wall-clock seconds. A failure ends
    the driver with the command and the tail of its standard error. `what` names the row."""
    if echo:
        print(f"$ {shown(cmd)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{what}: {shown(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout, seconds


def run_json(cmd: list[str], what: str) -> tuple[Record, float]:
    """run() for a command that prints one JSON object (`vaelab eval --json`, `vaelab disentangle --json`)."""
    out, seconds = run(cmd, what)
    return json.loads(out), seconds


# -- a run folder --------------------------------------------------------------------------------


def metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of RUN/metrics.csv (one per epoch), as text."""
    lines = (run_dir / "metrics.csv").read_text().strip().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


def now() -> str:
    """The date a record is stamped with."""
    return time.strftime("%Y-%m-%d %H:%M")


# -- rows and their results ----------------------------------------------------------------------


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A driver's parser: its docstring's first paragraph as the description."""
    return argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_row_options(
    p: argparse.ArgumentParser, rows: Iterable[str], results: Path, runs: str | None = None, what: str = "rows"
) -> None:
    """--rows (a comma-separated subset), --results (the finished rows' JSON), --runs (the run
    folders, when the driver keeps them) and --table (print the table of finished rows and stop)."""
    p.add_argument("--rows", help=f"comma-separated {what} [default: all]: {', '.join(rows)}")
    p.add_argument("--results", default=str(results))
    if runs is not None:
        p.add_argument("--runs", default=runs)
    p.add_argument("--table", action="store_true", help="only print the table of the finished rows")


def pick(p: argparse.ArgumentParser, text: str | None, rows: Iterable[str], unknown: str = "unknown rows") -> list[str]:
    """The rows named in `text` (comma-separated), or every row; an unknown name is a usage error."""
    every = list(rows)
    chosen = [n.strip() for n in text.split(",")] if text else every
    bad = [n for n in chosen if n not in every]
    if bad:
        p.error(f"{unknown} {bad}; choose from {', '.join(every)}")
    return chosen


def save(path: Path, record: Any) -> None:
    """Write `record` as JSON, whole or not at all (a killed driver never leaves half a row)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def finished(results: Path, names: Iterable[str]) -> dict[str, Record]:
    """The records of the finished rows among `names`, in that order."""
    return {n: json.loads(f.read_text()) for n in names if (f := results / f"{n}.json").is_file()}


def run_rows(
    results: Path,
    rows: Iterable[Row],
    measure: Callable[[Row], Record | None],
    summary: Callable[[Record], str],
    *,
    key: Callable[[Row], str] = str,
    label: Callable[[Row], str] | None = None,
) -> None:
    """The row loop: each row whose RESULTS/KEY.json exists is skipped; the others are measured in
    turn and saved there as soon as each finishes, with a line `LABEL: summary(record)`. A row whose
    measure() returns None is not finished yet (a driver's train-only phase) and is not saved."""
    label = label or key
    results.mkdir(parents=True, exist_ok=True)
    for row in rows:
        path = results / f"{key(row)}.json"
        if path.is_file():
            print(f"{label(row)}: done before, skipped ({path})", flush=True)
            continue
        record = measure(row)
        if record is None:
            continue
        save(path, record)
        print(f"{label(row)}: {summary(record)}", flush=True)


# -- markdown ------------------------------------------------------------------------------------


def md_row(cells: Sequence[Any]) -> str:
    """| a | b | c |; a None cell (a row not run yet) is written `| |`."""
    return "|" + "".join(" |" if c is None else f" {c} |" for c in cells)


def md_table(columns: Sequence[str], align: str, rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table; `align` has one letter per column: l (left) or r (right, for numbers).
    A row's cells are anything printable; None leaves a cell empty."""
    assert len(align) == len(columns), (columns, align)
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    return "\n".join([md_row(columns), rule, *(md_row(r) for r in rows)])


# -- options shared by the drivers that call the library (iwae_table, time_to_quality) -----------


def set_option(text: str) -> tuple[str, Any]:
    """The type of `--set SECTION.KEY=VALUE`: a preset's setting and its parsed value."""
    from vaelab.config_io import parse_value

    key, eq, value = text.partition("=")
    if not eq or "." not in key:
        raise argparse.ArgumentTypeError(f"--set {text!r}: use SECTION.KEY=VALUE, e.g. train.batch_size=100")
    return key, parse_value(value)


def add_set_option(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument(
        "--set",
        type=set_option,
        action="append",
        metavar="SECTION.KEY=VALUE",
        help=f"override a setting of the iwae-paper preset, e.g. --set {example}",
    )


def main_of(main: Callable[[], Any], prog: str) -> None:
    """Run a driver's main(); a configuration error ends it with `PROG: error: ...` and status 2."""
    from vaelab.errors import ConfigError

    try:
        main()
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None

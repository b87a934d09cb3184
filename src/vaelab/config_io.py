"""Configuration in and out: tables coerced to the dataclasses' annotations, overrides (dotted keys,
as on the command line), TOML files over a config, the presets shipped in vaelab/presets, and CLI
values parsed as TOML. The dataclasses and their checks are in config.py."""

from __future__ import annotations

import dataclasses
import sys
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from vaelab.config import SECTIONS, RunConfig
from vaelab.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib  # novm (vermin: the version check above is what keeps Python 3.10 working)
else:  # Python 3.10: the same parser as the `tomli` package (a dependency there only)
    import tomli as tomllib


def replace(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return `cfg` with dotted overrides applied, e.g. {"train.lr": 3e-4, "model.hidden": [400]}."""
    sections = {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTIONS}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(f"override {key!r} must look like SECTION.KEY with SECTION one of data, model, train")
        sections[section][name] = value
    return RunConfig.from_dict(sections, source="overrides")


def preset_names() -> list[str]:
    files = resources.files("vaelab").joinpath("presets").iterdir()
    return sorted(p.name.removesuffix(".toml") for p in files if p.name.endswith(".toml"))


def load_preset(name: str) -> RunConfig:
    """Read a preset shipped in vaelab/presets/NAME.toml (seed, tiny, iwae-paper, conv, ...)."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(names)}")
    text = resources.files("vaelab").joinpath("presets", f"{name}.toml").read_text()
    return RunConfig.from_dict(tomllib.loads(text), source=f"preset {name}")


def parse_value(text: str) -> Any:
    """Parse a CLI override value as TOML (numbers, booleans, lists), else keep it as a string."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merge_file(cfg: RunConfig, path: Path) -> RunConfig:
    """`cfg` with the tables of a TOML file ([data], [model], [train]) over it; unknown keys are errors."""
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML ({e})") from e
    RunConfig.from_dict({**{k: {} for k in ("data", "model", "train")}, **doc}, source=str(path))  # checks keys
    flat = {f"{s}.{k}": v for s, table in doc.items() for k, v in table.items()}
    return replace(cfg, flat)


def coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        inner = args[0]
        return tuple(coerce(inner, v, where) for v in value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def build(cls: type, values: Any, source: str) -> Any:
    """A config dataclass `cls` from a table of its keys, each coerced to its annotation; an unknown
    key is refused with the known ones (and the close match, if there is one)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        import difflib

        close = [m for u in unknown for m in difflib.get_close_matches(u, names, n=1, cutoff=0.75)]
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ConfigError(f"{source}: unknown key(s) {unknown}{hint}; known keys: {sorted(names)}")
    kwargs = {k: coerce(hints[k], v, f"{source} {k}") for k, v in values.items()}
    return cls(**kwargs)

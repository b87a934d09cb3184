"""Configuration in and out: overrides (dotted keys, as on the command line), TOML files over a
config, the presets shipped in vaelab/presets, and CLI values parsed as TOML. The dataclasses and
their checks are in config.py."""

from __future__ import annotations

import dataclasses
import sys
from importlib import resources
from pathlib import Path
from typing import Any

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

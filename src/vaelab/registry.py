"""One registry per extension point: objectives, priors, posteriors, likelihoods, architectures, data sets.

A registry maps a name to an entry (a frozen dataclass with at least ``name`` and ``summary``).
Config checks, the CLI's choices and help, and the run folders all read the registry, so a name is
spelled once: where its entry is registered. A user adds a part from their own code with the
registry's ``register`` (see docs/family.md) and, for the command line, lists the module that does it
in the ``VAELAB_PLUGINS`` environment variable or in a ``vaelab.plugins`` entry point of their package.

This module imports no torch: the CLI reads the names before torch loads (vaelab.platform.omp sets OpenMP's
wait policy first). An entry names its implementation either as a callable or as a
"package.module:attribute" string, imported on first use by :func:`resolve`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from vaelab.errors import ConfigError


class Entry(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def summary(self) -> str: ...


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    """The entries of one extension point, in registration order.

    `kind` names the part in messages ("objective", "prior"); `setting` is the config key that takes
    the name ("train.objective"), so an unknown name's error says where it came from and what exists.
    """

    def __init__(self, kind: str, setting: str) -> None:
        self.kind = kind
        self.setting = setting
        self._entries: dict[str, E] = {}

    def register(self, entry: E, *, replace: bool = False) -> E:
        """Add `entry` under entry.name and return it. A name taken by another entry is refused unless
        replace=True (so two plugins cannot silently shadow each other or a built-in)."""
        name = entry.name
        if not isinstance(name, str) or not name or name != name.strip() or "," in name:
            raise ConfigError(f"a {self.kind} name must be a non-empty string without commas, got {name!r}")
        if name in self._entries and not replace and self._entries[name] != entry:
            raise ConfigError(
                f"{self.kind} {name!r} is registered already; pick another name, or pass replace=True to override it"
            )
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests, and plugins that replace a built-in and want it back)."""
        self._entries.pop(name, None)

    def __getitem__(self, name: str) -> E:
        entry = self._entries.get(name)
        if entry is None:
            load_plugins()
            entry = self._entries.get(name)
        if entry is None:
            raise ConfigError(
                f"{self.setting} must be one of {', '.join(self.names())}; got {name!r} (a {self.kind} of your own "
                f"must be registered first: import the module that registers it, or name it in VAELAB_PLUGINS)"
            )
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(list(self._entries.values()))

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def help(self) -> str:
        """ "name: summary; name: summary ..." for --help."""
        return "; ".join(f"{e.name}: {e.summary}" for e in self._entries.values())


def resolve(ref: Callable[..., Any] | str) -> Any:
    """The object `ref` names: itself if it is not a string, else "package.module:attribute" imported."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


_plugins_loaded = False


def load_plugins() -> None:
    """Import the modules that register users' parts, once: those named in VAELAB_PLUGINS
    (comma-separated module names) and the ``vaelab.plugins`` entry points of installed packages."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    names = [n.strip() for n in os.environ.get("VAELAB_PLUGINS", "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"VAELAB_PLUGINS names module {name!r}, which does not import: {e}") from e
    from importlib.metadata import entry_points

    for ep in entry_points(group="vaelab.plugins"):
        ep.load()

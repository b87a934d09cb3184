"""A package face that imports a public name's module only when the name is first used (PEP 562), so
that importing the face loads no torch. vaelab and vaelab.models use it with their name -> module maps."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_face(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level __getattr__ and __dir__ of `package`, whose `namespace` (its globals()) gets
    each name of `exports` (name -> the module that defines it) on first use."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__

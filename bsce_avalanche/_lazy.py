"""PEP 562 lazy exports for a package whose names live in modules that import torch or Avalanche."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, namespace: dict, lazy: dict[str, tuple[str, ...]]):
    """``(__getattr__, __dir__)`` for ``package``: each name of ``lazy[module]`` is imported from
    ``package.module`` on first use and then kept in ``namespace`` as an ordinary attribute."""
    module_of = {name: module for module, names in lazy.items() for name in names}

    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = namespace[name] = getattr(importlib.import_module(f".{module_of[name]}", package), name)
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *module_of})

    return __getattr__, __dir__

"""Lazy public names of a package (PEP 562): each is imported from its module on first use.

A package's ``__init__`` lists ``{name: module}`` and imports the same names under ``typing.TYPE_CHECKING`` so that
type checkers and IDEs see them; at run time nothing is imported until a name is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, table: Mapping[str, str], eager: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose public names are imported on first use.

    Args:
        package: the package's ``__name__``.
        table: ``{public name: module}``, the module absolute or relative to ``package`` (``"sampling.generation"``).
        eager: names the package defines itself (listed by ``__dir__`` too).

    Returns:
        ``(__getattr__, __dir__)`` to assign at the package's top level.
    """
    namespace = importlib.import_module(package)
    names = sorted({*table, *eager})

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        path = module if module.startswith("steering_adapter") else f"{package}.{module}"
        value = getattr(importlib.import_module(path), name)
        setattr(namespace, name, value)
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__

"""Old import paths, kept for one release: a module ``__getattr__`` that finds a name where it moved.

The flat modules of rsbench 0.1 (``rsbench.zoo``, ``rsbench.weights``, ``rsbench.data``,
``rsbench.models``, ``rsbench.metrics``) became packages or moved into one; their names still
resolve from the old path, with a :class:`DeprecationWarning` that names the new one, for one
more release.
Nothing inside rsbench imports through these paths (``tests/test_layering.py`` checks it).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(old: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old``: ``where[name]`` is the module that now defines ``name``."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} moved to {where[name]}.{name}; the old path goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(where[name]), name)

    return __getattr__

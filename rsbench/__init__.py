"""rsbench: benchmark and evaluation harness for randomized smoothing (RS) and dual RS.

Python API (what the CLI runs, as functions)::

    import rsbench
    model = rsbench.load("embedded-fmnist-dual")      # a ready DualSmoothed (or expert, cascade)
    rows = rsbench.certify("embedded-fmnist-cnn-s0.25", limit=10)   # the results frame

Importing this package is cheap: ``load`` and ``certify`` (:mod:`rsbench.api`) and heavy modules
(torch, pandas, ...) are imported on first use, so ``rsbench --help`` answers instantly.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "certify", "load"]

_LAZY = {"load": "rsbench.api", "certify": "rsbench.api"}


def __getattr__(name: str) -> Any:
    """``rsbench.load`` / ``rsbench.certify``, imported on first access."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rsbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

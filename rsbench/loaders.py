"""Moved to :mod:`rsbench.api` (``load_dual``, ``load_cascade``); this old path resolves there (with a
DeprecationWarning) for one more release. Nothing inside rsbench imports it."""

from __future__ import annotations

from rsbench._moved import moved_names

__getattr__ = moved_names(
    "rsbench.loaders", {"load_dual": "rsbench.api", "load_cascade": "rsbench.api"}
)

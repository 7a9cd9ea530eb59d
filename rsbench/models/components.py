"""What a ``denoised`` entry's components are, without loading them (torch-free).

``rsbench zoo list`` / ``zoo info`` and the run identity read these; loading is
:mod:`rsbench.models.denoised`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rsbench.errors import ConfigError, WeightsError


def hub_location(entry, spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name_or_path, from_pretrained kwargs)`` of a hub component."""
    kwargs: dict[str, Any] = {}
    if spec.get("subfolder"):
        kwargs["subfolder"] = spec["subfolder"]
    if spec.get("path"):
        path = Path(str(spec["path"])).expanduser()
        if not path.is_absolute() and entry.base_dir is not None:
            path = entry.base_dir / path
        if not path.is_dir():
            raise WeightsError(
                f"{entry.id}: hub component folder {str(path)!r} does not exist; give a folder "
                "written by save_pretrained"
            )
        return str(path), kwargs
    if spec.get("revision"):
        kwargs["revision"] = spec["revision"]
    return str(spec["repo_id"]), kwargs


def component_identity(spec: Mapping[str, Any]) -> str:
    """A string naming a component's exact bytes: ``sha256:<hex>``, ``hf:<repo>@<rev>`` or unpinned."""
    if spec.get("hub"):
        if spec.get("path"):
            return f"local:{spec['path']}"
        return f"hf:{spec['repo_id']}@{spec.get('revision') or 'unpinned'}"
    return f"sha256:{spec.get('sha256') or 'unpinned'}"


def describe(entry) -> str:
    """One line naming a denoised entry's two components (for listings)."""

    def one(spec: Mapping[str, Any]) -> str:
        if spec.get("hub"):
            return str(spec.get("repo_id") or spec.get("path"))
        return str(spec.get("arch"))

    return f"{one(entry.denoiser or {})} + {one(entry.classifier or {})}"


def is_cached(entry, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when both components are present locally (not verified: loading verifies)."""
    from rsbench.weights import sources as weights
    from rsbench.zoo.parse import component_entry

    for role in ("denoiser", "classifier"):
        spec = getattr(entry, role) or {}
        if not spec.get("hub"):
            if not weights.is_cached(component_entry(entry, role), cache_dir):
                return False
        elif spec.get("path"):
            try:
                hub_location(entry, spec)
            except WeightsError:
                return False
        else:
            try:
                from huggingface_hub import try_to_load_from_cache
            except ImportError:  # pragma: no cover - huggingface-hub is a base dependency
                return False
            hub_cache = str(Path(cache_dir) / "huggingface") if cache_dir is not None else None
            name = "/".join(p for p in (spec.get("subfolder"), "config.json") if p)
            found = try_to_load_from_cache(
                str(spec["repo_id"]), name, cache_dir=hub_cache, revision=spec.get("revision")
            )
            if not isinstance(found, str):
                return False
    return True


def check_served(entry_id: str, sigmas: Sequence[float], sigma: float) -> float:
    """``sigma`` when it is one of ``sigmas`` (to 1e-9), else :class:`ConfigError` naming them."""
    for served in sigmas:
        if math.isclose(float(sigma), float(served), rel_tol=0, abs_tol=1e-9):
            return float(served)
    listed = ", ".join(f"{s:g}" for s in sigmas)
    raise ConfigError(f"{entry_id} serves sigma {listed}, not {float(sigma):g}; pick one of them")

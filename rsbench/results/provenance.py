"""Provenance recorded in ``run.json``: UTC time, host and library versions, git commit, and a
stable content hash (:func:`digest`, used for run identities and zoo entry digests).

Guarantee: :func:`digest` is the sha256 of the canonical JSON (sorted keys, no spaces) of its
argument, so equal configurations hash equal across processes and hosts. Imports nothing of
rsbench but its version.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np


def utc_now() -> str:
    """Current UTC time in ISO 8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(start: str | os.PathLike | None = None) -> str | None:
    """Commit of the git checkout holding ``start`` (default: this package), or None."""
    where = Path(start) if start else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=where,
        capture_output=True,
        text=True,
        check=False,
    )
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    """Versions of Python, rsbench and the libraries that shape the numbers."""
    from importlib import metadata

    from rsbench import __version__

    versions = {"python": platform.python_version(), "rsbench": __version__}
    for name in (
        "torch",
        "torchvision",
        "timm",
        "numpy",
        "scipy",
        "pyarrow",
        "pandas",
        "safetensors",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment_info() -> dict[str, Any]:
    """Host facts recorded in run.json: platform, CPU count, versions, git commit."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "executable": sys.executable,
        "versions": package_versions(),
        "git_commit": git_commit(),
    }


def recorded_path(path: str | os.PathLike) -> str:
    """How a source file or folder is recorded in a run.json: relative to the working directory
    when it lies under it (so a result made from a checkout names the same file in every clone),
    else absolute. A path that reaches the working directory only through a symlink is still
    under it (tried as given, then with links resolved)."""
    given, cwd = Path(os.path.abspath(path)), Path.cwd()
    for candidate, base in ((given, cwd), (given.resolve(), cwd.resolve())):
        try:
            return candidate.relative_to(base).as_posix()
        except ValueError:
            continue
    return os.fspath(given.resolve())


def digest(data: Any) -> str:
    """sha256 of the canonical JSON of ``data`` (sorted keys): a stable content hash."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

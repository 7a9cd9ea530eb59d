"""Sweep files: a grid of certifications (ids x sigmas x protocols) with shared options.

:func:`load_sweep` reads and checks a file (unknown keys and options are one
:class:`~rsbench.errors.ConfigError` naming the allowed ones; every option is typed strictly, see
:data:`OPTION_TYPES`: a boolean is not a number, a float is not an index, an unknown dataset or
split is refused, each with one line naming the option); :func:`sweep_options` gives the
options its runs use (the file's ``options:``, over :data:`rsbench.run.jobs.DEFAULTS`, under
``overrides`` from the command line), and :func:`sweep_jobs` the jobs: every id x sigma x protocol,
each run as ``rsbench certify`` runs it (:mod:`rsbench.run.jobs`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsbench.errors import ConfigError, RSBenchError
from rsbench.run.jobs import DEFAULTS, Job

if TYPE_CHECKING:
    from rsbench.zoo.registry import Zoo

_SWEEP_KEYS = {"ids", "sigmas", "protocols", "options"}
#: The options a sweep file may set: every certify option but the protocol (``protocols:``) and
#: what only a command line means (``dry_run``, ``no_leaderboard``).
_SWEEP_OPTIONS = set(DEFAULTS) - {"protocol", "dry_run", "no_leaderboard"}

#: The type each sweep option takes (null always means the default): ``str`` a string, ``int``
#: an integer (not a boolean, not a float), ``number`` an int or float (not a boolean), ``bool``
#: true/false, ``zoo`` a path or a list of paths, ``indices`` index text (``0:100:4``), an
#: integer or a list of integers.
OPTION_TYPES: dict[str, str] = {
    **{name: "str" for name in ("dataset", "split", "device", "precision", "noise_dtype")},
    **{name: "str" for name in ("out", "shard", "data_root", "alpha_split")},
    **{name: "int" for name in ("n0", "n", "stride", "limit", "batch", "seed", "chunk_size")},
    "threads": "int",
    **{name: "number" for name in ("alpha", "alpha_router_fraction", "sigma_router", "p0")},
    **{
        name: "bool"
        for name in ("channels_last", "compile", "require_pinned", "allow_unpinned", "download")
    },
    "zoo": "zoo",
    "indices": "indices",
}
_WANTED = {
    "str": "a string",
    "int": "an integer (not true/false, not a float)",
    "number": "a number (not true/false)",
    "bool": "true or false",
    "zoo": "a zoo file path or a list of them",
    "indices": "index text such as 0:100:4, an integer, or a list of integers",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return _is_int(value)
    if kind == "number":
        return _is_int(value) or isinstance(value, float)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "zoo":
        return isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
    # indices
    return (
        isinstance(value, str)
        or _is_int(value)
        or (isinstance(value, list) and bool(value) and all(_is_int(v) for v in value))
    )


def check_options(path: Path, options: Mapping[str, Any]) -> None:
    """Refuse a sweep option of the wrong type (:data:`OPTION_TYPES`), an unknown dataset, or a
    split the dataset (or, without one, any dataset) does not have: one :class:`ConfigError` line
    naming the file, the option, the value and what it takes."""
    for name, value in options.items():
        kind = OPTION_TYPES.get(name)
        if value is None or kind is None:
            continue
        if not _fits(kind, value):
            raise ConfigError(
                f"sweep file {path}: option {name}: {value!r:.60} is not {_WANTED[kind]}"
            )
        if name == "indices" and isinstance(value, str):
            from rsbench.data.indices import parse_indices

            try:  # refused here, naming the file, before any list is built
                parse_indices(value)
            except RSBenchError as exc:
                raise ConfigError(f"sweep file {path}: option indices: {exc}") from None
    check_dataset_split(options.get("dataset"), options.get("split"), f"sweep file {path}: option ")


def check_dataset_split(dataset: str | None, split: str | None, where: str = "option ") -> None:
    """Refuse a dataset rsbench does not know, or a split that ``dataset`` (without one: any
    dataset) does not have, with one :class:`ConfigError` line starting with ``where`` followed by
    the option's name (``where`` is e.g. ``"--"`` or ``"sweep file F: option "``)."""
    from rsbench.data.catalog import DATASETS, SPLIT_PREFIXES, dataset_info

    if dataset is not None:
        try:
            dataset_info(dataset)
        except RSBenchError as exc:
            raise ConfigError(f"{where}dataset: {exc}") from None
    if split is not None:
        names = [dataset] if dataset is not None else list(DATASETS)
        splits = {s for d in names for s in DATASETS[d].splits}
        splits |= {s for (d, s) in SPLIT_PREFIXES if d in names}
        if split not in splits:
            of = f"dataset {dataset}" if dataset is not None else "any dataset"
            raise ConfigError(
                f"{where}split: {split!r} is not a split of {of} "
                f"(known: {', '.join(sorted(splits))})"
            )


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a sweep file: ``ids`` (list), optional ``sigmas``, ``protocols``, ``options``.

    Unknown keys are a :class:`ConfigError` naming the key and the allowed ones.
    """
    import yaml

    from rsbench import safeyaml

    path = Path(path)
    try:
        text = safeyaml.read_text(path, "sweep file", ConfigError)
        data = safeyaml.load(
            text, getattr(yaml, "CSafeLoader", yaml.SafeLoader), str(path), ConfigError
        )
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep file {path} is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path} must be a mapping with keys {sorted(_SWEEP_KEYS)}")
    unknown = set(data) - _SWEEP_KEYS
    if unknown:
        raise ConfigError(
            f"sweep file {path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_SWEEP_KEYS)}"
        )
    ids = data.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ConfigError(f"sweep file {path}: 'ids' must be a non-empty list of zoo ids")
    sigmas = data.get("sigmas") or [None]
    if not isinstance(sigmas, list) or not all(
        s is None or (isinstance(s, (int, float)) and not isinstance(s, bool)) for s in sigmas
    ):
        raise ConfigError(
            f"sweep file {path}: 'sigmas' must be a list of numbers (not true/false), "
            f"not {sigmas!r:.60}"
        )
    protocols = data.get("protocols") or ["cpu"]
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise ConfigError(f"sweep file {path}: 'protocols' must be a list of protocol names")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"sweep file {path}: 'options' must be a mapping")
    unknown = set(options) - _SWEEP_OPTIONS
    if unknown:
        raise ConfigError(
            f"sweep file {path}: unknown option(s) {sorted(unknown)}; allowed: {sorted(_SWEEP_OPTIONS)}"
        )
    check_options(path, options)
    return {"ids": ids, "sigmas": sigmas, "protocols": protocols, "options": options}


def sweep_options(spec: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a sweep's runs: the file's ``options`` over :data:`DEFAULTS`, then each
    ``overrides`` value that is not None (``zoo`` files are added to the file's)."""
    opts = dict(spec["options"])
    options = dict(DEFAULTS)
    for name in _SWEEP_OPTIONS - {"zoo", "indices"}:
        if name in opts:
            options[name] = opts[name]
    for flag in ("channels_last", "compile", "require_pinned", "allow_unpinned", "download"):
        options[flag] = bool(options[flag])
    options["indices"] = _indices_text(opts.get("indices"))
    options["zoo"] = tuple(_as_list(opts.get("zoo"))) + tuple(overrides.get("zoo") or ())
    for name, value in overrides.items():
        if name != "zoo" and value is not None:
            options[name] = value
    return options


def sweep_jobs(spec: Mapping[str, Any], zoo: Zoo) -> list[Job]:
    """Every id x sigma x protocol of ``spec``, each once: experts at each of ``sigmas`` (None: the
    entry's ``train_sigma``), a denoised entry at the sweep's sigmas, else at every sigma it
    serves, dual and cascade entries once (their sigmas are the entry's)."""
    jobs: list[Job] = []
    for model_id in spec["ids"]:
        entry = zoo.get(model_id)
        if entry.kind == "expert":
            sigmas = spec["sigmas"]
        elif entry.kind == "denoised":
            sigmas = [s for s in spec["sigmas"] if s is not None] or list(entry.sigmas or ())
        else:
            sigmas = [None]
        for sigma in sigmas:
            for protocol in spec["protocols"]:
                job = Job(model_id, sigma, protocol)
                if job not in jobs:
                    jobs.append(job)
    return jobs


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _indices_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):  # integers (load_sweep checked them)
        return ",".join(str(v) for v in value)
    return str(value)

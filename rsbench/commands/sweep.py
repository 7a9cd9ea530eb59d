"""``rsbench sweep``: a grid of certifications (ids x sigmas x protocols) from a sweep YAML file.

:func:`load_sweep` reads and checks the file (unknown keys and options are one error naming the
allowed ones); every job then runs as ``rsbench certify`` runs it (:func:`rsbench.commands.certify.
run_jobs`), skipping runs already complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from rsbench.commands.certify import run_jobs
from rsbench.errors import ConfigError

_SWEEP_KEYS = {"ids", "sigmas", "protocols", "options"}
_SWEEP_OPTIONS = {
    "dataset",
    "split",
    "n0",
    "n",
    "alpha",
    "stride",
    "limit",
    "indices",
    "batch",
    "seed",
    "device",
    "precision",
    "channels_last",
    "compile",
    "noise_dtype",
    "out",
    "shard",
    "zoo",
    "data_root",
    "require_pinned",
    "allow_unpinned",
    "chunk_size",
    "download",
    "threads",
    "alpha_router_fraction",
    "sigma_router",
    "p0",
    "alpha_split",
}


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
        s is None or isinstance(s, (int, float)) for s in sigmas
    ):
        raise ConfigError(f"sweep file {path}: 'sigmas' must be a list of numbers")
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
    return {"ids": ids, "sigmas": sigmas, "protocols": protocols, "options": options}


_SWEEP_EXAMPLES = """\b
Examples:
  rsbench sweep sweeps/embedded.yaml
  rsbench sweep sweeps/cohen-cifar10.yaml --data-root ~/data --device cuda
  rsbench sweep sweeps/cohen-cifar10.yaml --shard 0/4 --dry-run

\b
A sweep file:
  ids: [cohen-cifar10-resnet110-s0.25, cohen-cifar10-resnet110-s0.50]
  sigmas: [0.25, 0.5]      # optional; default: each expert's train_sigma (dual ids: the entry's)
  protocols: [cohen]       # optional; default: cpu
  options: {batch: 1000, out: my-results, seed: 0, precision: bf16, channels_last: true}
                           # any certify option, spelled with _
Every id x sigma x protocol is one run; finished runs are skipped.
"""


@click.command(epilog=_SWEEP_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sweep_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Override options.out."
)
@click.option("--device", default=None, help="Override options.device.")
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Override options.data_root.",
)
@click.option("--shard", default=None, help="Override options.shard (I/N).")
@click.option(
    "--zoo", "zoo_paths", multiple=True, type=click.Path(dir_okay=False), help="Extra zoo file."
)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan and a cost estimate; certify nothing."
)
@click.option("--no-leaderboard", is_flag=True, help="Do not print the table at the end.")
def sweep(
    sweep_file: str,
    out_dir: str | None,
    device: str | None,
    data_root: str | None,
    shard: str | None,
    zoo_paths: tuple[str, ...],
    dry_run: bool,
    no_leaderboard: bool,
) -> None:
    """Run a grid of certifications (ids x sigmas x protocols) from a sweep YAML file."""
    from rsbench.runconfig import DEFAULT_BATCH

    spec = load_sweep(sweep_file)
    opts = dict(spec["options"])
    options: dict[str, Any] = {
        "dataset": opts.get("dataset"),
        "split": opts.get("split"),
        "n0": opts.get("n0"),
        "n": opts.get("n"),
        "alpha": opts.get("alpha"),
        "stride": opts.get("stride"),
        "limit": opts.get("limit"),
        "indices": _indices_text(opts.get("indices")),
        "batch_size": opts.get("batch", DEFAULT_BATCH),
        "seed": opts.get("seed", 0),
        "device": device or opts.get("device", "auto"),
        "precision": opts.get("precision", "fp32"),
        "channels_last": bool(opts.get("channels_last", False)),
        "compile_models": bool(opts.get("compile", False)),
        "noise_dtype": opts.get("noise_dtype", "auto"),
        "out_dir": out_dir or opts.get("out"),
        "shard": shard or opts.get("shard", "0/1"),
        "zoo_paths": tuple(_as_list(opts.get("zoo"))) + tuple(zoo_paths),
        "data_root": data_root or opts.get("data_root"),
        "require_pinned": bool(opts.get("require_pinned", False)),
        "allow_unpinned": bool(opts.get("allow_unpinned", False)),
        "download": bool(opts.get("download", False)),
        "threads": opts.get("threads"),
        "chunk_size": opts.get("chunk_size", 64),
        "alpha_router_fraction": opts.get("alpha_router_fraction"),
        "sigma_router": opts.get("sigma_router"),
        "p0": opts.get("p0"),
        "alpha_split": opts.get("alpha_split"),
        "dry_run": dry_run,
    }
    from rsbench.zoo import load_zoo

    zoo = load_zoo(options["zoo_paths"])
    jobs = []
    for model_id in spec["ids"]:
        entry = zoo.get(model_id)
        if entry.kind == "expert":
            sigmas = spec["sigmas"]
        elif entry.kind == "denoised":  # the sweep's sigmas, else every sigma it serves
            sigmas = [s for s in spec["sigmas"] if s is not None] or list(entry.sigmas or ())
        else:
            sigmas = [None]
        for sigma in sigmas:
            for protocol in spec["protocols"]:
                job = (model_id, sigma, protocol)
                if job not in jobs:
                    jobs.append(job)
    run_jobs(jobs, options, leaderboard=not no_leaderboard, skip_complete=True)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _indices_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ",".join(str(int(v)) for v in value)
    return str(value)

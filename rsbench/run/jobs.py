"""The certification jobs of one invocation: ``rsbench certify``, ``rsbench sweep`` and
:func:`rsbench.certify` all run through here, with one set of option names and defaults.

* :data:`DEFAULTS` is the one place each option's default lives, under the name users write: the
  CLI flag with ``_`` for ``-`` (``--out`` is ``out``, ``--batch`` is ``batch``, ``--zoo`` is
  ``zoo``). The Click options of ``rsbench certify`` take their defaults from it, a sweep file's
  ``options:`` and :func:`rsbench.certify`'s keywords use these names, and
  ``tests/test_api.py`` checks that the CLI's options and :data:`DEFAULTS` are the same set.
* :func:`default_jobs` is what "no id" means (the embedded default run and its values);
  :func:`plan` resolves every job to a prepared run (:func:`rsbench.run.runner.prepare`: no model
  loaded yet) and :func:`run_plan` certifies them, one process group for all runs under torchrun.
* Nothing here prints: a :class:`Reporter` (the CLI's draws bars) is told what happens; the default
  reports nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from rsbench.errors import ConfigError, check_count

if TYPE_CHECKING:
    from rsbench.run.runner import Prepared, ProgressEvent, RunResult
    from rsbench.weights.sources import ProgressCallback
    from rsbench.zoo.registry import Zoo

#: Every option of a certification and its default, named as the CLI's flag with ``_`` for ``-``.
DEFAULTS: dict[str, Any] = {
    "protocol": None,  # None: cpu (the embedded default run's protocol too)
    "dataset": None,
    "split": None,
    "n0": None,
    "n": None,
    "estimation": None,  # None: the protocol's (fixed for the fixed-n protocols)
    "n_max": None,  # None: the protocol's n
    "radii": None,  # None: the dataset's leaderboard grid (sequential estimation stops on it)
    "futility_alpha": None,  # None: rsbench.engine.sequential.DEFAULT_FUTILITY_ALPHA
    "alpha": None,
    "stride": None,
    "limit": None,
    "indices": None,
    "batch": None,  # None: runconfig.DEFAULT_BATCH (EMBEDDED_DEFAULT_BATCH for the default run)
    "seed": 0,
    "device": "auto",
    "precision": "fp32",
    "channels_last": False,
    "noise_dtype": "auto",
    "compile": False,
    "out": None,  # None: rsbench.results.default_results_dir()
    "shard": "0/1",
    "zoo": (),
    "data_root": None,
    "require_pinned": False,
    "allow_unpinned": False,
    "download": False,
    "chunk_size": 64,
    "alpha_router_fraction": None,
    "sigma_router": None,
    "p0": None,
    "alpha_split": None,
    "threads": None,
    "dry_run": False,
    "no_leaderboard": False,
}


class Job(NamedTuple):
    """One run to make: a zoo id, its sigma (experts; None: the entry's) and a protocol name."""

    model_id: str
    sigma: float | None
    protocol: str


def options_with_defaults(options: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``options`` over :data:`DEFAULTS`; an unknown name is one :class:`ConfigError` naming it."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"{what} got unknown option(s) {', '.join(unknown)}; use the names of "
            "`rsbench certify --help` with _ for - (e.g. out, batch, zoo, num_samples is n)"
        )
    return {**DEFAULTS, **options}


def default_jobs(
    ids: Sequence[str], sigma: float | None, options: Mapping[str, Any]
) -> tuple[list[Job], dict[str, Any]]:
    """The jobs of ``rsbench certify IDS`` and their options: with no id, the embedded default
    run (its ids, protocol, one torch thread and batch unless the options say otherwise)."""
    from rsbench.run import runconfig

    options = dict(options)
    embedded = not ids
    ids = tuple(ids) or runconfig.EMBEDDED_DEFAULT_IDS
    if embedded and options["protocol"] is None:
        options["protocol"] = runconfig.EMBEDDED_DEFAULT_PROTOCOL
    if embedded and options["threads"] is None:
        options["threads"] = runconfig.EMBEDDED_DEFAULT_THREADS
    if options["batch"] is None and embedded:
        options["batch"] = runconfig.EMBEDDED_DEFAULT_BATCH
    return [Job(model_id, sigma, options["protocol"] or "cpu") for model_id in ids], options


@dataclass(frozen=True)
class Plan:
    """Resolved jobs: the zoo they come from, this process's shard and the prepared runs."""

    zoo: Zoo
    shard: tuple[int, int]
    runs: list[Prepared]
    options: dict[str, Any]


def plan(jobs: Sequence[Job], options: Mapping[str, Any]) -> Plan:
    """Resolve each job's configuration (:func:`rsbench.run.runconfig.resolve_config`) and prepare
    its run (data, positions, run folder); no model is loaded and nothing is certified."""
    from rsbench.data.indices import parse_indices
    from rsbench.results.storage import default_results_dir
    from rsbench.run import distributed, runconfig, runner
    from rsbench.zoo.registry import load_zoo

    options = {**options, "out": options.get("out") or default_results_dir()}
    if options.get("threads"):
        import torch

        torch.set_num_threads(check_count(options["threads"], "threads"))
    zoo = load_zoo(options["zoo"])
    shard = distributed.parse_shard(options["shard"])
    indices = parse_indices(options["indices"]) if options["indices"] is not None else None
    batch = options["batch"] if options["batch"] is not None else runconfig.DEFAULT_BATCH
    runs = []
    for job in jobs:
        config = runconfig.resolve_config(
            zoo.get(job.model_id),
            zoo=zoo,
            protocol=job.protocol,
            dataset=options["dataset"],
            split=options["split"],
            n0=options["n0"],
            n=options["n"],
            alpha=options["alpha"],
            sigma=job.sigma,
            stride=options["stride"],
            limit=options["limit"],
            indices=indices,
            batch_size=batch,
            seed=options["seed"],
            precision=options["precision"],
            device=options["device"],
            chunk_size=options["chunk_size"],
            data_root=options["data_root"],
            alpha_router_fraction=options["alpha_router_fraction"],
            sigma_router=options["sigma_router"],
            p0=options.get("p0"),
            alpha_split=options.get("alpha_split"),
            channels_last=bool(options.get("channels_last", False)),
            compile=bool(options.get("compile", False)),
            threads=options.get("threads"),
            noise_dtype=options.get("noise_dtype") or "auto",
            estimation=options.get("estimation"),
            n_max=options.get("n_max"),
            radii=_radii(options.get("radii")),
            futility_alpha=options.get("futility_alpha"),
        )
        runs.append(runner.prepare(config, zoo, options["out"], download=options["download"]))
    return Plan(zoo=zoo, shard=shard, runs=runs, options=options)


def _radii(value: Any) -> list[float] | None:
    """``radii`` as given to the CLI (``0,0.25,0.5`` or ``0:2:0.25``), a sweep file or the API
    (a list of numbers); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        from rsbench.errors import RSBenchError
        from rsbench.report.metrics import parse_radii

        try:
            return [float(r) for r in parse_radii(value)]
        except RSBenchError as exc:
            raise ConfigError(f"--radii: {exc}") from None
    if isinstance(value, (list, tuple)) and all(
        isinstance(r, (int, float)) and not isinstance(r, bool) for r in value
    ):
        return [float(r) for r in value]
    raise ConfigError(f"radii {value!r} is not a list of numbers; use e.g. 0,0.25,0.5")


class Reporter:
    """What a caller of :func:`run_plan` is told; this one says nothing (``rsbench.certify``).

    The CLI's reporter draws a certification bar and a download bar for each run."""

    def skipped(self, run_dir: Path) -> None:
        """A run already complete was skipped (``rsbench sweep``)."""

    @contextlib.contextmanager
    def run(
        self, prepared: Prepared
    ) -> Iterator[tuple[Callable[[ProgressEvent], None] | None, ProgressCallback | None]]:
        """Around one run: yields its ``(progress, weights_progress)`` callbacks (None: none)."""
        yield None, None


def run_plan(
    plan: Plan, *, reporter: Reporter | None = None, skip_complete: bool = False
) -> list[RunResult]:
    """Certify the planned runs in order (one process group for all under torchrun; only rank 0
    reports) and return their :class:`~rsbench.run.runner.RunResult` s. With ``skip_complete``, a
    run whose run.json says ``complete`` is skipped (a sweep run again does only what is left)."""
    from rsbench.run import distributed, runconfig, runner, store

    options = plan.options
    if reporter is None or distributed.dist_info().rank != 0:
        reporter = Reporter()
    results = []
    with distributed.distributed(runconfig.resolve_device(options["device"])):
        for prepared in plan.runs:
            if skip_complete and store.run_status(prepared.run_dir) == "complete":
                reporter.skipped(prepared.run_dir)
                continue
            with reporter.run(prepared) as (progress, weights_progress):
                results.append(
                    runner.run_certification(
                        prepared.config,
                        plan.zoo,
                        options["out"],
                        shard=plan.shard,
                        progress=progress,
                        require_pinned=options["require_pinned"],
                        weights_progress=weights_progress,
                        prepared=prepared,
                    )
                )
    return results


def unpinned_revisions(options: Mapping[str, Any]) -> contextlib.AbstractContextManager[None]:
    """The context of a whole invocation: Hugging Face sources may name a branch or tag when the
    ``allow_unpinned`` option is set (:func:`rsbench.weights.hf.allowing_unpinned_revisions`)."""
    from rsbench.weights.hf import allowing_unpinned_revisions

    return allowing_unpinned_revisions(bool(options.get("allow_unpinned", False)))


def certify(
    jobs: Sequence[Job],
    options: Mapping[str, Any],
    *,
    reporter: Reporter | None = None,
    skip_complete: bool = False,
) -> list[RunResult]:
    """Plan and run ``jobs`` under ``options`` (what :func:`rsbench.certify` calls)."""
    with unpinned_revisions(options):
        return run_plan(plan(jobs, options), reporter=reporter, skip_complete=skip_complete)

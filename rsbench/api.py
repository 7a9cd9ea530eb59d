"""The Python API: ``rsbench.load`` and ``rsbench.certify``, the CLI's two verbs as functions.

* :func:`load` returns a ready smoothed model of a zoo id, the way RobustBench's ``load_model``
  returns a ready network: a :class:`~rsbench.engine.smoothing.SmoothedClassifier` (expert, or denoised
  expert at one of its sigmas), a :class:`~rsbench.engine.dual.DualSmoothed` or a
  :class:`~rsbench.engine.cascade.CascadeSmoothed`, with verified weights on the device. Sigma,
  sigma_router, the alpha split and p0 are resolved by :func:`rsbench.run.runconfig.resolve_config`, the
  one place ``rsbench certify`` resolves them too, so a loaded model certifies with exactly the
  values a run records.
* :func:`certify` runs what ``rsbench certify IDS ...`` runs (the same library functions,
  :mod:`rsbench.run.jobs`, with the same option names and defaults, :data:`rsbench.run.jobs.DEFAULTS`)
  and returns the rows it stored as a pandas frame: the CLI and the API cannot drift.
* :func:`load_dual` and :func:`load_cascade` are kind-checked shortcuts of :func:`load`: they refuse
  an entry of another kind, so a script that means a dual model cannot silently get an expert.

``load`` and ``certify`` are reached lazily from the package (``rsbench.load``), so ``import
rsbench`` stays light. This module is the API layer: it calls :mod:`rsbench.run`, never the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rsbench.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from rsbench.engine.cascade import CascadeSmoothed
    from rsbench.engine.dual import DualSmoothed
    from rsbench.zoo.entry import ZooEntry
    from rsbench.zoo.registry import Zoo

ZooLike = Any  # a rsbench.zoo.registry.Zoo, a zoo YAML path, or a sequence of paths


def _zoo(zoo: ZooLike) -> Zoo:
    from rsbench.zoo.registry import Zoo, load_zoo

    if isinstance(zoo, Zoo):
        return zoo
    return load_zoo(_zoo_paths(zoo))


def _zoo_paths(zoo: ZooLike) -> tuple[str, ...]:
    if zoo is None:
        return ()
    if isinstance(zoo, (str, os.PathLike)):
        return (os.fspath(zoo),)
    if isinstance(zoo, Iterable):
        return tuple(os.fspath(p) for p in zoo)
    raise ConfigError(f"zoo={zoo!r} is not a Zoo, a zoo file or a list of zoo files")


def load(
    model_id: str,
    zoo: ZooLike = None,
    *,
    sigma: float | None = None,
    sigma_router: float | None = None,
    alpha_router_fraction: float | None = None,
    p0: float | None = None,
    alpha_split: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    precision: str = "fp32",
    noise_dtype: str = "auto",
    channels_last: bool = False,
    compile: bool = False,
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
) -> Any:
    """The ready smoothed model of zoo entry ``model_id``.

    ``zoo``: a :class:`~rsbench.zoo.registry.Zoo`, or zoo YAML file(s) read after the packaged zoo (None:
    the packaged zoo and ``$RSBENCH_ZOO``). The optional values default as in ``rsbench certify``:
    an expert certifies at its ``train_sigma`` (a denoised expert at its only served sigma, else
    pass ``sigma``); a dual model at its experts' sigmas, ``sigma_router`` and
    ``alpha_router_fraction`` from the entry (router ``train_sigma`` and 0.5 when it has none); a
    cascade with the entry's ``p0`` and ``alpha_split``. Weights are fetched and verified
    (:mod:`rsbench.weights.sources`). Call ``certify_batch(images, n0, n, alpha, seed, indices,
    dataset=..., split=...)`` on the result; with the noise keys of a run it returns the run's
    certificates.
    """
    from rsbench.run import certifiers, runconfig

    zoo = _zoo(zoo)
    entry = zoo.get(model_id)
    config = runconfig.resolve_config(
        entry,
        zoo=zoo,
        sigma=sigma,
        sigma_router=sigma_router,
        alpha_router_fraction=alpha_router_fraction,
        p0=p0,
        alpha_split=alpha_split,
        device=device,
        batch_size=runconfig.DEFAULT_BATCH if batch_size is None else batch_size,
        precision=precision,
        noise_dtype=noise_dtype,
        channels_last=channels_last,
        compile=compile,
    )
    certifier, _ = certifiers.certifier_for(
        config, zoo, config.device, cache_dir=cache_dir, require_pinned=require_pinned
    )
    return certifier


#: Names ``rsbench.certify`` took before they were spelled as the CLI's flags (0.1): still accepted.
_OLD_NAMES = {"out_dir": "out", "batch_size": "batch", "compile_models": "compile"}


def certify(
    ids: str | Sequence[str] = (),
    *,
    zoo: ZooLike = None,
    sigma: float | None = None,
    indices: str | Sequence[int] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Run ``rsbench certify IDS`` and return the rows of its runs (a pandas frame, in run order).

    ``ids``: one id or several (empty: the embedded default run). Every other option of
    ``rsbench certify`` is a keyword with the flag's name, ``_`` for ``-``, and the same default
    (:data:`rsbench.run.jobs.DEFAULTS`: ``protocol``, ``n0``, ``n``, ``alpha``, ``seed``,
    ``stride``, ``limit``, ``dataset``, ``split``, ``device``, ``precision``, ``batch``, ``out``,
    ``shard``, ``p0``, ``alpha_split``, ``sigma_router``, ``alpha_router_fraction``, ``threads``,
    ``noise_dtype``, ``compile``, ...); ``zoo`` takes zoo YAML file(s) (``--zoo``) or a
    :class:`~rsbench.zoo.registry.Zoo`'s files, ``indices`` a string like ``"0:100:2"`` or a list
    of indices. Runs resume and are written where the CLI writes them (``out``, default
    :func:`rsbench.results.default_results_dir`); nothing is printed; torch's thread count is as it
    was afterwards. A bad option is a :class:`~rsbench.errors.ConfigError`.
    """
    import warnings

    import pandas as pd

    from rsbench.results.storage import read_results
    from rsbench.run import jobs

    for old, new in _OLD_NAMES.items():
        if old in options:
            warnings.warn(
                f"rsbench.certify({old}=...) is spelled {new}= now (the CLI's --{new})",
                DeprecationWarning,
                stacklevel=2,
            )
            options[new] = options.pop(old)
    if {"dry_run", "no_leaderboard"} & set(options):
        bad = sorted({"dry_run", "no_leaderboard"} & set(options))
        raise ConfigError(
            f"rsbench.certify got option(s) {', '.join(bad)} that only the CLI has (use "
            "rsbench.load and the certifier's estimate instead of a dry run)"
        )
    run_options = jobs.options_with_defaults(options, "rsbench.certify")
    run_options["zoo"] = _zoo_paths(zoo)
    if indices is not None and not isinstance(indices, str):
        indices = ",".join(str(int(i)) for i in indices)
    run_options["indices"] = indices
    model_ids = (ids,) if isinstance(ids, str) else tuple(ids)
    import torch

    threads = torch.get_num_threads()
    try:
        results = jobs.certify(*jobs.default_jobs(model_ids, sigma, run_options))
    finally:  # ``threads`` sets torch's process-wide pool for the run; a library call gives it back
        torch.set_num_threads(threads)
    frames = [read_results(result.run_dir) for result in results]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _checked_id(zoo: Zoo, entry: str | ZooEntry, kind: str) -> str:
    entry_id = entry if isinstance(entry, str) else entry.id
    found = zoo.get(entry_id).kind
    if found != kind:
        article = "an" if found[0] in "aeiou" else "a"
        raise ConfigError(f"{entry_id} is {article} {found} entry, not a {kind} one")
    return entry_id


def load_dual(
    zoo: Zoo,
    entry: str | ZooEntry,
    device: str | torch.device = "cpu",
    batch_size: int = 1000,
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    sigma_router: float | None = None,
    alpha_router_fraction: float | None = None,
    channels_last: bool = False,
    noise_dtype: str = "auto",
) -> DualSmoothed:
    """The :class:`~rsbench.engine.dual.DualSmoothed` of a ``dual`` entry (an id or a ``ZooEntry``) of
    ``zoo``: router and experts loaded once; sigmas, ``sigma_router`` and
    ``alpha_router_fraction`` as ``rsbench certify`` resolves them (the entry's values, else the
    router's ``train_sigma`` and 0.5)."""
    loaded: Any = load(
        _checked_id(zoo, entry, "dual"),
        zoo,
        device=str(device),
        batch_size=batch_size,
        precision=precision,
        cache_dir=cache_dir,
        require_pinned=require_pinned,
        sigma_router=sigma_router,
        alpha_router_fraction=alpha_router_fraction,
        channels_last=channels_last,
        noise_dtype=noise_dtype,
    )
    return loaded


def load_cascade(
    zoo: Zoo,
    entry: str | ZooEntry,
    device: str | torch.device = "cpu",
    batch_size: int = 1000,
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    p0: float | None = None,
    alpha_split: str | None = None,
    channels_last: bool = False,
) -> CascadeSmoothed:
    """The :class:`~rsbench.engine.cascade.CascadeSmoothed` of a ``cascade`` entry (an id or a
    ``ZooEntry``) of ``zoo``: stages largest sigma first, ``p0`` and the alpha split as
    ``rsbench certify`` resolves them."""
    loaded: Any = load(
        _checked_id(zoo, entry, "cascade"),
        zoo,
        device=str(device),
        batch_size=batch_size,
        precision=precision,
        cache_dir=cache_dir,
        require_pinned=require_pinned,
        p0=p0,
        alpha_split=alpha_split,
        channels_last=channels_last,
    )
    return loaded

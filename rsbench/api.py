"""The Python API: ``rsbench.load`` and ``rsbench.certify``, the CLI's two verbs as functions.

* :func:`load` returns a ready smoothed model of a zoo id, the way RobustBench's ``load_model``
  returns a ready network: a :class:`~rsbench.smoothing.SmoothedClassifier` (expert, or denoised
  expert at one of its sigmas), a :class:`~rsbench.dual.DualSmoothed` or a
  :class:`~rsbench.cascade.CascadeSmoothed`, with verified weights on the device. Sigma,
  sigma_router, the alpha split and p0 are resolved by :func:`rsbench.runconfig.resolve_config`, the
  one place ``rsbench certify`` resolves them too, so a loaded model certifies with exactly the
  values a run records.
* :func:`certify` runs what ``rsbench certify IDS ...`` runs (the same function,
  :func:`rsbench.commands.certify.certify_ids`, with the same defaults, read from the CLI's
  options) and returns the rows it stored as a pandas frame: the CLI and the API cannot drift.

Both are reached lazily from the package (``rsbench.load``), so ``import rsbench`` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rsbench.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from rsbench.zoo import Zoo

ZooLike = Any  # a rsbench.zoo.Zoo, a zoo YAML path, or a sequence of paths


def _zoo(zoo: ZooLike) -> Zoo:
    from rsbench.zoo import Zoo, load_zoo

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

    ``zoo``: a :class:`~rsbench.zoo.Zoo`, or zoo YAML file(s) read after the packaged zoo (None:
    the packaged zoo and ``$RSBENCH_ZOO``). The optional values default as in ``rsbench certify``:
    an expert certifies at its ``train_sigma`` (a denoised expert at its only served sigma, else
    pass ``sigma``); a dual model at its experts' sigmas, ``sigma_router`` and
    ``alpha_router_fraction`` from the entry (router ``train_sigma`` and 0.5 when it has none); a
    cascade with the entry's ``p0`` and ``alpha_split``. Weights are fetched and verified
    (:mod:`rsbench.weights`). Call ``certify_batch(images, n0, n, alpha, seed, indices,
    dataset=..., split=...)`` on the result; with the noise keys of a run it returns the run's
    certificates.
    """
    from rsbench import certifiers, runconfig

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
    ``rsbench certify`` is a keyword with the same name and default (``protocol``, ``n0``, ``n``,
    ``alpha``, ``seed``, ``stride``, ``limit``, ``dataset``, ``split``, ``device``, ``precision``,
    ``batch_size``, ``out_dir``, ``shard``, ``p0``, ``alpha_split``, ``sigma_router``,
    ``alpha_router_fraction``, ``threads``, ``noise_dtype``, ...); ``zoo`` takes zoo YAML file(s)
    (``--zoo``), ``indices`` a string like ``"0:100:2"`` or a list of indices. Runs resume and are
    written where the CLI writes them (``out_dir``, default :func:`rsbench.results.default_results_dir`);
    nothing is printed; torch's thread count is as it was afterwards. A bad option is a
    :class:`~rsbench.errors.ConfigError`.
    """
    import pandas as pd

    from rsbench.commands.certify import certify_ids, default_options
    from rsbench.results import read_results

    run_options = default_options()
    unknown = sorted(set(options) - set(run_options) - {"quiet"})
    if unknown or {"dry_run", "zoo_paths", "indices"} & set(options):
        bad = unknown or sorted({"dry_run", "zoo_paths", "indices"} & set(options))
        raise ConfigError(
            f"rsbench.certify got unknown option(s) {', '.join(bad)}; use the names of "
            "`rsbench certify --help` with _ for - (zoo= for --zoo; no dry_run)"
        )
    run_options.update(options)
    run_options["zoo_paths"] = _zoo_paths(zoo)
    if indices is not None and not isinstance(indices, str):
        indices = ",".join(str(int(i)) for i in indices)
    run_options["indices"] = indices
    run_options.update(quiet=True, no_leaderboard=True, dry_run=False)
    model_ids = (ids,) if isinstance(ids, str) else tuple(ids)
    import torch

    threads = torch.get_num_threads()
    try:
        results = certify_ids(model_ids, sigma, run_options)
    finally:  # ``threads`` sets torch's process-wide pool for the run; a library call gives it back
        torch.set_num_threads(threads)
    frames = [read_results(result.run_dir) for result in results]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)

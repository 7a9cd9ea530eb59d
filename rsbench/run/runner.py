"""Certification runs: certify one resolved run into its run directory, resumably and sharded.

A run certifies one zoo model (expert, dual or cascade) on a subset of one dataset split under one set of
parameters and writes one Parquet row per sample into ``<out>/<run_name>/`` (:mod:`rsbench.results`).
This module is the orchestration only; its parts are

* :mod:`rsbench.run.runconfig`: :class:`~rsbench.run.runconfig.RunConfig` and ``resolve_config``, the run
  identity (what changes a result changes the run directory);
* :mod:`rsbench.run.certifiers`: the smoothed model of a config, its networks loaded and probed;
* :mod:`rsbench.run.store`: the run directory's part index, locks, resume and run.json status;
* :mod:`rsbench.run.distributed`: torchrun ranks, process groups, shards and torch threads.

Guarantees
----------
Every sample's votes depend only on (model, image, and its noise keys: dataset, split, index,
seed; :mod:`rsbench.engine.noise`), so a resumed, sharded or multi-process run equals an uninterrupted
one row for row (``seconds`` aside): the store never writes a sample twice, and a failed first
chunk of a fresh run leaves no directory behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsbench import results as R
from rsbench.engine import device as D
from rsbench.engine.sampling import NonFiniteLogits
from rsbench.errors import ConfigError
from rsbench.run import store
from rsbench.run.certifiers import (
    certifier_for,
    check_router_training_overlap,
    entry_input_shape,
)
from rsbench.run.distributed import (
    check_shard,
    combine_shards,
    distributed,
    rank_device,
    shard_name,
    torch_threads,
)
from rsbench.run.runconfig import RunConfig

if TYPE_CHECKING:
    from rsbench.data.dataset import ImageDataset
    from rsbench.zoo.entry import ZooEntry
    from rsbench.zoo.registry import Zoo

#: The runner hands each CERTIFY call enough images for about this many forward batches of the
#: estimation stage, so that noise drawing overlaps the forward passes (results/perf.md).
PIPELINE_BATCHES = 8


@dataclass(frozen=True)
class ProgressEvent:
    """A progress report: ``done`` of ``total`` samples of this process's shard are written or
    certified; ``certified`` of them are correct (certified accuracy at radius 0 so far)."""

    run_id: str
    done: int
    total: int
    certified: int
    message: str = ""

    @property
    def accuracy(self) -> float:
        """Running certified accuracy at radius 0 (NaN before the first sample)."""
        return self.certified / self.done if self.done else float("nan")


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class RunResult:
    """What one process did: where, how many rows it wrote, whether the whole run is complete."""

    run_dir: Path
    run_id: str
    written: int
    skipped: int
    total: int
    complete: bool
    seconds: float


@dataclass
class Prepared:
    """A run ready to execute: its config, directory, selected positions and loaders."""

    config: RunConfig
    run_dir: Path
    dataset: ImageDataset
    positions: list[int]
    entry: ZooEntry
    zoo: Zoo

    @property
    def num_images(self) -> int:
        """Images the whole run certifies (all shards)."""
        return len(self.positions)


def prepare(
    config: RunConfig, zoo: Zoo, out_dir: str | os.PathLike, download: bool = False
) -> Prepared:
    """Load the dataset and resolve the subset of ``config`` (no model is loaded).

    ``download`` lets torchvision fetch CIFAR-10 / MNIST / Fashion-MNIST when not found locally.
    """
    from rsbench.data.dataset import load_dataset
    from rsbench.data.indices import select_indices

    dataset = load_dataset(config.dataset, config.split, config.data_root, download=download)
    positions = select_indices(
        len(dataset),
        stride=config.stride,
        limit=config.limit,
        indices=list(config.indices) if config.indices is not None else None,
    )
    entry = zoo.get(config.model_id)
    shape = getattr(dataset, "input_shape", None)
    expected = entry_input_shape(entry, zoo)
    if expected is not None and shape is not None and tuple(expected) != tuple(shape):
        raise ConfigError(
            f"{entry.id} expects images of shape {list(expected)} but {config.dataset}/{config.split} has "
            f"{list(shape)}; pick the model's dataset"
        )
    check_router_training_overlap(config, zoo, dataset, positions)
    return Prepared(config, Path(out_dir) / config.run_name(), dataset, positions, entry, zoo)


def build_certifier(
    prepared: Prepared,
    device: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    weights_progress: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Load the model(s) on ``device`` and wrap them for certification; also return provenance.

    Every network is probed on the run's first image before anything is certified."""
    return certifier_for(
        prepared.config,
        prepared.zoo,
        device,
        probe_image=prepared.dataset.images([prepared.positions[0]]),
        cache_dir=cache_dir,
        require_pinned=require_pinned,
        weights_progress=weights_progress,
    )


def run_certification(
    config: RunConfig,
    zoo: Zoo,
    out_dir: str | os.PathLike,
    *,
    shard: tuple[int, int] = (0, 1),
    progress: ProgressCallback | None = None,
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    weights_progress: Any = None,
    prepared: Prepared | None = None,
) -> RunResult:
    """Certify zoo model ``config.model_id`` into ``out_dir/<run name>/`` (resumable, sharded).

    Under torchrun (``WORLD_SIZE > 1``) initialises ``torch.distributed`` (gloo on CPU, nccl on
    CUDA), takes this rank's part of ``shard`` on ``cuda:LOCAL_RANK`` (CUDA) and waits for all ranks
    at the end; rank 0 then writes the final run.json status.
    """
    import torch

    prepared = prepared or prepare(config, zoo, out_dir)
    with torch_threads(config.threads), distributed(config.device) as info:
        device = rank_device(config.device, info)
        D.activate(device)
        my_shard = combine_shards(shard, info)
        certifier, provenance = build_certifier(
            prepared,
            device,
            cache_dir=cache_dir,
            require_pinned=require_pinned,
            weights_progress=weights_progress,
        )
        run_info = {
            **provenance,
            "device": device,
            "device_name": D.name(device),
            "precision": config.precision,
            "channels_last": config.channels_last,
            "compile": config.compile,
            "noise_dtype": config.noise_dtype,
            "torch_threads": torch.get_num_threads(),
            "protocol": config.protocol,
            "environment": R.environment_info(),
        }
        fresh = not prepared.run_dir.exists()
        try:
            result = execute(
                config,
                certifier,
                prepared.dataset,
                prepared.run_dir,
                positions=prepared.positions,
                shard=my_shard,
                run_info=run_info,
                progress=progress,
                expert_ids=config.expert_ids,
                finalize=not info.active,
            )
        except Exception:
            if fresh and not info.active:  # a failed first chunk leaves nothing behind
                store.discard_empty_run(prepared.run_dir)
            raise
        if info.active:
            import torch.distributed as dist

            dist.barrier()
            if info.rank == 0:
                parts = store.PartIndex(prepared.run_dir)
                with store.run_lock(prepared.run_dir):
                    complete = store.finish(
                        prepared.run_dir,
                        parts,
                        len(prepared.positions),
                        {"world_size": info.world_size},
                    )
                result = replace(result, complete=complete)
            dist.barrier()
            if info.rank != 0:
                result = replace(result, complete=store.run_status(prepared.run_dir) == "complete")
    return result


def execute(
    config: RunConfig,
    certifier: Any,
    dataset: Any,
    run_dir: str | os.PathLike,
    *,
    positions: Sequence[int],
    shard: tuple[int, int] = (0, 1),
    run_info: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    expert_ids: Sequence[str] = (),
    finalize: bool = True,
) -> RunResult:
    """Certify the samples at ``positions`` of ``dataset`` that fall in ``shard`` into ``run_dir``.

    ``certifier`` is a :class:`rsbench.engine.smoothing.SmoothedClassifier` (expert runs) or a
    :class:`rsbench.engine.dual.DualSmoothed` (dual runs, ``expert_ids`` name its experts). ``positions``
    are positions in ``dataset``; the recorded ``index`` is the sample's canonical index in its source
    dataset (``dataset.source_indices``). Resumes, locks and writes as the module docstring says.
    """
    run_dir = Path(run_dir)
    shard = check_shard(shard)
    name = shard_name(shard)
    positions = [int(p) for p in positions]
    sources = [int(dataset.source_indices[p]) for p in positions]
    labels = [int(dataset.labels[p]) for p in positions]
    mine = [k for k in range(len(positions)) if k % shard[1] == shard[0]]
    # rows name the sample in its source dataset (the embedded subset is fashion-mnist/test)
    data_name = str(getattr(dataset, "source_name", None) or config.dataset)
    data_split = str(getattr(dataset, "split", None) or config.split)
    run_id = run_dir.name
    started = time.perf_counter()

    def report(done: int, total: int, certified: int, message: str = "") -> None:
        if progress is not None:
            progress(ProgressEvent(run_id, done, total, certified, message))

    store.open_run_dir(run_dir)
    lock = store.run_lock(run_dir)
    with lock:
        store.prepare_run_dir(run_dir, config, run_info or {}, len(positions))
    with (
        store.interrupt_marker(run_dir, lock),
        store.shard_lock(run_dir, name, lambda msg: report(0, len(mine), 0, msg)),
    ):
        parts = store.PartIndex(run_dir)
        with lock:
            store.remove_stale_tmp(run_dir, name)
            parts.refresh(repair=True)
        todo = [k for k in mine if sources[k] not in parts.done]
        skipped = len(mine) - len(todo)
        mine_set = {sources[k] for k in mine}
        prior_correct = store.count_correct(run_dir, parts, mine_set)
        done, certified = skipped, prior_correct
        report(done, len(mine), certified)
        written = 0
        group = images_per_call(config)
        sequential = config.sequential_spec()
        extra = {} if sequential is None else {"sequential": sequential}
        pending: list[dict[str, Any]] = []
        for start in range(0, len(todo), config.chunk_size):
            chunk = todo[start : start + config.chunk_size]
            for g in range(0, len(chunk), group):
                ks = chunk[g : g + group]
                images = dataset.images([positions[k] for k in ks])
                t0 = time.perf_counter()
                try:
                    certs = certifier.certify_batch(
                        images,
                        config.n0,
                        config.n,
                        config.alpha,
                        seed=config.seed,
                        indices=[sources[k] for k in ks],
                        dataset=data_name,
                        split=data_split,
                        **extra,
                    )
                except NonFiniteLogits as exc:  # one line that names the model
                    raise NonFiniteLogits(
                        f"{config.model_id} (sample {sources[ks[0]]}"
                        f"{'' if len(ks) == 1 else f' and {len(ks) - 1} more'}): {exc}"
                    ) from None
                seconds = (time.perf_counter() - t0) / len(ks)
                for k, cert in zip(ks, certs):
                    row = R.certificate_row(
                        cert, config, run_id, sources[k], labels[k], seconds, expert_ids
                    )
                    row["dataset"], row["split"] = data_name, data_split
                    pending.append(row)
                    done += 1
                    certified += bool(row["correct"])
                report(done, len(mine), certified)
            with lock:
                written += parts.write_new(pending, name)
            pending = []
        complete = False
        if finalize:
            with lock:
                complete = store.finish(run_dir, parts, len(positions))
        else:
            with lock:
                parts.refresh()
                complete = len(parts.done) == len(positions)
    return RunResult(
        run_dir, run_id, written, skipped, len(mine), complete, time.perf_counter() - started
    )


def images_per_call(config: RunConfig) -> int:
    """Images per CERTIFY call: enough for about :data:`PIPELINE_BATCHES` estimation batches.

    Several batches per call let the engine draw the next batch's noise while the current one runs
    (:mod:`rsbench.engine.sampling`); results do not depend on it (per-image seeding). At most one chunk.
    """
    if config.estimation == "sequential":
        # images advance through the stages together; early stages are small, so pack a chunk
        return max(1, config.chunk_size)
    per_image = max(1, config.n0 + config.n)
    return max(1, min(config.chunk_size, -(-PIPELINE_BATCHES * config.batch_size // per_image)))

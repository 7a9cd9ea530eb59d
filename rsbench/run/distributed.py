"""Process setup of a run: torchrun ranks and process groups, shards, torch CPU threads.

Device resolution is :mod:`rsbench.engine.device` (``cuda`` = ``cuda:LOCAL_RANK`` under torchrun); this
module reads torchrun's environment, opens and closes the process group and maps a shard onto the
ranks.

Guarantee
---------
``shard = (I, N)`` takes the samples at positions ``p`` (in the selection) with ``p % N == I``;
disjoint shards write their own parts into the same run directory. Under torchrun
(``WORLD_SIZE > 1``) rank ``r`` of ``W`` takes shard ``I + N * r`` of ``N * W``
(:func:`combine_shards`): the ranks of one shard partition it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from rsbench.engine import device as D
from rsbench.errors import ConfigError


def shard_name(shard: tuple[int, int]) -> str:
    """``(I, N)`` -> ``'IofN'`` (part file names)."""
    return f"{shard[0]}of{shard[1]}"


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """Validate ``(I, N)``: ``N >= 1`` and ``0 <= I < N``."""
    index, count = (int(v) for v in shard)
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count} is not allowed; use I/N with 0 <= I < N")
    return index, count


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``'I/N'``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise ConfigError(f"shard {text!r} is not I/N (e.g. 0/4)")
    return check_shard((int(match[1]), int(match[2])))


@dataclass(frozen=True)
class DistInfo:
    """torchrun's environment: ``rank`` of ``world_size``, ``local_rank`` (device index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world_size > 1


def dist_info(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (torchrun); a single process when absent."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("WORLD_SIZE/RANK/LOCAL_RANK must be integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


@contextlib.contextmanager
def distributed(device: str) -> Iterator[DistInfo]:
    """Initialise ``torch.distributed`` under torchrun (gloo on CPU, nccl on CUDA); tear it down after."""
    info = dist_info()
    if not info.active:
        yield info
        return
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend=D.backend(device))
        created = True
    try:
        yield info
    finally:
        if created:
            dist.destroy_process_group()


def rank_device(device: str, info: DistInfo) -> str:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a bare ``cuda`` under torchrun (a device
    resolved by :func:`rsbench.engine.device.resolve` is already indexed and is returned as it is)."""
    if info.active and device == "cuda":
        return f"cuda:{info.local_rank}"
    return device


def combine_shards(shard: tuple[int, int], info: DistInfo) -> tuple[int, int]:
    """Shard ``I/N`` split over ``W`` ranks: rank ``r`` takes ``I + N*r`` of ``N*W`` (a partition of I/N)."""
    index, count = check_shard(shard)
    return index + count * info.rank, count * info.world_size


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` torch CPU threads (None: unchanged), then restore the count."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)

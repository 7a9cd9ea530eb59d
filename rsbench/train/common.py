"""Helpers shared by the trainers (experts, routers, co-training): seeds, atomic writes, optimisers.

Every function here is deterministic given its arguments; ``atomic_write`` guarantees that a reader
sees either the old file or the complete new one, never a torn write.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rsbench.errors import WeightsError


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s data order, noise and augmentation: a function of (seed, epoch) alone."""
    digest = hashlib.blake2b(f"rsbench-train:{int(seed)}:{int(epoch)}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through ``write(tmp)`` on a temporary name in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def zoo_dataset_name(name: str) -> str:
    """The zoo's dataset name for a loader name (the embedded subset is ``fashion-mnist``)."""
    return "fashion-mnist" if name == "fashion-mnist-embedded" else name


def package_relative(path: Path) -> str | None:
    """``path`` relative to the installed rsbench package folder, or ``None`` if outside it."""
    import rsbench

    package = Path(rsbench.__file__).resolve().parent
    try:
        return path.resolve().relative_to(package).as_posix()
    except ValueError:
        return None


def make_optimizer(config: Any, params) -> torch.optim.Optimizer:
    """Adam or SGD from a config with ``optimizer``, ``lr``, ``momentum`` and ``weight_decay``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def make_scheduler(config: Any, optimizer, steps_per_epoch: int):
    """Per-step LR schedule (cosine, step or constant) from ``epochs``, ``schedule``, ``step_size``, ``gamma``."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )
    if config.schedule == "step":
        size = config.step_size * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: config.gamma ** (step // size)
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def restore_training_state(
    checkpoint: Path, key: str, net: torch.nn.Module, optimizer, scheduler
) -> tuple[int, list[dict[str, Any]]]:
    """Load a per-epoch training checkpoint into ``net``/``optimizer``/``scheduler`` and torch's RNG.

    Returns ``(epochs done, history)``. The checkpoint is read with ``weights_only=True``; one made
    with another configuration (``config_key`` differs from ``key``) is refused with a
    :class:`WeightsError`, so a resumed run always equals an uninterrupted one.
    """
    import json

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if state.get("config_key") != key:
        raise WeightsError(
            f"checkpoint {str(checkpoint)!r} was made with another configuration; "
            "use --no-resume to start over or another --out / --id"
        )
    net.load_state_dict(state["net"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"]), json.loads(state["history"])

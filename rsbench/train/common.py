"""What every trainer shares: the optimiser recipe, the epoch/checkpoint loop, seeds and outputs.

Used by :mod:`rsbench.train.expert`, :mod:`rsbench.train.denoiser`, :mod:`rsbench.train.finetune`
and (resume, optimisers) :mod:`rsbench.train.router`; imports only ``errors`` and (lazily) ``weights``, torch and
safetensors: the CLI's option groups (:mod:`rsbench.cli.options`) read :data:`OPTIMIZERS`
and :data:`SCHEDULES` from here without loading torch.

**Optimiser recipe.** :class:`OptimizerConfig` holds ``optimizer`` (``sgd``/``adam``), ``lr``,
``momentum`` (SGD only), ``weight_decay``, ``schedule`` (``cosine``/``step``/``constant``, stepped
per batch) and ``step_size``/``gamma`` (``step``: multiply the rate by ``gamma`` every
``step_size`` epochs). A trainer's config keeps these as flat fields (they are part of its
recipe, command line and checkpoint key); ``OptimizerConfig.of(config)`` reads them from any
object that has them, ``.check()`` raises one :class:`~rsbench.errors.ConfigError` per bad value,
and ``.build(params, epochs, steps_per_epoch)`` returns ``(optimizer, scheduler)``.
:func:`make_optimizer`/:func:`make_scheduler` are the same builders taking the trainer's config.

**Epoch loop.** :class:`EpochLoop` runs the epochs of one training run::

    loop = EpochLoop(model, optimizer, scheduler, epochs, steps, key, checkpoint, net=net)
    resumed_from = loop.resume() if resume else None      # epochs already done, or None
    history = loop.run(batches, end_epoch, on_batch=..., on_epoch=...)

``batches(epoch)`` (0-based) draws the epoch's data order and noise from its own seeded generator
and yields one :class:`Step` (the batch's mean loss, still attached to the graph, and the batch
size) per batch; the loop does ``zero_grad``, ``backward``, ``optimizer.step`` and
``scheduler.step`` and reports a :class:`Tick` before it asks for the next batch. After the last
batch it refuses a non-finite loss sum (a ``ConfigError`` ending in ``hint``, by default "lower
--lr"), asks ``end_epoch(epoch, mean_loss)`` for the epoch's history record, saves the checkpoint
(when ``checkpoint`` is set) and calls ``on_epoch(epoch + 1, record)``. Each epoch starts with the
model in training mode.

Guarantees: the loop draws no randomness of its own, so the weights depend only on the model's
initial state, the batches and the recipe. When ``batches`` seeds each epoch from (seed, epoch)
alone (:func:`epoch_seed`, or a ``training`` :class:`rsbench.engine.noise.NoiseKey`), the checkpoint
written after every epoch (``net``, optimiser, scheduler, torch's global RNG state, history;
atomically, read back with ``weights_only=True``) lets a resumed run finish with the same weights
bit for bit as an uninterrupted one (same device, thread count and library versions). A
checkpoint whose ``key`` differs (another configuration) is refused with a
:class:`~rsbench.errors.WeightsError`.

Outputs: :func:`paths_for`, :func:`config_key`, :func:`weights_source`, :func:`save_safetensors`
and :func:`write_json` are the trainers' shared way to name, key, locate and write their files;
:func:`atomic_write` guarantees that a reader sees either the old file or the complete new one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rsbench.errors import ConfigError, WeightsError, check_count

if TYPE_CHECKING:
    import torch
    from torch import nn

#: optimisers and learning-rate schedules a recipe may name
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
#: version of the per-epoch checkpoint's layout
CHECKPOINT_FORMAT = 1


# ------------------------------------------------------------------------------------------------
# optimiser recipe


class OptimizerSettings(Protocol):
    """Any config with the optimiser fields (the trainers' frozen dataclasses)."""

    @property
    def optimizer(self) -> str: ...
    @property
    def lr(self) -> float: ...
    @property
    def momentum(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def schedule(self) -> str: ...
    @property
    def step_size(self) -> int: ...
    @property
    def gamma(self) -> float: ...


class EpochSettings(OptimizerSettings, Protocol):
    """An optimiser recipe that also knows its number of epochs (for the schedule)."""

    @property
    def epochs(self) -> int: ...


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimiser and per-step learning-rate schedule of one training run (see the module docstring)."""

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1

    @classmethod
    def of(cls, config: OptimizerSettings) -> OptimizerConfig:
        """The recipe held in ``config``'s flat ``optimizer``, ``lr``, ... fields."""
        return cls(
            optimizer=config.optimizer,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            schedule=config.schedule,
            step_size=config.step_size,
            gamma=config.gamma,
        )

    def check(self, example_lr: str = "0.05") -> None:
        """Raise :class:`ConfigError` for an unknown optimiser or schedule or an out-of-range value
        (``example_lr`` is the rate the message suggests)."""
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(
                f"lr={self.lr!r} is not allowed; use a learning rate > 0, e.g. {example_lr}"
            )
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("weight_decay must be >= 0 and momentum in [0, 1)")
        if self.schedule == "step":
            check_count(self.step_size, "step_size")
            if not (self.gamma > 0 and math.isfinite(self.gamma)):
                raise ConfigError(
                    f"gamma={self.gamma!r} is not allowed; use a factor > 0 per step, e.g. 0.1"
                )

    def make_optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """Adam (``lr``, ``weight_decay``) or SGD (also ``momentum``) over ``params``."""
        import torch

        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def make_scheduler(
        self, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int
    ) -> torch.optim.lr_scheduler.LambdaLR:
        """The per-step schedule: cosine to 0 over ``epochs * steps_per_epoch`` steps, ``gamma``
        every ``step_size`` epochs, or constant."""
        import torch

        total = epochs * steps_per_epoch
        if self.schedule == "cosine":
            return torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
            )
        if self.schedule == "step":
            size = self.step_size * steps_per_epoch
            gamma = self.gamma
            return torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: gamma ** (step // size)
            )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def build(
        self, params: Iterable[Any], epochs: int, steps_per_epoch: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """``(optimizer, scheduler)`` for ``epochs`` epochs of ``steps_per_epoch`` batches."""
        optimizer = self.make_optimizer(params)
        return optimizer, self.make_scheduler(optimizer, epochs, steps_per_epoch)


def make_optimizer(config: OptimizerSettings, params: Iterable[Any]) -> torch.optim.Optimizer:
    """:meth:`OptimizerConfig.make_optimizer` of ``config``'s recipe."""
    return OptimizerConfig.of(config).make_optimizer(params)


def make_scheduler(
    config: EpochSettings, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """:meth:`OptimizerConfig.make_scheduler` of ``config``'s recipe over ``config.epochs``."""
    return OptimizerConfig.of(config).make_scheduler(optimizer, config.epochs, steps_per_epoch)


# ------------------------------------------------------------------------------------------------
# the epoch/checkpoint loop


@dataclass(frozen=True)
class Step:
    """One batch's outcome: the mean ``loss`` to minimise (with its graph) and the batch ``size``."""

    loss: torch.Tensor
    size: int


@dataclass(frozen=True)
class Tick:
    """Progress after one optimiser step: 1-based ``epoch``, ``step`` of ``steps``, running mean
    ``loss`` over the epoch so far and the learning rate now."""

    epoch: int
    step: int
    steps: int
    loss: float
    lr: float


@dataclass
class EpochLoop:
    """The epochs of one training run (see the module docstring for the protocol and guarantees).

    ``model`` is trained; ``net`` (default ``model``) is the part whose state is checkpointed, e.g.
    the network behind a fixed input layer. ``steps`` is the number of batches per epoch (for the
    ticks). ``key`` identifies the configuration (:func:`config_key`); ``checkpoint`` ``None``
    trains without one. ``what`` names the run and ``hint`` the fix in the divergence message.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epochs: int
    steps: int
    key: str
    checkpoint: Path | None = None
    net: nn.Module | None = None
    what: str = "training"
    hint: str = "lower --lr"
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def checkpointed(self) -> nn.Module:
        """The module whose state dict the checkpoint holds."""
        return self.net if self.net is not None else self.model

    def resume(self) -> int | None:
        """Restore the checkpoint if there is one; return the epochs it had done (``None``: none)."""
        if self.checkpoint is None or not self.checkpoint.is_file():
            return None
        self.start_epoch, self.history = restore_training_state(
            self.checkpoint, self.key, self.checkpointed, self.optimizer, self.scheduler
        )
        return self.start_epoch

    def run(
        self,
        batches: Callable[[int], Iterable[Step]],
        end_epoch: Callable[[int, float], dict[str, Any]],
        on_batch: Callable[[Tick], None] | None = None,
        on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Train the remaining epochs; return the whole history (one record per epoch)."""
        for epoch in range(self.start_epoch, self.epochs):
            self.model.train()
            total, seen = 0.0, 0
            for step, out in enumerate(batches(epoch), start=1):
                self.optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                total += out.loss.detach().item() * out.size
                seen += out.size
                if on_batch is not None:
                    lr = self.optimizer.param_groups[0]["lr"]
                    on_batch(Tick(epoch + 1, step, self.steps, total / seen, lr))
            if not math.isfinite(total):
                raise ConfigError(
                    f"{self.what} diverged in epoch {epoch + 1} (loss is {total}); {self.hint}"
                )
            record = end_epoch(epoch, total / max(seen, 1))
            self.history.append(record)
            if self.checkpoint is not None:
                save_training_state(
                    self.checkpoint,
                    self.key,
                    epoch + 1,
                    self.checkpointed,
                    self.optimizer,
                    self.scheduler,
                    self.history,
                )
            if on_epoch is not None:
                on_epoch(epoch + 1, record)
        return self.history


def save_training_state(
    checkpoint: Path,
    key: str,
    epoch: int,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    history: list[dict[str, Any]],
) -> None:
    """Write the per-epoch checkpoint that :func:`restore_training_state` reads back (atomically)."""
    import torch

    state = {
        "format": CHECKPOINT_FORMAT,
        "config_key": key,
        "epoch": epoch,
        "net": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": json.dumps(history),
    }
    atomic_write(checkpoint, functools.partial(torch.save, state))


def restore_training_state(
    checkpoint: Path,
    key: str,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, list[dict[str, Any]]]:
    """Load a per-epoch training checkpoint into ``net``/``optimizer``/``scheduler`` and torch's RNG.

    Returns ``(epochs done, history)``. The checkpoint is read with ``weights_only=True``; one made
    with another configuration (``config_key`` differs from ``key``) is refused with a
    :class:`WeightsError`, so a resumed run always equals an uninterrupted one.
    """
    import torch

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


# ------------------------------------------------------------------------------------------------
# seeds, names and files


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s data order, noise and augmentation: a function of (seed, epoch) alone."""
    digest = hashlib.blake2b(f"rsbench-train:{int(seed)}:{int(epoch)}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def config_key(determining: dict[str, Any]) -> str:
    """sha256 of the sorted JSON of the fields that determine the weights (the checkpoint key)."""
    text = json.dumps(determining, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def paths_for(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Output paths of a run: ``weights``, ``checkpoint``, ``record`` (train.json)."""
    out = Path(out_dir).expanduser()
    return {
        "weights": out / f"{stem}.safetensors",
        "checkpoint": out / f"{stem}.checkpoint.pt",
        "record": out / f"{stem}.train.json",
    }


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


def save_safetensors(state_dict: dict[str, torch.Tensor], path: Path, info: dict[str, Any]) -> str:
    """Write ``state_dict`` as safetensors atomically; return the file's sha256.

    The bytes depend only on the tensors and ``info`` (one metadata key, ``rsbench``, holding
    sorted JSON: safetensors orders several metadata keys arbitrarily), so identical weights give
    an identical digest.
    """
    from safetensors.torch import save_file

    from rsbench.weights.cache import sha256_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    metadata = {"rsbench": json.dumps(info, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return sha256_file(path)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as indented JSON (key order kept) atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))


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


def weights_source(weights: Path, zoo_file: Path | None) -> dict[str, str]:
    """A zoo ``source`` for trained ``weights``: ``package`` inside the installed rsbench package,
    else a ``file`` relative to ``zoo_file``'s folder when below it, else an absolute ``file``."""
    package_path = package_relative(weights)
    if package_path is not None:
        return {"type": "package", "path": package_path}
    if zoo_file is not None:
        try:
            return {
                "type": "file",
                "path": weights.resolve().relative_to(zoo_file.resolve().parent).as_posix(),
            }
        except ValueError:
            pass
    return {"type": "file", "path": str(weights.resolve())}

"""Expert training with Gaussian noise augmentation (Cohen, Rosenfeld & Kolter 2019).

Every training image is replaced by ``x + N(0, train_sigma^2 I)`` in [0, 1] pixel space (no
clipping) before the model, which is ``nn.Sequential(InputLayer, net)`` built from a zoo entry by
:func:`rsbench.models.network.build_model`, so the input layer (normalisation) sits after the noise exactly
as at certification time.

Guarantees:

* Seeded and deterministic: the initial weights come from ``seed``; epoch ``e``'s data order, noise
  and augmentation come from a generator seeded by ``(seed, e)`` alone. On the same device, thread
  count and library versions, a run gives the same weights bit for bit whether or not it was
  interrupted and resumed.
* Resumable: after every epoch a checkpoint (net, optimizer, scheduler, RNG states, history) is
  written atomically to ``<out>/<id>.checkpoint.pt`` (loaded back with ``weights_only=True``). A run
  with ``resume=True`` continues from it; a checkpoint made with another configuration is refused.
* Outputs: ``<out>/<id>.safetensors`` (the *net*'s state dict, no prefix), ``<out>/<id>.train.json``
  (configuration, per-epoch history, digest) and, with a zoo file, a validated zoo entry whose
  ``recipe`` holds the exact command, data, seed, epochs and whose ``sha256`` is the weights' digest.
  When the weights are written inside the installed ``rsbench`` package (as for the embedded
  experts), the entry's source is ``{type: package, path: ...}``; otherwise ``{type: file, path}``.

Classifiers of denoised experts (``denoiser``): with a ``denoised`` zoo entry named, the network is
a classifier trained (typically fine-tuned from ``init``, e.g. the noise-free classifier, as
Carlini et al. 2023 and Salman et al. 2020 fine-tune) on *denoised* images: each training image
gets one noise level ``s`` drawn uniformly from the entry's served sigmas, ``z = x + N(0, s^2 I)``,
and the classifier sees ``clamp(denoiser(z, s), 0, 1)``, exactly its input inside the denoised
expert's base model at ``s``. The denoiser is frozen (no gradient). ``train_sigma`` must be 0 (the
classifier is not itself smoothed at one sigma). Outputs: the classifier as an expert entry
(``<id>``, ``train_sigma`` 0) and a ``denoised`` entry ``denoised_id`` (that entry's denoiser +
this classifier, serving its sigmas). The weights' digests of the denoiser and of ``init`` enter
the checkpoint key, so a resumed run never mixes them.

The library never prints: progress goes to an optional callback receiving :class:`TrainEvent`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsbench.engine import device as D
from rsbench.errors import ConfigError, check_count, check_sigma
from rsbench.train.common import (
    EpochLoop,
    OptimizerConfig,
    Step,
    Tick,
    config_key,
    epoch_seed,
    paths_for,
    save_safetensors,
    weights_source,
    write_json,
    zoo_dataset_name,
)

log = logging.getLogger(__name__)

__all__ = [
    "ExpertTrainConfig",
    "TrainEvent",
    "TrainResult",
    "build_entry",
    "command_line",
    "evaluate",
    "paths_for",
    "train_expert",
]


@dataclass(frozen=True)
class ExpertTrainConfig:
    """Everything that determines the trained weights (plus where to write them).

    ``dataset``/``split``: the training data (:func:`rsbench.data.dataset.load_dataset` names; ``limit``
    keeps the first ``limit`` images). ``eval_limit`` test images (first ones, canonical order) are
    scored after each epoch, clean and under one seeded noise draw at ``train_sigma`` (0: no eval).
    ``augment``: random crop (padding 4) and horizontal flip, as Cohen et al. did for CIFAR-10;
    ``None`` means on for ``cifar10`` and ``imagenet``, off otherwise. ``input_layer``: the zoo
    entry's input layer (default: normalise with the dataset's mean and std). ``denoiser``: a
    ``denoised`` zoo entry whose denoiser denoises every noisy training image (see the module
    docstring); ``denoised_id``: the id of the denoised entry written then (default
    ``<id>-denoised``). ``init``: a zoo expert of the same architecture whose weights start the
    training (fine-tuning).
    """

    dataset: str
    arch: str
    train_sigma: float
    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    seed: int = 0
    split: str = "train"
    limit: int | None = None
    eval_limit: int = 1000
    augment: bool | None = None
    input_layer: dict[str, Any] | None = None
    model_id: str | None = None
    denoiser: str | None = None
    denoised_id: str | None = None
    init: str | None = None
    data_root: str | None = None
    download: bool = False
    device: str = "cpu"
    num_workers: int = 0
    command: str | None = None

    def resolved_id(self) -> str:
        """The zoo id: ``model_id`` or ``<dataset>-<arch>-s<train_sigma>``."""
        if self.model_id:
            return self.model_id
        arch = self.arch.replace(":", "-").replace("/", "-").replace(".py", "")
        return f"{self.dataset}-{arch}-s{self.train_sigma:.2f}"

    def determining(self) -> dict[str, Any]:
        """The fields that determine the weights (a resumed run must match them exactly)."""
        skip = {
            "data_root",
            "download",
            "device",
            "num_workers",
            "command",
            "eval_limit",
            "denoised_id",
        }
        fields = dataclasses.asdict(self)
        for name in ("denoiser", "init"):  # absent when unset: older checkpoints keep their key
            if fields[name] is None:
                skip.add(name)
        return {k: v for k, v in fields.items() if k not in skip}

    def resolved_denoised_id(self) -> str:
        """The denoised entry's id (with ``denoiser``): ``denoised_id`` or ``<id>-denoised``."""
        return self.denoised_id or f"{self.resolved_id()}-denoised"


@dataclass(frozen=True)
class TrainEvent:
    """A progress report: ``phase`` is ``start``, ``batch``, ``epoch`` (after the checkpoint) or ``done``."""

    phase: str
    epoch: int  # 1-based epoch in progress or just finished
    epochs: int
    step: int = 0  # batches done in this epoch
    steps: int = 0  # batches per epoch
    loss: float = math.nan  # running mean over the epoch so far
    accuracy: float = math.nan  # running noisy training accuracy over the epoch so far
    lr: float = math.nan
    elapsed: float = 0.0
    eval_clean: float | None = None
    eval_noisy: float | None = None
    resumed_from: int | None = None
    eval_denoised: dict[str, float] | None = None


@dataclass
class TrainResult:
    """What :func:`train_expert` wrote: weights, their digest, the zoo entry and the history."""

    model_id: str
    weights: Path
    sha256: str
    entry: Any  # rsbench.zoo.registry.ZooEntry
    zoo_file: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    denoised_entry: Any = None  # the denoised ZooEntry written with --denoiser, else None


# ------------------------------------------------------------------------------------------------
# helpers


def _validate(config: ExpertTrainConfig) -> None:
    if config.train_sigma != 0:  # 0 trains without noise (the classifier of a denoised expert)
        check_sigma(config.train_sigma, "train_sigma")
    check_count(config.epochs, "epochs")
    check_count(config.batch_size, "batch_size")
    OptimizerConfig.of(config).check(example_lr="0.05")
    if config.limit is not None:
        check_count(config.limit, "limit")
    if config.eval_limit < 0:
        raise ConfigError(f"eval_limit={config.eval_limit} is not allowed; use 0 (no eval) or more")
    if config.denoiser and config.train_sigma != 0:
        raise ConfigError(
            f"train_sigma={config.train_sigma:g} with denoiser {config.denoiser}: a denoised "
            "classifier trains on the denoiser's served sigmas; use --train-sigma 0"
        )
    if config.denoised_id and not config.denoiser:
        raise ConfigError("denoised_id names the denoised entry of --denoiser; give --denoiser too")


def _default_input_layer(dataset: str) -> dict[str, Any]:
    from rsbench.data.catalog import dataset_info

    info = dataset_info(dataset)
    return {"type": "normalize", "mean": list(info.mean), "std": list(info.std)}


def build_entry(
    config: ExpertTrainConfig,
    weights: Path,
    sha256: str | None,
    zoo_file: Path | None,
    extra_recipe: dict[str, Any] | None = None,
):
    """The zoo entry for ``config``'s trained weights at ``weights`` (validated by the zoo parser)."""
    from rsbench.data.catalog import dataset_info
    from rsbench.zoo.parse import parse_entry

    info = dataset_info(config.dataset)
    recipe: dict[str, Any] = {
        "trainer": (
            "rsbench train expert --denoiser (classifier on denoised images)"
            if config.denoiser
            else "rsbench train expert (Gaussian noise augmentation, Cohen et al. 2019)"
        ),
        "command": config.command or command_line(config),
        "data": {"dataset": config.dataset, "split": config.split, "limit": config.limit},
        "seed": config.seed,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
        "schedule": config.schedule,
        "augment": _augment_on(config),
        "torch": str(torch.__version__),
    }
    if config.schedule == "step":
        recipe.update(step_size=config.step_size, gamma=config.gamma)
    recipe.update(extra_recipe or {})
    raw = {
        "id": config.resolved_id(),
        "kind": "expert",
        "dataset": zoo_dataset_name(config.dataset),
        "description": _description(config),
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "arch": config.arch,
        "train_sigma": float(config.train_sigma),
        "input_layer": config.input_layer or _default_input_layer(config.dataset),
        "source": weights_source(weights, zoo_file),
        "sha256": sha256,
        "license": f"weights: MIT (rsbench); training data: {info.license}",
        "paper": (
            "Carlini, Tramer, Dvijotham, Rice, Sun, Kolter. (Certified!!) Adversarial Robustness "
            "for Free! ICLR 2023 (fine-tuned classifier)"
            if config.denoiser
            else "Cohen, Rosenfeld, Kolter. Certified Adversarial Robustness via Randomized "
            "Smoothing. ICML 2019"
        ),
        "recipe": recipe,
    }
    return parse_entry(raw, file=zoo_file)


def _description(config: ExpertTrainConfig) -> str:
    if config.denoiser:
        start = f"fine-tuned from {config.init}" if config.init else "trained"
        return (
            f"{config.arch} {start} by rsbench on {config.dataset}/{config.split} images denoised "
            f"by {config.denoiser}'s denoiser at its served sigmas (the classifier of "
            f"{config.resolved_denoised_id()})"
        )
    if config.train_sigma > 0:
        return (
            f"{config.arch} trained by rsbench with Gaussian noise augmentation at "
            f"train_sigma {config.train_sigma:g} on {config.dataset}/{config.split}"
        )
    return (
        f"{config.arch} trained by rsbench without noise on {config.dataset}/{config.split} "
        "(a classifier for a denoised expert)"
    )


def command_line(config: ExpertTrainConfig) -> str:
    """An ``rsbench train expert`` command that reproduces ``config`` (output paths excluded)."""
    parts = [
        "rsbench train expert",
        f"--dataset {config.dataset}",
        f"--arch {config.arch}",
        f"--train-sigma {config.train_sigma:g}",
        f"--epochs {config.epochs}",
        f"--batch-size {config.batch_size}",
        f"--optimizer {config.optimizer}",
        f"--lr {config.lr:g}",
        f"--momentum {config.momentum:g}",
        f"--weight-decay {config.weight_decay:g}",
        f"--schedule {config.schedule}",
        f"--seed {config.seed}",
    ]
    if config.schedule == "step":
        parts += [f"--step-size {config.step_size}", f"--gamma {config.gamma:g}"]
    if config.split != "train":
        parts.append(f"--split {shlex.quote(config.split)}")
    if config.limit is not None:
        parts.append(f"--limit {config.limit}")
    if config.augment is not None:
        parts.append("--augment" if config.augment else "--no-augment")
    if config.denoiser:
        parts.append(f"--denoiser {config.denoiser}")
    if config.init:
        parts.append(f"--init {config.init}")
    if config.model_id:
        parts.append(f"--id {config.model_id}")
    if config.denoised_id:
        parts.append(f"--denoised-id {config.denoised_id}")
    return " ".join(parts)


def _augment_on(config: ExpertTrainConfig) -> bool:
    if config.augment is not None:
        return bool(config.augment)
    return config.dataset in ("cifar10", "imagenet")


def _augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, per image, seeded."""
    batch, _, height, width = images.shape
    flips = torch.rand(batch, generator=generator) < 0.5
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator)
    padded = nn.functional.pad(images, (pad, pad, pad, pad))
    out = torch.empty_like(images)
    for i in range(batch):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy : dy + height, dx : dx + width]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def _batches(dataset, indices: torch.Tensor, batch_size: int, num_workers: int):
    """Yield ``(images, labels)`` for consecutive slices of ``indices``."""
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    if num_workers > 0:
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=[c.tolist() for c in chunks], num_workers=num_workers
        )
        yield from loader
        return
    for chunk in chunks:
        yield dataset.images(chunk), dataset.labels[chunk]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    sigma: float,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """(clean accuracy, accuracy under one seeded noise draw at ``sigma``) on the first ``limit`` images.

    One generator seeded with ``seed`` draws the noise in dataset order, one draw per image: the
    same (model, dataset, sigma, limit, seed, batch_size) always gives the same figures.
    """
    model.eval()
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    generator = torch.Generator().manual_seed(int(seed))
    clean = noisy = 0
    for start in range(0, count, batch_size):
        idx = torch.arange(start, min(start + batch_size, count))
        images = dataset.images(idx)
        labels = dataset.labels[idx]
        noise = torch.randn(images.shape, generator=generator) * sigma
        clean += int((model(images.to(device)).argmax(1).cpu() == labels).sum())
        noisy += int((model((images + noise).to(device)).argmax(1).cpu() == labels).sum())
    return clean / max(count, 1), noisy / max(count, 1)


@torch.no_grad()
def evaluate_denoised(
    model: nn.Module,
    denoiser: nn.Module,
    dataset,
    sigmas,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Accuracy of ``model(clamp(denoiser(x + N(0, s^2 I), s), 0, 1))`` per sigma ``s`` (keys
    ``f"{s:g}"``) on the first ``limit`` images: one noise draw per image from a generator seeded
    with ``seed`` per sigma, so the figures are reproducible."""
    model.eval()
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    out: dict[str, float] = {}
    for sigma in sigmas:
        generator = torch.Generator().manual_seed(int(seed))
        right = 0
        for start in range(0, count, batch_size):
            idx = torch.arange(start, min(start + batch_size, count))
            images = dataset.images(idx)
            noisy = images + torch.randn(images.shape, generator=generator) * float(sigma)
            clean = denoiser(noisy.to(device), float(sigma)).clamp(0.0, 1.0)
            right += int((model(clean).argmax(1).cpu() == dataset.labels[idx]).sum())
        out[f"{float(sigma):g}"] = right / max(count, 1)
    return out


@dataclass
class _Denoising:
    """The frozen denoiser of a ``--denoiser`` run, its entry and served sigmas."""

    entry: Any
    net: nn.Module
    sigmas: torch.Tensor
    identity: str


def _resolve(config: ExpertTrainConfig, zoo: Any, device) -> tuple[Any, Any]:
    """``(_Denoising or None, init entry or None)`` for ``config.denoiser`` / ``config.init``,
    checked against the training data and architecture."""
    if not (config.denoiser or config.init):
        return None, None
    if zoo is None:
        from rsbench.zoo.registry import load_zoo

        zoo = load_zoo()
    dataset = zoo_dataset_name(config.dataset)
    denoising = init = None
    if config.denoiser:
        from rsbench.models.denoised import load_denoised

        entry = zoo.get(config.denoiser)
        if entry.kind != "denoised":
            raise ConfigError(
                f"{entry.id} is of kind {entry.kind}; --denoiser takes a denoised entry"
            )
        if entry.dataset != dataset:
            raise ConfigError(f"{entry.id} is for {entry.dataset}, not {dataset}")
        expert = load_denoised(entry, device)
        net = expert.denoiser.eval()
        for param in net.parameters():
            param.requires_grad_(False)
        identities: dict[str, str] = getattr(expert, "component_identities", {})
        identity = str(identities["denoiser"])
        sigmas = torch.tensor([float(s) for s in entry.sigmas or ()])
        denoising = _Denoising(entry, net, sigmas, identity)
    if config.init:
        init = zoo.get(config.init)
        if init.kind != "expert" or init.arch != config.arch or init.dataset != dataset:
            raise ConfigError(
                f"--init {init.id} is a {init.kind} ({init.arch}, {init.dataset}); it must be an "
                f"expert of arch {config.arch} for {dataset}"
            )
    return denoising, init


def denoised_entry(config: ExpertTrainConfig, denoising: _Denoising, classifier, zoo_file, extra):
    """The ``denoised`` entry: ``denoising``'s denoiser component + the trained ``classifier``."""
    from rsbench.data.catalog import dataset_info
    from rsbench.train.denoiser import classifier_spec
    from rsbench.zoo.entry import thaw
    from rsbench.zoo.parse import parse_entry

    info = dataset_info(config.dataset)
    source = denoising.entry
    spec = dict(thaw(source.denoiser))
    location = spec.get("source") or {}
    if location.get("type") == "file" and not Path(location["path"]).is_absolute():
        base = source.base_dir or Path.cwd()
        spec["source"] = {**location, "path": str((base / location["path"]).resolve())}
    sigmas = ", ".join(f"{float(s):g}" for s in source.sigmas or ())
    raw = {
        "id": config.resolved_denoised_id(),
        "kind": "denoised",
        "dataset": zoo_dataset_name(config.dataset),
        "description": (
            f"denoised smoothing: {source.id}'s denoiser ({spec.get('arch')}) at sigma {sigmas}, "
            f"then classifier {classifier.id} (trained on its denoised images)"
        ),
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "sigmas": [float(s) for s in source.sigmas or ()],
        "denoiser": spec,
        "classifier": classifier_spec(classifier),
        "license": f"weights: MIT (rsbench); training data: {info.license}",
        "paper": (
            "Carlini, Tramer, Dvijotham, Rice, Sun, Kolter. (Certified!!) Adversarial Robustness "
            "for Free! ICLR 2023 (fine-tuned classifier; also Salman et al. 2020)"
        ),
        "recipe": {
            "trainer": "rsbench train expert --denoiser (classifier on denoised images)",
            "command": config.command or command_line(config),
            "denoiser_of": source.id,
            "classifier": classifier.id,
            **extra,
        },
    }
    return parse_entry(raw, file=zoo_file)


# ------------------------------------------------------------------------------------------------
# training


def train_expert(
    config: ExpertTrainConfig,
    out_dir: str | os.PathLike,
    zoo_file: str | os.PathLike | None = None,
    resume: bool = True,
    keep_checkpoint: bool = False,
    overwrite_entry: bool = True,
    progress: Callable[[TrainEvent], None] | None = None,
    zoo: Any = None,
) -> TrainResult:
    """Train an expert as ``config`` says, write its weights and (with ``zoo_file``) its zoo entry.

    ``zoo`` resolves ``config.denoiser`` and ``config.init`` (default: the default zoo); with a
    denoiser the denoised entry is written to ``zoo_file`` too.

    Returns a :class:`TrainResult`. Raises :class:`~rsbench.errors.ConfigError` for bad settings,
    :class:`~rsbench.errors.DataError` for missing data, :class:`~rsbench.errors.ZooError` for an
    unknown architecture or an entry clash, and :class:`~rsbench.errors.WeightsError` for a
    checkpoint in ``out_dir`` that belongs to another configuration.
    """
    from rsbench.data.dataset import load_dataset
    from rsbench.models.network import build_model

    _validate(config)
    emit = progress or (lambda event: None)
    model_id = config.resolved_id()
    paths = paths_for(out_dir, model_id)
    zoo_path = Path(zoo_file).expanduser() if zoo_file is not None else None
    resolved = D.resolve(config.device)
    D.activate(resolved)
    device = resolved.torch

    train_set = load_dataset(
        config.dataset, config.split, root=config.data_root, download=config.download
    )
    size = len(train_set) if config.limit is None else int(config.limit)
    if size > len(train_set):
        from rsbench.errors import DataError

        raise DataError(
            f"limit={config.limit} is beyond {config.dataset}/{config.split} ({len(train_set)} images)"
        )
    eval_set = _eval_set(config)
    denoising, init = _resolve(config, zoo, device)

    torch.manual_seed(config.seed)
    entry = build_entry(config, paths["weights"], None, zoo_path)
    model = build_model(entry).to(device)
    net = model[1]
    sources = _start_from(net, init, denoising, device)
    steps = math.ceil(size / config.batch_size)
    optimizer, scheduler = OptimizerConfig.of(config).build(
        model.parameters(), config.epochs, steps
    )
    key = config_key({**config.determining(), **sources}) if sources else _config_key(config)
    loop = EpochLoop(
        model, optimizer, scheduler, config.epochs, steps, key, paths["checkpoint"], net=net
    )
    resumed_from = loop.resume() if resume else None
    if resumed_from is not None:
        log.info("resuming %s from epoch %d", model_id, resumed_from)

    began = time.perf_counter()
    emit(
        TrainEvent("start", loop.start_epoch, config.epochs, steps=steps, resumed_from=resumed_from)
    )
    augment = _augment_on(config)
    loss_fn = nn.CrossEntropyLoss()
    correct = 0  # noisy training predictions that are right, this epoch so far
    seen = 0

    def batches(epoch: int) -> Iterator[Step]:
        nonlocal correct, seen
        correct = seen = 0
        generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
        order = torch.randperm(size, generator=generator)
        for images, labels in _batches(train_set, order, config.batch_size, config.num_workers):
            if augment:
                images = _augment(images, generator)
            if denoising is not None:
                pick = torch.randint(len(denoising.sigmas), (len(labels),), generator=generator)
                level = denoising.sigmas[pick]
                noise = torch.randn(images.shape, generator=generator) * level.view(-1, 1, 1, 1)
                with torch.no_grad():
                    noisy = denoising.net((images + noise).to(device), level.to(device))
                noisy = noisy.clamp(0.0, 1.0)
            else:
                noisy = images + torch.randn(images.shape, generator=generator) * config.train_sigma
            noisy, labels = noisy.to(device), labels.to(device)
            logits = model(noisy)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            yield Step(loss_fn(logits, labels), len(labels))

    def on_batch(tick: Tick) -> None:
        emit(
            TrainEvent(
                "batch",
                tick.epoch,
                config.epochs,
                tick.step,
                tick.steps,
                tick.loss,
                correct / seen,
                tick.lr,
                time.perf_counter() - began,
            )
        )

    def end_epoch(epoch: int, loss: float) -> dict[str, Any]:
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": loss,
            "train_noisy_accuracy": correct / seen,
            "lr_end": optimizer.param_groups[0]["lr"],
        }
        if eval_set is not None:
            clean, noisy_acc = evaluate(
                model, eval_set, config.train_sigma, config.eval_limit, config.seed, device=device
            )
            record.update(eval_clean_accuracy=clean, eval_noisy_accuracy=noisy_acc)
            if denoising is not None:
                record["eval_denoised_accuracy"] = evaluate_denoised(
                    model,
                    denoising.net,
                    eval_set,
                    denoising.sigmas.tolist(),
                    config.eval_limit,
                    config.seed,
                    device=device,
                )
        return record

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        emit(
            TrainEvent(
                "epoch",
                epoch,
                config.epochs,
                steps,
                steps,
                record["loss"],
                record["train_noisy_accuracy"],
                record["lr_end"],
                time.perf_counter() - began,
                record.get("eval_clean_accuracy"),
                record.get("eval_noisy_accuracy"),
                resumed_from,
                record.get("eval_denoised_accuracy"),
            )
        )

    history = loop.run(batches, end_epoch, on_batch=on_batch, on_epoch=on_epoch)
    info = {"id": model_id, "seed": config.seed, "train_sigma": config.train_sigma}
    digest = save_safetensors(net.state_dict(), paths["weights"], info)
    final = history[-1] if history else {}
    extra: dict[str, Any] = {
        k: round(float(final[k]), 4)
        for k in ("eval_clean_accuracy", "eval_noisy_accuracy")
        if k in final
    }
    extra.update(_denoised_recipe(config, final, denoising, init, sources))
    entry = build_entry(config, paths["weights"], digest, zoo_path, extra_recipe=extra)
    written = [entry]
    denoised = None
    if denoising is not None:
        denoised = denoised_entry(config, denoising, entry, zoo_path, extra)
        written.append(denoised)
    seconds = time.perf_counter() - began
    run_record = {
        "id": model_id,
        "config": dataclasses.asdict(config),
        "command": config.command or command_line(config),
        "sha256": digest,
        "sources": sources,
        "history": history,
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
    }
    write_json(paths["record"], run_record)
    if zoo_path is not None:
        from rsbench.zoo.files import write_entries

        write_entries(zoo_path, written, overwrite=overwrite_entry)
    if not keep_checkpoint:
        paths["checkpoint"].unlink(missing_ok=True)
    emit(TrainEvent("done", config.epochs, config.epochs, steps, steps, elapsed=seconds))
    return TrainResult(
        model_id, paths["weights"], digest, entry, zoo_path, history, seconds, denoised
    )


def _start_from(net: nn.Module, init: Any, denoising: Any, device) -> dict[str, str]:
    """Load ``init``'s weights into ``net`` (when given); return the digests of what the run
    starts from (``init_sha256``, ``denoiser_identity``), which enter the checkpoint key."""
    sources: dict[str, str] = {}
    if init is not None:
        from rsbench.models.network import load_network

        start = load_network(init, device)
        net.load_state_dict(start[1].state_dict())  # type: ignore[index]
        sources["init_sha256"] = str(getattr(start, "weights_sha256", ""))
    if denoising is not None:
        sources["denoiser_identity"] = denoising.identity
    return sources


def _denoised_recipe(config, final, denoising, init, sources) -> dict[str, Any]:
    """The recipe fields of a ``--denoiser`` / ``--init`` run (eval accuracies on denoised
    images, the denoiser and the initial weights); ``eval_images`` when anything was scored."""
    extra: dict[str, Any] = {}
    if "eval_denoised_accuracy" in final:
        extra["eval_denoised_accuracy"] = {
            k: round(float(v), 4) for k, v in final["eval_denoised_accuracy"].items()
        }
    if "eval_clean_accuracy" in final or extra:
        extra["eval_images"] = config.eval_limit
    if denoising is not None:
        extra["denoiser"] = {"entry": denoising.entry.id, "identity": denoising.identity}
        extra["sigmas"] = denoising.sigmas.tolist()
    if init is not None:
        extra["init"] = {"entry": init.id, "sha256": sources["init_sha256"]}
    return extra


def _eval_set(config: ExpertTrainConfig) -> Any:
    """The split scored after each epoch (``val`` or ``test``), or ``None`` (no eval, or it is
    the training split)."""
    from rsbench.data.catalog import DATASETS
    from rsbench.data.dataset import load_dataset

    if config.eval_limit <= 0:
        return None
    eval_split = "val" if "val" in DATASETS[config.dataset].splits else "test"
    if eval_split == config.split:
        return None
    return load_dataset(config.dataset, eval_split, root=config.data_root)


def _config_key(config: ExpertTrainConfig) -> str:
    return config_key(config.determining())

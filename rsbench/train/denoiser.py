"""Denoiser training for denoised experts (denoised smoothing, Salman et al. 2020's MSE objective).

Each training image ``x`` gets one noise level ``s`` drawn uniformly from ``sigmas`` and the noisy
copy ``z = x + N(0, s^2 I)`` in [0, 1] pixel space (no clipping), exactly the input the denoiser
sees inside a smoothed base model. The loss is

* for a diffusion denoiser (an architecture whose module has ``eps_loss``, e.g. ``small_ddpm_unet``:
  :class:`rsbench.models.denoised.DiffusionDenoiser`): DDPM's simple noise-prediction loss at the
  timesteps the served sigmas map to (:meth:`~rsbench.models.denoised.DiffusionDenoiser.eps_loss`;
  training concentrates on those timesteps, not the full schedule);
* otherwise: the mean squared error between ``denoiser(z, s)`` and ``x``.

One network so serves every sigma it was trained on.

Guarantees (as for :mod:`rsbench.train.expert`):

* Seeded and deterministic: the initial weights come from ``seed``; epoch ``e``'s data order, noise
  levels and noise come from the stream ``NoiseKey(dataset, split, e, noise_purpose, seed)``
  (:mod:`rsbench.engine.noise`; ``noise_purpose`` is ``denoiser-training``, the denoiser trainer's
  own purpose, never a certification stream nor the router trainer's; ``training``, the purpose
  it shared with the router trainer before, reproduces denoisers trained then, such as the
  shipped ``embedded-fmnist-denoised``). On the same device,
  thread count and library versions an interrupted-and-resumed run gives the same weights.
* Resumable: a checkpoint after every epoch (``<out>/<id>.checkpoint.pt``, ``weights_only`` load);
  one made with another configuration is refused.
* Outputs: ``<out>/<id>.safetensors`` (the denoiser's state dict), ``<out>/<id>.train.json``
  (configuration, per-epoch history with test MSE per sigma, digest) and, when a ``classifier`` zoo
  expert is named and a zoo file given, a validated ``denoised`` zoo entry (this denoiser + that
  classifier, serving ``sigmas``) whose recipe holds the exact command.
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
from typing import Any, cast

import torch

from rsbench.engine import device as D
from rsbench.engine.noise import NoiseKey, Purpose
from rsbench.errors import ConfigError, check_count, check_sigma
from rsbench.train.common import (
    EpochLoop,
    OptimizerConfig,
    Step,
    Tick,
    config_key,
    paths_for,
    save_safetensors,
    weights_source,
    write_json,
    zoo_dataset_name,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DenoiserTrainConfig:
    """Everything that determines the trained denoiser (plus where to write it).

    ``sigmas``: the noise levels trained on (and served by the denoised entry). ``classifier``: a
    zoo expert (typically trained without noise) that forms the denoised entry with this denoiser.
    """

    dataset: str
    arch: str = "small_denoiser"
    sigmas: tuple[float, ...] = (0.25, 0.5, 1.0)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    seed: int = 0
    split: str = "train"
    limit: int | None = None
    eval_limit: int = 1000
    model_id: str | None = None
    classifier: str | None = None
    noise_purpose: str = "denoiser-training"
    data_root: str | None = None
    download: bool = False
    device: str = "cpu"
    command: str | None = None

    def resolved_id(self) -> str:
        """The denoised entry's id: ``model_id`` or ``<dataset>-denoised``."""
        return self.model_id or f"{zoo_dataset_name(self.dataset)}-denoised"

    def weights_id(self) -> str:
        """File stem of the denoiser's weights: ``<id>-denoiser``."""
        return f"{self.resolved_id()}-denoiser"

    def determining(self) -> dict[str, Any]:
        """The fields that determine the weights (a resumed run must match them exactly)."""
        skip = {
            "data_root",
            "download",
            "device",
            "command",
            "eval_limit",
            "classifier",
            "model_id",
        }
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclass(frozen=True)
class DenoiserEvent:
    """Progress: ``phase`` is ``start``, ``batch``, ``epoch`` (after the checkpoint) or ``done``."""

    phase: str
    epoch: int
    epochs: int
    step: int = 0
    steps: int = 0
    loss: float = math.nan
    lr: float = math.nan
    elapsed: float = 0.0
    eval_mse: dict[str, float] | None = None
    resumed_from: int | None = None


@dataclass
class DenoiserTrainResult:
    """What :func:`train_denoiser` wrote."""

    model_id: str
    weights: Path
    sha256: str
    entry: Any  # the denoised ZooEntry, or None without a classifier
    zoo_file: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _validate(config: DenoiserTrainConfig) -> None:
    if not config.sigmas:
        raise ConfigError("give at least one sigma to train the denoiser on (--sigmas 0.25,0.5,1)")
    for s in config.sigmas:
        check_sigma(s, "sigma")
    if len(set(config.sigmas)) != len(config.sigmas):
        raise ConfigError(f"sigmas {list(config.sigmas)} repeat a value")
    check_count(config.epochs, "epochs")
    check_count(config.batch_size, "batch_size")
    OptimizerConfig.of(config).check(example_lr="0.002")
    if config.limit is not None:
        check_count(config.limit, "limit")
    if config.eval_limit < 0:
        raise ConfigError(f"eval_limit={config.eval_limit} is not allowed; use 0 (no eval) or more")
    if config.noise_purpose not in NOISE_PURPOSES:
        raise ConfigError(
            f"noise_purpose={config.noise_purpose!r} is not one of {', '.join(NOISE_PURPOSES)}"
        )


#: the denoiser trainer's noise purposes: its own, and the one it shared with the router trainer
#: before (``training``: reproduces denoisers trained then, e.g. ``embedded-fmnist-denoised``)
NOISE_PURPOSES = ("denoiser-training", "training")


def command_line(config: DenoiserTrainConfig) -> str:
    """An ``rsbench train denoiser`` command that reproduces ``config`` (output paths excluded)."""
    parts = [
        "rsbench train denoiser",
        f"--dataset {config.dataset}",
        f"--arch {config.arch}",
        f"--sigmas {','.join(f'{s:g}' for s in config.sigmas)}",
        f"--epochs {config.epochs}",
        f"--batch-size {config.batch_size}",
        f"--optimizer {config.optimizer}",
        f"--lr {config.lr:g}",
        f"--weight-decay {config.weight_decay:g}",
        f"--schedule {config.schedule}",
        f"--seed {config.seed}",
    ]
    if config.split != "train":
        parts.append(f"--split {shlex.quote(config.split)}")
    if config.optimizer == "sgd":
        parts.append(f"--momentum {config.momentum:g}")
    if config.schedule == "step":
        parts += [f"--step-size {config.step_size}", f"--gamma {config.gamma:g}"]
    if config.limit is not None:
        parts.append(f"--limit {config.limit}")
    if config.classifier:
        parts.append(f"--classifier {config.classifier}")
    if config.noise_purpose != "denoiser-training":
        parts.append(f"--noise-purpose {config.noise_purpose}")
    if config.model_id:
        parts.append(f"--id {config.model_id}")
    return " ".join(parts)


def classifier_spec(classifier) -> dict[str, Any]:
    """A zoo expert as a denoised entry's ``classifier`` component (arch, input layer, source,
    sha256, checkpoint); a relative ``file`` source becomes absolute (it leaves its zoo file)."""
    source = classifier.source.to_dict()
    if source["type"] == "file" and not Path(source["path"]).is_absolute():
        base = classifier.base_dir or Path.cwd()
        source["path"] = str((base / source["path"]).resolve())
    spec: dict[str, Any] = {
        "arch": classifier.arch,
        "input_layer": classifier.input_layer.to_dict(),
        "source": source,
        "sha256": classifier.sha256,
    }
    checkpoint = classifier.checkpoint.to_dict()
    if checkpoint:
        spec["checkpoint"] = checkpoint
    return spec


def build_entry(
    config: DenoiserTrainConfig,
    classifier,
    weights: Path,
    sha256: str | None,
    zoo_file: Path | None,
    extra_recipe: dict[str, Any] | None = None,
    timesteps: dict[str, int] | None = None,
):
    """The ``denoised`` entry: this denoiser (at ``weights``) + the ``classifier`` zoo expert.

    ``timesteps`` (sigma -> DDPM timestep) marks a diffusion denoiser trained with DDPM's noise
    prediction loss; ``None``, one trained with the MSE objective."""
    from rsbench.data.catalog import dataset_info
    from rsbench.zoo.parse import parse_entry

    info = dataset_info(config.dataset)
    if timesteps is not None:
        trainer = (
            "rsbench train denoiser (DDPM noise prediction at the served sigmas' timesteps; "
            "one-step denoising, Carlini et al. 2023)"
        )
        paper = (
            "Carlini, Tramer, Dvijotham, Rice, Sun, Kolter. (Certified!!) Adversarial Robustness "
            "for Free! ICLR 2023"
        )
    else:
        trainer = "rsbench train denoiser (MSE denoising over the served sigmas)"
        paper = (
            "Salman, Sun, Yang, Kapoor, Kolter. Denoised Smoothing: A Provable Defense for "
            "Pretrained Classifiers. NeurIPS 2020"
        )
    recipe: dict[str, Any] = {
        "trainer": trainer,
        "command": config.command or command_line(config),
        "data": {"dataset": config.dataset, "split": config.split, "limit": config.limit},
        "classifier": classifier.id,
        "seed": config.seed,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "schedule": config.schedule,
        "noise_purpose": config.noise_purpose,
        "torch": str(torch.__version__),
    }
    if timesteps is not None:
        recipe["timesteps"] = dict(timesteps)
    if config.optimizer == "sgd":
        recipe["momentum"] = config.momentum
    if config.schedule == "step":
        recipe.update(step_size=config.step_size, gamma=config.gamma)
    recipe.update(extra_recipe or {})
    sigmas = ", ".join(f"{s:g}" for s in config.sigmas)
    raw = {
        "id": config.resolved_id(),
        "kind": "denoised",
        "dataset": zoo_dataset_name(config.dataset),
        "description": (
            f"denoised smoothing: {config.arch} denoiser trained by rsbench on "
            f"{config.dataset}/{config.split} at sigma {sigmas}, then classifier {classifier.id}"
        ),
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "sigmas": [float(s) for s in config.sigmas],
        "denoiser": {
            "arch": config.arch,
            "source": weights_source(weights, zoo_file),
            "sha256": sha256,
        },
        "classifier": classifier_spec(classifier),
        "license": f"weights: MIT (rsbench); training data: {info.license}",
        "paper": paper,
        "recipe": recipe,
    }
    return parse_entry(raw, file=zoo_file)


def _config_key(config: DenoiserTrainConfig) -> str:
    return config_key(config.determining())


@torch.no_grad()
def evaluate(net, dataset, sigmas, limit: int, seed: int = 0, batch_size: int = 500, device="cpu"):
    """Test MSE of ``clamp(net(z, s), 0, 1)`` against ``x`` per sigma (one seeded noise draw each)."""
    net.eval()
    count = min(int(limit), len(dataset))
    out: dict[str, float] = {}
    for s in sigmas:
        generator = torch.Generator().manual_seed(int(seed))
        total = 0.0
        for start in range(0, count, batch_size):
            images = dataset.images(torch.arange(start, min(start + batch_size, count)))
            noisy = images + torch.randn(images.shape, generator=generator) * float(s)
            clean = net(noisy.to(device), float(s)).clamp(0, 1).cpu()
            total += float(((clean - images) ** 2).sum())
        out[f"{float(s):g}"] = total / max(count * images[0].numel(), 1)
    return out


def train_denoiser(
    config: DenoiserTrainConfig,
    out_dir: str | os.PathLike,
    zoo=None,
    zoo_file: str | os.PathLike | None = None,
    resume: bool = True,
    keep_checkpoint: bool = False,
    overwrite_entry: bool = True,
    progress: Callable[[DenoiserEvent], None] | None = None,
) -> DenoiserTrainResult:
    """Train a denoiser as ``config`` says; write its weights and (with a classifier and
    ``zoo_file``) the denoised zoo entry. ``zoo`` resolves ``config.classifier``."""
    from rsbench.data.catalog import DATASETS, dataset_info
    from rsbench.data.dataset import load_dataset
    from rsbench.models.archs import build_architecture

    _validate(config)
    emit = progress or (lambda event: None)
    classifier = _classifier(config, zoo) if config.classifier else None
    paths = paths_for(out_dir, config.weights_id())
    zoo_path = Path(zoo_file).expanduser() if zoo_file is not None else None
    resolved = D.resolve(config.device)
    D.activate(resolved)
    device = resolved.torch
    train_set = load_dataset(
        config.dataset, config.split, root=config.data_root, download=config.download
    )
    size = len(train_set) if config.limit is None else min(int(config.limit), len(train_set))
    eval_set = None
    if config.eval_limit > 0:
        eval_split = "val" if "val" in DATASETS[config.dataset].splits else "test"
        if eval_split != config.split:
            eval_set = load_dataset(config.dataset, eval_split, root=config.data_root)

    info = dataset_info(config.dataset)
    torch.manual_seed(config.seed)
    net = build_architecture(
        config.arch, info.input_shape[0], tuple(info.input_shape), base_dir=None
    ).to(device)
    steps = math.ceil(size / config.batch_size)
    optimizer, scheduler = OptimizerConfig.of(config).build(net.parameters(), config.epochs, steps)
    sigmas = torch.tensor([float(s) for s in config.sigmas])
    eps_loss = getattr(net, "eps_loss", None)
    timesteps = None
    if eps_loss is not None:
        timesteps = {f"{float(s):g}": int(net.timestep(float(s))) for s in config.sigmas}
    key = _config_key(config)
    loop = EpochLoop(net, optimizer, scheduler, config.epochs, steps, key, paths["checkpoint"])
    resumed_from = loop.resume() if resume else None
    began = time.perf_counter()
    emit(
        DenoiserEvent(
            "start", loop.start_epoch, config.epochs, steps=steps, resumed_from=resumed_from
        )
    )

    def batches(epoch: int) -> Iterator[Step]:
        purpose = cast(Purpose, config.noise_purpose)
        stream = NoiseKey(config.dataset, config.split, epoch, purpose, config.seed)
        generator = stream.generator()
        order = torch.randperm(size, generator=generator)
        for start in range(0, size, config.batch_size):
            chunk = order[start : start + config.batch_size]
            images = train_set.images(chunk)
            level = sigmas[torch.randint(len(sigmas), (len(chunk),), generator=generator)]
            noise = torch.randn(images.shape, generator=generator) * level.view(-1, 1, 1, 1)
            images, noisy, level = images.to(device), (images + noise).to(device), level.to(device)
            if eps_loss is not None:
                yield Step(eps_loss(noisy, level, images), len(chunk))
            else:
                yield Step(torch.nn.functional.mse_loss(net(noisy, level), images), len(chunk))

    def on_batch(tick: Tick) -> None:
        elapsed = time.perf_counter() - began
        emit(
            DenoiserEvent(
                "batch",
                tick.epoch,
                config.epochs,
                tick.step,
                tick.steps,
                tick.loss,
                tick.lr,
                elapsed,
            )
        )

    def end_epoch(epoch: int, loss: float) -> dict[str, Any]:
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": loss,
            "lr_end": optimizer.param_groups[0]["lr"],
        }
        if eval_set is not None:
            record["eval_mse"] = evaluate(
                net, eval_set, config.sigmas, config.eval_limit, config.seed, device=device
            )
        return record

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        emit(
            DenoiserEvent(
                "epoch",
                epoch,
                config.epochs,
                steps,
                steps,
                record["loss"],
                record["lr_end"],
                time.perf_counter() - began,
                record.get("eval_mse"),
                resumed_from,
            )
        )

    history = loop.run(batches, end_epoch, on_batch=on_batch, on_epoch=on_epoch)
    info_meta = {"id": config.weights_id(), "seed": config.seed}
    digest = save_safetensors(net.state_dict(), paths["weights"], info_meta)
    final = history[-1] if history else {}
    extra: dict[str, Any] = {}
    if "eval_mse" in final:
        extra = {
            "eval_mse": {k: round(v, 5) for k, v in final["eval_mse"].items()},
            "eval_images": config.eval_limit,
        }
    entry = None
    if classifier is not None:
        entry = build_entry(
            config, classifier, paths["weights"], digest, zoo_path, extra, timesteps
        )
    seconds = time.perf_counter() - began
    record_out = {
        "id": config.weights_id(),
        "denoised_id": config.resolved_id() if classifier is not None else None,
        "config": dataclasses.asdict(config),
        "command": config.command or command_line(config),
        "sha256": digest,
        "objective": "ddpm-eps" if timesteps is not None else "mse",
        "timesteps": timesteps,
        "history": history,
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
    }
    write_json(paths["record"], record_out)
    if entry is not None and zoo_path is not None:
        from rsbench.zoo.files import write_entries

        write_entries(zoo_path, [entry], overwrite=overwrite_entry)
    if not keep_checkpoint:
        paths["checkpoint"].unlink(missing_ok=True)
    emit(DenoiserEvent("done", config.epochs, config.epochs, steps, steps, elapsed=seconds))
    return DenoiserTrainResult(
        config.resolved_id(), paths["weights"], digest, entry, zoo_path, history, seconds
    )


def _classifier(config: DenoiserTrainConfig, zoo: Any) -> Any:
    """The zoo expert named by ``config.classifier`` (``zoo`` default: the default zoo), checked
    to be an expert for the training data's dataset."""
    if zoo is None:
        from rsbench.zoo.registry import load_zoo

        zoo = load_zoo()
    classifier = zoo.get(config.classifier)
    if classifier.kind != "expert":
        raise ConfigError(f"{classifier.id} is a {classifier.kind}; --classifier takes an expert")
    if classifier.dataset != zoo_dataset_name(config.dataset):
        raise ConfigError(
            f"{classifier.id} is for {classifier.dataset}, not {zoo_dataset_name(config.dataset)}"
        )
    return classifier

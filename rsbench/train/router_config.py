"""What determines a router for dual RS: the default recipe, :class:`RouterTrainConfig`, its command
line, and the experts, data and label stage it names.

* **Default recipe** (:data:`DEFAULT_ROUTER_ARCH`, :func:`default_temperature`, ...): what ``rsbench
  train router`` does without options, and why (the notes above :data:`DEFAULT_ROUTER_ARCH`).
* **Config** (:class:`RouterTrainConfig`, :func:`validate_config`, :func:`command_line`,
  :func:`recipe_options`): every field that determines the router weights, checked with one
  ``ConfigError`` per bad value, and the command line that reproduces it.
* **Experts and data** (:func:`load_experts`, :func:`training_data`): zoo experts of one dataset
  (a denoised expert may serve several sigmas), and the training images (the first
  ``train_images`` or the given ``indices``).
* **Label stage of a config** (:func:`compute_labels`, :func:`label_plan`): the ``[N, K]`` label
  radii (:func:`rsbench.train.router_labels.label_radii`, cached) and, without labelling anything,
  its cost per expert (``--dry-run``).

Imports ``errors``, ``train.common``, ``train.router_labels``; lazily ``data``, ``denoised``,
``models``, ``noise``, ``smoothing``, ``zoo``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rsbench.errors import ConfigError, check_alpha_router_fraction, check_count, check_sigma
from rsbench.train.common import OptimizerConfig, zoo_dataset_name
from rsbench.train.router_labels import (
    LABEL_ALPHA,
    LABEL_CHUNK,
    LABEL_N,
    LABEL_N0,
    LABEL_RADII,
    LabelBudget,
    Progress,
    default_label_cache,
    label_dir,
    label_key,
    label_radii,
    read_label_cache,
)

log = logging.getLogger(__name__)

#: images labelled by default (the first ones in canonical order); see the module docstring
DEFAULT_TRAIN_IMAGES = 20_000

#: The default router recipe (``rsbench train router`` without options). Chosen so that a router
#: over experts nobody here trained does not collapse to one expert on a small label set (measured
#: on 600 embedded Fashion-MNIST images labelled by the s0.25 and s1.00 embedded experts, best-expert
#: labels 28% / 72%, held-out 400 images; the figures are in results/dual-embedded.md's notes):
#:
#: * temperature ``None`` = :data:`DEFAULT_TEMPERATURE_SCALE` x the largest expert sigma. Label radii
#:   scale with sigma (at ``n = 100`` at most 1.5 sigma), so at ``T = 1`` an image whose best expert
#:   is the small sigma gets a nearly flat target (0.375 vs 0.3: 52% / 48%) while an image whose best
#:   expert is the large sigma gets a clear one (0.3 vs 1.5: 23% / 77%); even with the 1/q class
#:   weights the best *constant* output then picks the largest sigma, and a router that has not yet
#:   learned to tell images apart sits there (it collapsed with lambda = eta = 0 too). A temperature
#:   of 5% of the radius scale makes the targets follow the best expert.
#: * :data:`DEFAULT_ROUTER_ARCH` ``pooled_mlp``: under ``sigma_router`` noise a router only needs
#:   coarse features; 4x4 average pooling divides the noise's standard deviation by 4 before the
#:   first layer, so it learns the choice from few images (the experts' ``fmnist_cnn`` as router
#:   still collapsed at 20 epochs, 60 steps, and needed 600 steps to learn it), and it costs almost
#:   nothing next to an expert when certifying. ``--arch`` picks another (e.g. ``cifar_resnet20``).
#: * ``batch_size = 64`` (4x the optimiser steps of 256 for the same compute) and ``lr = 3e-3``.
#: * epochs ``None`` = :func:`default_epochs`: 20, or more on a small set so that the router takes at
#:   least :data:`MIN_STEPS` optimiser steps (400 labelled images at batch 64 give 120 steps in 20
#:   epochs; for training seeds 0 / 1 / 2 that left s0.25 with 15 / 13 / 7% of the choices, the last
#:   a collapse by the 90% rule; with 500 steps 22 / 17 / 16%). On the 18,105 kept images of the
#:   embedded set 20 epochs are 5,660 steps, so nothing changes there.
#:
#: ``lambda = 40``, ``eta = 0.5`` (the paper's) stay.
DEFAULT_ROUTER_ARCH = "pooled_mlp"
DEFAULT_TEMPERATURE_SCALE = 0.05
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 3e-3
DEFAULT_EPOCHS = 20
MIN_STEPS = 500

#: What the router looks at (``--router-input``; :mod:`rsbench.models.router_input`): ``pixels`` (a
#: network on the noisy image, the default and every router before this option), ``experts`` (a
#: head over all the experts' outputs on the same noisy copy), ``experts-top`` (over the
#: largest-sigma expert only), ``denoised`` (a pixel network behind the frozen one-shot denoiser of
#: a ``denoised`` zoo entry, ``--denoiser``, at ``sigma_router``).
#: The head sees the experts' softmax by default (``features``): on held-out embedded training
#: images it was 0-2.7 points above log-softmax at r <= 0.75 and within 0.7 points of it beyond
#: (results/router-variants.md, section "Issue 24").
TRAINABLE_ROUTER_INPUTS = ("pixels", "experts", "experts-top", "denoised")
#: router inputs whose network is a pixel network (``--arch`` e.g. ``pooled_mlp``), not a head
PIXEL_ROUTER_INPUTS = ("pixels", "denoised")
#: the default head of a router over experts (``--arch``)
DEFAULT_HEAD_ARCH = "head_mlp"
#: The noise purpose of router training (:mod:`rsbench.engine.noise`): ``router-training``, the
#: router's own, so a router and a denoiser trained with the same dataset, split, epoch and seed
#: never share noise (issue 23 item 8). Routers trained before it drew from ``training``; their
#: recorded commands reproduce them with ``--training-noise training`` (their recipe says so).
TRAINING_NOISE = ("router-training", "training")
DEFAULT_TRAINING_NOISE = "router-training"
#: Per-image loss weights: ``inverse`` (the paper's ``1 / q_k`` of the image's best expert, so every
#: expert carries the same total weight) or ``none`` (all 1: the router follows the label shares and
#: is more concentrated on the majority expert, which keeps its own radius up where that expert's
#: radius is large).
CLASS_WEIGHTINGS = ("inverse", "none")


def default_epochs(images: int, batch_size: int) -> int:
    """The default number of epochs: :data:`DEFAULT_EPOCHS`, or enough epochs of ``images``
    training images in batches of ``batch_size`` for :data:`MIN_STEPS` optimiser steps."""
    steps = max(1, math.ceil(images / batch_size))
    return max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / steps))


def default_temperature(sigmas: Sequence[float]) -> float:
    """The default soft-target temperature: :data:`DEFAULT_TEMPERATURE_SCALE` x ``max(sigmas)``."""
    return round(DEFAULT_TEMPERATURE_SCALE * max(float(s) for s in sigmas), 12)


@dataclass(frozen=True)
class RouterTrainConfig:
    """Everything that determines the router (plus where the data and labels come from).

    ``experts``: zoo ids (one dataset); the router's output ``k`` selects ``experts[k]``.
    ``sigmas``: certify sigma per expert (default each expert's ``train_sigma``); labels and the dual
    entry use them. ``dataset``/``split``: the data to label and train on (default the experts'
    dataset, ``train``); ``train_images`` keeps the first ones (``None``: all; capped at the split's
    size); ``indices``, when given, names the images instead (positions in the split). ``arch``:
    the router architecture (default :data:`DEFAULT_ROUTER_ARCH`); its input layer is the first
    expert's. ``lam``, ``eta``, ``copies``, ``temperature``: see :func:`router_loss` and
    :func:`soft_targets`; ``temperature`` ``None`` is :func:`default_temperature` of the sigmas
    (:meth:`resolved` fills it and ``arch`` in); ``epochs`` ``None`` is :func:`default_epochs` of
    the kept training images (:meth:`with_epochs_for`).
    """

    experts: tuple[str, ...]
    router_id: str | None = None
    dual_id: str | None = None
    sigma_router: float = 1.0
    sigmas: tuple[float, ...] | None = None
    arch: str | None = None
    label_n0: int = LABEL_N0
    label_n: int = LABEL_N
    label_alpha: float = LABEL_ALPHA
    label_radius: str = "bound"
    train_images: int | None = DEFAULT_TRAIN_IMAGES
    indices: tuple[int, ...] | None = None
    temperature: float | None = None
    lam: float = 40.0
    eta: float = 0.5
    copies: int = 2
    epochs: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    optimizer: str = "adam"
    lr: float = DEFAULT_LR
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    seed: int = 0
    dataset: str | None = None
    split: str = "train"
    alpha_router_fraction: float = 0.5
    data_root: str | None = None
    device: str = "cpu"
    label_cache: str | None = None
    label_chunk: int = LABEL_CHUNK
    label_batch_size: int = 2000
    command: str | None = None
    router_input: str = "pixels"
    features: str = "softmax"
    training_noise: str = DEFAULT_TRAINING_NOISE
    class_weighting: str = "inverse"
    #: ``router_input = denoised`` only: the ``denoised`` zoo entry whose denoiser the router
    #: looks through (at ``sigma_router``)
    denoiser: str | None = None

    def budget(self) -> LabelBudget:
        """The label stage's budget (its seed is the training seed)."""
        return LabelBudget(self.label_n0, self.label_n, self.label_alpha, self.seed)

    def resolved(self, sigmas: Sequence[float]) -> RouterTrainConfig:
        """This config with its automatic defaults filled in for experts at ``sigmas``: ``arch``
        (:data:`DEFAULT_ROUTER_ARCH`) and ``temperature`` (:func:`default_temperature`)."""
        default_arch = (
            DEFAULT_ROUTER_ARCH if self.router_input in PIXEL_ROUTER_INPUTS else DEFAULT_HEAD_ARCH
        )
        return dataclasses.replace(
            self,
            arch=self.arch or default_arch,
            temperature=(
                default_temperature(sigmas) if self.temperature is None else self.temperature
            ),
        )

    def with_epochs_for(self, images: int) -> RouterTrainConfig:
        """This config with ``epochs`` filled in (:func:`default_epochs`) for ``images`` kept
        training images, when not given."""
        if self.epochs is not None:
            return self
        return dataclasses.replace(self, epochs=default_epochs(images, self.batch_size))

    def resolved_ids(self) -> tuple[str, str]:
        """(router id, dual id): given, or the experts' common id prefix + ``-router`` / ``-dual``."""
        prefix = os.path.commonprefix(list(self.experts)).rstrip("-_.")
        prefix = re.sub(r"[-_]s\d*\.?\d*$", "", prefix).rstrip("-_.") or "router"
        if self.experts and prefix == self.experts[0] and len(self.experts) > 1:
            prefix = "router"
        router_id = self.router_id or f"{prefix}-router"
        dual_id = self.dual_id or (
            router_id[: -len("-router")] + "-dual"
            if router_id.endswith("-router")
            else f"{router_id}-dual"
        )
        return router_id, dual_id

    def determining(self) -> dict[str, Any]:
        """The fields that determine the router weights (a resumed run must match them)."""
        skip = {"data_root", "device", "label_cache", "label_chunk", "label_batch_size", "command"}
        if self.indices is None:  # only when set: older checkpoints keep their key
            skip.add("indices")
        if self.label_radius == "bound":
            skip.add("label_radius")
        if self.router_input == "pixels":  # older checkpoints keep their key
            skip.update({"router_input", "features"})
        if self.router_input == "denoised":  # features are a head's
            skip.add("features")
        if self.denoiser is None:
            skip.add("denoiser")
        if self.training_noise == "training":
            skip.add("training_noise")
        if self.class_weighting == "inverse":
            skip.add("class_weighting")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def validate_router_input(config: RouterTrainConfig) -> None:
    """The router input (its denoiser or head), features, class weights and training noise of
    ``config``: every check that needs neither the experts nor the data, so a caller that trains
    something else first (``rsbench train finetune``) refuses a mistake before any work."""
    from rsbench.zoo.entry import ROUTER_FEATURES, ROUTER_HEADS

    if config.router_input not in TRAINABLE_ROUTER_INPUTS:
        raise ConfigError(
            f"router input {config.router_input!r} is not one of "
            f"{', '.join(TRAINABLE_ROUTER_INPUTS)}"
        )
    if config.router_input == "denoised" and not config.denoiser:
        raise ConfigError(
            "--router-input denoised needs --denoiser, a denoised zoo entry (e.g. "
            "embedded-fmnist-ddpm or embedded-fmnist-denoised)"
        )
    if config.router_input != "denoised" and config.denoiser:
        raise ConfigError(
            f"--denoiser is for --router-input denoised, not {config.router_input}; drop it"
        )
    if config.router_input == "denoised" and config.arch in ROUTER_HEADS:
        raise ConfigError(
            f"--arch {config.arch} is a head over experts; a denoised router takes a pixel "
            "network (e.g. pooled_mlp, fmnist_cnn)"
        )
    if config.features not in ROUTER_FEATURES:
        raise ConfigError(
            f"router features {config.features!r} are not one of {', '.join(ROUTER_FEATURES)}"
        )
    if (
        config.router_input not in PIXEL_ROUTER_INPUTS
        and config.arch
        and config.arch not in ROUTER_HEADS
    ):
        raise ConfigError(
            f"--arch {config.arch} is a pixel network; a router over experts takes a head: "
            f"{', '.join(ROUTER_HEADS)}"
        )
    if config.class_weighting not in CLASS_WEIGHTINGS:
        raise ConfigError(
            f"class weights {config.class_weighting!r} are not one of {', '.join(CLASS_WEIGHTINGS)}"
        )
    if config.training_noise not in TRAINING_NOISE:
        raise ConfigError(
            f"training noise {config.training_noise!r} is not one of {', '.join(TRAINING_NOISE)}"
        )


def validate_config(config: RouterTrainConfig) -> None:
    """Raise :class:`ConfigError` for the first setting of ``config`` that is not allowed."""
    if len(config.experts) < 2:
        raise ConfigError(
            f"got {len(config.experts)} expert(s); a router chooses between at least 2 experts"
        )
    if len(set(config.experts)) != len(config.experts):
        pairs = list(zip(config.experts, config.sigmas or [None] * len(config.experts)))
        if config.sigmas is None or len(set(pairs)) != len(pairs):
            raise ConfigError(
                f"experts {list(config.experts)} repeat an id; an expert may repeat only at "
                "different --sigmas (a denoised expert serving several sigmas)"
            )
    check_sigma(config.sigma_router, "sigma_router")
    validate_router_input(config)
    if config.sigmas is not None:
        if len(config.sigmas) != len(config.experts):
            raise ConfigError(
                f"got {len(config.sigmas)} sigmas for {len(config.experts)} experts; give one per expert"
            )
        for s in config.sigmas:
            check_sigma(s, "expert sigma")
    config.budget().check()
    if config.label_radius not in LABEL_RADII:
        raise ConfigError(
            f"label radius {config.label_radius!r} is not one of {', '.join(LABEL_RADII)}"
        )
    if config.temperature is not None:
        check_sigma(config.temperature, "temperature")
    if config.copies < 2 or int(config.copies) != config.copies:
        raise ConfigError(f"copies={config.copies!r} is not allowed; use m >= 2 noisy copies")
    if not (config.lam >= 0 and config.eta >= 0):
        raise ConfigError(f"lambda={config.lam} and eta={config.eta} must be >= 0")
    if config.epochs is not None:
        check_count(config.epochs, "epochs")
    check_count(config.batch_size, "batch_size")
    OptimizerConfig.of(config).check(example_lr="3e-3")
    if config.train_images is not None:
        check_count(config.train_images, "train_images")
    check_alpha_router_fraction(config.alpha_router_fraction)


def command_line(config: RouterTrainConfig) -> str:
    """An ``rsbench train router`` command that reproduces ``config`` (output paths excluded)."""
    router_id, dual_id = config.resolved_ids()
    parts = ["rsbench train router", *config.experts]
    parts += [f"--id {router_id}", f"--dual-id {dual_id}"]
    return " ".join(parts) + " " + recipe_options(config)


def recipe_options(config: RouterTrainConfig) -> str:
    """The command-line options of ``config``'s router recipe (no experts, ids or paths)."""
    parts = [f"--sigma-router {config.sigma_router:g}"]
    if config.sigmas is not None:
        parts += [f"--sigmas {','.join(f'{s:g}' for s in config.sigmas)}"]
    if config.arch:
        parts.append(f"--arch {config.arch}")
    parts += [
        f"--label-n0 {config.label_n0}",
        f"--label-n {config.label_n}",
        f"--label-alpha {config.label_alpha:g}",
        *([f"--label-radius {config.label_radius}"] if config.label_radius != "bound" else []),
        (
            f"--indices {indices_text(config.indices)}"
            if config.indices is not None
            else f"--train-images {config.train_images if config.train_images is not None else 'all'}"
        ),
        *([f"--temperature {config.temperature:g}"] if config.temperature is not None else []),
        f"--lambda {config.lam:g}",
        f"--eta {config.eta:g}",
        f"--copies {config.copies}",
        *([f"--epochs {config.epochs}"] if config.epochs is not None else []),
        f"--batch-size {config.batch_size}",
        f"--optimizer {config.optimizer}",
        f"--lr {config.lr:g}",
        f"--weight-decay {config.weight_decay:g}",
        f"--schedule {config.schedule}",
        f"--seed {config.seed}",
    ]
    if config.optimizer == "sgd":
        parts.append(f"--momentum {config.momentum:g}")
    if config.schedule == "step":
        parts += [f"--step-size {config.step_size}", f"--gamma {config.gamma:g}"]
    if config.router_input == "denoised":
        parts += ["--router-input denoised", f"--denoiser {config.denoiser}"]
    elif config.router_input != "pixels":
        parts += [f"--router-input {config.router_input}", f"--features {config.features}"]
    if config.class_weighting != "inverse":
        parts.append(f"--class-weights {config.class_weighting}")
    if config.training_noise != DEFAULT_TRAINING_NOISE:
        parts.append(f"--training-noise {config.training_noise}")
    if config.dataset:
        parts.append(f"--dataset {config.dataset}")
    if config.split != "train":
        parts.append(f"--split {config.split}")
    if config.alpha_router_fraction != 0.5:
        parts.append(f"--alpha-router-fraction {config.alpha_router_fraction:g}")
    if config.data_root:
        parts.append(f"--data-root {shlex.quote(str(config.data_root))}")
    return " ".join(parts)


def indices_text(indices: Sequence[int]) -> str:
    """Compact ``--indices`` text: ``start:stop:step`` for an arithmetic run, else a comma list in
    which runs of 3 or more consecutive indices are ``start:stop``; in the same order."""
    values = [int(i) for i in indices]
    if len(values) >= 2:
        step = values[1] - values[0]
        if step > 0 and all(b - a == step for a, b in zip(values, values[1:])):
            return f"{values[0]}:{values[-1] + 1}" + (f":{step}" if step != 1 else "")
    parts, start = [], 0
    for end in range(1, len(values) + 1):  # runs of consecutive indices become start:stop
        if end == len(values) or values[end] != values[end - 1] + 1:
            run = values[start:end]
            if len(run) >= 3:
                parts.append(f"{run[0]}:{run[-1] + 1}")
            else:
                parts += [str(v) for v in run]
            start = end
    return ",".join(parts)


# ------------------------------------------------------------------------------------------------
# experts and data


@dataclass
class LoadedExperts:
    """Expert entries, their loaded models, weights digests and certify sigmas."""

    entries: list[Any]
    models: list[nn.Module]
    sha256: list[str]
    sigmas: tuple[float, ...]

    @property
    def dataset(self) -> str:
        return self.entries[0].dataset


def check_experts(entries: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` unless the entries are experts of one dataset, classes and shape."""
    for e in entries:
        if e.kind not in ("expert", "denoised"):
            raise ConfigError(f"{e.id} is a {e.kind} entry; a router chooses between experts")
    datasets = {e.dataset for e in entries}
    if len(datasets) > 1:
        listed = ", ".join(f"{e.id} ({e.dataset})" for e in entries)
        raise ConfigError(
            f"the experts do not share a dataset: {listed}; a router needs experts of one dataset"
        )
    shapes = {(e.num_classes, tuple(e.input_shape or ())) for e in entries}
    if len(shapes) > 1:
        listed = ", ".join(
            f"{e.id} ({e.num_classes} classes, {list(e.input_shape)})" for e in entries
        )
        raise ConfigError(f"the experts differ in classes or input shape: {listed}")


def load_experts(
    zoo,
    expert_ids: Sequence[str],
    sigmas: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> LoadedExperts:
    """Look up, check (:func:`check_experts`) and load the experts; sigmas default to train_sigma.

    A denoised expert needs its sigma in ``sigmas`` (one of those it serves); listed at several
    sigmas it is loaded once and serves each with shared networks.
    """
    from rsbench.models.denoised import check_served, serve
    from rsbench.models.loading import load_model

    entries = [zoo.get(i) for i in expert_ids]
    check_experts(entries)
    if not sigmas:
        denoised = [e.id for e in entries if e.kind == "denoised"]
        if denoised:
            raise ConfigError(
                f"{denoised[0]} is a denoised expert serving several sigmas; pass --sigmas"
            )
    chosen = tuple(float(s) for s in sigmas) if sigmas else tuple(e.train_sigma for e in entries)
    loaded: dict[str, nn.Module] = {}
    models = []
    for e, sigma in zip(entries, chosen):
        if e.kind == "denoised":
            check_served(e.id, e.sigmas or (), sigma)
        if e.id not in loaded:
            loaded[e.id] = load_model(e, device, cache_dir=cache_dir)
        models.append(serve(loaded[e.id], sigma))
    shas = [str(m.weights_sha256) for m in models]
    return LoadedExperts(entries, models, shas, chosen)


def expert_names(experts: Sequence[str], sigmas: Sequence[float]) -> list[str]:
    """Display names of the router's outputs: the ids, or ``id@sigma`` where an id repeats."""
    repeated = {e for e in experts if list(experts).count(e) > 1}
    return [f"{e}@{s:g}" if e in repeated else e for e, s in zip(experts, sigmas)]


def router_input_layer(entry) -> dict[str, Any]:
    """The input layer a router takes from its first expert; for a denoised expert, that of its
    classifier."""
    if entry.kind == "denoised":
        spec = entry.classifier or {}
        layer = spec.get("input_layer") or {"type": "none"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in layer.items()}
    return entry.input_layer.to_dict()


def training_data(config: RouterTrainConfig, zoo_dataset: str):
    """The dataset to label and train on, and the indices used (the first ``train_images``)."""
    from rsbench.data.dataset import load_dataset

    name = config.dataset or zoo_dataset
    if zoo_dataset_name(name) != zoo_dataset:
        raise ConfigError(
            f"dataset {name!r} does not match the experts' dataset {zoo_dataset!r}; "
            "label and train on the experts' own data"
        )
    data = load_dataset(name, config.split, root=config.data_root)
    if config.indices is not None:
        from rsbench.data.indices import select_indices

        return data, select_indices(len(data), indices=list(config.indices))
    if config.split != "train" and (
        config.train_images is None or config.train_images >= len(data)
    ):
        raise ConfigError(
            f"router training on {name}/{config.split} would label every one of its {len(data)} "
            "images, the evaluation images too; name the images with --indices (or a smaller "
            "--train-images); certifying a dual on them is then refused"
        )
    count = len(data) if config.train_images is None else min(config.train_images, len(data))
    if config.train_images is not None and config.train_images > len(data):
        log.info(
            "train_images=%d capped at %s/%s's %d images",
            config.train_images,
            name,
            config.split,
            len(data),
        )
    return data, list(range(count))


def trained_on(data, indices: Sequence[int]) -> dict[str, str]:
    """The router entry's ``trained_on``: the source dataset, split and source indices (text) of
    the images ``indices`` of ``data`` (e.g. ``fashion-mnist`` / ``test`` for the embedded subset),
    every image that was labelled (and so could be trained on)."""
    source = getattr(data, "source_indices", None)
    positions = [int(i) for i in indices]
    values = [int(source[i]) for i in positions] if source is not None else positions
    return {
        "dataset": str(getattr(data, "source_name", None) or data.name),
        "split": str(data.split),
        "indices": indices_text(sorted(values)),
    }


def compute_labels(
    config: RouterTrainConfig,
    experts: LoadedExperts,
    data,
    indices: Sequence[int],
    progress: Progress | None = None,
) -> np.ndarray:
    """``[N, K]`` label radii of ``indices`` (cached; see :func:`label_radii`)."""
    cache = Path(config.label_cache) if config.label_cache else default_label_cache()
    columns = []
    for k, (entry, model) in enumerate(zip(experts.entries, experts.models)):
        columns.append(
            label_radii(
                model,
                entry.id,
                experts.sha256[k],
                experts.sigmas[k],
                entry.num_classes,
                data,
                indices,
                config.budget(),
                cache_dir=cache,
                chunk_size=config.label_chunk,
                batch_size=config.label_batch_size,
                progress=progress,
                expert_index=k,
                experts=len(experts.entries),
                radius_kind=config.label_radius,
            )
        )
    return np.stack(columns, axis=1)


def label_plan(
    config: RouterTrainConfig,
    zoo=None,
    zoo_paths: Sequence[str | os.PathLike] = (),
    cache_dir: str | os.PathLike | None = None,
    probe_seconds: float = 0.5,
) -> list[dict[str, Any]]:
    """What the label stage of ``config`` would cost, without labelling anything.

    Per expert: images wanted, already cached, to compute, forward samples to draw
    (``missing * (n0 + n)``), the measured throughput of a short probe (noisy samples per second on
    one training image, this machine, now) and the resulting time estimate in seconds. Loads the
    experts (fetching weights that are not cached) and the training data.
    """
    from rsbench.engine.noise import noise_keys
    from rsbench.engine.smoothing import SmoothedClassifier
    from rsbench.zoo.registry import load_zoo

    validate_config(config)
    zoo = zoo if zoo is not None else load_zoo(zoo_paths)
    experts = load_experts(zoo, config.experts, config.sigmas, config.device, cache_dir)
    data, indices = training_data(config, experts.dataset)
    cache = Path(config.label_cache) if config.label_cache else default_label_cache()
    wanted = set(int(i) for i in indices)
    plan = []
    probe = data.images([indices[0]])
    for k, (entry, model) in enumerate(zip(experts.entries, experts.models)):
        key = label_key(
            entry.id, experts.sha256[k], experts.sigmas[k], config.budget(), data.name, data.split
        )
        folder = label_dir(cache, key)
        cached = len(wanted & set(read_label_cache(folder).index.tolist()))
        missing = len(wanted) - cached
        smoothed = SmoothedClassifier(
            model, entry.num_classes, experts.sigmas[k], batch_size=config.label_batch_size
        )
        keys = noise_keys(data.name, data.split, [0], "label-select", config.seed)
        num = max(1, min(config.label_batch_size, 2000))
        smoothed.votes(probe, num, keys)  # warm-up
        drawn, began = 0, time.perf_counter()
        while time.perf_counter() - began < probe_seconds or drawn == 0:
            smoothed.votes(probe, num, keys)
            drawn += num
        rate = drawn / (time.perf_counter() - began)
        samples = missing * (config.label_n0 + config.label_n)
        plan.append(
            {
                "expert": entry.id,
                "sigma": experts.sigmas[k],
                "images": len(wanted),
                "cached": cached,
                "missing": missing,
                "samples": samples,
                "samples_per_second": rate,
                "seconds": samples / rate if rate > 0 else math.nan,
            }
        )
    return plan

"""Router training for dual randomized smoothing (Sun, Mao & Vechev, ICLR 2026), over any zoo experts:
the loss, the training loop and the router + dual entries it writes.

The "routing over off-the-shelf experts" view: experts ``E_1..E_K`` (zoo entries of one dataset)
certify at their own noise levels ``sigma_k``; a router network with ``K`` outputs learns, under
noise ``sigma_router``, which expert certifies each image best. Three modules, one direction:

* :mod:`rsbench.train.router_labels`: label radii ``R_k(x)`` (cached), targets and class weights;
* :mod:`rsbench.train.router_config`: the default recipe, :class:`RouterTrainConfig`, experts, data
  and the label stage of a config;
* this module, the fitting:

3. **Loss** (:func:`router_loss`) on ``m >= 2`` Gaussian copies of each image at ``sigma_router``:
   ``mean_i w_i * mean_j CE(y_i, p_ij) + lambda * mean_i mean_j KL(pbar_i || p_ij) + eta *
   mean_i H(pbar_i)`` where ``p_ij = softmax(router(x_i + d_ij))`` and ``pbar_i = mean_j p_ij``
   (Jeong & Shin's consistency regulariser; paper defaults ``lambda = 40``, ``eta = 0.5``, ``m = 2``,
   ``sigma_router = 1.0``).
4. **Training** (:func:`fit_router`, :func:`train_router`): seeded and deterministic like
   :mod:`rsbench.train.expert` (epoch ``e``'s order and noise come from ``(seed, e)`` alone),
   checkpointed after every epoch and resumable (same weights bit for bit on the same device,
   threads and versions). The router is any zoo architecture with ``K`` outputs (default
   :data:`~rsbench.train.router_config.DEFAULT_ROUTER_ARCH`; the input layer is the first expert's).
   Outputs: ``<out>/<router id>.safetensors`` (the net's state dict), ``<out>/<router id>.train.json``
   and, with a zoo file, a ``router`` entry (experts, ``train_sigma = sigma_router``, recipe with the
   label budget, options and exact command, sha256) and a ``dual`` entry (router, experts, sigmas,
   ``sigma_router``, ``alpha_router_fraction``).

Cost: labels as in :mod:`rsbench.train.router_labels`; training took 22 s for the embedded router (an
``mlp`` router; a ``fmnist_cnn`` router takes about 4 s per epoch of 17,000 images). With the default
``pooled_mlp`` router and 20 epochs (at least 500 steps) the whole run stays around 5-10 minutes on two shared cores.

The library never prints: progress goes to an optional callback receiving
:class:`~rsbench.train.router_labels.RouterEvent`. Imports ``device``, ``errors``, ``noise``,
``train.common`` and the two router modules; lazily ``models``, ``zoo``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rsbench.engine import device as D
from rsbench.engine.noise import NOISE_SCHEME
from rsbench.errors import ConfigError
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
)
from rsbench.train.router_config import (
    DEFAULT_ROUTER_ARCH,
    LoadedExperts,
    RouterTrainConfig,
    command_line,
    compute_labels,
    expert_names,
    load_experts,
    router_input_layer,
    trained_on,
    training_data,
    validate_config,
)
from rsbench.train.router_labels import (
    Progress,
    RouterEvent,
    best_expert,
    class_weights,
    collapse_message,
    keep_mask,
    label_summary,
    soft_targets,
)

log = logging.getLogger(__name__)


def router_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    lam: float = 40.0,
    eta: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The router loss on ``m`` noisy copies: ``logits [m, B, K]``, ``targets [B, K]``, ``weights [B]``.

    ``mean_i w_i mean_j CE(y_i, p_ij) + lam * mean_i mean_j KL(pbar_i || p_ij) + eta * mean_i
    H(pbar_i)``, with ``p_ij = softmax(logits[j, i])`` and ``pbar_i = mean_j p_ij``. Returns the
    loss and its parts (``ce``, ``kl``, ``entropy``) as floats.
    """
    if logits.dim() != 3 or logits.shape[1:] != targets.shape:
        raise ConfigError(
            f"logits {list(logits.shape)} must be [copies, batch, K] with targets {list(targets.shape)}"
        )
    log_p = torch.log_softmax(logits, dim=-1)  # [m, B, K]
    ce = -(targets.unsqueeze(0) * log_p).sum(-1).mean(0)  # [B]
    p_bar = log_p.exp().mean(0)  # [B, K]
    log_p_bar = torch.log(p_bar.clamp_min(1e-12))
    kl = (p_bar.unsqueeze(0) * (log_p_bar.unsqueeze(0) - log_p)).sum(-1).mean(0)  # [B]
    entropy = -(p_bar * log_p_bar).sum(-1)  # [B]
    ce_term = (weights * ce).mean()
    loss = ce_term + lam * kl.mean() + eta * entropy.mean()
    parts = {
        "ce": float(ce_term.detach()),
        "kl": float(kl.mean().detach()),
        "entropy": float(entropy.mean().detach()),
    }
    return loss, parts


@dataclass
class RouterTrainResult:
    """What :func:`train_router` wrote."""

    router_id: str
    dual_id: str
    weights: Path
    sha256: str
    router_entry: Any  # rsbench.zoo.registry.ZooEntry
    dual_entry: Any
    zoo_file: Path | None
    label_stats: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------
# entries


def build_router_entries(
    config: RouterTrainConfig,
    experts: LoadedExperts,
    weights: Path,
    sha256: str | None,
    zoo_file: Path | None,
    recipe: dict[str, Any] | None = None,
    trained: dict[str, str] | None = None,
    denoised: dict[str, Any] | None = None,
):
    """(router entry, dual entry) for ``config``'s router at ``weights`` (validated by the zoo parser).

    ``trained`` is the router's ``trained_on`` (:func:`rsbench.train.router_config.trained_on`);
    ``denoised`` the ``router_input`` of a denoised router (:func:`denoised_input`).
    """
    from rsbench.zoo.parse import parse_entry

    router_id, dual_id = config.resolved_ids()
    first = experts.entries[0]
    expert_ids = [e.id for e in experts.entries]
    fed = input_experts(config, experts)
    input_layer = router_input_layer(first) if not fed else {"type": "none"}
    names = expert_names(expert_ids, experts.sigmas)  # id@sigma where an id repeats
    router_raw = {
        "id": router_id,
        "kind": "router",
        "dataset": first.dataset,
        "description": (
            f"dual-RS router over {', '.join(names)}, trained by rsbench under noise "
            f"sigma_router {config.sigma_router:g} on {config.dataset or first.dataset}/{config.split}"
        ),
        "num_classes": len(expert_ids),
        "input_shape": list(first.input_shape),
        "arch": config.arch or DEFAULT_ROUTER_ARCH,
        "train_sigma": float(config.sigma_router),
        "experts": expert_ids,
        "input_layer": input_layer,
        **({"router_input": router_input_spec(config, experts)} if fed else {}),
        **({"router_input": dict(denoised)} if denoised else {}),
        **({"trained_on": dict(trained)} if trained else {}),
        "source": weights_source(weights, zoo_file),
        "sha256": sha256,
        "license": "weights: MIT (rsbench); training data: see the experts' entries",
        "paper": "Sun, Mao, Vechev. Dual Randomized Smoothing: Beyond Global Noise Variance. ICLR 2026",
        "recipe": recipe or {},
    }
    dual_raw = {
        "id": dual_id,
        "kind": "dual",
        "dataset": first.dataset,
        "description": f"dual RS: router {router_id} picks one of {', '.join(names)}",
        "router": router_id,
        "experts": expert_ids,
        "sigmas": list(experts.sigmas),
        "sigma_router": float(config.sigma_router),
        "alpha_router_fraction": float(config.alpha_router_fraction),
        "num_classes": int(first.num_classes),
        "paper": "Sun, Mao, Vechev. Dual Randomized Smoothing: Beyond Global Noise Variance. ICLR 2026",
    }
    return parse_entry(router_raw, file=zoo_file), parse_entry(dual_raw, file=zoo_file)


def input_experts(config: RouterTrainConfig, experts: LoadedExperts) -> list[int]:
    """Positions of the experts that feed a router over experts (``[]`` for a pixel router):
    all of them (``experts``) or the largest-sigma one (``experts-top``; the last of equals)."""
    if config.router_input == "experts":
        return list(range(len(experts.entries)))
    if config.router_input == "experts-top":
        top = max(experts.sigmas)
        return [max(k for k, s in enumerate(experts.sigmas) if s == top)]
    return []


def router_input_spec(config: RouterTrainConfig, experts: LoadedExperts) -> dict[str, Any]:
    """The router entry's ``router_input`` mapping for ``config``."""
    fed = input_experts(config, experts)
    spec: dict[str, Any] = {
        "type": config.router_input,
        "experts": [experts.entries[k].id for k in fed],
    }
    if any(experts.entries[k].kind == "denoised" for k in fed):
        spec["sigmas"] = [float(experts.sigmas[k]) for k in fed]
    spec["features"] = config.features
    return spec


def denoised_input(
    config: RouterTrainConfig,
    zoo: Any,
    experts: LoadedExperts,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """(the loaded denoiser, the router entry's ``router_input``) of a denoised router: the
    denoiser of ``config.denoiser`` at ``sigma_router`` and its identity; ``forwards`` (1.0 here) is
    filled in by :func:`train_router` once the network is built. An unknown or non-denoised
    ``--denoiser``, one of another dataset or one that does not serve ``sigma_router`` is a
    :class:`~rsbench.errors.ZooError`."""
    from rsbench.models.router_input import load_named_denoiser

    router_id, _ = config.resolved_ids()
    denoiser, identity, _ = load_named_denoiser(
        router_id,
        str(config.denoiser),
        float(config.sigma_router),
        zoo,
        experts.dataset,
        config.device,
        cache_dir,
    )
    spec = {
        "type": "denoised",
        "denoiser": str(config.denoiser),
        "sigma": float(config.sigma_router),
        "denoiser_identity": identity,
        "forwards": 1.0,
    }
    return denoiser, spec


def build_router_model(
    config: RouterTrainConfig, experts: LoadedExperts, entry: Any, device: str
) -> nn.Module:
    """The untrained router network of router ``entry``: ``InputLayer + net`` for a pixel router, an
    :class:`~rsbench.models.router_input.ExpertsRouter` (loaded experts, random head) otherwise."""
    from rsbench.models.network import build_model

    fed = input_experts(config, experts)
    if not fed:
        return build_model(entry).to(device)
    from rsbench.models.router_input import build_router

    models = [experts.models[k].to(device) for k in fed]
    return build_router(entry, models, len(experts.entries))


def trainable(model: nn.Module) -> nn.Module:
    """The part of a router that trains and is saved: the head of a router over experts, else the
    network behind the input layer."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        return head
    net = getattr(model, "net", None)  # a DenoisedRouter: the network behind the denoiser
    return net[1] if isinstance(net, nn.Sequential) else model[1]  # type: ignore[index]


def _recipe(config: RouterTrainConfig, experts: LoadedExperts, stats: dict[str, Any]) -> dict:
    return {
        "trainer": "rsbench train router (dual RS, Sun, Mao & Vechev 2026)",
        "command": config.command or command_line(config),
        "experts": [e.id for e in experts.entries],
        "expert_sha256": list(experts.sha256),
        "sigmas": list(experts.sigmas),
        "labels": {
            "n0": config.label_n0,
            "n": config.label_n,
            "alpha": config.label_alpha,
            "seed": config.seed,
            "dataset": config.dataset or experts.dataset,
            "split": config.split,
            "images": stats.get("images"),
            "indices": stats.get("indices"),
            "kept": stats.get("kept"),
            "best_share": stats.get("best_share"),
        },
        "sigma_router": config.sigma_router,
        "router_input": config.router_input,
        **(
            {"features": config.features}
            if config.router_input not in ("pixels", "denoised")
            else {}
        ),
        **({"denoiser": config.denoiser} if config.router_input == "denoised" else {}),
        "training_noise": config.training_noise,
        "temperature": config.temperature,
        "lambda": config.lam,
        "eta": config.eta,
        "class_weights": config.class_weighting,
        "copies": config.copies,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "schedule": config.schedule,
        "seed": config.seed,
        "torch": str(torch.__version__),
    }


def _check_ids_free(zoo_file: Path | None, ids: Sequence[str], overwrite: bool) -> None:
    from rsbench.errors import ZooError
    from rsbench.zoo.files import read_zoo_file

    if zoo_file is None or overwrite or not zoo_file.exists():
        return
    existing = {e.id for e in read_zoo_file(zoo_file)}
    clash = [i for i in ids if i in existing]
    if clash:
        raise ZooError(
            f"{zoo_file}: entry {clash[0]!r} already exists; pick another --id / --dual-id or pass --overwrite"
        )


# ------------------------------------------------------------------------------------------------
# training


def fit_router(
    config: RouterTrainConfig,
    model: nn.Module,
    images: torch.Tensor,
    radii: np.ndarray,
    checkpoint: Path | None = None,
    key: str = "",
    resume: bool = True,
    progress: Progress | None = None,
    dataset: str | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` (InputLayer + net with K outputs, or a router over frozen experts whose head
    alone trains) on kept ``images`` and their label ``radii``.

    ``config`` must be resolved (:meth:`RouterTrainConfig.resolved`). ``images`` ``[N, C, H, W]``
    in [0, 1] and ``radii`` ``[N, K]`` are the kept rows of ``dataset`` (default
    ``config.dataset``) / ``config.split``. Epoch ``e`` draws its order and noise from the
    ``config.training_noise`` stream (default ``router-training``, the router's own) of
    :class:`rsbench.engine.noise.NoiseKey` ``(dataset, split, e, seed)``, which no certificate and
    no other trainer draws from; the epochs run in :class:`rsbench.train.common.EpochLoop`, so with
    ``checkpoint`` the state is saved after every epoch and, with ``resume``, restored (a
    checkpoint with another ``key`` is refused). Returns the per-epoch history (loss and its parts,
    agreement with the best expert, the share of each expert among the router's choices, and
    ``collapsed`` when one expert takes more than
    :data:`~rsbench.train.router_labels.COLLAPSE_SHARE` of them).
    """
    from rsbench.engine.noise import UNNAMED_DATASET, NoiseKey

    emit: Progress = progress or _ignore
    if config.temperature is None or config.epochs is None:
        raise ConfigError(
            "fit_router needs a resolved config (RouterTrainConfig.resolved, .with_epochs_for)"
        )
    epochs: int = config.epochs
    device = D.resolve(config.device)
    D.activate(device)
    torch_device = device.torch
    data_name, data_split = dataset or config.dataset or UNNAMED_DATASET, config.split
    targets = torch.as_tensor(soft_targets(radii, config.temperature), dtype=torch.float32)
    weights_np, _ = class_weights(radii)
    if config.class_weighting == "none":
        weights_np = np.ones_like(weights_np)
    weights = torch.as_tensor(weights_np, dtype=torch.float32)
    best = torch.as_tensor(best_expert(radii))
    size, experts = images.shape[0], radii.shape[1]
    steps = math.ceil(size / config.batch_size)
    net = trainable(model)
    optimizer, scheduler = OptimizerConfig.of(config).build(net.parameters(), epochs, steps)
    loop = EpochLoop(
        model,
        optimizer,
        scheduler,
        epochs,
        steps,
        key,
        checkpoint,
        net,
        "router training",
    )
    resumed_from = loop.resume() if resume else None
    names = (
        list(config.experts)
        if len(config.experts) == experts
        else [f"expert {k}" for k in range(experts)]
    )
    began = time.perf_counter()
    emit(
        RouterEvent(
            "train-start",
            epoch=loop.start_epoch,
            epochs=epochs,
            steps=steps,
            total=size,
            resumed_from=resumed_from,
        )
    )
    m = int(config.copies)
    # the epoch's running tallies (filled before each batch's step; reset by batches())
    sums = {"ce": 0.0, "kl": 0.0, "entropy": 0.0}
    tally = {"agree": 0, "seen": 0}
    chosen = torch.zeros(experts, dtype=torch.long)

    def batches(epoch: int) -> Iterator[Step]:
        # epoch e's order and noise: the training stream of (dataset, split, epoch, seed)
        purpose: Any = config.training_noise
        generator = NoiseKey(data_name, data_split, epoch, purpose, config.seed).generator()
        order = torch.randperm(size, generator=generator)
        sums.update(ce=0.0, kl=0.0, entropy=0.0)
        tally.update(agree=0, seen=0)
        chosen.zero_()
        for start in range(0, size, config.batch_size):
            idx = order[start : start + config.batch_size]
            x = images[idx]
            noise = torch.randn((m, *x.shape), generator=generator) * config.sigma_router
            noisy = (x.unsqueeze(0) + noise).reshape(m * len(idx), *x.shape[1:]).to(torch_device)
            logits = model(noisy).reshape(m, len(idx), -1)
            loss, parts = router_loss(
                logits,
                targets[idx].to(torch_device),
                weights[idx].to(torch_device),
                config.lam,
                config.eta,
            )
            b = len(idx)
            for name, value in parts.items():
                sums[name] += value * b
            choice = torch.softmax(logits.detach(), -1).mean(0).argmax(-1).cpu()
            tally["agree"] += int((choice == best[idx]).sum())
            chosen.add_(torch.bincount(choice, minlength=experts))
            tally["seen"] += b
            yield Step(loss, b)

    def on_batch(tick: Tick) -> None:
        emit(
            RouterEvent(
                "batch",
                epoch=tick.epoch,
                epochs=epochs,
                step=tick.step,
                steps=steps,
                loss=tick.loss,
                agreement=tally["agree"] / tally["seen"],
                lr=tick.lr,
                elapsed=time.perf_counter() - began,
            )
        )

    def end_epoch(epoch: int, loss: float) -> dict[str, Any]:
        seen = tally["seen"]
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": loss}
        record.update({k: v / seen for k, v in sums.items()})
        record["agreement"] = tally["agree"] / seen
        record["choice_share"] = [round(float(c) / seen, 4) for c in chosen]
        record["lr_end"] = optimizer.param_groups[0]["lr"]
        if collapse_message(record["choice_share"], names, ""):
            record["collapsed"] = True
        return record

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        emit(
            RouterEvent(
                "epoch",
                epoch=epoch,
                epochs=epochs,
                step=steps,
                steps=steps,
                loss=record["loss"],
                agreement=record["agreement"],
                lr=record["lr_end"],
                elapsed=time.perf_counter() - began,
                resumed_from=resumed_from,
            )
        )

    history = loop.run(batches, end_epoch, on_batch, on_epoch)
    model.eval()
    return history


def _ignore(event: RouterEvent) -> None:
    """The progress callback when none is given."""


def train_router(
    config: RouterTrainConfig,
    out_dir: str | os.PathLike,
    zoo_file: str | os.PathLike | None = None,
    zoo=None,
    zoo_paths: Sequence[str | os.PathLike] = (),
    resume: bool = True,
    keep_checkpoint: bool = False,
    overwrite_entries: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> RouterTrainResult:
    """Label, train and write a router over ``config.experts``, plus its router and dual entries.

    ``zoo`` (a :class:`rsbench.zoo.registry.Zoo`) or ``zoo_paths`` (extra zoo files for :func:`load_zoo`)
    resolve the experts; ``cache_dir`` is the weights cache. Entry ids already in ``zoo_file`` are
    refused before any work unless ``overwrite_entries``. Raises :class:`ConfigError` for bad
    settings or experts of different datasets, :class:`~rsbench.errors.ZooError` for unknown ids or
    clashes, :class:`~rsbench.errors.WeightsError` for a checkpoint of another configuration.
    """
    from rsbench.zoo.files import write_entries
    from rsbench.zoo.registry import load_zoo

    validate_config(config)
    began = time.perf_counter()
    router_id, dual_id = config.resolved_ids()
    zoo_path = Path(zoo_file).expanduser() if zoo_file is not None else None
    _check_ids_free(zoo_path, [router_id, dual_id], overwrite_entries)
    zoo = zoo if zoo is not None else load_zoo(zoo_paths)
    experts = load_experts(zoo, config.experts, config.sigmas, config.device, cache_dir)
    denoiser, denoised = None, None
    if config.router_input == "denoised":  # checked before any labelling
        denoiser, denoised = denoised_input(config, zoo, experts, cache_dir)
    config = config.resolved(experts.sigmas)
    data, indices = training_data(config, experts.dataset)
    label_began = time.perf_counter()
    radii = compute_labels(config, experts, data, indices, progress)
    label_seconds = time.perf_counter() - label_began
    stats = label_summary(radii, expert_names(config.experts, experts.sigmas))
    stats["seconds"] = round(label_seconds, 2)
    trained = trained_on(data, indices)
    stats["indices"] = trained["indices"]
    warning = collapse_message(list(stats["best_share"].values()), config.experts, "labels")
    if warning:  # once per run, before training
        log.warning("%s", warning)
        stats["collapsed"] = True
        if progress is not None:
            progress(RouterEvent("warning", message=warning))
    keep = keep_mask(radii)
    if not keep.any():
        raise ConfigError(
            f"none of the {len(indices)} training images is certified by any expert; "
            "check the experts and their sigmas"
        )
    config = config.with_epochs_for(int(keep.sum()))
    kept_indices = [i for i, k in zip(indices, keep) if k]
    images = data.images(kept_indices)

    paths = paths_for(out_dir, router_id)
    entry, _ = build_router_entries(
        config, experts, paths["weights"], None, zoo_path, denoised=denoised
    )
    torch.manual_seed(config.seed)
    model = build_router_model(config, experts, entry, config.device)
    if denoiser is not None and denoised is not None:
        from rsbench.models.router_input import DenoisedRouter, denoised_router_forwards

        model = DenoisedRouter(denoiser.to(D.as_torch(config.device)), model, config.sigma_router)
        denoised["forwards"] = denoised_router_forwards(
            model, experts.models, experts.entries[0].input_shape
        )
    key_data = {
        **config.determining(),
        "expert_sha256": experts.sha256,
        "noise_scheme": NOISE_SCHEME,
        "device_type": D.device_type(config.device),
    }
    key = config_key(key_data)
    train_began = time.perf_counter()
    history = fit_router(
        config,
        model,
        images,
        radii[keep],
        paths["checkpoint"],
        key,
        resume,
        progress,
        dataset=str(getattr(data, "source_name", None) or data.name),
    )
    train_seconds = time.perf_counter() - train_began
    if history and not stats.get("collapsed"):  # a label collapse explains a router's already
        final = history[-1]
        warning = collapse_message(final["choice_share"], config.experts, "training")
        if warning:  # once per run, after the last epoch
            log.warning("%s", warning)
            if progress is not None:
                progress(RouterEvent("warning", epoch=len(history), message=warning))

    info = {"id": router_id, "sigma_router": config.sigma_router, "seed": config.seed}
    digest = save_safetensors(trainable(model).state_dict(), paths["weights"], info)
    recipe = _recipe(config, experts, stats)
    if history:
        recipe["final_agreement"] = round(float(history[-1]["agreement"]), 4)
    router_entry, dual_entry = build_router_entries(
        config, experts, paths["weights"], digest, zoo_path, recipe, trained, denoised
    )
    seconds = time.perf_counter() - began
    run_record = {
        "id": router_id,
        "dual_id": dual_id,
        "config": dataclasses.asdict(config),
        "command": config.command or command_line(config),
        "sha256": digest,
        "labels": stats,
        "history": history,
        "label_seconds": round(label_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
    }
    write_json(paths["record"], run_record)
    if zoo_path is not None:
        write_entries(zoo_path, [router_entry, dual_entry], overwrite=overwrite_entries)
    if not keep_checkpoint:
        paths["checkpoint"].unlink(missing_ok=True)
    (progress or _ignore)(RouterEvent("done", epochs=config.epochs or 0, elapsed=seconds))
    return RouterTrainResult(
        router_id,
        dual_id,
        paths["weights"],
        digest,
        router_entry,
        dual_entry,
        zoo_path,
        stats,
        history,
        seconds,
    )

"""Co-training for dual randomized smoothing: one round of expert fine-tuning, then a new router.

After a router is trained (:mod:`rsbench.train.router`), DESIGN §3 and the paper (Sun, Mao &
Vechev, ICLR 2026) fine-tune the classifier(s) on the noise level the router assigns to each
training image, then relabel and retrain the router; one round is enough. Here, for a ``dual``
zoo entry:

1. **Assignment**: each training image goes to the expert the router picks under noise: the argmax
   of the router's softmax averaged over ``assign_copies`` Gaussian copies at the dual's
   ``sigma_router`` (seeded per image by its dataset index). This is the router's noisy argmax, a
   cheap stand-in for the smoothed choice (which would cost ``n0 + n`` draws per image); an image
   whose certified router choice differs from it is rare at the images that matter.
2. **Fine-tuning**: each expert whose weights are our own (a ``file`` or ``package`` source, so a
   new version can be written next to it) and that received at least one image is fine-tuned at its
   certify sigma with Gaussian noise augmentation on its assigned images. To keep what it already
   knows, every batch mixes a ``replay`` share (default half) of other training images (the
   expert's original data, outside its assignment), the learning rate is small (Adam, 2e-4) and the
   round is short (2 epochs over the assigned images). Experts with remote weights, or that the
   router never picks, are kept unchanged.
3. **Router**: labels are recomputed for the new experts (the label cache keys on the weights'
   sha256, so unchanged experts reuse their labels) and a new router is trained from scratch with
   the given router recipe.

Outputs are NEW entries (``<id><suffix>``, default ``-ct``) for the fine-tuned experts, the router
and the dual model; existing entries are never overwritten. A rerun after an interruption reuses the
fine-tuned experts it already wrote (same configuration), then resumes the router.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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

from rsbench.errors import ConfigError, ZooError, check_count
from rsbench.train.common import (
    EpochLoop,
    OptimizerConfig,
    Step,
    epoch_seed,
    save_safetensors,
    weights_source,
)
from rsbench.train.router import RouterTrainResult, train_router
from rsbench.train.router_config import RouterTrainConfig, training_data, validate_router_input
from rsbench.train.router_labels import Progress, RouterEvent

log = logging.getLogger(__name__)

#: sources whose weights are local files we can write a new version next to
OWN_SOURCES = ("file", "package")


@dataclass(frozen=True)
class FinetuneConfig:
    """One co-training round of the dual entry ``dual_id``.

    ``router`` is the recipe of the new router (its ``experts``, ids and the dual's sigmas are
    filled in here); its ``dataset``, ``split``, ``train_images``, ``seed`` and ``device`` also
    choose the images that are assigned and fine-tuned on. ``epochs``, ``lr``, ``batch_size``,
    ``replay``: expert fine-tuning (see the module docstring). ``assign_copies``: noisy copies
    averaged for the router's assignment.
    """

    dual_id: str
    router: RouterTrainConfig = field(default_factory=lambda: RouterTrainConfig(experts=()))
    suffix: str = "-ct"
    epochs: int = 2
    lr: float = 2e-4
    batch_size: int = 128
    replay: float = 0.5
    assign_copies: int = 8
    command: str | None = None

    def expert_key(self, expert_id: str, sha256: str) -> str:
        """Digest of everything that determines one fine-tuned expert."""
        router = self.router
        data = {
            "expert": expert_id,
            "sha256": sha256,
            "dual": self.dual_id,
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "replay": self.replay,
            "assign_copies": self.assign_copies,
            "seed": router.seed,
            "dataset": router.dataset,
            "split": router.split,
            "train_images": router.train_images,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass
class FinetuneResult:
    """What :func:`finetune_dual` wrote: old -> new expert ids, assignment shares, the new router."""

    experts: dict[str, str]
    assignment_share: dict[str, float]
    router: RouterTrainResult
    expert_entries: list[Any] = field(default_factory=list)
    seconds: float = 0.0


def _validate(config: FinetuneConfig) -> None:
    check_count(config.epochs, "fine-tuning epochs")
    check_count(config.batch_size, "fine-tuning batch size")
    check_count(config.assign_copies, "assign copies")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise ConfigError(f"lr={config.lr!r} is not allowed; use a small learning rate, e.g. 2e-4")
    if not 0.0 <= config.replay < 1.0:
        raise ConfigError(f"replay={config.replay!r} must lie in [0, 1) (0.5: half of each batch)")
    if not config.suffix or not config.suffix.strip("-_."):
        raise ConfigError(f"suffix={config.suffix!r} is empty; new ids need a suffix such as -ct")
    validate_router_input(config.router)  # before the experts' fine-tuning, not after it


def command_line(config: FinetuneConfig) -> str:
    """An ``rsbench train finetune`` command that reproduces ``config`` (output paths excluded)."""
    from rsbench.train.router_config import recipe_options

    return (
        f"rsbench train finetune {config.dual_id} --suffix {config.suffix} "
        f"--ft-epochs {config.epochs} --ft-lr {config.lr:g} --ft-batch-size {config.batch_size} "
        f"--replay {config.replay:g} --assign-copies {config.assign_copies} "
        + recipe_options(config.router)
    )


@torch.no_grad()
def assign_images(
    router: nn.Module,
    images_of,
    indices: Sequence[int],
    sigma_router: float,
    copies: int,
    seed: int,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    dataset: str = "unnamed",
    split: str = "train",
) -> np.ndarray:
    """Expert index per image: argmax of the router's softmax averaged over ``copies`` noisy copies.

    ``images_of(list_of_indices)`` returns ``[B, C, H, W]`` images in [0, 1]. Image ``i``'s noise
    comes from the ``router-assign`` stream of the sample ``(dataset, split, i)`` and ``seed``
    (:class:`rsbench.engine.noise.NoiseKey`), so the answer does not depend on batching, and no
    certificate draws from that stream.
    """
    from rsbench.engine.noise import NoiseKey

    router.eval()
    out = np.empty(len(indices), dtype=np.int64)
    for start in range(0, len(indices), batch_size):
        chunk = [int(i) for i in indices[start : start + batch_size]]
        images = images_of(chunk)
        noise = torch.stack(
            [
                torch.randn(
                    (copies, *images.shape[1:]),
                    generator=NoiseKey(dataset, split, i, "router-assign", seed).generator(),
                )
                for i in chunk
            ],
            dim=1,
        )  # [copies, B, C, H, W]
        noisy = (images.unsqueeze(0) + noise * sigma_router).reshape(-1, *images.shape[1:])
        probs = torch.softmax(router(noisy.to(device)).float(), -1).reshape(copies, len(chunk), -1)
        out[start : start + len(chunk)] = probs.mean(0).argmax(-1).cpu().numpy()
    return out


def finetune_expert(
    model: nn.Sequential,
    data,
    assigned: Sequence[int],
    others: Sequence[int],
    sigma: float,
    epochs: int,
    lr: float,
    batch_size: int,
    replay: float,
    seed: int,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    name: str = "",
) -> list[dict[str, float]]:
    """Fine-tune ``model`` in place with noise ``sigma`` on ``assigned`` plus a ``replay`` share of ``others``.

    Each epoch visits every assigned image once, in a seeded order, in batches of
    ``round(batch_size * (1 - replay))`` assigned images plus enough images drawn at random from
    ``others`` to fill ``batch_size``. Adam at ``lr``, constant. Returns per-epoch loss / accuracy.
    """
    emit = progress or (lambda event: None)
    assigned_t = torch.as_tensor(list(assigned), dtype=torch.long)
    others_t = torch.as_tensor(list(others), dtype=torch.long)
    own = max(1, round(batch_size * (1.0 - replay))) if len(others_t) else batch_size
    extra = batch_size - own if len(others_t) else 0
    steps = math.ceil(len(assigned_t) / own)
    recipe = OptimizerConfig(optimizer="adam", lr=lr, weight_decay=0.0, schedule="constant")
    optimizer, scheduler = recipe.build(model.parameters(), epochs, steps)
    what = f"fine-tuning {name}"
    loop = EpochLoop(
        model, optimizer, scheduler, epochs, steps, key="", what=what, hint="lower --ft-lr"
    )
    loss_fn = nn.CrossEntropyLoss()
    correct = seen = 0  # this epoch's noisy training predictions that are right, and images
    began = time.perf_counter()
    emit(RouterEvent("finetune-start", expert=name, epochs=epochs, steps=steps))

    def batches(epoch: int) -> Iterator[Step]:
        nonlocal correct, seen
        correct = seen = 0
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = assigned_t[torch.randperm(len(assigned_t), generator=generator)]
        for start in range(0, len(order), own):
            idx = order[start : start + own]
            if extra:
                pick = torch.randint(0, len(others_t), (extra,), generator=generator)
                idx = torch.cat([idx, others_t[pick]])
            images, labels = data.images(idx), data.labels[idx]
            noisy = images + torch.randn(images.shape, generator=generator) * sigma
            logits = model(noisy.to(device))
            correct += int((logits.argmax(1).cpu() == labels).sum())
            seen += len(idx)
            yield Step(loss_fn(logits, labels.to(device)), len(idx))

    def event(phase: str, epoch: int, step: int, loss: float) -> RouterEvent:
        elapsed = time.perf_counter() - began
        return RouterEvent(
            phase,
            expert=name,
            epoch=epoch,
            epochs=epochs,
            step=step,
            steps=steps,
            loss=loss,
            agreement=correct / seen,
            elapsed=elapsed,
        )

    history = loop.run(
        batches,
        lambda epoch, loss: {"epoch": epoch + 1, "loss": loss, "noisy_accuracy": correct / seen},
        on_batch=lambda tick: emit(event("finetune-batch", tick.epoch, tick.step, tick.loss)),
        on_epoch=lambda epoch, record: emit(event("finetune-epoch", epoch, steps, record["loss"])),
    )
    model.eval()
    return history


def _new_id(old: str, suffix: str) -> str:
    return old + suffix


def finetune_dual(
    config: FinetuneConfig,
    out_dir: str | os.PathLike,
    zoo_file: str | os.PathLike,
    zoo_paths: Sequence[str | os.PathLike] = (),
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> FinetuneResult:
    """One co-training round of ``config.dual_id`` (see the module docstring); new entries only.

    New expert entries go into ``zoo_file`` before the router is retrained; a rerun reuses those
    whose recipe carries the same fine-tuning key. Any other id clash raises
    :class:`~rsbench.errors.ZooError` (existing entries are never overwritten).
    """

    from rsbench.models.loading import load_model
    from rsbench.run.runconfig import dual_values
    from rsbench.zoo.files import read_zoo_file, write_entries
    from rsbench.zoo.parse import parse_entry
    from rsbench.zoo.registry import load_zoo

    _validate(config)
    began = time.perf_counter()
    emit = progress or (lambda event: None)
    zoo_path = Path(zoo_file).expanduser()
    out = Path(out_dir).expanduser()
    zoo = load_zoo([*zoo_paths, zoo_path] if zoo_path.exists() else zoo_paths)
    dual = zoo.get(config.dual_id)
    if dual.kind != "dual":
        raise ConfigError(f"{dual.id} is a {dual.kind} entry; finetune needs a dual entry")
    router_entry = zoo.get(dual.router or "")
    experts = [zoo.get(i) for i in dual.experts]
    dual_sigmas, sigma_router, _ = dual_values(dual, zoo)
    sigmas = config.router.sigmas or dual_sigmas
    if len(sigmas) != len(experts):
        raise ConfigError(f"got {len(sigmas)} sigmas for the {len(experts)} experts of {dual.id}")
    new_router_id = _new_id(router_entry.id, config.suffix)
    new_dual_id = _new_id(dual.id, config.suffix)
    existing = {e.id: e for e in read_zoo_file(zoo_path)} if zoo_path.exists() else {}
    for taken in (new_router_id, new_dual_id):
        if taken in zoo or taken in existing:
            raise ZooError(
                f"entry {taken!r} already exists; co-training writes new ids only: pass another --suffix"
            )

    template = dataclasses.replace(config.router, experts=tuple(e.id for e in experts))
    data, indices = training_data(template, experts[0].dataset)
    router_model = load_model(router_entry, template.device, cache_dir=cache_dir)
    emit(RouterEvent("assign", total=len(indices)))
    choice = assign_images(
        router_model,
        data.images,
        indices,
        sigma_router,
        config.assign_copies,
        template.seed,
        device=template.device,
        dataset=str(getattr(data, "source_name", None) or data.name),
        split=data.split,
    )
    share = {
        e.id: round(float((choice == k).mean()), 4) if len(choice) else 0.0
        for k, e in enumerate(experts)
    }
    emit(RouterEvent("assign-done", total=len(indices), done=len(indices)))

    mapping: dict[str, str] = {}
    new_entries = []
    for k, entry in enumerate(experts):
        assigned = [i for i, c in zip(indices, choice) if c == k]
        if entry.source is None or entry.source.type not in OWN_SOURCES or not assigned:
            why = "remote weights" if assigned else "no image assigned"
            log.info("keeping %s unchanged (%s)", entry.id, why)
            mapping[entry.id] = entry.id
            continue
        new_id = _new_id(entry.id, config.suffix)
        model = load_model(entry, template.device, cache_dir=cache_dir)
        if not isinstance(model, nn.Sequential):  # not input layer + network (e.g. denoised)
            log.info("keeping %s unchanged (a %s, not one network)", entry.id, entry.kind)
            mapping[entry.id] = entry.id
            continue
        key = config.expert_key(entry.id, str(model.weights_sha256))
        previous = existing.get(new_id) or (zoo.get(new_id) if new_id in zoo else None)
        if previous is not None:
            if (previous.recipe or {}).get("finetune_key") != key:
                raise ZooError(
                    f"entry {new_id!r} already exists with another recipe; "
                    "co-training writes new ids only: pass another --suffix"
                )
            mapping[entry.id] = new_id
            continue
        assigned_set = set(assigned)
        others = [i for i in indices if i not in assigned_set]
        history = finetune_expert(
            model,
            data,
            assigned,
            others,
            sigmas[k],
            config.epochs,
            config.lr,
            config.batch_size,
            config.replay,
            seed=template.seed + 1000 * (k + 1),
            device=template.device,
            progress=progress,
            name=entry.id,
        )
        weights = out / f"{new_id}.safetensors"
        info = {"id": new_id, "finetuned_from": entry.id}
        digest = save_safetensors(model[1].state_dict(), weights, info)
        raw = entry.to_yaml_dict()
        raw.pop("reported", None)
        raw.update(
            id=new_id,
            description=f"{entry.id} co-trained with router {router_entry.id} (one round, rsbench)",
            source=weights_source(weights, zoo_path),
            sha256=digest,
            recipe={
                "trainer": "rsbench train finetune (dual-RS co-training, one round)",
                "command": config.command or command_line(config),
                "finetuned_from": entry.id,
                "finetuned_from_sha256": str(model.weights_sha256),
                "router": router_entry.id,
                "assignment": "argmax of the router's mean softmax over noisy copies",
                "assign_copies": config.assign_copies,
                "assigned_images": len(assigned),
                "train_images": len(indices),
                "sigma": sigmas[k],
                "epochs": config.epochs,
                "lr": config.lr,
                "optimizer": "adam",
                "batch_size": config.batch_size,
                "replay": config.replay,
                "seed": template.seed,
                "final_loss": round(history[-1]["loss"], 4),
                "finetune_key": key,
            },
        )
        new_entry = parse_entry(raw, file=zoo_path)
        write_entries(zoo_path, [new_entry])
        new_entries.append(new_entry)
        mapping[entry.id] = new_id

    router_config = dataclasses.replace(
        template,
        experts=tuple(mapping[e.id] for e in experts),
        sigmas=tuple(sigmas),
        router_id=new_router_id,
        dual_id=new_dual_id,
        command=config.command or command_line(config),
    )
    zoo = load_zoo([*zoo_paths, zoo_path])
    router = train_router(
        router_config,
        out,
        zoo_file=zoo_path,
        zoo=zoo,
        cache_dir=cache_dir,
        progress=progress,
    )
    return FinetuneResult(mapping, share, router, new_entries, seconds=time.perf_counter() - began)

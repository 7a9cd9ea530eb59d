"""Building and probing certifiers: the smoothed model of a resolved run, and its cost.

:func:`certifier_for` loads every network of a :class:`~rsbench.run.runconfig.RunConfig` (through
:func:`rsbench.models.loading.load_model`), probes each on a real image (:func:`probe`: a wrong ``arch``
or ``input_shape`` is one :class:`~rsbench.errors.ConfigError` before any run directory is
written) and wraps them as a :class:`~rsbench.engine.smoothing.SmoothedClassifier`,
:class:`~rsbench.engine.dual.DualSmoothed` or :class:`~rsbench.engine.cascade.CascadeSmoothed` with the values of
the config (never resolved again here). :func:`measure_throughput` and :func:`estimate_seconds`
give the ``--dry-run`` cost estimate.

Imports torch, the zoo, the models and the engine lazily.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any, TypeVar

from rsbench.engine import device as D
from rsbench.errors import ConfigError
from rsbench.run.runconfig import RunConfig

if TYPE_CHECKING:
    import torch

    from rsbench.zoo.entry import ZooEntry
    from rsbench.zoo.registry import Zoo

T = TypeVar("T")


def entry_input_shape(entry: ZooEntry, zoo: Zoo) -> tuple[int, ...] | None:
    """The image shape ``[C, H, W]`` the networks of ``entry`` take (a composition's: its first
    expert's), or None when the entry does not say."""
    if entry.kind in ("dual", "cascade"):
        return tuple(zoo.get(entry.experts[0]).input_shape or ()) or None
    return tuple(entry.input_shape) if entry.input_shape else None


def entry_num_classes(entry: ZooEntry, zoo: Zoo) -> int:
    """The number of classes ``entry`` predicts (a composition: its own, else its first expert's)."""
    value = entry.num_classes
    if entry.kind in ("dual", "cascade"):
        value = value or zoo.get(entry.experts[0]).num_classes
    if value is None:
        raise ConfigError(f"{entry.id} has no num_classes; add it to its zoo entry")
    return int(value)


def _required(value: T | None, name: str, config: RunConfig) -> T:
    """A value :func:`~rsbench.run.runconfig.resolve_config` always sets for ``config``'s kind."""
    if value is None:
        raise ConfigError(
            f"the {config.kind} run config of {config.model_id} has no {name}; build it with "
            "rsbench.run.runconfig.resolve_config"
        )
    return value


def certifier_for(
    config: RunConfig,
    zoo: Zoo,
    device: str,
    *,
    probe_image: Any = None,
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    weights_progress: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """The smoothed model of a resolved ``config`` (a :class:`~rsbench.engine.smoothing.SmoothedClassifier`,
    :class:`~rsbench.engine.dual.DualSmoothed` or :class:`~rsbench.engine.cascade.CascadeSmoothed`) with its
    networks loaded on ``device``, and its provenance. Every value it certifies with (sigma(s),
    sigma_router, alpha split, p0) comes from ``config`` (:func:`resolve_config`, the one place
    they are resolved). ``probe_image`` (a ``[1, C, H, W]`` batch): each network is run on it once
    and its output checked first."""
    from rsbench.models.loading import load_model
    from rsbench.zoo.entry import entry_digest

    entry = zoo.get(config.model_id)
    shape = entry_input_shape(entry, zoo)
    kwargs = dict(
        batch_size=config.batch_size,
        precision=config.precision,
        input_shape=shape,
        channels_last=config.channels_last,
        device=D.as_torch(device),
        noise_dtype=config.noise_dtype,
    )

    def load(e: ZooEntry, sigma: float | None = None) -> tuple[Any, dict[str, Any]]:
        model = load_model(
            e,
            device=device,
            cache_dir=cache_dir,
            require_pinned=require_pinned,
            progress=weights_progress,
            sigma=sigma,
            zoo=zoo,  # a router over experts loads them from this zoo
        )
        return model, {
            "id": e.id,
            "entry": e.to_yaml_dict(),
            "entry_digest": entry_digest(e),
            "weights_sha256": getattr(model, "weights_sha256", None),
            "weights_pinned": getattr(model, "weights_pinned", None),
        }

    def checked(e: ZooEntry, model: Any) -> Any:
        if probe_image is not None:
            probe(model, probe_image, e.num_classes, what=e.id, device=device, arch=e.arch)
        return for_speed(model, config)

    if config.kind == "expert":
        from rsbench.engine.smoothing import SmoothedClassifier

        model, info = load(entry, config.sigma)
        model = checked(entry, model)
        sigma = _required(config.sigma, "sigma", config)
        smoothed = SmoothedClassifier(model, entry_num_classes(entry, zoo), sigma, **kwargs)
        return smoothed, {
            "zoo_entry": info["entry"],
            "zoo_entry_digest": info["entry_digest"],
            "models": [info],
        }
    if config.kind == "cascade":
        from rsbench.engine.cascade import CascadeSmoothed
        from rsbench.models.denoised import serve

        stages = []
        infos: dict[str, tuple[Any, dict[str, Any]]] = {}
        for expert_id, sigma in zip(config.expert_ids, config.sigmas):
            if expert_id not in infos:  # a denoised expert serves several stages
                infos[expert_id] = load(zoo.get(expert_id))
            stages.append(checked(zoo.get(expert_id), serve(infos[expert_id][0], sigma)))
        cascade = CascadeSmoothed(
            stages,
            config.sigmas,
            entry_num_classes(entry, zoo),
            p0=_required(config.p0, "p0", config),
            alpha_split=_required(config.alpha_split, "alpha_split", config),
            **kwargs,
        )
        return cascade, {
            "zoo_entry": entry.to_yaml_dict(),
            "zoo_entry_digest": entry_digest(entry),
            "models": [info for _, info in infos.values()],
        }
    from rsbench.engine.dual import DualSmoothed

    router_entry = zoo.get(_required(config.router_id, "router_id", config))
    router, router_info = load(router_entry)
    router = checked(router_entry, router)
    from rsbench.models.denoised import serve

    loaded: dict[str, tuple[Any, dict[str, Any]]] = {}
    served = []  # one base model per (expert, sigma); a denoised expert shares its networks
    for expert_id, sigma in zip(config.expert_ids, config.sigmas):
        if expert_id not in loaded:
            loaded[expert_id] = load(zoo.get(expert_id))
        served.append(checked(zoo.get(expert_id), serve(loaded[expert_id][0], sigma)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dual = DualSmoothed(
            router,
            served,
            config.sigmas,
            _required(config.sigma_router, "sigma_router", config),
            entry_num_classes(entry, zoo),
            alpha_router_fraction=_required(
                config.alpha_router_fraction, "alpha_router_fraction", config
            ),
            **kwargs,
        )
    models = [router_info] + [loaded[e][1] for e in dict.fromkeys(config.expert_ids)]
    return dual, {
        "zoo_entry": entry.to_yaml_dict(),
        "zoo_entry_digest": entry_digest(entry),
        "models": models,
    }


def for_speed(model: Any, config: RunConfig) -> Any:
    """``model`` in channels-last memory format and/or compiled, as ``config`` asks.

    The engine compiles with ``dynamic=False`` and pads partial batches to a few fixed sizes
    (:func:`rsbench.engine.device.compile_model`), so a run compiles each network a handful of times.
    """
    import torch

    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.compile:
        model = D.compile_model(model)
    return model


def probe(
    model: Any,
    images: Any,
    num_classes: int | None,
    *,
    what: str,
    device: str = "cpu",
    arch: str | None = None,
) -> None:
    """One forward pass on real ``images``; :class:`ConfigError` when the network cannot take them.

    Catches a wrong ``arch``/``input_shape`` before any run directory is written, as one line.
    """
    import torch

    shape = list(images.shape[1:])
    try:
        with torch.no_grad():
            logits = model(D.to_device(images, device))
    except Exception as exc:  # noqa: BLE001 - a user's forward may raise anything (AssertionError...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(
            f"{what}: the network fails on a {shape} image ({type(exc).__name__}: {first}); check the "
            f"entry's arch{f' ({arch})' if arch else ''} and input_shape"
        ) from None
    if logits.dim() != 2 or (num_classes is not None and logits.shape[1] != int(num_classes)):
        raise ConfigError(
            f"{what}: the network returns shape {list(logits.shape)} for a {shape} image; expected "
            f"[batch, {num_classes}] logits (check num_classes and arch)"
        )


def samples_per_image(config: RunConfig) -> int:
    """Forward samples one certificate costs at most (dual: router plus one expert; cascade: every
    stage)."""
    per_stage = config.n0 + config.n
    if config.kind == "cascade":
        return per_stage * max(1, len(config.sigmas))
    return per_stage * (2 if config.kind == "dual" else 1)


def measure_throughput(certifier: Any, image: torch.Tensor, seconds: float = 1.0) -> float:
    """Noisy samples per second of ``certifier`` on one ``image``: after a warm-up (at least
    three calls and a quarter of ``seconds``: the first calls of a process pay for allocation,
    thread start-up and kernel selection, which once made the first model's estimate 4x too
    slow), the median rate of the calls timed over ``seconds`` (at most 50 calls)."""
    if hasattr(certifier, "experts"):
        expert = certifier.experts[0]
    elif hasattr(certifier, "stages"):
        expert = certifier.stages[0]
    else:
        expert = certifier
    num = max(1, min(expert.batch_size, 2000))
    from rsbench.engine.noise import NoiseKey

    keys = [NoiseKey("throughput", "probe", 0, "select", 0)]  # timing only: no result uses it
    batch = image.unsqueeze(0)
    warm, t0 = 0, time.perf_counter()
    while warm < 3 or (time.perf_counter() - t0 < seconds / 4 and warm < 20):
        expert.votes(batch, num, keys)
        warm += 1
    calls: list[float] = []
    t0 = time.perf_counter()
    while True:
        start = time.perf_counter()
        expert.votes(batch, num, keys)
        calls.append(time.perf_counter() - start)
        if time.perf_counter() - t0 >= seconds or len(calls) >= 50:
            median = sorted(calls)[len(calls) // 2]
            return num / median if median > 0 else float("inf")


def estimate_seconds(config: RunConfig, images: int, throughput: float) -> float:
    """Estimated wall time for ``images`` certificates at ``throughput`` samples per second."""
    if throughput <= 0 or not math.isfinite(throughput):
        return float("nan")
    return images * samples_per_image(config) / throughput


def router_training_images(entry: ZooEntry) -> tuple[str, str, set[int]] | None:
    """``(source dataset, split, source indices)`` a router entry was labelled and trained on, or
    None when the entry does not say.

    From its ``trained_on`` field; for routers written before that field, from the recipe's
    ``labels`` (dataset, split and ``images``: the first ones, as ``--train-images`` took them, or
    the recipe command's ``--indices``).
    """
    from rsbench.data.indices import parse_indices

    if entry.trained_on is not None:
        spec = entry.trained_on
        return str(spec["dataset"]), str(spec["split"]), set(parse_indices(str(spec["indices"])))
    labels = (entry.recipe or {}).get("labels") or {}
    if not labels.get("dataset") or not labels.get("split"):
        return None
    words = str((entry.recipe or {}).get("command", "")).split()
    if "--indices" in words and words.index("--indices") + 1 < len(words):
        indices = set(parse_indices(words[words.index("--indices") + 1]))
    elif labels.get("images"):
        indices = set(range(int(labels["images"])))
    else:
        return None
    dataset = str(labels["dataset"])
    split = str(labels["split"])
    if dataset == "fashion-mnist" and split == "embedded":  # the embedded subset: test images
        split = "test"
    return dataset, split, indices


def check_router_training_overlap(
    config: RunConfig, zoo: Zoo, dataset: Any, positions: Any
) -> None:
    """Refuse to certify a dual model on images its router was labelled or trained on.

    A router's weights depend on its training images (their labels come from the experts'
    certificates on them), so a dual certified on them reports a choice tuned to those very images:
    not a test result. ``dataset`` (an :class:`~rsbench.data.dataset.ImageDataset`) and the
    ``positions`` selected in it name the images; they are compared with the router's
    :func:`router_training_images` in the source dataset's canonical indices (the embedded subset
    is ``fashion-mnist`` test). One :class:`ConfigError` line naming the overlap and the fix.
    """
    if config.kind != "dual" or not config.router_id or config.router_id not in zoo:
        return
    router = zoo.get(config.router_id)
    trained = router_training_images(router)
    if trained is None:
        return
    name, split, indices = trained
    source = str(getattr(dataset, "source_name", None) or dataset.name)
    if (name, split) != (source, str(dataset.split)):
        return
    source_indices = getattr(dataset, "source_indices", None)
    certified = [
        int(source_indices[p]) if source_indices is not None else int(p) for p in positions
    ]
    overlap = sorted(i for i in certified if i in indices)
    if overlap:
        raise ConfigError(
            f"{config.model_id}: its router {router.id} was labelled and trained on {len(overlap)} "
            f"of the {len(certified)} images to certify ({source}/{split} indices {overlap[0]}"
            f"{', ...' if len(overlap) > 1 else ''}); certify other images (--indices) or train "
            "the router on other ones"
        )

"""A zoo model = ``nn.Sequential(InputLayer, net)``, with the checkpoint loaded strictly into ``net``.

Guarantees:

* :class:`InputLayer` maps [0, 1] pixels to the network's input (``normalize``: (x - mean) / std,
  ``center``: x - mean, ``none``: identity). Its mean/std are non-persistent buffers: they follow
  ``.to(device)`` but never appear in a state dict, so ``model.state_dict()`` has exactly the
  Cohen/SmoothAdv layout (``1.<net key>``) and a checkpoint stores ``net.state_dict()``.
* :func:`build_model` builds that Sequential with random weights from a zoo entry.
* :func:`load_network` fetches and verifies the weights (:mod:`rsbench.weights.sources`), loads them
  strictly into the net (a mismatch names the first missing / unexpected / mis-shaped keys), and
  returns the model in eval mode on ``device``, with ``zoo_id``, ``weights_sha256`` and
  ``weights_pinned`` attributes. :func:`rsbench.models.loading.load_model` is the entry point for
  every kind (it sends ``denoised`` entries to :mod:`rsbench.models.denoised`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsbench.errors import WeightsError, ZooError
from rsbench.models.archs import build_architecture
from rsbench.zoo.entry import ZooEntry


class InputLayer(nn.Module):
    """Per-channel input transform applied inside the model, after the noise."""

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor

    def __init__(
        self,
        kind: str = "none",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        if kind not in ("normalize", "center", "none"):
            raise ZooError(f"input layer type {kind!r} is not one of normalize, center, none")
        if kind in ("normalize", "center") and mean is None:
            raise ZooError(f"input layer {kind!r} needs a mean")
        if kind == "normalize" and (std is None or len(std) != len(mean or ())):
            raise ZooError("input layer 'normalize' needs a std with one value per mean value")
        self.kind = kind
        mean_t = torch.tensor(list(mean or ()), dtype=torch.float32).view(-1, 1, 1)
        std_t = torch.tensor(list(std or ()), dtype=torch.float32).view(-1, 1, 1)
        if kind == "normalize" and bool((std_t <= 0).any()):
            raise ZooError(f"input layer std {list(std or ())} has a value <= 0")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        mean = self.mean.to(dtype=x.dtype)
        if self.kind == "center":
            return x - mean
        return (x - mean) / self.std.to(dtype=x.dtype)

    def extra_repr(self) -> str:
        if self.kind == "none":
            return "none"
        out = f"{self.kind}, mean={self.mean.flatten().tolist()}"
        if self.kind == "normalize":
            out += f", std={self.std.flatten().tolist()}"
        return out


def input_layer_for(entry: ZooEntry) -> InputLayer:
    """The entry's :class:`InputLayer`."""
    spec = entry.input_layer
    return InputLayer(spec.type, spec.mean, spec.std)


def build_model(entry: ZooEntry, base_dir: str | os.PathLike | None = None) -> nn.Sequential:
    """``nn.Sequential(InputLayer, net)`` for an expert or router entry, with random weights.

    ``base_dir`` resolves a relative ``path/file.py:callable`` architecture (default: the folder of the
    entry's zoo file).
    """
    if entry.kind in ("dual", "cascade", "denoised"):
        raise ZooError(
            f"{entry.id} is a {entry.kind} entry; it composes other networks: load it with "
            "load_model (denoised), rsbench.engine.dual or rsbench.engine.cascade, not build_model"
        )
    if entry.arch is None or entry.num_classes is None:
        raise ZooError(f"{entry.id}: entry has no arch / num_classes")
    folder = Path(base_dir) if base_dir is not None else entry.base_dir
    net = build_architecture(entry.arch, entry.num_classes, entry.input_shape, base_dir=folder)
    if not isinstance(net, nn.Module):
        raise ZooError(f"{entry.id}: architecture {entry.arch!r} returned {type(net).__name__}")
    return nn.Sequential(input_layer_for(entry), net)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else ()


def check_state_dict(
    net: nn.Module, state_dict: Mapping[str, Any], what: str = "checkpoint", limit: int = 3
) -> None:
    """Raise :class:`WeightsError` unless ``state_dict`` has exactly ``net``'s keys and shapes.

    The message names up to ``limit`` missing, unexpected and mis-shaped keys and the fields to check.
    """
    expected = net.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {_shape(state_dict[k])} vs {_shape(v)}"
        for k, v in expected.items()
        if k in state_dict and _shape(state_dict[k]) != _shape(v)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{label}: {', '.join(items[:limit])}{more}")
    raise WeightsError(
        f"{what} does not match the architecture ({'; '.join(parts)}); check arch, num_classes "
        "and checkpoint.strip_prefix / state_dict_key"
    )


def load_network(
    entry: ZooEntry,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    progress: Any = None,
) -> nn.Module:
    """Fetch, verify and strictly load an ``arch`` entry (an expert, a router or a component of a
    denoised entry); return ``Sequential(InputLayer, net)`` in eval mode on ``device``.

    ``progress`` is ``None`` or a callback (see :data:`rsbench.weights.sources.ProgressCallback`; the
    CLI passes one that draws a bar, the library renders nothing).
    """
    from rsbench.weights import checkpoints, sources

    model = build_model(entry)
    fetched = sources.fetch(
        entry, cache_dir=cache_dir, require_pinned=require_pinned, progress=progress
    )
    state = checkpoints.load_state_dict(fetched.path, entry)
    net = model[1]
    check_state_dict(net, state, what=f"{entry.id}: checkpoint {fetched.path.name}")
    net.load_state_dict(state, strict=True)
    model.eval()
    model.to(device)
    model.zoo_id = entry.id  # type: ignore[attr-defined,assignment]
    model.weights_sha256 = fetched.sha256  # type: ignore[attr-defined,assignment]
    model.weights_pinned = fetched.pinned  # type: ignore[attr-defined,assignment]
    return model


def forward_check(
    model: nn.Module,
    entry: ZooEntry,
    batch: int = 1,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Run ``model`` once on a seeded uniform batch of ``batch`` images of the entry's input shape;
    return the logits.

    Guarantees one line for every failure: an exception raised by the network's code (a user's
    ``file.py:fn`` architecture included: AssertionError, IndexError, ...) is a :class:`ZooError`
    "forward pass failed: <arch>: <ExceptionType>: <first line>"; logits that are not
    ``[batch, num_classes]`` are a :class:`ZooError`; non-finite logits a :class:`WeightsError`.
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((batch, *(entry.input_shape or ())), generator=generator).to(device)
    try:
        with torch.no_grad():
            logits = model(images)
    except Exception as exc:  # noqa: BLE001 - user code: any exception is the entry's failure
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise ZooError(
            f"forward pass failed: {entry.arch}: {detail}; check the architecture's forward, the "
            "entry's input_shape and num_classes"
        ) from None
    shape = tuple(getattr(logits, "shape", ()))
    if shape != (batch, entry.num_classes):
        raise ZooError(f"forward pass gave shape {shape}, expected ({batch}, {entry.num_classes})")
    if not bool(torch.isfinite(logits).all()):
        raise WeightsError("forward pass gave non-finite logits")
    return logits

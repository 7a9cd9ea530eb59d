"""``load_model``: the one entry point from a zoo entry to a ready ``nn.Module``, whatever its kind.

Guarantees: the weights are fetched and verified (:mod:`rsbench.weights.sources`: sha256, strict
load) before the model is returned, in eval mode on ``device``, with ``zoo_id``,
``weights_sha256`` and ``weights_pinned`` attributes. An ``arch`` entry (expert, router) is one
network (:func:`rsbench.models.network.load_network`), but a router whose ``router_input`` is over
the experts is a head over them (:func:`rsbench.models.router_input.load_router`), one whose
``router_input`` is ``denoised`` its network behind a denoised entry's denoiser
(:func:`rsbench.models.router_input.load_denoised_router`); a ``denoised`` entry is its denoiser and
classifier (:mod:`rsbench.models.denoised`), and ``load_model(entry, sigma=s)`` is its base model at
the served sigma ``s``, an ``nn.Module`` like any expert's. Dual and cascade entries are compositions
(:mod:`rsbench.engine.dual`, :mod:`rsbench.engine.cascade`), built by :func:`rsbench.load`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rsbench.errors import ZooError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from rsbench.zoo.entry import ZooEntry


def load_model(
    entry: ZooEntry,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    progress: Any = None,
    sigma: float | None = None,
    zoo: Any = None,
) -> nn.Module:
    """Fetch, verify and strictly load ``entry``; return the model in eval mode on ``device``.

    ``progress`` is ``None`` or a callback (see :data:`rsbench.weights.sources.ProgressCallback`; the
    CLI passes one that draws a bar, the library renders nothing). ``sigma`` matters for
    ``denoised`` entries only: the base model at that served sigma (``None``: the
    :class:`~rsbench.models.denoised.DenoisedExpert`, whose ``at_sigma`` gives it); other entries
    are one network whatever the sigma. ``zoo`` (a :class:`~rsbench.zoo.registry.Zoo`) resolves the
    experts of a router over experts and the denoiser of a denoised router (default: the packaged zoo, ``$RSBENCH_ZOO`` and the entry's
    own file).
    """
    if entry.kind in ("dual", "cascade"):
        raise ZooError(
            f"{entry.id} is a {entry.kind} entry; load it with rsbench.{entry.kind}, not load_model"
        )
    if entry.kind == "denoised":
        from rsbench.models.components import check_served
        from rsbench.models.denoised import load_denoised

        if sigma is not None:
            check_served(entry.id, entry.sigmas or (), sigma)
        expert = load_denoised(
            entry, device, cache_dir=cache_dir, require_pinned=require_pinned, progress=progress
        )
        return expert.at_sigma(sigma) if sigma is not None else expert
    router_input = entry.router_input if entry.kind == "router" else None
    if router_input is not None and router_input.get("type") == "denoised":
        from rsbench.models.router_input import load_denoised_router

        return load_denoised_router(
            entry, _zoo_of(entry, zoo), device, cache_dir, require_pinned, progress
        )
    if router_input is not None and router_input.get("type", "pixels") != "pixels":
        from rsbench.models.router_input import load_router

        experts = _router_experts(entry, device, cache_dir, require_pinned, progress, zoo)
        return load_router(
            entry,
            experts,
            device,
            cache_dir=cache_dir,
            require_pinned=require_pinned,
            progress=progress,
        )
    from rsbench.models.network import load_network

    return load_network(
        entry, device, cache_dir=cache_dir, require_pinned=require_pinned, progress=progress
    )


def _router_experts(entry, device, cache_dir, require_pinned, progress, zoo) -> list:
    """The loaded experts that feed router ``entry`` (its ``router_input.experts``, in order; a
    denoised one served at its ``router_input.sigmas``), resolved in ``zoo`` (default: the packaged
    zoo, ``$RSBENCH_ZOO`` and the entry's own file)."""
    from rsbench.models.denoised import serve

    zoo = _zoo_of(entry, zoo)
    spec = entry.router_input or {}
    ids = list(spec.get("experts") or ())
    sigmas = list(spec.get("sigmas") or [None] * len(ids))
    loaded: dict = {}
    experts = []
    for expert_id, sigma in zip(ids, sigmas):
        expert = zoo.get(expert_id)
        if expert_id not in loaded:
            loaded[expert_id] = load_model(
                expert,
                device,
                cache_dir=cache_dir,
                require_pinned=require_pinned,
                progress=progress,
            )
        model = loaded[expert_id]
        if expert.kind == "denoised":
            if sigma is None:
                raise ZooError(
                    f"{entry.id}: router_input.sigmas is needed for denoised {expert_id}"
                )
            model = serve(model, float(sigma))
        experts.append(model)
    return experts


def _zoo_of(entry: ZooEntry, zoo: Any) -> Any:
    """``zoo``, or the packaged zoo, ``$RSBENCH_ZOO`` and ``entry``'s own file."""
    if zoo is not None:
        return zoo
    from rsbench.zoo.registry import load_zoo

    return load_zoo([entry.zoo_file] if entry.zoo_file is not None else [])

"""``load_model``: the one entry point from a zoo entry to a ready ``nn.Module``, whatever its kind.

Guarantees: the weights are fetched and verified (:mod:`rsbench.weights.sources`: sha256, strict
load) before the model is returned, in eval mode on ``device``, with ``zoo_id``,
``weights_sha256`` and ``weights_pinned`` attributes. An ``arch`` entry (expert, router) is one
network (:func:`rsbench.models.network.load_network`); a ``denoised`` entry is its denoiser and
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
) -> nn.Module:
    """Fetch, verify and strictly load ``entry``; return the model in eval mode on ``device``.

    ``progress`` is ``None`` or a callback (see :data:`rsbench.weights.sources.ProgressCallback`; the
    CLI passes one that draws a bar, the library renders nothing). ``sigma`` matters for
    ``denoised`` entries only: the base model at that served sigma (``None``: the
    :class:`~rsbench.models.denoised.DenoisedExpert`, whose ``at_sigma`` gives it); other entries
    are one network whatever the sigma.
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
    from rsbench.models.network import load_network

    return load_network(
        entry, device, cache_dir=cache_dir, require_pinned=require_pinned, progress=progress
    )

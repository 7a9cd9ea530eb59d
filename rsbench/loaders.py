"""Kind-checked loaders of composed zoo entries: :func:`load_dual` and :func:`load_cascade`.

They are shortcuts of :func:`rsbench.load` (the one loader, :mod:`rsbench.api`) that refuse an
entry of another kind, so a script that means a dual model cannot silently get an expert. Every
value (sigmas, ``sigma_router``, the alpha split, ``p0``, the stage order) is resolved where
``rsbench certify`` resolves it (:func:`rsbench.runconfig.resolve_config`), and each network is
fetched, verified and loaded once. They live on the zoo side so that :mod:`rsbench.dual` and
:mod:`rsbench.cascade` stay pure (no zoo, no files), like :mod:`rsbench.smoothing`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rsbench.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from rsbench.cascade import CascadeSmoothed
    from rsbench.dual import DualSmoothed
    from rsbench.zoo import Zoo, ZooEntry


def _checked_id(zoo: Zoo, entry: str | ZooEntry, kind: str) -> str:
    entry_id = entry if isinstance(entry, str) else entry.id
    found = zoo.get(entry_id).kind
    if found != kind:
        article = "an" if found[0] in "aeiou" else "a"
        raise ConfigError(f"{entry_id} is {article} {found} entry, not a {kind} one")
    return entry_id


def load_dual(
    zoo: Zoo,
    entry: str | ZooEntry,
    device: str | torch.device = "cpu",
    batch_size: int = 1000,
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    sigma_router: float | None = None,
    alpha_router_fraction: float | None = None,
    channels_last: bool = False,
    noise_dtype: str = "auto",
) -> DualSmoothed:
    """The :class:`~rsbench.dual.DualSmoothed` of a ``dual`` entry (an id or a ``ZooEntry``) of
    ``zoo``: router and experts loaded once; sigmas, ``sigma_router`` and
    ``alpha_router_fraction`` as ``rsbench certify`` resolves them (the entry's values, else the
    router's ``train_sigma`` and 0.5)."""
    from rsbench.api import load

    loaded: Any = load(
        _checked_id(zoo, entry, "dual"),
        zoo,
        device=str(device),
        batch_size=batch_size,
        precision=precision,
        cache_dir=cache_dir,
        require_pinned=require_pinned,
        sigma_router=sigma_router,
        alpha_router_fraction=alpha_router_fraction,
        channels_last=channels_last,
        noise_dtype=noise_dtype,
    )
    return loaded


def load_cascade(
    zoo: Zoo,
    entry: str | ZooEntry,
    device: str | torch.device = "cpu",
    batch_size: int = 1000,
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    p0: float | None = None,
    alpha_split: str | None = None,
    channels_last: bool = False,
) -> CascadeSmoothed:
    """The :class:`~rsbench.cascade.CascadeSmoothed` of a ``cascade`` entry (an id or a
    ``ZooEntry``) of ``zoo``: stages largest sigma first, ``p0`` and the alpha split as
    ``rsbench certify`` resolves them."""
    from rsbench.api import load

    loaded: Any = load(
        _checked_id(zoo, entry, "cascade"),
        zoo,
        device=str(device),
        batch_size=batch_size,
        precision=precision,
        cache_dir=cache_dir,
        require_pinned=require_pinned,
        p0=p0,
        alpha_split=alpha_split,
        channels_last=channels_last,
    )
    return loaded

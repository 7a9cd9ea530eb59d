"""The protocol registry: named certification protocols, read from ``rsbench/protocols.yaml``.

A protocol fixes what makes numbers comparable (DESIGN.md section 7): n0, n, the total alpha and
which images of each dataset are certified. The table is data (``protocols.yaml``, shipped with the
package), like lm-eval's task files; this module loads and validates it once and answers the
questions every command asks of it:

* :func:`get_protocol` -- a protocol by name (certify's ``--protocol``);
* :func:`check_protocol` -- the name to record for imported or rescored rows (a deviation from a
  registered protocol is refused; ``None`` picks the protocol the rows follow, else ``custom``);
* :func:`protocol_for`, :func:`protocol_deviation`, :func:`protocol_split` -- the pieces of it;
* :meth:`Protocol.indices` -- the image indices of a protocol's subset of a dataset.

Guarantee: a row is recorded under a registered name only if its n0, n, alpha, split, index and
estimation mode fit that protocol; anything else is ``custom`` (:data:`CUSTOM_PROTOCOL`). A
protocol's ``estimation`` is ``fixed`` (Cohen's n, the default) or ``sequential`` (then ``n`` is
n_max, :mod:`rsbench.engine.sequential`): a sequential row never carries a fixed-n protocol's name
and a fixed row never a sequential one's. Importing this module does not
import torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from rsbench.errors import ConfigError

#: The packaged protocol table.
PROTOCOLS_FILE = "protocols.yaml"


@dataclass(frozen=True)
class Subset:
    """Which images of a dataset a protocol certifies: ``split``, every ``stride``-th, first ``limit``."""

    split: str | None = None
    stride: int = 1
    limit: int | None = None


@dataclass(frozen=True)
class Protocol:
    """What makes numbers comparable: n0, n, alpha and the subset of each dataset (DESIGN.md §7).

    For dual models ``n0`` and ``n`` apply to each stage and ``alpha`` is the total.
    ``subsets`` maps a dataset name to its :class:`Subset`; other datasets use ``default_subset``.
    """

    name: str
    n0: int
    n: int
    alpha: float
    subsets: Mapping[str, Subset] = field(default_factory=dict, hash=False)
    default_subset: Subset = Subset()
    description: str = ""
    estimation: str = "fixed"

    def subset_for(self, dataset: str) -> Subset:
        """The protocol's subset of ``dataset``."""
        return self.subsets.get(dataset, self.default_subset)

    def indices(self, dataset: str, size: int | None = None) -> list[int]:
        """The image indices this protocol certifies of ``dataset`` (``size``: the split's size,
        default the standard one from :data:`rsbench.data.catalog.DATASETS`)."""
        from rsbench.data.catalog import DATASETS
        from rsbench.data.indices import select_indices

        subset = self.subset_for(dataset)
        if size is None:
            info = DATASETS.get(dataset)
            if info is None:
                raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
            split = protocol_split(self, dataset)
            if split not in info.splits:
                raise ConfigError(f"{dataset}/{split} has no standard size; pass size")
            size = info.splits[split]
        assert size is not None  # both branches above set it
        return select_indices(int(size), stride=subset.stride, limit=subset.limit)


#: The registered protocols, read from the packaged ``protocols.yaml`` (in file order).
PROTOCOLS: dict[str, Protocol] = {}

#: Protocol name recorded when --n0/--n/--alpha or the subset deviate from the named protocol.
CUSTOM_PROTOCOL = "custom"


def protocol_split(protocol: Protocol, dataset: str) -> str:
    """The split ``protocol`` certifies of ``dataset`` (its subset's, else test / ImageNet val)."""
    return protocol.subset_for(dataset).split or ("val" if dataset == "imagenet" else "test")


def protocol_deviation(
    protocol: Protocol,
    dataset: str,
    split: str,
    n0: int,
    n: int,
    alpha: float,
    indices: Sequence[int] | None = None,
    estimation: str = "fixed",
) -> str | None:
    """How rows of these parameters (and sample ``indices``) deviate from ``protocol``, or None.

    The protocol fixes n0, n, alpha, the estimation mode, the split and the subset; rows match when
    every index lies in the protocol's selection (a run that stopped early still matches; it is
    incomplete).
    """
    if (estimation or "fixed") != protocol.estimation:
        return f"{estimation} estimation (it fixes {protocol.estimation} estimation)"
    if (int(n0), int(n)) != (protocol.n0, protocol.n) or not math.isclose(
        float(alpha), protocol.alpha, rel_tol=1e-12
    ):
        return (
            f"n0={n0}, n={n}, alpha={alpha:g} (it fixes n0={protocol.n0}, n={protocol.n}, "
            f"alpha={protocol.alpha:g})"
        )
    want = protocol_split(protocol, dataset)
    from rsbench.data.catalog import SPLIT_PREFIXES

    recorded, prefix = SPLIT_PREFIXES.get((dataset, want), (want, None))
    if split not in (want, recorded):
        return f"split {split!r} (it certifies {dataset}/{want})"
    size = prefix if split == recorded != want else None
    subset = protocol.subset_for(dataset)
    for index in indices or ():
        position, rest = divmod(int(index), subset.stride)
        beyond = (subset.limit is not None and position >= subset.limit) or (
            size is not None and int(index) >= size
        )
        if rest or beyond or index < 0:
            every = f"every {subset.stride}th image" if subset.stride > 1 else "every image"
            first = f", the first {subset.limit}" if subset.limit is not None else ""
            return f"sample index {int(index)} (it takes {every}{first} of {dataset}/{want})"
    return None


def protocol_for(
    dataset: str,
    split: str,
    n0: int,
    n: int,
    alpha: float,
    indices: Sequence[int] | None = None,
    estimation: str = "fixed",
) -> str:
    """The registered protocol these rows follow (the smallest selection that holds them), else custom."""
    from rsbench.data.catalog import DATASETS

    def size(protocol: Protocol) -> float:
        subset = protocol.subset_for(dataset)
        info = DATASETS.get(dataset)
        total = (info.splits.get(split) if info is not None else None) or math.inf
        count = total / subset.stride
        return min(count, subset.limit) if subset.limit is not None else count

    fits = [
        p
        for p in PROTOCOLS.values()
        if protocol_deviation(p, dataset, split, n0, n, alpha, indices, estimation) is None
    ]
    return min(fits, key=size).name if fits else CUSTOM_PROTOCOL


def check_protocol(
    name: str | None,
    dataset: str,
    split: str,
    n0: int,
    n: int,
    alpha: float,
    indices: Sequence[int] | None = None,
    estimation: str = "fixed",
) -> str:
    """The protocol name to record for rows of these parameters (imports, rescoring).

    ``None``: the registered protocol they follow, else ``custom``. ``custom`` stays ``custom``.
    A registered name they deviate from, or an unknown name, is a :class:`ConfigError` (a deviation
    is never recorded under a standard name).
    """
    if name is None:
        return protocol_for(dataset, split, n0, n, alpha, indices, estimation)
    if name == CUSTOM_PROTOCOL:
        return name
    if name not in PROTOCOLS:
        raise ConfigError(
            f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}, or {CUSTOM_PROTOCOL} "
            "(or leave --protocol out: the protocol the rows follow, else custom)"
        )
    protocol = PROTOCOLS[name]
    deviation = protocol_deviation(protocol, dataset, split, n0, n, alpha, indices, estimation)
    if deviation is not None:
        fits = protocol_for(dataset, split, n0, n, alpha, indices, estimation)
        raise ConfigError(
            f"these rows deviate from protocol {name!r}: {deviation}; record them as "
            f"--protocol {fits} (or leave --protocol out)"
        )
    return name


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; :class:`ConfigError` listing the known names."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


_PROTOCOL_KEYS = {"n0", "n", "alpha", "subsets", "default_subset", "description", "estimation"}
#: A protocol's ``estimation`` values (rsbench.engine.sequential.ESTIMATIONS).
_ESTIMATIONS = ("fixed", "sequential")
_SUBSET_KEYS = {"split", "stride", "limit"}


def _subset(where: str, data: Any) -> Subset:
    if not isinstance(data, Mapping) or set(data) - _SUBSET_KEYS:
        raise ConfigError(f"{where}: a subset is a mapping of {', '.join(sorted(_SUBSET_KEYS))}")
    split = data.get("split")
    stride = data.get("stride", 1)
    limit = data.get("limit")
    if split is not None and not isinstance(split, str):
        raise ConfigError(f"{where}: split {split!r} is not a name")
    for key, value in (("stride", stride), ("limit", limit)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"{where}: {key}={value!r} is not an integer >= 1")
    return Subset(split, stride, limit)


def parse_protocols(table: Any, source: str = PROTOCOLS_FILE) -> dict[str, Protocol]:
    """Validated :class:`Protocol` objects from a parsed protocol table (a mapping name -> entry);
    :class:`ConfigError` naming ``source``, the entry and the field otherwise."""
    from rsbench.errors import check_alpha, check_count

    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{source}: expected a mapping of protocol names to entries")
    out: dict[str, Protocol] = {}
    for name, entry in table.items():
        where = f"{source}: protocol {name!r}"
        if not isinstance(name, str) or not name or name == CUSTOM_PROTOCOL:
            raise ConfigError(f"{where}: a protocol needs a name other than {CUSTOM_PROTOCOL!r}")
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(entry) - _PROTOCOL_KEYS
        missing = {"n0", "n", "alpha"} - set(entry)
        if unknown or missing:
            raise ConfigError(
                f"{where}: unknown {sorted(unknown)} / missing {sorted(missing)} fields "
                f"(allowed: {', '.join(sorted(_PROTOCOL_KEYS))})"
            )
        for key in ("n0", "n"):
            if isinstance(entry[key], bool) or not isinstance(entry[key], int):
                raise ConfigError(f"{where}: {key}={entry[key]!r} is not an integer")
        estimation = entry.get("estimation", "fixed")
        if estimation not in _ESTIMATIONS:
            raise ConfigError(
                f"{where}: estimation {estimation!r} is unknown; use one of {', '.join(_ESTIMATIONS)}"
            )
        subsets = entry.get("subsets") or {}
        if not isinstance(subsets, Mapping):
            raise ConfigError(f"{where}: subsets must map dataset names to subsets")
        try:
            out[name] = Protocol(
                name,
                n0=check_count(entry["n0"], "n0"),
                n=check_count(entry["n"], "n"),
                alpha=check_alpha(entry["alpha"]),
                subsets={str(d): _subset(f"subset {d!r}", s) for d, s in subsets.items()},
                default_subset=(
                    _subset("default_subset", entry["default_subset"])
                    if entry.get("default_subset") is not None
                    else Subset()
                ),
                description=str(entry.get("description", "")),
                estimation=str(estimation),
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return out


def load_packaged() -> dict[str, Protocol]:
    """The protocols of the packaged ``protocols.yaml``."""
    text = resources.files("rsbench").joinpath(PROTOCOLS_FILE).read_text(encoding="utf-8")
    return parse_protocols(yaml.safe_load(text))


PROTOCOLS.update(load_packaged())


def first_deviation(frame: Any) -> str | None:
    """The first group of result rows (a pandas frame with ``protocol``, ``dataset``, ``split``,
    ``n0``, ``n``, ``alpha`` and ``index`` columns) recorded under a registered protocol that they
    deviate from, described in one line; None when every row fits its protocol (or carries an
    unregistered name such as ``custom``). Frames without these columns are not checked."""
    columns = ["protocol", "dataset", "split", "n0", "n", "alpha"]
    if len(frame) == 0 or any(c not in frame.columns for c in [*columns, "index"]):
        return None
    registered = frame[frame["protocol"].astype(str).isin(list(PROTOCOLS))]
    if "estimation" in registered.columns:  # null: fixed (rows written before the column)
        registered = registered.assign(
            _estimation=registered["estimation"]
            .astype(object)
            .where(registered["estimation"].notna(), "fixed")
        )
    else:
        registered = registered.assign(_estimation="fixed")
    keys = [*columns, "_estimation"]
    for (name, dataset, split, n0, n, alpha, mode), rows in registered.groupby(keys, sort=True):
        deviation = protocol_deviation(
            PROTOCOLS[str(name)],
            str(dataset),
            str(split),
            n0,
            n,
            alpha,
            rows["index"].tolist(),
            str(mode),
        )
        if deviation is not None:
            models = ", ".join(sorted(rows["model_id"].astype(str).unique())[:3])
            return f"rows of {models} recorded under protocol {name!r} deviate from it: {deviation}"
    return None

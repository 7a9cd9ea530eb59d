"""The model zoo: a strict YAML registry of experts, routers, dual ensembles and cascades.

Guarantees:

* :func:`load_zoo` reads the packaged ``rsbench/model_zoo.yaml``, then every file in ``RSBENCH_ZOO``
  (``os.pathsep``-separated), then ``extra_paths`` (the CLI's ``--zoo``), and returns a :class:`Zoo` of
  frozen :class:`ZooEntry` objects. Each entry is validated on its own (:mod:`rsbench.zoo.parse`);
  here, duplicate ids across files and dangling router / expert references (wrong kind, wrong
  dataset, a denoised expert at a sigma it does not serve, a cascade repeating a sigma) raise
  :class:`~rsbench.errors.ZooError` whose one-line message names the file, the entry and the field.
* :meth:`Zoo.get` answers an unknown id with the closest known ids ("did you mean ...").
* A later file may repeat an unpinned entry with only its ``sha256`` added: that pins it
  (:func:`is_pin_of`); any other repeated id is an error.

The schema is :mod:`rsbench.zoo.entry`, validation :mod:`rsbench.zoo.parse` and files
:mod:`rsbench.zoo.files`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rsbench.errors import ZooError
from rsbench.zoo.entry import (
    EXPERT_KINDS,
    ZooEntry,
)
from rsbench.zoo.files import ENV_ZOO, read_zoo_file
from rsbench.zoo.parse import Where


def packaged_zoo_path() -> Path:
    """Path of the zoo file shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "model_zoo.yaml"


def zoo_paths(extra_paths: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Files :func:`load_zoo` reads, in order: packaged, ``RSBENCH_ZOO`` entries, ``extra_paths``."""
    paths = [packaged_zoo_path()]
    env = os.environ.get(ENV_ZOO, "")
    paths += [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    paths += [Path(p).expanduser() for p in extra_paths]
    unique: list[Path] = []
    seen: set[str] = set()
    for path in paths:
        real = os.path.realpath(path)  # never raises, even on a symlink loop (read_zoo_file does)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


@dataclass(frozen=True)
class Zoo:
    """An ordered, validated set of entries; ``zoo.get(id)`` or ``id in zoo``."""

    entries: tuple[ZooEntry, ...]
    files: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {e.id: e for e in self.entries})

    def __iter__(self) -> Iterator[ZooEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._by_id  # type: ignore[attr-defined]

    def ids(self) -> list[str]:
        """All ids in file order."""
        return [e.id for e in self.entries]

    def get(self, entry_id: str) -> ZooEntry:
        """The entry with this id; an unknown id raises :class:`ZooError` with close matches."""
        by_id: dict[str, ZooEntry] = self._by_id  # type: ignore[attr-defined]
        if entry_id in by_id:
            return by_id[entry_id]
        close = difflib.get_close_matches(entry_id, list(by_id), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ZooError(f"unknown model id {entry_id!r}{hint} (see `rsbench zoo list`)")

    def select(
        self, pattern: str | None = None, dataset: str | None = None, kind: str | None = None
    ) -> list[ZooEntry]:
        """Entries whose id matches the glob or substring ``pattern``, ``dataset`` and ``kind``."""
        import fnmatch

        out = []
        for entry in self.entries:
            if dataset is not None and entry.dataset != dataset:
                continue
            if kind is not None and entry.kind != kind:
                continue
            if pattern:
                glob = any(c in pattern for c in "*?[")
                if glob and not fnmatch.fnmatchcase(entry.id, pattern):
                    continue
                if not glob and pattern not in entry.id:
                    continue
            out.append(entry)
        return out


def _check_references(zoo: Zoo) -> None:
    for entry in zoo:
        where = Where(entry.zoo_file, entry.id)
        if entry.kind == "router":
            for expert_id in entry.experts:
                _expect_kind(zoo, where, "experts", expert_id, EXPERT_KINDS, entry.dataset)
            _check_router_denoiser(zoo, entry, where)
        if entry.kind == "dual":
            _expect_kind(zoo, where, "router", entry.router or "", ("router",), entry.dataset)
            router = zoo.get(entry.router or "")
            if tuple(router.experts) != tuple(entry.experts):
                raise where.error(
                    "experts",
                    f"{list(entry.experts)} differs from router {router.id!r}'s experts "
                    f"{list(router.experts)}; the router's output k selects expert k",
                )
            for k, expert_id in enumerate(entry.experts):
                _expect_kind(zoo, where, "experts", expert_id, EXPERT_KINDS, entry.dataset)
                _check_served(zoo.get(expert_id), where, entry.sigmas[k] if entry.sigmas else None)
        if entry.kind == "cascade":
            for k, expert_id in enumerate(entry.experts):
                _expect_kind(zoo, where, "experts", expert_id, EXPERT_KINDS, entry.dataset)
                _check_served(zoo.get(expert_id), where, entry.sigmas[k] if entry.sigmas else None)
            sigmas: tuple[float | None, ...] = entry.sigmas or tuple(
                zoo.get(e).train_sigma for e in entry.experts
            )
            if len(set(sigmas)) != len(sigmas):
                raise where.error(
                    "sigmas",
                    f"{list(sigmas)} repeat a value; each cascade stage needs its own sigma",
                )


def _check_router_denoiser(zoo: Zoo, entry: ZooEntry, where: Where) -> None:
    """A ``denoised`` router input names a denoised entry of the router's dataset serving its sigma."""
    spec = entry.router_input or {}
    if spec.get("type") != "denoised":
        return
    ref = str(spec.get("denoiser"))
    _expect_kind(zoo, where, "router_input.denoiser", ref, ("denoised",), entry.dataset)
    sigma = float(spec["sigma"])
    served = zoo.get(ref).sigmas or ()
    if not any(math.isclose(sigma, s, rel_tol=0, abs_tol=1e-9) for s in served):
        listed = ", ".join(f"{s:g}" for s in served)
        raise where.error(
            "router_input.sigma",
            f"{sigma:g} is not served by {ref!r} (serves {listed}); its denoiser was trained there",
        )


def _check_served(expert: ZooEntry, where: Where, sigma: float | None) -> None:
    if expert.kind != "denoised":
        return
    if sigma is None:
        raise where.error(
            "sigmas", f"is required: {expert.id!r} is a denoised expert serving several sigmas"
        )
    if not any(math.isclose(sigma, s, rel_tol=0, abs_tol=1e-9) for s in expert.sigmas or ()):
        served = ", ".join(f"{s:g}" for s in expert.sigmas or ())
        raise where.error("sigmas", f"{sigma:g} is not served by {expert.id!r} (serves {served})")


def _expect_kind(
    zoo: Zoo, where: Where, name: str, ref: str, kinds: Sequence[str], dataset: str
) -> None:
    if ref not in zoo:
        close = difflib.get_close_matches(ref, zoo.ids(), n=2, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise where.error(name, f"refers to unknown id {ref!r}{hint}")
    target = zoo.get(ref)
    if target.kind not in kinds:
        raise where.error(name, f"{ref!r} is a {target.kind}, not a {' or '.join(kinds)}")
    if target.dataset != dataset:
        raise where.error(name, f"{ref!r} is for {target.dataset}, not {dataset}")


def is_pin_of(earlier: ZooEntry, later: ZooEntry) -> bool:
    """True when ``later`` is ``earlier`` with a sha256 added (``earlier`` unpinned), nothing else."""
    if earlier.sha256 is not None or later.sha256 is None:
        return False
    return dataclasses.replace(later, sha256=None).to_yaml_dict() == earlier.to_yaml_dict()


def load_zoo(extra_paths: Iterable[str | os.PathLike] = (), include_packaged: bool = True) -> Zoo:
    """Read the packaged zoo, ``RSBENCH_ZOO`` files, then ``extra_paths``; validate everything.

    Ids must be unique across all files, except that a later file may repeat an unpinned entry with
    only its ``sha256`` added (``rsbench zoo import-archive`` writes such pins); the pinned entry
    replaces the unpinned one in place. Router/dual references must resolve to entries of the right
    kind and dataset. Raises :class:`ZooError` naming file, entry and field.
    """
    paths = zoo_paths(extra_paths)
    if not include_packaged:
        paths = paths[1:]
    entries: list[ZooEntry] = []
    origin: dict[str, Path] = {}
    for path in paths:
        for entry in read_zoo_file(path):
            if entry.id in origin:
                index = next(i for i, e in enumerate(entries) if e.id == entry.id)
                if is_pin_of(entries[index], entry):
                    entries[index] = entry  # a later file pins an unpinned entry
                    origin[entry.id] = path
                    continue
                raise Where(path, entry.id).error(
                    "id",
                    f"is already defined in {origin[entry.id]}; ids must be unique across zoos "
                    "(a later file may only repeat an unpinned entry to add its sha256)",
                )
            origin[entry.id] = path
            entries.append(entry)
    zoo = Zoo(entries=tuple(entries), files=tuple(paths))
    _check_references(zoo)
    return zoo

"""The zoo entry schema: the frozen :class:`ZooEntry` and its parts, and its digest.

Owns what a validated entry *is* (the kinds, datasets, input-layer and source types, the
:class:`InputLayerSpec` / :class:`CheckpointSpec` / :class:`SourceSpec` parts) and its canonical
form: :meth:`ZooEntry.to_yaml_dict` (round-trips through :func:`rsbench.zoo.parse.parse_entry`) and
:func:`entry_digest`, the sha256 of the entry's canonical JSON (keys sorted), independent of YAML
formatting, field order and the file the entry came from. Validation is
:mod:`rsbench.zoo.parse`; files are :mod:`rsbench.zoo.files`; the merged registry is
:mod:`rsbench.zoo.registry`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rsbench.data.catalog import DATASETS as _DATASETS

KINDS = ("expert", "router", "dual", "cascade", "denoised")
#: Kinds that compose other entries and hold no weights of their own.
COMPOSITE_KINDS = ("dual", "cascade")
#: kinds a router, dual or cascade entry may list as experts (a denoised entry at a served sigma)
EXPERT_KINDS = ("expert", "denoised")
HUB_LIBRARIES = {"denoiser": "diffusers", "classifier": "transformers"}
#: What a router entry's network looks at (``router_input.type``; :mod:`rsbench.models.router_input`):
#: the noisy pixels (the default), all the dual's experts' outputs, the largest-sigma expert's only,
#: or the pixels behind a denoiser.
ROUTER_INPUTS = ("pixels", "experts", "experts-top", "denoised")
#: router inputs whose network is a head over experts' outputs
ROUTER_EXPERT_INPUTS = ("experts", "experts-top")
#: which outputs of the experts such a head sees
ROUTER_FEATURES = ("log-softmax", "softmax", "logits")
#: the head architectures of a router over experts (its ``arch``)
ROUTER_HEADS = ("head_linear", "head_mlp")
#: datasets an entry may name: all of :mod:`rsbench.data.catalog` but the embedded subset, which is
#: loaded as ``fashion-mnist`` split ``embedded``
DATASETS = tuple(name for name in _DATASETS if name != "fashion-mnist-embedded")
INPUT_LAYER_TYPES = ("normalize", "center", "none")
SOURCE_TYPES = ("hf", "url", "archive_url", "package", "file")


@dataclass(frozen=True)
class InputLayerSpec:
    """The input layer inside the model: ``normalize`` ((x - mean) / std), ``center`` (x - mean), ``none``."""

    type: str = "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.mean is not None:
            out["mean"] = list(self.mean)
        if self.std is not None:
            out["std"] = list(self.std)
        return out


@dataclass(frozen=True)
class CheckpointSpec:
    """Where the state dict sits in the checkpoint (``state_dict_key``) and the key prefix to strip."""

    state_dict_key: str | None = None
    strip_prefix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.state_dict_key is not None:
            out["state_dict_key"] = self.state_dict_key
        if self.strip_prefix is not None:
            out["strip_prefix"] = self.strip_prefix
        return out


@dataclass(frozen=True)
class SourceSpec:
    """Where the weights come from: ``hf``, ``url``, ``archive_url``, ``package`` or ``file``."""

    type: str
    url: str | None = None
    member: str | None = None
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for name in ("repo_id", "filename", "revision", "url", "member", "path"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def describe(self) -> str:
        """A one-line human description of the source."""
        if self.type == "hf":
            return f"hf://{self.repo_id}/{self.filename}@{self.revision}"
        if self.type == "archive_url":
            return f"{self.url} :: {self.member}"
        if self.type == "url":
            return str(self.url)
        return f"{self.type}:{self.path}"


def freeze(value: Any) -> Any:
    """A read-only copy of YAML data: mappings become ``MappingProxyType``, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain (dict / list) copy of data made by :func:`freeze`."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ZooEntry:
    """One validated zoo entry (expert, router or dual). Build it with :func:`parse_entry`.

    ``zoo_file`` is the file the entry came from (``None`` for entries built in memory); relative
    ``file`` sources and ``path/file.py:callable`` architectures resolve against its folder.
    """

    id: str
    kind: str
    dataset: str
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    arch: str | None = None
    train_sigma: float | None = None
    input_layer: InputLayerSpec = field(default_factory=InputLayerSpec)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    source: SourceSpec | None = None
    sha256: str | None = None
    license: str | None = None
    paper: str | None = None
    description: str | None = None
    reported: Mapping[str, Any] | None = field(default=None, hash=False)
    recipe: Mapping[str, Any] | None = field(default=None, hash=False)
    experts: tuple[str, ...] = ()
    router: str | None = None
    sigmas: tuple[float, ...] | None = None
    sigma_router: float | None = None
    alpha_router_fraction: float | None = None
    p0: float | None = None
    alpha_split: str | None = None
    denoiser: Mapping[str, Any] | None = field(default=None, hash=False)
    classifier: Mapping[str, Any] | None = field(default=None, hash=False)
    #: router only: what its network looks at (``{"type": "pixels"}`` when absent; see
    #: :data:`ROUTER_INPUTS`): for ``experts`` / ``experts-top`` also ``experts`` (the ids that
    #: feed it, in order, a sub-list of the router's experts), ``sigmas`` (theirs, for denoised
    #: experts) and ``features`` (:data:`ROUTER_FEATURES`)
    router_input: Mapping[str, Any] | None = field(default=None, hash=False)
    #: router only: the images it was labelled and trained on: ``dataset`` and ``split`` (the
    #: source dataset, e.g. ``fashion-mnist`` / ``test`` for the embedded subset) and ``indices``
    #: (positions in that source split, as ``start:stop[:step]`` / comma text); certifying a dual
    #: on any of them is refused (:func:`rsbench.run.certifiers.check_router_training_overlap`)
    trained_on: Mapping[str, Any] | None = field(default=None, hash=False)
    zoo_file: Path | None = field(default=None, compare=False, hash=False)

    @property
    def pinned(self) -> bool:
        """True when the entry's bytes are pinned: a sha256 (dual and cascade entries count as
        pinned); for a denoised entry, both components (a sha256 or a hub commit revision)."""
        if self.kind == "denoised":
            return all(
                (spec.get("revision") if spec.get("hub") else spec.get("sha256")) is not None
                for spec in (self.denoiser or {}, self.classifier or {})
            )
        return self.kind in COMPOSITE_KINDS or self.sha256 is not None

    @property
    def base_dir(self) -> Path | None:
        """Folder of the zoo file this entry came from (for relative paths), or ``None``."""
        return self.zoo_file.parent if self.zoo_file is not None else None

    def to_yaml_dict(self) -> dict[str, Any]:  # noqa: C901 — one branch per optional field of each kind, in canonical order
        """The entry as plain YAML/JSON data in canonical field order (round-trips via parse_entry)."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "dataset": self.dataset}
        if self.description is not None:
            out["description"] = self.description
        if self.kind == "dual":
            out["router"] = self.router
            out["experts"] = list(self.experts)
            if self.sigmas is not None:
                out["sigmas"] = list(self.sigmas)
            if self.sigma_router is not None:
                out["sigma_router"] = self.sigma_router
            if self.alpha_router_fraction is not None:
                out["alpha_router_fraction"] = self.alpha_router_fraction
            if self.num_classes is not None:
                out["num_classes"] = self.num_classes
        elif self.kind == "cascade":
            out["experts"] = list(self.experts)
            for name in ("sigmas", "p0", "alpha_split", "num_classes"):
                value = getattr(self, name)
                if value is not None:
                    out[name] = list(value) if isinstance(value, tuple) else value
        elif self.kind == "denoised":
            out["num_classes"] = self.num_classes
            out["input_shape"] = list(self.input_shape or ())
            out["sigmas"] = list(self.sigmas or ())
            out["denoiser"] = thaw(self.denoiser)
            out["classifier"] = thaw(self.classifier)
        else:
            out["num_classes"] = self.num_classes
            out["input_shape"] = list(self.input_shape or ())
            out["arch"] = self.arch
            out["train_sigma"] = self.train_sigma
            if self.kind == "router":
                out["experts"] = list(self.experts)
                if self.router_input is not None:
                    out["router_input"] = thaw(self.router_input)
                if self.trained_on is not None:
                    out["trained_on"] = thaw(self.trained_on)
            out["input_layer"] = self.input_layer.to_dict()
            checkpoint = self.checkpoint.to_dict()
            if checkpoint:
                out["checkpoint"] = checkpoint
            out["source"] = self.source.to_dict() if self.source else None
            out["sha256"] = self.sha256
        if self.license is not None:
            out["license"] = self.license
        if self.paper is not None:
            out["paper"] = self.paper
        if self.reported is not None:
            out["reported"] = thaw(self.reported)
        if self.recipe is not None:
            out["recipe"] = thaw(self.recipe)
        return out


def entry_digest(entry: ZooEntry) -> str:
    """sha256 (hex) of the entry's canonical JSON; stable across formatting and field order."""
    text = json.dumps(
        _json_ready(entry.to_yaml_dict()), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_json_key(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def _json_key(key: Any) -> str:
    if isinstance(key, bool):
        return str(key).lower()
    if isinstance(key, int | float):
        return repr(float(key))
    return str(key)

"""The model zoo: a strict YAML registry of experts, routers, dual ensembles and cascades.

Guarantees:

* :func:`load_zoo` reads the packaged ``rsbench/model_zoo.yaml``, then every file in ``RSBENCH_ZOO``
  (``os.pathsep``-separated), then ``extra_paths`` (the CLI's ``--zoo``), and returns a :class:`Zoo` of
  frozen :class:`ZooEntry` objects. Unknown or missing fields, wrong types, duplicate ids (within or
  across files), duplicate YAML keys, a ``train_sigma`` that disagrees with an ``s<sigma>`` token in
  the id, and dangling router / expert references raise :class:`~rsbench.errors.ZooError` whose
  one-line message names the file, the entry and the field.
* :meth:`Zoo.get` answers an unknown id with the closest known ids ("did you mean ...").
* A later file may repeat an unpinned entry with only its ``sha256`` added: that pins it
  (:func:`is_pin_of`); any other repeated id is an error.
* :func:`entry_digest` is the sha256 of the entry's canonical JSON (:meth:`ZooEntry.to_yaml_dict`,
  keys sorted): independent of YAML formatting, field order and the file the entry came from.
* :func:`write_entries` adds validated entries to a user zoo file (appending text, so comments stay),
  replacing an entry with the same id only when ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from rsbench import safeyaml
from rsbench.errors import ConfigError, ZooError, check_alpha_router_fraction

KINDS = ("expert", "router", "dual", "cascade", "denoised")
#: Kinds that compose other entries and hold no weights of their own.
COMPOSITE_KINDS = ("dual", "cascade")
#: kinds a router, dual or cascade entry may list as experts (a denoised entry at a served sigma)
EXPERT_KINDS = ("expert", "denoised")
HUB_LIBRARIES = {"denoiser": "diffusers", "classifier": "transformers"}
DATASETS = ("cifar10", "imagenet", "mnist", "fashion-mnist")
INPUT_LAYER_TYPES = ("normalize", "center", "none")
SOURCE_TYPES = ("hf", "url", "archive_url", "package", "file")
ENV_ZOO = "RSBENCH_ZOO"

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SIGMA_IN_ID_RE = re.compile(r"(?:^|[-_])s(\d+(?:\.\d+)?)(?=$|[-_])")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REVISION_RE = re.compile(r"^[0-9a-f]{40}$")

_COMMON_FIELDS = ("id", "kind", "dataset", "description", "license", "paper", "reported", "recipe")
_NET_FIELDS = (
    "num_classes",
    "input_shape",
    "arch",
    "train_sigma",
    "input_layer",
    "checkpoint",
    "source",
    "sha256",
)
_FIELDS = {
    "expert": _COMMON_FIELDS + _NET_FIELDS,
    "router": _COMMON_FIELDS + _NET_FIELDS + ("experts",),
    "dual": _COMMON_FIELDS
    + ("router", "experts", "sigmas", "sigma_router", "alpha_router_fraction", "num_classes"),
    "cascade": _COMMON_FIELDS + ("experts", "sigmas", "p0", "alpha_split", "num_classes"),
    "denoised": _COMMON_FIELDS + ("num_classes", "input_shape", "sigmas", "denoiser", "classifier"),
}
_REQUIRED = {
    "expert": (
        "id",
        "kind",
        "dataset",
        "num_classes",
        "input_shape",
        "arch",
        "train_sigma",
        "input_layer",
        "source",
    ),
    "router": (
        "id",
        "kind",
        "dataset",
        "num_classes",
        "input_shape",
        "arch",
        "train_sigma",
        "input_layer",
        "source",
        "experts",
    ),
    "dual": ("id", "kind", "dataset", "router", "experts"),
    "cascade": ("id", "kind", "dataset", "experts"),
    "denoised": (
        "id",
        "kind",
        "dataset",
        "num_classes",
        "input_shape",
        "sigmas",
        "denoiser",
        "classifier",
    ),
}
_NETWORK_COMPONENT_FIELDS = ("arch", "source", "sha256", "input_layer", "checkpoint", "note")
_HUB_COMPONENT_FIELDS = (
    "hub",
    "repo_id",
    "revision",
    "path",
    "subfolder",
    "scheduler_subfolder",
    "resize",
    "input_layer",
    "note",
)
_SOURCE_FIELDS = {
    "hf": (("repo_id", "filename", "revision"), ()),
    "url": (("url",), ()),
    "archive_url": (("url", "member"), ()),
    "package": (("path",), ()),
    "file": (("path",), ()),
}
_REPORTED_FIELDS = (
    "protocol",
    "certified_accuracy",
    "acr",
    "n0",
    "n",
    "alpha",
    "num_images",
    "source",
    "note",
)


# --------------------------------------------------------------------------------------------------
# dataclasses


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


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
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
            out["denoiser"] = _thaw(self.denoiser)
            out["classifier"] = _thaw(self.classifier)
        else:
            out["num_classes"] = self.num_classes
            out["input_shape"] = list(self.input_shape or ())
            out["arch"] = self.arch
            out["train_sigma"] = self.train_sigma
            if self.kind == "router":
                out["experts"] = list(self.experts)
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
            out["reported"] = _thaw(self.reported)
        if self.recipe is not None:
            out["recipe"] = _thaw(self.recipe)
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


# --------------------------------------------------------------------------------------------------
# validation


class _Where:
    """Formats error messages that name file, entry and field."""

    def __init__(self, file: Path | str | None, entry_id: str | None, index: int | None = None):
        self.file = str(file) if file is not None else "<memory>"
        self.entry_id = entry_id
        self.index = index

    def error(self, field_name: str | None, problem: str) -> ZooError:
        entry = f"entry {self.entry_id!r}" if self.entry_id else f"entry #{self.index}"
        where = f"{self.file}: {entry}"
        if field_name:
            where += f": field {field_name!r}"
        return ZooError(f"{where}: {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_float(where: _Where, name: str, value: Any) -> float:
    if not _is_number(value) or value <= 0:
        raise where.error(name, f"{value!r} is not a number > 0")
    return float(value)


def _string(where: _Where, name: str, value: Any, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise where.error(name, f"{value!r} is not a non-empty string")
    return value


def _id_list(where: _Where, name: str, value: Any, repeats: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise where.error(name, f"{value!r} is not a non-empty list of zoo ids")
    ids = tuple(_string(where, name, v) for v in value)
    if not repeats and len(set(ids)) != len(ids):
        raise where.error(name, f"lists an id twice: {list(ids)}")
    return ids


def _check_keys(where: _Where, name: str | None, data: Mapping, allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(allowed)}"
            label = f"{name}.{key}" if name else str(key)
            raise where.error(label, f"unknown field{hint}")


def sigma_in_id(entry_id: str) -> float | None:
    """The sigma an id names as ``s<sigma>`` (e.g. ``...-s0.25`` -> 0.25), or ``None``."""
    match = _SIGMA_IN_ID_RE.search(entry_id)
    return float(match.group(1)) if match else None


def _parse_input_layer(where: _Where, value: Any, channels: int) -> InputLayerSpec:
    if not isinstance(value, Mapping):
        raise where.error(
            "input_layer", f"{value!r} is not a mapping like {{type: normalize, ...}}"
        )
    _check_keys(where, "input_layer", value, ("type", "mean", "std"))
    kind = value.get("type")
    if kind not in INPUT_LAYER_TYPES:
        raise where.error(
            "input_layer.type", f"{kind!r} is not one of {', '.join(INPUT_LAYER_TYPES)}"
        )
    needed = {"normalize": ("mean", "std"), "center": ("mean",), "none": ()}[kind]
    for key in ("mean", "std"):
        if key in needed and key not in value:
            raise where.error(f"input_layer.{key}", f"is required for type {kind!r}")
        if key not in needed and value.get(key) is not None:
            raise where.error(f"input_layer.{key}", f"is not used by type {kind!r}; remove it")
    vectors: dict[str, tuple[float, ...] | None] = {"mean": None, "std": None}
    for key in needed:
        vec = value[key]
        if not isinstance(vec, list) or not all(_is_number(v) for v in vec):
            raise where.error(f"input_layer.{key}", f"{vec!r} is not a list of numbers")
        if len(vec) != channels:
            raise where.error(
                f"input_layer.{key}",
                f"has {len(vec)} values but input_shape has {channels} channels",
            )
        if key == "std" and any(v <= 0 for v in vec):
            raise where.error("input_layer.std", f"{vec!r} has a value <= 0")
        vectors[key] = tuple(float(v) for v in vec)
    return InputLayerSpec(type=kind, mean=vectors["mean"], std=vectors["std"])


def _parse_checkpoint(where: _Where, value: Any) -> CheckpointSpec:
    if value is None:
        return CheckpointSpec()
    if not isinstance(value, Mapping):
        raise where.error("checkpoint", f"{value!r} is not a mapping")
    _check_keys(where, "checkpoint", value, ("state_dict_key", "strip_prefix"))
    out = {}
    for key in ("state_dict_key", "strip_prefix"):
        item = value.get(key)
        if item is not None:
            out[key] = _string(where, f"checkpoint.{key}", item)
    return CheckpointSpec(**out)


def _parse_source(where: _Where, value: Any) -> SourceSpec:
    if not isinstance(value, Mapping):
        raise where.error("source", f"{value!r} is not a mapping like {{type: url, url: ...}}")
    kind = value.get("type")
    if kind not in SOURCE_TYPES:
        raise where.error("source.type", f"{kind!r} is not one of {', '.join(SOURCE_TYPES)}")
    required, optional = _SOURCE_FIELDS[kind]
    _check_keys(where, "source", value, ("type",) + required + optional)
    out: dict[str, str] = {}
    for key in required:
        if value.get(key) is None:
            raise where.error(f"source.{key}", f"is required for source type {kind!r}")
        out[key] = _string(where, f"source.{key}", value[key])
    if "url" in out and not re.match(r"^(https?|file)://", out["url"]):
        raise where.error("source.url", f"{out['url']!r} is not an http(s):// or file:// URL")
    if kind == "package":
        parts = Path(out["path"]).parts
        if Path(out["path"]).is_absolute() or ".." in parts:
            raise where.error("source.path", f"{out['path']!r} must be relative inside the package")
    if kind == "archive_url":
        member = out["member"]
        if member.startswith("/") or ".." in Path(member).parts:
            raise where.error("source.member", f"{member!r} must be a relative path without '..'")
    return SourceSpec(type=kind, **out)


def _parse_reported(where: _Where, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error("reported", f"{value!r} is not a mapping")
    _check_keys(where, "reported", value, _REPORTED_FIELDS)
    out: dict[str, Any] = dict(value)
    if "protocol" in out:
        out["protocol"] = _string(where, "reported.protocol", out["protocol"])
    accuracy = out.get("certified_accuracy")
    if accuracy is not None:
        if not isinstance(accuracy, Mapping):
            raise where.error("reported.certified_accuracy", "is not a mapping radius -> accuracy")
        clean: dict[float, float] = {}
        for radius, acc in accuracy.items():
            if not _is_number(radius) or radius < 0:
                raise where.error("reported.certified_accuracy", f"radius {radius!r} is not >= 0")
            if not _is_number(acc) or not 0 <= acc <= 1:
                raise where.error(
                    "reported.certified_accuracy",
                    f"accuracy {acc!r} at r={radius} is not in [0, 1]",
                )
            clean[float(radius)] = float(acc)
        out["certified_accuracy"] = dict(sorted(clean.items()))
    return _freeze(out)


def parse_entry(  # noqa: C901 — one validation step per field of each kind, each with its own message
    data: Any, file: Path | str | None = None, index: int | None = None
) -> ZooEntry:
    """Validate one raw YAML mapping and return the frozen :class:`ZooEntry`.

    Checks one entry on its own (references to other ids are checked by :func:`load_zoo`).
    Raises :class:`ZooError` naming ``file``, the entry and the field.
    """
    where = _Where(file, None, index)
    if not isinstance(data, Mapping):
        raise where.error(None, f"is not a mapping (got {type(data).__name__})")
    entry_id = data.get("id")
    if not isinstance(entry_id, str) or not _ID_RE.match(entry_id):
        raise where.error("id", f"{entry_id!r} is not an id (letters, digits, '.', '_', '+', '-')")
    where = _Where(file, entry_id, index)
    kind = data.get("kind")
    if kind not in KINDS:
        raise where.error("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    _check_keys(where, None, data, _FIELDS[kind])
    for name in _REQUIRED[kind]:
        if data.get(name) is None:
            raise where.error(name, f"is required for kind {kind!r}")
    dataset = data["dataset"]
    if dataset not in DATASETS:
        close = difflib.get_close_matches(str(dataset), DATASETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise where.error("dataset", f"{dataset!r} is not one of {', '.join(DATASETS)}{hint}")
    values: dict[str, Any] = {"id": entry_id, "kind": kind, "dataset": dataset}
    for name in ("license", "paper", "description"):
        if data.get(name) is not None:
            values[name] = _string(where, name, data[name])
    if data.get("reported") is not None:
        values["reported"] = _parse_reported(where, data["reported"])
    if data.get("recipe") is not None:
        if not isinstance(data["recipe"], Mapping):
            raise where.error("recipe", f"{data['recipe']!r} is not a mapping")
        values["recipe"] = _freeze(data["recipe"])
    if data.get("num_classes") is not None:
        num_classes = data["num_classes"]
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise where.error("num_classes", f"{num_classes!r} is not an integer >= 1")
        values["num_classes"] = num_classes
    if kind == "dual":
        values.update(_parse_dual(where, data))
    elif kind == "cascade":
        values.update(_parse_cascade(where, data))
    elif kind == "denoised":
        values.update(_parse_denoised(where, data, file))
    else:
        values.update(_parse_network(where, data, kind))
    return ZooEntry(**values, zoo_file=Path(file) if file is not None else None)


def _parse_network(where: _Where, data: Mapping, kind: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    shape = data["input_shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise where.error(
            "input_shape", f"{shape!r} is not [channels, height, width] of integers >= 1"
        )
    values["input_shape"] = tuple(shape)
    values["arch"] = _string(where, "arch", data["arch"])
    sigma = data["train_sigma"]
    if not _is_number(sigma) or sigma < 0:  # 0: trained without noise (a denoised classifier)
        raise where.error("train_sigma", f"{sigma!r} is not a number >= 0")
    sigma = float(sigma)
    named = sigma_in_id(where.entry_id or "")
    if named is not None and not math.isclose(named, sigma, rel_tol=0, abs_tol=1e-9):
        raise where.error(
            "train_sigma", f"{sigma} disagrees with the id, which names s{named:g}; fix one of them"
        )
    values["train_sigma"] = sigma
    values["input_layer"] = _parse_input_layer(where, data["input_layer"], shape[0])
    values["checkpoint"] = _parse_checkpoint(where, data.get("checkpoint"))
    values["source"] = _parse_source(where, data["source"])
    digest = data.get("sha256")
    if digest is not None:
        if not isinstance(digest, str) or not _SHA256_RE.match(digest.lower()):
            raise where.error("sha256", f"{digest!r} is not 64 hex digits (or null for unpinned)")
        values["sha256"] = digest.lower()
    if kind == "router":
        values["experts"] = _id_list(where, "experts", data["experts"], repeats=True)
        if len(values["experts"]) != data["num_classes"]:
            raise where.error(
                "num_classes",
                f"{data['num_classes']} but the router lists {len(values['experts'])} experts; "
                "a router has one output per expert",
            )
    return values


def _parse_dual(where: _Where, data: Mapping) -> dict[str, Any]:
    values: dict[str, Any] = {"router": _string(where, "router", data["router"])}
    values["experts"] = _id_list(where, "experts", data["experts"], repeats=True)
    if data.get("sigmas") is not None:
        sigmas = data["sigmas"]
        if not isinstance(sigmas, list):
            raise where.error("sigmas", f"{sigmas!r} is not a list of numbers > 0")
        values["sigmas"] = tuple(_positive_float(where, "sigmas", s) for s in sigmas)
        if len(sigmas) != len(values["experts"]):
            raise where.error(
                "sigmas", f"has {len(sigmas)} values for {len(values['experts'])} experts"
            )
    pairs = list(zip(values["experts"], values.get("sigmas") or [None] * len(values["experts"])))
    if len(set(pairs)) != len(pairs):
        raise where.error(
            "experts",
            f"lists an expert twice at the same sigma: {list(values['experts'])}; an expert may "
            "repeat only at different sigmas (give 'sigmas')",
        )
    if data.get("sigma_router") is not None:
        values["sigma_router"] = _positive_float(where, "sigma_router", data["sigma_router"])
    if data.get("alpha_router_fraction") is not None:
        fraction = data["alpha_router_fraction"]
        try:
            if not _is_number(fraction):
                raise ConfigError("not a number")
            values["alpha_router_fraction"] = check_alpha_router_fraction(fraction)
        except ConfigError:
            raise where.error(
                "alpha_router_fraction", f"{fraction!r} is not strictly in (0, 1)"
            ) from None
    return values


def _parse_cascade(where: _Where, data: Mapping) -> dict[str, Any]:
    from rsbench.cascade import ALPHA_SPLITS

    values: dict[str, Any] = {"experts": _id_list(where, "experts", data["experts"], True)}
    if data.get("sigmas") is not None:
        sigmas = data["sigmas"]
        if not isinstance(sigmas, list):
            raise where.error("sigmas", f"{sigmas!r} is not a list of numbers > 0")
        values["sigmas"] = tuple(_positive_float(where, "sigmas", s) for s in sigmas)
        if len(sigmas) != len(values["experts"]):
            raise where.error(
                "sigmas", f"has {len(sigmas)} values for {len(values['experts'])} experts"
            )
    if data.get("p0") is not None:
        p0 = data["p0"]
        if not _is_number(p0) or not 0.5 <= p0 < 1:
            raise where.error("p0", f"{p0!r} is not a threshold in [0.5, 1)")
        values["p0"] = float(p0)
    if data.get("alpha_split") is not None:
        split = data["alpha_split"]
        if split not in ALPHA_SPLITS:
            raise where.error("alpha_split", f"{split!r} is not one of {', '.join(ALPHA_SPLITS)}")
        values["alpha_split"] = split
    return values


def _parse_denoised(where: _Where, data: Mapping, file: Path | str | None) -> dict[str, Any]:
    shape = data["input_shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise where.error(
            "input_shape", f"{shape!r} is not [channels, height, width] of integers >= 1"
        )
    values: dict[str, Any] = {"input_shape": tuple(shape)}
    sigmas = data["sigmas"]
    if not isinstance(sigmas, list) or not sigmas:
        raise where.error("sigmas", f"{sigmas!r} is not a non-empty list of the sigmas it serves")
    values["sigmas"] = tuple(_positive_float(where, "sigmas", s) for s in sigmas)
    if len(set(values["sigmas"])) != len(values["sigmas"]):
        raise where.error("sigmas", f"lists a sigma twice: {sigmas}")
    for role in ("denoiser", "classifier"):
        values[role] = _parse_component(where, role, data[role], data, file)
    return values


def _parse_component(
    where: _Where, role: str, value: Any, data: Mapping, file: Path | str | None
) -> Mapping[str, Any]:
    """A denoised entry's ``denoiser`` / ``classifier``: a network (``arch`` + ``source`` +
    ``sha256``, like any entry) or a Hugging Face model (``hub``, ``repo_id`` + 40-hex ``revision``,
    or a local ``path`` written by ``save_pretrained``)."""
    if not isinstance(value, Mapping):
        raise where.error(role, f"{value!r} is not a mapping (arch + source, or hub + repo_id)")
    channels = data["input_shape"][0]
    if value.get("hub") is None:
        _check_keys(where, role, value, _NETWORK_COMPONENT_FIELDS)
        out = dict(value)
        out.setdefault("input_layer", {"type": "none"})
        out.setdefault("sha256", None)
        raw = _component_raw(where.entry_id or "", role, out, data)
        parse_entry(raw, file=file)  # validates arch, source, sha256, input layer, checkpoint
        if out["sha256"] is not None:
            out["sha256"] = str(out["sha256"]).lower()
        return _freeze(out)
    _check_keys(where, role, value, _HUB_COMPONENT_FIELDS)
    library = HUB_LIBRARIES[role]
    if value["hub"] != library:
        raise where.error(f"{role}.hub", f"{value['hub']!r} is not supported; use {library!r}")
    if (value.get("repo_id") is None) == (value.get("path") is None):
        raise where.error(role, "give either repo_id (with revision) or path, not both or neither")
    out = {"hub": library}
    for key in ("repo_id", "path", "subfolder", "scheduler_subfolder", "note"):
        if value.get(key) is not None:
            out[key] = _string(where, f"{role}.{key}", value[key])
    revision = value.get("revision")
    if revision is not None:
        if not isinstance(revision, str) or not _REVISION_RE.match(revision):
            raise where.error(
                f"{role}.revision",
                f"{revision!r} is not a 40-hex commit id (or null for unpinned); a branch or tag "
                "can move",
            )
        out["revision"] = revision
    elif value.get("repo_id") is not None:
        out["revision"] = None
    if value.get("resize") is not None:
        size = value["resize"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise where.error(f"{role}.resize", f"{size!r} is not an integer >= 1")
        out["resize"] = size
    if value.get("input_layer") is not None:
        out["input_layer"] = _parse_input_layer(where, value["input_layer"], channels).to_dict()
    return _freeze(out)


def _component_raw(entry_id: str, role: str, spec: Mapping, data: Mapping) -> dict[str, Any]:
    channels = data["input_shape"][0]
    raw = {
        "id": f"{entry_id}.{role}",
        "kind": "expert",
        "dataset": data["dataset"],
        "num_classes": channels if role == "denoiser" else data["num_classes"],
        "input_shape": list(data["input_shape"]),
        "arch": spec.get("arch"),
        "train_sigma": 0.0,
        "input_layer": _thaw(spec.get("input_layer")) or {"type": "none"},
        "source": _thaw(spec.get("source")),
        "sha256": spec.get("sha256"),
    }
    if spec.get("checkpoint") is not None:
        raw["checkpoint"] = _thaw(spec["checkpoint"])
    return raw


def component_entry(entry: ZooEntry, role: str) -> ZooEntry:
    """The network component ``role`` (``denoiser``/``classifier``) of a denoised entry as an entry
    of its own (id ``<id>.<role>``), for :func:`rsbench.models.load_model`. For a denoiser,
    ``num_classes`` is its channel count."""
    spec = getattr(entry, role)
    if entry.kind != "denoised" or spec is None or spec.get("hub"):
        raise ZooError(f"{entry.id}: has no network {role} (kind {entry.kind})")
    data = {
        "dataset": entry.dataset,
        "num_classes": entry.num_classes,
        "input_shape": list(entry.input_shape or ()),
    }
    return parse_entry(_component_raw(entry.id, role, spec, data), file=entry.zoo_file)


# --------------------------------------------------------------------------------------------------
# YAML reading


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """(C)SafeLoader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in out:
            raise ZooError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1}; remove one of them"
            )
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def _read_raw(path: Path, text: str | None = None) -> list:
    if text is None:
        if not path.exists() and not path.is_symlink():
            raise ZooError(f"zoo file {str(path)!r} does not exist; check --zoo / {ENV_ZOO}")
        text = safeyaml.read_text(path, "zoo file", ZooError)
    try:
        data = safeyaml.load(text, _StrictLoader, str(path), ZooError)
    except ZooError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        raise ZooError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ZooError(f"{path}: not valid YAML{line} ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return []
    if not isinstance(data, Mapping) or set(data) - {"models"}:
        raise ZooError(f"{path}: top level must be a mapping with the single key 'models:'")
    models = data.get("models")
    if models is None:
        return []
    if not isinstance(models, list):
        raise ZooError(f"{path}: 'models' must be a list of entries")
    return models


def read_zoo_file(path: str | os.PathLike) -> list[ZooEntry]:
    """Parse and validate every entry of one zoo file (ids unique within the file)."""
    path = Path(path).expanduser()
    entries: list[ZooEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(_read_raw(path)):
        entry = parse_entry(raw, file=path, index=index)
        if entry.id in seen:
            raise _Where(path, entry.id).error(
                "id", "appears twice in this file; ids must be unique"
            )
        seen.add(entry.id)
        entries.append(entry)
    return entries


def packaged_zoo_path() -> Path:
    """Path of the zoo file shipped inside the package."""
    return Path(__file__).resolve().with_name("model_zoo.yaml")


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


# --------------------------------------------------------------------------------------------------
# the zoo


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
        where = _Where(entry.zoo_file, entry.id)
        if entry.kind == "router":
            for expert_id in entry.experts:
                _expect_kind(zoo, where, "experts", expert_id, EXPERT_KINDS, entry.dataset)
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
            sigmas = entry.sigmas or tuple(zoo.get(e).train_sigma for e in entry.experts)
            if len(set(sigmas)) != len(sigmas):
                raise where.error(
                    "sigmas",
                    f"{list(sigmas)} repeat a value; each cascade stage needs its own sigma",
                )


def _check_served(expert: ZooEntry, where: _Where, sigma: float | None) -> None:
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
    zoo: Zoo, where: _Where, name: str, ref: str, kinds: Sequence[str], dataset: str
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
                raise _Where(path, entry.id).error(
                    "id",
                    f"is already defined in {origin[entry.id]}; ids must be unique across zoos "
                    "(a later file may only repeat an unpinned entry to add its sha256)",
                )
            origin[entry.id] = path
            entries.append(entry)
    zoo = Zoo(entries=tuple(entries), files=tuple(paths))
    _check_references(zoo)
    return zoo


# --------------------------------------------------------------------------------------------------
# writing


class _Dumper(yaml.SafeDumper):
    """Block style, with short lists of scalars in flow style ([3, 32, 32])."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, str | int | float | bool) or v is None for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_entries(entries: Sequence[ZooEntry], indent: int = 2) -> str:
    """YAML text of ``entries`` as list items indented by ``indent`` spaces (no ``models:`` line)."""
    text = yaml.dump(
        [e.to_yaml_dict() for e in entries],
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


_ITEM_RE = re.compile(r"^(\s*)- ", re.MULTILINE)


def write_entries(
    path: str | os.PathLike, entries: Sequence[ZooEntry], overwrite: bool = False
) -> Path:
    """Add validated ``entries`` to the zoo file at ``path`` (created if missing); return the path.

    New ids are appended as text, so the file's comments and layout stay. An id already in the file
    raises :class:`ZooError` unless ``overwrite=True``, which replaces that entry in place. The result
    is re-read and checked before it atomically replaces the file (references to other zoos are not
    checked here: :func:`load_zoo` does that).
    """
    path = Path(path).expanduser()
    entries = [parse_entry(e.to_yaml_dict(), file=path) for e in entries]
    new_ids = [e.id for e in entries]
    if len(set(new_ids)) != len(new_ids):
        raise ZooError(f"{path}: the entries to write repeat an id: {new_ids}")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    existing = read_zoo_file(path) if path.exists() else []
    existing_ids = [e.id for e in existing]
    clashes = [i for i in new_ids if i in existing_ids]
    if clashes and not overwrite:
        raise ZooError(
            f"{path}: entry {clashes[0]!r} already exists; pass overwrite=True (CLI: --overwrite)"
        )
    if clashes:
        merged = [next((e for e in entries if e.id == old.id), old) for old in existing]
        merged += [e for e in entries if e.id not in existing_ids]
        new_text = _replace_text(text, existing, merged)
    else:
        new_text = _append_text(text, entries, has_entries=bool(existing))
    expected = [e.to_yaml_dict() for e in _expected_order(existing, entries)]
    check = [parse_entry(raw, file=path).to_yaml_dict() for raw in _read_raw(path, new_text)]
    if check != expected:  # the text edit lost its way (unusual layout): write the data instead
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        new_text = header + "models:\n" + dump_entries(_expected_order(existing, entries))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files: keep the existing file's mode, else the usual umask default.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new_text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _expected_order(existing: list[ZooEntry], entries: list[ZooEntry]) -> list[ZooEntry]:
    new = {e.id: e for e in entries}
    out = [new.pop(e.id, e) for e in existing]
    return out + list(new.values())


def _item_indent(text: str) -> int:
    in_models = False
    for line in text.splitlines():
        if line.startswith("models:"):
            in_models = True
            continue
        match = _ITEM_RE.match(line)
        if in_models and match:
            return len(match.group(1))
    return 2


def _append_text(text: str, entries: list[ZooEntry], has_entries: bool) -> str:
    if not text.strip() or not re.search(r"^models:", text, re.MULTILINE):
        prefix = text if text.endswith("\n") or not text else text + "\n"
        return prefix + "models:\n" + dump_entries(entries)
    if not has_entries:  # "models:" or "models: []" with no items
        text = re.sub(r"^models:.*$", "models:", text, count=1, flags=re.MULTILINE)
    if not text.endswith("\n"):
        text += "\n"
    return text + dump_entries(entries, indent=_item_indent(text))


def _replace_text(text: str, existing: list[ZooEntry], merged: list[ZooEntry]) -> str:
    indent = _item_indent(text)
    lines = text.splitlines(keepends=True)
    item_re = re.compile(r"^" + " " * indent + r"- ")
    starts = [i for i, line in enumerate(lines) if item_re.match(line)]
    if len(starts) != len(existing):
        return ""  # layout not understood; the caller falls back to a rewrite
    out = lines[: starts[0]]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        block = lines[start:end]
        tail_start = len(block)
        while tail_start > 1 and (
            not block[tail_start - 1].strip() or block[tail_start - 1].lstrip().startswith("#")
        ):
            tail_start -= 1
        if merged[n] is existing[n]:
            out += block
        else:
            out.append(dump_entries([merged[n]], indent=indent))
            out += block[tail_start:]
    body = "".join(out)
    extra = merged[len(existing) :]
    if extra:
        body = (body if body.endswith("\n") else body + "\n") + dump_entries(extra, indent=indent)
    return body

"""Validation of zoo entries: :func:`parse_entry` turns one raw YAML mapping into a :class:`ZooEntry`.

Guarantees: unknown or missing fields, wrong types, a ``train_sigma`` that disagrees with an
``s<sigma>`` token in the id (:func:`sigma_in_id`), bad sources, input layers, reported numbers and
denoised components raise :class:`~rsbench.errors.ZooError` whose one-line message names the file,
the entry and the field (:class:`Where`), with a "did you mean" for a misspelt field or dataset.
One entry is checked on its own; references between entries are checked by
:func:`rsbench.zoo.registry.load_zoo`. :func:`component_entry` gives a denoised entry's network component as
an entry of its own.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rsbench.errors import (
    ALPHA_SPLITS,
    ConfigError,
    RSBenchError,
    ZooError,
    check_alpha_router_fraction,
    check_p0,
)
from rsbench.zoo.entry import (
    DATASETS,
    HUB_LIBRARIES,
    INPUT_LAYER_TYPES,
    KINDS,
    ROUTER_EXPERT_INPUTS,
    ROUTER_FEATURES,
    ROUTER_HEADS,
    ROUTER_INPUTS,
    SOURCE_TYPES,
    CheckpointSpec,
    InputLayerSpec,
    SourceSpec,
    ZooEntry,
    freeze,
    thaw,
)

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
    "router": _COMMON_FIELDS + _NET_FIELDS + ("experts", "router_input", "trained_on"),
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


class Where:
    """Formats :class:`ZooError` messages that name the file, the entry and the field."""

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


def _positive_float(where: Where, name: str, value: Any) -> float:
    if not _is_number(value) or value <= 0:
        raise where.error(name, f"{value!r} is not a number > 0")
    return float(value)


def _string(where: Where, name: str, value: Any, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise where.error(name, f"{value!r} is not a non-empty string")
    return value


def _id_list(where: Where, name: str, value: Any, repeats: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise where.error(name, f"{value!r} is not a non-empty list of zoo ids")
    ids = tuple(_string(where, name, v) for v in value)
    if not repeats and len(set(ids)) != len(ids):
        raise where.error(name, f"lists an id twice: {list(ids)}")
    return ids


def _check_keys(where: Where, name: str | None, data: Mapping, allowed: Sequence[str]) -> None:
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


def _parse_input_layer(where: Where, value: Any, channels: int) -> InputLayerSpec:
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


def _parse_checkpoint(where: Where, value: Any) -> CheckpointSpec:
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


def _parse_source(where: Where, value: Any) -> SourceSpec:
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


def _parse_reported(where: Where, value: Any) -> Mapping[str, Any]:
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
    return freeze(out)


def parse_entry(  # noqa: C901 — one validation step per field of each kind, each with its own message
    data: Any, file: Path | str | None = None, index: int | None = None
) -> ZooEntry:
    """Validate one raw YAML mapping and return the frozen :class:`ZooEntry`.

    Checks one entry on its own (references to other ids are checked by :func:`load_zoo`).
    Raises :class:`ZooError` naming ``file``, the entry and the field.
    """
    where = Where(file, None, index)
    if not isinstance(data, Mapping):
        raise where.error(None, f"is not a mapping (got {type(data).__name__})")
    entry_id = data.get("id")
    if not isinstance(entry_id, str) or not _ID_RE.match(entry_id):
        raise where.error("id", f"{entry_id!r} is not an id (letters, digits, '.', '_', '+', '-')")
    where = Where(file, entry_id, index)
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
        values["recipe"] = freeze(data["recipe"])
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


def _parse_network(where: Where, data: Mapping, kind: str) -> dict[str, Any]:
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
        if data.get("router_input") is not None:
            values["router_input"] = _parse_router_input(
                where, data["router_input"], values["experts"], values["arch"]
            )
        if data.get("trained_on") is not None:
            values["trained_on"] = _parse_trained_on(where, data["trained_on"])
    return values


def _parse_router_input(
    where: Where, value: Any, experts: Sequence[str], arch: str
) -> Mapping[str, Any]:
    """A router's ``router_input``: its type and, over experts, the experts that feed it (a
    sub-list of the router's own experts, hence of its dual's), their sigmas and features."""
    if not isinstance(value, Mapping):
        raise where.error("router_input", f"{value!r} is not a mapping like {{type: pixels}}")
    kind = value.get("type")
    if kind not in ROUTER_INPUTS:
        raise where.error("router_input.type", f"{kind!r} is not one of {', '.join(ROUTER_INPUTS)}")
    if kind == "denoised":
        return _parse_denoised_input(where, value, arch)
    if kind not in ROUTER_EXPERT_INPUTS:
        _check_keys(where, "router_input", value, ("type",))
        return freeze({"type": kind})
    _check_keys(where, "router_input", value, ("type", "experts", "sigmas", "features"))
    fed = _id_list(where, "router_input.experts", value.get("experts"), repeats=True)
    unknown = [e for e in fed if e not in experts]
    if unknown:
        raise where.error(
            "router_input.experts",
            f"{unknown[0]!r} is not one of the router's experts {list(experts)}; a router may look "
            "only at the experts of its dual",
        )
    if kind == "experts-top" and len(fed) != 1:
        raise where.error("router_input.experts", f"lists {len(fed)} experts; experts-top uses one")
    out: dict[str, Any] = {"type": kind, "experts": list(fed)}
    if value.get("sigmas") is not None:
        sigmas = value["sigmas"]
        if not isinstance(sigmas, list) or len(sigmas) != len(fed):
            raise where.error("router_input.sigmas", f"{sigmas!r} is not one sigma per expert")
        out["sigmas"] = [_positive_float(where, "router_input.sigmas", s) for s in sigmas]
    features = value.get("features", "log-softmax")
    if features not in ROUTER_FEATURES:
        raise where.error(
            "router_input.features", f"{features!r} is not one of {', '.join(ROUTER_FEATURES)}"
        )
    out["features"] = features
    if arch not in ROUTER_HEADS:
        raise where.error(
            "arch",
            f"{arch!r}: a router over experts has a head arch, one of {', '.join(ROUTER_HEADS)}",
        )
    return freeze(out)


def _parse_denoised_input(where: Where, value: Mapping, arch: str) -> Mapping[str, Any]:
    """``router_input`` of type ``denoised``: the router's pixel network behind the denoiser of
    the ``denoised`` zoo entry ``denoiser`` at level ``sigma`` (the entry's kind, dataset and
    served sigmas are checked by :func:`rsbench.zoo.registry.load_zoo`), the denoiser's
    ``denoiser_identity`` it was trained with (optional; checked when loaded) and ``forwards``,
    what one router sample costs in expert-sized forward passes (required: ``rsbench compare``
    counts it)."""
    _check_keys(
        where,
        "router_input",
        value,
        ("type", "denoiser", "sigma", "denoiser_identity", "forwards"),
    )
    if value.get("denoiser") is None:
        raise where.error(
            "router_input.denoiser",
            "is required: the id of a denoised zoo entry whose denoiser the router looks through",
        )
    out: dict[str, Any] = {
        "type": "denoised",
        "denoiser": _string(where, "router_input.denoiser", value["denoiser"]),
    }
    if value.get("sigma") is None:
        raise where.error("router_input.sigma", "is required: the denoiser's noise level")
    out["sigma"] = _positive_float(where, "router_input.sigma", value["sigma"])
    if value.get("denoiser_identity") is not None:
        out["denoiser_identity"] = _string(
            where, "router_input.denoiser_identity", value["denoiser_identity"]
        )
    if value.get("forwards") is None:
        raise where.error(
            "router_input.forwards",
            "is required: expert-sized forward passes per router sample (denoiser + network; "
            "rsbench train router counts them by multiply-adds)",
        )
    out["forwards"] = _positive_float(where, "router_input.forwards", value["forwards"])
    if arch in ROUTER_HEADS:
        raise where.error(
            "arch",
            f"{arch!r} is a head over experts; a denoised router's network takes the denoised "
            "image (e.g. pooled_mlp, fmnist_cnn)",
        )
    return freeze(out)


def _parse_trained_on(where: Where, value: Any) -> Mapping[str, Any]:
    """A router's ``trained_on``: the source ``dataset``, ``split`` and ``indices`` text."""
    if not isinstance(value, Mapping):
        raise where.error("trained_on", f"{value!r} is not a mapping {{dataset, split, indices}}")
    _check_keys(where, "trained_on", value, ("dataset", "split", "indices"))
    out = {}
    for key in ("dataset", "split", "indices"):
        if value.get(key) is None:
            raise where.error(f"trained_on.{key}", "is required")
        out[key] = _string(where, f"trained_on.{key}", str(value[key]))
    try:
        from rsbench.data.indices import parse_indices

        parse_indices(out["indices"])
    except (RSBenchError, ValueError) as exc:
        raise where.error(
            "trained_on.indices", f"{out['indices']!r} is not index text ({exc})"
        ) from None
    return freeze(out)


def _parse_dual(where: Where, data: Mapping) -> dict[str, Any]:
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


def _parse_cascade(where: Where, data: Mapping) -> dict[str, Any]:
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
        try:
            if not _is_number(p0):
                raise ConfigError("not a number")
            values["p0"] = check_p0(p0)
        except ConfigError:
            raise where.error("p0", f"{p0!r} is not a threshold in [0.5, 1)") from None
    if data.get("alpha_split") is not None:
        split = data["alpha_split"]
        if split not in ALPHA_SPLITS:
            raise where.error("alpha_split", f"{split!r} is not one of {', '.join(ALPHA_SPLITS)}")
        values["alpha_split"] = split
    return values


def _parse_denoised(where: Where, data: Mapping, file: Path | str | None) -> dict[str, Any]:
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
    where: Where, role: str, value: Any, data: Mapping, file: Path | str | None
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
        return freeze(out)
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
    return freeze(out)


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
        "input_layer": thaw(spec.get("input_layer")) or {"type": "none"},
        "source": thaw(spec.get("source")),
        "sha256": spec.get("sha256"),
    }
    if spec.get("checkpoint") is not None:
        raw["checkpoint"] = thaw(spec["checkpoint"])
    return raw


def component_entry(entry: ZooEntry, role: str) -> ZooEntry:
    """The network component ``role`` (``denoiser``/``classifier``) of a denoised entry as an entry
    of its own (id ``<id>.<role>``), for :func:`rsbench.models.loading.load_model`. For a denoiser,
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

"""Checkpoint files: recognising their format and loading them without running code.

Guarantees: :func:`sniff_format` names a file's format from its bytes (safetensors, torch zip,
pickle, tar, zip, HTML, empty); :func:`check_checkpoint` refuses anything that is not a complete
checkpoint (an HTML login page, a truncated safetensors file, an archive) with one
:class:`~rsbench.errors.WeightsError` line. :func:`load_checkpoint` reads safetensors, or
``torch.load(weights_only=True)``: a checkpoint that needs code to unpickle is refused (nothing of it
runs) with a message saying how to convert it. :func:`load_state_dict` applies a zoo entry's
checkpoint layout (``checkpoint.state_dict_key``, ``checkpoint.strip_prefix``) and checks that every
value is a tensor. Where the file comes from is :mod:`rsbench.weights.sources`.
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsbench.errors import WeightsError

if TYPE_CHECKING:
    from rsbench.zoo.entry import ZooEntry

_CONVERT_HINT = (
    "convert it once where you trust the file: "
    "python -c \"import torch; c = torch.load('IN', weights_only=False); "
    "torch.save(c['state_dict'], 'OUT.pth')\" (or safetensors.torch.save_file), "
    "then point the zoo entry's source at OUT.pth"
)


def looks_like_html(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) starts like an HTML or XML page."""
    start = head.lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or (
        start.startswith(b"<") and b"<html" in start[:1024]
    )


def is_zip(path: Path) -> bool:
    """True when ``path`` starts like a zip file (``zipfile.is_zipfile`` also says yes to a tar that
    merely contains a zip, such as a torch checkpoint)."""
    with open(path, "rb") as handle:
        return handle.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def _safetensors_ok(path: Path) -> bool:
    import json

    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            return False
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            return False
        try:
            header = json.loads(handle.read(header_len))
        except ValueError:
            return False
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + header_len + max(ends, default=0) == size


def sniff_format(path: str | os.PathLike) -> str:
    """``safetensors``, ``torch-zip``, ``pickle``, ``tar``, ``zip``, ``html``, ``empty`` or ``unknown``."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if not head:
        return "empty"
    if looks_like_html(head):
        return "html"
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return "unknown"
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        return "torch-zip" if any(n.endswith("data.pkl") for n in names) else "zip"
    # safetensors before pickle: its first 8 bytes are the header length, and a length whose low
    # byte is 0x80 (e.g. 384) starts the file like a pickle's PROTO opcode
    if len(head) >= 9 and head[8:9] == b"{" and _safetensors_ok(path):
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    if head[:2] == b"\x1f\x8b" or (len(head) >= 262 and head[257:262] == b"ustar"):
        return "tar"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def check_checkpoint(path: Path, what: str) -> None:
    """Raise :class:`WeightsError` unless ``path`` holds a complete checkpoint file."""
    kind = sniff_format(path)
    if kind == "html":
        raise WeightsError(
            f"{what}: got an HTML page, not a checkpoint (a login, quota or confirmation page?); "
            "download the file in a browser and use a `file` source"
        )
    if kind == "empty":
        raise WeightsError(f"{what}: the file is empty")
    if kind == "safetensors" and not _safetensors_ok(path):
        raise WeightsError(f"{what}: the safetensors file is truncated or corrupt")
    if kind in ("tar", "zip"):
        raise WeightsError(
            f"{what}: the file is an archive, not a checkpoint; use an archive_url member"
        )
    if kind == "unknown":
        raise WeightsError(
            f"{what}: not a readable checkpoint (truncated, or neither a torch file nor safetensors)"
        )


def _refusal(path: Path, exc: BaseException) -> WeightsError:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), None)
    reason = reason or (lines[0] if lines else type(exc).__name__)
    hint = _CONVERT_HINT.replace("IN", str(path))
    return WeightsError(
        f"{path} needs code to unpickle ({reason[:160]}); rsbench loads tensors only and ran none of "
        f"it: {hint}"
    )


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Read ``path`` without running code: safetensors, or ``torch.load(weights_only=True)``."""
    import torch

    path = Path(path)
    kind = sniff_format(path)
    if kind in ("html", "empty", "unknown", "tar", "zip"):
        check_checkpoint(path, str(path))
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: unreadable safetensors file ({exc})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(path, exc) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path}: not a readable torch checkpoint (truncated? {first})"
        ) from None


def load_state_dict(path: str | os.PathLike, entry: ZooEntry) -> dict[str, Any]:
    """The entry's state dict from ``path``: ``checkpoint.state_dict_key`` applied, prefix stripped.

    Every value must be a tensor and every key must carry ``checkpoint.strip_prefix``; otherwise a
    :class:`WeightsError` names the first offending key and the entry field to fix.
    """
    import torch

    obj = load_checkpoint(path)
    key = entry.checkpoint.state_dict_key
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            top = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
            raise WeightsError(
                f"{entry.id}: checkpoint has no {key!r} (checkpoint.state_dict_key); top level: {top}"
            )
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{entry.id}: checkpoint holds a {type(obj).__name__}, not a state dict")
    bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        top = list(obj)[:8]
        raise WeightsError(
            f"{entry.id}: {bad!r} in the checkpoint is a {type(obj[bad]).__name__}, not a tensor; "
            f"set checkpoint.state_dict_key to the state dict (top level: {top})"
        )
    prefix = entry.checkpoint.strip_prefix
    if not prefix:
        return dict(obj)
    out: dict[str, Any] = {}
    for name, tensor in obj.items():
        if not name.startswith(prefix):
            raise WeightsError(
                f"{entry.id}: key {name!r} lacks checkpoint.strip_prefix {prefix!r}; fix strip_prefix"
            )
        out[name[len(prefix) :]] = tensor
    return out

"""Import the published checkpoints from an archive or folder the user already has.

For the user who downloaded Cohen et al.'s or SmoothAdv's ``models.tar.gz`` in a browser, or has the
authors' extracted folder. Guarantees of :func:`import_archive`:

* The source is a ``.tar`` / ``.tar.gz`` / ``.tgz`` / ``.zip`` or a folder. Only regular files are
  considered (links and special members are skipped, folders are walked without following links).
* A member matches a zoo entry with an ``archive_url`` source when its path is the entry's
  ``member`` path (``models/...``, ``pretrained_models/...``), that path below extra folders (an
  enclosing folder of the archive), or that path less its first folder (a folder passed at the level
  of the authors' ``models/``). When several members match one entry, the one equal to the entry's
  path wins; otherwise the entry is reported as ambiguous and nothing is imported for it.
* Each matched member is copied (a tar is read once, in order) to the path the entry's cache uses
  (``rsbench.weights.cache.cache_path``), via a temporary file, with its sha256 recorded as the digest
  first seen. A pinned entry whose digest differs is refused and nothing of it is kept.
* Each copied checkpoint is then loaded strictly into the entry's architecture and run forward once
  on a random input (finite logits of the entry's class count); a failure removes the copy.
* The result lists the entries that became available (each with its sha256, as a pinned copy of the
  entry, ready for ``rsbench.zoo.registry.write_entries``), the failures with their reason, and the
  checkpoint-like members (``.pth``, ``.pth.tar``, ``.pt``, ``.ckpt``, ``.safetensors``) that matched no
  entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from rsbench.errors import WeightsError
from rsbench.zoo.entry import ZooEntry
from rsbench.zoo.registry import Zoo

CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".pt", ".ckpt", ".safetensors", ".bin")


@dataclass
class ImportResult:
    """What :func:`import_archive` did: pinned entries made available, failures, unmatched members."""

    imported: list[ZooEntry] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (entry id, reason)
    unmatched: list[str] = field(default_factory=list)
    other_files: int = 0
    members: dict[str, str] = field(default_factory=dict)  # entry id -> member name


# --------------------------------------------------------------------------------------------------
# reading the source


def _norm(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _kind(path: Path) -> str:
    if path.is_dir():
        return "dir"
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:2] == b"PK":
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    raise WeightsError(
        f"{path} is neither a folder nor a .tar/.tar.gz/.zip archive; pass the downloaded "
        "models.tar.gz or the folder it extracts to"
    )


def list_members(path: Path) -> list[str]:
    """Names (POSIX, relative) of the regular files in the archive or folder ``path``."""
    kind = _kind(path)
    try:
        if kind == "dir":
            out = []
            for folder, dirs, files in os.walk(path):  # does not follow links to folders
                dirs.sort()
                for name in sorted(files):
                    full = Path(folder) / name
                    if full.is_file() and not full.is_symlink():
                        out.append(full.relative_to(path).as_posix())
            return out
        if kind == "zip":
            with zipfile.ZipFile(path) as archive:
                return [
                    _norm(i.filename)
                    for i in archive.infolist()
                    if not i.is_dir() and not stat.S_ISLNK(i.external_attr >> 16)
                ]
        with tarfile.open(path, "r:*") as archive:
            return [_norm(m.name) for m in archive if m.isfile()]
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise WeightsError(f"{path}: cannot read the archive ({exc}); is it complete?") from None


def _streams(path: Path, wanted: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
    """``(name, stream)`` for each wanted regular member, reading a tar once from start to end."""
    kind = _kind(path)
    if kind == "dir":
        for name in sorted(wanted):
            with open(path / name, "rb") as file:
                yield name, file
        return
    if kind == "zip":
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if _norm(info.filename) in wanted and not info.is_dir():
                    with archive.open(info) as member_file:
                        yield _norm(info.filename), member_file
        return
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            if member.isfile() and _norm(member.name) in wanted:
                handle = archive.extractfile(member)
                if handle is not None:
                    with handle:
                        yield _norm(member.name), handle


# --------------------------------------------------------------------------------------------------
# matching


def match_members(
    names: Iterable[str], entries: Iterable[ZooEntry]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Map entry id -> member name; also entry id -> candidates for entries matched ambiguously."""
    parts = {name: PurePosixPath(name).parts for name in names}
    found: dict[str, str] = {}
    ambiguous: dict[str, list[str]] = {}
    for entry in entries:
        source = entry.source
        if source is None or source.type != "archive_url" or not source.member:
            continue
        wanted = PurePosixPath(_norm(source.member)).parts
        inner = wanted[1:]  # a folder passed at the level of the authors' models/ folder
        candidates = [
            n
            for n, p in parts.items()
            if p[-len(wanted) :] == wanted or (len(wanted) > 1 and p == inner)
        ]
        exact = [n for n in candidates if parts[n] == wanted]
        if exact or len(candidates) == 1:
            found[entry.id] = (exact or candidates)[0]
        elif candidates:
            ambiguous[entry.id] = sorted(candidates)
    return found, ambiguous


# --------------------------------------------------------------------------------------------------
# import


def _copy(stream: IO[bytes], dest: Path) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.import.part")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest()


def _forward_check(entry: ZooEntry, cache_dir: str | os.PathLike | None, device: str) -> None:
    import torch

    from rsbench.models.loading import load_model

    model = load_model(entry, device=device, cache_dir=cache_dir)
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand((1, *(entry.input_shape or ())), generator=generator).to(device)
    with torch.no_grad():
        logits = model(batch)
    if tuple(logits.shape) != (1, entry.num_classes):
        raise WeightsError(
            f"forward pass gave shape {tuple(logits.shape)}, expected (1, {entry.num_classes})"
        )
    if not bool(torch.isfinite(logits).all()):
        raise WeightsError("forward pass gave non-finite logits")


def import_archive(
    path: str | os.PathLike,
    zoo: Zoo,
    cache_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    on_entry: Callable[[str, str, str], None] | None = None,
) -> ImportResult:
    """Copy the members of ``path`` that zoo entries name into the cache, checked; see the module.

    ``on_entry(entry_id, status, detail)`` is called as each entry is done (status ``ok`` / ``FAIL``).
    """
    from rsbench.weights import cache

    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"{path} does not exist; pass the downloaded archive or its folder")
    names = list_members(path)
    candidates = [e for e in zoo if e.source is not None and e.source.type == "archive_url"]
    found, ambiguous = match_members(names, candidates)
    result = ImportResult(members=dict(found))
    report = on_entry or (lambda *_: None)
    for entry_id, options in ambiguous.items():
        reason = f"several members match: {', '.join(options[:3])}; import a folder holding one"
        result.failed.append((entry_id, reason))
        report(entry_id, "FAIL", reason)
    by_member: dict[str, list[ZooEntry]] = {}
    for entry_id, member in found.items():
        by_member.setdefault(member, []).append(zoo.get(entry_id))
    for member, stream in _streams(path, set(by_member)):
        entries = by_member[member]
        first = cache.cache_path(entries[0], cache_dir)
        assert first is not None
        try:
            seen = _copy(stream, first)
        except OSError as exc:
            for entry in entries:
                result.failed.append((entry.id, f"cannot copy {member} ({exc})"))
                report(entry.id, "FAIL", result.failed[-1][1])
            continue
        for entry in entries:
            _import_one(entry, member, first, seen, cache_dir, device, result, report)
    matched = set(found.values()) | {n for options in ambiguous.values() for n in options}
    for name in names:
        if name in matched:
            continue
        if name.lower().endswith(CHECKPOINT_SUFFIXES):
            result.unmatched.append(name)
        else:
            result.other_files += 1
    return result


def _import_one(
    entry: ZooEntry,
    member: str,
    copied: Path,
    seen: str,
    cache_dir: str | os.PathLike | None,
    device: str,
    result: ImportResult,
    report: Callable[[str, str, str], None],
) -> None:
    from rsbench.errors import RSBenchError
    from rsbench.weights import cache

    dest = cache.cache_path(entry, cache_dir)
    assert dest is not None
    if dest != copied:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copied, dest)
    if entry.sha256 is not None and entry.sha256 != seen:
        reason = f"sha256 of {member} is {seen}, but the entry pins {entry.sha256}; not kept"
        _forget(dest)
        result.failed.append((entry.id, reason))
        report(entry.id, "FAIL", reason)
        return
    cache.write_first_seen(dest, seen)
    pinned = dataclasses.replace(entry, sha256=seen)
    try:
        _forward_check(pinned, cache_dir, device)
    except (RSBenchError, RuntimeError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _forget(dest)
        result.failed.append((entry.id, f"{member}: {reason}; not kept"))
        report(entry.id, "FAIL", result.failed[-1][1])
        return
    result.imported.append(pinned)
    report(entry.id, "ok", f"{member}  sha256 {seen}")


def _forget(path: Path) -> None:
    with suppress(OSError):
        path.unlink()
    with suppress(OSError):
        path.with_name(path.name + ".sha256").unlink()


__all__ = ["ImportResult", "import_archive", "list_members", "match_members"]

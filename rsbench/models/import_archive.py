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
* Refused before a byte is copied, each with one ``FAIL`` line naming the member: a name that
  several members of the archive share, a symbolic or hard link at the entry's path (reported as
  a link, not as a missing member), and a member larger than the size bound
  (:func:`rsbench.weights.archive.max_member_bytes`: 1 GiB, ``--max-member-size`` /
  ``$RSBENCH_MAX_MEMBER_BYTES``). A damaged or truncated archive is one error line.
* Each matched member is copied once (a tar is read once, in order) to a fresh temporary name in
  the content-addressed cache (:func:`rsbench.weights.cache.stage_path`), hashed, and checked for
  every entry that names it: the digest against a pin the zoo already holds (the ``--zoo-file``
  included), the format, a strict load into the entry's architecture and one forward pass on a
  random input (finite logits of the entry's class count). Only a member that passes is renamed
  into place (``sha256/<hex>``, :func:`rsbench.weights.cache.commit`); a failure deletes the
  temporary file and nothing else: a verified file already in the cache, and the zoo file, are
  never replaced or deleted by a failed import.
* The result lists the entries that became available (each with its sha256, as a pinned copy of the
  entry, ready for ``rsbench.zoo.files.write_entries``), the failures with their reason, and the
  checkpoint-like members (``.pth``, ``.pth.tar``, ``.pt``, ``.ckpt``, ``.safetensors``) that matched no
  entry.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
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
    except (OSError, EOFError, tarfile.TarError, zlib.error, ValueError) as exc:
        raise WeightsError(
            f"{path}: the archive is damaged or truncated ({exc}); download it again"
        ) from None
    raise WeightsError(
        f"{path} is neither a folder nor a .tar/.tar.gz/.zip archive; pass the downloaded "
        "models.tar.gz or the folder it extracts to"
    )


@dataclass(frozen=True)
class Member:
    """One member of an archive or folder: its normalised name, size, kind and link target."""

    name: str
    size: int
    kind: str  # "file", "symlink", "hardlink" or "other"
    target: str = ""


def survey(path: Path) -> list[Member]:
    """Every member of the archive or folder ``path`` but folders (regular files, links, others),
    in order, repeated names included; a damaged archive is one :class:`WeightsError` line."""
    kind = _kind(path)
    try:
        if kind == "dir":
            out = []
            for folder, dirs, files in os.walk(path):  # does not follow links to folders
                dirs.sort()
                for name in sorted(files):
                    full = Path(folder) / name
                    rel = full.relative_to(path).as_posix()
                    if full.is_symlink():
                        out.append(Member(rel, 0, "symlink", os.readlink(full)))
                    elif full.is_file():
                        out.append(Member(rel, full.stat().st_size, "file"))
                    else:
                        out.append(Member(rel, 0, "other"))
            return out
        if kind == "zip":
            with zipfile.ZipFile(path) as archive:
                members = []
                for info in archive.infolist():
                    if info.is_dir():
                        continue
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        target = archive.read(info)[:200].decode("utf-8", "replace")
                        members.append(Member(_norm(info.filename), 0, "symlink", target))
                    elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                        members.append(Member(_norm(info.filename), 0, "other"))
                    else:
                        members.append(Member(_norm(info.filename), info.file_size, "file"))
                return members
        with tarfile.open(path, "r:*") as tar:
            members = []
            for m in tar:
                if m.isdir():
                    continue
                link = "symlink" if m.issym() else "hardlink" if m.islnk() else None
                kind_ = "file" if m.isfile() else link or "other"
                members.append(Member(_norm(m.name), m.size, kind_, m.linkname))
            return members
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise WeightsError(f"{path}: cannot read the archive ({exc}); is it complete?") from None


def list_members(path: Path) -> list[str]:
    """Names (POSIX, relative) of the regular files in the archive or folder ``path``."""
    return [m.name for m in survey(path) if m.kind == "file"]


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


def _forward_check(entry: ZooEntry, staged: Path, device: str) -> None:
    """Strictly load ``staged`` (the bytes ``entry`` pins) into the entry's architecture and run it
    forward once (:func:`rsbench.models.network.forward_check`)."""
    from rsbench.models.loading import load_model
    from rsbench.models.network import forward_check
    from rsbench.zoo.entry import SourceSpec

    local = dataclasses.replace(entry, source=SourceSpec(type="file", path=str(staged)))
    model = load_model(local, device=device)
    forward_check(model, entry, batch=1, device=device)


def import_archive(  # noqa: C901 - one pass over the members; each refusal is one branch
    path: str | os.PathLike,
    zoo: Zoo,
    cache_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    on_entry: Callable[[str, str, str], None] | None = None,
    max_member_bytes: int | None = None,
) -> ImportResult:
    """Copy the members of ``path`` that zoo entries name into the cache, checked; see the module.

    ``on_entry(entry_id, status, detail)`` is called as each entry is done (status ``ok`` / ``FAIL``).
    ``max_member_bytes`` overrides the size bound (:func:`rsbench.weights.archive.max_member_bytes`).
    """
    from rsbench.weights import archive as archives
    from rsbench.weights import cache

    limit = archives.max_member_bytes(max_member_bytes)
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"{path} does not exist; pass the downloaded archive or its folder")
    members = survey(path)
    names = [m.name for m in members if m.kind == "file"]
    counts = Counter(m.name for m in members)  # a file and a link of one name count as two
    sizes: dict[str, int] = {}
    for m in members:
        if m.kind == "file":
            sizes[m.name] = max(sizes.get(m.name, 0), m.size)
    links = {m.name: m for m in members if m.kind != "file"}
    candidates = [e for e in zoo if e.source is not None and e.source.type == "archive_url"]
    found, ambiguous = match_members(dict.fromkeys(names), candidates)
    result = ImportResult(members=dict(found))
    report = on_entry or (lambda *_: None)

    def fail(entry_id: str, reason: str) -> None:
        result.failed.append((entry_id, reason))
        report(entry_id, "FAIL", reason)

    unmatched = [e for e in candidates if e.id not in found and e.id not in ambiguous]
    linked, _ = match_members(links, unmatched)
    for entry_id, name in linked.items():
        link = links[name]
        what = {"symlink": "a symbolic link", "hardlink": "a hard link"}.get(link.kind)
        detail = f"{what} (to {link.target!r})" if what else "not a regular file"
        fail(entry_id, f"member {name!r} is {detail}, not a checkpoint file; refusing it")
    for entry_id, options in ambiguous.items():
        fail(
            entry_id,
            f"several members match: {', '.join(options[:3])}; import a folder holding one",
        )
    by_member: dict[str, list[ZooEntry]] = {}
    for entry_id, member in found.items():
        if counts[member] > 1:
            fail(
                entry_id,
                f"the archive holds {counts[member]} members named {member!r}; refusing it "
                "(which one is meant is ambiguous: extract the right one and import that file)",
            )
        elif sizes[member] > limit:
            fail(
                entry_id,
                f"member {member!r} is {sizes[member]} bytes, over the {limit}-byte limit for a "
                "checkpoint; refused before copying (if it is right, raise the limit with "
                f"--max-member-size or ${archives.ENV_MAX_MEMBER})",
            )
        else:
            by_member.setdefault(member, []).append(zoo.get(entry_id))
    if by_member:
        cache.clean_stale_stages(cache_dir)
    for member, stream in _streams(path, set(by_member)):
        entries = by_member[member]
        staged = cache.stage_path(cache_dir)
        try:
            try:
                with open(staged, "wb") as out:
                    seen = archives.copy_bounded(stream, out, entries[0].id, member, limit)
            except (OSError, WeightsError) as exc:
                for entry in entries:
                    fail(entry.id, f"cannot copy {member} ({exc})")
                continue
            passed = [
                e for e in entries if _import_one(e, member, staged, seen, device, result, report)
            ]
            if passed:
                cache.commit(staged, seen, cache_dir)
            for entry in passed:
                with cache.cache_lock(cache.entry_lock_target(entry, cache_dir)):
                    cache.write_ref(entry, seen, cache_dir)  # first seen wins; never replaced
        finally:
            staged.unlink(missing_ok=True)
    matched = set(found.values()) | {n for options in ambiguous.values() for n in options}
    matched |= set(linked.values())
    for name in dict.fromkeys(names):
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
    staged: Path,
    seen: str,
    device: str,
    result: ImportResult,
    report: Callable[[str, str, str], None],
) -> bool:
    """Check the staged copy of ``member`` for ``entry``; record ``ok`` or ``FAIL``; True when ok."""
    from rsbench.errors import RSBenchError

    if entry.sha256 is not None and entry.sha256 != seen:
        where = f" in {entry.zoo_file}" if entry.zoo_file is not None else ""
        reason = (
            f"sha256 of {member} is {seen}, but the entry pins {entry.sha256}{where}; not kept "
            "(the pinned file, if cached, is untouched)"
        )
        result.failed.append((entry.id, reason))
        report(entry.id, "FAIL", reason)
        return False
    pinned = dataclasses.replace(entry, sha256=seen)
    try:
        _forward_check(pinned, staged, device)
    except RSBenchError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = reason.replace(f"{entry.id}: ", "", 1).replace(str(staged), member)
        result.failed.append((entry.id, f"{member}: {reason}; not kept"))
        report(entry.id, "FAIL", result.failed[-1][1])
        return False
    result.imported.append(pinned)
    report(entry.id, "ok", f"{member}  sha256 {seen}")
    return True


__all__ = ["ImportResult", "Member", "import_archive", "list_members", "match_members", "survey"]

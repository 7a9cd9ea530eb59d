"""Fetch and verify the checkpoints named by zoo entries: the sources and the fetch.

Guarantees:

* Sources: ``hf`` (Hugging Face Hub via ``huggingface_hub.hf_hub_download`` at the entry's revision,
  which must be a 40-hex commit unless :func:`allowing_unpinned_revisions` / ``--allow-unpinned``;
  files live in the standard HF cache, see :func:`hf_cache_dir`; a commit's cached file is used
  without any request; ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` are read when a file is fetched, and an
  unreachable endpoint fails at once instead of after huggingface_hub's retries),
  ``url``, ``archive_url`` (one member of a .tar / .tar.gz / .tgz / .zip at a URL), ``package`` (a file
  shipped inside ``rsbench/``) and ``file`` (a local path, relative to the zoo file's folder).
* Downloads (:mod:`rsbench.weights.download`: Google Drive's confirmation flow, HTTP range resume) go to the
  cache (``cache_dir`` argument, else ``$RSBENCH_CACHE``, else ``platformdirs.user_cache_dir
  ("rsbench")``) under a partial name, and are renamed into place only after the size matches the
  server's, the bytes are not an HTML page, the payload is a readable checkpoint (or archive) and
  the sha256 matches a pinned entry. A truncated download keeps its partial file for the next
  attempt to resume; any other failure removes it: nothing bad stays in the cache. An archive is
  downloaded once and kept; every entry naming it extracts its member from it (:func:`fetch_archive`).
  A cached pinned file is re-hashed on every fetch.
* Archive members are extracted one at a time by name into a path rsbench computes: absolute names,
  ``..`` components, links and non-regular members are refused.
* Unpinned entries (``sha256: null``) log a warning with the digest seen, which is also returned
  (:class:`FetchedWeights`). The sha256 of every downloaded or extracted file is recorded next to it
  when it enters the cache (``<file>.sha256``); a cached unpinned file that no longer has it is
  refused (an archive member is extracted again from its intact archive) with a message that says
  how to fetch it again (``rsbench zoo check ID --download --refetch``, :func:`remove_cached`); a
  cached Hub blob is checked against the digest its name records. ``require_pinned=True`` refuses
  unpinned entries.
* :func:`load_state_dict` reads safetensors, or ``torch.load(weights_only=True)``: a checkpoint that
  needs code to unpickle is refused (nothing of it runs) with a message saying how to convert it.

This module owns the sources (``url``, ``archive_url``, ``package``, ``file``) and :func:`fetch`;
the parts live in :mod:`rsbench.weights.cache` (cache layout, recorded digests, lock),
:mod:`rsbench.weights.hf` (the ``hf`` source), :mod:`rsbench.weights.archive` (archive checks,
member extraction) and :mod:`rsbench.weights.checkpoints` (formats, safe loading, checkpoint layout).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rsbench.errors import WeightsError
from rsbench.weights.archive import check_archive, extract_member
from rsbench.weights.cache import (
    archive_cache_path,
    cache_lock,
    cache_path,
    changed_error,
    first_seen,
    sha256_file,
    sidecar,
    verify_local,
    write_first_seen,
)
from rsbench.weights.checkpoints import (
    check_checkpoint,
)
from rsbench.weights.hf import (
    fetch_hf,
    hf_cache_dir,
    remove_hf,
)
from rsbench.zoo.entry import ZooEntry

logger = logging.getLogger(__name__)

#: progress callback: (description, bytes done, total bytes or None)
ProgressCallback = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class FetchedWeights:
    """A verified local checkpoint: its path, its sha256 and whether the entry pinned it."""

    path: Path
    sha256: str
    pinned: bool


def is_cached(entry: ZooEntry, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when the entry's file (or the archive holding it) is present locally (not verified;
    ``fetch`` verifies)."""
    source = entry.source
    if source is None:
        return False
    if source.type in ("file", "package"):
        try:
            return _local_path(entry).is_file()
        except WeightsError:
            return False
    if source.type == "hf":
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(
                source.repo_id or "",
                source.filename or "",
                cache_dir=str(hf_cache_dir(cache_dir)),
                revision=source.revision,
            )
        except Exception:  # noqa: BLE001 - a cache probe must never fail a listing
            return False
        return isinstance(found, str)
    path = cache_path(entry, cache_dir)
    if path is not None and path.is_file():
        return True
    # an archive already in the cache serves every member without the network
    return (
        source.type == "archive_url" and archive_cache_path(source.url or "", cache_dir).is_file()
    )


def _download(
    url: str,
    dest: Path,
    check: Callable[[Path], None],
    expected_sha256: str | None,
    progress: ProgressCallback | None,
    what: str,
    manual: str,
) -> str:
    """Download ``url`` to ``dest`` (see :func:`rsbench.weights.download.download`); record its sha256."""
    from rsbench.weights.download import download

    seen = download(
        url,
        dest,
        what=what,
        check=check,
        expected_sha256=expected_sha256,
        progress=progress,
        manual=manual,
    )
    write_first_seen(dest, seen)
    return seen


def _record_unpinned(entry: ZooEntry, seen: str) -> None:
    logger.warning(
        "%s is unpinned (no sha256 in its zoo entry); loaded bytes with sha256 %s - pin it with "
        "`sha256: %s` after checking the file",
        entry.id,
        seen,
        seen,
    )


def _local_path(entry: ZooEntry) -> Path:
    source = entry.source
    assert source is not None and source.path is not None
    if source.type == "package":
        rel = PurePosixPath(source.path)
        if rel.is_absolute() or ".." in rel.parts:
            raise WeightsError(
                f"{entry.id}: package path {source.path!r} must stay inside rsbench/"
            )
        return Path(__file__).resolve().parents[1].joinpath(*rel.parts)
    path = Path(source.path).expanduser()
    if not path.is_absolute() and entry.base_dir is not None:
        path = entry.base_dir / path
    return path


def fetch(
    entry: ZooEntry,
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    progress: ProgressCallback | None = None,
) -> FetchedWeights:
    """Make ``entry``'s checkpoint available locally, verified; see the module docstring."""
    if entry.kind in ("dual", "cascade") or entry.source is None:
        raise WeightsError(f"{entry.id}: a {entry.kind} entry has no weights of its own")
    if require_pinned and entry.sha256 is None:
        raise WeightsError(
            f"{entry.id} is unpinned (no sha256) and --require-pinned is set; "
            "run `rsbench zoo hash FILE` on a checked copy and add `sha256:` to the entry"
        )
    path, seen = _fetch_path(entry, cache_dir, progress)
    if entry.sha256 is None:
        _record_unpinned(entry, seen)
    return FetchedWeights(path=path, sha256=seen, pinned=entry.sha256 is not None)


def fetch_weights(
    entry: ZooEntry,
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """The verified local path of ``entry``'s checkpoint (see :func:`fetch`)."""
    return fetch(entry, cache_dir, require_pinned, progress).path


def _fetch_path(
    entry: ZooEntry, cache_dir: str | os.PathLike | None, progress: ProgressCallback | None
) -> tuple[Path, str]:
    source = entry.source
    assert source is not None
    what = entry.id
    if source.type in ("file", "package"):
        path = _local_path(entry)
        if not path.is_file():
            raise WeightsError(f"{what}: checkpoint file {str(path)!r} does not exist")
        check_checkpoint(path, what)
        return path, verify_local(entry, path)
    if source.type == "hf":
        return fetch_hf(entry, cache_dir)
    dest = cache_path(entry, cache_dir)
    assert dest is not None
    with cache_lock(dest):
        if dest.is_file():
            seen = sha256_file(dest)
            if entry.sha256 is not None and seen == entry.sha256:
                return dest, seen
            first = first_seen(dest)
            if entry.sha256 is None and first in (None, seen):
                if first is None:  # cached before digests were recorded: this is the first sight
                    write_first_seen(dest, seen)
                return dest, seen
            if entry.sha256 is None and source.type == "url":
                raise changed_error(what, dest, first or "", seen, entry.id)
            logger.warning("%s: cached %s fails its sha256; fetching it again", what, dest)
            dest.unlink()
        if source.type == "url":
            seen = _download(
                source.url or "",
                dest,
                lambda p: check_checkpoint(p, what),
                entry.sha256,
                progress,
                what,
                "add it with `rsbench zoo add --checkpoint FILE ...`",
            )
            return dest, seen
        archive = fetch_archive(source.url or "", cache_dir, progress, what)
        seen = extract_member(archive, source.member or "", dest, what)
        try:
            check_checkpoint(dest, what)
            if entry.sha256 is not None and seen != entry.sha256:
                raise WeightsError(
                    f"{what}: sha256 mismatch for member {source.member!r} of {source.url}: expected "
                    f"{entry.sha256}, got {seen}; the file was not kept"
                )
        except WeightsError:
            dest.unlink(missing_ok=True)
            raise
        write_first_seen(dest, seen)
        return dest, seen


def fetch_archive(
    url: str,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    what: str = "archive",
) -> Path:
    """The archive at ``url`` in the cache: downloaded once, kept, shared by every entry naming it.

    A cached archive is checked against the sha256 recorded at its download before members are
    extracted from it; a changed archive raises :class:`WeightsError` saying how to fetch it again.
    """
    archive = archive_cache_path(url, cache_dir)
    with cache_lock(archive):
        if archive.is_file():
            first = first_seen(archive)
            seen = sha256_file(archive)
            if first is None:
                write_first_seen(archive, seen)
            elif first != seen:
                raise changed_error(f"{what} (archive)", archive, first, seen, what)
            return archive
        _download(
            url,
            archive,
            lambda p: check_archive(p, what),
            None,
            progress,
            f"{what} (archive)",
            "run `rsbench zoo import-archive FILE`",
        )
    return archive


def remove_cached(entry: ZooEntry, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Forget the entry's cached bytes so that the next fetch gets them again; return what went.

    Removes the entry's file (url / archive member), its recorded digest and any partial download;
    for an archive member also the shared archive, but only when the archive no longer has the
    sha256 recorded at its download (an intact archive stays: the member is extracted again).
    """
    from rsbench.weights.download import partial_meta_path, partial_path

    path = cache_path(entry, cache_dir)
    if entry.source is not None and entry.source.type == "hf":
        return remove_hf(entry, cache_dir)
    if path is None:
        return []
    targets = [path, sidecar(path), partial_path(path), partial_meta_path(path)]
    if entry.source is not None and entry.source.type == "archive_url":
        archive = archive_cache_path(entry.source.url or "", cache_dir)
        if archive.is_file() and first_seen(archive) != sha256_file(archive):
            targets += [archive, sidecar(archive)]
    removed = [p for p in targets if p.is_file()]
    for target in removed:
        target.unlink()
    return removed

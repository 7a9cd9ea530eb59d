"""Fetch and verify the checkpoints named by zoo entries: the sources and the fetch.

Guarantees:

* Sources: ``hf`` (Hugging Face Hub via ``huggingface_hub.hf_hub_download`` at the entry's revision,
  which must be a 40-hex commit unless :func:`allowing_unpinned_revisions` / ``--allow-unpinned``;
  files live in the standard HF cache, see :func:`hf_cache_dir`; a commit's cached file is used
  without any request; ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` are read when a file is fetched, and an
  unreachable endpoint fails at once instead of after huggingface_hub's retries),
  ``url``, ``archive_url`` (one member of a .tar / .tar.gz / .tgz / .zip at a URL), ``package`` (a file
  shipped inside ``rsbench/``) and ``file`` (a local path, relative to the zoo file's folder).
* Downloads (:mod:`rsbench.weights.download`: Google Drive's confirmation flow, HTTP range resume) and
  extracted archive members go to the content-addressed cache (:mod:`rsbench.weights.cache`;
  ``cache_dir`` argument, else ``$RSBENCH_CACHE``, else ``platformdirs.user_cache_dir
  ("rsbench")``): each new file is written under a fresh temporary name, and renamed into
  ``sha256/<hex>`` only after the size matches the server's, the bytes are not an HTML page, the
  payload is a readable checkpoint and the sha256 matches a pinned entry (or, unpinned, the digest
  first seen for its URL). A failed fetch deletes only its own temporary file: a file already in
  the store is never replaced or deleted, so a pinned entry's verified file survives any later
  failure, and two zoo files pinning different files for one entry each keep theirs. A truncated
  download keeps its partial file (keyed by the URL) for the next attempt to resume. An archive is
  downloaded once and kept; every entry naming it extracts its member from it
  (:func:`fetch_archive`). Every fetch re-hashes the cached file; fetches of one entry are
  serialised by an inter-process lock.
* Archive members are extracted one at a time by name: absolute names, ``..`` components, links,
  non-regular members, names several members share and members over the size bound
  (:func:`rsbench.weights.archive.max_member_bytes`) are refused before anything is copied.
* Unpinned entries (``sha256: null``) log a warning with the digest seen, which is also returned
  (:class:`FetchedWeights`). The digest first seen for an unpinned entry's URL is recorded
  (:func:`rsbench.weights.cache.write_ref`); bytes that later arrive with another digest are
  refused with a message saying how to accept them (``rsbench zoo check ID --download
  --refetch``, :func:`remove_cached`); a cached file that changed on disk is moved aside and
  fetched again; a cached Hub blob is checked against the digest its name records.
  ``require_pinned=True`` refuses unpinned entries.
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
    adopt_legacy,
    archive_cache_path,
    cache_lock,
    cache_path,
    cached_file,
    changed_error,
    clean_stale_stages,
    commit,
    entry_lock_target,
    first_seen,
    forget_ref,
    read_ref,
    sha256_file,
    sidecar,
    stage_path,
    verified_blob,
    verify_local,
    write_first_seen,
    write_ref,
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
    if cached_file(entry, cache_dir) is not None:
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
    with cache_lock(entry_lock_target(entry, cache_dir)):
        return _fetch_cached(entry, cache_dir, progress)


def _fetch_cached(
    entry: ZooEntry, cache_dir: str | os.PathLike | None, progress: ProgressCallback | None
) -> tuple[Path, str]:
    """A ``url`` / ``archive_url`` entry's file from the store, else the old layout, else fetched
    into the store (the caller holds the entry's lock)."""
    source = entry.source
    assert source is not None
    what = entry.id
    ref = read_ref(entry, cache_dir) if entry.sha256 is None else None
    expected = entry.sha256 or ref
    if expected is not None:
        blob = verified_blob(expected, cache_dir)
        if blob is not None:
            return blob, expected
    adopted = adopt_legacy(entry, expected, cache_dir)
    if adopted is not None:
        if entry.sha256 is None:
            write_ref(entry, adopted[1], cache_dir)
        return adopted
    legacy = cache_path(entry, cache_dir)
    if entry.sha256 is None and ref is None and legacy is not None and legacy.is_file():
        first = first_seen(legacy)  # an old-layout file that changed since its download
        if source.type == "url" and first is not None:
            raise changed_error(what, legacy, first, sha256_file(legacy), entry.id)
    clean_stale_stages(cache_dir)
    staged = stage_path(cache_dir)
    try:
        if source.type == "url":
            from rsbench.weights.download import download, partial_path

            assert legacy is not None
            seen = download(
                source.url or "",
                staged,
                what=what,
                check=lambda p: check_checkpoint(p, what),
                expected_sha256=entry.sha256,
                progress=progress,
                manual="add it with `rsbench zoo add --checkpoint FILE ...`",
                partial=partial_path(legacy),
            )
            origin = f"the file at {source.url}"
        else:
            archive = fetch_archive(source.url or "", cache_dir, progress, what)
            seen = extract_member(archive, source.member or "", staged, what)
            check_checkpoint(staged, what)
            if entry.sha256 is not None and seen != entry.sha256:
                raise WeightsError(
                    f"{what}: sha256 mismatch for member {source.member!r} of {source.url}: "
                    f"expected {entry.sha256}, got {seen}; the file was not kept"
                )
            origin = f"member {source.member!r} of {source.url}"
        if ref is not None and seen != ref:
            raise WeightsError(
                f"{what}: {origin} now has sha256 {seen}, not the {ref} first seen and recorded for "
                "this unpinned entry; the new bytes were not kept (pin the entry, or accept the "
                f"new file with `rsbench zoo check {entry.id} --download --refetch`)"
            )
        path = commit(staged, seen, cache_dir)
    finally:
        staged.unlink(missing_ok=True)
    if entry.sha256 is None:
        write_ref(entry, seen, cache_dir)
    return path, seen


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
    """Forget what makes the next fetch reuse cached bytes; return what went (``--refetch``).

    Removes the digest recorded for an unpinned entry (the next fetch takes the bytes it gets as
    first seen; a pinned entry never touches it) and any partial download. Files in the content-addressed store are never deleted
    (a pinned entry's verified file is simply found again; one that changed on disk is moved aside
    when it is read). An old-layout file goes only when it no longer has the digest recorded with
    it, and a downloaded archive only when it no longer has its recorded digest (an intact archive
    stays: the member is extracted again). A Hub file goes only when it no longer has the digest
    its name records.
    """
    from rsbench.weights.download import partial_meta_path, partial_path

    if entry.source is not None and entry.source.type == "hf":
        return remove_hf(entry, cache_dir)
    path = cache_path(entry, cache_dir)
    if path is None:
        return []
    removed = forget_ref(entry, cache_dir) if entry.sha256 is None else []
    targets = [partial_path(path), partial_meta_path(path)]
    if path.is_file() and first_seen(path) not in (None, sha256_file(path)):
        targets += [path, sidecar(path)]
    if entry.source is not None and entry.source.type == "archive_url":
        archive = archive_cache_path(entry.source.url or "", cache_dir)
        if archive.is_file() and first_seen(archive) != sha256_file(archive):
            targets += [archive, sidecar(archive)]
    gone = [p for p in targets if p.is_file()]
    for target in gone:
        target.unlink()
    return removed + gone

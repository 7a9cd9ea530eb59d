"""The weights cache: a content-addressed store of verified files, the names that point into it,
and the locks.

Layout (under :func:`cache_root`: ``cache_dir``, else ``$RSBENCH_CACHE``, else
``platformdirs.user_cache_dir("rsbench")``):

* ``sha256/<hex>``: every checkpoint that entered the cache, named by the sha256 of its bytes
  (:func:`blob_path`). A file gets there only by :func:`commit`: it was written under a fresh
  temporary name in ``sha256/`` (:func:`stage_path`), hashed and checked by the caller, then renamed
  into place (atomic). Nothing ever writes into an existing blob, and rsbench deletes no blob: one
  whose bytes no longer have its name's digest (changed on disk) is moved aside to
  ``sha256/<hex>.corrupt-<random>`` (:func:`verified_blob`), never read as the entry's weights.
* ``refs/...``: for an entry without a pin (``sha256: null``), the digest first seen for its URL
  (and archive member) (:func:`read_ref`, :func:`write_ref`); written once, never replaced by a
  later fetch or import (only ``--refetch`` forgets it, :func:`forget_ref`). A pinned entry needs
  no ref: its pin names its blob. Two zoo files that pin different files for one entry therefore
  each find their own file.
* ``url/<key>/`` and ``archives/<key>/``: unfinished downloads (kept for a resume, keyed by the URL),
  downloaded archives (``archives/<key>/<name>`` with ``<name>.sha256``; an archive is kept as
  downloaded and checked against that digest before a member is read from it).

Older caches (up to rsbench 0.2) kept a checkpoint at :func:`cache_path` (``url/<key>/<name>``,
``archives/<key>/members/<member>``) with its first-seen digest in ``<file>.sha256``. They keep
working: when the store has no blob for an entry, that file is read, and if it has the entry's
pin (or, unpinned, the digest its sidecar recorded) it is copied into the store once
(:func:`adopt_legacy`); the old file is left where it is, untouched (only ``--refetch`` removes
one that no longer has the digest its sidecar recorded). New files are written only in the new
layout.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from rsbench.errors import WeightsError
from rsbench.weights.urls import drive_file_id

if TYPE_CHECKING:
    from rsbench.zoo.entry import ZooEntry

ENV_CACHE = "RSBENCH_CACHE"
CHUNK = 1 << 20


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$RSBENCH_CACHE``, else the user cache dir."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rsbench"))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_local(entry: ZooEntry, path: Path) -> str:
    """The sha256 of the local file ``path``; a pinned ``entry`` whose sha256 differs is refused."""
    seen = sha256_file(path)
    if entry.sha256 is not None and seen != entry.sha256:
        raise WeightsError(
            f"{entry.id}: sha256 mismatch for {path}: expected {entry.sha256}, got {seen}; "
            "replace the file or fix the entry's sha256"
        )
    return seen


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _url_basename(url: str, default: str) -> str:
    parts = urllib.parse.urlparse(url)
    if parts.path.rstrip("/").endswith(("/uc", "/open", "/view", "/download")):
        file_id = drive_file_id(url)  # a Drive link: name the file after its id, not "uc"
        if file_id:
            return re.sub(r"[^A-Za-z0-9._+-]", "_", f"drive-{file_id}")
    name = PurePosixPath(parts.path).name
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name)
    return name if name and name not in {".", ".."} else default


def safe_member_name(member: str, what: str) -> PurePosixPath:
    """The archive member's name as a relative path; absolute names and ``..`` are refused."""
    name = member.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    path = PurePosixPath(name)
    if not name or path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise WeightsError(
            f"{what}: archive member {member!r} is unsafe (absolute or with '..'); refusing it"
        )
    return path


def cache_path(entry: ZooEntry, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Where rsbench up to 0.2 kept ``entry``'s checkpoint (``None`` for ``hf`` / ``package`` /
    ``file``): read for migration (:func:`adopt_legacy`), never written; it also keys the entry's
    ref, lock and partial download."""
    source = entry.source
    if source is None:
        return None
    root = cache_root(cache_dir)
    if source.type == "url":
        return root / "url" / _key(source.url or "") / _url_basename(source.url or "", "checkpoint")
    if source.type == "archive_url":
        member = safe_member_name(source.member or "", entry.id)
        return root / "archives" / _key(source.url or "") / "members" / Path(*member.parts)
    return None


def archive_cache_path(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the archive at ``url`` is kept (a manually downloaded archive may be placed here)."""
    return cache_root(cache_dir) / "archives" / _key(url) / _url_basename(url, "archive")


@contextmanager
def cache_lock(target: Path) -> Iterator[None]:
    """Hold the inter-process lock of the cached file ``target`` (``<target>.lock``)."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        yield


def tmp_name(dest: Path) -> Path:
    """A fresh temporary name next to ``dest`` (renamed into place once complete)."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")


def sidecar(path: Path) -> Path:
    """Where the sha256 first seen of ``path`` is recorded."""
    return path.with_name(path.name + ".sha256")


def first_seen(path: Path) -> str | None:
    """The sha256 recorded when ``path`` entered the cache (``None`` when none was recorded)."""
    try:
        words = sidecar(path).read_text(encoding="utf-8").split()
    except OSError:
        return None
    return words[0] if words and re.fullmatch(r"[0-9a-f]{64}", words[0]) else None


def write_first_seen(path: Path, digest: str) -> None:
    """Record ``digest`` as the sha256 that ``path`` had when it entered the cache."""
    with suppress(OSError):
        sidecar(path).write_text(f"{digest}  {path.name}\n", encoding="utf-8")


def changed_error(what: str, path: Path, first: str, seen: str, entry_id: str) -> WeightsError:
    """The error for a cached file whose sha256 is no longer the one recorded at its download."""
    return WeightsError(
        f"{what}: the cached file {path} changed since it was downloaded (sha256 first seen "
        f"{first}, now {seen}): it is corrupted or was replaced; fetch it again with "
        f"`rsbench zoo check {entry_id} --download --refetch`"
    )


# --------------------------------------------------------------------------------------------------
# the content-addressed store

_HEX = re.compile(r"[0-9a-f]{64}")


def store_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the content-addressed files (``<cache>/sha256``)."""
    return cache_root(cache_dir) / "sha256"


def blob_path(digest: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the file whose sha256 is ``digest`` lives in the store."""
    if not _HEX.fullmatch(digest):
        raise WeightsError(f"{digest!r} is not a sha256 (64 lowercase hex digits)")
    return store_dir(cache_dir) / digest


def stage_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """A fresh, unique temporary name in the store for a file being written (see :func:`commit`).

    Unique per call, so concurrent writers never share one; :func:`clean_stale_stages` removes those
    a killed process left behind."""
    folder = store_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f".incoming-{os.getpid()}-{uuid.uuid4().hex}.part"


def quarantine(path: Path) -> Path:
    """Move ``path`` aside (``<name>.corrupt-<random>``), keeping its bytes; return the new name."""
    aside = path.with_name(f"{path.name}.corrupt-{uuid.uuid4().hex[:8]}")
    os.replace(path, aside)
    return aside


def verified_blob(digest: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The store's file for ``digest`` when it is there and its bytes still hash to ``digest``.

    A file there whose bytes no longer match (changed on disk) is moved aside (:func:`quarantine`,
    with a warning) and ``None`` returned, so that the caller fetches the file again."""
    path = blob_path(digest, cache_dir)
    if not path.is_file():
        return None
    if sha256_file(path) == digest:
        return path
    import logging

    aside = quarantine(path)
    logging.getLogger("rsbench.weights.sources").warning(
        "cached %s no longer has its sha256 (changed on disk); moved aside to %s, fetching it again",
        path,
        aside,
    )
    return None


def commit(staged: Path, digest: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Rename the staged, verified file ``staged`` (whose sha256 the caller computed: ``digest``)
    into the store; return its path there.

    Guarantees: atomic (a reader sees the old state or the whole file); a blob already there with
    that digest is kept and the staged copy dropped (same bytes); one there with other bytes
    (changed on disk) is moved aside first, never deleted."""
    dest = blob_path(digest, cache_dir)
    if dest.is_file():
        if sha256_file(dest) == digest:
            staged.unlink(missing_ok=True)
            return dest
        quarantine(dest)
    os.replace(staged, dest)
    return dest


def clean_stale_stages(cache_dir: str | os.PathLike | None = None, age_s: float = 86400.0) -> None:
    """Remove temporary files in the store older than ``age_s`` (left by a killed process)."""
    import time

    folder = store_dir(cache_dir)
    if not folder.is_dir():
        return
    now = time.time()
    for path in folder.glob(".*incoming-*.part"):  # staged, and extract_member's own tmp
        with suppress(OSError):
            if now - path.stat().st_mtime > age_s:
                path.unlink()


def ref_path(entry: ZooEntry, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Where the digest first seen for an unpinned ``entry``'s URL (and member) is recorded."""
    legacy = cache_path(entry, cache_dir)
    if legacy is None:
        return None
    root = cache_root(cache_dir)
    return root / "refs" / legacy.relative_to(root)


def read_ref(entry: ZooEntry, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The digest recorded for ``entry``'s URL (``None``: none recorded)."""
    path = ref_path(entry, cache_dir)
    if path is None:
        return None
    try:
        words = path.read_text(encoding="utf-8").split()
    except OSError:
        return None
    return words[0] if words and _HEX.fullmatch(words[0]) else None


def write_ref(entry: ZooEntry, digest: str, cache_dir: str | os.PathLike | None = None) -> None:
    """Record ``digest`` for ``entry``'s URL unless a digest is recorded already (first seen wins;
    atomic: written to a unique temporary name, then renamed)."""
    path = ref_path(entry, cache_dir)
    if path is None or read_ref(entry, cache_dir) is not None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        tmp.write_text(f"{digest}  {entry.source.describe() if entry.source else ''}\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def forget_ref(entry: ZooEntry, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Remove ``entry``'s recorded digest (the blob it named stays in the store); return it."""
    path = ref_path(entry, cache_dir)
    if path is None or not path.is_file():
        return []
    path.unlink()
    return [path]


def entry_lock_target(entry: ZooEntry, cache_dir: str | os.PathLike | None = None) -> Path:
    """The path whose :func:`cache_lock` serialises fetches of ``entry``'s URL (and member)."""
    path = ref_path(entry, cache_dir)
    assert path is not None
    return path


def adopt_legacy(
    entry: ZooEntry, expected: str | None, cache_dir: str | os.PathLike | None = None
) -> tuple[Path, str] | None:
    """Copy the old-layout file of ``entry`` (:func:`cache_path`) into the store when it verifies:
    its sha256 equals ``expected`` (the pin, or the recorded ref), or, with nothing expected, the
    digest its ``.sha256`` sidecar recorded (or it has none). Return ``(blob, digest)``, or
    ``None`` when there is no such file or it does not verify. The old file is never changed."""
    legacy = cache_path(entry, cache_dir)
    if legacy is None or not legacy.is_file():
        return None
    seen = sha256_file(legacy)
    first = first_seen(legacy)
    if expected is not None and seen != expected:
        return None
    if expected is None and first not in (None, seen):
        return None
    import shutil

    staged = stage_path(cache_dir)
    try:
        shutil.copyfile(legacy, staged)
        if sha256_file(staged) != seen:  # changed while copied
            return None
        return commit(staged, seen, cache_dir), seen
    finally:
        staged.unlink(missing_ok=True)


def cached_file(entry: ZooEntry, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The file the cache holds for ``entry`` (not verified here; :func:`fetch` verifies): the blob
    its pin or ref names, else the old-layout file; ``None`` when neither is there."""
    digest = entry.sha256 or read_ref(entry, cache_dir)
    if digest is not None and _HEX.fullmatch(digest) and blob_path(digest, cache_dir).is_file():
        return blob_path(digest, cache_dir)
    legacy = cache_path(entry, cache_dir)
    return legacy if legacy is not None and legacy.is_file() else None

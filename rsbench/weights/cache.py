"""The weights cache: where fetched files live, the digests recorded with them, and the lock.

Guarantees: the cache folder is ``cache_dir``, else ``$RSBENCH_CACHE``, else
``platformdirs.user_cache_dir("rsbench")`` (:func:`cache_root`); a ``url`` file and an archive
member live under a folder keyed by the URL (:func:`cache_path`, :func:`archive_cache_path`), an
archive member at the safe relative path of its name (:func:`safe_member_name` refuses absolute
names and ``..``). The sha256 of every file that enters the cache is recorded next to it
(``<file>.sha256``: :func:`write_first_seen`, :func:`first_seen`), so a cached unpinned file that
changed is recognised (:func:`changed_error`). Fetching is :mod:`rsbench.weights.sources`.
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
    """Where ``entry``'s checkpoint lives once fetched (``None`` for ``hf`` / ``package`` / ``file``)."""
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

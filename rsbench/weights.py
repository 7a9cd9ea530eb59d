"""Fetch, verify, cache and safely load checkpoints named by zoo entries.

Guarantees:

* Sources: ``hf`` (Hugging Face Hub via ``huggingface_hub.hf_hub_download`` at the entry's revision,
  which must be a 40-hex commit unless :func:`allowing_unpinned_revisions` / ``--allow-unpinned``;
  files live in the standard HF cache, see :func:`hf_cache_dir`; a commit's cached file is used
  without any request; ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` are read when a file is fetched, and an
  unreachable endpoint fails at once instead of after huggingface_hub's retries),
  ``url``, ``archive_url`` (one member of a .tar / .tar.gz / .tgz / .zip at a URL), ``package`` (a file
  shipped inside ``rsbench/``) and ``file`` (a local path, relative to the zoo file's folder).
* Downloads (:mod:`rsbench.download`: Google Drive's confirmation flow, HTTP range resume) go to the
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
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import pickle
import re
import stat
import struct
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from rsbench.errors import WeightsError
from rsbench.zoo import ZooEntry

logger = logging.getLogger(__name__)

ENV_CACHE = "RSBENCH_CACHE"
CHUNK = 1 << 20

#: progress callback: (description, bytes done, total bytes or None)
ProgressCallback = Callable[[str, int, "int | None"], None]

_CONVERT_HINT = (
    "convert it once where you trust the file: "
    "python -c \"import torch; c = torch.load('IN', weights_only=False); "
    "torch.save(c['state_dict'], 'OUT.pth')\" (or safetensors.torch.save_file), "
    "then point the zoo entry's source at OUT.pth"
)


@dataclass(frozen=True)
class FetchedWeights:
    """A verified local checkpoint: its path, its sha256 and whether the entry pinned it."""

    path: Path
    sha256: str
    pinned: bool


# --------------------------------------------------------------------------------------------------
# helpers


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


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _url_basename(url: str, default: str) -> str:
    from rsbench.download import drive_file_id

    parts = urllib.parse.urlparse(url)
    if parts.path.rstrip("/").endswith(("/uc", "/open", "/view", "/download")):
        file_id = drive_file_id(url)  # a Drive link: name the file after its id, not "uc"
        if file_id:
            return re.sub(r"[^A-Za-z0-9._+-]", "_", f"drive-{file_id}")
    name = PurePosixPath(parts.path).name
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name)
    return name if name and name not in {".", ".."} else default


def cache_path(entry: ZooEntry, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Where ``entry``'s checkpoint lives once fetched (``None`` for ``hf`` / ``package`` / ``file``)."""
    source = entry.source
    if source is None:
        return None
    root = cache_root(cache_dir)
    if source.type == "url":
        return root / "url" / _key(source.url or "") / _url_basename(source.url or "", "checkpoint")
    if source.type == "archive_url":
        member = _safe_member_name(source.member or "", entry.id)
        return root / "archives" / _key(source.url or "") / "members" / Path(*member.parts)
    return None


def archive_cache_path(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the archive at ``url`` is kept (a manually downloaded archive may be placed here)."""
    return cache_root(cache_dir) / "archives" / _key(url) / _url_basename(url, "archive")


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


@contextmanager
def _lock(target: Path) -> Iterator[None]:
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        yield


def _tmp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")


# --------------------------------------------------------------------------------------------------
# payload checks


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or (
        start.startswith(b"<") and b"<html" in start[:1024]
    )


def _is_zip(path: Path) -> bool:
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
    if _looks_like_html(head):
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


def _check_checkpoint(path: Path, what: str) -> None:
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


def _check_archive(path: Path, what: str) -> None:
    """Raise :class:`WeightsError` unless ``path`` is a complete, readable tar or zip archive."""
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if _looks_like_html(head):
        raise WeightsError(
            f"{what}: got an HTML page, not an archive (a login, quota or confirmation page?); "
            "download it in a browser and run `rsbench zoo import-archive FILE`"
        )
    try:
        if _is_zip(path):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise WeightsError(f"{what}: archive member {bad!r} is corrupt")
            return
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.isfile():
                    archive.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise WeightsError(
            f"{what}: truncated or not a .tar/.tar.gz/.zip archive ({exc})"
        ) from None


# --------------------------------------------------------------------------------------------------
# download


def _download(
    url: str,
    dest: Path,
    check: Callable[[Path], None],
    expected_sha256: str | None,
    progress: ProgressCallback | None,
    what: str,
    manual: str,
) -> str:
    """Download ``url`` to ``dest`` (see :func:`rsbench.download.download`); record its sha256."""
    from rsbench.download import download

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


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def first_seen(path: Path) -> str | None:
    """The sha256 recorded when ``path`` entered the cache (``None`` when none was recorded)."""
    try:
        words = _sidecar(path).read_text(encoding="utf-8").split()
    except OSError:
        return None
    return words[0] if words and re.fullmatch(r"[0-9a-f]{64}", words[0]) else None


def write_first_seen(path: Path, digest: str) -> None:
    """Record ``digest`` as the sha256 that ``path`` had when it entered the cache."""
    with suppress(OSError):
        _sidecar(path).write_text(f"{digest}  {path.name}\n", encoding="utf-8")


def _changed(what: str, path: Path, first: str, seen: str, entry_id: str) -> WeightsError:
    return WeightsError(
        f"{what}: the cached file {path} changed since it was downloaded (sha256 first seen "
        f"{first}, now {seen}): it is corrupted or was replaced; fetch it again with "
        f"`rsbench zoo check {entry_id} --download --refetch`"
    )


def _record_unpinned(entry: ZooEntry, seen: str) -> None:
    logger.warning(
        "%s is unpinned (no sha256 in its zoo entry); loaded bytes with sha256 %s - pin it with "
        "`sha256: %s` after checking the file",
        entry.id,
        seen,
        seen,
    )


def _verify_local(entry: ZooEntry, path: Path) -> str:
    seen = sha256_file(path)
    if entry.sha256 is not None and seen != entry.sha256:
        raise WeightsError(
            f"{entry.id}: sha256 mismatch for {path}: expected {entry.sha256}, got {seen}; "
            "replace the file or fix the entry's sha256"
        )
    return seen


def _local_path(entry: ZooEntry) -> Path:
    source = entry.source
    assert source is not None and source.path is not None
    if source.type == "package":
        rel = PurePosixPath(source.path)
        if rel.is_absolute() or ".." in rel.parts:
            raise WeightsError(
                f"{entry.id}: package path {source.path!r} must stay inside rsbench/"
            )
        return Path(__file__).resolve().parent.joinpath(*rel.parts)
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
        _check_checkpoint(path, what)
        return path, _verify_local(entry, path)
    if source.type == "hf":
        return _fetch_hf(entry, cache_dir)
    dest = cache_path(entry, cache_dir)
    assert dest is not None
    with _lock(dest):
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
                raise _changed(what, dest, first or "", seen, entry.id)
            logger.warning("%s: cached %s fails its sha256; fetching it again", what, dest)
            dest.unlink()
        if source.type == "url":
            seen = _download(
                source.url or "",
                dest,
                lambda p: _check_checkpoint(p, what),
                entry.sha256,
                progress,
                what,
                "add it with `rsbench zoo add --checkpoint FILE ...`",
            )
            return dest, seen
        archive = fetch_archive(source.url or "", cache_dir, progress, what)
        seen = extract_member(archive, source.member or "", dest, what)
        try:
            _check_checkpoint(dest, what)
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
    with _lock(archive):
        if archive.is_file():
            first = first_seen(archive)
            seen = sha256_file(archive)
            if first is None:
                write_first_seen(archive, seen)
            elif first != seen:
                raise _changed(f"{what} (archive)", archive, first, seen, what)
            return archive
        _download(
            url,
            archive,
            lambda p: _check_archive(p, what),
            None,
            progress,
            f"{what} (archive)",
            "run `rsbench zoo import-archive FILE`",
        )
    return archive


_ALLOW_UNPINNED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rsbench_allow_unpinned_revisions", default=False
)
ENV_ALLOW_UNPINNED = "RSBENCH_ALLOW_UNPINNED"
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


@contextmanager
def allowing_unpinned_revisions(allow: bool = True) -> Iterator[None]:
    """Within the block, ``hf`` sources may name a branch or tag (the CLI's ``--allow-unpinned``)."""
    token = _ALLOW_UNPINNED.set(allow)
    try:
        yield
    finally:
        _ALLOW_UNPINNED.reset(token)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``hf`` files live: ``<cache_dir>/hf`` when a cache dir is given explicitly, else the
    standard Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the library's
    default), read when called, so that files other tools downloaded are reused."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser() / "hf"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def _unreachable(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be reached (one TCP connect, 5 s at most), or ``None``.

    huggingface_hub retries a failed request five times over about 25 s; a host that does not
    resolve or refuses connections fails here at once. Skipped behind a proxy.
    """
    import socket

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    parts = urllib.parse.urlparse(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=5).close()
    except OSError as exc:
        return f"cannot reach {endpoint}: {exc.strerror or exc}"
    return None


def _blob_digest_ok(path: Path) -> bool | None:
    """Whether the cached Hub blob still has the digest its name records (``None``: cannot tell).

    The Hub cache names a blob by its ETag: the sha256 of the file for LFS files, the git blob sha1
    otherwise. Both are recomputed here.
    """
    name = path.resolve().name
    if re.fullmatch(r"[0-9a-f]{64}", name):
        return sha256_file(path) == name
    if _COMMIT_RE.fullmatch(name):
        digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's id
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest() == name
    return None


def _fetch_hf(entry: ZooEntry, cache_dir: str | os.PathLike | None) -> tuple[Path, str]:
    source = entry.source
    assert source is not None
    revision = source.revision or ""
    where = f"{source.filename!r} of the Hub repo {source.repo_id!r} at revision {revision!r}"
    if not _COMMIT_RE.fullmatch(revision):
        if not (_ALLOW_UNPINNED.get() or _env_true(ENV_ALLOW_UNPINNED)):
            raise WeightsError(
                f"{entry.id}: Hub revision {revision!r} is a branch or tag, not a commit, so the "
                "file behind it can change; set the entry's revision to the 40-hex commit (see "
                f"{_hf_endpoint()}/{source.repo_id}/commits/{revision}) or pass --allow-unpinned"
            )
        logger.warning(
            "%s: Hub revision %r is not a commit hash; the files behind it can change",
            entry.id,
            revision,
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    folder = hf_cache_dir(cache_dir)
    offline = _env_true("HF_HUB_OFFLINE")
    common: dict[str, Any] = {
        "repo_id": source.repo_id or "",
        "filename": source.filename or "",
        "revision": revision,
        "cache_dir": str(folder),
        "endpoint": os.environ.get("HF_ENDPOINT") or None,
    }
    local: str | None = None
    if offline or _COMMIT_RE.fullmatch(revision):  # a commit's files never change: cache first
        with suppress(LocalEntryNotFoundError, EntryNotFoundError, OfflineModeIsEnabled, OSError):
            local = hf_hub_download(**common, local_files_only=True)
    if local is None and offline:
        raise WeightsError(
            f"{entry.id}: {where} is not in the Hugging Face cache {folder} and HF_HUB_OFFLINE is "
            "set; fetch it once with network access (`rsbench zoo check "
            f"{entry.id} --download`) or unset HF_HUB_OFFLINE"
        )
    if local is None:
        reason = _unreachable(_hf_endpoint())
        if reason is not None:
            raise WeightsError(
                f"{entry.id}: cannot get {where} ({reason}); it is not in the Hugging Face cache "
                f"{folder} either: connect, or copy the cache from a machine that has it"
            )
        try:
            local = hf_hub_download(**common)
        except (
            LocalEntryNotFoundError,
            EntryNotFoundError,
            OfflineModeIsEnabled,
            HfHubHTTPError,
            ValueError,
            OSError,
        ) as exc:
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise WeightsError(f"{entry.id}: cannot get {where} ({first})") from None
    path = Path(local)
    if entry.sha256 is None and _blob_digest_ok(path) is False:
        raise WeightsError(
            f"{entry.id}: the cached Hub file {path.resolve()} no longer has the digest it was "
            f"downloaded with (its name): it is corrupted or was replaced; fetch it again with "
            f"`rsbench zoo check {entry.id} --download --refetch`"
        )
    try:
        _check_checkpoint(path, entry.id)
        seen = _verify_local(entry, path)
    except WeightsError:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise
    return path, seen


# --------------------------------------------------------------------------------------------------
# archives


def _safe_member_name(member: str, what: str) -> PurePosixPath:
    name = member.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    path = PurePosixPath(name)
    if not name or path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise WeightsError(
            f"{what}: archive member {member!r} is unsafe (absolute or with '..'); refusing it"
        )
    return path


def _open_member(archive: Path, member: PurePosixPath, what: str) -> tuple[Any, IO[bytes]]:
    wanted = str(member)
    if _is_zip(archive):
        handle = zipfile.ZipFile(archive)
        for info in handle.infolist():
            if _norm(info.filename) != wanted:
                continue
            mode = info.external_attr >> 16
            if (
                stat.S_ISLNK(mode)
                or info.is_dir()
                or (stat.S_IFMT(mode) and not stat.S_ISREG(mode))
            ):
                handle.close()
                raise WeightsError(
                    f"{what}: archive member {wanted!r} is a link or not a regular file; refusing it"
                )
            return handle, handle.open(info)
        names = handle.namelist()
        handle.close()
        raise _missing_member(what, wanted, names)
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the caller
    except (tarfile.TarError, OSError) as exc:
        raise WeightsError(f"{what}: {archive} is not a readable archive ({exc})") from None
    try:
        for tar_info in tar:
            if _norm(tar_info.name) != wanted:
                continue
            if not tar_info.isfile():
                kind = "a link" if (tar_info.issym() or tar_info.islnk()) else "not a regular file"
                raise WeightsError(f"{what}: archive member {wanted!r} is {kind}; refusing it")
            stream = tar.extractfile(tar_info)
            assert stream is not None
            return tar, stream
        names = tar.getnames()
    except (tarfile.TarError, EOFError, OSError) as exc:
        tar.close()
        raise WeightsError(f"{what}: archive {archive} is truncated or corrupt ({exc})") from None
    except WeightsError:
        tar.close()
        raise
    tar.close()
    raise _missing_member(what, wanted, names)


def _norm(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _missing_member(what: str, wanted: str, names: list[str]) -> WeightsError:
    import difflib

    close = difflib.get_close_matches(wanted, [_norm(n) for n in names], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return WeightsError(f"{what}: archive has no member {wanted!r}{hint}")


def extract_member(archive: Path, member: str, dest: Path, what: str = "archive") -> str:
    """Copy one regular-file ``member`` of ``archive`` to ``dest`` (atomically); return its sha256.

    Absolute names, ``..`` components, symbolic and hard links and non-regular members are refused;
    nothing is written anywhere but ``dest``.
    """
    name = _safe_member_name(member, what)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(dest)
    digest = hashlib.sha256()
    handle, stream = _open_member(Path(archive), name, what)
    try:
        with stream, open(tmp, "wb") as out:
            while chunk := stream.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
        os.replace(tmp, dest)
    except (tarfile.TarError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(f"{what}: cannot extract {member!r} from {archive} ({exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
        handle.close()
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# loading


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
        _check_checkpoint(path, str(path))
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


def remove_cached(entry: ZooEntry, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Forget the entry's cached bytes so that the next fetch gets them again; return what went.

    Removes the entry's file (url / archive member), its recorded digest and any partial download;
    for an archive member also the shared archive, but only when the archive no longer has the
    sha256 recorded at its download (an intact archive stays: the member is extracted again).
    """
    from rsbench.download import partial_meta_path, partial_path

    path = cache_path(entry, cache_dir)
    if entry.source is not None and entry.source.type == "hf":
        return _remove_hf(entry, cache_dir)
    if path is None:
        return []
    targets = [path, _sidecar(path), partial_path(path), partial_meta_path(path)]
    if entry.source is not None and entry.source.type == "archive_url":
        archive = archive_cache_path(entry.source.url or "", cache_dir)
        if archive.is_file() and first_seen(archive) != sha256_file(archive):
            targets += [archive, _sidecar(archive)]
    removed = [p for p in targets if p.is_file()]
    for target in removed:
        target.unlink()
    return removed


def _remove_hf(entry: ZooEntry, cache_dir: str | os.PathLike | None) -> list[Path]:
    source = entry.source
    assert source is not None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        source.repo_id or "",
        source.filename or "",
        cache_dir=str(hf_cache_dir(cache_dir)),
        revision=source.revision,
    )
    if not isinstance(found, str):
        return []
    pointer = Path(found)
    removed = [p for p in dict.fromkeys([pointer.resolve(), pointer]) if p.exists()]
    for target in removed:
        target.unlink()
    return removed


__all__ = [
    "allowing_unpinned_revisions",
    "hf_cache_dir",
    "FetchedWeights",
    "archive_cache_path",
    "cache_path",
    "cache_root",
    "extract_member",
    "fetch",
    "fetch_archive",
    "first_seen",
    "fetch_weights",
    "is_cached",
    "load_checkpoint",
    "load_state_dict",
    "remove_cached",
    "sha256_file",
    "sniff_format",
    "write_first_seen",
]

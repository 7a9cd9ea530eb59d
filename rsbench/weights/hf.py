"""The Hugging Face Hub source (``source: {type: hf, repo_id, filename, revision}``).

Guarantees: the revision must be a 40-hex commit unless :func:`allowing_unpinned_revisions` (the
CLI's ``--allow-unpinned``) or ``$RSBENCH_ALLOW_UNPINNED``; files live in the standard Hugging Face
cache (:func:`hf_cache_dir`) and a commit's cached file is used without any request;
``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` are read when a file is fetched, and an unreachable endpoint
fails at once instead of after huggingface_hub's retries. A cached blob that no longer has the
digest its name records is refused; a file that is not a complete checkpoint, or whose sha256 is
not the entry's pin, is refused with one line and the shared Hub cache is not touched. Logs as ``rsbench.weights.sources`` (the fetching module's logger).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import re
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsbench.errors import WeightsError
from rsbench.weights.cache import CHUNK, sha256_file
from rsbench.weights.checkpoints import check_checkpoint

if TYPE_CHECKING:
    from rsbench.zoo.entry import ZooEntry

logger = logging.getLogger("rsbench.weights.sources")

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


def fetch_hf(entry: ZooEntry, cache_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """The verified local path of ``entry``'s Hub file and its sha256 (see the module docstring)."""
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
    check_checkpoint(path, entry.id)  # refusals leave the shared Hub cache as it is
    seen = sha256_file(path)
    if entry.sha256 is not None and seen != entry.sha256:
        raise WeightsError(
            f"{entry.id}: sha256 mismatch for {where}: the entry pins {entry.sha256}, the Hub file "
            f"has {seen}; check the entry's revision and sha256 (the Hugging Face cache was left "
            "as it is)"
        )
    return path, seen


def remove_hf(entry: ZooEntry, cache_dir: str | os.PathLike | None) -> list[Path]:
    """Remove ``entry``'s file (pointer and blob) from the Hub cache when its blob no longer has the
    digest its name records (changed on disk); an intact blob, which other tools may share, stays.
    Return what went."""
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
    if _blob_digest_ok(pointer) is not False:
        return []
    removed = [p for p in dict.fromkeys([pointer.resolve(), pointer]) if p.exists()]
    for target in removed:
        target.unlink()
    return removed

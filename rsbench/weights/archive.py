"""Archives (.tar, .tar.gz, .tgz, .zip): checking a downloaded archive and extracting one member.

Guarantees: :func:`check_archive` refuses an HTML page, a truncated or unreadable archive.
:func:`extract_member` copies one regular-file member, found by name, to a path rsbench computes,
atomically, and returns its sha256: absolute names, ``..`` components, symbolic and hard links,
non-regular members, a name several members share and a member larger than
:func:`max_member_bytes` (1 GiB unless ``$RSBENCH_MAX_MEMBER_BYTES`` says otherwise) are refused
before a byte is copied, and nothing is written anywhere but the destination. Downloading
an archive once for all its entries is :func:`rsbench.weights.sources.fetch_archive`.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

from rsbench.errors import WeightsError
from rsbench.weights.cache import CHUNK, safe_member_name, tmp_name
from rsbench.weights.checkpoints import is_zip, looks_like_html


def check_archive(path: Path, what: str) -> None:
    """Raise :class:`WeightsError` unless ``path`` is a complete, readable tar or zip archive."""
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if looks_like_html(head):
        raise WeightsError(
            f"{what}: got an HTML page, not an archive (a login, quota or confirmation page?); "
            "download it in a browser and run `rsbench zoo import-archive FILE`"
        )
    try:
        if is_zip(path):
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


def _open_member(
    archive: Path, member: PurePosixPath, what: str, limit: int
) -> tuple[Any, IO[bytes]]:
    wanted = str(member)
    if is_zip(archive):
        handle = zipfile.ZipFile(archive)
        matches = [i for i in handle.infolist() if _norm(i.filename) == wanted]
        try:
            if not matches:
                raise _missing_member(what, wanted, handle.namelist())
            _refuse_duplicates(what, wanted, len(matches))
            info = matches[0]
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise WeightsError(
                    f"{what}: archive member {wanted!r} is a symbolic link; refusing it"
                )
            if info.is_dir() or (stat.S_IFMT(mode) and not stat.S_ISREG(mode)):
                raise WeightsError(f"{what}: archive member {wanted!r} is not a regular file")
            check_member_size(what, wanted, info.file_size, limit)
            return handle, handle.open(info)
        except BaseException:
            handle.close()
            raise
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the caller
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise WeightsError(f"{what}: {archive} is not a readable archive ({exc})") from None
    try:
        found = [m for m in tar if _norm(m.name) == wanted]
        if not found:
            raise _missing_member(what, wanted, tar.getnames())
        _refuse_duplicates(what, wanted, len(found))
        tar_info = found[0]
        if tar_info.issym() or tar_info.islnk():
            kind = "symbolic" if tar_info.issym() else "hard"
            raise WeightsError(
                f"{what}: archive member {wanted!r} is a {kind} link (to {tar_info.linkname!r}), "
                "not the checkpoint; refusing it"
            )
        if not tar_info.isfile():
            raise WeightsError(f"{what}: archive member {wanted!r} is not a regular file")
        check_member_size(what, wanted, tar_info.size, limit)
        stream = tar.extractfile(tar_info)
        assert stream is not None
        return tar, stream
    except (tarfile.TarError, EOFError, OSError) as exc:
        tar.close()
        raise WeightsError(f"{what}: archive {archive} is truncated or corrupt ({exc})") from None
    except BaseException:
        tar.close()
        raise


def _refuse_duplicates(what: str, wanted: str, count: int) -> None:
    if count > 1:
        raise WeightsError(
            f"{what}: the archive holds {count} members named {wanted!r}; refusing it (which one "
            "is meant is ambiguous: extract the right one and import that file)"
        )


#: Environment variable that overrides :data:`DEFAULT_MAX_MEMBER_BYTES` (bytes, or 500M, 2G, ...).
ENV_MAX_MEMBER = "RSBENCH_MAX_MEMBER_BYTES"
#: The largest checkpoint the packaged zoo names is an ImageNet ResNet-50 saved with its SGD
#: momentum: 25.6 M float32 parameters and as many momentum values, about 205 MB. An archive member
#: larger than 1 GiB (about 5 times that) is refused before a byte of it is copied.
DEFAULT_MAX_MEMBER_BYTES = 1 << 30

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, name: str = ENV_MAX_MEMBER) -> int:
    """Bytes from ``text``: an integer with an optional K/M/G/T suffix (powers of 1024; ``B``,
    ``iB`` allowed: ``500M``, ``2GiB``); :class:`WeightsError` for anything else or 0."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
    value = int(float(match.group(1)) * _UNITS[match.group(2)]) if match else 0
    if value <= 0:
        raise WeightsError(
            f"{name}={text!r} is not a size; give a positive number of bytes, e.g. 2G or 500M"
        )
    return value


def max_member_bytes(override: int | None = None) -> int:
    """The size bound for an archive member: ``override``, else ``$RSBENCH_MAX_MEMBER_BYTES``, else
    :data:`DEFAULT_MAX_MEMBER_BYTES`."""
    if override is not None:
        return override
    env = os.environ.get(ENV_MAX_MEMBER, "").strip()
    return parse_size(env) if env else DEFAULT_MAX_MEMBER_BYTES


def check_member_size(what: str, member: str, size: int, limit: int) -> None:
    """Refuse a member of ``size`` bytes over ``limit``, with the option that raises the limit."""
    if size > limit:
        raise WeightsError(
            f"{what}: archive member {member!r} is {size} bytes, over the {limit}-byte limit for a "
            f"checkpoint; refused before copying (if it is right, raise the limit with "
            f"--max-member-size or ${ENV_MAX_MEMBER})"
        )


def copy_bounded(stream: IO[bytes], out: IO[bytes], what: str, member: str, limit: int) -> str:
    """Copy ``stream`` to ``out``, at most ``limit`` bytes (more is refused); return the sha256."""
    digest = hashlib.sha256()
    done = 0
    while chunk := stream.read(CHUNK):
        done += len(chunk)
        if done > limit:
            raise WeightsError(
                f"{what}: archive member {member!r} is over the {limit}-byte limit for a "
                f"checkpoint; refused (raise the limit with --max-member-size or ${ENV_MAX_MEMBER})"
            )
        out.write(chunk)
        digest.update(chunk)
    return digest.hexdigest()


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


def extract_member(
    archive: Path, member: str, dest: Path, what: str = "archive", limit: int | None = None
) -> str:
    """Copy one regular-file ``member`` of ``archive`` to ``dest`` (atomically); return its sha256.

    Absolute names, ``..`` components, symbolic and hard links, non-regular members, a name that
    several members share and a member over ``limit`` bytes (:func:`max_member_bytes`) are refused
    before anything is written; nothing is written anywhere but ``dest``.
    """
    name = safe_member_name(member, what)
    bound = max_member_bytes(limit)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(dest)
    handle, stream = _open_member(Path(archive), name, what, bound)
    try:
        with stream, open(tmp, "wb") as out:
            digest = copy_bounded(stream, out, what, member, bound)
        os.replace(tmp, dest)
    except (tarfile.TarError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(f"{what}: cannot extract {member!r} from {archive} ({exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
        handle.close()
    return digest

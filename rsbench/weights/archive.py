"""Archives (.tar, .tar.gz, .tgz, .zip): checking a downloaded archive and extracting one member.

Guarantees: :func:`check_archive` refuses an HTML page, a truncated or unreadable archive.
:func:`extract_member` copies one regular-file member, found by name, to a path rsbench computes,
atomically, and returns its sha256: absolute names, ``..`` components, symbolic and hard links and
non-regular members are refused, and nothing is written anywhere but the destination. Downloading
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


def _open_member(archive: Path, member: PurePosixPath, what: str) -> tuple[Any, IO[bytes]]:
    wanted = str(member)
    if is_zip(archive):
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
    name = safe_member_name(member, what)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(dest)
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

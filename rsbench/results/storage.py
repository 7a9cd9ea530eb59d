"""Run directories on disk: atomic part files, ``run.json``, reading rows back, whole-run writes.

A run directory holds ``run.json`` and ``part-<shard>-<seq>.parquet`` chunks, one row per
(run, sample). Guarantees:

* :func:`write_chunk` is atomic: a chunk is written to a temporary name inside the run directory,
  fsync'ed, then renamed to its final name, so a reader (or a resumed run) sees either the whole
  chunk or nothing. A process killed mid-write leaves only a ``.tmp`` file that resume deletes.
* :func:`read_results` checks every part against :data:`~rsbench.results.schema.SCHEMA` and raises
  :class:`ResultsError` naming the file when a part is unreadable, truncated, corrupted, has the
  wrong columns, holds another run's rows or counts that cannot be (:func:`check_counts`).
  Reading never changes or removes a file. Parts are opened as Python file handles, so a folder
  whose name is not UTF-8 (``runs-M\xfcller`` as bytes) reads and writes like any other.
* Only one kind of unreadable part may ever be replaced, by a resumed run: one that is positively
  this run's and truncated (:func:`truncated_part_of`: it starts with Parquet's magic, its footer
  is missing, and its first bytes name this run's id); it is first moved aside to a ``.corrupt``
  name (:func:`set_aside`) that is kept until the run completes.
* :func:`write_run` writes a complete run (imported or rescored) all or nothing.

Imports :mod:`rsbench.errors`, :mod:`rsbench.results.schema` and :mod:`rsbench.results.provenance`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from rsbench.errors import ConfigError, ResultsError
from rsbench.results.provenance import json_default
from rsbench.results.schema import (
    COLUMNS,
    OPTIONAL_COLUMNS,
    RESULTS_FORMAT_VERSION,
    SCHEMA,
    for_writing,
    frame_to_table,
    pandas_types,
    rows_to_table,
)

if TYPE_CHECKING:
    import pandas as pd

_PART_RE = re.compile(r"^part-(?P<shard>[A-Za-z0-9]+)-(?P<seq>\d+)\.parquet$")
RUN_JSON = "run.json"
#: Suffix of a truncated part of this run moved aside by a resume (deleted once the run completes).
CORRUPT_SUFFIX = ".corrupt"
#: Parquet's magic, at the start and at the end (after the footer) of every complete file.
_MAGIC = b"PAR1"
#: How far into a truncated part :func:`truncated_part_of` looks for the run id.
_HEAD_BYTES = 1 << 16


class UnreadablePart(ResultsError):
    """A results part that could not be read: ``reason`` is ``unreadable`` (the OS refused to
    open or read it), ``corrupt`` (not a readable Parquet file) or ``foreign`` (Parquet, but not
    rsbench's columns, types or counts). Never deleted by rsbench."""

    def __init__(self, message: str, path: Path, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


#: Environment variable naming the default results directory.
ENV_RESULTS = "RSBENCH_RESULTS"
#: Default results directory, relative to the working directory. Not ``results/``: in a checkout
#: of this repository that folder holds the committed benchmark, which your runs must not mix with.
DEFAULT_RESULTS_DIR = "rsbench-results"


def default_results_dir() -> Path:
    """Where certify, sweep and import-logs write and leaderboard, plot and compare read by
    default: ``$RSBENCH_RESULTS``, else ``./rsbench-results``."""
    return Path(os.environ.get(ENV_RESULTS) or DEFAULT_RESULTS_DIR).expanduser()


# --------------------------------------------------------------------------------------- writing


def part_name(shard: str, seq: int) -> str:
    """Final file name of chunk ``seq`` of ``shard`` (``shard`` is alphanumeric, e.g. ``0of2``)."""
    if not re.fullmatch(r"[A-Za-z0-9]+", shard):
        raise ResultsError(f"shard name {shard!r} must be alphanumeric (e.g. '0of2')")
    return f"part-{shard}-{int(seq):06d}.parquet"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_chunk(
    run_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]] | pa.Table, shard: str, seq: int
) -> Path:
    """Write ``rows`` atomically as ``run_dir/part-<shard>-<seq>.parquet`` and return its path.

    The table goes to a temporary ``.tmp`` name in the same directory, is fsync'ed, and is renamed
    into place (``os.replace``); the directory is fsync'ed too. Refuses to overwrite an existing part.
    """
    run_dir = Path(run_dir)
    table = for_writing(rows if isinstance(rows, pa.Table) else rows_to_table(rows))
    final = run_dir / part_name(shard, seq)
    if final.exists():
        raise ResultsError(f"{final} already exists; chunk numbers must not be reused")
    try:
        _write_part_file(run_dir, final, table)
    except OSError as exc:  # disk full, read-only or vanished directory, quota, ...
        reason = exc.strerror or type(exc).__name__
        raise ResultsError(
            f"could not write results part {final} ({reason}); the parts written before it are intact: "
            "free space or fix the directory, then rerun the same command to resume"
        ) from None
    return final


def _write_part_file(run_dir: Path, final: Path, table: pa.Table) -> None:
    """Write ``table`` to a temporary name, fsync it, rename it to ``final``, fsync the folder;
    an OSError leaves no temporary file behind (and ``final`` untouched)."""
    tmp = run_dir / f".{final.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(run_dir)


def write_run(
    run_dir: str | os.PathLike,
    rows: pd.DataFrame | pa.Table,
    run_info: Mapping[str, Any],
    *,
    shard: str = "0",
    overwrite: bool = False,
) -> Path:
    """Write a complete run (imported or rescored rows plus ``run.json``) into a new directory.

    ``rows`` is a DataFrame of :data:`SCHEMA` columns or an Arrow table. Refuses a non-empty
    existing directory unless ``overwrite`` (then the directory is replaced as a whole). All or
    nothing: the run is written into a hidden sibling directory and renamed into place, so a
    failure (read-only or full disk, bad rows) leaves no directory behind and an overwritten run
    intact.
    """
    run_dir = Path(run_dir)
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise ResultsError(
            f"{run_dir} already holds results; choose another --out or pass --overwrite"
        )
    table = rows if isinstance(rows, pa.Table) else frame_to_table(rows)
    tmp = run_dir.with_name(f".{run_dir.name}.{os.getpid()}.tmp")
    old = run_dir.with_name(f".{run_dir.name}.{os.getpid()}.old")
    try:
        try:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            table = for_writing(table)  # fixed-n rows: without the sequential columns
            _write_part_file(tmp, tmp / part_name(shard, 0), table)
            info = {
                "format_version": RESULTS_FORMAT_VERSION,
                "run_id": run_dir.name,
                **dict(run_info),
            }
            info.setdefault("num_rows", table.num_rows)
            write_json_atomic(tmp / RUN_JSON, info)
            if run_dir.exists() and any(run_dir.iterdir()):
                os.replace(run_dir, old)
            os.replace(tmp, run_dir)
        except OSError as exc:
            if old.exists() and not run_dir.exists():
                os.replace(old, run_dir)  # put the overwritten run back
            kept = "; the run that was there is kept" if run_dir.exists() else ""
            raise ResultsError(
                f"cannot write the run {run_dir} ({exc.strerror or type(exc).__name__}); nothing "
                f"of it was written{kept}: free space or choose a writable --out, then run the "
                "command again (it starts over; nothing resumes)"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return run_dir


#: The longest run id (a folder name): file systems allow 255 bytes, and rsbench's temporary
#: names (``.<id>.<pid>.tmp``, ``.<id>.<pid>.old``) need room around it.
MAX_RUN_ID = 200


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe directory name, else raise :class:`ConfigError`."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", run_id):
        raise ConfigError(f"run id {run_id!r:.80} must use letters, digits and . _ + - only")
    if len(run_id) > MAX_RUN_ID:
        raise ConfigError(
            f"run id {run_id[:40]}... is {len(run_id)} characters long; at most {MAX_RUN_ID} fit "
            "a folder name: use a shorter model id"
        )
    return run_id


# --------------------------------------------------------------------------------------- reading


def list_parts(run_dir: str | os.PathLike) -> list[Path]:
    """Final part files of a run directory, sorted by (shard, seq)."""
    run_dir = Path(run_dir)
    parts = []
    for path in run_dir.iterdir() if run_dir.is_dir() else ():
        match = _PART_RE.match(path.name)
        if match and path.is_file():
            parts.append((match["shard"], int(match["seq"]), path))
    return [path for _, _, path in sorted(parts)]


def parse_part_name(path: str | os.PathLike) -> tuple[str, int] | None:
    """``(shard, seq)`` of a part file name, or None when it is not a part file."""
    match = _PART_RE.match(Path(path).name)
    return (match["shard"], int(match["seq"])) if match else None


def read_part(path: str | os.PathLike) -> pa.Table:
    """Read and check one part file; raise :class:`UnreadablePart` naming it when it cannot be
    read, is not rsbench's, or holds counts that cannot be (:func:`check_counts`). The file is
    opened as a Python file handle (any path the OS accepts works) and never changed."""
    path = Path(path)
    keep = "rsbench left it as it was"
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after pyarrow read it
    except OSError as exc:
        raise UnreadablePart(
            f"results part {path} cannot be read ({exc.strerror or type(exc).__name__}); fix its "
            f"permissions (e.g. chmod u+r) or move it out of the run folder, then rerun ({keep})",
            path,
            "unreadable",
        ) from None
    try:
        with handle:
            table = pq.read_table(handle)
    except OSError as exc:
        if not isinstance(exc, pa.ArrowException) and exc.errno is not None:
            raise UnreadablePart(
                f"results part {path} cannot be read ({exc.strerror or type(exc).__name__}); fix "
                f"the file or its disk, or move it out of the run folder, then rerun ({keep})",
                path,
                "unreadable",
            ) from None
        raise _corrupt(path, exc, keep) from None
    except (pa.ArrowException, ValueError) as exc:
        raise _corrupt(path, exc, keep) from None
    missing = [
        name for name in COLUMNS if name not in table.schema.names and name not in OPTIONAL_COLUMNS
    ]
    if missing:
        raise UnreadablePart(
            f"results part {path} lacks column(s) {missing[:4]}; it is not an rsbench results "
            f"file: move it out of the run folder ({keep})",
            path,
            "foreign",
        )
    for name in OPTIONAL_COLUMNS:
        if name not in table.schema.names:
            table = table.append_column(
                SCHEMA.field(name), pa.nulls(table.num_rows, SCHEMA.field(name).type)
            )
    table = table.select(list(COLUMNS))
    if not table.schema.equals(SCHEMA):
        try:
            table = table.cast(SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            detail = " ".join(str(exc).split())[:160]
            raise UnreadablePart(
                f"results part {path} has wrong column types ({detail}); it is not an rsbench "
                f"results file: move it out of the run folder ({keep})",
                path,
                "foreign",
            ) from None
    problem = check_counts(table)
    if problem is not None:
        raise UnreadablePart(
            f"results part {path} holds counts that cannot be ({problem}); it was altered or not "
            f"written by rsbench: move it out of the run folder ({keep})",
            path,
            "foreign",
        )
    return table


def _corrupt(path: Path, exc: BaseException, keep: str) -> UnreadablePart:
    return UnreadablePart(
        f"results part {path} is truncated or corrupted, not a readable Parquet file "
        f"({type(exc).__name__}); move it out of the run folder and rerun the same command to "
        f"redo its samples ({keep})",
        path,
        "corrupt",
    )


def _values(table: pa.Table, name: str) -> Any:
    """A numeric column as a float NumPy array (null -> NaN)."""
    import numpy as np

    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def _list_sums(table: pa.Table, name: str) -> tuple[Any, Any, Any]:
    """``(has, sums, negative)`` of a list<int64> column: whether a row's list is present, the sum
    of its items, and whether any item is negative (an item that is null counts as negative)."""
    import numpy as np

    column = table.column(name).combine_chunks()
    rows = len(column)
    has = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    flat = pa.compute.list_flatten(column)
    parents = np.asarray(pa.compute.list_parent_indices(column).to_numpy(zero_copy_only=False))
    items = np.asarray(flat.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.float64)
    sums = np.bincount(parents, weights=items, minlength=rows) if rows else np.zeros(0)
    negative = np.bincount(parents, weights=items < 0, minlength=rows) > 0 if rows else has
    return has, sums, negative


def check_counts(table: pa.Table) -> str | None:
    """What is impossible about the vote counts of ``table`` (a part of :data:`SCHEMA`), or None.

    Refused (the first problem found, with a sample index): a negative count; ``nA > n``,
    ``count0 > n0``, ``router_nA > router_n``, ``router_count0 > router_n0``; an estimation vote
    vector (``counts``, ``router_counts``) with a negative entry or whose entries do not sum to
    its ``n`` (``router_n``; a sequential row's ``n_used``, ``router_n_used``, at most n, since its
    ``n`` is n_max). Nulls (counts a log does not record) are not checked. Every row
    rsbench writes passes; a row that fails was altered, and rescoring or ranking it would certify
    from counts no run drew.
    """
    import numpy as np

    if table.num_rows == 0:
        return None
    index = _values(table, "index")

    def first(bad: Any, what: str) -> str | None:
        bad = np.asarray(bad, dtype=bool)
        if not bad.any():
            return None
        return f"{what} at index {int(index[int(np.argmax(bad))])}"

    checks = []
    for count, total in (
        ("nA", "n"),
        ("count0", "n0"),
        ("router_nA", "router_n"),
        ("router_count0", "router_n0"),
        ("expert_nA", "n"),
    ):
        c, t = _values(table, count), _values(table, total)
        checks.append((c < 0, f"{count} < 0"))
        checks.append((c > t, f"{count} > {total}"))
    for name in ("cA", "router_cA"):
        checks.append((_values(table, name) < 0, f"{name} < 0"))
    for used, total in (("n_used", "n"), ("router_n_used", "router_n")):  # sequential rows
        checks.append((_values(table, used) > _values(table, total), f"{used} > {total}"))
    for vector, total in (("counts", "n"), ("router_counts", "router_n")):
        has, sums, negative = _list_sums(table, vector)
        t = _values(table, total)
        drawn = _values(table, f"{total.removesuffix('n')}n_used")  # sequential: samples drawn
        t = np.where(np.isnan(drawn), t, drawn)
        total = total if np.isnan(drawn).all() else f"{total} (n_used)"
        checks.append((has & negative, f"a negative entry in {vector}"))
        checks.append((has & ~np.isnan(t) & (sums != t), f"{vector} do not sum to {total}"))
    for bad, what in checks:
        found = first(bad, what)
        if found is not None:
            return found
    return None


def truncated_part_of(path: str | os.PathLike, run_id: str | None) -> bool:
    """Whether ``path`` is positively a truncated part of run ``run_id``: it starts with
    Parquet's magic, does not end with it (the footer is missing), and its first 64 KiB hold the
    run id as Parquet stores a string (after its 4-byte little-endian or varint length: the
    first column, ``run_id``, is written first, with its statistics). Any doubt (no ``run_id``, a
    file that cannot be read, an intact footer) is False: such a file is never replaced."""
    if not run_id:
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - len(_MAGIC)))
            tail = handle.read(len(_MAGIC))
    except OSError:
        return False
    if not head.startswith(_MAGIC) or tail == _MAGIC or size <= len(_MAGIC):
        return False
    name = run_id.encode("utf-8", "surrogateescape")
    length, varint = len(name), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return any(prefix + name in head for prefix in (len(name).to_bytes(4, "little"), bytes(varint)))


def set_aside(path: str | os.PathLike) -> Path:
    """Rename ``path`` to ``<name>.corrupt`` (``.corrupt.1``, ... when taken) in its folder and
    return the new path; the folder is fsync'ed. Nothing is deleted."""
    path = Path(path)
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    k = 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}.{k}")
    os.replace(path, target)
    _fsync_dir(path.parent)
    return target


def set_aside_parts(run_dir: str | os.PathLike) -> list[Path]:
    """The parts a resume of ``run_dir`` moved aside (:func:`set_aside`), sorted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(
        p
        for p in run_dir.iterdir()
        if p.name.startswith("part-") and CORRUPT_SUFFIX in p.name and p.is_file()
    )


def _run_dirs(path: Path) -> list[Path]:
    if not path.exists():
        raise ResultsError(
            f"results path {path} does not exist; pass a run directory or a parent of runs"
        )
    if path.is_file():
        raise ResultsError(
            f"results path {path} is a file; pass a run directory or a parent of runs"
        )
    if (path / RUN_JSON).is_file() or list_parts(path):
        return [path]
    found = sorted(
        {p.parent for p in path.rglob("part-*.parquet")} | {p.parent for p in path.rglob(RUN_JSON)}
    )
    return found


def find_run_dirs(path: str | os.PathLike) -> list[Path]:
    """Run directories at or below ``path`` (those holding part files or run.json)."""
    return _run_dirs(Path(path))


def read_tables(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pa.Table:
    """All rows under ``paths`` (run dirs, parents of run dirs, or a list) as one Arrow table.

    Rows of each run directory are sorted by sample index; run directories in path order.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    run_dirs: list[Path] = []
    for path in paths:
        for run_dir in _run_dirs(Path(path)):
            if run_dir not in run_dirs:
                run_dirs.append(run_dir)
    tables = []
    for run_dir in run_dirs:
        check_format(run_dir)
        owner = declared_run_id(run_dir)
        parts = []
        for part in list_parts(run_dir):
            table = read_part(part)
            owner = check_part_owner(table, part, owner)
            parts.append(table)
        if parts:
            table = pa.concat_tables(parts)
            tables.append(table.take(pa.compute.sort_indices(table, [("index", "ascending")])))
    if not tables:
        return SCHEMA.empty_table()
    return pa.concat_tables(tables)


def read_results(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read results into a ``pandas.DataFrame`` with the columns of :data:`SCHEMA`, in that order.

    ``paths`` is a run directory, a parent directory of runs (searched recursively), or a list of
    either. Integer columns use pandas' nullable ``Int64``, booleans ``boolean``, vote vectors are
    arrays. Raises :class:`ResultsError` naming the file when a part is truncated or corrupted.
    """
    table = read_tables(paths)
    return table.to_pandas(types_mapper=pandas_types().get)


# --------------------------------------------------------------------------------------- run.json


def write_json_atomic(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=json_default)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_run_json(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``run.json`` of a run directory; :class:`ResultsError` when missing or malformed."""
    path = Path(run_dir) / RUN_JSON
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ResultsError(
            f"{path} does not exist; {run_dir} is not an rsbench run directory"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(
            f"{path} is not valid JSON ({exc}); delete it to restart the run"
        ) from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path} does not hold a JSON object")
    return data


def check_format(run_dir: str | os.PathLike) -> None:
    """Raise :class:`ResultsError` when ``run_dir/run.json`` declares a results format this
    rsbench cannot read (a run without run.json is read as the current format)."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        return
    version = read_run_json(run_dir).get("format_version")
    if version != RESULTS_FORMAT_VERSION:
        raise ResultsError(
            f"{run_dir} holds results format {version!r}; this rsbench reads format "
            f"{RESULTS_FORMAT_VERSION} (use the rsbench version that wrote it)"
        )


def declared_run_id(run_dir: str | os.PathLike) -> str | None:
    """The id that the rows of a run directory must carry: run.json's ``run_id`` (kept when the
    directory is renamed); None without run.json or without that field."""
    path = Path(run_dir) / RUN_JSON
    if path.is_file():
        run_id = read_run_json(run_dir).get("run_id")
        if isinstance(run_id, str) and run_id:
            return run_id
    return None


def check_part_owner(table: pa.Table, part: str | os.PathLike, run_id: str | None) -> str | None:
    """Raise :class:`ResultsError` when rows of ``part`` belong to another run than ``run_id``
    (a part copied or moved between run directories would mix two computations). With
    ``run_id`` None the part's own id is returned, for the next parts to be checked against."""
    found = pa.compute.unique(table.column("run_id")).to_pylist()
    run_id = run_id if run_id is not None else (found[0] if found else None)
    ids = [i for i in found if i != run_id]
    if ids:
        raise ResultsError(
            f"results part {part} holds rows of run {ids[0]!r}, not of this run {run_id!r}; "
            "move it back to its own run directory (or delete it) and rerun"
        )
    return run_id


@dataclass(frozen=True)
class RunState:
    """Where a run stands according to its run.json: ``status`` (complete, running, interrupted;
    None without run.json) and ``planned`` images (None when not recorded, e.g. imported runs)."""

    run_id: str
    status: str | None
    planned: int | None
    #: a dual run's experts in router order, (expert id, sigma); empty for other runs
    experts: tuple[tuple[str, float], ...] = ()

    @property
    def complete(self) -> bool:
        """True unless run.json says the run has not finished (a run without run.json counts)."""
        return self.status in (None, "complete")


def _dual_experts(run_dir: Path, ids: Any, sigmas: Any) -> tuple[tuple[str, float], ...]:
    """A dual run's ``(expert id, sigma)`` pairs from its run.json; :class:`ResultsError` naming
    the file when they are not a list of ids and a list of as many finite numbers."""
    import math

    if not ids and not sigmas:
        return ()
    ok = (
        isinstance(ids, (list, tuple))
        and isinstance(sigmas, (list, tuple))
        and len(ids) == len(sigmas)
        and all(isinstance(e, str) for e in ids)
        and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)
            for s in sigmas
        )
    )
    if not ok:
        raise ResultsError(
            f"{run_dir / RUN_JSON}: a dual run's config needs 'expert_ids' (zoo ids) and as many "
            f"'sigmas' (finite numbers), not {ids!r:.60} and {sigmas!r:.60}; the file was "
            "altered: restore it from the run that wrote it"
        )
    return tuple((e, float(s)) for e, s in zip(ids, sigmas))


def run_states(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[str, RunState]:
    """``run_id -> RunState`` for every run directory under ``paths`` (as :func:`read_results`)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    states: dict[str, RunState] = {}
    for path in paths:
        for run_dir in _run_dirs(Path(path)):
            info = read_run_json(run_dir) if (run_dir / RUN_JSON).is_file() else {}
            planned = info.get("num_indices")
            run_id = declared_run_id(run_dir) or run_dir.name
            config = info.get("config")
            if not isinstance(config, dict):
                config = {}
            ids, sigmas = config.get("expert_ids") or (), config.get("sigmas") or ()
            experts: tuple[tuple[str, float], ...] = ()
            if config.get("kind") == "dual":
                experts = _dual_experts(run_dir, ids, sigmas)
            states[run_id] = RunState(
                run_id=run_id,
                status=info.get("status") if info else None,
                planned=int(planned) if isinstance(planned, int) else None,
                experts=experts,
            )
    return states

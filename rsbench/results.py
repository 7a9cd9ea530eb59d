"""Per-sample certificates in Parquet, with ``run.json`` provenance (see docs/results-schema.md).

A run directory holds ``run.json`` and ``part-<shard>-<seq>.parquet`` chunks, one row per
(run, sample). Guarantees:

* :func:`write_chunk` is atomic: a chunk is written to a temporary name inside the run directory,
  fsync'ed, then renamed to its final name, so a reader (or a resumed run) sees either the whole
  chunk or nothing. A process killed mid-write leaves only a ``.tmp`` file that resume deletes.
* :func:`read_results` checks every part against :data:`SCHEMA` and raises :class:`ResultsError`
  naming the file when a part is truncated, corrupted or has the wrong columns.
* :func:`import_cohen_log` turns a published Cohen-format TSV log into rows of the same schema; the
  count ``nA`` is reconstructed from the printed radius (the *smallest* consistent count, see there).
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from rsbench.errors import ConfigError, ResultsError

log = logging.getLogger(__name__)

#: Version of the on-disk results format (columns, file names, run.json layout).
RESULTS_FORMAT_VERSION = 1

_STR = pa.string()
_I64 = pa.int64()
_F64 = pa.float64()
_BOOL = pa.bool_()
_LIST = pa.list_(pa.int64())

#: Columns shared by every row (expert and dual), in order.
BASE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("run_id", _STR),
    ("protocol", _STR),
    ("dataset", _STR),
    ("split", _STR),
    ("index", _I64),
    ("label", _I64),
    ("model_id", _STR),
    ("kind", _STR),
    ("sigma", _F64),
    ("n0", _I64),
    ("n", _I64),
    ("alpha", _F64),
    ("seed", _I64),
    ("precision", _STR),
    ("batch_size", _I64),
    ("prediction", _I64),
    ("abstained", _BOOL),
    ("correct", _BOOL),
    ("cA", _I64),
    ("count0", _I64),
    ("nA", _I64),
    ("counts", _LIST),
    ("pA_lower", _F64),
    ("radius", _F64),
    ("seconds", _F64),
)

#: Columns filled for dual rows only (null for experts), in order.
DUAL_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("router_id", _STR),
    ("sigma_router", _F64),
    ("router_n0", _I64),
    ("router_n", _I64),
    ("alpha_router", _F64),
    ("alpha_expert", _F64),
    ("router_choice", _I64),
    ("expert_id", _STR),
    ("router_cA", _I64),
    ("router_count0", _I64),
    ("router_nA", _I64),
    ("router_counts", _LIST),
    ("router_pA_lower", _F64),
    ("router_radius", _F64),
    ("expert_cA", _I64),
    ("expert_count0", _I64),
    ("expert_nA", _I64),
    ("expert_counts", _LIST),
    ("expert_pA_lower", _F64),
    ("expert_radius", _F64),
)

_F64_LIST = pa.list_(pa.float64())

#: Columns added after format 1 was first written: every row's sample cost, and the cascade's
#: per-stage record (null for other kinds). Parts written before them read these as null.
CASCADE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("samples", _I64),
    ("cascade_p0", _F64),
    ("alpha_split", _STR),
    ("cascade_stage", _I64),
    ("stages_run", _I64),
    ("stage_sigmas", _F64_LIST),
    ("stage_cA", _LIST),
    ("stage_count0", _LIST),
    ("stage_nA", _LIST),
    ("stage_counts", pa.list_(_LIST)),
    ("stage_alpha", _F64_LIST),
    ("stage_pA_lower", _F64_LIST),
    ("stage_pA_upper", _F64_LIST),
    ("stage_pB_upper", _F64_LIST),
    ("stage_radius", _F64_LIST),
)
#: Columns a part may lack (read as null): those added to format 1 after it was first written.
OPTIONAL_COLUMNS: frozenset[str] = frozenset(name for name, _ in CASCADE_COLUMNS)

#: The Arrow schema of every part file (docs/results-schema.md).
SCHEMA = pa.schema(
    [pa.field(name, kind) for name, kind in BASE_COLUMNS + DUAL_COLUMNS + CASCADE_COLUMNS]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)

_PART_RE = re.compile(r"^part-(?P<shard>[A-Za-z0-9]+)-(?P<seq>\d+)\.parquet$")
RUN_JSON = "run.json"


# ------------------------------------------------------------------------------ certificate -> row


class RowSource(Protocol):
    """What a row takes from the run's configuration (:class:`rsbench.runner.RunConfig` has it)."""

    @property
    def protocol(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def split(self) -> str: ...
    @property
    def model_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def precision(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def router_id(self) -> str | None: ...


def certificate_row(
    cert: Any,
    config: RowSource,
    run_id: str,
    index: int,
    label: int,
    seconds: float,
    expert_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """One results row (docs/results-schema.md) from a ``Certificate`` or ``DualCertificate``."""
    row: dict[str, Any] = {
        "run_id": run_id,
        "protocol": config.protocol,
        "dataset": config.dataset,
        "split": config.split,
        "index": int(index),
        "label": int(label),
        "model_id": config.model_id,
        "kind": config.kind,
        "n0": int(cert.n0),
        "n": int(cert.n),
        "alpha": float(cert.alpha),
        "seed": config.seed,
        "precision": config.precision,
        "batch_size": config.batch_size,
        "prediction": int(cert.prediction),
        "abstained": bool(cert.abstained),
        "correct": bool(not cert.abstained and cert.prediction == label),
        "radius": float(cert.radius),
        "seconds": float(seconds),
    }
    if config.kind == "expert":
        row.update(
            sigma=float(cert.sigma),
            cA=int(cert.cA),
            count0=int(cert.count0),
            nA=int(cert.nA),
            counts=list(cert.counts),
            pA_lower=float(cert.pA_lower),
            samples=int(cert.n0 + cert.n),
        )
        return row
    if config.kind == "cascade":
        return _cascade_row(row, cert, expert_ids)
    choice = int(cert.router_choice)
    ran = cert.expert_nA is not None
    row.update(
        sigma=cert.expert_sigma,
        cA=cert.expert_cA,
        count0=cert.expert_count0,
        nA=cert.expert_nA,
        counts=list(cert.expert_counts) if ran else None,
        pA_lower=cert.expert_pA_lower,
        router_id=config.router_id,
        sigma_router=float(cert.sigma_router),
        router_n0=int(cert.router_n0),
        router_n=int(cert.router_n),
        alpha_router=float(cert.alpha_router),
        alpha_expert=float(cert.alpha_expert),
        router_choice=choice,
        expert_id=expert_ids[choice] if choice >= 0 and expert_ids else None,
        router_cA=int(cert.router_cA),
        router_count0=int(cert.router_count0),
        router_nA=int(cert.router_nA),
        router_counts=list(cert.router_counts),
        router_pA_lower=float(cert.router_pA_lower),
        router_radius=float(cert.router_radius),
        expert_cA=cert.expert_cA,
        expert_count0=cert.expert_count0,
        expert_nA=cert.expert_nA,
        expert_counts=list(cert.expert_counts) if ran else None,
        expert_pA_lower=cert.expert_pA_lower,
        expert_radius=cert.expert_radius,
        samples=int(cert.router_n0 + cert.router_n) + (int(cert.n0 + cert.n) if ran else 0),
    )
    return row


def _cascade_row(row: dict[str, Any], cert: Any, expert_ids: Sequence[str]) -> dict[str, Any]:
    """Fill a results row from a :class:`rsbench.cascade.CascadeCertificate` (base columns hold the
    answering stage, or the last stage run when the cascade abstained)."""
    last = cert.stage if cert.stage >= 0 else cert.stages_run - 1
    row.update(
        sigma=float(cert.stage_sigmas[last]),
        cA=int(cert.stage_cA[last]),
        count0=int(cert.stage_count0[last]),
        nA=int(cert.stage_nA[last]),
        counts=list(cert.stage_counts[last]),
        pA_lower=float(cert.stage_pA_lower[last]),
        expert_id=expert_ids[last] if expert_ids else None,
        samples=int(cert.samples),
        cascade_p0=float(cert.p0),
        alpha_split=str(cert.alpha_split),
        cascade_stage=int(cert.stage),
        stages_run=int(cert.stages_run),
        stage_sigmas=list(cert.stage_sigmas),
        stage_cA=list(cert.stage_cA),
        stage_count0=list(cert.stage_count0),
        stage_nA=list(cert.stage_nA),
        stage_counts=[list(c) for c in cert.stage_counts],
        stage_alpha=list(cert.stage_alpha),
        stage_pA_lower=list(cert.stage_pA_lower),
        stage_pA_upper=list(cert.stage_pA_upper),
        stage_pB_upper=list(cert.stage_pB_upper),
        stage_radius=list(cert.stage_radius),
    )
    return row


# --------------------------------------------------------------------------------------- writing


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build a table of :data:`SCHEMA` from row dicts; missing keys are null, unknown keys an error."""
    unknown = {key for row in rows for key in row} - set(COLUMNS)
    if unknown:
        raise ResultsError(
            f"unknown result column(s) {sorted(unknown)}; known columns: {list(COLUMNS)}"
        )
    arrays = []
    for field in SCHEMA:
        values = [_plain(row.get(field.name)) for row in rows]
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ResultsError(f"column {field.name!r} cannot hold these values ({exc})") from None
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _plain(value: Any) -> Any:
    """NumPy scalars/arrays and tuples to plain Python values that Arrow converts exactly."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN -> null
        return None
    return value


#: Environment variable naming the default results directory.
ENV_RESULTS = "RSBENCH_RESULTS"

#: Default results directory, relative to the working directory. Not ``results/``: in a checkout
#: of this repository that folder holds the committed benchmark, which your runs must not mix with.
DEFAULT_RESULTS_DIR = "rsbench-results"


def default_results_dir() -> Path:
    """Where certify, sweep and import-logs write and leaderboard, plot and compare read by
    default: ``$RSBENCH_RESULTS``, else ``./rsbench-results``."""
    return Path(os.environ.get(ENV_RESULTS) or DEFAULT_RESULTS_DIR).expanduser()


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
    table = rows if isinstance(rows, pa.Table) else rows_to_table(rows)
    if not table.schema.equals(SCHEMA):
        table = table.cast(SCHEMA)
    final = run_dir / part_name(shard, seq)
    if final.exists():
        raise ResultsError(f"{final} already exists; chunk numbers must not be reused")
    tmp = run_dir / f".{final.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except OSError as exc:  # disk full, read-only or vanished directory, quota, ...
        tmp.unlink(missing_ok=True)
        reason = exc.strerror or type(exc).__name__
        raise ResultsError(
            f"could not write results part {final} ({reason}); the parts written before it are intact: "
            "free space or fix the directory, then rerun the same command to resume"
        ) from None
    _fsync_dir(run_dir)
    return final


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
    """Read and check one part file; raise :class:`ResultsError` naming it when it is unreadable."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise ResultsError(
            f"results part {path} is truncated or corrupted ({type(exc).__name__}); delete it and "
            "rerun the same command to redo its samples"
        ) from None
    missing = [
        name for name in COLUMNS if name not in table.schema.names and name not in OPTIONAL_COLUMNS
    ]
    if missing:
        raise ResultsError(
            f"results part {path} lacks column(s) {missing}; it is not an rsbench results file"
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
            raise ResultsError(f"results part {path} has wrong column types ({exc})") from None
    return table


# --------------------------------------------------------------------------------------- reading


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


def _pandas_types() -> dict[pa.DataType, Any]:
    import pandas as pd

    return {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


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


def read_results(paths: str | os.PathLike | Iterable[str | os.PathLike]):
    """Read results into a ``pandas.DataFrame`` with the columns of :data:`SCHEMA`, in that order.

    ``paths`` is a run directory, a parent directory of runs (searched recursively), or a list of
    either. Integer columns use pandas' nullable ``Int64``, booleans ``boolean``, vote vectors are
    arrays. Raises :class:`ResultsError` naming the file when a part is truncated or corrupted.
    """
    table = read_tables(paths)
    return table.to_pandas(types_mapper=_pandas_types().get)


# --------------------------------------------------------------------------------------- run.json


def write_json_atomic(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=_json_default)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


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
            config = info.get("config") if isinstance(info.get("config"), dict) else {}
            ids, sigmas = config.get("expert_ids") or (), config.get("sigmas") or ()
            experts = ()
            if config.get("kind") == "dual" and len(ids) == len(sigmas):
                experts = tuple((str(e), float(s)) for e, s in zip(ids, sigmas))
            states[run_id] = RunState(
                run_id=run_id,
                status=info.get("status") if info else None,
                planned=int(planned) if isinstance(planned, int) else None,
                experts=experts,
            )
    return states


def utc_now() -> str:
    """Current UTC time in ISO 8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(start: str | os.PathLike | None = None) -> str | None:
    """Commit of the git checkout holding ``start`` (default: this package), or None."""
    where = Path(start) if start else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=where,
        capture_output=True,
        text=True,
        check=False,
    )
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    """Versions of Python, rsbench and the libraries that shape the numbers."""
    from importlib import metadata

    from rsbench import __version__

    versions = {"python": platform.python_version(), "rsbench": __version__}
    for name in (
        "torch",
        "torchvision",
        "timm",
        "numpy",
        "scipy",
        "pyarrow",
        "pandas",
        "safetensors",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment_info() -> dict[str, Any]:
    """Host facts recorded in run.json: platform, CPU count, versions, git commit."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "executable": sys.executable,
        "versions": package_versions(),
        "git_commit": git_commit(),
    }


def digest(data: Any) -> str:
    """sha256 of the canonical JSON of ``data`` (sorted keys): a stable content hash."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------- import


_TIME_RE = re.compile(r"^(?:(?P<days>\d+) days?, )?(?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2}(?:\.\d+)?)$")


def parse_log_time(text: str) -> float:
    """Seconds from a Cohen log time: ``H:MM:SS.ffffff`` (``str(timedelta)``) or plain seconds."""
    text = text.strip()
    match = _TIME_RE.match(text)
    if match:
        days = int(match["days"] or 0)
        return days * 86400 + int(match["h"]) * 3600 + int(match["m"]) * 60 + float(match["s"])
    try:
        value = float(text)
    except ValueError:
        raise ResultsError(
            f"time {text!r} is neither H:MM:SS.ffffff nor a number of seconds"
        ) from None
    if not np.isfinite(value) or value < 0:
        raise ResultsError(f"time {text!r} is not a non-negative number of seconds")
    return value


#: Where an imported row's radius comes from: ``count`` (recomputed from the reconstructed smallest
#: consistent count; the default) or ``printed`` (the log's rounded radius).
RADIUS_FROM = ("count", "printed")


def import_cohen_log(  # noqa: C901, PLR0912 — one pass over a foreign log: each column and protocol check is a separate refusal with its own message
    path: str | os.PathLike,
    *,
    dataset: str,
    split: str,
    model_id: str,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    protocol: str | None = None,
    run_id: str | None = None,
    significant_digits: int = 3,
    radius_from: str = "count",
):
    """Read a Cohen-format certification log into a ``pandas.DataFrame`` of :data:`SCHEMA`.

    The log (plain text, or gzipped when its name ends in ``.gz``) is tab-separated with the header
    ``idx label predict radius correct time``; ``time`` is
    ``H:MM:SS.ffffff`` or plain seconds; ``radius`` is printed with ``significant_digits``
    significant digits. Each row gets ``kind='expert'`` and the given protocol parameters.

    Reconstruction of ``nA`` (non-abstained rows): the radius is non-decreasing in nA, so the counts
    whose radius ``sigma * Phi^-1(CP_lower(nA, n, alpha))`` prints as the logged radius form a
    range; several counts usually print the same radius (e.g. about 30 counts at a printed radius
    near 0.5 for n = 100,000). We store the **smallest** consistent count, so ``pA_lower`` is the
    smallest bound consistent with the log. ``radius_from="count"`` (the default, conservative):
    ``radius`` is recomputed from that count, the smallest radius consistent with the log, and
    exactly what :func:`rescore_frame` gives at the same alpha; ``"printed"``: ``radius`` keeps the
    logged (rounded) value, as the authors' own analysis scripts use it. Abstained rows keep
    ``nA``, ``cA`` and ``pA_lower`` null (any count below the threshold is consistent).

    ``protocol``: None records the registered protocol the rows follow (n0, n, alpha, split and
    every index in its selection), else ``custom``; a given name is validated
    (:func:`rsbench.protocols.check_protocol`: a deviation is a :class:`ConfigError`).
    ``count0``, ``counts``, ``seed``, ``precision``, ``batch_size`` are null: logs do not record them.
    Raises :class:`ResultsError` on a malformed file, a ``correct`` that disagrees with
    ``predict == label``, or a radius no count can produce.
    """
    from rsbench.errors import check_alpha, check_count, check_sigma
    from rsbench.protocols import check_protocol
    from rsbench.stats import clopper_pearson_lower, counts_from_radii, radius_from_bound

    if radius_from not in RADIUS_FROM:
        raise ConfigError(
            f"radius_from={radius_from!r} is not allowed; use one of {', '.join(RADIUS_FROM)}"
        )
    sigma = check_sigma(sigma)
    alpha = check_alpha(alpha)
    n0 = check_count(n0, "n0")
    n = check_count(n, "n")
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"log file {path} does not exist")
    try:
        if path.suffix == ".gz":  # a gzipped log (tests/data ships them so)
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
    except (EOFError, gzip.BadGzipFile) as exc:
        raise ResultsError(f"log file {path} is not a readable gzip file ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ResultsError(
            f"log file {path} is not a text log (byte {exc.start} is not UTF-8); pass the "
            "tab-separated log that Cohen et al.'s certify.py writes"
        ) from None
    except OSError as exc:
        raise ResultsError(f"log file {path} cannot be read ({exc.strerror})") from None
    if not lines:
        raise ResultsError(
            f"log file {path} is empty; expected a header 'idx label predict radius correct time'"
        )
    header = lines[0].split()
    expected = ["idx", "label", "predict", "radius", "correct", "time"]
    if header != expected:
        raise ResultsError(
            f"log file {path} has header {header}; expected {expected} (tab-separated)"
        )
    idx, label, predict, radius, correct, seconds, radius_text = [], [], [], [], [], [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 6:
            raise ResultsError(
                f"{path}:{number}: expected 6 tab-separated fields, got {len(fields)}"
            )
        try:
            idx.append(int(fields[0]))
            label.append(int(fields[1]))
            predict.append(int(fields[2]))
            radius.append(float(fields[3]))
            correct.append(int(fields[4]))
        except ValueError as exc:
            raise ResultsError(f"{path}:{number}: malformed field ({exc})") from None
        radius_text.append(fields[3])
        try:
            seconds.append(parse_log_time(fields[5]))
        except ResultsError as exc:
            raise ResultsError(f"{path}:{number}: {exc}") from None
    idx_a = np.asarray(idx, dtype=np.int64)
    label_a = np.asarray(label, dtype=np.int64)
    predict_a = np.asarray(predict, dtype=np.int64)
    radius_a = np.asarray(radius, dtype=np.float64)
    correct_a = np.asarray(correct, dtype=np.int64).astype(bool)
    abstained = predict_a == -1
    if np.any(correct_a != ((predict_a == label_a) & ~abstained)):
        bad = int(idx_a[np.argmax(correct_a != ((predict_a == label_a) & ~abstained))])
        raise ResultsError(
            f"{path}: row idx={bad} has 'correct' that disagrees with predict == label"
        )
    if np.any(radius_a < 0) or np.any(abstained & (radius_a != 0)):
        raise ResultsError(f"{path}: a radius is negative, or an abstained row has a radius > 0")
    if len(np.unique(idx_a)) != len(idx_a):
        raise ResultsError(f"{path}: duplicate idx values")
    if len(idx_a) == 0:
        raise ResultsError(
            f"log file {path} has a header but no rows; import it once certify.py has written rows"
        )

    protocol = check_protocol(protocol, dataset, split, n0, n, alpha, idx_a.tolist())
    nA = np.full(len(idx_a), -1, dtype=np.int64)
    answered = ~abstained
    summary = {
        "rows": len(idx_a),
        "rows_abstained": int(abstained.sum()),
        "rows_with_ambiguous_count": 0,
        "max_consistent_counts": 1,
        "count_rule": "smallest count whose radius prints as the logged radius",
        "significant_digits": significant_digits,
        "radius_from": radius_from,
    }
    if answered.any():
        lowest, highest = counts_from_radii(radius_a[answered], sigma, n, alpha, significant_digits)
        pos = np.flatnonzero(answered)
        zero = radius_a[answered] == 0.0
        # A printed radius of 0 with a prediction means pA_lower == 1/2 (up to rounding): the count
        # just above the abstaining range is the smallest non-abstaining, consistent one.
        lowest = np.where(zero, highest + 1, lowest)
        if np.any(lowest < 0):
            bad = int(np.flatnonzero(lowest < 0)[0])
            raise ResultsError(
                f"{path}: radius {radius_text[pos[bad]]!r} at idx={int(idx_a[pos[bad]])} cannot come from "
                f"any count with sigma={sigma}, n={n}, alpha={alpha}; check these options"
            )
        nA[pos] = lowest
        spread = highest - lowest
        summary["rows_with_ambiguous_count"] = int(np.sum(spread > 0))
        summary["max_consistent_counts"] = int(spread.max(initial=0)) + 1
        log.info(
            "%s: reconstructed nA for %d rows; %d rows have more than one consistent count (max %d); "
            "the smallest was used",
            path,
            len(pos),
            int(np.sum(spread > 0)),
            int(spread.max(initial=0)) + 1,
        )
    pa_lower = np.where(answered, clopper_pearson_lower(np.maximum(nA, 0), n, alpha), np.nan)
    if radius_from == "count":  # the smallest radius consistent with the log (conservative)
        radius_a = np.where(answered, radius_from_bound(np.nan_to_num(pa_lower), sigma), 0.0)

    run_id = run_id or f"imported-{model_id}-{dataset}-{split}-s{sigma:g}"
    rows = len(idx_a)
    table = columns_to_table(
        {
            "run_id": [run_id] * rows,
            "protocol": [protocol] * rows,
            "dataset": [dataset] * rows,
            "split": [split] * rows,
            "index": idx_a,
            "label": label_a,
            "model_id": [model_id] * rows,
            "kind": ["expert"] * rows,
            "sigma": np.full(rows, sigma),
            "n0": np.full(rows, n0),
            "n": np.full(rows, n),
            "alpha": np.full(rows, alpha),
            "prediction": predict_a,
            "abstained": abstained,
            "correct": correct_a,
            "cA": pa.array(predict_a, mask=abstained),
            "nA": pa.array(nA, mask=abstained),
            "pA_lower": pa.array(pa_lower, mask=abstained),
            "radius": radius_a,
            "seconds": np.asarray(seconds, dtype=np.float64),
        },
        rows,
    )
    frame = table.to_pandas(types_mapper=_pandas_types().get)
    frame.attrs["import"] = summary
    return frame


def columns_to_table(columns: Mapping[str, Any], num_rows: int) -> pa.Table:
    """Table of :data:`SCHEMA` from column arrays (NumPy, Arrow or lists); absent columns are null."""
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ResultsError(f"unknown result column(s) {sorted(unknown)}")
    arrays = []
    for field in SCHEMA:
        values = columns.get(field.name)
        if values is None:
            arrays.append(pa.nulls(num_rows, type=field.type))
        elif isinstance(values, pa.Array):
            arrays.append(values.cast(field.type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _frame_to_table(frame) -> pa.Table:
    arrays = []
    for field in SCHEMA:
        values = [_plain(v) for v in frame[field.name].tolist()]
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def frame_to_table(frame) -> pa.Table:
    """A ``pandas.DataFrame`` with the columns of :data:`SCHEMA` (as from :func:`read_results`) to Arrow."""
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        raise ResultsError(f"results frame lacks column(s) {missing}")
    return _frame_to_table(frame)


def write_run(
    run_dir: str | os.PathLike,
    rows,
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
            write_chunk(tmp, table, shard, 0)
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
            raise ResultsError(
                f"cannot write the run {run_dir} ({exc.strerror or type(exc).__name__}); choose a "
                "writable --out (nothing was written)"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return run_dir


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe directory name, else raise :class:`ConfigError`."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", run_id):
        raise ConfigError(f"run id {run_id!r} must use letters, digits and . _ + - only")
    return run_id


# --------------------------------------------------------------------------------------- rescore


def _num(frame, column: str, fill: float = np.nan) -> np.ndarray:
    return frame[column].astype("Float64").to_numpy(dtype=np.float64, na_value=fill)


def _expert_ids_of(
    out, rows: np.ndarray, choice: np.ndarray, expert_ids: Sequence[str] | None
) -> np.ndarray:
    """The id of the expert each dual row's router chooses (None where it abstains).

    From ``expert_ids`` (the run's experts in router order) when given, else from the rows
    themselves (a choice that no stored row names keeps a null id).
    """
    if expert_ids:
        names = dict(enumerate(expert_ids))
    else:
        names = {}
        stored_choice = _num(out, "router_choice", -1)[rows]
        for k, name in zip(stored_choice, out["expert_id"].astype(object).to_numpy()[rows]):
            if k >= 0 and isinstance(name, str):
                names.setdefault(int(k), name)
    return np.array([names.get(int(k)) if k >= 0 else None for k in choice], dtype=object)


def rescore_frame(
    frame,
    alpha: float,
    alpha_router_fraction: float | None = None,
    expert_ids: Sequence[str] | None = None,
):
    """Recompute certificates of ``frame`` (rows of :data:`SCHEMA`) from their stored counts.

    Expert rows: ``pA_lower``, ``radius``, ``prediction``, ``abstained`` and ``correct`` from
    ``cA``, ``nA``, ``n`` and ``sigma`` at the new ``alpha`` (CERTIFY's decision, see
    :func:`rsbench.smoothing.decide_certificate`); rows without a count (imported abstentions)
    stay abstained. Dual rows: both stages are recomputed with ``alpha`` split as
    ``alpha_router_fraction`` says (default: each row's stored split); a router that abstains makes
    the row abstain; a row whose expert stage never ran abstains; the composition is
    :func:`rsbench.dual.combine_stages`, and ``router_choice`` / ``expert_id`` follow the router's
    new decision (``expert_ids``: the run's experts in router order, else learned from the rows).
    Cascade rows: every stage decision, cap and the radius are recomputed from the stored stage
    counts with the row's own p0 and alpha split (:func:`rsbench.cascade.combine_cascade`); a stage
    that would now be needed but never ran makes the row abstain. Nothing runs a network. With the
    stored alpha (and split) every value is reproduced exactly.
    """
    from rsbench.dual import combine_stages
    from rsbench.errors import check_alpha, check_alpha_router_fraction
    from rsbench.smoothing import decide_certificate

    alpha = check_alpha(alpha)
    if alpha_router_fraction is not None:
        alpha_router_fraction = check_alpha_router_fraction(alpha_router_fraction)
    out = frame.copy()
    if len(out) == 0:
        return out
    old_alpha = _num(out, "alpha")
    split_changed = np.zeros(len(out), dtype=bool)  # dual rows whose alpha split is changed
    label = _num(out, "label", -2).astype(np.int64)
    dual = (out["kind"] == "dual").to_numpy(dtype=bool, na_value=False)
    cascade = (out["kind"] == "cascade").to_numpy(dtype=bool, na_value=False)
    if cascade.any():
        _rescore_cascade(out, np.flatnonzero(cascade), alpha, label)

    # expert rows
    expert = ~dual & ~cascade
    if expert.any():
        nA = _num(out, "nA")
        has = expert & ~np.isnan(nA)
        if has.any():
            d = decide_certificate(
                _num(out, "cA", 0)[has].astype(np.int64),
                _num(out, "count0", 0)[has].astype(np.int64),
                nA[has].astype(np.int64),
                _num(out, "n")[has].astype(np.int64),
                alpha,
                _num(out, "sigma")[has],
            )
            rows = np.flatnonzero(has)
            _assign(out, rows, "pA_lower", d["pA_lower"])
            _assign(out, rows, "radius", d["radius"])
            _assign(out, rows, "prediction", d["prediction"])
            _assign(out, rows, "abstained", d["abstained"])
            _assign(out, rows, "correct", ~d["abstained"] & (d["prediction"] == label[rows]))

    # dual rows
    if dual.any():
        rows = np.flatnonzero(dual)
        stored_router = _num(out, "alpha_router")[rows]
        stored_expert = _num(out, "alpha_expert")[rows]
        if alpha_router_fraction is None:
            fraction = stored_router / old_alpha[rows]
            same = old_alpha[rows] == alpha
            alpha_r = np.where(same, stored_router, alpha * fraction)
            alpha_e = np.where(same, stored_expert, alpha - alpha * fraction)
        else:
            alpha_r = np.full(len(rows), alpha * float(alpha_router_fraction))
            alpha_e = alpha - alpha_r
            stored_fraction = stored_router / old_alpha[rows]
            split_changed[rows] = ~np.isclose(stored_fraction, float(alpha_router_fraction))
        e_nA = _num(out, "expert_nA")[rows]
        ran = ~np.isnan(e_nA)
        combined = combine_stages(
            _num(out, "router_cA", 0)[rows].astype(np.int64),
            _num(out, "router_count0", 0)[rows].astype(np.int64),
            _num(out, "router_nA", 0)[rows].astype(np.int64),
            _num(out, "router_n", 0)[rows].astype(np.int64),
            _num(out, "expert_cA", 0)[rows],
            _num(out, "expert_count0", 0)[rows],
            e_nA,
            _num(out, "n")[rows].astype(np.int64),
            _num(out, "sigma")[rows],
            _num(out, "sigma_router")[rows],
            alpha,
            alpha_router=alpha_r,
            alpha_expert=alpha_e,
        )
        abstained, prediction = combined["abstained"], combined["prediction"]
        choice = combined["router_choice"]
        _assign(out, rows, "alpha_router", combined["alpha_router"])
        _assign(out, rows, "alpha_expert", combined["alpha_expert"])
        _assign(out, rows, "router_pA_lower", combined["router_pA_lower"])
        _assign(out, rows, "router_radius", combined["router_radius"])
        _assign(out, rows, "router_choice", choice)
        _assign(out, rows, "expert_id", _expert_ids_of(out, rows, choice, expert_ids))
        _assign(out, rows, "expert_pA_lower", combined["expert_pA_lower"])
        _assign(out, rows, "expert_radius", combined["expert_radius"])
        _assign(out, rows, "pA_lower", np.where(ran, combined["expert_pA_lower"], np.nan))
        _assign(out, rows, "radius", combined["radius"])
        _assign(out, rows, "prediction", prediction)
        _assign(out, rows, "abstained", abstained)
        _assign(out, rows, "correct", ~abstained & (prediction == label[rows]))

    out["alpha"] = alpha
    _recheck_protocols(out, split_changed)
    return out


def _recheck_protocols(out, split_changed: np.ndarray) -> None:
    """Set each run's ``protocol`` to the one its rescored rows follow (rsbench.protocols.PROTOCOLS).

    A run keeps its protocol when the rows still fit it (n0, n, the new alpha, split, indices),
    else gets the registered protocol they fit, else ``custom``; rows whose dual alpha split was
    changed are ``custom``. A deviation is never left under a standard name.
    """
    from rsbench.protocols import CUSTOM_PROTOCOL, PROTOCOLS, protocol_deviation, protocol_for

    columns = [out[c].astype(object).to_numpy() for c in ("run_id", "dataset", "split", "n0", "n")]
    keys = list(zip(*columns))
    protocols = out["protocol"].astype(object).to_numpy().copy()
    index = out["index"].astype(object).to_numpy()
    alpha = float(out["alpha"].iloc[0])
    for key in dict.fromkeys(keys):
        rows = np.array([k == key for k in keys])
        _, dataset, split, n0, n = key
        stored = protocols[rows][0]
        args = (str(dataset), str(split), int(n0), int(n), alpha, [int(i) for i in index[rows]])
        if split_changed[rows].any():
            name = CUSTOM_PROTOCOL
        elif stored in PROTOCOLS and protocol_deviation(PROTOCOLS[stored], *args) is None:
            name = stored
        else:
            name = protocol_for(*args)
        protocols[rows] = name
    out["protocol"] = _object_series(list(protocols), out.index).astype(out["protocol"].dtype)


def _rescore_cascade(out, rows: np.ndarray, alpha: float, label: np.ndarray) -> None:
    """Recompute cascade rows at ``alpha`` from their stored stage counts (their own p0 and split).

    A stage that did not run in the live certificate but would be needed now makes the row abstain.
    """
    from rsbench.cascade import rescore_rows

    def cells(column: str) -> list:
        return [out[column].iloc[r] for r in rows]

    decided = rescore_rows(
        cells("stage_sigmas"),
        cells("stage_cA"),
        cells("stage_nA"),
        cells("stage_counts"),
        [int(v) for v in cells("n")],
        alpha,
        [float(v) for v in cells("cascade_p0")],
        [str(v) for v in cells("alpha_split")],
    )
    prediction = np.array([d["prediction"] for d in decided], dtype=np.int64)
    abstained = np.array([d["abstained"] for d in decided], dtype=bool)
    _assign(out, rows, "prediction", prediction)
    _assign(out, rows, "abstained", abstained)
    _assign(out, rows, "radius", np.array([d["radius"] for d in decided], dtype=np.float64))
    _assign(out, rows, "correct", ~abstained & (prediction == label[rows]))
    _assign(out, rows, "cascade_stage", np.array([d["stage"] for d in decided], dtype=np.int64))
    answering = [d["stage"] if d["stage"] >= 0 else len(d["pA_lower"]) - 1 for d in decided]
    _assign(out, rows, "pA_lower", np.array([d["pA_lower"][k] for d, k in zip(decided, answering)]))
    # the base columns name the answering stage (the last stage run when the cascade abstains)
    for column, stage_column in (
        ("cA", "stage_cA"),
        ("count0", "stage_count0"),
        ("nA", "stage_nA"),
    ):
        values = [int(v[k]) for v, k in zip(cells(stage_column), answering)]
        _assign(out, rows, column, np.array(values, dtype=np.int64))
    sigmas = [float(v[k]) for v, k in zip(cells("stage_sigmas"), answering)]
    _assign(out, rows, "sigma", np.array(sigmas, dtype=np.float64))
    counts = out["counts"].tolist()
    for r, v, k in zip(rows, cells("stage_counts"), answering):
        counts[r] = np.asarray(v[k], dtype=np.int64)
    out["counts"] = _object_series(counts, out.index)
    for column, key in (
        ("stage_alpha", "stage_alpha"),
        ("stage_pA_lower", "pA_lower"),
        ("stage_pA_upper", "pA_upper"),
        ("stage_pB_upper", "pB_upper"),
        ("stage_radius", "stage_radius"),
    ):
        values = out[column].tolist()
        for r, d in zip(rows, decided):
            values[r] = np.asarray(d[key], dtype=np.float64)
        out[column] = _object_series(values, out.index)


def _object_series(values: list, index):
    """A pandas object Series holding ``values`` as they are (arrays stay arrays, even of length 1)."""
    import pandas as pd

    cells = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        cells[i] = value
    return pd.Series(cells, index=index, dtype=object)


def _assign(frame, rows: np.ndarray, column: str, values: np.ndarray) -> None:
    """Set ``frame[column]`` at positional ``rows``; NaN becomes null in nullable columns."""
    import pandas as pd

    series = frame[column].copy()
    values = np.asarray(values)
    if values.dtype.kind == "f" and not np.issubdtype(series.dtype, np.floating):
        values = pd.array(values, dtype="Float64")  # NaN -> <NA> in nullable columns
    series.iloc[rows] = values
    frame[column] = series


def rescore_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    alpha: float,
    alpha_router_fraction: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Rescore one run directory into ``out_dir/<run_id>-rescored-a<alpha>[-f<fraction>]``.

    The new run.json records ``rescored_from`` (the source run's id, identity and path) and the new
    alpha; the source is not modified.
    """
    run_dir = Path(run_dir)
    frame = read_results(run_dir)
    if len(frame) == 0:
        raise ResultsError(f"{run_dir} holds no rows to rescore")
    try:
        source = read_run_json(run_dir)
    except ResultsError:
        source = {}
    name = f"{run_dir.name}-rescored-a{alpha:g}"
    if alpha_router_fraction is not None:
        name += f"-f{alpha_router_fraction:g}"
    check_run_id(name)
    expert_ids = (source.get("config") or {}).get("expert_ids") or None
    rescored = rescore_frame(frame, alpha, alpha_router_fraction, expert_ids=expert_ids)
    rescored["run_id"] = name
    info = {
        "status": "complete",
        "rescored_from": {
            "run_id": source.get("run_id", run_dir.name),
            "identity": source.get("identity"),
            "path": os.fspath(run_dir.resolve()),
        },
        "alpha": alpha,
        "alpha_router_fraction": alpha_router_fraction,
        "created": utc_now(),
        "environment": environment_info(),
    }
    for key in ("config", "zoo_entry", "zoo_entry_digest", "models", "source", "import"):
        if key in source:
            info[key] = source[key]
    return write_run(Path(out_dir) / name, rescored, info, overwrite=overwrite)


def find_run_dirs(path: str | os.PathLike) -> list[Path]:
    """Run directories at or below ``path`` (those holding part files or run.json)."""
    return _run_dirs(Path(path))

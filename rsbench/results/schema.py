"""The results schema: the columns of a row, the Arrow schema of a part, and the
``Certificate -> row`` mapping (docs/results-schema.md).

Guarantees: every part file rsbench writes has exactly :data:`SCHEMA`; a row dict, a column
mapping or a pandas frame is converted to it exactly (NumPy scalars to Python values, NaN to
null) or refused with :class:`~rsbench.errors.ResultsError` naming the column;
:func:`certificate_row` records every count a certificate was decided from, so rescoring needs no
network. Imports only :mod:`rsbench.errors` (and NumPy, Arrow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from rsbench.errors import ResultsError

if TYPE_CHECKING:
    import pandas as pd

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
#: Columns of sequential estimation (rsbench.engine.sequential), null in fixed-n rows: the mode,
#: then per stage (the expert's, a dual row's router as ``router_*``) the estimation samples drawn,
#: the 0-based stopping stage, why it stopped and the alpha of the bound at that stage; a cascade
#: row's per cascade stage as ``stage_*`` lists (its ``stage_alpha`` holds the levels). A part
#: whose rows are all fixed-n is written without them (:func:`for_writing`), as before they existed.
SEQUENTIAL_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("estimation", _STR),
    ("n_used", _I64),
    ("stop_stage", _I64),
    ("stop_reason", _STR),
    ("stop_alpha", _F64),
    ("router_n_used", _I64),
    ("router_stop_stage", _I64),
    ("router_stop_reason", _STR),
    ("router_stop_alpha", _F64),
    ("stage_n_used", _LIST),
    ("stage_stop_stage", _LIST),
    ("stage_stop_reason", pa.list_(_STR)),
)
#: Columns a part may lack (read as null): those added to format 1 after it was first written.
OPTIONAL_COLUMNS: frozenset[str] = frozenset(
    name for name, _ in CASCADE_COLUMNS + SEQUENTIAL_COLUMNS
)
#: The Arrow schema of every part file (docs/results-schema.md).
SCHEMA = pa.schema(
    [
        pa.field(name, kind)
        for name, kind in BASE_COLUMNS + DUAL_COLUMNS + CASCADE_COLUMNS + SEQUENTIAL_COLUMNS
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
#: The schema of a part whose rows are all fixed-n (the format before sequential estimation).
FIXED_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in dict(SEQUENTIAL_COLUMNS)])


def for_writing(table: pa.Table) -> pa.Table:
    """``table`` (of :data:`SCHEMA`, or castable to it) as a part is written: without the
    sequential columns when every row is fixed-n (so fixed-n parts are byte for byte what they were
    before those columns existed), else with all of :data:`SCHEMA`."""
    if not table.schema.equals(SCHEMA):
        if table.schema.equals(FIXED_SCHEMA):
            return table
        table = table.cast(SCHEMA)
    if table.column("estimation").null_count == table.num_rows:
        return table.select(FIXED_SCHEMA.names)
    return table


# ------------------------------------------------------------------------------ certificate -> row


class RowSource(Protocol):
    """What a row takes from the run's configuration (:class:`rsbench.run.runconfig.RunConfig` has it)."""

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
        if getattr(cert, "estimation", "fixed") == "sequential":
            row.update(_sequential_fields(cert), samples=int(cert.n0 + cert.n_used))
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
    if getattr(cert, "estimation", "fixed") == "sequential":
        row.update(
            estimation="sequential",
            n_used=int(cert.n_used) if ran else None,
            stop_stage=int(cert.stop_stage) if ran else None,
            stop_reason=str(cert.stop_reason) if ran else None,
            stop_alpha=float(cert.stop_alpha) if ran else None,
            router_n_used=int(cert.router_n_used),
            router_stop_stage=int(cert.router_stop_stage),
            router_stop_reason=str(cert.router_stop_reason),
            router_stop_alpha=float(cert.router_stop_alpha),
            samples=int(cert.router_n0 + cert.router_n_used)
            + (int(cert.n0 + cert.n_used) if ran else 0),
        )
    return row


def _cascade_row(row: dict[str, Any], cert: Any, expert_ids: Sequence[str]) -> dict[str, Any]:
    """Fill a results row from a :class:`rsbench.engine.cascade.CascadeCertificate` (base columns hold the
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
    if getattr(cert, "estimation", "fixed") == "sequential":
        row.update(
            _sequential_fields(cert),
            stage_n_used=list(cert.stage_n_used),
            stage_stop_stage=list(cert.stage_stop_stage),
            stage_stop_reason=list(cert.stage_stop_reason),
        )
    return row


def _sequential_fields(cert: Any) -> dict[str, Any]:
    """The columns every sequential row has: where and why its (answering) estimation stopped."""
    return {
        "estimation": "sequential",
        "n_used": int(cert.n_used),
        "stop_stage": int(cert.stop_stage),
        "stop_reason": str(cert.stop_reason),
        "stop_alpha": float(cert.stop_alpha),
    }


# ------------------------------------------------------------------------------ rows -> Arrow


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build a table of :data:`SCHEMA` from row dicts; missing keys are null, unknown keys an error."""
    unknown = {key for row in rows for key in row} - set(COLUMNS)
    if unknown:
        raise ResultsError(
            f"unknown result column(s) {sorted(unknown)}; known columns: {list(COLUMNS)}"
        )
    arrays = []
    for field in SCHEMA:
        values = [plain(row.get(field.name)) for row in rows]
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ResultsError(f"column {field.name!r} cannot hold these values ({exc})") from None
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def plain(value: Any) -> Any:
    """NumPy scalars/arrays and tuples to plain Python values that Arrow converts exactly."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN -> null
        return None
    return value


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


def _frame_to_table(frame: pd.DataFrame) -> pa.Table:
    arrays = []
    for field in SCHEMA:
        values = [plain(v) for v in frame[field.name].tolist()]
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    """A ``pandas.DataFrame`` with the columns of :data:`SCHEMA` (as from :func:`read_results`) to Arrow."""
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        raise ResultsError(f"results frame lacks column(s) {missing}")
    return _frame_to_table(frame)


def pandas_types() -> dict[pa.DataType, Any]:
    import pandas as pd

    return {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}

"""Rescoring: certificates recomputed from stored vote counts at another alpha (or alpha split).

Guarantees: nothing runs a network; with the stored alpha (and split) every value is reproduced
exactly; a rescored run never keeps a standard protocol name it no longer fits (``custom``
instead), and its ``run.json`` records where it came from. Imports :mod:`rsbench.errors` and the
other results modules; the decision rules lazily from :mod:`rsbench.engine.smoothing`, :mod:`rsbench.engine.dual`,
:mod:`rsbench.engine.cascade`, and the protocol registry from :mod:`rsbench.data.protocols`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rsbench.errors import ResultsError
from rsbench.results.provenance import environment_info, recorded_path, utc_now
from rsbench.results.storage import (
    OPTIONAL_COLUMNS,
    check_run_id,
    read_results,
    read_run_json,
    write_run,
)

if TYPE_CHECKING:
    import pandas as pd


def _num(frame: pd.DataFrame, column: str, fill: float = np.nan) -> np.ndarray:
    if column not in frame.columns and column in OPTIONAL_COLUMNS:  # added after format 1
        return np.full(len(frame), fill, dtype=np.float64)
    return frame[column].astype("Float64").to_numpy(dtype=np.float64, na_value=fill)


def _expert_ids_of(
    out: pd.DataFrame, rows: np.ndarray, choice: np.ndarray, expert_ids: Sequence[str] | None
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


#: A rescaled stage alpha is lowered by this relative amount, so the stage alphas of a row still
#: sum to at most the new total after float rounding (rsbench.engine.stats.CP_ROUND_DOWN).
_SCALE_DOWN = 2.0**-40


def _sequential(out: pd.DataFrame) -> np.ndarray:
    """Rows certified with sequential estimation (``estimation`` null: fixed n)."""
    if "estimation" not in out.columns:
        return np.zeros(len(out), dtype=bool)
    return (out["estimation"] == "sequential").to_numpy(dtype=bool, na_value=False)


def stage_alpha(
    stored: np.ndarray, old_total: np.ndarray | float, new_total: np.ndarray | float
) -> np.ndarray:
    """The alpha of a sequential row's stopping-stage bound when its total goes from ``old_total``
    to ``new_total``: the stored value where the total is unchanged (rows reproduce exactly), else
    scaled by ``new / old`` and lowered by :data:`_SCALE_DOWN`. Sound: the stage alphas of the
    plan sum to at most ``old_total``, so the scaled ones sum to at most ``new_total`` and the
    union bound over the pre-declared stages holds at the new level for every stopping stage."""
    stored = np.asarray(stored, dtype=np.float64)
    old_total = np.asarray(old_total, dtype=np.float64)
    new_total = np.asarray(new_total, dtype=np.float64)
    scaled = stored * (new_total / old_total) * (1.0 - _SCALE_DOWN)
    return np.where(old_total == new_total, stored, scaled)


def rescore_frame(
    frame: pd.DataFrame,
    alpha: float,
    alpha_router_fraction: float | None = None,
    expert_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Recompute certificates of ``frame`` (rows of :data:`SCHEMA`) from their stored counts.

    Expert rows: ``pA_lower``, ``radius``, ``prediction``, ``abstained`` and ``correct`` from
    ``cA``, ``nA``, ``n`` and ``sigma`` at the new ``alpha`` (CERTIFY's decision, see
    :func:`rsbench.engine.smoothing.decide_certificate`); rows without a count (imported abstentions)
    stay abstained. Dual rows: both stages are recomputed with ``alpha`` split as
    ``alpha_router_fraction`` says (default: each row's stored split); a router that abstains makes
    the row abstain; a row whose expert stage never ran abstains; the composition is
    :func:`rsbench.engine.dual.combine_stages`, and ``router_choice`` / ``expert_id`` follow the router's
    new decision (``expert_ids``: the run's experts in router order, else learned from the rows).
    Sequential rows (``estimation == "sequential"``): each stage's bound is recomputed from its
    votes among the ``n_used`` samples it drew at the alpha of its stopping stage
    (``stop_alpha``; scaled with the total, :func:`stage_alpha`), so the union bound over the
    pre-declared stages holds at the new alpha; the stopping stages are those of the live run.
    Cascade rows: every stage decision, cap and the radius are recomputed from the stored stage
    counts with the row's own p0 and alpha split (:func:`rsbench.engine.cascade.combine_cascade`); a stage
    that would now be needed but never ran makes the row abstain. Nothing runs a network. With the
    stored alpha (and split) every value is reproduced exactly.
    """
    from rsbench.engine.dual import combine_stages
    from rsbench.engine.smoothing import decide_certificate
    from rsbench.errors import check_alpha, check_alpha_router_fraction

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
    sequential = _sequential(out)
    if expert.any():
        nA = _num(out, "nA")
        has = expert & ~np.isnan(nA)
        if has.any():
            seq = sequential[has]
            n_bound = np.where(seq, _num(out, "n_used", -1)[has], _num(out, "n")[has])
            bound_alpha = np.where(
                seq, stage_alpha(_num(out, "stop_alpha")[has], old_alpha[has], alpha), alpha
            )
            d = decide_certificate(
                _num(out, "cA", 0)[has].astype(np.int64),
                _num(out, "count0", 0)[has].astype(np.int64),
                nA[has].astype(np.int64),
                n_bound.astype(np.int64),
                bound_alpha,
                _num(out, "sigma")[has],
            )
            if seq.any():
                _assign(out, np.flatnonzero(has)[seq], "stop_alpha", bound_alpha[seq])
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
        seq = sequential[rows]
        router_n = np.where(
            seq, _num(out, "router_n_used", 0)[rows], _num(out, "router_n", 0)[rows]
        )
        expert_n = np.where(seq & ran, _num(out, "n_used", 0)[rows], _num(out, "n")[rows])
        bound_r = np.where(
            seq, stage_alpha(_num(out, "router_stop_alpha")[rows], stored_router, alpha_r), alpha_r
        )
        bound_e = np.where(
            seq & ran,
            stage_alpha(_num(out, "stop_alpha", 1.0)[rows], stored_expert, alpha_e),
            alpha_e,
        )
        combined = combine_stages(
            _num(out, "router_cA", 0)[rows].astype(np.int64),
            _num(out, "router_count0", 0)[rows].astype(np.int64),
            _num(out, "router_nA", 0)[rows].astype(np.int64),
            router_n.astype(np.int64),
            _num(out, "expert_cA", 0)[rows],
            _num(out, "expert_count0", 0)[rows],
            e_nA,
            expert_n.astype(np.int64),
            _num(out, "sigma")[rows],
            _num(out, "sigma_router")[rows],
            alpha,
            alpha_router=bound_r,
            alpha_expert=bound_e,
        )
        # the stage totals, not the stopping stages' levels, are the row's alpha split
        combined["alpha_router"] = np.asarray(alpha_r, dtype=np.float64)
        combined["alpha_expert"] = np.asarray(alpha_e, dtype=np.float64)
        if seq.any():
            _assign(out, rows[seq], "router_stop_alpha", bound_r[seq])
            _assign(out, rows[seq & ran], "stop_alpha", bound_e[seq & ran])
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


def _recheck_protocols(out: pd.DataFrame, split_changed: np.ndarray) -> None:
    """Set each run's ``protocol`` to the one its rescored rows follow (rsbench.data.protocols.PROTOCOLS).

    A run keeps its protocol when the rows still fit it (n0, n, the new alpha, split, indices),
    else gets the registered protocol they fit, else ``custom``; rows whose dual alpha split was
    changed are ``custom``. A deviation is never left under a standard name.
    """
    from rsbench.data.protocols import CUSTOM_PROTOCOL, PROTOCOLS, protocol_deviation, protocol_for

    columns = [out[c].astype(object).to_numpy() for c in ("run_id", "dataset", "split", "n0", "n")]
    columns.append(np.where(_sequential(out), "sequential", "fixed"))
    keys = list(zip(*columns))
    protocols = out["protocol"].astype(object).to_numpy().copy()
    index = out["index"].astype(object).to_numpy()
    alpha = float(out["alpha"].iloc[0])
    for key in dict.fromkeys(keys):
        rows = np.array([k == key for k in keys])
        _, dataset, split, n0, n, mode = key
        stored = protocols[rows][0]
        args = (
            str(dataset),
            str(split),
            int(n0),
            int(n),
            alpha,
            [int(i) for i in index[rows]],
            str(mode),
        )
        if split_changed[rows].any():
            name = CUSTOM_PROTOCOL
        elif stored in PROTOCOLS and protocol_deviation(PROTOCOLS[stored], *args) is None:
            name = stored
        else:
            name = protocol_for(*args)
        protocols[rows] = name
    out["protocol"] = _object_series(list(protocols), out.index).astype(out["protocol"].dtype)


def _rescore_cascade(out: pd.DataFrame, rows: np.ndarray, alpha: float, label: np.ndarray) -> None:
    """Recompute cascade rows at ``alpha`` from their stored stage counts (their own p0 and split).

    A stage that did not run in the live certificate but would be needed now makes the row abstain.
    """
    from rsbench.engine.cascade import rescore_rows

    def cells(column: str) -> list:
        return [out[column].iloc[r] for r in rows]

    seq = _sequential(out)[rows]
    old_alpha = _num(out, "alpha")[rows]
    stage_n: list[Any] = [None] * len(rows)
    levels: list[Any] = [None] * len(rows)
    if seq.any():  # each stage's bound at its stopping stage's level, scaled with the total
        for position in np.flatnonzero(seq):
            r = rows[position]
            stage_n[position] = list(out["stage_n_used"].iloc[r])
            stored = np.asarray(out["stage_alpha"].iloc[r], dtype=np.float64)
            levels[position] = stage_alpha(stored, old_alpha[position], alpha)
    decided: list[dict[str, Any]] = rescore_rows(
        cells("stage_sigmas"),
        cells("stage_cA"),
        cells("stage_nA"),
        cells("stage_counts"),
        [int(v) for v in cells("n")],
        alpha,
        [float(v) for v in cells("cascade_p0")],
        [str(v) for v in cells("alpha_split")],
        stage_n,
        levels,
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
    if seq.any():  # a sequential row's scalar stop columns follow the answering stage too
        where = np.flatnonzero(seq)
        picks = [answering[p] for p in where]
        for column, stage_column in (
            ("n_used", "stage_n_used"),
            ("stop_stage", "stage_stop_stage"),
        ):
            values = [int(out[stage_column].iloc[rows[p]][k]) for p, k in zip(where, picks)]
            _assign(out, rows[where], column, np.array(values, dtype=np.int64))
        reasons = out["stop_reason"].tolist()
        for p, k in zip(where, picks):
            reasons[rows[p]] = str(out["stage_stop_reason"].iloc[rows[p]][k])
        out["stop_reason"] = _object_series(reasons, out.index).astype(out["stop_reason"].dtype)
        _assign(
            out,
            rows[where],
            "stop_alpha",
            np.array([decided[p]["stage_alpha"][k] for p, k in zip(where, picks)]),
        )
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


def _object_series(values: list, index: pd.Index) -> pd.Series:
    """A pandas object Series holding ``values`` as they are (arrays stay arrays, even of length 1)."""
    import pandas as pd

    cells = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        cells[i] = value
    return pd.Series(cells, index=index, dtype=object)


def _assign(frame: pd.DataFrame, rows: np.ndarray, column: str, values: np.ndarray) -> None:
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
    config = source.get("config")
    if config is None:
        config = {}
    expert_ids = config.get("expert_ids") if isinstance(config, dict) else None
    if not isinstance(config, dict) or not (
        expert_ids is None
        or (isinstance(expert_ids, list) and all(isinstance(e, str) for e in expert_ids))
    ):
        raise ResultsError(
            f"{Path(run_dir) / 'run.json'}: 'config' must be a mapping whose 'expert_ids' is a "
            f"list of zoo ids, not {type(config).__name__ if not isinstance(config, dict) else 'that'}"
            "; the file was altered: restore it from the run that wrote it (nothing was written)"
        )
    expert_ids = expert_ids or None
    rescored = rescore_frame(frame, alpha, alpha_router_fraction, expert_ids=expert_ids)
    rescored["run_id"] = name
    info = {
        "status": "complete",
        "rescored_from": {
            "run_id": source.get("run_id", run_dir.name),
            "identity": source.get("identity"),
            "path": recorded_path(run_dir),
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

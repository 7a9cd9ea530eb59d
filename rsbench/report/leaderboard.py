"""Leaderboards as data: one ranked table per section, a ``(protocol, dataset)`` pair.

A protocol fixes n0, n, alpha and the image subset, so only rows of one protocol on one dataset are
comparable. Rows of different sections are never ranked together: :func:`build_leaderboards` raises
:class:`~rsbench.errors.ResultsError` when the results hold several sections and the caller did not
pick one (``protocol=`` / ``dataset=``) or explicitly ask for all of them (``all_sections=True``),
in which case each section is its own table with its own ranking.

Each table has one row per ``(model_id, sigma, protocol)`` (plus n and alpha; see
:mod:`rsbench.report.metrics`), ranked by the mean certified accuracy over the radius grid (the area under
the certified-accuracy curve up to the largest grid radius: unlike ACR it cannot be inflated by
radii beyond the grid). Where a mapping ``model_id -> reported`` is given (the zoo's ``reported``
field), the paper's numbers stand next to the measured ones. With two or more experts in a section,
two unranked *bound* rows follow: the experts' per-radius envelope and their oracle (best expert in
hindsight per image; an upper bound, not a certificate).

Two honesty rules: a configuration known to be unsound (:data:`UNSOUND_ALPHA_SPLITS`: the cascade
under the authors' ``reference`` alpha split, which the union bound does not cover) is marked
``unsound`` in its row and never ranked (it is listed below the ranked rows); and when ranked rows
were evaluated on different sets of images, the rows off the most common set are marked ``other
images`` and a note under the table says so. Imports :mod:`rsbench.errors`,
:mod:`rsbench.report.metrics`; :mod:`rsbench.data.protocols` lazily. Renders nothing.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rsbench.errors import ResultsError
from rsbench.report import metrics

#: Cascade alpha splits whose certificates are known to be unsound: ``reference`` gives each stage
#: alpha / (k + 1), which the union bound does not cover (tests/test_cascade.py finds an input where
#: the certificate fails with probability 0.207 at alpha = 0.2).
UNSOUND_ALPHA_SPLITS: tuple[str, ...] = ("reference",)
UNSOUND_MARK = "unsound, not ranked"
UNSOUND_NOTE = (
    "Rows marked unsound (the cascade under the authors' reference alpha split, alpha/(k+1) per "
    "stage) are not ranked: the union bound does not cover that split, and an exact computation "
    "(tests/test_cascade.py) finds an input where its certificate fails with probability 0.207 "
    "at alpha = 0.2. The default split (--alpha-split union) is sound."
)
OTHER_IMAGES_MARK = "other images"
ENVELOPE_ID = "envelope (experts)"
ORACLE_ID = "oracle (experts)"
BOUND_KIND = "bound"


def reported_column(radius: float) -> str:
    """Name of the leaderboard column holding the reported certified accuracy at ``radius``."""
    return f"reported@{float(radius):g}"


@dataclass(frozen=True)
class Leaderboard:
    """One ranked section: rows of one protocol on one dataset.

    ``frame`` holds the model rows ranked (``rank`` 1, 2, ...) followed by unranked bound rows
    (kind ``"bound"``); accuracies are fractions in [0, 1]. ``decimals`` is the number of decimals
    with which percentages are shown (enough to resolve one image: 1 for 500 images, 2 for 10,000).
    """

    protocol: str
    dataset: str
    radii: tuple[float, ...]
    frame: pd.DataFrame
    has_reported: bool
    decimals: int
    #: rows certified with sequential estimation (their table shows samples per image)
    sequential: bool = False
    #: notes this table needs under it beyond the usual ones (unsound rows, other image sets)
    caveats: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """A one-line heading naming the section."""
        return f"protocol {self.protocol} · dataset {self.dataset}"


# --------------------------------------------------------------------------- building


def _normalize_reported(
    reported: Mapping[str, Any] | None,
) -> dict[str, tuple[str | None, dict[float, float]]]:
    out: dict[str, tuple[str | None, dict[float, float]]] = {}
    for model_id, entry in (reported or {}).items():
        if not isinstance(entry, Mapping):
            continue
        table = entry.get("certified_accuracy")
        if not isinstance(table, Mapping) or not table:
            continue
        try:
            values = {round(float(r), 9): float(v) for r, v in table.items()}
        except (TypeError, ValueError):
            raise ResultsError(
                f"reported certified_accuracy of {model_id} is not a radius -> fraction mapping; "
                "use e.g. {0.0: 0.766, 0.25: 0.612}"
            ) from None
        protocol = entry.get("protocol")
        out[str(model_id)] = (None if protocol is None else str(protocol), values)
    return out


def _decimals(images: int) -> int:
    """Decimals of a percentage that resolve one image out of ``images`` (1 or 2)."""
    if images <= 0:
        return 1
    return int(min(2, max(1, math.ceil(-math.log10(100.0 / images) - 1e-9))))


def build_leaderboard(
    df: pd.DataFrame,
    radii: Iterable[float] | None = None,
    reported: Mapping[str, Any] | None = None,
    bounds: bool = True,
    states: Mapping[str, Any] | None = None,
    include_incomplete: bool = False,
) -> Leaderboard:
    """Rank the rows of ``df``, which must hold exactly one section (protocol, dataset).

    ``radii`` defaults to the dataset's grid (:func:`rsbench.report.metrics.default_radii`). ``reported``
    maps model ids to the zoo's ``reported`` dicts (``{protocol, certified_accuracy: {r: fraction}}``);
    entries without ``certified_accuracy`` are ignored. ``states`` maps run ids to
    :class:`rsbench.results.RunState`: a row with a run that has not finished is marked
    (``complete`` false, ``planned_images``) and, unless ``include_incomplete``, left unranked
    below the ranked rows and out of the envelope and oracle. Raises ResultsError for an empty
    frame or rows of several protocols or datasets. Rows recorded under a registered protocol
    they deviate from (:func:`rsbench.data.protocols.first_deviation`) are ranked as recorded, with a
    logged warning.
    """
    if df is None or len(df) == 0:
        raise ResultsError(
            "no result rows to rank; point at run directories holding part-*.parquet files"
        )
    found = metrics.sections(df)
    if len(found) != 1:
        raise ResultsError(_mixed_message(found))
    from rsbench.data.protocols import first_deviation

    deviation = first_deviation(df)
    if deviation is not None:
        logging.getLogger(__name__).warning(
            "%s; rsbench never records a deviation under a registered protocol "
            "(rsbench/protocols.yaml), so these rows were edited or written elsewhere: they are "
            "not comparable with that protocol's numbers",
            deviation,
        )
    protocol, dataset = found[0]
    grid = metrics.check_radii(metrics.default_radii(dataset) if radii is None else radii)
    summary = metrics.summarize(df, grid)
    summary["_image_set"] = _image_sets(df)  # summarize's rows come in iter_groups' order
    sequential = is_sequential(df)
    if sequential:
        summary = with_samples(summary, df)
    ca_cols = [metrics.radius_column(r) for r in grid]
    summary["score"] = summary[ca_cols].mean(axis=1)
    summary = summary.sort_values(
        ["score", "clean_accuracy", "model_id", "sigma"],
        ascending=[False, False, True, True],
        kind="mergesort",
    ).reset_index(drop=True)
    summary = _mark_incomplete(summary, states or {})
    for model_id, experts in dual_experts(df, states).items():
        at = (summary["model_id"] == model_id) & (summary["kind"] == "dual")
        summary.loc[at, "sigma"] = metrics.dual_sigma_label(df, [s for _, s in experts])
    sound = ~summary["sigma_key"].astype(str).map(is_unsound)
    summary.loc[~sound, "sigma"] = summary.loc[~sound, "sigma"].astype(str) + f" ({UNSOUND_MARK})"
    ranked = (summary["complete"] | include_incomplete) & sound
    summary = pd.concat([summary[ranked], summary[~ranked]], ignore_index=True)
    rank = pd.array([pd.NA] * len(summary), dtype="Int64")
    rank[: int(ranked.sum())] = np.arange(1, int(ranked.sum()) + 1)
    summary.insert(0, "rank", rank)
    caveats = [UNSOUND_NOTE] if not sound.all() else []
    summary, note = _mark_other_images(summary)
    caveats += [note] if note else []

    frame = summary
    experts = df[kind_mask(df, "expert")]
    if not include_incomplete and "run_id" in experts.columns:
        unfinished = {r for r, st in (states or {}).items() if not st.complete}
        experts = experts[~experts["run_id"].astype(str).isin(unfinished)]
    if bounds and metrics.add_sigma_key(experts).groupby(["model_id", "sigma_key"]).ngroups >= 2:
        frame = pd.concat(
            [summary, _bound_rows(experts, grid, protocol, dataset)], ignore_index=True
        )

    normalized = _normalize_reported(reported)
    has_reported = any(m in normalized for m in summary["model_id"])
    if has_reported:
        frame = frame.copy()
        frame["reported_protocol"] = [normalized.get(m, (None, {}))[0] for m in frame["model_id"]]
        for r in grid:
            frame[reported_column(r)] = [
                normalized.get(m, (None, {}))[1].get(round(float(r), 9), np.nan)
                for m in frame["model_id"]
            ]
    images = int(frame["images"].max()) if len(frame) else 0
    return Leaderboard(
        protocol=protocol,
        dataset=dataset,
        radii=tuple(float(r) for r in grid),
        frame=frame,
        has_reported=has_reported,
        decimals=_decimals(images),
        sequential=sequential,
        caveats=tuple(caveats),
    )


def is_unsound(sigma_key: str) -> bool:
    """Whether a group's sigma key (:func:`rsbench.report.metrics.add_sigma_key`) names a
    configuration known to be unsound (:data:`UNSOUND_ALPHA_SPLITS`)."""
    return any(
        sigma_key.startswith(metrics.CASCADE_SIGMA_KEY) and f" {split}-split" in sigma_key
        for split in UNSOUND_ALPHA_SPLITS
    )


def _image_sets(df: pd.DataFrame) -> list[frozenset[tuple[str, ...]] | None]:
    """Per leaderboard group, in :func:`rsbench.report.metrics.iter_groups` order, the set of
    images (dataset, split, index) it holds; None without an ``index`` column."""
    out: list[frozenset[tuple[str, ...]] | None] = []
    for _, rows in metrics.iter_groups(df):
        if "index" not in rows.columns:
            out.append(None)
            continue
        cols = [c for c in metrics.IMAGE_COLUMNS if c in rows.columns]
        out.append(frozenset(map(tuple, rows[cols].astype(str).to_numpy().tolist())))
    return out


def _mark_other_images(summary: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """Mark (``other_images``) the ranked rows evaluated on another image set than the most
    common one among ranked rows (ties: the larger set); return the frame and the note to print
    under the table, None when every ranked row has the same images. Rows of runs that have not
    finished are left to their own mark (``incomplete``, ranked only with --include-incomplete)."""
    sets = summary.pop("_image_set")
    ranked = (summary["rank"].notna() & summary["complete"].astype(bool)).to_numpy()
    known = [s for s, r in zip(sets, ranked) if r and s is not None]
    summary["other_images"] = False
    if len(set(known)) <= 1:
        return summary, None
    reference = max(set(known), key=lambda s: (known.count(s), len(s)))
    other = np.array([bool(r and s is not None and s != reference) for s, r in zip(sets, ranked)])
    summary["other_images"] = other
    shared = frozenset.intersection(*set(known))
    note = (
        f"Rows marked '{OTHER_IMAGES_MARK}' were evaluated on other images than the "
        f"{len(reference)} of the other ranked rows ({len(shared)} images are shared by all): "
        "their numbers are not comparable with the rest; `rsbench compare` scores every model "
        "on the shared images."
    )
    return summary, note


def dual_experts(df: pd.DataFrame, states: Mapping[str, Any] | None) -> dict[str, list]:
    """``dual model id -> [(expert id, sigma), ...]`` (router order) from the run states of the
    runs in ``df`` (:func:`rsbench.results.run_states`); models without that record are absent."""
    out: dict[str, list] = {}
    if not states or "run_id" not in df.columns or "kind" not in df.columns:
        return out
    dual = df[kind_mask(df, "dual")]
    for (model_id, run_id), _ in dual.groupby(["model_id", "run_id"], sort=True):
        state = states.get(str(run_id))
        if state is not None and getattr(state, "experts", None):
            out.setdefault(str(model_id), list(state.experts))
    return out


def _mark_incomplete(summary: pd.DataFrame, states: Mapping[str, Any]) -> pd.DataFrame:
    """Add ``complete`` (every run of the row finished) and ``planned_images`` to ``summary``."""
    complete, planned = [], []
    for runs in summary["runs"]:
        ids = [] if missing(runs) else str(runs).split(",")
        known = [states[i] for i in ids if i in states]
        complete.append(all(st.complete for st in known))
        counts = [st.planned for st in known]
        planned.append(sum(counts) if known and None not in counts else np.nan)
    out = summary.copy()
    out["complete"] = complete
    out["planned_images"] = planned
    return out


def kind_mask(df: pd.DataFrame, kind: str) -> np.ndarray:
    if "kind" not in df.columns:
        return np.full(len(df), kind == "expert")
    return df["kind"].astype("string").fillna("expert").eq(kind).to_numpy(dtype=bool)


def _bound_rows(
    experts: pd.DataFrame, grid: np.ndarray, protocol: str, dataset: str
) -> pd.DataFrame:
    # both bounds are scored on the images every expert evaluated, so oracle >= envelope
    common = metrics.common_images(experts)
    env = metrics.envelope(common, grid)
    rows = [
        {
            "rank": pd.NA,
            "protocol": protocol,
            "dataset": dataset,
            "model_id": ENVELOPE_ID,
            "kind": BOUND_KIND,
            "sigma": "best per r",
            "images": int(
                metrics.add_sigma_key(common).groupby(["model_id", "sigma_key"]).size().max()
            )
            if len(common)
            else 0,
            "complete": True,
            "clean_accuracy": float(env[0])
            if grid[0] == 0
            else float(metrics.envelope(common, [0.0])[0]),
            **{metrics.radius_column(r): float(v) for r, v in zip(grid, env)},
        }
    ]
    if "index" in experts.columns:
        orc, n_images = metrics.oracle(experts, np.concatenate([[0.0], grid]))
        rows.append(
            {
                "rank": pd.NA,
                "protocol": protocol,
                "dataset": dataset,
                "model_id": ORACLE_ID,
                "kind": BOUND_KIND,
                "sigma": "best per image",
                "images": n_images,
                "complete": True,
                "clean_accuracy": float(orc[0]),
                **{metrics.radius_column(r): float(v) for r, v in zip(grid, orc[1:])},
            }
        )
    return pd.DataFrame(rows)


def _mixed_message(found: Sequence[tuple[str, str]]) -> str:
    protocols = sorted({p for p, _ in found})
    datasets = sorted({d for _, d in found})
    if len(protocols) > 1:
        return (
            f"results hold {len(protocols)} protocols ({', '.join(protocols)}) and rows of different "
            "protocols are never ranked together; select one (--protocol P) or ask for one table "
            "per protocol (--protocol all)"
        )
    return (
        f"results of protocol {protocols[0]} hold {len(datasets)} datasets ({', '.join(datasets)}) "
        "that cannot be ranked together; select one (--dataset D) or ask for one table per "
        "dataset (--protocol all)"
    )


def build_leaderboards(
    df: pd.DataFrame,
    radii: Iterable[float] | None = None,
    reported: Mapping[str, Any] | None = None,
    protocol: str | None = None,
    dataset: str | None = None,
    all_sections: bool = False,
    bounds: bool = True,
    states: Mapping[str, Any] | None = None,
    include_incomplete: bool = False,
) -> list[Leaderboard]:
    """One :class:`Leaderboard` per section of ``df`` after filtering by ``protocol`` / ``dataset``.

    Unless ``all_sections`` is true, the filtered rows must form exactly one section, else
    ResultsError (rows of different protocols are never ranked together). With ``all_sections``
    every section gets its own, separately ranked table. ``states`` and ``include_incomplete``: see
    :func:`build_leaderboard`. Raises ResultsError when a filter matches nothing, naming the values
    present.
    """
    if df is None or len(df) == 0:
        raise ResultsError(
            "no result rows to rank; point at run directories holding part-*.parquet files"
        )
    metrics.require_columns(df, ("protocol",))
    selected = sequential_sections(df)
    for column, value in (("protocol", protocol), ("dataset", dataset)):
        if value is None:
            continue
        present = (
            sorted(selected[column].astype(str).unique()) if column in selected.columns else []
        )
        selected = (
            selected[selected[column].astype(str) == value]
            if column in selected.columns
            else selected.iloc[0:0]
        )
        if selected.empty:
            raise ResultsError(
                f"no results with {column} {value!r}; present: {', '.join(present) or 'none'}"
            )
    found = metrics.sections(selected)
    if len(found) > 1 and not all_sections:
        raise ResultsError(_mixed_message(found))
    boards = []
    section_dataset = selected["dataset"].astype(str) if "dataset" in selected.columns else None
    for prot, data in found:
        mask = selected["protocol"].astype(str) == prot
        if section_dataset is not None:
            mask &= section_dataset == data
        boards.append(
            build_leaderboard(
                selected[mask],
                radii=radii,
                reported=reported,
                bounds=bounds,
                states=states,
                include_incomplete=include_incomplete,
            )
        )
    return boards


# --------------------------------------------------------------------------- sequential runs

#: The section of sequential rows recorded under a protocol that is not a sequential one
#: (``custom``): ``custom`` becomes ``custom-sequential``, never ranked with fixed-n ``custom`` rows.
SEQUENTIAL_SUFFIX = "-sequential"


def sequential_mask(df: pd.DataFrame) -> np.ndarray:
    """Rows certified with sequential estimation (``estimation`` null or absent: fixed n)."""
    if "estimation" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return (df["estimation"] == "sequential").to_numpy(dtype=bool, na_value=False)


def is_sequential(df: pd.DataFrame) -> bool:
    """Whether ``df`` (one section) holds sequential rows."""
    return bool(sequential_mask(df).any())


def sequential_sections(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with sequential rows under a non-sequential protocol name (``custom``) moved to the
    section ``<protocol>-sequential``: fixed-n and sequential rows never share a ranked table
    (their radii differ at equal accuracy). A sequential protocol's own rows keep its name."""
    mask = sequential_mask(df)
    if not mask.any():
        return df
    from rsbench.data.protocols import PROTOCOLS

    names = df["protocol"].astype(str)
    own = names.map(lambda p: p in PROTOCOLS and PROTOCOLS[p].estimation == "sequential")
    move = mask & ~own.to_numpy(dtype=bool)
    if not move.any():
        return df
    out = df.copy()
    out["protocol"] = names.where(~move, names + SEQUENTIAL_SUFFIX)
    return out


def with_samples(summary: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``samples_mean`` and ``samples_max``: forward samples per image of each
    group, from the rows' ``samples`` column (every sequential row has it; NaN where null)."""
    found: dict[tuple[str, str], tuple[float, float]] = {}
    for key, rows in metrics.iter_groups(df):
        column = rows["samples"] if "samples" in rows.columns else pd.Series(np.nan, rows.index)
        samples = column.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        samples = samples[~np.isnan(samples)]
        found[(str(key["model_id"]), str(key["sigma_key"]))] = (
            float(np.nanmean(samples)) if len(samples) else float("nan"),
            float(np.nanmax(samples)) if len(samples) else float("nan"),
        )
    keys = list(zip(summary["model_id"].astype(str), summary["sigma_key"].astype(str)))
    out = summary.copy()
    out["samples_mean"] = [found.get(k, (np.nan, np.nan))[0] for k in keys]
    out["samples_max"] = [found.get(k, (np.nan, np.nan))[1] for k in keys]
    return out


# --------------------------------------------------------------------------- shared helpers


def missing(value: Any) -> bool:
    """True for None, pandas NA and float NaN."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(float(value))


def rows_of_section(df: pd.DataFrame, protocol: str, dataset: str) -> pd.DataFrame:
    mask = df["protocol"].astype(str) == protocol
    if "dataset" in df.columns:
        mask &= df["dataset"].astype(str) == dataset
    return df[mask]


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def section_slug(protocol: str, dataset: str) -> str:
    """A file-name-safe name for a section, e.g. ``cohen-cifar10``."""
    return _SAFE.sub("_", f"{protocol}-{dataset}")

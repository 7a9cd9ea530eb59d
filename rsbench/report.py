"""Leaderboards and plots over certification results.

A *leaderboard* is one ranked table per **section**, a ``(protocol, dataset)`` pair: a protocol fixes
n0, n, alpha and the image subset, so only rows of one protocol on one dataset are comparable. Rows of
different sections are never ranked together: :func:`build_leaderboards` raises
:class:`~rsbench.errors.ResultsError` when the results hold several sections and the caller did not
pick one (``protocol=`` / ``dataset=``) or explicitly ask for all of them (``all_sections=True``),
in which case each section is its own table with its own ranking.

Each table has one row per ``(model_id, sigma, protocol)`` (plus n and alpha; see
:mod:`rsbench.metrics`), ranked by the mean certified accuracy over the radius grid (the area under
the certified-accuracy curve up to the largest grid radius: unlike ACR it cannot be inflated by
radii beyond the grid). Where a mapping ``model_id -> reported`` is given (the zoo's ``reported``
field), the paper's numbers stand next to the measured ones. With two or more experts in a section,
two unranked *bound* rows follow: the experts' per-radius envelope and their oracle (best expert in
hindsight per image; an upper bound, not a certificate).

Renderers: :func:`to_rich` (a ``rich.table.Table``), :func:`to_markdown`, :func:`to_csv`,
:func:`to_json`, :func:`to_html` (a self-contained page with a sortable table and inline SVG curves,
no network needed). Plots: :func:`plot_curves` returns a matplotlib ``Figure`` (Agg, no pyplot
state); :func:`save_figure` writes PNG, SVG or PDF by file extension.
"""

from __future__ import annotations

import html
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rsbench import metrics
from rsbench.errors import ResultsError

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.table import Table

#: Okabe & Ito (2008) colour-blind-safe palette (black is kept for the envelope).
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
)
ENVELOPE_COLOR = "#000000"
ORACLE_COLOR = "#7F7F7F"

ENVELOPE_ID = "envelope (experts)"
ORACLE_ID = "oracle (experts)"
BOUND_KIND = "bound"

FIGURE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")


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

    ``radii`` defaults to the dataset's grid (:func:`rsbench.metrics.default_radii`). ``reported``
    maps model ids to the zoo's ``reported`` dicts (``{protocol, certified_accuracy: {r: fraction}}``);
    entries without ``certified_accuracy`` are ignored. ``states`` maps run ids to
    :class:`rsbench.results.RunState`: a row with a run that has not finished is marked
    (``complete`` false, ``planned_images``) and, unless ``include_incomplete``, left unranked
    below the ranked rows and out of the envelope and oracle. Raises ResultsError for an empty
    frame or rows of several protocols or datasets. Rows recorded under a registered protocol
    they deviate from (:func:`rsbench.protocols.first_deviation`) are ranked as recorded, with a
    logged warning.
    """
    if df is None or len(df) == 0:
        raise ResultsError(
            "no result rows to rank; point at run directories holding part-*.parquet files"
        )
    found = metrics.sections(df)
    if len(found) != 1:
        raise ResultsError(_mixed_message(found))
    from rsbench.protocols import first_deviation

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
    ranked = summary["complete"] | include_incomplete
    summary = pd.concat([summary[ranked], summary[~ranked]], ignore_index=True)
    rank = pd.array([pd.NA] * len(summary), dtype="Int64")
    rank[: int(ranked.sum())] = np.arange(1, int(ranked.sum()) + 1)
    summary.insert(0, "rank", rank)

    frame = summary
    experts = df[_kind_mask(df, "expert")]
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
    )


def dual_experts(df: pd.DataFrame, states: Mapping[str, Any] | None) -> dict[str, list]:
    """``dual model id -> [(expert id, sigma), ...]`` (router order) from the run states of the
    runs in ``df`` (:func:`rsbench.results.run_states`); models without that record are absent."""
    out: dict[str, list] = {}
    if not states or "run_id" not in df.columns or "kind" not in df.columns:
        return out
    dual = df[_kind_mask(df, "dual")]
    for (model_id, run_id), _ in dual.groupby(["model_id", "run_id"], sort=True):
        state = states.get(str(run_id))
        if state is not None and getattr(state, "experts", ()):
            out.setdefault(str(model_id), list(state.experts))
    return out


def _mark_incomplete(summary: pd.DataFrame, states: Mapping[str, Any]) -> pd.DataFrame:
    """Add ``complete`` (every run of the row finished) and ``planned_images`` to ``summary``."""
    complete, planned = [], []
    for runs in summary["runs"]:
        ids = [] if _missing(runs) else str(runs).split(",")
        known = [states[i] for i in ids if i in states]
        complete.append(all(st.complete for st in known))
        counts = [st.planned for st in known]
        planned.append(sum(counts) if known and None not in counts else np.nan)
    out = summary.copy()
    out["complete"] = complete
    out["planned_images"] = planned
    return out


def _kind_mask(df: pd.DataFrame, kind: str) -> np.ndarray:
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
    selected = df
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
    extra = {"states": states, "include_incomplete": include_incomplete}
    boards = []
    section_dataset = selected["dataset"].astype(str) if "dataset" in selected.columns else None
    for prot, data in found:
        mask = selected["protocol"].astype(str) == prot
        if section_dataset is not None:
            mask &= section_dataset == data
        boards.append(
            build_leaderboard(
                selected[mask], radii=radii, reported=reported, bounds=bounds, **extra
            )
        )
    return boards


# --------------------------------------------------------------------------- text cells


def _missing(value: Any) -> bool:
    """True for None, pandas NA and float NaN."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(float(value))


def _pct(value: Any, decimals: int) -> str:
    if _missing(value):
        return "–"
    return f"{100.0 * float(value):.{decimals}f}"


def _num(value: Any, fmt: str) -> str:
    if _missing(value):
        return "–"
    return format(value, fmt)


def _radius_header(r: float) -> str:
    return "clean (r=0)" if r == 0 else f"r={r:g}"


def table_cells(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of ``board`` as displayed text (percentages; "measured (reported)")."""
    radii = board.radii
    headers = ["#", "model", "sigma"] + [_radius_header(r) for r in radii]
    if 0.0 not in radii:
        headers.append("clean")
    headers += ["abstain", "ACR", "s/img", "n", "alpha", "images"]
    body = []
    for row in board.frame.to_dict("records"):
        cells = ["" if _missing(row.get("rank")) else str(int(row["rank"]))]
        cells += [str(row["model_id"]), str(row["sigma"])]
        for r in radii:
            cell = _pct(row.get(metrics.radius_column(r)), board.decimals)
            if board.has_reported:
                rep = row.get(reported_column(r))
                if not _missing(rep):
                    cell += f" ({_pct(rep, 1)})"
            cells.append(cell)
        if 0.0 not in radii:
            cells.append(_pct(row.get("clean_accuracy"), board.decimals))
        is_bound = row.get("kind") == BOUND_KIND
        cells += [
            "" if is_bound else _pct(row.get("abstain_rate"), board.decimals),
            "" if is_bound else _num(row.get("acr"), ".3f"),
            "" if is_bound else _num(row.get("seconds_per_image"), ".3g"),
            "" if is_bound else _count(row.get("n")),
            "" if is_bound else _num(row.get("alpha"), "g"),
            _images_cell(row),
        ]
        body.append(cells)
    return headers, body


def _images_cell(row: Mapping[str, Any]) -> str:
    """The images count; ``32/160 incomplete`` for a run that has not finished."""
    images = _count(row.get("images"))
    if _missing(row.get("complete")) or bool(row.get("complete")):
        return images
    planned = row.get("planned_images")
    return (
        f"{images}/{_count(planned)} incomplete"
        if not _missing(planned)
        else f"{images} incomplete"
    )


def _count(value: Any) -> str:
    """An integer count (n, images) as text; floats from NaN-padded columns print without ".0"."""
    if _missing(value):
        return "–"
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        return str(value)  # e.g. "1000,10000" when a group mixes values
    return str(int(as_float)) if as_float.is_integer() else str(value)


def notes(board: Leaderboard) -> list[str]:
    """Footnotes of ``board``: units, ranking rule, bounds, and where reported numbers come from."""
    lines = [
        "Certified accuracy in % of all evaluated images (abstentions count as wrong); "
        "rows ranked by mean certified accuracy over the radius grid; ACR is secondary.",
    ]
    if (board.frame["kind"] == BOUND_KIND).any():
        lines.append(
            "Envelope: best expert at each radius. Oracle: best expert per image in hindsight, "
            "an upper bound, not a certificate."
        )
        bound_rows = board.frame[board.frame["kind"] == BOUND_KIND]
        models = board.frame[board.frame["kind"] != BOUND_KIND]
        if int(bound_rows["images"].min()) < int(models["images"].max()):
            lines.append(
                f"Envelope and oracle use the {int(bound_rows['images'].min())} images that every "
                "ranked expert evaluated."
            )
    unfinished = [
        not _missing(c) and not bool(c) for c in board.frame.get("complete", pd.Series(dtype=bool))
    ]
    if any(unfinished):
        if board.frame.loc[unfinished, "rank"].notna().any():
            lines.append(
                "Rows marked incomplete are ranked as they stand, over fewer images than planned."
            )
        else:
            lines.append(
                "Rows marked incomplete (images done/planned) are not ranked: rerun the same "
                "command to finish them, or pass --include-incomplete to rank them as they stand."
            )
    if board.has_reported:
        protocols = sorted(
            {str(p) for p in board.frame.get("reported_protocol", pd.Series()).dropna()}
        )
        lines.append(
            "Cells read measured (reported): reported numbers are the paper's, as recorded in the zoo"
            + (f" (protocol {', '.join(protocols)})." if protocols else ".")
        )
    return lines


# --------------------------------------------------------------------------- renderers


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(boards: Sequence[Leaderboard]) -> str:
    """GitHub-flavoured markdown: per section a ``###`` heading, a table and its notes."""
    parts = []
    for board in boards:
        headers, body = table_cells(board)
        align = [
            "---:" if h == "#" or h.startswith(("r=", "clean")) or h in _NUMERIC else "---"
            for h in headers
        ]
        lines = [f"### {board.title}", ""]
        lines.append("| " + " | ".join(_md_escape(h) for h in headers) + " |")
        lines.append("|" + "|".join(align) + "|")
        lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in body]
        lines.append("")
        lines += [f"_{note}_" if i == 0 else f"_{note}_" for i, note in enumerate(notes(board))]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


_NUMERIC = {"abstain", "ACR", "s/img", "n", "alpha", "images", "clean"}


#: Columns left out first when a rich table does not fit the terminal (then the model column is
#: folded, then radius columns go from the largest radius down).
_DROP_FIRST = ("alpha", "n", "s/img", "ACR", "abstain")
_MODEL_FOLD = 20


def _numeric_header(h: str) -> bool:
    return h == "#" or h.startswith(("r=", "clean")) or h in _NUMERIC


def _least_widths(
    headers: Sequence[str],
    body: Sequence[Sequence[str]],
    numeric: Callable[[str], bool] = _numeric_header,
    whole: Sequence[str] = ("model",),
) -> list[int]:
    """Per column the narrowest width that cuts no number or id: the widest header word, the
    whole cell for ``whole`` columns, the first word of a ``numeric`` cell (a "(reported)" part
    may wrap), else the widest word."""
    widths = []
    for i, h in enumerate(headers):
        words = [len(w) for w in h.split()]
        for row in body:
            cell = row[i]
            if h in whole:
                words.append(len(cell))
            elif numeric(h):
                words.append(len(cell.split(" ")[0]))
            else:
                words += [len(w) for w in cell.split()]
        widths.append(max(words + [1]))
    return widths


def fit_columns(
    headers: Sequence[str],
    body: Sequence[Sequence[str]],
    width: int | None,
    steps: Sequence[str | tuple[str, int]] | None = None,
    numeric: Callable[[str], bool] = _numeric_header,
    whole: Sequence[str] = ("model",),
) -> tuple[list[int], dict[int, int]]:
    """Which columns of a rich table fit ``width`` terminal columns (all when ``width`` is None).

    Returns the kept column positions and their widths (none when ``width`` is None: rich's
    natural widths); the table is at most ``width`` wide. ``steps`` are taken in order until it
    fits: a header name leaves that column out, ``(name, n)`` lets that column fold to ``n``
    characters. The leaderboard's default leaves out the secondary columns first (alpha, n, s/img,
    ACR, abstain), then folds the model id to 20 characters, then leaves out radius columns from
    the largest radius down; ``#``, model, sigma, clean accuracy and images always stay.
    """
    if width is None:
        return list(range(len(headers))), {}
    least = dict(enumerate(_least_widths(headers, body, numeric, whole)))
    keep = list(range(len(headers)))
    if steps is None:
        steps = [*_DROP_FIRST, ("model", _MODEL_FOLD)]
        steps += [h for h in reversed(headers) if h.startswith("r=")]
        steps += [("sigma", 6), ("model", 12)]

    def total() -> int:  # rich's heavy-head box: 1 + per column (padding 2 + separator 1)
        return 1 + sum(least[i] + 3 for i in keep)

    for step in steps:
        if total() <= width:
            break
        if isinstance(step, tuple):
            if step[0] in headers:
                at = headers.index(step[0])
                least[at] = min(least[at], step[1])
        elif step in headers and headers.index(step) in keep:
            keep.remove(headers.index(step))
    # exact widths: the least ones, plus what is left of the terminal given out column by column
    natural = {i: max([len(headers[i])] + [len(row[i]) for row in body]) for i in keep}
    spare = width - total()
    widths = {}
    for i in keep:
        extra = max(0, min(spare, natural[i] - least[i]))
        widths[i] = least[i] + extra
        spare -= extra
    return keep, widths


def table_console() -> Any:
    """A rich Console for leaderboards on stdout: the terminal's width (or ``$COLUMNS``) when
    there is one to fit; 240 columns when stdout is a file or a pipe, which has no width."""
    import os

    from rich.console import Console

    console = Console()
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(width=240)


def to_rich(board: Leaderboard, width: int | None = None) -> Table:
    """A ``rich.table.Table`` of one section (title = the section, caption = the notes).

    With ``width`` (the terminal's), columns that do not fit are left out (see
    :func:`fit_columns`) and the caption says which and how to see them; headers wrap at spaces.
    """
    from rich.table import Table

    headers, body = table_cells(board)
    keep, widths = fit_columns(headers, body, width)
    least = dict(enumerate(_least_widths(headers, body)))
    caption = notes(board)
    left_out = [headers[i] for i in range(len(headers)) if i not in keep]
    if left_out:
        caption.append(
            f"Not shown at this terminal width ({width} columns): {', '.join(left_out)}; widen "
            "the terminal, or use --format markdown/csv/json/html or -o FILE for every column."
        )
    table = Table(title=board.title, caption=" ".join(caption), caption_justify="left")
    for i in keep:
        h = headers[i]
        # numbers and ids are never cut: a narrow terminal wraps "(reported)" onto a second line
        table.add_column(
            h,
            justify="right" if _numeric_header(h) else "left",
            overflow="fold",
            min_width=widths.get(i, least[i]),
            max_width=widths.get(i),
        )
    for row, record in zip(body, board.frame.to_dict("records")):
        table.add_row(
            *(row[i] for i in keep), style="dim" if record.get("kind") == BOUND_KIND else None
        )
    return table


def frame(boards: Sequence[Leaderboard]) -> pd.DataFrame:
    """All sections in one machine-readable frame (fractions, not percentages; one rank per section)."""
    frames = [b.frame.drop(columns=["sigma_key"], errors="ignore") for b in boards]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def to_csv(boards: Sequence[Leaderboard]) -> str:
    """CSV of :func:`frame` (accuracies as fractions in [0, 1])."""
    return frame(boards).to_csv(index=False, lineterminator="\n")


def _jsonable(value: Any) -> Any:
    if _missing(value):
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def to_json(boards: Sequence[Leaderboard]) -> str:
    """JSON: a list of sections ``{protocol, dataset, radii, notes, rows: [...]}`` (fractions; NaN -> null)."""
    out = []
    for board in boards:
        rows = [
            {k: _jsonable(v) for k, v in rec.items() if k != "sigma_key"}
            for rec in board.frame.to_dict("records")
        ]
        out.append(
            {
                "protocol": board.protocol,
                "dataset": board.dataset,
                "radii": list(board.radii),
                "notes": notes(board),
                "rows": rows,
            }
        )
    return json.dumps(out, indent=2) + "\n"


_HTML_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1320px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:13px;max-width:100%}
th,td{padding:3px 6px;border-bottom:1px solid #ddd}
td.num{white-space:nowrap}
td.txt{overflow-wrap:anywhere}
th{background:#f3f3f3;cursor:pointer;user-select:none;position:sticky;top:0;vertical-align:bottom}
td .rep{display:block;color:#777;font-size:11px}
th.num,td.num{text-align:right}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tbody.bounds td{color:#666;font-style:italic}
.notes{color:#555;font-size:13px}
figure{margin:1em 0}
figure svg{max-width:100%;height:auto}
"""

_HTML_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function(table){
  var heads=table.querySelectorAll("thead th");
  heads.forEach(function(th,col){
    th.addEventListener("click",function(){
      var body=table.tBodies[0];
      var asc=th.getAttribute("aria-sort")!=="ascending";
      heads.forEach(function(h){h.removeAttribute("aria-sort");});
      th.setAttribute("aria-sort",asc?"ascending":"descending");
      var rows=Array.prototype.slice.call(body.rows);
      function key(row){var c=row.cells[col];var v=c.getAttribute("data-sort");
        if(v===null){v=c.textContent;}var f=parseFloat(v);return isNaN(f)?v.toLowerCase():f;}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(typeof x!==typeof y){return typeof x==="number"?-1:1;}
        return (x<y?-1:x>y?1:0)*(asc?1:-1);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def _sort_values(board: Leaderboard) -> list[list[str | None]]:
    """Raw numeric sort keys per cell (None: sort by the text)."""
    keys = []
    for row in board.frame.to_dict("records"):
        k: list[str | None] = [
            None if _missing(row.get("rank")) else str(int(row["rank"])),
            None,
            None,
        ]
        k += [repr(_jsonable(row.get(metrics.radius_column(r)))) for r in board.radii]
        if 0.0 not in board.radii:
            k.append(repr(_jsonable(row.get("clean_accuracy"))))
        for column in ("abstain_rate", "acr", "seconds_per_image", "n", "alpha", "images"):
            k.append(repr(_jsonable(row.get(column))))
        keys.append([None if v in (None, "None") else v for v in k])
    return keys


def _svg_inline(fig: Figure) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "rsbench", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def to_html(
    boards: Sequence[Leaderboard],
    df: pd.DataFrame | None = None,
    title: str = "rsbench leaderboard",
    states: Mapping[str, Any] | None = None,
) -> str:
    """A self-contained HTML page: per section a sortable table (inline JS) and, when ``df`` (the
    result rows) is given, the certified-accuracy curves as inline SVG (``states``: see
    :func:`plot_curves`). No external resources; fits a 1400 px window (headers wrap, reported
    numbers go on a second line)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_HTML_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="notes">Click a column header to sort. Rows of different protocols or datasets '
        "are separate tables and are never ranked together.</p>",
    ]
    for board in boards:
        headers, body = table_cells(board)
        sort_keys = _sort_values(board)
        kinds = list(board.frame["kind"])
        numeric = [h == "#" or h.startswith(("r=", "clean")) or h in _NUMERIC for h in headers]
        out.append(f"<section><h2>{html.escape(board.title)}</h2>")
        out.append('<table class="sortable"><thead><tr>')
        out += [
            f'<th class="{"num" if n else "txt"}" scope="col">{html.escape(h)}</th>'
            for h, n in zip(headers, numeric)
        ]
        out.append("</tr></thead>")
        for group, wanted in (("models", False), ("bounds", True)):
            rows = [i for i, k in enumerate(kinds) if (k == BOUND_KIND) == wanted]
            if not rows:
                continue
            out.append(f'<tbody class="{group}">')
            for i in rows:
                cells = []
                for cell, key, n in zip(body[i], sort_keys[i], numeric):
                    attrs = f' class="{"num" if n else "txt"}"'
                    if key is not None:
                        attrs += f' data-sort="{html.escape(key)}"'
                    cells.append(f"<td{attrs}>{_html_cell(cell, n)}</td>")
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</tbody>")
        out.append("</table>")
        out += [f'<p class="notes">{html.escape(note)}</p>' for note in notes(board)]
        if df is not None:
            section_rows = _section_rows(df, board.protocol, board.dataset)
            fig = plot_curves(section_rows, radii=board.radii, states=states)
            out.append(f"<figure>{_svg_inline(fig)}</figure>")
        out.append("</section>")
    out.append(f"<script>{_HTML_SCRIPT}</script></body></html>")
    return "\n".join(out) + "\n"


def _html_cell(cell: str, numeric: bool) -> str:
    """A numeric "measured (reported)" cell puts the reported number on a second, smaller line."""
    if numeric and " (" in cell and cell.endswith(")"):
        measured, reported = cell.split(" (", 1)
        return f'{html.escape(measured)} <span class="rep">({html.escape(reported)}</span>'
    return html.escape(cell)


def _section_rows(df: pd.DataFrame, protocol: str, dataset: str) -> pd.DataFrame:
    mask = df["protocol"].astype(str) == protocol
    if "dataset" in df.columns:
        mask &= df["dataset"].astype(str) == dataset
    return df[mask]


# --------------------------------------------------------------------------- plots


def _model_label(model_id: str, sigma: str) -> str:
    return (
        f"{model_id} (σ={sigma})"
        if not sigma.startswith((metrics.DUAL_SIGMA_KEY, metrics.CASCADE_SIGMA_KEY))
        else f"{model_id} ({sigma})"
    )


def plot_curves(
    df: pd.DataFrame,
    radii: Iterable[float] | None = None,
    points: int = 401,
    bounds: bool = True,
    states: Mapping[str, Any] | None = None,
) -> Figure:
    """Certified accuracy against L2 radius, one figure row per section (protocol, dataset).

    Per section: one solid line per model; with two or more experts the experts' envelope (black,
    dashed) and oracle (grey, dashed; an upper bound); when the section holds dual rows, two more
    panels: how often each dual model's router chose each expert, and router radius R_r against
    expert radius R_e. Curves are evaluated on ``points`` radii from 0 to the largest radius of the
    grid (default: the dataset's grid). Legend labels are unique: runs of one model that differ
    (n0, n, alpha, run) say how. ``states`` (:func:`rsbench.results.run_states`) adds what rows do
    not hold: all experts of a dual model (its label, and a zero bar for an expert its router
    never chose) and the mark of a run that has not finished. Returns a matplotlib Figure (no
    pyplot state is touched).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    if df is None or len(df) == 0:
        raise ResultsError(
            "no result rows to plot; point at run directories holding part-*.parquet files"
        )
    found = metrics.sections(df)
    has_dual = [bool(_kind_mask(_section_rows(df, p, d), "dual").any()) for p, d in found]
    columns = 3 if any(has_dual) else 1
    fig = Figure(figsize=(6.4 * columns, 4.6 * len(found)), layout="constrained")
    axes = fig.subplots(len(found), columns, squeeze=False)
    for row, ((protocol, dataset), dual) in enumerate(zip(found, has_dual)):
        rows = _section_rows(df, protocol, dataset)
        grid = metrics.check_radii(metrics.default_radii(dataset) if radii is None else radii)
        fine = np.linspace(0.0, float(grid[-1]) if grid[-1] > 0 else 1.0, points)
        ax = axes[row][0]
        experts_of = dual_experts(rows, states)
        groups = list(metrics.iter_groups(rows))
        for i, ((_key, group), label) in enumerate(
            zip(groups, _curve_labels(groups, experts_of, states))
        ):
            ax.plot(
                fine,
                metrics.certified_accuracy(group, fine),
                color=OKABE_ITO[i % len(OKABE_ITO)],
                linewidth=1.8,
                label=label,
            )
        experts = rows[_kind_mask(rows, "expert")]
        n_experts = (
            metrics.add_sigma_key(experts).groupby(["model_id", "sigma_key"]).ngroups
            if len(experts)
            else 0
        )
        if bounds and n_experts >= 2:
            ax.plot(
                fine,
                metrics.envelope(experts, fine),
                color=ENVELOPE_COLOR,
                linestyle="--",
                linewidth=1.4,
                label=ENVELOPE_ID,
            )
            if "index" in experts.columns:
                orc, n_common = metrics.oracle(experts, fine)
                most = int(
                    metrics.add_sigma_key(experts).groupby(["model_id", "sigma_key"]).size().max()
                )
                label = f"{ORACLE_ID}, upper bound"
                if n_common < most:
                    label += f" ({n_common} common images)"
                ax.plot(
                    fine,
                    orc,
                    color=ORACLE_COLOR,
                    linestyle=(0, (2, 2)),
                    linewidth=1.4,
                    label=label,
                )
        ax.set_xlabel("L2 radius r")
        ax.set_ylabel("certified accuracy")
        ax.set_title(f"{dataset} · protocol {protocol}")
        ax.set_xlim(0.0, fine[-1])
        ax.set_ylim(0.0, 1.0)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
        if dual:
            _plot_router_choices(axes[row][1], rows, experts_of)
            _plot_router_scatter(axes[row][2], rows)
        elif columns > 1:
            for extra in axes[row][1:]:
                extra.set_visible(False)
    return fig


def _curve_labels(
    groups: Sequence[tuple[dict, pd.DataFrame]],
    experts_of: Mapping[str, Sequence[tuple[str, float]]],
    states: Mapping[str, Any] | None,
) -> list[str]:
    """One legend label per group, unique within the section: "model (σ=0.50)", and where two
    groups would read the same, the settings that tell them apart (n0, n, alpha, else the run)."""
    base = []
    for key, group in groups:
        if key["sigma_key"] == metrics.DUAL_SIGMA_KEY:
            experts = experts_of.get(str(key["model_id"]))
            sigma = metrics.dual_sigma_label(group, [s for _, s in experts] if experts else None)
        else:
            sigma = key["sigma_key"]
        base.append(_model_label(str(key["model_id"]), str(sigma)))
    labels = list(base)
    for label in set(base):
        clash = [i for i, b in enumerate(base) if b == label]
        if len(clash) < 2:
            continue
        extras: dict[int, list[str]] = {i: [] for i in clash}
        for name, column in (("n0", "n0"), ("n", "n"), ("alpha", "alpha"), ("run", "run_id")):
            if name == "run" and any(extras.values()):
                break  # the settings tell them apart; the run id is only the last resort
            values = {i: metrics._single_value(groups[i][1], column) for i in clash}
            if len({str(v) for v in values.values()}) > 1:
                for i in clash:
                    extras[i].append(
                        f"{name}={values[i]:g}" if name == "alpha" else f"{name}={values[i]}"
                    )
        for i in clash:
            labels[i] = f"{base[i]}, {', '.join(extras[i])}" if extras[i] else base[i]
    for i, (_, group) in enumerate(groups):  # runs that have not finished say so
        if states and "run_id" in group.columns:
            unfinished = [
                r
                for r in group["run_id"].astype(str).unique()
                if r in states and not states[r].complete
            ]
            if unfinished:
                planned = [states[r].planned for r in unfinished]
                done = int(group["run_id"].astype(str).isin(unfinished).sum())
                total = f"/{sum(planned)}" if None not in planned else ""
                labels[i] += f" [{done}{total} images, incomplete]"
    return labels


def _plot_router_choices(
    ax: Any, rows: pd.DataFrame, experts_of: Mapping[str, Sequence[tuple[str, float]]] | None = None
) -> None:
    from matplotlib.ticker import PercentFormatter

    freq = metrics.router_choice_frequencies(rows, experts_of)
    models = list(dict.fromkeys(freq["model_id"]))
    choices = sorted(
        set(zip(freq["router_choice"], freq["expert_id"])), key=lambda c: (c[0] < 0, c[0], c[1])
    )
    labels = [label for _, label in choices]
    positions = np.arange(len(choices))
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        sub = freq[freq["model_id"] == model]
        heights = [
            float(sub[(sub["router_choice"] == c) & (sub["expert_id"] == e)]["fraction"].sum())
            for c, e in choices
        ]
        where = positions + (i - (len(models) - 1) / 2) * width
        ax.bar(where, heights, width, color=OKABE_ITO[i % len(OKABE_ITO)], label=model)
        listed = set(zip(sub["router_choice"], sub["expert_id"]))
        for x, h, choice in zip(where, heights, choices):
            if h == 0 and choice in listed:  # an expert of this model its router never chose
                ax.text(x, 0.01, "0%", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(positions, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("fraction of images")
    ax.set_xlabel("expert chosen by the router")
    ax.set_title("router choices")
    ax.set_ylim(0.0, 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _plot_router_scatter(ax: Any, rows: pd.DataFrame) -> None:
    dual = rows[_kind_mask(rows, "dual")]
    metrics.require_columns(dual, ("router_radius", "expert_radius"), "dual results")
    top = 0.0
    for i, (model, sub) in enumerate(dual.groupby("model_id", sort=True)):
        x = pd.to_numeric(sub["router_radius"], errors="coerce").to_numpy(dtype=np.float64)
        y = pd.to_numeric(sub["expert_radius"], errors="coerce").to_numpy(dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.any():
            top = max(top, float(np.max(x[keep])), float(np.max(y[keep])))
        ax.scatter(
            x[keep],
            y[keep],
            s=8,
            alpha=0.5,
            color=OKABE_ITO[i % len(OKABE_ITO)],
            label=str(model),
            rasterized=True,
        )
    top = top * 1.05 if top > 0 else 1.0
    ax.plot(
        [0, top], [0, top], color=ENVELOPE_COLOR, linestyle="--", linewidth=1.0, label="R_e = R_r"
    )
    ax.set_xlim(0.0, top)
    ax.set_ylim(0.0, top)
    ax.set_xlabel("router radius R_r")
    ax.set_ylabel("expert radius R_e")
    ax.set_title("router vs expert radius (certified radius = min)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as PNG, SVG or PDF (chosen by the file extension); returns the path."""
    import matplotlib

    target = Path(path)
    suffix = target.suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise ResultsError(
            f"cannot write a plot to {str(path)!r}: the extension must be one of "
            f"{', '.join('.' + f for f in FIGURE_FORMATS)}"
        )
    from rsbench.output import atomic_output

    metadata: dict[str, Any] = {
        "png": {"Software": None},
        "svg": {"Date": None},
        "pdf": {"CreationDate": None},
    }[suffix]
    with matplotlib.rc_context({"svg.hashsalt": "rsbench"}), atomic_output(target) as tmp:
        fig.savefig(tmp, format=suffix, dpi=150, metadata=metadata, bbox_inches="tight")
    return target


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def section_slug(protocol: str, dataset: str) -> str:
    """A file-name-safe name for a section, e.g. ``cohen-cifar10``."""
    return _SAFE.sub("_", f"{protocol}-{dataset}")

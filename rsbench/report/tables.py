"""Leaderboards as text: display cells, footnotes, and the markdown, CSV and JSON renderers.

Guarantees: accuracies are shown in percent with enough decimals to resolve one image
(:attr:`Leaderboard.decimals`), "measured (reported)" where the zoo records the paper's number;
CSV and JSON carry fractions in [0, 1] (NaN as null in JSON). Output is deterministic: the committed
``results/*leaderboard*`` files are rendered by these functions. Imports :mod:`rsbench.report.metrics` and
:mod:`rsbench.report.leaderboard`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rsbench.report import metrics
from rsbench.report.leaderboard import (
    BOUND_KIND,
    OTHER_IMAGES_MARK,
    Leaderboard,
    missing,
    reported_column,
)


def _pct(value: Any, decimals: int) -> str:
    if missing(value):
        return "–"
    return f"{100.0 * float(value):.{decimals}f}"


def _num(value: Any, fmt: str) -> str:
    if missing(value):
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
    if board.sequential:  # sequential estimation: n is n_max; samples per image beside s/img
        headers[headers.index("s/img") + 1 : headers.index("s/img") + 2] = [
            "samples/img",
            "max samples",
            "n_max",
        ]
    body = []
    for row in board.frame.to_dict("records"):
        cells = ["" if missing(row.get("rank")) else str(int(row["rank"]))]
        cells += [str(row["model_id"]), str(row["sigma"])]
        for r in radii:
            cell = _pct(row.get(metrics.radius_column(r)), board.decimals)
            if board.has_reported:
                rep = row.get(reported_column(r))
                if not missing(rep):
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
        if board.sequential:
            at = len(cells) - 3  # before n (n_max)
            cells[at:at] = [
                "" if is_bound else _num(row.get("samples_mean"), ",.0f"),
                "" if is_bound else _count(row.get("samples_max")),
            ]
        body.append(cells)
    return headers, body


def _images_cell(row: Mapping[str, Any]) -> str:
    """The images count; ``32/160 incomplete`` for a run that has not finished."""
    images = _count(row.get("images"))
    if not missing(row.get("other_images")) and bool(row.get("other_images")):
        images += f" ({OTHER_IMAGES_MARK})"
    if missing(row.get("complete")) or bool(row.get("complete")):
        return images
    planned = row.get("planned_images")
    return (
        f"{images}/{_count(planned)} incomplete" if not missing(planned) else f"{images} incomplete"
    )


def _count(value: Any) -> str:
    """An integer count (n, images) as text; floats from NaN-padded columns print without ".0"."""
    if missing(value):
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
        not missing(c) and not bool(c) for c in board.frame.get("complete", pd.Series(dtype=bool))
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
    if board.sequential:
        lines.append(
            "Sequential estimation: samples/img is the mean (max samples the worst case) of the "
            "forward samples each image drew before it stopped, selection included; radii, and "
            "so ACR, are smaller than under fixed n even where the grid accuracy is equal, so "
            "this table is never ranked with fixed-n runs."
        )
    lines += list(board.caveats)
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
            "---:" if h == "#" or h.startswith(("r=", "clean")) or h in NUMERIC else "---"
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


NUMERIC = {"abstain", "ACR", "s/img", "n", "alpha", "images", "clean"}


def numeric_header(h: str) -> bool:
    return h == "#" or h.startswith(("r=", "clean")) or h in NUMERIC


def frame(boards: Sequence[Leaderboard]) -> pd.DataFrame:
    """All sections in one machine-readable frame (fractions, not percentages; one rank per section)."""
    frames = [b.frame.drop(columns=["sigma_key"], errors="ignore") for b in boards]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def to_csv(boards: Sequence[Leaderboard]) -> str:
    """CSV of :func:`frame` (accuracies as fractions in [0, 1])."""
    return frame(boards).to_csv(index=False, lineterminator="\n")


def jsonable(value: Any) -> Any:
    if missing(value):
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
            {k: jsonable(v) for k, v in rec.items() if k != "sigma_key"}
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

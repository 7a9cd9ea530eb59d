"""Leaderboards in the terminal: a ``rich`` table that fits the terminal's width.

Guarantee: numbers and ids are never cut; columns that do not fit are left out in a fixed order
(:func:`fit_columns`) and the caption names them and how to see them. Imports
:mod:`rsbench.report.leaderboard` and :mod:`rsbench.report.tables`; ``rich`` lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rsbench.report.leaderboard import BOUND_KIND, Leaderboard
from rsbench.report.tables import notes, numeric_header, table_cells

if TYPE_CHECKING:
    from rich.table import Table


#: Columns left out first when a rich table does not fit the terminal (then the model column is
#: folded, then radius columns go from the largest radius down).
_DROP_FIRST = ("alpha", "n", "s/img", "ACR", "abstain")
_MODEL_FOLD = 20


def _least_widths(
    headers: Sequence[str],
    body: Sequence[Sequence[str]],
    numeric: Callable[[str], bool] = numeric_header,
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
    numeric: Callable[[str], bool] = numeric_header,
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
            justify="right" if numeric_header(h) else "left",
            overflow="fold",
            min_width=widths.get(i, least[i]),
            max_width=widths.get(i),
        )
    for row, record in zip(body, board.frame.to_dict("records")):
        table.add_row(
            *(row[i] for i in keep), style="dim" if record.get("kind") == BOUND_KIND else None
        )
    return table

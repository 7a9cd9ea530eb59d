"""Leaderboards and plots over certification results.

A *leaderboard* is one ranked table per **section**, a ``(protocol, dataset)`` pair; rows of
different sections are never ranked together (:mod:`rsbench.report.leaderboard` says how rows are
ranked and which bound rows follow). One concept per module; this package re-exports their public
names, so ``from rsbench import report`` then ``report.build_leaderboards(...)`` is the way in:

* :mod:`rsbench.report.leaderboard` — the :class:`Leaderboard` frames: sections, ranking,
  envelope and oracle rows, reported numbers, unfinished runs (no rendering);
* :mod:`rsbench.report.tables` — display cells and notes; :func:`to_markdown`, :func:`to_csv`,
  :func:`to_json`, :func:`frame`;
* :mod:`rsbench.report.terminal` — :func:`to_rich` (a ``rich.table.Table`` fitted to the
  terminal: :func:`fit_columns`), :func:`table_console`;
* :mod:`rsbench.report.page` — :func:`to_html` (a self-contained page with a sortable table and
  inline SVG curves, no network needed);
* :mod:`rsbench.report.plots` — :func:`plot_curves` returns a matplotlib ``Figure`` (Agg, no
  pyplot state); :func:`save_figure` writes PNG, SVG or PDF by file extension.
"""

from __future__ import annotations

from rsbench.report.leaderboard import (
    BOUND_KIND,
    ENVELOPE_ID,
    ORACLE_ID,
    Leaderboard,
    build_leaderboard,
    build_leaderboards,
    dual_experts,
    reported_column,
    section_slug,
)
from rsbench.report.page import to_html
from rsbench.report.plots import (
    ENVELOPE_COLOR,
    FIGURE_FORMATS,
    OKABE_ITO,
    ORACLE_COLOR,
    plot_curves,
    save_figure,
)
from rsbench.report.tables import frame, notes, table_cells, to_csv, to_json, to_markdown
from rsbench.report.terminal import fit_columns, table_console, to_rich

__all__ = [
    "BOUND_KIND",
    "ENVELOPE_COLOR",
    "ENVELOPE_ID",
    "FIGURE_FORMATS",
    "OKABE_ITO",
    "ORACLE_COLOR",
    "ORACLE_ID",
    "Leaderboard",
    "build_leaderboard",
    "build_leaderboards",
    "dual_experts",
    "fit_columns",
    "frame",
    "notes",
    "plot_curves",
    "reported_column",
    "save_figure",
    "section_slug",
    "table_cells",
    "table_console",
    "to_csv",
    "to_html",
    "to_json",
    "to_markdown",
    "to_rich",
]

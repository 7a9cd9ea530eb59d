"""Leaderboards as one self-contained HTML page: sortable tables and inline SVG curves.

Guarantee: the page loads no external resource (inline CSS, JS and SVG) and is byte-for-byte
reproducible from the same rows (SVG ids are salted with a fixed string, no dates). Imports
:mod:`rsbench.report.leaderboard`, :mod:`rsbench.report.tables`, :mod:`rsbench.report.plots`.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from rsbench.report import metrics
from rsbench.report.leaderboard import BOUND_KIND, Leaderboard, missing, rows_of_section
from rsbench.report.plots import plot_curves
from rsbench.report.tables import NUMERIC, jsonable, notes, table_cells

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
            None if missing(row.get("rank")) else str(int(row["rank"])),
            None,
            None,
        ]
        k += [repr(jsonable(row.get(metrics.radius_column(r)))) for r in board.radii]
        if 0.0 not in board.radii:
            k.append(repr(jsonable(row.get("clean_accuracy"))))
        for column in ("abstain_rate", "acr", "seconds_per_image", "n", "alpha", "images"):
            k.append(repr(jsonable(row.get(column))))
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
        numeric = [h == "#" or h.startswith(("r=", "clean")) or h in NUMERIC for h in headers]
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
            section_rows = rows_of_section(df, board.protocol, board.dataset)
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

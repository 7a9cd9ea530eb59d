"""What users see fits their screen (issue 12, item 7): the rich leaderboard and the --dry-run plan
fit the terminal, leaving out trailing columns with a note that names them and says how to see
them; numbers and model ids are never cut."""

from __future__ import annotations

import io
import os
import re

import pytest
from helpers.cli import run_many
from helpers.rows import E1, E2, expert_rows
from rich.console import Console

from rsbench import report

REPORTED = {"e-s0.25": {"protocol": "cohen", "certified_accuracy": {0.0: 0.75, 0.5: 0.25}}}
RADII = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]


def _board():
    import pandas as pd

    df = pd.concat(
        [
            expert_rows("cohen-imagenet-resnet50-s0.25", 0.25, E1),
            expert_rows("e-s1.00", 1.0, E2),
            expert_rows("e-s0.25", 0.25, E1, n=100_000).assign(model_id="e-s0.25"),
        ],
        ignore_index=True,
    )
    (board,) = report.build_leaderboards(df, radii=RADII, reported=REPORTED)
    return board


def _render(board, width: int | None, console_width: int) -> str:
    console = Console(width=console_width, file=io.StringIO(), force_terminal=False)
    console.print(report.to_rich(board, width=width))
    return console.file.getvalue()


@pytest.mark.parametrize("width", [50, 60, 80, 100, 120])
def test_rich_leaderboard_fits_the_terminal(width: int) -> None:
    board = _board()
    text = _render(board, width, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    # every border row is complete (nothing cropped at the right edge)
    assert any(line.startswith("┏") and line.endswith("┓") for line in lines)
    assert any(line.startswith("└") and line.endswith("┘") for line in lines)
    headers, _ = report.table_cells(board)
    keep, _ = report.fit_columns(*report.table_cells(board), width)
    left_out = [h for i, h in enumerate(headers) if i not in keep]
    caption = " ".join(text.split())
    if left_out:
        assert f"Not shown at this terminal width ({width} columns): {', '.join(left_out)}" in (
            caption
        )
        assert "--format markdown/csv/json/html" in caption
    for must in ("#", "model", "sigma", "clean (r=0)", "images"):
        assert must in [headers[i] for i in keep]
    # numbers are whole: each kept cell's first word appears unbroken
    body = report.table_cells(board)[1]
    for row in body:
        for i in keep:
            if headers[i].startswith(("r=", "clean")):
                assert re.search(rf"(?<![\d.]){re.escape(row[i].split()[0])}(?![\d.])", text)


def test_wide_terminal_shows_every_column() -> None:
    board = _board()
    text = _render(board, 240, 240)
    assert "Not shown" not in text
    for header in report.table_cells(board)[0]:
        assert header.split()[0] in text
    # without a width (a file, -o board.txt) nothing is left out either
    assert "Not shown" not in _render(board, None, 240)


def test_80_columns_leave_out_the_secondary_columns_first() -> None:
    board = _board()
    headers, body = report.table_cells(board)
    keep, _ = report.fit_columns(headers, body, 80)
    gone = [h for i, h in enumerate(headers) if i not in keep]
    secondary = ["abstain", "ACR", "s/img", "n", "alpha"]
    assert set(secondary) <= set(gone)
    radius_gone = [h for h in gone if h.startswith("r=")]
    # radius columns go from the largest radius down
    kept_radii = [headers[i] for i in keep if headers[i].startswith("r=")]
    if radius_gone and kept_radii:
        assert max(float(h[2:]) for h in kept_radii) < min(float(h[2:]) for h in radius_gone)


@pytest.mark.subprocess
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the CLI driver forks (POSIX only)")
def test_dry_run_plan_fits_80_columns(tmp_path) -> None:
    args = ["certify", "embedded-fmnist-dual", "embedded-fmnist-s0.25", "--dry-run"]
    args += ["--out", str(tmp_path / "out"), "--device", "cpu"]
    narrow = run_many({"plan": args}, tmp_path, prelude="import os; os.environ['COLUMNS'] = '80'")[
        "plan"
    ]
    assert narrow.returncode == 0, narrow.stderr
    table = [line for line in narrow.stderr.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 80
    assert all(line.rstrip()[-1] in "┓┃┩│┘" for line in table)
    assert "embedded-fmnist-dual" in narrow.stderr and "embedded-fmnist-s0.25" in narrow.stderr
    assert "not shown at this terminal width (80 columns): kind" in narrow.stderr
    assert not (tmp_path / "out").exists()

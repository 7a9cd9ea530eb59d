"""What users see in plots and labels (issue 12, item 7): legends are unique when two runs of one
model differ, the router-choice panel shows every expert (also one never chosen), dual labels name
all experts, and the HTML leaderboard fits a 1400 px window."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from helpers.rows import E1, E2, dual_rows, expert_rows, write_run

from rsbench import report
from rsbench.report import metrics
from rsbench.results.storage import RunState

EXPERTS = (("e-s0.12", 0.12), ("e-s0.25", 0.25), ("e-s0.50", 0.5), ("e-s1.00", 1.0))


def _dual_never_choosing_e012() -> tuple[pd.DataFrame, dict]:
    """The dual rows of test_report (choices 0..2 name e-s0.25/0.50/1.00) re-indexed for a dual
    model with four experts whose first, e-s0.12, its router never chose."""
    dual = dual_rows(model_id="dual-4")
    dual["router_choice"] = pd.array(
        [c + 1 if c >= 0 else -1 for c in dual["router_choice"]], dtype="Int64"
    )
    dual["run_id"] = "dual-run"
    return dual, {"dual-run": RunState("dual-run", "complete", 8, EXPERTS)}


def test_router_choice_frequencies_list_every_expert():
    dual, states = _dual_never_choosing_e012()
    plain = metrics.router_choice_frequencies(dual)
    assert "e-s0.12" not in set(plain["expert_id"])
    full = metrics.router_choice_frequencies(dual, report.dual_experts(dual, states))
    row = full[full["expert_id"] == "e-s0.12"].iloc[0]
    assert row["router_choice"] == 0 and row["count"] == 0 and row["fraction"] == 0
    assert full["fraction"].sum() == pytest.approx(1.0)
    assert list(full["router_choice"]) == [-1, 0, 1, 2, 3]


def test_dual_label_and_panel_name_all_experts():
    dual, states = _dual_never_choosing_e012()
    df = pd.concat(
        [dual, expert_rows("e-s0.25", 0.25, E1), expert_rows("e-s1.00", 1.0, E2)],
        ignore_index=True,
    )
    (board,) = report.build_leaderboards(df, radii=[0, 0.5], states=states)
    label = board.frame.loc[board.frame["model_id"] == "dual-4", "sigma"].iloc[0]
    assert label == "dual 0.12/0.25/0.50/1.00"
    (without,) = report.build_leaderboards(df, radii=[0, 0.5])
    assert without.frame.loc[without.frame["model_id"] == "dual-4", "sigma"].iloc[0] == (
        "dual 0.25/0.50/1.00"
    )
    fig = report.plot_curves(df, radii=[0, 0.5, 1], states=states)
    curves, choices, _ = fig.axes
    assert "dual-4 (dual 0.12/0.25/0.50/1.00)" in [line.get_label() for line in curves.get_lines()]
    ticks = [t.get_text() for t in choices.get_xticklabels()]
    assert ticks == ["e-s0.12", "e-s0.25", "e-s0.50", "e-s1.00", "router abstained"]
    assert "0%" in [t.get_text() for t in choices.texts]  # the never-chosen expert's bar


def test_legends_are_unique_when_runs_of_one_model_differ():
    frames = [
        expert_rows("m", 0.25, E1, protocol="custom").assign(run_id="a", n=1000),
        expert_rows("m", 0.25, E2, protocol="custom").assign(run_id="b", n=2000),
        expert_rows("m", 0.25, E1, protocol="custom").assign(run_id="c", n=2000, alpha=0.01),
        expert_rows("m", 0.5, E2, protocol="custom").assign(run_id="d"),
    ]
    fig = report.plot_curves(pd.concat(frames, ignore_index=True), radii=[0, 1], bounds=False)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert len(labels) == len(set(labels)) == 4
    assert "m (σ=0.50)" in labels
    twins = sorted(label for label in labels if label.startswith("m (σ=0.25)"))
    assert twins == [
        "m (σ=0.25), n=1000, alpha=0.001",
        "m (σ=0.25), n=2000, alpha=0.001",
        "m (σ=0.25), n=2000, alpha=0.01",
    ]


def test_incomplete_runs_are_marked_in_the_legend():
    df = expert_rows("m", 0.25, E1).assign(run_id="r")
    fig = report.plot_curves(df, radii=[0, 1], states={"r": RunState("r", "running", 20)})
    assert fig.axes[0].get_lines()[0].get_label() == "m (σ=0.25) [8/20 images, incomplete]"


# ------------------------------------------------------------------------------ HTML width

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

MEASURE = (
    "<script>document.body.setAttribute('data-width', "
    "document.documentElement.scrollWidth + ' ' + document.documentElement.clientWidth)</script>"
)


def _page_width(page: Path, tmp_path: Path) -> tuple[int, int]:
    """(scrollWidth, clientWidth) of ``page`` laid out by headless Chromium in a 1400x900 window."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"))
    profile = tmp_path / "profile"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu"]
    command += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    command += ["--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,900"]
    command += ["--dump-dom", probe.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    match = re.search(r'data-width="(\d+) (\d+)"', dom)
    assert match, dom[-500:]
    return int(match[1]), int(match[2])


@pytest.mark.subprocess
@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium to lay out the page (apt-get install chromium)"
)
def test_html_leaderboard_fits_a_1400px_window(tmp_path):
    from helpers.rows import invoke

    # a wide table: 9 radii, reported numbers (the packaged zoo's, for these ids), a dual row
    dual, states = _dual_never_choosing_e012()
    root = tmp_path / "results"
    write_run(root / "e-s0.25-cohen", expert_rows("cohen-imagenet-resnet50-s0.25", 0.25, E1))
    write_run(root / "e-s1.00-cohen", expert_rows("cohen-imagenet-resnet50-s1.00", 1.0, E2))
    write_run(root / "dual-run", dual, status="complete")
    page = tmp_path / "board.html"
    result = invoke("leaderboard", str(root), "--radii", "0:2:0.25", "-o", str(page))
    assert result.exit_code == 0, result.output
    scroll, client = _page_width(page, tmp_path)
    assert client > 1300
    assert scroll <= client, f"the page scrolls sideways: {scroll} px > {client} px"
    assert 'class="rep"' in page.read_text()  # reported numbers are on the page

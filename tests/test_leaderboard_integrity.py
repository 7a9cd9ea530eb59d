"""Results that are never misread (issue 12, item 6).

* a run that has not finished is marked ("5/8 incomplete") and not ranked, unless asked;
* envelope and oracle are scored on the images every ranked expert evaluated, so the oracle is
  never below the envelope (the committed ImageNet table showed 19.0 vs 19.4 at r = 2);
* a Parquet part that belongs to another run is refused by the leaderboard and by a resume;
* ``rescore DIR --out DIR`` is refused (``test_bad_input_ux.py``).
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from helpers.rows import E1, E2, expert_rows, invoke, write_run

from rsbench import report
from rsbench.errors import ResultsError
from rsbench.report import metrics
from rsbench.results.storage import RunState


def _frames():
    return expert_rows("e-s0.25", 0.25, E1), expert_rows("e-s1.00", 1.0, E2)


def test_envelope_and_oracle_use_the_common_images_so_oracle_bounds_envelope():
    # model a certified images 0..3 (strong on 0 and 1), model b only images 2 and 3 (wrong on
    # both): scored on its own images a reaches 3/4 at r = 1, but over the images both evaluated
    # the best per image (the oracle) reaches only 1/2 -- the old envelope exceeded the oracle
    a = expert_rows("a", 0.25, [(True, 1.0), (True, 1.0), (True, 1.0), (False, 0.0)])
    b = expert_rows("b", 0.5, [(True, 2.0), (True, 2.0), (False, 0.0), (False, 0.0)])
    b = b[b["index"] >= 2]
    both = pd.concat([a, b], ignore_index=True)
    radii = [0.0, 0.5, 1.0, 1.5]
    assert metrics.certified_accuracy(a, [1.0])[0] == pytest.approx(3 / 4)
    env = metrics.envelope(both, radii)
    orc, images = metrics.oracle(both, radii)
    assert images == 2
    np.testing.assert_allclose(env, [0.5, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(orc, [0.5, 0.5, 0.5, 0.0])
    assert np.all(orc >= env - 1e-12)
    # a random mix of coverages: the oracle never falls below the envelope
    rng = np.random.default_rng(0)
    for trial in range(20):
        frames = []
        for m in range(3):
            outcomes = [(bool(rng.random() < 0.7), float(rng.random() * 2)) for _ in range(12)]
            rows = expert_rows(f"m{m}", 0.25 * (m + 1), outcomes)
            frames.append(rows[rng.random(12) < 0.8])
        mixed = pd.concat(frames, ignore_index=True)
        grid = np.linspace(0, 2, 9)
        orc, _ = metrics.oracle(mixed, grid)
        assert np.all(orc >= metrics.envelope(mixed, grid) - 1e-12), trial


def test_leaderboard_bounds_rows_share_one_image_count():
    a, b = _frames()
    (board,) = report.build_leaderboards(
        pd.concat([a, b[b["index"] < 5]], ignore_index=True), radii=[0, 0.25, 0.5, 1]
    )
    bounds = board.frame[board.frame["kind"] == report.BOUND_KIND]
    assert list(bounds["images"]) == [5, 5]
    cols = [metrics.radius_column(r) for r in board.radii]
    assert np.all(bounds[cols].iloc[1].to_numpy() >= bounds[cols].iloc[0].to_numpy() - 1e-12)
    assert any("use the 5 images" in n for n in report.notes(board))


def _states(complete: bool, planned: int = 8):
    return {
        "e-s0.25-cohen": RunState("e-s0.25-cohen", "complete", 8),
        "e-s1.00-cohen": RunState("e-s1.00-cohen", "complete" if complete else "running", planned),
    }


def test_an_incomplete_run_is_marked_and_not_ranked():
    a, b = _frames()
    df = pd.concat([a, b[b["index"] < 5]], ignore_index=True)
    (board,) = report.build_leaderboards(df, radii=[0, 0.5], states=_states(False))
    models = board.frame[board.frame["kind"] != report.BOUND_KIND]
    assert list(models["model_id"]) == ["e-s0.25", "e-s1.00"]
    assert models["rank"].iloc[0] == 1 and pd.isna(models["rank"].iloc[1])
    assert list(models["complete"]) == [True, False]
    # no bounds: only one expert is ranked
    assert (board.frame["kind"] == report.BOUND_KIND).sum() == 0
    _, body = report.table_cells(board)
    assert body[1][-1] == "5/8 incomplete" and body[1][0] == ""
    assert any("--include-incomplete" in n for n in report.notes(board))
    md = report.to_markdown([board])
    assert "5/8 incomplete" in md


def test_include_incomplete_ranks_it_but_keeps_the_mark():
    a, b = _frames()
    df = pd.concat([a, b[b["index"] < 5]], ignore_index=True)
    (board,) = report.build_leaderboards(
        df, radii=[0, 0.5], states=_states(False), include_incomplete=True
    )
    models = board.frame[board.frame["kind"] != report.BOUND_KIND]
    assert models["rank"].notna().all()
    assert (
        "5/8 incomplete"
        in report.table_cells(board)[1][int(models.index[~models["complete"]][0])][-1]
    )
    assert any("ranked as they stand" in n for n in report.notes(board))


def test_cli_marks_incomplete_runs_from_run_json(tmp_path):
    a, b = _frames()
    root = tmp_path / "results"
    write_run(root / "a", a, status="complete", num_indices=8)
    write_run(root / "b", b[b["index"] < 5], status="running", num_indices=8)
    plain = invoke("leaderboard", str(root), "--format", "csv")
    assert plain.exit_code == 0, plain.output
    table = pd.read_csv(__import__("io").StringIO(plain.output))
    row = table[table["model_id"] == "e-s1.00"].iloc[0]
    assert pd.isna(row["rank"]) and not bool(row["complete"]) and row["planned_images"] == 8
    assert set(table["model_id"]) == {"e-s0.25", "e-s1.00"}
    md = invoke("leaderboard", str(root), "--format", "markdown")
    assert "5/8 incomplete" in md.output
    ranked = invoke("leaderboard", str(root), "--format", "csv", "--include-incomplete")
    table = pd.read_csv(__import__("io").StringIO(ranked.output))
    assert table[table["kind"] != report.BOUND_KIND]["rank"].notna().all()


def test_a_part_of_another_run_is_refused_by_the_leaderboard(tmp_path):
    a, b = _frames()
    root = tmp_path / "results"
    write_run(root / "a", a, status="complete")
    write_run(root / "b", b, status="complete")
    ok = invoke("leaderboard", str(root), "--format", "csv")
    assert ok.exit_code == 0, ok.output
    shutil.copy(root / "a" / "part-0-000000.parquet", root / "b" / "part-0-000001.parquet")
    result = invoke("leaderboard", str(root))
    assert isinstance(result.exception, ResultsError)
    message = str(result.exception)
    assert "part-0-000001.parquet" in message and "of run 'a'" in message and "'b'" in message

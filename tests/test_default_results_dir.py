"""Your runs never mix with the committed benchmark (issue 12, item 7).

``rsbench certify`` writes to ``./rsbench-results`` (or ``$RSBENCH_RESULTS``), never to the
repository's tracked ``results/``, and ``rsbench leaderboard`` / ``plot`` with no path read that
same directory: the leaderboard right after a certification works, wherever it runs.
"""

from __future__ import annotations

import os

import pytest
from helpers.cli import run_many

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(
        not hasattr(os, "fork"), reason="the CLI driver forks one process per command (POSIX only)"
    ),
]

FAST = ["--limit", "2", "--n0", "10", "--n", "50", "--device", "cpu", "--no-leaderboard"]


def test_certify_then_leaderboard_without_paths(tmp_path) -> None:
    (tmp_path / "results").mkdir()  # as in a checkout: the committed benchmark's folder
    jobs = {
        "expert": ["certify", "embedded-fmnist-s0.50", *FAST],
        "dual": ["certify", "embedded-fmnist-dual", *FAST],
        "board": ["leaderboard", "--format", "csv"],
        "plot": ["plot", "-o", "curves.png"],
    }
    done = run_many(jobs, tmp_path)
    for name, result in done.items():
        assert result.returncode == 0, (name, result.stderr)
    assert not list((tmp_path / "results").iterdir()), "wrote into results/"
    runs = sorted(p.name for p in (tmp_path / "rsbench-results").iterdir())
    assert len(runs) == 2 and runs[0].startswith("embedded-fmnist-dual")
    board = done["board"].stdout
    assert "embedded-fmnist-s0.50" in board and "embedded-fmnist-dual" in board
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_rsbench_results_environment_variable_moves_the_default(tmp_path) -> None:
    where = tmp_path / "elsewhere"
    prelude = f"import os; os.environ['RSBENCH_RESULTS'] = {str(where)!r}"
    jobs = {
        "expert": ["certify", "embedded-fmnist-s0.50", *FAST],
        "board": ["leaderboard", "--format", "csv"],
    }
    done = run_many(jobs, tmp_path, prelude=prelude)
    for name, result in done.items():
        assert result.returncode == 0, (name, result.stderr)
    assert len(list(where.iterdir())) == 1
    assert not (tmp_path / "rsbench-results").exists()
    assert "embedded-fmnist-s0.50" in done["board"].stdout


def test_the_default_runs_protocol_fits_its_own_rows(tmp_path) -> None:
    # The embedded default run certifies under `cpu`; its rows name fashion-mnist/test samples,
    # and the leaderboard must not call them a deviation from the protocol they were made under.
    # one shard of 125 (2 of the protocol's 250 images) keeps the protocol's name
    cpu = ["--protocol", "cpu", "--shard", "0/125", "--device", "cpu", "--no-leaderboard"]
    jobs = {
        "expert": ["certify", "embedded-fmnist-s0.50", *cpu],
        "board": ["leaderboard", "--format", "csv", "--include-incomplete"],
    }
    done = run_many(jobs, tmp_path)
    for name, result in done.items():
        assert result.returncode == 0, (name, result.stderr)
    assert "embedded-fmnist-s0.50" in done["board"].stdout
    assert ",cpu,fashion-mnist," in done["board"].stdout
    assert "deviate" not in done["board"].stderr, done["board"].stderr

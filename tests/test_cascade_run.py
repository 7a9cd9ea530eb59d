"""The shipped embedded cascade end to end: ``rsbench certify``, per-stage columns, ``rescore``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rsbench.cli.certify import certify
from rsbench.cli.results import rescore
from rsbench.data.indices import parse_indices
from rsbench.errors import DataError
from rsbench.results.storage import read_results, read_run_json
from rsbench.run import certifiers, runconfig
from rsbench.zoo.registry import load_zoo

CASCADE = "embedded-fmnist-cascade"
ARGS = ["--n0", "10", "--n", "200", "--batch", "400", "--device", "cpu", "--no-leaderboard"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cascade")
    result = CliRunner().invoke(
        certify, [CASCADE, "--indices", "0:400:25", *ARGS, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def test_cascade_rows_record_every_stage_and_their_cost(run: Path) -> None:
    df = read_results(run)
    assert len(df) == 16 and set(df["kind"]) == {"cascade"}
    assert list(df["index"]) == list(range(0, 400, 25))
    assert (df["stage_sigmas"].map(list) == pd.Series([[1.0, 0.5, 0.25]] * 16)).all()
    run_len = df["stages_run"].astype(int)
    assert (df["samples"] == run_len * 210).all()
    for column in ("stage_cA", "stage_nA", "stage_counts", "stage_pA_lower", "stage_alpha"):
        assert (df[column].map(len) == run_len).all(), column
    assert (df["stage_counts"].map(lambda c: all(sum(v) == 200 for v in c))).all()
    answered = df[df["cascade_stage"] >= 0]
    assert len(answered) > 8
    assert (
        answered["sigma"] == answered.apply(lambda r: r["stage_sigmas"][r["cascade_stage"]], axis=1)
    ).all()
    assert (df[df["abstained"]]["radius"] == 0).all()
    assert set(df["alpha_split"]) == {"union"} and set(df["cascade_p0"]) == {0.5}
    info = read_run_json(next(run.iterdir()))
    assert info["config"]["expert_ids"] == [
        "embedded-fmnist-s1.00",
        "embedded-fmnist-s0.50",
        "embedded-fmnist-s0.25",
    ]
    assert info["identity_fields"]["p0"] == 0.5


def test_rescore_same_alpha_reproduces_cascade_rows(run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(rescore, [str(run), "--alpha", "0.001", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    before = read_results(run).drop(columns=["seconds", "run_id"])
    after = read_results(tmp_path).drop(columns=["seconds", "run_id"])
    for column in before.columns:
        assert [_plain(v) for v in before[column]] == [_plain(v) for v in after[column]], column
    np.testing.assert_array_equal(before["radius"], after["radius"])
    smaller = tmp_path / "small"
    CliRunner().invoke(rescore, [str(run), "--alpha", "0.00001", "--out", str(smaller)])
    low = read_results(smaller)
    assert (low["radius"].to_numpy() <= before["radius"].to_numpy()).all()


def _plain(value):
    """Cell value for comparison: arrays to lists, NaN/NA to None."""
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_plain(v) for v in value]
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def test_cascade_options_and_identity() -> None:
    zoo = load_zoo()
    expert = runconfig.resolve_config(zoo.get("embedded-fmnist-s0.50"), zoo=zoo)
    assert "p0" not in expert.identity_fields() and "alpha_split" not in expert.identity_fields()
    union = runconfig.resolve_config(zoo.get(CASCADE), zoo=zoo)
    reference = runconfig.resolve_config(zoo.get(CASCADE), zoo=zoo, alpha_split="reference")
    higher = runconfig.resolve_config(zoo.get(CASCADE), zoo=zoo, p0=0.6)
    assert len({union.identity(), reference.identity(), higher.identity()}) == 3
    assert union.sigmas == (1.0, 0.5, 0.25)
    assert certifiers.samples_per_image(union) == 3 * (union.n0 + union.n)


def test_cascade_user_mistakes_are_one_line(tmp_path, capsys) -> None:
    from rsbench.cli.main import main

    cases = [
        (["certify", CASCADE, "--p0", "0.3"], "p0=0.3"),
        (["certify", CASCADE, "--sigma", "0.5"], "cascade entry"),
        (["certify", "embedded-fmnist-s0.50", "--p0", "0.6"], "--p0/--alpha-split"),
        (["certify", "embedded-fmnist-s0.50", "--indices", ""], "--indices is empty"),
        (["certify", "embedded-fmnist-s0.50", "--indices", "5:1"], "runs backwards"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            main([*args, "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        assert err.startswith("error: ") and message in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_index_slices() -> None:
    assert parse_indices("0:10:4") == [0, 4, 8]
    assert parse_indices(":3") == [0, 1, 2]
    assert parse_indices("1-2,10:30:10") == [1, 2, 10, 20]
    for bad in ("", "  ", "3:", "1:2:0", "a:3", "1:2:3:4"):
        with pytest.raises(DataError):
            parse_indices(bad)

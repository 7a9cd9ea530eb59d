"""``rsbench certify`` / ``sweep`` / ``rescore`` end to end on a tiny user zoo; torchrun with gloo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rsbench.cli.certify import certify
from rsbench.cli.results import rescore
from rsbench.cli.sweep import sweep
from rsbench.data import protocols
from rsbench.errors import ConfigError
from rsbench.results.storage import read_results, read_run_json
from rsbench.run import runconfig
from rsbench.run.sweep import load_sweep

ARGS = ["--n0", "10", "--limit", "16", "--chunk-size", "4", "--batch", "100", "--device", "cpu"]


def _invoke(command, args):
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _rows(path) -> pd.DataFrame:
    df = read_results(path).drop(columns=["seconds", "run_id"])
    return df.sort_values(["model_id", "index"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def single(zoo_file, tmp_path_factory) -> Path:
    """One uninterrupted, unsharded single-process run of an expert and the dual model."""
    out = tmp_path_factory.mktemp("single")
    result = _invoke(
        certify,
        ["tiny-s0.25", "tiny-dual", "--zoo", str(zoo_file), "--n", "200", "--out", str(out), *ARGS],
    )
    assert "tiny-dual" in result.output and "clean" in result.output  # the leaderboard
    return out


def test_certify_writes_runs_and_resumes(single, zoo_file):
    df = read_results(single)
    assert sorted(df["model_id"].unique()) == ["tiny-dual", "tiny-s0.25"]
    assert (df.groupby("model_id").size() == 16).all()
    for run_dir in single.iterdir():
        assert read_run_json(run_dir)["status"] == "complete"
    again = _invoke(
        certify,
        [
            "tiny-s0.25",
            "--zoo",
            str(zoo_file),
            "--n",
            "200",
            "--out",
            str(single),
            *ARGS,
            "--no-leaderboard",
        ],
    )
    assert "0 written, 16 already there" in again.output.replace("\n", " ")


def test_cli_shards_equal_the_unsharded_run(single, zoo_file, tmp_path):
    for shard in ("1/2", "0/2"):
        _invoke(
            certify,
            [
                "tiny-s0.25",
                "tiny-dual",
                "--zoo",
                str(zoo_file),
                "--n",
                "200",
                "--out",
                str(tmp_path),
                "--shard",
                shard,
                "--no-leaderboard",
                *ARGS,
            ],
        )
    pd.testing.assert_frame_equal(_rows(tmp_path), _rows(single))


@pytest.mark.subprocess
def test_torchrun_two_cpu_processes_equal_one_process(single, zoo_file, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "rsbench",
        "certify",
        "tiny-s0.25",
        "tiny-dual",
        "--zoo",
        str(zoo_file),
        "--num-samples",
        "200",
        "--out",
        str(tmp_path),
        *ARGS,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pd.testing.assert_frame_equal(_rows(tmp_path), _rows(single))
    for run_dir in tmp_path.iterdir():
        info = read_run_json(run_dir)
        assert info["status"] == "complete" and info["world_size"] == 2
        parts = sorted(p.name.split("-")[1] for p in run_dir.glob("part-*.parquet"))
        assert set(parts) == {"0of2", "1of2"}  # each rank wrote its own shard


def test_dry_run_plans_and_writes_nothing(zoo_file, tmp_path):
    result = _invoke(
        certify,
        [
            "tiny-s0.25",
            "tiny-dual",
            "--zoo",
            str(zoo_file),
            "--out",
            str(tmp_path / "r"),
            "--dry-run",
            *ARGS,
        ],
    )
    text = result.output
    assert "certification plan" in text and "estimated total" in text and "tiny-dual" in text
    assert not (tmp_path / "r").exists()


def test_user_mistakes_are_one_line(zoo_file, tmp_path, capsys):
    from rsbench.cli.main import main

    cases = [
        (["certify", "tiny-s0.2", "--zoo", str(zoo_file)], "unknown model id"),
        (
            ["certify", "tiny-s0.25", "--zoo", str(zoo_file), "--protocol", "nope"],
            "unknown protocol",
        ),
        (["certify", "tiny-s0.25", "--zoo", str(zoo_file), "--shard", "2/2"], "shard 2/2"),
        (["certify", "tiny-dual", "--zoo", str(zoo_file), "--sigma", "0.5"], "dual entry"),
        (["certify", "tiny-s0.25", "--zoo", str(zoo_file), "--limit", "5000"], "limit=5000"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            main([*args, "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        assert (
            err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
        ), err
    assert not list(tmp_path.iterdir())


def test_sweep_runs_the_grid_and_skips_finished_runs(zoo_file, tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        f"ids: [tiny-s0.25, tiny-dual]\nsigmas: [0.25, 0.5]\nprotocols: [cpu]\n"
        f"options: {{n0: 10, n: 100, limit: 8, batch: 100, device: cpu, zoo: [{zoo_file}], out: {tmp_path / 'out'}}}\n"
    )
    first = _invoke(sweep, [str(spec), "--no-leaderboard"])
    df = read_results(tmp_path / "out")
    groups = df.groupby(["model_id", "sigma"], dropna=False).size()
    assert len(list((tmp_path / "out").iterdir())) == 3  # expert x 2 sigmas + dual
    assert sorted(df[df["kind"] == "expert"]["sigma"].unique()) == [0.25, 0.5]
    assert groups.sum() == 24 and "written" in first.output
    second = _invoke(sweep, [str(spec), "--no-leaderboard"])
    assert second.output.count("(skipped)") == 3


def test_sweep_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ids: [a]\nsigma: [0.25]\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_sweep(bad)
    bad.write_text("ids: [a]\noptions: {nn: 3}\n")
    with pytest.raises(ConfigError, match="unknown option"):
        load_sweep(bad)
    bad.write_text("ids: []\n")
    with pytest.raises(ConfigError, match="non-empty list"):
        load_sweep(bad)


def test_shipped_sweep_files_are_valid():
    folder = Path(__file__).resolve().parents[1] / "sweeps"
    files = sorted(folder.glob("*.yaml"))
    assert {f.name for f in files} >= {"cohen-cifar10.yaml", "cohen-imagenet.yaml", "embedded.yaml"}
    for path in files:
        spec = load_sweep(path)
        for protocol in spec["protocols"]:
            protocols.get_protocol(protocol)
    assert load_sweep(folder / "embedded.yaml")["ids"] == list(runconfig.EMBEDDED_DEFAULT_IDS)


def test_rescore_same_alpha_reproduces_rows_exactly(single, tmp_path):
    _invoke(rescore, [str(single), "--alpha", "0.001", "--out", str(tmp_path)])
    before, after = _rows(single), _rows(tmp_path)
    pd.testing.assert_frame_equal(before, after)
    for run_dir in tmp_path.iterdir():
        assert read_run_json(run_dir)["rescored_from"]["run_id"] in run_dir.name


def test_rescore_smaller_alpha_never_increases_a_radius(single, tmp_path):
    _invoke(rescore, [str(single), "--alpha", "0.00001", "--out", str(tmp_path / "a")])
    before, after = _rows(single), _rows(tmp_path / "a")
    assert (after["radius"] <= before["radius"]).all()
    assert (after["radius"] < before["radius"]).any()
    assert (after["abstained"] | ~before["abstained"]).all()  # abstentions stay abstentions
    assert (after["protocol"] == "custom").all() and (after["alpha"] == 0.00001).all()
    dual = after[after["kind"] == "dual"]
    assert np.allclose(dual["alpha_router"] + dual["alpha_expert"], 0.00001)
    # another split: a router that abstains makes the row abstain, radius = min of the stages
    _invoke(
        rescore,
        [
            str(single),
            "--alpha",
            "0.001",
            "--alpha-router-fraction",
            "0.01",
            "--out",
            str(tmp_path / "f"),
        ],
    )
    split = _rows(tmp_path / "f")
    dual = split[split["kind"] == "dual"]
    assert np.allclose(dual["alpha_router"], 0.00001)
    assert dual[dual["router_choice"] == -1]["abstained"].all()
    ok = dual[~dual["abstained"]]
    np.testing.assert_allclose(ok["radius"], np.minimum(ok["router_radius"], ok["expert_radius"]))


def test_rescore_updates_the_router_choice_and_the_expert_id(single):
    """router_choice / expert_id follow the router's rescored decision (dual.combine_stages)."""
    from rsbench.results.rescore import rescore_frame

    df = read_results(single)
    dual = df[(df["kind"] == "dual") & (df["router_choice"] >= 0)].reset_index(drop=True)
    assert len(dual) >= 2 and dual["expert_id"].notna().all()
    weak = dual.copy()
    weak.loc[0, "router_nA"] = weak.loc[0, "router_n"] // 2 + 5  # the router now abstains on row 0
    rescored = rescore_frame(weak, 0.001)
    assert rescored.loc[0, "router_choice"] == -1 and pd.isna(rescored.loc[0, "expert_id"])
    assert bool(rescored.loc[0, "abstained"]) and rescored.loc[0, "radius"] == 0
    rest = rescored.iloc[1:]
    assert (rest["router_choice"] == dual["router_choice"].iloc[1:]).all()
    assert (rest["expert_id"] == dual["expert_id"].iloc[1:]).all()
    # a router that abstained in the live run but certifies now: its choice and expert are named,
    # and the row abstains (the expert stage never ran)
    ran_not = weak.copy()
    ran_not.loc[0, ["router_choice", "expert_id"]] = [-1, None]
    for column in ("expert_nA", "expert_cA", "expert_count0"):
        ran_not.loc[0, column] = pd.NA
    again = rescore_frame(ran_not.assign(router_nA=dual["router_nA"]), 0.001)
    assert again.loc[0, "router_choice"] == dual.loc[0, "router_choice"]
    assert again.loc[0, "expert_id"] == dual.loc[0, "expert_id"]
    assert bool(again.loc[0, "abstained"]) and again.loc[0, "prediction"] == -1


def test_embedded_default_plan():
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo()
    missing = [i for i in runconfig.EMBEDDED_DEFAULT_IDS if i not in zoo]
    if missing:
        pytest.skip(f"embedded zoo entries not shipped yet: {missing}")
    result = _invoke(certify, ["--dry-run", "--out", "unused-results-dir"])
    assert all(i in result.output for i in runconfig.EMBEDDED_DEFAULT_IDS)
    assert not Path("unused-results-dir").exists()

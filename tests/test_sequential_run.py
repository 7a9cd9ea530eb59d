"""Sequential estimation through the real engine, runner, CLI and rescore (issue 22).

The bound's coverage over seeded Bernoulli streams is tested in ``tests/test_sequential.py``; the
attack suite attacks sequential radii in ``tests/test_attack.py``. Here: the noise of a ranged draw
is a prefix of the fixed-count stream; a constant classifier stops at the first stage that
certifies the grid's largest reachable radius; a NaN forward stops the run with one line; resume
and shards give the rows of an uninterrupted run; fixed runs keep their identity; protocols,
rescore, the leaderboard and the CLI end to end (PREDICT's p-value rounding: tests/test_stats.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.cli import run_cli
from torch import nn

from rsbench.data import protocols
from rsbench.engine import sequential, stats
from rsbench.engine.noise import noise_keys
from rsbench.engine.sampling import NonFiniteLogits, StreamCursor, VoteCounter
from rsbench.engine.sequential import SequentialSpec
from rsbench.engine.smoothing import SmoothedClassifier, decide_certificate
from rsbench.errors import ConfigError
from rsbench.results.rescore import rescore_frame
from rsbench.results.storage import list_parts, read_results
from rsbench.run import runconfig, runner
from rsbench.zoo.registry import load_zoo

SEQ = dict(
    protocol="cpu",
    n0=10,
    estimation="sequential",
    n_max=2000,
    limit=12,
    chunk_size=4,
    batch_size=500,
)
GRID = tuple(0.25 * i for i in range(9))


class Pixel(nn.Module):
    """Votes depend on every noise value: class = (index of the largest noisy pixel) mod 10."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return nn.functional.one_hot(flat.argmax(1) % 10, 10).float()


class Constant(nn.Module):
    """Always class 3 (constant finite logits: a legitimate classifier)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 10)
        out[:, 3] = 1.0
        return out


class NaNs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 10), float("nan"))


@pytest.fixture(scope="module")
def zoo(zoo_file):
    return load_zoo([zoo_file])


def _rows(path) -> pd.DataFrame:
    frame = read_results(path).drop(columns=["seconds"])
    return frame.sort_values("index").reset_index(drop=True)


# ------------------------------------------------------------------------------ the engine


@pytest.mark.parametrize("cuts", [(500, 125, 1375), (999, 1, 1000), (1000, 1000), (1, 1999)])
def test_ranged_draws_are_a_prefix_of_the_fixed_stream(cuts) -> None:
    """However the samples are cut into ranges, they are those of one fixed call of 2,000."""
    torch.manual_seed(0)
    images = torch.rand(3, 1, 8, 8)
    keys = noise_keys("unnamed", "test", [4, 7, 9], "estimate", 0)
    counter = VoteCounter(Pixel(), 10, batch_size=700)
    fixed = counter.count(images, 0.5, sum(cuts), keys)
    cursors = [StreamCursor(k) for k in keys]
    ranged = sum(counter.count(images, 0.5, c, keys, cursors=cursors) for c in cuts)
    assert torch.equal(ranged, fixed)
    assert all(c.drawn == sum(cuts) for c in cursors)
    # and a different stream would be seen: the first 1,000 of another seed differ
    other = counter.count(
        images, 0.5, 2000, noise_keys("unnamed", "test", [4, 7, 9], "estimate", 1)
    )
    assert not torch.equal(other, fixed)


def test_ranged_draws_on_cuda_are_a_prefix_of_the_fixed_stream(fake_cuda) -> None:
    """The CUDA path (float64 noise for CIFAR-sized images, drawn on the device's generator; torch
    faked at its boundary, tests/helpers/fake_cuda.py) resumes a stream exactly where a range
    stopped: cut into ranges that split noise blocks, the votes are those of one fixed call."""
    shape = (3, 32, 32)  # 3,072 values: wide (float64) noise under noise_dtype "auto"
    torch.manual_seed(0)
    images = torch.rand(2, *shape)
    keys = noise_keys("cifar10", "test", [4, 7], "estimate", 0)
    try:
        counter = VoteCounter(Pixel(), 10, batch_size=700, device="cuda:0")
        fixed = counter.count(images, 0.25, 2300, keys)
        cursors = [StreamCursor(k) for k in keys]
        cuts = (500, 125, 1, 1674)
        ranged = sum(counter.count(images, 0.25, c, keys, cursors=cursors) for c in cuts)
        assert any("cuda" in str(call["device"]) for call in fake_cuda.of("Generator"))
    finally:
        fake_cuda.uninstall()
    assert torch.equal(ranged, fixed)
    assert all(c.drawn == 2300 for c in cursors)


def test_a_constant_classifier_stops_at_the_first_stage_that_certifies_the_top_radius() -> None:
    spec = SequentialSpec(n_max=100_000, radii=GRID)
    sigma, alpha = 0.25, 0.001
    plan = spec.plan(alpha, sigma)
    unanimous = stats.radius_from_bound(
        stats.clopper_pearson_lower(plan.stage_sizes, plan.stage_sizes, plan.stage_alphas), sigma
    )
    first = int(np.argmax(unanimous >= plan.top_radius))
    assert plan.top_radius == 0.75 and first > 0  # 0.75 needs a few stages at sigma 0.25
    smoothed = SmoothedClassifier(Constant(), 10, sigma, batch_size=2000, input_shape=(1, 8, 8))
    certs = smoothed.certify_batch(
        torch.rand(2, 1, 8, 8), 100, 100_000, alpha, indices=[0, 1], sequential=spec
    )
    for cert in certs:
        assert cert.prediction == 3 and cert.stop_reason == "top"
        assert cert.stop_stage == first and cert.n_used == plan.stage_sizes[first]
        assert cert.nA == cert.n_used and sum(cert.counts) == cert.n_used
        assert cert.stop_alpha == plan.stage_alphas[first] < alpha / 2
        assert cert.radius >= plan.top_radius and cert.radius == pytest.approx(unanimous[first])
    # a grid whose top the first block already certifies: it stops at the first block (500)
    short = SequentialSpec(n_max=100_000, radii=(0.0, 0.25, 0.5))
    (cert,) = smoothed.certify_batch(
        torch.rand(1, 1, 8, 8), 100, 100_000, alpha, indices=[5], sequential=short
    )
    assert (cert.stop_stage, cert.n_used, cert.stop_reason) == (0, 500, "top")
    assert cert.radius >= 0.5 and cert.prediction == 3


def test_nan_logits_stop_with_one_line_and_nan_bounds_abstain() -> None:
    smoothed = SmoothedClassifier(NaNs(), 10, 0.5, input_shape=(1, 8, 8))
    with pytest.raises(NonFiniteLogits, match="NaN or infinite logits"):
        smoothed.certify_batch(torch.rand(1, 1, 8, 8), 10, 100, 0.001)
    decided = decide_certificate(
        np.array([1]), np.array([5]), np.array([5]), 10, np.array([np.nan]), 0.5
    )
    assert decided["abstained"][0] and decided["prediction"][0] == -1
    assert decided["radius"][0] == 0.0


def test_a_nan_network_stops_the_run_naming_the_model(zoo, tmp_path, monkeypatch) -> None:
    config = runconfig.resolve_config(zoo.get("tiny-s0.25"), zoo=zoo, **SEQ)
    prepared = runner.prepare(config, zoo, tmp_path)
    certifier, _ = runner.build_certifier(prepared, "cpu")
    certifier.counter.model = NaNs()
    with pytest.raises(NonFiniteLogits, match=r"^tiny-s0.25 \(sample 0 and 3 more\): .*NaN"):
        runner.execute(
            config, certifier, prepared.dataset, prepared.run_dir, positions=prepared.positions
        )


# ------------------------------------------------------------------------------ the runner


@pytest.fixture(scope="module")
def reference(zoo, tmp_path_factory):
    """Uninterrupted sequential runs of the tiny expert and dual."""
    out = tmp_path_factory.mktemp("reference")
    frames = {}
    for model_id in ("tiny-s0.25", "tiny-dual"):
        config = runconfig.resolve_config(zoo.get(model_id), zoo=zoo, **SEQ)
        result = runner.run_certification(config, zoo, out)
        assert result.complete and result.written == 12
        frames[model_id] = _rows(result.run_dir)
    return frames


def test_sequential_rows_record_where_they_stopped(reference) -> None:
    expert, dual = reference["tiny-s0.25"], reference["tiny-dual"]
    sizes = SequentialSpec(n_max=2000, radii=GRID).stage_sizes
    assert (expert["estimation"] == "sequential").all() and (expert["n"] == 2000).all()
    assert expert["n_used"].isin(sizes).all()
    assert (expert["n_used"] == [sizes[s] for s in expert["stop_stage"]]).all()
    assert (expert["samples"] == 10 + expert["n_used"]).all()
    assert [sum(c) for c in expert["counts"]] == expert["n_used"].tolist()
    assert set(expert["stop_reason"]) <= {"top", "futile", "abstain", "n_max"}
    lower = stats.clopper_pearson_lower(expert["nA"], expert["n_used"], expert["stop_alpha"])
    assert np.array_equal(lower, expert["pA_lower"].to_numpy(dtype=float))
    ran = dual["expert_nA"].notna()
    assert dual["router_n_used"].isin(sizes).all()
    assert (dual.loc[ran, "n_used"].isin(sizes)).all() and dual.loc[~ran, "n_used"].isna().all()
    assert (dual["samples"] == 10 + dual["router_n_used"] + (10 + dual["n_used"]).fillna(0)).all()


def test_interrupted_then_resumed_run_equals_the_uninterrupted_one(zoo, tmp_path, reference):
    class Stop(Exception):
        pass

    def stop_after_first_chunk(event) -> None:
        if event.done > 4:
            raise Stop

    config = runconfig.resolve_config(zoo.get("tiny-s0.25"), zoo=zoo, **SEQ)
    with pytest.raises(Stop):
        runner.run_certification(config, zoo, tmp_path, progress=stop_after_first_chunk)
    run_dir = tmp_path / config.run_name()
    assert len(read_results(run_dir)) == 4 and len(list_parts(run_dir)) == 1
    resumed = runner.run_certification(config, zoo, tmp_path)
    assert resumed.skipped == 4 and resumed.written == 8 and resumed.complete
    pd.testing.assert_frame_equal(_rows(run_dir), reference["tiny-s0.25"])


def test_shards_together_equal_the_unsharded_sequential_run(zoo, tmp_path, reference):
    for model_id in ("tiny-s0.25", "tiny-dual"):
        config = runconfig.resolve_config(zoo.get(model_id), zoo=zoo, **{**SEQ, "chunk_size": 3})
        results = [runner.run_certification(config, zoo, tmp_path, shard=(i, 2)) for i in (0, 1)]
        assert results[1].complete
        pd.testing.assert_frame_equal(_rows(results[0].run_dir), reference[model_id])


# ------------------------------------------------------------------------ identity, protocols


def test_fixed_runs_keep_their_identity_and_sequential_ones_record_the_plan(zoo) -> None:
    fixed = runconfig.resolve_config(zoo.get("tiny-s0.25"), zoo=zoo, protocol="cpu")
    fields = fixed.identity_fields()
    assert not {"estimation", "radii", "sequential"} & set(fields)
    # every committed embedded run (fixed n) keeps its identity and its run.json config
    root = Path(__file__).resolve().parents[1] / "results" / "embedded"
    checked = 0
    for path in sorted(root.glob("*/run.json")):
        info = json.loads(path.read_text())
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in info["config"].items()}
        again = runconfig.RunConfig(**config)
        assert again.identity() == info["identity"] and again.run_name() == path.parent.name
        assert json.loads(json.dumps(again.record())) == info["config"]
        checked += 1
    assert checked >= 5

    seq = runconfig.resolve_config(zoo.get("tiny-s0.25"), zoo=zoo, **SEQ)
    plan = seq.identity_fields()["sequential"]
    assert plan["bound"] == sequential.BOUND_NAME and plan["n_max"] == 2000
    assert plan["stage_sizes"][-1] == 2000 and plan["radii"] == list(GRID)
    other_grid = runconfig.resolve_config(zoo.get("tiny-s0.25"), zoo=zoo, **SEQ, radii=[0, 0.5])
    assert other_grid.identity() != seq.identity() and other_grid.protocol == "custom"
    assert (
        runconfig.resolve_config(
            zoo.get("tiny-s0.25"), zoo=zoo, **{**SEQ, "n_max": 3000}
        ).identity()
        != seq.identity()
    )


def test_futility_alpha_enters_the_identity_and_drops_the_protocol_name(zoo) -> None:
    entry = zoo.get("tiny-s0.25")
    named = runconfig.resolve_config(entry, zoo=zoo, protocol="cpu-seq")
    same = runconfig.resolve_config(entry, zoo=zoo, protocol="cpu-seq", futility_alpha=0.1)
    assert same.identity() == named.identity() and same.protocol == "cpu-seq"
    assert "futility_alpha" not in named.record()  # run.json of earlier runs is unchanged
    bolder = runconfig.resolve_config(entry, zoo=zoo, protocol="cpu-seq", futility_alpha=0.2)
    assert bolder.protocol == "custom" and bolder.identity() != named.identity()
    assert bolder.identity_fields()["sequential"]["futility_alpha"] == 0.2
    assert bolder.sequential_spec() == SequentialSpec(
        n_max=100_000, radii=named.radii, futility_alpha=0.2
    )
    again = runconfig.RunConfig(**json.loads(json.dumps(bolder.record())))
    assert again.identity() == bolder.identity()


def test_a_larger_futility_alpha_only_stops_sooner_on_the_same_draws() -> None:
    """Same counts, same bound: a larger level can only stop an image at an earlier stage, and
    where both stop at the same stage they report the same radius (the level decides when, never
    what is certified)."""
    rng = np.random.default_rng(7)
    cautious = SequentialSpec(n_max=20_000, radii=GRID).plan(0.001, 0.5)
    bold = SequentialSpec(n_max=20_000, radii=GRID, futility_alpha=0.3).plan(0.001, 0.5)
    p = rng.uniform(0.5, 1.0, size=400)
    counts = sequential.simulate_counts(cautious, p, rng)
    a = sequential.certify_cumulative(cautious, counts)
    b = sequential.certify_cumulative(bold, counts)
    assert np.all(b.stage <= a.stage) and np.any(b.stage < a.stage)
    same = a.stage == b.stage
    assert np.array_equal(a.radius[same], b.radius[same])


def test_a_sequential_run_never_carries_a_fixed_protocol_name(zoo) -> None:
    entry = zoo.get("tiny-s0.25")
    assert (
        runconfig.resolve_config(entry, zoo=zoo, protocol="cpu", estimation="sequential").protocol
        == "custom"
    )
    named = runconfig.resolve_config(entry, zoo=zoo, protocol="cpu-seq")
    assert named.protocol == "cpu-seq" and named.estimation == "sequential" and named.n == 100_000
    assert (
        runconfig.resolve_config(entry, zoo=zoo, protocol="cpu-seq", estimation="fixed").protocol
        == "custom"
    )
    assert protocols.PROTOCOLS["cohen-seq"].estimation == "sequential"
    assert protocols.protocol_for("cifar10", "test", 100, 100_000, 0.001, [0, 20]) == "cohen"
    assert (
        protocols.protocol_for("cifar10", "test", 100, 100_000, 0.001, [0, 20], "sequential")
        == "cohen-seq"
    )
    rows = pd.DataFrame(
        {
            "protocol": ["cohen-seq"] * 2,
            "dataset": "cifar10",
            "split": "test",
            "n0": 100,
            "n": 100_000,
            "alpha": 0.001,
            "index": [0, 20],
            "model_id": "m",
            "estimation": ["sequential", None],
        }
    )
    assert protocols.first_deviation(rows.iloc[:1]) is None
    assert "fixed estimation (it fixes sequential" in protocols.first_deviation(rows)
    with pytest.raises(ConfigError, match="deviate from protocol 'cohen'.*sequential"):
        protocols.check_protocol("cohen", "cifar10", "test", 100, 100_000, 0.001, [0], "sequential")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"estimation": "fixed", "n_max": 10}, "--n-max applies to --estimation sequential"),
        ({"estimation": "fixed", "radii": [0, 1]}, "--radii is the grid"),
        ({"estimation": "sequential", "n": 10, "n_max": 20}, "disagree"),
        ({"estimation": "sequential", "radii": [5, 6]}, "no grid radius is reachable"),
        ({"estimation": "bogus"}, "estimation 'bogus' is unknown"),
        ({"estimation": "fixed", "futility_alpha": 0.2}, "--futility-alpha applies to"),
        ({"estimation": "sequential", "futility_alpha": 1.5}, "use a level 0 < value < 1"),
    ],
)
def test_mistakes_are_one_line(zoo, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        runconfig.resolve_config(zoo.get("tiny-s0.25"), zoo=zoo, protocol="cpu", **overrides)


# ------------------------------------------------------------------------------- rescore


def test_rescore_uses_each_rows_stopping_stage_alpha(reference) -> None:
    for frame in reference.values():
        same = rescore_frame(frame, 0.001)
        for column in ("pA_lower", "radius", "prediction", "stop_alpha", "router_pA_lower"):
            pd.testing.assert_series_equal(same[column], frame[column])
    expert = reference["tiny-s0.25"]
    looser = rescore_frame(expert, 0.01)
    want_alpha = expert["stop_alpha"].to_numpy(dtype=float) * 10 * (1 - 2.0**-40)
    assert np.allclose(looser["stop_alpha"].to_numpy(dtype=float), want_alpha, rtol=1e-15)
    want = stats.clopper_pearson_lower(expert["nA"], expert["n_used"], want_alpha)
    assert np.array_equal(looser["pA_lower"].to_numpy(dtype=float), want)
    # the union bound: a row's stage alpha is far below the total (a fixed-n rescore would be wrong)
    assert (looser["stop_alpha"] < 0.01).all()
    fixed_n = stats.clopper_pearson_lower(expert["nA"], expert["n_used"], 0.01)
    assert (looser["pA_lower"].to_numpy(dtype=float) <= fixed_n).all()
    assert (looser["protocol"] == "custom").all()


# ---------------------------------------------------------------------------------- the CLI


def _rsbench(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m rsbench ARGS`` in ``cwd`` (tests/helpers/cli.py: private cache, no user zoo)."""
    return run_cli(list(args), cwd=cwd, timeout=300)


def test_cli_sequential_run_end_to_end(tmp_path) -> None:
    out = tmp_path / "runs"
    args = ["certify", "embedded-fmnist-s0.50", "--estimation", "sequential", "--n-max", "3000"]
    result = _rsbench(tmp_path, *args, "--indices", "0:96:8", "--threads", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    frame = read_results(out)
    assert len(frame) == 12 and (frame["estimation"] == "sequential").all()
    assert (frame["protocol"] == "custom").all() and (frame["samples"] <= 3100).all()
    assert frame["samples"].min() < 3100  # some image stopped early
    assert "custom-sequential" in result.stdout and "samples/img" in result.stdout
    assert "never ranked with fixed-n runs" in result.stdout
    info = json.loads(next(out.iterdir()).joinpath("run.json").read_text())
    assert info["config"]["estimation"] == "sequential"
    rescored = _rsbench(
        tmp_path,
        "rescore",
        str(next(out.iterdir())),
        "--alpha",
        "0.001",
        "--out",
        str(tmp_path / "re"),
    )
    assert rescored.returncode == 0, rescored.stderr
    again = read_results(tmp_path / "re")
    for column in ("pA_lower", "radius", "prediction", "stop_alpha", "n_used", "protocol"):
        assert again[column].tolist() == frame[column].tolist()
    bad = _rsbench(tmp_path, "certify", "embedded-fmnist-s0.50", "--n-max", "10", "--out", str(out))
    assert bad.returncode == 2 and bad.stderr.startswith("error: --n-max applies")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_leaderboard_and_compare_never_rank_the_two_modes_together(zoo, tmp_path, reference):
    from rsbench import report
    from rsbench.errors import ResultsError
    from rsbench.report import headtohead

    fixed_config = runconfig.resolve_config(
        zoo.get("tiny-s0.25"), zoo=zoo, **{**SEQ, "estimation": "fixed", "n_max": None, "n": 2000}
    )
    fixed = read_results(runner.run_certification(fixed_config, zoo, tmp_path).run_dir)
    both = pd.concat([fixed, reference["tiny-s0.25"]], ignore_index=True)
    with pytest.raises(ResultsError, match="custom-sequential"):
        report.build_leaderboards(both)
    boards = report.build_leaderboards(both, all_sections=True)
    assert [(b.protocol, b.sequential) for b in boards] == [
        ("custom", False),
        ("custom-sequential", True),
    ]
    headers, body = report.table_cells(boards[1])
    samples = reference["tiny-s0.25"]["samples"]
    row = dict(zip(headers, body[0]))
    assert row["samples/img"] == f"{samples.mean():,.0f}" and row["max samples"] == str(
        samples.max()
    )
    assert row["n_max"] == "2000"
    assert any("never ranked with fixed-n runs" in line for line in report.notes(boards[1]))
    assert "samples/img" not in report.table_cells(boards[0])[0]
    with pytest.raises(ResultsError, match="mix fixed-n and sequential"):
        headtohead.compare(both)
    table = headtohead.compare(reference["tiny-s0.25"])
    assert "n_max = 2000" in headtohead.to_markdown(table)
    assert table["mean_samples"].iloc[0] == pytest.approx(samples.mean())


def test_stored_sequential_counts_are_checked_against_the_samples_drawn(reference) -> None:
    from rsbench.results.schema import frame_to_table
    from rsbench.results.storage import check_counts

    def table(frame: pd.DataFrame):
        return frame_to_table(frame.assign(seconds=0.0))

    for frame in reference.values():
        assert check_counts(table(frame)) is None
    frame = reference["tiny-s0.25"].copy()
    frame.loc[0, "n_used"] = frame.loc[0, "n_used"] + 1
    assert "counts do not sum to n (n_used)" in check_counts(table(frame))
    frame = reference["tiny-dual"].copy()
    frame.loc[0, "router_n_used"] = 5000
    assert "router_n_used > router_n" in check_counts(table(frame))

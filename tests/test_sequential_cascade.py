"""Sequential estimation for cascades (rsbench.engine.cascade.certify_sequential, issue 22).

Known answers and coverage with toy experts whose smoothed probabilities are exact (1-d bins),
the one-stage plan equals fixed-n CASCADE CERTIFY, a constant classifier stops at the first block
that certifies the grid's largest reachable radius, re-scoring reproduces rows, and the
embedded cascade through the runner (resume, shards) and the CLI. The PGD campaign on sequential
cascade certificates is the attack suite's (tests/test_attack.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.cli import run_cli
from helpers.toy_models import Bins, Constant
from scipy.stats import norm

from rsbench.engine import stats
from rsbench.engine.cascade import CAP_REASONS, CascadeSmoothed, combine_cascade
from rsbench.engine.sequential import SequentialSpec, level_radius
from rsbench.errors import ConfigError
from rsbench.results.rescore import rescore_frame
from rsbench.results.storage import read_results
from rsbench.run import runconfig, runner
from rsbench.zoo.registry import load_zoo

GRID = tuple(0.25 * i for i in range(9))
SIGMAS = (1.0, 0.5, 0.25)


def _exact(probs: list[float], sigma: float, shift: np.ndarray) -> np.ndarray:
    """Smoothed class probabilities of ``Bins(probs, sigma)`` at first coordinate ``0.5 + shift``
    (``[len(shift), classes]``): the bins' cuts moved by ``-shift``."""
    edges = np.concatenate(([-np.inf], norm.ppf(np.cumsum(probs)[:-1]), [np.inf]))
    cdf = norm.cdf(edges[None, :] - shift[:, None] / sigma)
    return np.diff(cdf, axis=1)


def _cascade_class(stage_probs: list[list[float]], shift: np.ndarray, p0: float) -> np.ndarray:
    """The cascade classifier G at the shifted inputs (-1: abstain): the first stage whose top
    class has probability > p0."""
    out = np.full(shift.size, -1)
    for probs, sigma in zip(stage_probs, SIGMAS):
        p = _exact(probs, sigma, shift)
        top = p.argmax(axis=1)
        confident = (p.max(axis=1) > p0) & (out == -1)
        out[confident] = top[confident]
    return out


def _unsound(certs, stage_probs, p0: float, radii=None) -> np.ndarray:
    """Per certificate: does G change class within its radius (or ``radii``)? Along the first
    coordinate (the only one the toys read; a worst-case direction) at 401 points."""
    bad = []
    for i, c in enumerate(certs):
        if c.abstained:
            bad.append(False)
            continue
        radius = c.radius if radii is None else radii[i]
        shift = np.linspace(-1.0, 1.0, 401) * radius * (1 - 1e-9)
        bad.append(bool(np.any(_cascade_class(stage_probs, shift, p0) != c.prediction)))
    return np.asarray(bad)


# stage 0 (sigma 1) moves on (top class 0.42 < p0); stage 1 answers class 1; stage 0's cap on
# class 0 is close to stage 1's own radius, so both bounds are tight
STAGES = [[0.42, 0.40, 0.18], [0.08, 0.80, 0.12], [0.05, 0.9, 0.05]]


def _toy(p0: float = 0.5) -> CascadeSmoothed:
    return CascadeSmoothed(
        [Bins(probs, s) for probs, s in zip(STAGES, SIGMAS)], SIGMAS, num_classes=3, p0=p0
    )


def _spec(n_max: int = 4000, first: int = 100, ratio: float = 2.0) -> SequentialSpec:
    return SequentialSpec(n_max=n_max, radii=GRID, first=first, ratio=ratio)


@pytest.fixture(scope="module")
def toy_certificates():
    """600 independent sequential certificates of the toy cascade at alpha = 0.2."""
    images = torch.full((600, 3), 0.5)
    return _toy().certify_batch(images, n0=50, n=4000, alpha=0.2, seed=3, sequential=_spec())


def test_sequential_cascade_certificates_are_sound_at_rate_alpha(toy_certificates) -> None:
    certs = toy_certificates
    answered = [c for c in certs if not c.abstained]
    assert len(answered) > 500 and all(c.prediction == 1 and c.stage == 1 for c in answered)
    # the bounds the certificate uses hold (answer: stage 1's class 1; cap: stage 0's class 0)
    own_ok = np.array([c.stage_pA_lower[1] <= 0.80 for c in answered])
    cap_ok = np.array([c.stage_pB_upper[0] >= 0.42 for c in answered])
    failures = int((~own_ok | ~cap_ok).sum())
    # alpha = 0.2 with 600 trials: mean <= 120, the bound's slack keeps the rate far below
    assert failures <= 0.2 * len(certs) + 3 * np.sqrt(len(certs) * 0.2 * 0.8)
    # and the certified radius never reaches a point where G changes class
    assert _unsound(certs, STAGES, 0.5).mean() <= 0.2
    # the check has teeth: the same radii from the point estimates (the votes' frequencies in
    # place of the bounds) are broken far more often than alpha
    naive = []
    for c in certs:
        if c.abstained:
            naive.append(0.0)
            continue
        own = 0.5 * norm.ppf(c.stage_nA[1] / c.stage_n_used[1])
        cap = -1.0 * norm.ppf(c.stage_counts[0][0] / c.stage_n_used[0])
        naive.append(min(own, cap))
    assert _unsound(certs, STAGES, 0.5, naive).mean() > 0.3


def test_caps_resume_only_while_they_can_lower_the_grid_level(toy_certificates) -> None:
    certs = [c for c in toy_certificates if not c.abstained]
    reasons = {c.stage_stop_reason[0] for c in certs}
    assert reasons & set(CAP_REASONS)  # stage 0 resumed for its cap on some images
    for c in certs:
        assert c.stage_n_used[0] in _spec().stage_sizes and c.stage_n_used[1] in _spec().stage_sizes
        assert c.samples == 2 * 50 + sum(c.stage_n_used)
        assert c.radius == pytest.approx(min(c.stage_radius))


@pytest.mark.parametrize("p0", [0.5, 0.7])
def test_a_one_stage_plan_is_fixed_n_cascade_certify(p0: float) -> None:
    cascade = _toy(p0)
    images = torch.full((20, 3), 0.5)
    fixed = cascade.certify_batch(images, n0=50, n=2000, alpha=0.05, seed=1)
    seq = cascade.certify_batch(
        images, n0=50, n=2000, alpha=0.05, seed=1, sequential=_spec(2000, first=2000)
    )
    for f, s in zip(fixed, seq):
        assert (f.prediction, f.radius, f.stage, f.stage_counts) == (
            s.prediction,
            s.radius,
            s.stage,
            s.stage_counts,
        )
        assert s.stage_n_used == (2000,) * s.stages_run


def test_a_constant_cascade_stops_at_the_first_block_certifying_the_top_radius() -> None:
    alpha, spec = 0.001, _spec(20_000, first=100, ratio=1.5)
    cascade = CascadeSmoothed([Constant(2, 4)] * 3, SIGMAS, num_classes=4)
    certs = cascade.certify_batch(torch.rand(4, 3), n0=10, n=20_000, alpha=alpha, sequential=spec)
    plan = spec.plan(alpha / 5, 1.0, 0.5)
    sizes = np.asarray(plan.stage_sizes)
    reach = level_radius(stats.clopper_pearson_lower(sizes, sizes, plan.stage_alphas), 1.0)
    first = int(np.argmax(reach >= plan.top_radius))
    assert plan.top_radius == 2.0 and first > 0  # the first block alone does not reach it
    for c in certs:
        assert c.prediction == 2 and c.stage == 0 and c.stages_run == 1
        assert c.stage_n_used == (sizes[first],) and c.stage_stop_reason == ("top",)
        assert c.samples == 10 + sizes[first] and c.radius >= 2.0


def test_rescoring_reproduces_the_rows_and_scales_the_levels(toy_certificates) -> None:
    certs = toy_certificates[:80]
    rows = len(certs)
    cA = np.zeros((rows, 3), dtype=np.int64)
    counts = np.zeros((rows, 3, 3), dtype=np.int64)
    ran = np.zeros((rows, 3), dtype=bool)
    n_used = np.zeros((rows, 3), dtype=np.int64)
    levels = np.full((rows, 3), np.nan)
    for i, c in enumerate(certs):
        k = c.stages_run
        cA[i, :k], counts[i, :k], ran[i, :k] = c.stage_cA, c.stage_counts, True
        n_used[i, :k], levels[i, :k] = c.stage_n_used, c.stage_alpha
    nA = np.take_along_axis(counts, cA[:, :, None], axis=2)[:, :, 0]
    again = combine_cascade(cA, nA, counts, ran, n_used, SIGMAS, 0.2, stage_alpha=levels, path=True)
    assert again["radius"].tolist() == [c.radius for c in certs]
    assert again["prediction"].tolist() == [c.prediction for c in certs]
    with pytest.raises(ConfigError, match="union"):
        combine_cascade(
            cA,
            nA,
            counts,
            ran,
            n_used,
            SIGMAS,
            0.2,
            0.5,
            "reference",
            stage_alpha=levels,
            path=True,
        )


def test_the_reference_split_is_refused() -> None:
    cascade = CascadeSmoothed([Constant(1, 3)] * 2, (1.0, 0.5), 3, alpha_split="reference")
    with pytest.raises(ConfigError, match="alpha_split 'union'"):
        cascade.certify_batch(torch.rand(1, 3), n0=10, n=1000, alpha=0.01, sequential=_spec(1000))


# ---------------------------------------------------------------- the embedded cascade, for real

RUN = dict(
    protocol="cpu",
    n0=20,
    estimation="sequential",
    n_max=3000,
    indices=(0, 8, 16, 24, 32, 40, 48, 56, 64, 72),
    chunk_size=4,
    threads=1,
)


@pytest.fixture(scope="module")
def shipped():
    return load_zoo()


@pytest.fixture(scope="module")
def reference(shipped, tmp_path_factory):
    config = runconfig.resolve_config(shipped.get("embedded-fmnist-cascade"), zoo=shipped, **RUN)
    result = runner.run_certification(config, shipped, tmp_path_factory.mktemp("ref"))
    assert result.complete
    return config, _rows(result.run_dir)


def _rows(path) -> pd.DataFrame:
    frame = read_results(path).drop(columns=["seconds"])
    return frame.sort_values("index").reset_index(drop=True)


def test_embedded_cascade_rows_record_every_stage(reference) -> None:
    config, frame = reference
    sizes = config.sequential_spec().stage_sizes
    assert (frame["estimation"] == "sequential").all() and (frame["n"] == 3000).all()
    for _, row in frame.iterrows():
        run = int(row["stages_run"])
        assert len(row["stage_n_used"]) == run == len(row["stage_stop_reason"])
        assert all(n in sizes for n in row["stage_n_used"])
        assert [sum(c) for c in row["stage_counts"]] == list(row["stage_n_used"])
        assert row["samples"] == run * 20 + sum(row["stage_n_used"])
        last = row["cascade_stage"] if row["cascade_stage"] >= 0 else run - 1
        assert row["n_used"] == row["stage_n_used"][last]
    again = rescore_frame(read_results_like(frame), config.alpha)
    for column in ("radius", "prediction", "stop_alpha", "n_used", "cascade_stage"):
        assert again[column].tolist() == frame[column].tolist()
    looser = rescore_frame(read_results_like(frame), 0.01)
    assert (looser["radius"] >= frame["radius"] - 1e-12).all()


def read_results_like(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(seconds=0.0)


def test_resume_and_shards_give_the_uninterrupted_rows(shipped, reference, tmp_path) -> None:
    config, frame = reference

    class Stop(Exception):
        pass

    def stop_after_first_chunk(event) -> None:
        if event.done > 4:
            raise Stop

    with pytest.raises(Stop):
        runner.run_certification(config, shipped, tmp_path / "a", progress=stop_after_first_chunk)
    resumed = runner.run_certification(config, shipped, tmp_path / "a")
    assert resumed.skipped == 4 and resumed.complete
    pd.testing.assert_frame_equal(_rows(resumed.run_dir), frame)
    other = runconfig.resolve_config(
        shipped.get("embedded-fmnist-cascade"), zoo=shipped, **{**RUN, "chunk_size": 3}
    )
    parts = [runner.run_certification(other, shipped, tmp_path / "b", shard=(i, 2)) for i in (0, 1)]
    assert parts[1].complete
    pd.testing.assert_frame_equal(_rows(parts[1].run_dir), frame)


def test_the_cascade_rule_enters_the_identity(shipped) -> None:
    entry = shipped.get("embedded-fmnist-cascade")
    seq = runconfig.resolve_config(entry, zoo=shipped, **RUN)
    fixed = runconfig.resolve_config(entry, zoo=shipped, protocol="cpu", n0=20, n=3000)
    assert "cascade_rule" in seq.identity_fields()["sequential"]
    assert "sequential" not in fixed.identity_fields()
    assert seq.run_name() != fixed.run_name()
    with pytest.raises(ConfigError, match="alpha-split union"):
        runconfig.resolve_config(entry, zoo=shipped, alpha_split="reference", **RUN)


def _rsbench(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m rsbench ARGS`` in ``cwd`` (tests/helpers/cli.py: private cache, no user zoo)."""
    return run_cli(list(args), cwd=cwd, timeout=300)


def test_cli_sequential_cascade_end_to_end(tmp_path) -> None:
    out = tmp_path / "runs"
    args = ["certify", "embedded-fmnist-cascade", "--estimation", "sequential", "--n-max", "20000"]
    result = _rsbench(
        tmp_path, *args, "--indices", "0:96:12", "--n0", "50", "--threads", "1", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    frame = read_results(out)
    assert len(frame) == 8 and (frame["estimation"] == "sequential").all()
    assert (frame["kind"] == "cascade").all() and frame["samples"].max() <= 3 * 20_050
    assert frame["samples"].min() < 20_050  # some image stopped early
    assert all(len(r) == s for r, s in zip(frame["stage_n_used"], frame["stages_run"]))
    bad = _rsbench(tmp_path, *args, "--alpha-split", "reference", "--out", str(out))
    assert bad.returncode == 2 and "alpha-split union" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_plan_measures_radii_from_its_level() -> None:
    spec = _spec(20_000, first=500, ratio=1.25)
    half, p0 = spec.plan(0.001, 0.5), spec.plan(0.001, 0.5, 0.7)
    lower = np.array([0.4, 0.6, 0.69, 0.7, 0.95, 0.999])
    assert np.array_equal(level_radius(lower, 0.5), stats.radius_from_bound(lower, 0.5))
    expected = np.where(lower >= 0.7, 0.5 * (norm.ppf(lower) - norm.ppf(0.7)), 0.0)
    assert np.allclose(level_radius(lower, 0.5, 0.7), expected, rtol=1e-12, atol=0)
    # the same votes certify less from a higher level, and the top reachable radius is lower
    assert p0.top_radius < half.top_radius and p0.level == 0.7 and half.level == 0.5
    assert "level" not in half.identity() and p0.identity()["level"] == 0.7

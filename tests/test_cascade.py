"""Soundness tests with known answers for cascaded (multiscale) smoothing (rsbench.engine.cascade)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.toy_models import Bins, Constant, Linear, Threshold
from scipy.stats import norm
from torch import nn

from rsbench.engine import stats
from rsbench.engine.cascade import CascadeSmoothed, combine_cascade
from rsbench.engine.smoothing import SmoothedClassifier
from rsbench.errors import ConfigError


class Exploding(nn.Module):
    """A stage that must never run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a later stage ran although an earlier one decided")


class Split3(nn.Module):
    """Three classes: 1 beyond a linear boundary at distance ``d`` along ``w``; else 0 or 2 by the
    side of a second boundary through ``x`` along ``v`` (orthogonal to ``w``)."""

    def __init__(self, w: torch.Tensor, v: torch.Tensor, x: torch.Tensor, d: float) -> None:
        super().__init__()
        self.register_buffer("w", w.flatten() / w.norm())
        self.register_buffer("v", v.flatten() / v.norm())
        self.b = -float(self.w @ x.flatten()) - d
        self.c = -float(self.v @ x.flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        one = (flat @ self.w + self.b > 0).long()
        side = torch.where(flat @ self.v + self.c > 0, 2, 0)
        label = torch.where(one == 1, 1, side)
        return torch.nn.functional.one_hot(label, 3).float()


@pytest.mark.parametrize("p0", [0.5, 0.7])
def test_constant_experts_give_the_closed_form_radius(p0: float) -> None:
    sigmas, alpha, n = [0.25, 1.0, 0.5], 0.003, 2000
    cascade = CascadeSmoothed(
        [Constant(1, 4), Constant(1, 4), Constant(1, 4)], sigmas, num_classes=4, p0=p0
    )
    assert cascade.sigmas == (1.0, 0.5, 0.25)  # largest first
    results = cascade.certify_batch(torch.rand(5, 3), n0=10, n=n, alpha=alpha, seed=0)
    share = alpha / 5  # 2K - 1 bounds may be used
    expected = 1.0 * (norm.ppf(share ** (1 / n)) - norm.ppf(p0))
    for r in results:
        assert r.prediction == 1 and r.stage == 0 and r.stages_run == 1 and r.samples == n + 10
        # the Clopper-Pearson bound is rounded down by 2**-40 relative (rsbench.engine.stats)
        assert r.radius == pytest.approx(expected, rel=1e-8) and r.radius <= expected
        assert r.stage_alpha == (pytest.approx(share),)


def test_first_stage_always_confident_equals_that_expert_at_its_alpha_share() -> None:
    torch.manual_seed(0)
    w = torch.randn(1, 2, 2)
    # every image sits at distance >= 1 from the boundary: the sigma = 0.5 stage is always confident
    x = torch.full((8, 1, 2, 2), 0.5) + 0.5 * (w / w.norm()) * torch.linspace(0.0, 1.0, 8).view(
        -1, 1, 1, 1
    )
    b = -float((w * 0.5).sum()) + 1.0 * float(w.norm())
    first = Linear(w, b)
    cascade = CascadeSmoothed([Exploding(), first, Exploding()], [0.25, 0.5, 0.12], 2)
    alpha, n0, n, indices = 0.002, 50, 3000, [3, 1, 4, 1_5, 9, 2, 6, 5]
    results = cascade.certify_batch(x, n0, n, alpha, seed=7, indices=indices)
    # Cohen's CERTIFY of that expert alone at the stage's alpha share, on the same noise streams
    single = SmoothedClassifier(first, 2, 0.5).certify_batch(x, n0, n, alpha / 5, 7, indices)
    for r, cert in zip(results, single, strict=True):
        assert r.stage == 0 and r.stages_run == 1 and not r.abstained
        assert r.prediction == cert.prediction == 1
        assert r.stage_counts[0] == cert.counts
        assert r.radius == pytest.approx(cert.radius, rel=1e-12)


@pytest.mark.parametrize("distance", [0.1, 0.25, 0.5])
def test_earlier_stage_boundary_at_distance_d_bounds_every_radius(distance: float) -> None:
    # Stage 0 (sigma 0.5) is unsure at x (no class above 1/2) and moves on, but becomes confident in
    # class 1 once x moves d along w; stage 1 always says class 0. The cascade's answer really
    # changes within distance d, so no certificate may exceed d, however confident stage 1 is.
    w, v = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    w[0, 1, 2], w[0, 3, 0] = 0.6, 0.8
    v[0, 0, 0] = 1.0
    x = torch.full((1, 4, 4), 0.5)
    cascade = CascadeSmoothed(
        [Split3(w, v, x, distance), Constant(0, 3)], [0.5, 0.45], num_classes=3
    )
    results = cascade.certify_batch(x.expand(30, -1, -1, -1), n0=100, n=20_000, alpha=0.01, seed=4)
    assert all(r.stages_run == 2 for r in results)  # stage 0 always moved on
    answered = [r for r in results if not r.abstained]
    assert all(r.prediction == 0 and r.stage == 1 for r in answered)
    assert max(r.radius for r in results) <= distance
    # not vacuous: close to the exact cap from stage 0's other classes (class 1: Phi(-d / sigma),
    # class 2: Phi(d / sigma) / 2), which is at most d
    exact_cap = -0.5 * norm.ppf(max(norm.cdf(-distance / 0.5), norm.cdf(distance / 0.5) / 2))
    assert exact_cap <= distance + 1e-12
    assert len(answered) == len(results)
    assert min(r.radius for r in results) > 0.7 * exact_cap
    # without the cap stage 1 alone would certify far beyond d
    assert all(r.stage_radius[1] > 2 * distance for r in answered)


def test_seeded_coverage_of_every_bound_that_may_be_used() -> None:
    # Stage 0 (sigma 1.0): classes (0.3, 0.3, 0.4) -> moves on; stage 1 (sigma 0.5): class 0 with
    # p = 0.8. A certificate fails when the answer bound exceeds 0.8 or stage 0's bound on the
    # largest other class (0.4, class 2) falls below it. The union bound promises <= alpha.
    alpha, trials = 0.15, 3000
    cascade = CascadeSmoothed(
        [Bins([0.3, 0.3, 0.4], 1.0), _Pad(Threshold(0.8, 0.5), 3)], [1.0, 0.5], num_classes=3
    )
    results = cascade.certify_batch(torch.full((trials, 1), 0.5), n0=10, n=400, alpha=alpha, seed=3)
    answered = [r for r in results if r.stage == 1 and r.prediction == 0]
    assert len(answered) > 0.8 * trials
    failures = np.mean([r.stage_pA_lower[1] > 0.8 or r.stage_pB_upper[0] < 0.4 for r in answered])
    assert failures <= alpha + 4 * np.sqrt(alpha * (1 - alpha) / len(answered))
    # each bound alone runs at its share (alpha / 3) and is close to it, not to alpha
    answer_failures = np.mean([r.stage_pA_lower[1] > 0.8 for r in answered])
    assert answer_failures <= alpha / 3 + 4 * np.sqrt(alpha / 3 / len(answered))


class _Pad(nn.Module):
    def __init__(self, model: nn.Module, classes: int) -> None:
        super().__init__()
        self.model, self.classes = model, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return torch.nn.functional.pad(out, (0, self.classes - out.shape[1]), value=-1e9)


def _net(seed: int, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, classes))


def _stage_arrays(results, stages: int, classes: int):
    rows = len(results)
    cA = np.zeros((rows, stages), dtype=np.int64)
    nA = np.zeros((rows, stages), dtype=np.int64)
    counts = np.zeros((rows, stages, classes), dtype=np.int64)
    ran = np.zeros((rows, stages), dtype=bool)
    for i, r in enumerate(results):
        for k in range(r.stages_run):
            cA[i, k], nA[i, k], counts[i, k], ran[i, k] = (
                r.stage_cA[k],
                r.stage_nA[k],
                r.stage_counts[k],
                True,
            )
    return cA, nA, counts, ran


def test_stored_stage_counts_rescore_to_the_same_certificates() -> None:
    # stage 0 (sigma 0.5) is unsure on part of the images (its class depends on the first pixel)
    first = Bins([0.35, 0.3, 0.2, 0.15], 0.05)
    cascade = CascadeSmoothed([_net(1), _net(2), first], [0.12, 0.25, 0.5], num_classes=4)
    results = cascade.certify_batch(torch.rand(40, 2, 2, 2), n0=20, n=300, alpha=0.01, seed=5)
    assert {r.stages_run for r in results} >= {1, 2}  # some images moved on
    arrays = _stage_arrays(results, 3, 4)
    again = combine_cascade(*arrays, 300, cascade.sigmas, 0.01)
    np.testing.assert_array_equal(again["prediction"], [r.prediction for r in results])
    np.testing.assert_array_equal(again["radius"], [r.radius for r in results])
    # a smaller alpha never certifies more; stages that did not run make a row abstain
    smaller = combine_cascade(*arrays, 300, cascade.sigmas, 0.0001)
    assert np.all(smaller["radius"] <= again["radius"] + 1e-12)
    reference = combine_cascade(*arrays, 300, cascade.sigmas, 0.01, alpha_split="reference")
    first = np.array([r.stage == 0 for r in results])
    # stage 0 answers at alpha under the reference split, at alpha / 5 under the union split
    assert np.all(reference["radius"][first] >= again["radius"][first])


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="p0=0.4"):
        CascadeSmoothed([_net(1)], [0.5], 4, p0=0.4)
    with pytest.raises(ConfigError, match="alpha split 'half'"):
        CascadeSmoothed([_net(1)], [0.5], 4, alpha_split="half")
    with pytest.raises(ConfigError, match="repeat"):
        CascadeSmoothed([_net(1), _net(2)], [0.5, 0.5], 4)


def test_one_stage_cascade_is_cohen_certify() -> None:
    cascade = CascadeSmoothed([_net(4)], [0.5], num_classes=4)
    results = cascade.certify_batch(torch.rand(10, 2, 2, 2), n0=20, n=500, alpha=0.001, seed=2)
    for r in results:
        expected = (
            0.0 if r.abstained else float(stats.certified_radius(r.stage_nA[0], 500, 0.001, 0.5))
        )
        assert r.radius == pytest.approx(expected, rel=1e-12)


def _exact_failure(pa: float, pb: float, q: float, answer: int, split: str) -> float:
    """Exact probability that a two-stage cascade issues an unsound certificate (n = 40, alpha =
    0.2, three classes), from every possible pair of count vectors scored by combine_cascade.

    Stage 0 (sigma 1) has class probabilities (pa, pb, 1 - pa - pb); stage 1 (sigma 0.5) gives class
    ``answer`` probability q and the rest to another class; the selection draws pick each stage's
    true top class. Unsound: an answer whose own bound exceeds the stage's true probability, or
    whose stage-0 cap rests on an upper bound below the true largest other-class probability.
    """
    from scipy.special import gammaln
    from scipy.stats import binom

    n, alpha = 40, 0.2
    probs = np.array([pa, pb, 1 - pa - pb])
    ks = np.array([(a, b, n - a - b) for a in range(n + 1) for b in range(n + 1 - a)])
    k1 = np.arange(n + 1)
    rows = len(ks) * len(k1)
    counts1 = np.zeros((rows, 3), dtype=np.int64)
    counts1[:, answer] = np.tile(k1, len(ks))
    counts1[:, 2 if answer != 2 else 1] = n - counts1[:, answer]
    counts = np.stack([np.repeat(ks, len(k1), axis=0), counts1], axis=1)
    cA = np.stack([np.full(rows, int(np.argmax(probs))), np.full(rows, answer)], axis=1)
    nA = np.take_along_axis(counts, cA[:, :, None], 2)[:, :, 0]
    d = combine_cascade(cA, nA, counts, np.ones_like(cA, bool), n, [1.0, 0.5], alpha, 0.5, split)
    p0_counts = np.exp(gammaln(n + 1) - gammaln(ks + 1).sum(1) + (ks * np.log(probs)).sum(1))
    weight = np.repeat(p0_counts, len(k1)) * np.tile(binom.pmf(k1, n, q), len(ks))
    ok = ~d["abstained"]
    other = np.max(np.where(np.arange(3) == answer, -1.0, probs))
    bad = (ok & (d["stage"] == 0) & (d["pA_lower"][:, 0] > probs[cA[:, 0]])) | (
        ok & (d["stage"] == 1) & ((d["pA_lower"][:, 1] > q) | (d["pB_upper"][:, 0] < other))
    )
    return float((weight * bad).sum())


def test_union_split_holds_alpha_where_the_reference_split_does_not() -> None:
    # Stage 0 is barely confident in class 0 (0.52): its answer bound fails with probability close
    # to alpha, and when it moves on instead, stage 1's class-1 answer rests on a stage-0 cap that
    # must bound class 0 (0.52 > p0, so no cap is valid). The reference split spends alpha on each
    # of these paths; the union split budgets both.
    assert _exact_failure(0.52, 0.43, 0.95, 1, "reference") > 0.2
    worst = max(
        _exact_failure(pa, pb, q, answer, "union")
        for pa, pb, q, answer in [
            (0.52, 0.43, 0.95, 1),
            (0.36, 0.13, 0.95, 0),
            (0.45, 0.45, 0.9, 1),
            (0.5, 0.3, 0.8, 0),
            (0.6, 0.2, 0.95, 1),
        ]
    )
    assert worst <= 0.2

"""rsbench.engine.sequential: coverage of the staged Clopper–Pearson bound at any stopping time, the stopping
rule, and the plan's validation.

Coverage tests draw seeded Bernoulli streams with known p (vectorised: Binomial increments per
stage) and count how often the bound at stopping exceeds p. Under the union bound that count is
Binomial(trials, rate) with rate <= alpha, so it must not exceed the 1 - 1e-7 quantile of
Binomial(trials, alpha). The same check run on a broken bound (alpha at every stage instead of
alpha_k) fails: the tests assert that too, so they can fail.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import binom, norm

from rsbench.engine import sequential, stats

#: Cumulative stage sizes of the coverage tests: 20 x 2^k up to 20,480 (11 stages).
STAGES = tuple(20 * 2**k for k in range(11))
#: True success probabilities tried (near 1/2 up to near-unanimous).
PS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999)
#: Streams per p.
TRIALS = 20_000
#: Quantile of Binomial(trials, alpha) a violation count may reach before the test fails.
QUANTILE = 1 - 1e-7
CIFAR_GRID = tuple(np.round(np.arange(0.0, 2.0001, 0.25), 2))


def _plan(
    alpha: float, stages=STAGES, weighting: str = "equal", sigma: float = 0.5, **kw
) -> sequential.SequentialPlan:
    return sequential.SequentialPlan(
        stage_sizes=stages,
        stage_alphas=sequential.split_alpha(alpha, stages, weighting),
        radii=CIFAR_GRID,
        sigma=sigma,
        alpha=alpha,
        **kw,
    )


def _streams(plan: sequential.SequentialPlan, p: float, trials: int, seed: int) -> np.ndarray:
    """Cumulative votes (trials, K) of Bernoulli(p) streams, through the module's simulator."""
    return sequential.simulate_counts(plan, np.full(trials, p), np.random.default_rng(seed))


def _stage_bounds(plan: sequential.SequentialPlan, counts: np.ndarray, alphas=None) -> np.ndarray:
    """The bound the module reports at every stage for every stream (trials, K): the table of
    ``decide(...).lower`` over all counts of the stage, indexed by the stream's count."""
    out = np.empty(counts.shape)
    for k, n in enumerate(plan.stage_sizes):
        if alphas is None:
            table = sequential.decide(plan, np.arange(n + 1), k).lower
        else:  # a broken bound: the stage's Clopper–Pearson bound at another alpha
            table = stats.clopper_pearson_lower(np.arange(n + 1), n, alphas[k])
        out[:, k] = table[counts[:, k]]
    return out


def _adversarial_stop(bounds: np.ndarray, p: float) -> np.ndarray:
    """The worst stopping rule for validity: the first stage whose bound exceeds p, else the stage
    where the bound is largest (it knows p, which no real rule does)."""
    above = bounds > p
    return np.where(above.any(axis=1), above.argmax(axis=1), bounds.argmax(axis=1))


def _tolerance(trials: int, alpha: float) -> int:
    return int(binom.ppf(QUANTILE, trials, alpha))


@pytest.mark.parametrize("alpha", [0.1, 0.01])
def test_bound_at_an_adversarial_stopping_time_covers_p(alpha: float) -> None:
    plan = _plan(alpha)
    tolerance = _tolerance(TRIALS, alpha)
    for i, p in enumerate(PS):
        bounds = _stage_bounds(plan, _streams(plan, p, TRIALS, seed=100 + i))
        stop = _adversarial_stop(bounds, p)
        violations = int((bounds[np.arange(TRIALS), stop] > p).sum())
        assert violations <= tolerance, (p, alpha, violations, tolerance)


@pytest.mark.parametrize("alpha", [0.1, 0.01])
def test_the_adversarial_check_catches_a_bound_without_the_alpha_split(alpha: float) -> None:
    """Alpha at every stage (no union bound): the adversarial rule breaks it at every p tried, so
    the coverage test above would fail on such a bound."""
    plan = _plan(alpha)
    tolerance = _tolerance(TRIALS, alpha)
    broken = [alpha] * plan.num_stages
    rates = []
    for i, p in enumerate(PS[:7]):
        bounds = _stage_bounds(plan, _streams(plan, p, TRIALS, seed=100 + i), alphas=broken)
        stop = _adversarial_stop(bounds, p)
        violations = int((bounds[np.arange(TRIALS), stop] > p).sum())
        assert violations > tolerance, (p, alpha, violations, tolerance)
        rates.append(violations / TRIALS)
    assert np.mean(rates) > 2 * alpha
    with pytest.raises(ValueError, match="sum"):  # and the plan refuses such a split
        sequential.SequentialPlan(
            stage_sizes=STAGES, stage_alphas=broken, radii=CIFAR_GRID, sigma=0.5, alpha=alpha
        )


@pytest.mark.parametrize("alpha", [0.1, 0.01])
def test_bound_at_the_plans_own_stopping_time_covers_p(alpha: float) -> None:
    """The module's own rule (futility at 0.2, aggressive) through certify_cumulative."""
    trials = 4000
    plan = _plan(alpha, sigma=1.0, futility_alpha=0.2)
    p = np.repeat(np.asarray(PS), trials)
    counts = sequential.simulate_counts(plan, p, np.random.default_rng(7))
    result = sequential.certify_cumulative(plan, counts)
    tolerance = _tolerance(trials, alpha)
    for value in PS:
        at = p == value
        assert int((result.lower[at] > value).sum()) <= tolerance, value
    # it does stop early, for several reasons
    assert result.samples.mean() < 0.5 * plan.n_max
    assert {int(r) for r in np.unique(result.reason)} >= {
        sequential.StopReason.TOP,
        sequential.StopReason.FUTILE,
        sequential.StopReason.N_MAX,
    }
    # the bound and radius reported are those of the stopping stage
    n = np.asarray(plan.stage_sizes)[result.stage]
    np.testing.assert_array_equal(result.samples, n)
    np.testing.assert_array_equal(result.nA, counts[np.arange(p.size), result.stage])
    expected = stats.clopper_pearson_lower(
        result.nA, n, np.asarray(plan.stage_alphas)[result.stage]
    )
    np.testing.assert_array_equal(result.lower, expected)
    np.testing.assert_array_equal(result.radius, stats.radius_from_bound(expected, plan.sigma))


@pytest.mark.parametrize(
    ("sigma", "top", "first_n"),
    [(0.12, 0.25, 625), (0.25, 0.75, 9095), (0.5, 1.75, 54210), (1.0, 2.0, 500)],
)
def test_a_constant_classifier_stops_at_the_first_stage_certifying_the_top_radius(
    sigma: float, top: float, first_n: int
) -> None:
    plan = sequential.SequentialPlan.geometric(
        n_max=100_000, alpha=0.001, sigma=sigma, radii=CIFAR_GRID
    )
    assert plan.stage_sizes[0] == 500 and plan.n_max == 100_000
    # independently: unanimous votes give the bound alpha_k ** (1 / n_k)
    sizes, alphas = np.asarray(plan.stage_sizes), np.asarray(plan.stage_alphas)
    reach = sigma * norm.ppf(alphas ** (1.0 / sizes))
    expected_top = max(r for r in CIFAR_GRID if r <= reach.max())
    expected_stage = int(np.argmax(reach >= expected_top))
    assert plan.top_radius == expected_top == top
    assert plan.stage_sizes[expected_stage] == first_n

    def unanimous(indices: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        return blocks

    result = sequential.run_sequential(plan, 3, unanimous)
    np.testing.assert_array_equal(result.stage, expected_stage)
    np.testing.assert_array_equal(result.samples, first_n)
    np.testing.assert_array_equal(result.reason, sequential.StopReason.TOP)
    assert np.all(result.radius >= top)


def test_a_clear_abstention_stops_at_the_first_stage() -> None:
    plan = sequential.SequentialPlan.geometric(
        n_max=100_000, alpha=0.001, sigma=0.5, radii=CIFAR_GRID
    )
    result = sequential.certify_cumulative(plan, np.tile(np.asarray(plan.stage_sizes) // 4, (2, 1)))
    np.testing.assert_array_equal(result.reason, sequential.StopReason.ABSTAIN)
    np.testing.assert_array_equal(result.samples, 500)
    np.testing.assert_array_equal(result.radius, 0.0)


def test_tiny_alpha_gives_finite_monotone_bounds() -> None:
    for alpha in (1e-6, 1e-8, 1e-10, 1e-12):
        plan = sequential.SequentialPlan.geometric(
            n_max=100_000, alpha=alpha, sigma=1.0, radii=CIFAR_GRID
        )
        assert sum(map(Fraction, plan.stage_alphas)) <= Fraction(alpha)
        previous_unanimous = 0.0
        for k, n in enumerate(plan.stage_sizes):
            counts = np.unique(np.linspace(0, n, 2001).astype(np.int64))
            decision = sequential.decide(plan, counts, k)
            assert np.all(np.isfinite(decision.lower)) and np.all(np.isfinite(decision.radius))
            assert np.all((decision.lower >= 0) & (decision.lower <= 1))
            assert np.all(np.diff(decision.lower) >= 0) and np.all(np.diff(decision.radius) >= 0)
            assert decision.lower[0] == 0.0 and decision.lower[-1] < 1.0
            # a unanimous vote certifies more at every larger stage
            assert decision.lower[-1] > previous_unanimous
            previous_unanimous = float(decision.lower[-1])
        # and smaller alpha, smaller bound
        assert previous_unanimous < stats.clopper_pearson_lower(100_000, 100_000, alpha * 10)


@pytest.mark.parametrize("weighting", sequential.WEIGHTINGS)
def test_stage_alphas_sum_to_at_most_alpha_exactly(weighting: str) -> None:
    alphas = (0.1, 0.01, 0.001, 0.3, 1 / 3, 0.07, 1e-10, 0.999999)
    for alpha in alphas:
        for k in range(1, 40):
            stages = tuple(100 * (j + 1) ** 2 for j in range(k))
            split = sequential.split_alpha(alpha, stages, weighting)
            assert len(split) == k and all(a > 0 for a in split)
            assert sum(map(Fraction, split)) <= Fraction(alpha), (alpha, k)
            assert math.fsum(split) == pytest.approx(alpha, rel=1e-12)


def test_a_naive_split_can_exceed_alpha_in_floating_point() -> None:
    """Why split_alpha steps down: alpha * w / total, summed exactly, can exceed alpha."""
    found = False
    for alpha in (0.1, 0.01, 0.001, 0.3, 0.07):
        for k in range(2, 40):
            naive = [alpha / k] * k
            if sum(map(Fraction, naive)) > Fraction(alpha):
                found = True
                split = sequential.split_alpha(alpha, tuple(range(1, k + 1)), "equal")
                assert sum(map(Fraction, split)) <= Fraction(alpha)
    assert found


def test_the_default_plan_and_its_identity() -> None:
    plan = sequential.SequentialPlan.geometric(
        n_max=100_000, alpha=0.001, sigma=0.5, radii=CIFAR_GRID
    )
    ident = plan.identity()
    assert ident["estimation"] == "sequential" and ident["bound"] == sequential.BOUND_NAME
    assert ident["stage_sizes"][0] == 500 and ident["stage_sizes"][-1] == 100_000
    assert all(b > a for a, b in zip(ident["stage_sizes"], ident["stage_sizes"][1:]))
    assert ident["stage_alphas"][-1] == 0.0005  # "final-half"
    assert ident["radii"] == list(CIFAR_GRID) and ident["alpha"] == 0.001
    assert plan.block_size(0) == 500 and plan.block_size(1) == 125


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stage_sizes": ()}, "empty"),
        ({"stage_sizes": (100, 100, 200)}, "strictly increasing"),
        ({"stage_sizes": (200, 100, 300)}, "strictly increasing"),
        ({"stage_sizes": (0, 100, 200)}, "integers >= 1"),
        ({"stage_sizes": (10.5, 100, 200)}, "integers >= 1"),
        ({"stage_alphas": (0.0005, 0.0005)}, "one alpha per stage"),
        ({"stage_alphas": (0.0005, 0.0005, 0.0)}, "0 < alpha_k < 1"),
        ({"stage_alphas": (0.0005, 0.0005, float("nan"))}, "0 < alpha_k < 1"),
        ({"stage_alphas": (0.0005, 0.0005, 0.0001)}, "sum"),
        ({"alpha": 0.0}, "0 < alpha < 1"),
        ({"alpha": 1.5}, "0 < alpha < 1"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": float("inf")}, "sigma"),
        ({"radii": ()}, "empty"),
        ({"radii": (0.0, -0.25)}, ">= 0"),
        ({"radii": (0.5, 0.25)}, "strictly increasing"),
        ({"radii": (5.0,)}, "no grid radius is reachable"),
        ({"futility_alpha": 0.0}, "futility alpha"),
        ({"futility": "sometimes"}, "futility"),
    ],
)
def test_plan_validation(change: dict, message: str) -> None:
    fields = {
        "stage_sizes": (100, 1000, 10_000),
        "stage_alphas": (0.0002, 0.0003, 0.0005),
        "radii": (0.0, 0.25, 0.5),
        "sigma": 0.5,
        "alpha": 0.001,
    }
    sequential.SequentialPlan(**fields)  # the unchanged fields are valid
    with pytest.raises(ValueError, match=message):
        sequential.SequentialPlan(**{**fields, **change})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"first": 0}, "first stage size"),
        ({"ratio": 1.0}, "ratio"),
        ({"n_max": 0}, "n_max"),
        ({"weighting": "front"}, "weighting"),
        ({"alpha": "0.001"}, "alpha"),
    ],
)
def test_geometric_plan_validation(kwargs: dict, message: str) -> None:
    base = {"n_max": 100_000, "alpha": 0.001, "sigma": 0.5, "radii": CIFAR_GRID}
    with pytest.raises(ValueError, match=message):
        sequential.SequentialPlan.geometric(**{**base, **kwargs})


def test_geometric_stages_end_at_n_max() -> None:
    assert sequential.geometric_stages(100_000, 1000, 2.0) == (
        1000, 2000, 4000, 8000, 16000, 32000, 64000, 100_000,
    )  # fmt: skip
    assert sequential.geometric_stages(2000, 1000, 1.5) == (1000, 1500, 2000)
    assert sequential.geometric_stages(500, 1000, 2.0) == (500,)
    assert sequential.geometric_stages(10, 1, 1.1)[:3] == (1, 2, 3)  # rounding never repeats


def test_the_state_advances_images_independently_and_matches_the_offline_run() -> None:
    plan = _plan(0.01, futility_alpha=0.05)
    p = np.linspace(0.3, 1.0, 200)
    counts = sequential.simulate_counts(plan, p, np.random.default_rng(3))
    offline = sequential.certify_cumulative(plan, counts)
    increments = np.diff(counts, axis=1, prepend=0)
    state = sequential.SequentialState(plan, p.size)
    rng = np.random.default_rng(4)
    while not state.done:  # a random half of the pending images advance each round
        pending = state.pending()
        chosen = pending[rng.random(pending.size) < 0.5]
        blocks = state.next_block(chosen)
        np.testing.assert_array_equal(
            blocks, np.asarray([plan.block_size(k) for k in state.completed[chosen]])
        )
        state.update(chosen, increments[chosen, state.completed[chosen]])
    live = state.result()
    for name in ("stage", "samples", "nA", "lower", "radius", "reason"):
        np.testing.assert_array_equal(getattr(live, name), getattr(offline, name), name)
    with pytest.raises(ValueError, match="stopped"):
        state.next_block([0])


def test_state_refuses_bad_updates() -> None:
    plan = _plan(0.01)
    state = sequential.SequentialState(plan, 3)
    with pytest.raises(ValueError, match="more votes"):
        state.update([0], [plan.block_size(0) + 1])
    with pytest.raises(ValueError, match="twice"):
        state.update([1, 1], [0, 0])
    with pytest.raises(ValueError, match="not stopped"):
        state.result()


def test_simulation_is_seeded_and_the_fixed_comparison_uses_the_same_draws() -> None:
    plan = sequential.SequentialPlan.geometric(
        n_max=20_000, alpha=0.001, sigma=0.25, radii=CIFAR_GRID
    )
    p = np.linspace(0.4, 1.0, 300)
    a = sequential.simulate(plan, p, np.random.default_rng(11))
    b = sequential.simulate(plan, p, np.random.default_rng(11))
    np.testing.assert_array_equal(a.radius, b.radius)
    counts = sequential.simulate_counts(plan, p, np.random.default_rng(11))
    np.testing.assert_array_equal(
        sequential.fixed_from_counts(plan, counts),
        stats.certified_radius(counts[:, -1], 20_000, 0.001, 0.25),
    )

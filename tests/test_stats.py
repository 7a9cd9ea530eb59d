"""Known answers for rsbench.engine.stats (Clopper–Pearson, binomial test, radius)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from rsbench.engine import stats


@pytest.mark.parametrize("n", [1, 7, 100, 1000])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.2])
def test_clopper_pearson_matches_scipy_exact_interval(n: int, alpha: float) -> None:
    # The one-sided (1 - alpha) lower bound is the lower end of the two-sided (1 - 2 alpha) interval.
    ks = sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1)))
    ours = stats.clopper_pearson_lower(ks, n, alpha)
    for k, bound in zip(ks, ours):
        expected = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
        assert bound == pytest.approx(expected, rel=1e-9, abs=1e-12), (k, n, alpha)


def test_clopper_pearson_edges() -> None:
    assert stats.clopper_pearson_lower(0, 50, 0.01) == 0.0
    # k = n: the bound solves p^n = alpha.
    assert stats.clopper_pearson_lower(50, 50, 0.01) == pytest.approx(0.01 ** (1 / 50), rel=1e-12)
    assert stats.clopper_pearson_upper(50, 50, 0.01) == 1.0
    assert stats.clopper_pearson_upper(0, 50, 0.01) == pytest.approx(1 - 0.01 ** (1 / 50), rel=1e-9)


def test_binomial_test_matches_scipy() -> None:
    for top, runner_up in [(0, 0), (5, 5), (60, 40), (99, 1), (1, 99), (500, 480), (10, 0)]:
        expected = 1.0 if top + runner_up == 0 else binomtest(top, top + runner_up, 0.5).pvalue
        assert stats.binom_test_two_sided(top, runner_up) == pytest.approx(expected, rel=1e-9)


def test_radius_from_bound() -> None:
    assert stats.radius_from_bound(0.4999, 1.0) == 0.0
    assert stats.radius_from_bound(0.5, 1.0) == 0.0
    assert stats.radius_from_bound(0.9, 0.5) == pytest.approx(0.5 * norm.ppf(0.9), rel=1e-12)
    np.testing.assert_allclose(
        stats.radius_from_bound([0.3, 0.8, 0.99], [1.0, 2.0, 0.25]),
        [0.0, 2.0 * norm.ppf(0.8), 0.25 * norm.ppf(0.99)],
    )


def test_max_radius_known_value() -> None:
    # sigma * Phi^-1(alpha^(1/n)) for n = 100,000, alpha = 0.001: 3.81146 sigma (mpmath: 3.8114565634).
    # CERTIFY's bound is rounded down by 2**-40 relative: the cap it reaches is just below
    assert stats.max_radius(1.0, 100_000, 0.001) == pytest.approx(3.8114565634, abs=1e-8)
    assert stats.max_radius(0.5, 100_000, 0.001) == pytest.approx(0.5 * 3.8114565634, abs=1e-8)
    assert stats.max_radius(1.0, 100_000, 0.001) < 3.8114565634 - 1e-9
    assert stats.certified_radius(100_000, 100_000, 0.001, 1.0) == stats.max_radius(
        1.0, 100_000, 0.001
    )


def test_counts_from_printed_radii_bracket_the_true_count() -> None:
    n, alpha, sigma = 100_000, 0.001, 0.5
    true_counts = np.array([0, 40_000, 50_500, 87_270, 99_300, 100_000])
    printed = [float(f"{r:.3g}") for r in stats.certified_radius(true_counts, n, alpha, sigma)]
    low, high = stats.counts_from_radii(printed, sigma, n, alpha)
    assert np.all(low <= true_counts) and np.all(true_counts <= high)
    # Every count in the range prints the same radius, and the neighbours outside do not.
    for lo, hi, p in zip(low[1:], high[1:], printed[1:]):
        if p == 0.0:
            continue
        radii = stats.certified_radius([lo - 1, lo, hi, min(hi + 1, n)], n, alpha, sigma)
        assert float(f"{radii[1]:.3g}") == p and float(f"{radii[2]:.3g}") == p
        assert float(f"{radii[0]:.3g}") != p
    unreachable_low, _ = stats.counts_from_radii([3.81], sigma, n, alpha)
    assert unreachable_low[0] == -1


def _binomial_tail_at_least(k: int, n: int, p):
    """P[Bin(n, p) >= k] in mpmath precision (terms from j = k upward until negligible)."""
    import mpmath

    p = mpmath.mpf(p)
    term = mpmath.binomial(n, k) * p**k * (1 - p) ** (n - k)
    total, j = term, k
    while j < n:
        term = term * (n - j) / (j + 1) * p / (1 - p)
        j += 1
        total += term
        if term < total * mpmath.mpf(10) ** -45:
            break
    return total


def _cases() -> list[tuple[int, int, float]]:
    rng = np.random.default_rng(0)
    cases = []
    for n in (1, 2, 10, 100, 1000, 10_000, 100_000):
        for alpha in (0.001, 0.0005, 0.01, 0.05, 1e-6):
            ks = {1, 2, n, n - 1, n - 2, n // 2, int(0.9 * n), int(0.99 * n), int(0.999 * n)}
            ks |= {n - 10, n - int(np.sqrt(n))} | {int(x) for x in rng.integers(1, n + 1, size=3)}
            cases += [(k, n, alpha) for k in sorted(ks) if 1 <= k <= n]
    return cases


def test_clopper_pearson_lower_is_never_above_the_exact_bound() -> None:
    """Over ~290 (k, n, alpha): I_p(k, n - k + 1) <= alpha at rsbench's p (40-digit mpmath).

    The exact bound p* solves P[Bin(n, p*) >= k] = alpha, increasing in p, so the tail at p at most
    alpha means p <= p*. SciPy's unrounded value is above p* in about half of these cases.
    """
    import mpmath  # a test dependency (pyproject [test])
    from scipy.stats import beta

    mpmath.mp.dps = 40
    cases = _cases()
    assert len(cases) > 250
    scipy_above = 0
    for k, n, alpha in cases:
        ours = float(stats.clopper_pearson_lower(k, n, alpha))
        assert _binomial_tail_at_least(k, n, ours) <= alpha, (k, n, alpha, ours)
        raw = float(beta.ppf(alpha, k, n - k + 1))
        scipy_above += _binomial_tail_at_least(k, n, raw) > alpha
        assert ours == pytest.approx(raw, rel=1e-12)  # rounding moves it by 2**-40 relative only
    assert scipy_above > 0  # the check has teeth: the unrounded value is sometimes above


def _covers_exact_upper(k: int, n: int, alpha: float, upper: float) -> bool:
    """``upper >= u*``, the exact upper bound (P[Bin(n, u*) <= k] = alpha, decreasing in u)."""
    return bool(1 - _binomial_tail_at_least(k + 1, n, upper) <= alpha)


def test_clopper_pearson_upper_is_never_below_the_exact_bound() -> None:
    """rsbench's upper bound is never below u*, and tight: 1e-9 relative below it is already
    below u* (a bound rounded or computed loosely upward would pass the first check only). The
    first check has teeth: a bound lowered by 1e-6 relative fails it in every case."""
    import mpmath

    mpmath.mp.dps = 40
    cases = [(k, n, alpha) for k, n, alpha in _cases()[::3] if k < n]
    assert len(cases) > 50
    too_low_caught = 0
    for k, n, alpha in cases:
        ours = float(stats.clopper_pearson_upper(k, n, alpha))
        assert _covers_exact_upper(k, n, alpha, ours), (k, n, alpha, ours)
        assert not _covers_exact_upper(k, n, alpha, ours * (1 - 1e-9)), (k, n, alpha, ours)
        too_low_caught += not _covers_exact_upper(k, n, alpha, ours * (1 - 1e-6))
    assert too_low_caught == len(cases)


def test_pvalue_is_rounded_up_against_the_exact_value() -> None:
    """PREDICT's p-value is never below the exact one (issue 23 item 8); SciPy's raw value is
    below it at these counts (checked here, so the test fails without the rounding)."""
    import mpmath
    from scipy.stats import binom

    mpmath.mp.dps = 50
    cases = [(551, 64), (1842, 967), (860, 96), (1301, 62), (2661, 2217), (60, 40), (7, 0)]
    raw_below = 0
    for top, runner_up in cases:
        trials, low = top + runner_up, min(top, runner_up)
        exact = 2 * mpmath.fsum(mpmath.binomial(trials, k) for k in range(low + 1))
        exact = min(exact / mpmath.mpf(2) ** trials, mpmath.mpf(1))
        value = float(stats.binom_test_two_sided(top, runner_up))
        assert mpmath.mpf(value) >= exact, (top, runner_up)
        assert value <= float(exact) * (1 + 1e-11)
        raw_below += int(mpmath.mpf(float(2 * binom.cdf(low, trials, 0.5))) < exact)
    assert raw_below >= 4

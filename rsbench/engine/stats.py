"""Statistics of randomized smoothing certificates (Cohen et al. 2019), vectorised over arrays.

Every function accepts scalars or NumPy arrays (broadcast together) and returns NumPy values.
SciPy only; no statsmodels.

Guarantees
----------
* :func:`clopper_pearson_lower` is the one-sided (1 - alpha) Clopper–Pearson lower confidence bound
  of a binomial proportion, rounded *down*: never above the exact bound, so
  ``P[p_true < bound] <= alpha`` for every ``p_true``. SciPy's ``beta.ppf`` is accurate to a few
  ulps but not directed (its relative error, checked against 40-digit mpmath over 292 cases with
  n up to 1e5, alpha down to 1e-6: up to 2.8e-15 above the exact value in 144 of them; a later
  review found 1.2e-14 above at k = 76, n = 192, alpha = 0.00213, re-measured with 60-digit
  mpmath); the bound is lowered by the relative amount :data:`CP_ROUND_DOWN` = 2**-40 (9.1e-13,
  76 times the largest error seen so far), which moves a radius by at most about 1e-8 sigma. :func:`clopper_pearson_upper` is
  raised by the same amount.
* :func:`binom_test_two_sided` (PREDICT's p-value) is rounded *up* by the same relative amount,
  never below the exact p-value, so PREDICT abstains at least as often as the exact test would
  (for p-values above float64's smallest normal number; ``tests/test_stats.py`` checks
  it against mpmath).
* :func:`radius_from_bound` turns a lower bound on the top-class probability into the certified L2
  radius ``sigma * Phi^-1(p_lower)``; it is 0 where the bound is below 1/2 (abstention).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta, binom, norm

#: Relative amount by which the float64 Clopper–Pearson bounds are moved outward (module docstring).
CP_ROUND_DOWN = 2.0**-40


def clopper_pearson_lower(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> np.ndarray:
    """One-sided (1 - alpha) lower Clopper–Pearson bound on ``k / n``, rounded down.

    ``Beta.ppf(alpha, k, n - k + 1) * (1 - CP_ROUND_DOWN)``: never above the exact bound (see the
    module docstring); exactly 0 where ``k == 0``.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    safe_k = np.where(k > 0, k, 1.0)
    bound = beta.ppf(alpha, safe_k, n - k + 1.0) * (1.0 - CP_ROUND_DOWN)
    return np.where(k > 0, bound, 0.0)


def clopper_pearson_upper(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> np.ndarray:
    """One-sided (1 - alpha) upper Clopper–Pearson bound on ``k / n``, rounded up (1 where ``k == n``)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    safe_k = np.where(k < n, k, n - 1.0)
    bound = beta.isf(alpha, safe_k + 1.0, n - safe_k)  # isf: 1 - alpha would round alpha
    bound = np.minimum(bound * (1.0 + CP_ROUND_DOWN), 1.0)
    return np.where(k < n, bound, 1.0)


def binom_test_two_sided(top: ArrayLike, runner_up: ArrayLike) -> np.ndarray:
    """Two-sided binomial test p-value of ``top`` successes in ``top + runner_up`` trials at p = 1/2,
    rounded up.

    ``scipy.stats.binomtest(top, top + runner_up, 0.5).pvalue`` raised by the relative amount
    :data:`CP_ROUND_DOWN` (SciPy's value is accurate to a few ulps but not directed: it was found
    below the exact value), capped at 1; 1.0 when both are 0. Never below the exact p-value.
    """
    top = np.asarray(top, dtype=np.int64)
    runner_up = np.asarray(runner_up, dtype=np.int64)
    trials = top + runner_up
    low = np.minimum(top, runner_up)
    # At p = 1/2 the distribution is symmetric: p-value = P[X <= low] + P[X >= trials - low].
    p = 2.0 * binom.cdf(low, trials, 0.5) * (1.0 + CP_ROUND_DOWN)  # rounded up
    p = np.where(top == runner_up, 1.0, p)
    return np.minimum(p, 1.0)


def radius_from_bound(p_lower: ArrayLike, sigma: ArrayLike) -> np.ndarray:
    """Certified L2 radius ``sigma * Phi^-1(p_lower)``; 0 where ``p_lower < 1/2`` (abstain)."""
    p_lower = np.asarray(p_lower, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    radius = sigma * norm.ppf(np.clip(p_lower, 0.5, 1.0))
    return np.where(p_lower >= 0.5, radius, 0.0)


def max_radius(sigma: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> np.ndarray:
    """Largest radius CERTIFY can return, the one it returns at ``nA = n``.

    ``sigma * Phi^-1(alpha ** (1 / n))`` up to the downward rounding of the bound
    (:data:`CP_ROUND_DOWN`: about 1e-9 relative, e.g. 3.3e-9 sigma below 3.8114565634 sigma at
    n = 100,000, alpha = 0.001).
    """
    return certified_radius(n, n, alpha, sigma)


def certified_radius(nA: ArrayLike, n: ArrayLike, alpha: ArrayLike, sigma: ArrayLike) -> np.ndarray:
    """Radius CERTIFY returns for ``nA`` of ``n`` estimation votes (0 means abstain)."""
    return radius_from_bound(clopper_pearson_lower(nA, n, alpha), sigma)


def _rounded(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def counts_from_radii(
    radii: ArrayLike, sigma: float, n: int, alpha: float, significant_digits: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Range of counts ``nA`` whose certified radius, printed rounded, equals each given radius.

    Published logs print radii rounded (Cohen's logs: 3 significant digits), so several counts
    can print the same radius. For each radius this returns ``(lowest, highest)`` (inclusive) of the
    matching counts; the radius is non-decreasing in nA, so the range is contiguous. A radius of 0
    maps to the abstaining counts ``[0, largest nA with pA_lower < 1/2]``. Where no count matches,
    both ends are -1.
    """
    n = int(n)
    table = certified_radius(np.arange(n + 1), n, alpha, sigma)  # non-decreasing in nA
    radii = np.atleast_1d(np.asarray(radii, dtype=np.float64))
    lowest = np.full(radii.shape, -1, dtype=np.int64)
    highest = np.full(radii.shape, -1, dtype=np.int64)
    for i, printed in enumerate(radii):
        target = _rounded(float(printed), significant_digits)
        if target == 0.0:
            lowest[i], highest[i] = 0, int(np.searchsorted(table, 0.0, side="right")) - 1
            continue
        # Half a unit in the last printed digit, widened a little; the ends are trimmed exactly below.
        half_unit = 0.5 * 10.0 ** (np.floor(np.log10(abs(target))) - significant_digits + 1)
        lo = int(np.searchsorted(table, target - 1.01 * half_unit, side="left"))
        hi = int(np.searchsorted(table, target + 1.01 * half_unit, side="right")) - 1
        while lo <= hi and _rounded(float(table[lo]), significant_digits) != target:
            lo += 1
        while hi >= lo and _rounded(float(table[hi]), significant_digits) != target:
            hi -= 1
        if lo <= hi:
            lowest[i], highest[i] = lo, hi
    return lowest, highest

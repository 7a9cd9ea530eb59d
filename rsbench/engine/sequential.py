"""Sequential (early-stopping) estimation for CERTIFY: staged Clopper–Pearson with a union bound.

Cohen et al.'s CERTIFY draws ``n0`` selection samples to choose the class ``cA``, then ``n`` fresh
estimation samples that count ``nA`` votes for it, and certifies the radius
``sigma * Phi^-1(pA_lower)`` with ``pA_lower`` the one-sided Clopper–Pearson lower bound at
``alpha`` (abstaining below 1/2). Sequential estimation keeps the selection step unchanged and draws
the estimation samples in blocks: after each pre-declared stage it decides, per image, whether more
samples could still change the answer on a radius grid declared up front, and stops when they
cannot. Pure: NumPy, SciPy and :mod:`rsbench.engine.stats`; no torch, no files.

The bound (:data:`BOUND_NAME`)
------------------------------
A :class:`SequentialPlan` declares, before any sample is drawn, cumulative stage sizes
``n_1 < n_2 < ... < n_K = n_max`` and a split ``alpha_1, ..., alpha_K`` of ``alpha`` with
``sum_k alpha_k <= alpha`` (checked exactly, in rational arithmetic on the float64 values). At stage
``k`` the bound is ``LB_k = clopper_pearson_lower(nA_k, n_k, alpha_k)``, where ``nA_k`` counts the
votes for ``cA`` among the first ``n_k`` estimation samples (Horváth et al., "Boosting randomized
smoothing with variance reduced classifiers", ICLR 2022, use the same union over pre-declared
stages).

**Guarantee.** For every true ``p = P[f(x + noise) = cA]`` and *every* stopping rule (any
function of the data, including one chosen by an adversary who knows ``p``), the bound at the
stopping stage ``T`` satisfies ``P[LB_T > p] <= sum_k alpha_k <= alpha``; so the reported radius
``sigma * Phi^-1(LB_T)`` is a valid CERTIFY radius at level ``alpha``.

*Proof sketch.* Let ``E_k = {LB_k > p}``. Each ``LB_k`` is an ordinary Clopper–Pearson bound on a
fixed number ``n_k`` of i.i.d. Bernoulli(p) draws (stage sizes do not depend on the data), so
``P[E_k] <= alpha_k`` (rounded down as in :func:`rsbench.engine.stats.clopper_pearson_lower`). Whatever
``T`` is, ``{LB_T > p} ⊆ ∪_k E_k``, hence ``P[LB_T > p] <= sum_k P[E_k] <= sum_k alpha_k <= alpha``
(Bonferroni). Neither the stopping rule nor the upper bound it uses enters the argument; ``cA``
comes from separate selection draws, so conditioning on it leaves the estimation draws i.i.d.

**Why this bound and not a betting confidence sequence** (Waudby-Smith & Ramdas, JRSS-B 2024):

* *exact at every stage:* each ``LB_k`` is the exact binomial bound (no asymptotics, no sub-Gaussian
  or bounded-variance relaxation), and it reuses the directed rounding of
  :func:`rsbench.engine.stats.clopper_pearson_lower`, whose accuracy is tested against mpmath;
* *numerically robust to alpha = 1e-10 and below:* ``scipy.stats.beta.ppf`` at ``alpha_k``; a
  betting CS needs a root search over running products of wealth, whose threshold ``1/alpha``
  (1e10) and near-unanimous votes (``p`` within 1e-5 of 1) make it fragile in float64;
* *tight where stopping happens:* the price of stopping anywhere is ``alpha -> alpha_k``, a
  ``log K`` penalty in the exponent only. Near-unanimous images (the ones that stop early) have
  ``LB ≈ alpha_k ** (1/n_k)``, so the samples they need to certify a radius grow by the factor
  ``log(1/alpha_k) / log(1/alpha)``: 1.56 for ``alpha = 0.001`` and the default plan's
  ``alpha_k = alpha / 48`` on its 24 early stages. A betting CS instead widens the interval by a
  constant factor at every ``n`` to be valid at all ``n``, including sizes we never stop at.

**Radius lost at n_max** (default plan: 25 stages 500 x 1.25^k up to ``n_max = 100,000``,
``alpha = 0.001``, weighting ``"final-half"``: ``alpha_K = alpha / 2``): a unanimous image reaches
``3.7878 sigma`` instead of fixed-n CERTIFY's ``3.8115 sigma`` (``sigma * (Phi^-1(CP(n, n, alpha))
- Phi^-1(CP(n, n, alpha_K)))`` = 0.024 sigma; with an equal split, ``alpha / 25``, 0.096 sigma;
``alpha / 48``: 0.111 sigma). At ``nA / n = 0.9`` the bound drops by 1.9e-4 (0.0011 sigma of
radius), at 0.99 by 6.7e-5 (0.0023 sigma). A grid radius below the cap is lost only by images whose
``pA`` lies within that margin of its threshold.

The stopping rule (:func:`decide`)
----------------------------------
With ``r_top`` the largest grid radius the plan can certify at all (the largest grid radius at or
below ``max_k sigma * Phi^-1(CP(n_k, n_k, alpha_k))``), an image stops at stage ``k`` when

(a) ``LB_k`` certifies ``r_top`` (reason :attr:`StopReason.TOP`): more samples cannot certify more
    of the grid;
(b) the smallest grid radius ``r_next`` that ``LB_k`` does not certify yet is ruled out: an upper
    Clopper–Pearson bound ``UB_k`` at level ``futility_alpha`` lies below the vote frequency that
    ``r_next`` needs (reason :attr:`StopReason.FUTILE`; :attr:`StopReason.ABSTAIN` when
    ``r_next = 0``, i.e. the image would abstain). That frequency is, with ``futility="reachable"``
    (the default), ``c* / n_max`` for the smallest count ``c*`` whose last-stage bound certifies
    ``r_next`` (the answer at ``n_max`` cannot include ``r_next`` unless the votes reach it), or,
    with ``futility="threshold"``, ``Phi(r_next / sigma)`` itself (stops later);
(c) ``n_k = n_max`` (reason :attr:`StopReason.N_MAX`).

Rule (b) only decides *when* to stop; soundness never depends on it or on ``futility_alpha`` (the
proof above holds for every stopping rule). A futility stop can only cost accuracy: an image whose
``pA`` is above the needed frequency is stopped at stage ``k`` with probability at most
``futility_alpha``. The default ``futility_alpha = 0.1`` was tuned on Cohen et al.'s CIFAR-10
ResNet-110 logs (``bench/sequential.py``, simulated: about 0.4 points of certified accuracy lost at
the worst grid radius, against 0.25 at 0.05 and 0.9 at 0.2; ``None`` uses each stage's
``alpha_k``, the most cautious choice).

The reported radius is ``sigma * Phi^-1(LB_T)`` (:func:`rsbench.engine.stats.radius_from_bound`), 0 when
``LB_T < 1/2`` (abstain).

Driving it
----------
* a run: :class:`SequentialSpec` (n_max, the grid, the plan's shape; part of the run identity)
  gives each stage's plan at its sigma and alpha; ``certify_batch(..., sequential=spec)`` of
  :mod:`rsbench.engine.smoothing` and :mod:`rsbench.engine.dual` draws the blocks
  (:func:`rsbench.engine.smoothing.sequential_votes`), each image's samples a prefix of its
  estimation stream (:mod:`rsbench.engine.sampling`);
* a cascade (:func:`rsbench.engine.cascade.certify_sequential`): each stage's plan measures radii
  from ``p0`` (``level``, :func:`level_radius`) and its caps use plans on the complement of the
  largest other-class count from ``1 - p0``; the same union argument covers every stage;
* live, block by block: :class:`SequentialState` (``pending()``, ``next_block()``, ``update()``,
  ``result()``), one per batch of images, each image at its own stage;
* offline from cumulative counts per stage: :func:`certify_cumulative`; from a draw callback:
  :func:`run_sequential`;
* simulation from known ``pA``: :func:`simulate_counts` (Binomial increments, seeded NumPy
  ``Generator``), :func:`simulate` and, for comparison on the same draws, :func:`fixed_from_counts`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm

# The one import from rsbench.
from rsbench.engine.stats import clopper_pearson_lower, clopper_pearson_upper, radius_from_bound

#: Name of the bound in a run's identity.
BOUND_NAME = "clopper-pearson-union"
#: How the plan splits alpha over its stages (see :func:`split_alpha`).
WEIGHTINGS = ("equal", "final-half", "proportional")
#: Default first block and growth ratio of :meth:`SequentialPlan.geometric`.
DEFAULT_FIRST = 500
DEFAULT_RATIO = 1.25
DEFAULT_WEIGHTING = "final-half"
#: Default level of the futility upper bound (rule (b)); it does not affect soundness.
DEFAULT_FUTILITY_ALPHA = 0.1


#: What rule (b) compares the upper bound with (see :class:`SequentialPlan`).
FUTILITY = ("reachable", "threshold")


class StopReason(IntEnum):
    """Why an image stopped (0: it has not)."""

    RUNNING = 0
    #: the lower bound certifies the largest grid radius the plan can reach
    TOP = 1
    #: the upper bound rules out the next grid radius (> 0)
    FUTILE = 2
    #: the upper bound is below 1/2: the image abstains (the next grid radius is 0)
    ABSTAIN = 3
    #: the last stage, n_max
    N_MAX = 4


def split_alpha(alpha: float, stage_sizes: Sequence[int], weighting: str) -> tuple[float, ...]:
    """Split ``alpha`` over the stages; the float64 values sum to at most ``alpha`` exactly.

    ``"equal"``: ``alpha / K`` each. ``"final-half"`` (the default): ``alpha / 2`` on the last stage,
    ``alpha / (2 (K - 1))`` on each earlier one: images that run to ``n_max`` are the borderline
    ones, whose grid radius depends on the bound's level, while images that stop early are clear-cut
    and pay only ``log(1/alpha_k)`` in samples. ``"proportional"``: proportional to each stage's new
    samples ``n_k - n_{k-1}`` (most mass on the large late stages).
    """
    k = len(stage_sizes)
    if weighting == "equal":
        weights = [1.0] * k
    elif weighting == "final-half":
        weights = [1.0] if k == 1 else [1.0 / (k - 1)] * (k - 1) + [1.0]
    elif weighting == "proportional":
        sizes = [0, *stage_sizes]
        weights = [float(b - a) for a, b in zip(sizes, sizes[1:])]
    else:
        raise ValueError(f"alpha weighting {weighting!r} is unknown; use one of {WEIGHTINGS}")
    alpha = _check_alpha(alpha)
    total = math.fsum(weights)
    alphas = [alpha * w / total for w in weights]
    # Rounding may leave the float sum a few ulps above alpha: step the values down until it is not.
    while sum(map(Fraction, alphas)) > Fraction(alpha):
        alphas = [math.nextafter(a, 0.0) for a in alphas]
    return tuple(alphas)


def geometric_stages(
    n_max: int, first: int = DEFAULT_FIRST, ratio: float = DEFAULT_RATIO
) -> tuple[int, ...]:
    """Cumulative stage sizes ``first, first * ratio, ...`` (rounded) below ``n_max``, then ``n_max``."""
    if isinstance(n_max, bool) or not (isinstance(n_max, (int, np.integer)) and n_max >= 1):
        raise ValueError(f"n_max {n_max!r} is not allowed; use an integer >= 1, e.g. 100000")
    if isinstance(first, bool) or not (isinstance(first, (int, np.integer)) and first >= 1):
        raise ValueError(
            f"first stage size {first!r} is not allowed; use an integer >= 1, e.g. 1000"
        )
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, (float, int, np.number))
        or not (math.isfinite(ratio) and ratio > 1.0)
    ):
        raise ValueError(f"stage ratio {ratio!r} is not allowed; use a number > 1, e.g. 2")
    sizes: list[int] = []
    size = float(first)
    while round(size) < n_max:
        if not sizes or round(size) > sizes[-1]:
            sizes.append(int(round(size)))
        size *= ratio
    sizes.append(int(n_max))
    return tuple(sizes)


def level_radius(lower: ArrayLike, sigma: float, level: float = 0.5) -> np.ndarray:
    """The radius a lower bound ``lower`` on a probability certifies against the threshold
    ``level``: ``sigma * (Phi^-1(lower) - Phi^-1(level))`` where ``lower >= level``, else 0.

    ``level = 1/2`` is CERTIFY's radius (:func:`rsbench.engine.stats.radius_from_bound`, used as is);
    a cascade stage answers against ``p0`` and its cap is this radius of the complement of the
    largest other-class probability against ``1 - p0`` (:mod:`rsbench.engine.cascade`)."""
    if level == 0.5:
        return radius_from_bound(lower, sigma)
    lower = np.asarray(lower, dtype=np.float64)
    radius = sigma * (norm.ppf(np.clip(lower, level, 1.0)) - norm.ppf(level))
    return np.where(lower >= level, radius, 0.0)


def _final_frequencies(
    radii: Sequence[float], n: int, alpha: float, sigma: float, level: float = 0.5
) -> np.ndarray:
    """Per radius, ``c / n`` for the smallest count ``c`` whose bound at ``(n, alpha)`` certifies it
    (``radius >= r`` and bound ``>= level``); 0 where no count does (the threshold then applies).
    Bisection on the bound, which is monotone in the count."""
    out = np.zeros(len(radii))
    for j, r in enumerate(radii):
        lo, hi = 0, n  # invariant: hi certifies (checked first), lo - 1 does not
        if not _certifies(hi, n, alpha, sigma, r, level):
            continue
        while lo < hi:
            mid = (lo + hi) // 2
            if _certifies(mid, n, alpha, sigma, r, level):
                hi = mid
            else:
                lo = mid + 1
        out[j] = hi / n
    return out


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (float, int, np.number)):
        raise ValueError(f"alpha {alpha!r} is not allowed; use a number 0 < alpha < 1, e.g. 0.001")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha {alpha!r} is not allowed; use 0 < alpha < 1, e.g. 0.001")
    return float(alpha)


def _certifies(
    count: int, n: int, alpha: float, sigma: float, r: float, level: float = 0.5
) -> bool:
    lower = clopper_pearson_lower(count, n, alpha)
    return bool(lower >= level and level_radius(lower, sigma, level) >= r)


@dataclass(frozen=True)
class SequentialPlan:
    """Everything the sequential rule needs, declared before any sample is drawn.

    ``stage_sizes``: cumulative estimation sample counts ``n_1 < ... < n_K = n_max``.
    ``stage_alphas``: the failure probability of each stage's bound, ``sum <= alpha`` exactly.
    ``radii``: the radius grid the rule stops on (sorted, unique, ``>= 0``). ``sigma``: the noise.
    ``alpha``: the total failure probability. ``futility_alpha``: level of the upper bound of
    stopping rule (b) (None: each stage's ``alpha_k``); ``futility``: what that bound is compared
    with (``"reachable"`` or ``"threshold"``, see the module docstring). Neither affects soundness.
    ``weighting``: how ``stage_alphas`` were made (recorded in the identity only; "custom" when
    given directly). ``level``: the probability a radius is measured from (:func:`level_radius`;
    1/2, CERTIFY's, unless a cascade stage's ``p0`` or cap asks for another). Build one with :meth:`geometric`; the constructor validates (``ValueError``).
    """

    stage_sizes: tuple[int, ...]
    stage_alphas: tuple[float, ...]
    radii: tuple[float, ...]
    sigma: float
    alpha: float
    futility_alpha: float | None = DEFAULT_FUTILITY_ALPHA
    futility: str = "reachable"
    weighting: str = "custom"
    level: float = 0.5
    _thresholds: np.ndarray = field(init=False, repr=False, compare=False)
    _top: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # noqa: C901, PLR0912 — one refusal per field, each with its own message
        sizes = tuple(self.stage_sizes)
        if not sizes:
            raise ValueError("stage sizes are empty; give at least one, e.g. (1000, 2000, 100000)")
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
                raise ValueError(f"stage size {s!r} is not allowed; use integers >= 1")
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(
                f"stage sizes {list(sizes)} are not strictly increasing; they are cumulative "
                "sample counts n_1 < n_2 < ... < n_max"
            )
        _check_alpha(self.alpha)
        alphas = tuple(float(a) for a in self.stage_alphas)
        if len(alphas) != len(sizes):
            raise ValueError(
                f"{len(alphas)} stage alphas for {len(sizes)} stages; give one alpha per stage"
            )
        for a in alphas:
            if not (math.isfinite(a) and 0.0 < a < 1.0):
                raise ValueError(f"stage alpha {a!r} is not allowed; use 0 < alpha_k < 1")
        if sum(map(Fraction, alphas)) > Fraction(float(self.alpha)):
            raise ValueError(
                f"stage alphas sum to {math.fsum(alphas)!r} > alpha = {self.alpha!r}; the union "
                "bound needs sum(alpha_k) <= alpha (use split_alpha)"
            )
        sigma = self.sigma
        if not isinstance(sigma, (float, int, np.number)) or isinstance(sigma, bool):
            raise ValueError(f"sigma {sigma!r} is not allowed; use a number > 0")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma {self.sigma!r} is not allowed; use a number > 0")
        radii = tuple(float(r) for r in self.radii)
        if not radii:
            raise ValueError("the radius grid is empty; give at least one radius, e.g. (0, 0.25)")
        if any(not math.isfinite(r) or r < 0 for r in radii):
            raise ValueError(f"radii {list(radii)} are not all finite numbers >= 0")
        if any(b <= a for a, b in zip(radii, radii[1:])):
            raise ValueError(f"radii {list(radii)} are not strictly increasing")
        if self.futility_alpha is not None and not (0.0 < self.futility_alpha < 1.0):
            raise ValueError(
                f"futility alpha {self.futility_alpha!r} is not allowed; use 0 < value < 1 or None"
            )
        if self.futility not in FUTILITY:
            raise ValueError(f"futility {self.futility!r} is unknown; use one of {FUTILITY}")
        if not (isinstance(self.level, (float, int)) and 0.0 < float(self.level) < 1.0):
            raise ValueError(f"level {self.level!r} is not allowed; use 0 < level < 1, e.g. 0.5")
        object.__setattr__(self, "level", float(self.level))
        reach = float(
            np.max(
                level_radius(clopper_pearson_lower(sizes, sizes, alphas), self.sigma, self.level)
            )
        )
        if radii[0] > reach:
            raise ValueError(
                f"no grid radius is reachable: the smallest, {radii[0]:g}, exceeds the largest "
                f"radius these stages can certify ({reach:.4g} at sigma = {self.sigma:g}); use "
                "a grid starting lower or a larger n_max"
            )
        object.__setattr__(self, "stage_sizes", tuple(int(s) for s in sizes))
        object.__setattr__(self, "stage_alphas", alphas)
        object.__setattr__(self, "radii", radii)
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "alpha", float(self.alpha))
        if self.level == 0.5:
            thresholds = norm.cdf(np.asarray(radii) / self.sigma)
        else:
            thresholds = norm.cdf(np.asarray(radii) / self.sigma + norm.ppf(self.level))
        if self.futility == "reachable":
            thresholds = np.maximum(
                thresholds,
                _final_frequencies(radii, sizes[-1], alphas[-1], self.sigma, self.level),
            )
        object.__setattr__(self, "_thresholds", thresholds)
        object.__setattr__(self, "_top", int(np.searchsorted(radii, reach, side="right")) - 1)

    @classmethod
    def geometric(
        cls,
        *,
        n_max: int,
        alpha: float,
        sigma: float,
        radii: Sequence[float],
        first: int = DEFAULT_FIRST,
        ratio: float = DEFAULT_RATIO,
        weighting: str = DEFAULT_WEIGHTING,
        futility_alpha: float | None = DEFAULT_FUTILITY_ALPHA,
        futility: str = "reachable",
        level: float = 0.5,
    ) -> SequentialPlan:
        """A plan with :func:`geometric_stages` and :func:`split_alpha`. The defaults (first block
        500, ratio 1.25, ``"final-half"``, ``futility_alpha = 0.1``, ``"reachable"``) were tuned on
        Cohen et al.'s CIFAR-10 logs at ``n_max = 100,000`` (``bench/sequential.py``)."""
        sizes = geometric_stages(n_max, first, ratio)
        return cls(
            stage_sizes=sizes,
            stage_alphas=split_alpha(_check_alpha(alpha), sizes, weighting),
            radii=tuple(sorted(float(r) for r in radii)),
            sigma=sigma,
            alpha=alpha,
            futility_alpha=futility_alpha,
            futility=futility,
            weighting=weighting,
            level=level,
        )

    # ----------------------------------------------------------------------------- properties

    @property
    def num_stages(self) -> int:
        return len(self.stage_sizes)

    @property
    def n_max(self) -> int:
        return self.stage_sizes[-1]

    @property
    def top_radius(self) -> float:
        """The largest grid radius the plan can certify (rule (a) stops once it is certified)."""
        return self.radii[self._top]

    def block_size(self, stage: int) -> int:
        """New samples stage ``stage`` (0-based) draws: ``n_stage - n_{stage - 1}``."""
        return self.stage_sizes[stage] - (self.stage_sizes[stage - 1] if stage > 0 else 0)

    def identity(self) -> dict[str, Any]:
        """The fields that enter a run's identity (JSON-ready; floats kept at full precision)."""
        return {
            "estimation": "sequential",
            "bound": BOUND_NAME,
            "n_max": self.n_max,
            "stage_sizes": list(self.stage_sizes),
            "alpha": self.alpha,
            "stage_alphas": list(self.stage_alphas),
            "alpha_weighting": self.weighting,
            "futility": self.futility,
            "futility_alpha": self.futility_alpha,
            "radii": list(self.radii),
            "sigma": self.sigma,
            **({} if self.level == 0.5 else {"level": self.level}),
        }


# --------------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class Decision:
    """:func:`decide`'s answer per image: stop or not, why, and the bound and radius at the stage."""

    stop: np.ndarray  # bool
    reason: np.ndarray  # int8, StopReason values
    lower: np.ndarray  # LB_k
    radius: np.ndarray  # sigma * (Phi^-1(LB_k) - Phi^-1(level)), 0 = abstain


def certified_on_grid(plan: SequentialPlan, lower: ArrayLike) -> np.ndarray:
    """How many grid radii (from the smallest) ``lower`` certifies: ``radius >= r`` and
    ``LB >= plan.level`` (1/2 for CERTIFY)."""
    lower = np.asarray(lower, dtype=np.float64)
    radius = level_radius(lower, plan.sigma, plan.level)
    count = np.searchsorted(np.asarray(plan.radii), radius, side="right")
    return np.where(lower >= plan.level, count, 0)


def decide(plan: SequentialPlan, nA: ArrayLike, stage: ArrayLike) -> Decision:
    """The stopping rule at ``stage`` (0-based; scalar or per image) for cumulative counts ``nA``.

    ``nA`` counts the votes for ``cA`` among the first ``plan.stage_sizes[stage]`` estimation
    samples. See the module docstring for rules (a)-(c); the bound is valid whatever is done with
    the decision.
    """
    nA = np.asarray(nA, dtype=np.int64)
    stage = np.broadcast_to(np.asarray(stage, dtype=np.int64), nA.shape)
    if np.any((stage < 0) | (stage >= plan.num_stages)):
        raise ValueError(f"stage outside 0..{plan.num_stages - 1}")
    n = np.asarray(plan.stage_sizes, dtype=np.int64)[stage]
    if np.any((nA < 0) | (nA > n)):
        raise ValueError("nA outside 0..n_k at some image")
    alphas = np.asarray(plan.stage_alphas)[stage]
    lower = clopper_pearson_lower(nA, n, alphas)
    radius = level_radius(lower, plan.sigma, plan.level)
    certified = certified_on_grid(plan, lower)  # grid radii certified: indices < certified
    top = certified > plan._top
    futility_alpha = alphas if plan.futility_alpha is None else plan.futility_alpha
    upper = clopper_pearson_upper(nA, n, futility_alpha)
    next_index = np.minimum(certified, len(plan.radii) - 1)
    futile = ~top & (upper < plan._thresholds[next_index])
    last = stage == plan.num_stages - 1
    reason = np.full(nA.shape, StopReason.RUNNING, dtype=np.int8)
    reason[last] = StopReason.N_MAX
    reason[futile] = np.where(certified[futile] == 0, StopReason.ABSTAIN, StopReason.FUTILE)
    reason[top] = StopReason.TOP
    return Decision(stop=reason != StopReason.RUNNING, reason=reason, lower=lower, radius=radius)


# ---------------------------------------------------------------------------- driving the rule


@dataclass(frozen=True)
class SequentialResult:
    """Per image at stopping: stage index, samples used, votes, bound, radius, reason."""

    stage: np.ndarray  # int64, 0-based stopping stage
    samples: np.ndarray  # int64, estimation samples drawn (n at the stopping stage)
    nA: np.ndarray  # int64
    lower: np.ndarray  # float64, LB at stopping
    radius: np.ndarray  # float64, 0 = abstain
    reason: np.ndarray  # int8, StopReason values


class SequentialState:
    """Per-image state of sequential estimation for a batch of images, advanced block by block.

    The live engine loop::

        state = SequentialState(plan, num_images)
        while not state.done:
            idx = state.pending()                  # images still drawing
            blocks = state.next_block(idx)         # new samples each must draw now
            votes = ...                            # votes for cA among those new samples
            state.update(idx, votes)
        result = state.result()

    Images advance independently (each has its own stage), so the engine may interleave them.
    """

    def __init__(self, plan: SequentialPlan, num_images: int) -> None:
        self.plan = plan
        self._sizes = np.asarray(plan.stage_sizes, dtype=np.int64)
        self.completed = np.zeros(num_images, dtype=np.int64)  # stages completed per image
        self.nA = np.zeros(num_images, dtype=np.int64)
        self.reason = np.zeros(num_images, dtype=np.int8)
        self.lower = np.zeros(num_images, dtype=np.float64)
        self.radius = np.zeros(num_images, dtype=np.float64)

    @property
    def done(self) -> bool:
        return bool(np.all(self.reason != StopReason.RUNNING))

    def pending(self) -> np.ndarray:
        """Indices of the images that have not stopped."""
        return np.flatnonzero(self.reason == StopReason.RUNNING)

    def next_block(self, indices: ArrayLike) -> np.ndarray:
        """New estimation samples each of ``indices`` (pending images) draws for its next stage."""
        indices = np.asarray(indices, dtype=np.int64)
        if np.any(self.reason[indices] != StopReason.RUNNING):
            raise ValueError("next_block asked for an image that has stopped")
        done = self.completed[indices]
        return self._sizes[done] - np.where(done > 0, self._sizes[np.maximum(done - 1, 0)], 0)

    def update(self, indices: ArrayLike, votes: ArrayLike) -> Decision:
        """Add ``votes`` (for ``cA``, among each image's :meth:`next_block` new samples) and apply
        the stopping rule at the stage each image just completed."""
        indices = np.asarray(indices, dtype=np.int64)
        votes = np.asarray(votes, dtype=np.int64)
        if np.unique(indices).size != indices.size:
            raise ValueError("update got an image twice")
        if votes.shape != indices.shape or np.any(votes < 0):
            raise ValueError("votes must be non-negative counts, one per index")
        blocks = self.next_block(indices)
        if np.any(votes > blocks):
            raise ValueError("more votes than samples in the block")
        stage = self.completed[indices]
        nA = self.nA[indices] + votes
        decision = decide(self.plan, nA, stage)
        self.nA[indices] = nA
        self.completed[indices] = stage + 1
        self.reason[indices] = decision.reason
        self.lower[indices] = decision.lower
        self.radius[indices] = decision.radius
        return decision

    def result(self) -> SequentialResult:
        if not self.done:
            raise ValueError(f"{self.pending().size} images have not stopped yet")
        stage = self.completed - 1
        return SequentialResult(
            stage=stage,
            samples=self._sizes[stage],
            nA=self.nA.copy(),
            lower=self.lower.copy(),
            radius=self.radius.copy(),
            reason=self.reason.copy(),
        )


def run_sequential(
    plan: SequentialPlan, num_images: int, draw: Callable[[np.ndarray, np.ndarray], ArrayLike]
) -> SequentialResult:
    """Run the rule with ``draw(indices, block_sizes) -> votes for cA`` supplying each block."""
    state = SequentialState(plan, num_images)
    while not state.done:
        indices = state.pending()
        state.update(indices, draw(indices, state.next_block(indices)))
    return state.result()


def certify_cumulative(plan: SequentialPlan, cumulative: ArrayLike) -> SequentialResult:
    """The rule on precomputed counts: ``cumulative[i, k]`` = votes for ``cA`` of image ``i`` among
    its first ``plan.stage_sizes[k]`` samples (shape ``(images, K)``, non-decreasing in ``k``)."""
    cumulative = np.asarray(cumulative, dtype=np.int64)
    if cumulative.ndim != 2 or cumulative.shape[1] != plan.num_stages:
        raise ValueError(f"cumulative counts must have shape (images, {plan.num_stages})")
    increments = np.diff(cumulative, axis=1, prepend=0)
    if np.any(increments < 0):
        raise ValueError("cumulative counts decrease along the stages")
    state = SequentialState(plan, cumulative.shape[0])
    while not state.done:
        indices = state.pending()
        state.update(indices, increments[indices, state.completed[indices]])
    return state.result()


# ------------------------------------------------------------------------------- simulation


def simulate_counts(plan: SequentialPlan, p: ArrayLike, rng: np.random.Generator) -> np.ndarray:
    """Cumulative votes at every stage for images whose true top-class probability is ``p``:
    independent Binomial increments per stage block (shape ``(images, K)``)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p) | (p < 0) | (p > 1)):
        raise ValueError("p must be a 1-d array of probabilities in [0, 1]")
    blocks = np.array([plan.block_size(k) for k in range(plan.num_stages)], dtype=np.int64)
    increments = rng.binomial(blocks[np.newaxis, :], p[:, np.newaxis])
    return np.cumsum(increments, axis=1)


def simulate(plan: SequentialPlan, p: ArrayLike, rng: np.random.Generator) -> SequentialResult:
    """Sequential certification of images with true probabilities ``p`` (seeded ``rng``)."""
    return certify_cumulative(plan, simulate_counts(plan, p, rng))


def fixed_from_counts(plan: SequentialPlan, cumulative: ArrayLike) -> np.ndarray:
    """Fixed-n CERTIFY radii at ``n_max`` and the full ``alpha`` on the same draws (last column)."""
    cumulative = np.asarray(cumulative, dtype=np.int64)
    return radius_from_bound(
        clopper_pearson_lower(cumulative[:, -1], plan.n_max, plan.alpha), plan.sigma
    )


# ------------------------------------------------------------------------ a run's estimation


#: ``--estimation`` values: Cohen's fixed n, or this module's sequential rule.
ESTIMATIONS = ("fixed", "sequential")
#: Stop reasons as recorded in result rows (``stop_reason``).
REASON_NAMES: dict[int, str] = {
    StopReason.TOP: "top",
    StopReason.FUTILE: "futile",
    StopReason.ABSTAIN: "abstain",
    StopReason.N_MAX: "n_max",
}


@dataclass(frozen=True)
class SequentialSpec:
    """A run's sequential estimation, declared before any sample is drawn: ``n_max``, the radius
    grid it stops on and the plan's shape (:meth:`SequentialPlan.geometric`'s arguments).

    The same spec serves every stage of a model (an expert, a dual model's router and expert
    stages, a cascade's stages): :meth:`plan` builds the stage's :class:`SequentialPlan` at that
    stage's sigma and alpha (and level: a cascade's p0), so each stage's bound holds at its own
    level and the stages compose exactly as fixed-n stages do (a dual certificate's union bound
    over router and expert, a cascade's over its answer and cap bounds, is unchanged).
    """

    n_max: int
    radii: tuple[float, ...]
    first: int = DEFAULT_FIRST
    ratio: float = DEFAULT_RATIO
    weighting: str = DEFAULT_WEIGHTING
    futility_alpha: float | None = DEFAULT_FUTILITY_ALPHA
    futility: str = "reachable"

    def __post_init__(self) -> None:
        geometric_stages(self.n_max, self.first, self.ratio)  # validates
        radii = tuple(sorted({float(r) for r in self.radii}))
        if not radii or any(not math.isfinite(r) or r < 0 for r in radii):
            raise ValueError(f"radii {list(self.radii)} must be finite numbers >= 0, at least one")
        object.__setattr__(self, "radii", radii)
        object.__setattr__(self, "n_max", int(self.n_max))

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        return geometric_stages(self.n_max, self.first, self.ratio)

    def plan(self, alpha: float, sigma: float, level: float = 0.5) -> SequentialPlan:
        """The stage plan at ``alpha`` and ``sigma`` (cached: plans are immutable); ``level``:
        the probability radii are measured from (:func:`level_radius`; cascades)."""
        return _plan(self, float(alpha), float(sigma), float(level))

    def identity(self) -> dict[str, Any]:
        """What enters a run's identity: the estimation mode, its bound, stage sizes, n_max, the
        alpha weighting, the futility rule and the grid (alpha and sigma are in the run's own)."""
        return {
            "estimation": "sequential",
            "bound": BOUND_NAME,
            "n_max": self.n_max,
            "stage_sizes": list(self.stage_sizes),
            "alpha_weighting": self.weighting,
            "futility": self.futility,
            "futility_alpha": self.futility_alpha,
            "radii": list(self.radii),
        }


_PLANS: dict[tuple[SequentialSpec, float, float, float], SequentialPlan] = {}


def _plan(spec: SequentialSpec, alpha: float, sigma: float, level: float) -> SequentialPlan:
    key = (spec, alpha, sigma, level)
    if key not in _PLANS:
        _PLANS[key] = SequentialPlan.geometric(
            n_max=spec.n_max,
            alpha=alpha,
            sigma=sigma,
            radii=spec.radii,
            first=spec.first,
            ratio=spec.ratio,
            weighting=spec.weighting,
            futility_alpha=spec.futility_alpha,
            futility=spec.futility,
            level=level,
        )
    return _PLANS[key]


def stage_of(plan: SequentialPlan, samples: ArrayLike) -> np.ndarray:
    """The stage index whose cumulative size is ``samples`` (-1 where none is)."""
    samples = np.asarray(samples, dtype=np.int64)
    sizes = np.asarray(plan.stage_sizes, dtype=np.int64)
    found = np.searchsorted(sizes, samples)
    inside = found < sizes.size
    ok = inside & (sizes[np.minimum(found, sizes.size - 1)] == samples)
    return np.where(ok, found, -1)

"""Cascaded (multiscale) randomized smoothing (Jeong & Shin, NeurIPS 2023) over fixed-sigma experts.

Experts ``E_1..E_K`` are smoothed at noise levels ``sigma_1 > ... > sigma_K`` (largest first). The
cascade classifier ``G`` answers with the first stage that is confident: ``G(x) = c`` for the first
``k`` with ``p_k^c(x) > p0``, where ``p_k^c(x) = P[E_k(x + d) = c]``, ``d ~ N(0, sigma_k^2 I)``;
``G`` abstains when no stage is. ``p0 >= 1/2`` (default 1/2), so at most one class per stage can
pass the threshold.

CASCADE CERTIFY(x) (the authors' reference code, jh-jeong/smoothing-multiscale ``certify.py`` and
``third_party/core_mdds.py``, read and re-derived, not copied):

1. Stage k (largest sigma first) draws ``n0`` selection samples (top class ``cA``) and ``n`` fresh
   estimation samples; ``L``/``U`` are one-sided Clopper-Pearson lower/upper bounds on ``p_k^cA``.
   If ``L >= p0`` the stage answers ``cA`` with radius ``sigma_k * (Phi^-1(L) - Phi^-1(p0))``; if
   ``U < p0`` the cascade moves to the next smaller sigma; otherwise (or after the last stage) it
   abstains.
2. The answer ``c`` of stage k is capped by every earlier stage j < k:
   ``sigma_j * (Phi^-1(p0) - Phi^-1(pB_j))`` where ``pB_j`` is an upper bound on
   ``max_{c' != c} p_j^{c'}(x)`` (simultaneous over classes: the largest of the per-class
   Clopper-Pearson upper bounds at level ``alpha_cap / C``, a Bonferroni bound over the ``C``
   classes, valid whatever class later stages answer). A cap <= 0 abstains.

Why the radius is sound (given the bounds): ``Phi^-1(p(x + e))`` is ``1/sigma``-Lipschitz in ``e``
for any smoothed probability (Salman et al. 2019), so for ``||e|| < R``: stage k keeps
``p_k^c > p0`` (first term), and no earlier stage reaches ``p0`` in another class (caps); hence
``G(x + e)`` is ``c`` (from stage k, or from an earlier stage confident in ``c``). The move-on
decision needs no guarantee: a wrong "move on" is covered by the caps.

Alpha split (``alpha_split``):

* ``"union"`` (default) -- sound for ANY input. The bounds that may be used are the answer bound
  of each of the ``K`` stages and the cap bound of each of the first ``K - 1`` stages. Each gets
  ``alpha / (2K - 1)``, independent of the data, so the union bound over all ``2K - 1`` possible
  events gives a failure probability <= alpha, whichever path the samples take (no independence
  between stages is needed). With one stage it is plain CERTIFY at ``alpha`` and ``p0 = 1/2``.
* ``"reference"`` -- the reference code's budget: the cascade that stops at stage k (0-based)
  computes its answer bound and every earlier stage's cap at ``alpha / (k + 1)`` (the stage's
  decision too). On each path the bounds used sum to alpha, but the path is chosen by the samples:
  a union over every bound that may be used sums to ``K * alpha``, so this split is NOT covered by
  the union bound for every input, and it does fail: two stages, three classes, n = 40,
  alpha = 0.2, stage 0 at (0.52, 0.43, 0.05), stage 1 answering class 1 with 0.95 -- the exact
  probability of an unsound certificate, over every possible pair of count vectors, is 0.207 >
  alpha under this split and below alpha under ``union``
  (``tests/test_cascade.py::test_union_split_holds_alpha_where_the_reference_split_does_not``).
  It is offered to reproduce the published numbers and is recorded as
  ``alpha_split = "reference"`` in the results. (The reference computes caps with
  Goodman's asymptotic multinomial intervals; this module uses its exact Bonferroni bounds for both
  splits, so only the budget differs.)

Every stage's counts are kept (:class:`CascadeCertificate`) and :func:`combine_cascade` recomputes
every decision from them (another alpha, p0 or split), so cascades re-score offline. A stage that
was not run during the live certificate makes a re-scored row abstain (always sound). The samples
an image used vary per input: ``stages_run * (n0 + n)``.

Sequential estimation (``sequential=``, union split only): every stage's estimation stops early
on the radius grid and earlier stages resume only for their caps; the guarantee above holds
unchanged because each answer and cap bound is a staged Clopper-Pearson bound at the same share
(:func:`certify_sequential`: the rule, the guarantee and its proof sketch).

Noise: stage k draws its selection and estimation samples from the ``select`` / ``estimate``
streams of each sample's :class:`rsbench.engine.noise.NoiseKey` with ``stage = k`` (fresh for each stage;
stage 0's streams are those of a single-expert certificate of the same sample, so the first stage
reproduces that expert's counts exactly).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

from rsbench.engine import stats
from rsbench.engine.noise import UNNAMED_DATASET, noise_keys
from rsbench.engine.sampling import StreamCursor
from rsbench.engine.sequential import REASON_NAMES, SequentialSpec, certified_on_grid, decide
from rsbench.engine.smoothing import CertifiesOne, SmoothedClassifier, check_sequential
from rsbench.errors import (
    DEFAULT_ALPHA_SPLIT,
    DEFAULT_P0,
    ConfigError,
    check_alpha,
    check_alpha_split,
    check_count,
    check_p0,
    check_sigma,
)

logger = logging.getLogger(__name__)


def answer_alpha(alpha: float, stage: int, stages: int, split: str) -> float:
    """Alpha of stage ``stage``'s answer bound (and its decision) under ``split``."""
    if split == "union":
        return alpha / (2 * stages - 1)
    return alpha / (stage + 1)


def cap_alpha(alpha: float, stage: int, answering: int, stages: int, split: str) -> float:
    """Alpha of stage ``stage``'s cap bound when stage ``answering`` answers (Bonferroni over classes inside)."""
    if split == "union":
        return alpha / (2 * stages - 1)
    return alpha / (answering + 1)


@dataclass(frozen=True)
class CascadeCertificate:
    """Result of CASCADE CERTIFY for one image, every stage that ran recorded for re-scoring.

    ``prediction == -1`` means abstain (radius 0). ``stage`` is the stage that answered (-1 when
    none did). ``stage_sigmas`` lists every stage's sigma (all ``K``, largest first: the union
    split depends on ``K``); the other per-stage tuples have one value per stage that ran
    (``stages_run`` of them), in cascade order. ``stage_radius`` holds the answering stage's own radius
    and each earlier stage's cap (NaN where not applicable); ``stage_pB_upper`` each earlier
    stage's upper bound on the largest other-class probability (NaN elsewhere).
    """

    prediction: int
    abstained: bool
    radius: float
    alpha: float
    p0: float
    alpha_split: str
    stage: int
    stages_run: int
    samples: int
    sigma: float | None
    stage_sigmas: tuple[float, ...]
    stage_cA: tuple[int, ...]
    stage_count0: tuple[int, ...]
    stage_nA: tuple[int, ...]
    stage_counts: tuple[tuple[int, ...], ...]
    stage_alpha: tuple[float, ...]
    stage_pA_lower: tuple[float, ...]
    stage_pA_upper: tuple[float, ...]
    stage_pB_upper: tuple[float, ...]
    stage_radius: tuple[float, ...]
    n0: int
    n: int
    #: ``fixed``, or ``sequential`` (:func:`certify_sequential`; ``n`` is then n_max): per stage
    #: that ran, the estimation samples drawn, the 0-based stopping stage of its plan and why it
    #: stopped (``stage_alpha`` holds its bound's level); the scalars repeat the answering stage's
    #: values (the last stage run's when the cascade abstains), as the base columns do
    estimation: str = "fixed"
    stage_n_used: tuple[int, ...] | None = None
    stage_stop_stage: tuple[int, ...] | None = None
    stage_stop_reason: tuple[str, ...] | None = None
    n_used: int | None = None
    stop_stage: int | None = None
    stop_reason: str | None = None
    stop_alpha: float | None = None


def combine_cascade(
    stage_cA: np.ndarray,
    stage_nA: np.ndarray,
    stage_counts: np.ndarray,
    ran: np.ndarray,
    n: int | np.ndarray,
    sigmas: Sequence[float],
    alpha: float,
    p0: float = DEFAULT_P0,
    alpha_split: str = DEFAULT_ALPHA_SPLIT,
    *,
    stage_alpha: np.ndarray | None = None,
    path: bool = False,
) -> dict[str, np.ndarray]:
    """Cascade certificates from stored stage counts (vectorised over ``B`` rows, ``K`` stages).

    ``stage_cA``/``stage_nA`` are ``[B, K]``, ``stage_counts`` ``[B, K, C]`` (estimation votes),
    ``ran`` ``[B, K]`` says which stages were run; ``n`` is the estimation count per stage (one
    value, one per row ``[B]``, or one per row and stage ``[B, K]``: sequential rows).
    ``stage_alpha`` (``[B, K]``, sequential rows): the level of each stage's answer bound, which
    replaces ``answer_alpha``; its cap bound then uses it too (divided by the classes), as the union
    split gives both the same share. ``path``: a stage that does not answer moves on exactly when
    the next stage ran (the recorded path; sequential rows, whose live move-on rule is the
    stopping rule's, :func:`certify_sequential`) instead of when its upper bound is below ``p0``.
    Neither changes soundness: every bound that may be used keeps its level. Returns
    ``prediction``, ``abstained``, ``radius``, ``stage`` (answering stage or -1), ``moved``
    (``[B, K]``: the stage decided to move on), ``pA_lower``/``pA_upper``/``stage_alpha``
    (``[B, K]``), ``pB_upper`` and ``cap`` (``[B, K]``, earlier stages of an answer, NaN elsewhere),
    ``own_radius`` (``[B]``, the answering stage's radius).
    """
    alpha = check_alpha(alpha)
    p0 = check_p0(p0)
    check_alpha_split(alpha_split)
    sigma_of = np.asarray([check_sigma(s) for s in sigmas], dtype=np.float64)
    cA = np.atleast_2d(np.asarray(stage_cA, dtype=np.int64))
    nA = np.atleast_2d(np.asarray(stage_nA, dtype=np.int64))
    counts = np.asarray(stage_counts, dtype=np.int64)
    if counts.ndim == 2:
        counts = counts[None]
    ran = np.atleast_2d(np.asarray(ran, dtype=bool))
    rows, stages = cA.shape
    if stages != len(sigmas) or counts.shape[:2] != (rows, stages) or ran.shape != cA.shape:
        raise ConfigError(
            f"stage arrays disagree: cA {cA.shape}, counts {counts.shape}, ran {ran.shape}, "
            f"{len(sigmas)} sigmas"
        )
    classes = counts.shape[2]
    n_of = np.asarray(n, dtype=np.int64)
    if n_of.ndim < 2:
        n_of = np.broadcast_to(np.broadcast_to(n_of, (rows,))[:, None], (rows, stages))
    if n_of.shape != (rows, stages):
        raise ConfigError(f"n has shape {n_of.shape}; give one value, [B] or [B, K] = {cA.shape}")
    if stage_alpha is not None:
        stage_alpha = np.asarray(stage_alpha, dtype=np.float64)
        if stage_alpha.shape != (rows, stages):
            raise ConfigError(f"stage_alpha has shape {stage_alpha.shape}; expected {cA.shape}")
        if alpha_split != "union":
            raise ConfigError(
                "per-stage alphas (sequential rows) need alpha_split 'union'; the reference "
                "split is not covered by a union bound"
            )
    phi_p0 = float(norm.ppf(p0))

    lower = np.full((rows, stages), np.nan)
    upper = np.full((rows, stages), np.nan)
    used_alpha = np.full((rows, stages), np.nan)
    moved = np.zeros((rows, stages), dtype=bool)
    answer_stage = np.full(rows, -1, dtype=np.int64)
    active = ran[:, 0].copy()
    for k in range(stages):
        here = active & ran[:, k]
        a: float | np.ndarray = answer_alpha(alpha, k, stages, alpha_split)
        if stage_alpha is not None:
            a = np.where(here, stage_alpha[:, k], 0.5)
        safe_n = np.where(here, n_of[:, k], 1)
        safe_nA = np.where(here, nA[:, k], 0)
        low = stats.clopper_pearson_lower(safe_nA, safe_n, a)
        high = stats.clopper_pearson_upper(safe_nA, safe_n, a)
        lower[:, k] = np.where(here, low, np.nan)
        upper[:, k] = np.where(here, high, np.nan)
        used_alpha[:, k] = np.where(here, a, np.nan)
        answers = here & (low >= p0)
        answer_stage[answers] = k
        if path:
            goes_on = here & ~answers & (ran[:, k + 1] if k < stages - 1 else False)
        else:
            goes_on = here & ~answers & (high < p0) & (k < stages - 1)
        moved[:, k] = goes_on
        active = goes_on & (ran[:, k + 1] if k + 1 < stages else False)

    answered = answer_stage >= 0
    safe_stage = np.where(answered, answer_stage, 0)
    row_index = np.arange(rows)
    final_class = np.where(answered, cA[row_index, safe_stage], -1)
    own_lower = lower[row_index, safe_stage]
    own_radius = np.where(
        answered,
        sigma_of[safe_stage]
        * (norm.ppf(np.clip(np.nan_to_num(own_lower, nan=p0), p0, 1.0)) - phi_p0),
        0.0,
    )
    pB_upper = np.full((rows, stages), np.nan)
    cap = np.full((rows, stages), np.nan)
    radius = own_radius.copy()
    for j in range(stages - 1):
        affected = answered & (answer_stage > j)
        if not affected.any():
            continue
        if stage_alpha is not None:
            a_cap = np.where(affected, stage_alpha[:, j], 0.5)
        else:
            a_cap = np.array(
                [cap_alpha(alpha, j, int(k), stages, alpha_split) for k in safe_stage],
                dtype=np.float64,
            )
        bounds = stats.clopper_pearson_upper(
            counts[:, j, :], np.where(affected, n_of[:, j], 1)[:, None], (a_cap / classes)[:, None]
        )
        bounds[row_index, np.clip(final_class, 0, classes - 1)] = -np.inf
        largest = bounds.max(axis=1)
        stage_cap = sigma_of[j] * (phi_p0 - norm.ppf(np.clip(largest, 0.0, 1.0)))
        pB_upper[:, j] = np.where(affected, largest, np.nan)
        cap[:, j] = np.where(affected, stage_cap, np.nan)
        radius = np.where(affected, np.minimum(radius, stage_cap), radius)
    blocked = answered & (~(radius >= 0.0) | np.any(cap <= 0.0, axis=1))
    abstained = ~answered | blocked
    radius = np.where(abstained, 0.0, radius)
    return {
        "prediction": np.where(abstained, -1, final_class).astype(np.int64),
        "abstained": abstained,
        "radius": radius,
        "stage": np.where(answered, answer_stage, -1),
        "moved": moved,
        "pA_lower": lower,
        "pA_upper": upper,
        "stage_alpha": used_alpha,
        "pB_upper": pB_upper,
        "cap": cap,
        "own_radius": own_radius,
    }


class CascadeSmoothed(CertifiesOne[CascadeCertificate]):
    """A cascade of smoothed experts, largest sigma first, with confidence threshold ``p0``.

    ``experts[k]`` maps [0, 1] images to ``num_classes`` logits and is smoothed at ``sigmas[k]``;
    the constructor orders them by sigma, largest first (``order`` maps cascade stage to the
    caller's index). See the module docstring for the certificate and the alpha splits.
    """

    def __init__(
        self,
        experts: Sequence[nn.Module],
        sigmas: Sequence[float],
        num_classes: int,
        p0: float = DEFAULT_P0,
        alpha_split: str = DEFAULT_ALPHA_SPLIT,
        batch_size: int = 1000,
        precision: str = "fp32",
        input_shape: Sequence[int] | None = None,
        channels_last: bool = False,
        device: torch.device | str | None = None,
        noise_dtype: str = "auto",
    ) -> None:
        if len(experts) == 0 or len(experts) != len(sigmas):
            raise ConfigError(
                f"got {len(experts)} experts and {len(sigmas)} sigmas; give one sigma per expert (at least one)"
            )
        checked = [check_sigma(s, "expert sigma") for s in sigmas]
        if len(set(checked)) != len(checked):
            raise ConfigError(
                f"cascade sigmas {checked} repeat a value; each stage needs its own noise level"
            )
        self.order = tuple(sorted(range(len(checked)), key=lambda i: -checked[i]))
        self.sigmas = tuple(checked[i] for i in self.order)
        self.p0 = check_p0(p0)
        self.alpha_split = check_alpha_split(alpha_split)
        self.num_classes = check_count(num_classes, "num_classes")
        self.stages = [
            SmoothedClassifier(
                experts[i],
                num_classes,
                checked[i],
                batch_size=batch_size,
                precision=precision,
                input_shape=input_shape,
                channels_last=channels_last,
                device=device,
                noise_dtype=noise_dtype,
            )
            for i in self.order
        ]

    def certify_batch(
        self,
        images: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        seed: int = 0,
        indices: Sequence[int] | None = None,
        *,
        dataset: str = UNNAMED_DATASET,
        split: str = "test",
        stage: int = 0,
        sequential: SequentialSpec | None = None,
    ) -> list[CascadeCertificate]:
        """CASCADE CERTIFY each image; stage k runs only on the images that moved on to it.

        Image ``b`` is the sample ``(dataset, split, indices[b])``; cascade stage k draws from its
        noise keys with ``stage = stage + k`` (purposes ``select`` and ``estimate``). With
        ``sequential`` every stage's estimation stops early (:func:`certify_sequential`; ``n`` must
        be its n_max, and the split ``union``).
        """
        n0, n = check_count(n0, "n0"), check_count(n, "n")
        alpha = check_alpha(alpha)
        images, indices = self.stages[0]._prepare(images, indices)
        if sequential is not None:
            check_sequential(sequential, n)
            run = certify_sequential(
                self, images, list(indices), n0, alpha, seed, dataset, split, stage, sequential
            )
            return _certificates(self, run, n0, n, alpha)
        rows, stages, classes = len(indices), len(self.stages), self.num_classes
        cA = np.zeros((rows, stages), dtype=np.int64)
        count0 = np.zeros((rows, stages), dtype=np.int64)
        nA = np.zeros((rows, stages), dtype=np.int64)
        counts = np.zeros((rows, stages, classes), dtype=np.int64)
        ran = np.zeros((rows, stages), dtype=bool)
        pending = np.arange(rows)
        for k, smoothed in enumerate(self.stages):
            if pending.size == 0:
                break
            chosen = [indices[i] for i in pending]
            votes0 = smoothed.votes(
                images[pending], n0, noise_keys(dataset, split, chosen, "select", seed, stage + k)
            )
            votes = smoothed.votes(
                images[pending], n, noise_keys(dataset, split, chosen, "estimate", seed, stage + k)
            )
            top = votes0.argmax(axis=1)
            cA[pending, k] = top
            count0[pending, k] = votes0[np.arange(len(pending)), top]
            nA[pending, k] = votes[np.arange(len(pending)), top]
            counts[pending, k] = votes
            ran[pending, k] = True
            # the same decision rule as combine_cascade (which recomputes it below)
            step = _stage_moves_on(nA[pending, k], n, alpha, k, stages, self.p0, self.alpha_split)
            pending = pending[step]
        fixed = _StageRecord(cA, count0, counts, ran, np.where(ran, n, 0))
        return _certificates(self, fixed, n0, n, alpha)


@dataclass
class _StageRecord:
    """Every stage's draws for a batch (``[B, K]``, counts ``[B, K, C]``); ``n_used`` per stage
    (fixed: ``n`` where the stage ran). Sequential runs add the plan stage each stopped at, its
    bound's level and why it stopped."""

    cA: np.ndarray
    count0: np.ndarray
    counts: np.ndarray
    ran: np.ndarray
    n_used: np.ndarray
    stop_stage: np.ndarray | None = None
    stop_alpha: np.ndarray | None = None
    reason: np.ndarray | None = None  # object [B, K]: stop reason names

    @property
    def nA(self) -> np.ndarray:
        return np.take_along_axis(self.counts, self.cA[:, :, None], axis=2)[:, :, 0]


def _certificates(
    cascade: CascadeSmoothed, rec: _StageRecord, n0: int, n: int, alpha: float
) -> list[CascadeCertificate]:
    """The certificates of ``rec``'s draws: :func:`combine_cascade` on the final counts (so a
    re-scored row reproduces them exactly)."""
    sequential = rec.stop_alpha is not None
    final = combine_cascade(
        rec.cA,
        rec.nA,
        rec.counts,
        rec.ran,
        rec.n_used if sequential else n,
        cascade.sigmas,
        alpha,
        cascade.p0,
        cascade.alpha_split,
        stage_alpha=rec.stop_alpha,
        path=sequential,
    )
    nA = rec.nA
    # a sequential row keeps every stage's stopping level (a re-score may need any stage)
    levels = rec.stop_alpha if rec.stop_alpha is not None else final["stage_alpha"]
    results = []
    for i in range(rec.cA.shape[0]):
        run = int(rec.ran[i].sum())
        answered = int(final["stage"][i])
        radii = np.full(run, np.nan)
        if answered >= 0:
            radii[:answered] = final["cap"][i, :answered]
            radii[answered] = final["own_radius"][i]
        extra: dict = {}
        if sequential:
            assert rec.stop_stage is not None and rec.reason is not None
            assert rec.stop_alpha is not None
            last = answered if answered >= 0 else run - 1
            extra = {
                "estimation": "sequential",
                "stage_n_used": tuple(int(v) for v in rec.n_used[i, :run]),
                "stage_stop_stage": tuple(int(v) for v in rec.stop_stage[i, :run]),
                "stage_stop_reason": tuple(str(v) for v in rec.reason[i, :run]),
                "n_used": int(rec.n_used[i, last]),
                "stop_stage": int(rec.stop_stage[i, last]),
                "stop_reason": str(rec.reason[i, last]),
                "stop_alpha": float(rec.stop_alpha[i, last]),
            }
        results.append(
            CascadeCertificate(
                prediction=int(final["prediction"][i]),
                abstained=bool(final["abstained"][i]),
                radius=float(final["radius"][i]),
                alpha=alpha,
                p0=cascade.p0,
                alpha_split=cascade.alpha_split,
                stage=answered,
                stages_run=run,
                samples=int(run * n0 + rec.n_used[i, :run].sum()),
                sigma=cascade.sigmas[answered] if answered >= 0 else None,
                stage_sigmas=cascade.sigmas,
                stage_cA=tuple(int(v) for v in rec.cA[i, :run]),
                stage_count0=tuple(int(v) for v in rec.count0[i, :run]),
                stage_nA=tuple(int(v) for v in nA[i, :run]),
                stage_counts=tuple(tuple(int(c) for c in rec.counts[i, k]) for k in range(run)),
                stage_alpha=tuple(float(v) for v in levels[i, :run]),
                stage_pA_lower=tuple(float(v) for v in final["pA_lower"][i, :run]),
                stage_pA_upper=tuple(float(v) for v in final["pA_upper"][i, :run]),
                stage_pB_upper=tuple(float(v) for v in final["pB_upper"][i, :run]),
                stage_radius=tuple(float(v) for v in radii),
                n0=n0,
                n=n,
                **extra,
            )
        )
    return results


#: The sequential cascade rule's name in a run's identity (:func:`certify_sequential`).
SEQUENTIAL_RULE = "answer-phase, then caps resumed to the answer's grid level"

#: Why a stage that served only as a cap stopped drawing (after its answer phase):
#: its cap certifies the answer's own grid level, or the largest grid radius; more samples cannot
#: lift it to its next grid level (futility); or n_max.
CAP_REASONS = ("cap_met", "cap_top", "cap_futile", "cap_n_max")


def certify_sequential(
    cascade: CascadeSmoothed,
    images: torch.Tensor,
    indices: Sequence[int],
    n0: int,
    alpha: float,
    seed: int,
    dataset: str,
    split: str,
    stage: int,
    spec: SequentialSpec,
) -> _StageRecord:
    """Sequential CASCADE CERTIFY's draws for a batch (the certificate is :func:`combine_cascade`
    of them, with each stage's bound at the level of the plan stage it stopped at).

    **The rule.** Every cascade stage ``k`` has the plan ``spec.plan(a, sigma_k, p0)`` with
    ``a = alpha / (2K - 1)``, the union split's share (its radii are measured from ``p0``:
    ``sigma_k (Phi^-1(L) - Phi^-1(p0))``, so grid radius 0 means ``L >= p0``).

    1. *Answer phase*, stages in cascade order: stage ``k`` draws ``n0`` selection samples (``cA``)
       and its estimation samples block by block, each image as
       :func:`rsbench.engine.sequential.decide` says on the votes for ``cA``. At a stop it answers
       when ``L >= p0``; otherwise it moves on to stage ``k + 1`` when it stopped before n_max
       because ``p0`` is out of reach (futility: the grid's smallest radius cannot be certified
       at n_max) or, at n_max, when its upper bound at the last level is below ``p0`` (fixed
       CERTIFY's move-on rule, so a one-stage plan is fixed-n CASCADE CERTIFY exactly);
       otherwise (or at the last stage) the cascade abstains.
    2. *Cap phase*: an image answered by stage ``k > 0`` with class ``c`` and own grid level
       ``L0`` (grid radii its own radius certifies) needs the caps of stages ``j < k``, whose
       samples stopped when their answer was decided. Each such stage resumes its estimation
       stream (the same prefix-consistent stream) while its cap, on the complement of the largest
       other-class count against ``1 - p0`` (plan ``spec.plan(a / C, sigma_j, 1 - p0)``; decisions
       only), certifies fewer grid radii than ``min(L0, levels of the caps that have stopped)``
       and its own stopping rule (top, futility, n_max) has not fired. A cap that cannot change
       the answer's grid level thus stops at once; the final radius is ``min(own, caps)``.

    **Guarantee.** With probability at least ``1 - alpha`` over the estimation draws (given the
    selection draws), every certificate returned is correct: ``G(x + e)`` equals the answer for
    every ``||e|| <`` radius (``G`` the cascade classifier of the module docstring). The same
    statement as fixed-n CASCADE CERTIFY under the ``union`` split, for any stopping times.

    *Proof sketch.* Let ``n_t`` and ``alpha_{k,t}`` (``sum_t alpha_{k,t} <= a``) be stage ``k``'s
    plan. Given ``cA_k`` (separate selection draws), stage ``k``'s first ``n_t`` estimation
    samples are i.i.d., so ``A_{k,t} = {CP_lower(votes for cA_k, n_t, alpha_{k,t}) > p_k^{cA_k}}``
    has probability ``<= alpha_{k,t}``, and ``C_{k,t} = {some class c has CP_upper(votes for c,
    n_t, alpha_{k,t} / C) < p_k^c}`` probability ``<= alpha_{k,t}`` (Bonferroni over the ``C``
    classes). The union of the ``A_{k,t}`` over ``k < K`` and the ``C_{k,t}`` over ``k < K - 1``
    (the last stage never caps) and all ``t`` has probability ``<= (2K - 1) a = alpha``. Outside
    it every bound the certificate may use is valid at *every* plan stage, hence at whatever
    stage each cascade stage stopped: the stopping times may depend on any data, including other
    stages' draws (the cap phase's do), and the path (which stage answers, which move on) may be
    anything; then the module docstring's Lipschitz argument applies unchanged (a stage's own
    bound keeps ``p_k^c > p0`` inside its radius, each earlier stage's cap keeps every other class
    below ``p0``). The rule above only decides when to stop and where to move; soundness never
    depends on it (a futility stop or an early move-on can only cost radius).

    **Reproducible per image.** An image's decisions depend only on its own draws, and stage
    ``k``'s estimation samples are a prefix of its ``estimate`` stream with ``stage = stage + k``
    (:class:`rsbench.engine.sampling.StreamCursor`), so batching, resume and shards give the same
    rows; :func:`combine_cascade` (``stage_alpha``, ``path``) recomputes every value from them.
    """
    if cascade.alpha_split != "union":
        raise ConfigError(
            f"sequential estimation needs alpha_split 'union' (got {cascade.alpha_split!r}): the "
            "reference split is not covered by a union bound; pass --alpha-split union"
        )
    run = _SequentialCascade(cascade, images, spec, alpha)
    pending = np.arange(len(indices))
    for k in range(len(cascade.stages)):
        if pending.size == 0:
            break
        pending = run.answer_phase(k, pending, indices, n0, seed, dataset, split, stage)
    run.cap_phase()
    return run.record()


class _SequentialCascade:
    """The per-image state of :func:`certify_sequential` for one batch: every stage's selection,
    counts, plan stages completed and stream cursors."""

    def __init__(
        self, cascade: CascadeSmoothed, images: torch.Tensor, spec: SequentialSpec, alpha: float
    ) -> None:
        rows, stages, classes = images.shape[0], len(cascade.stages), cascade.num_classes
        self.cascade, self.images, self.p0 = cascade, images, cascade.p0
        share = answer_alpha(alpha, 0, stages, "union")
        try:
            self.plans = [spec.plan(share, s, self.p0) for s in cascade.sigmas]
            self.caps = [spec.plan(share / classes, s, 1.0 - self.p0) for s in cascade.sigmas]
        except ValueError as exc:
            raise ConfigError(f"sequential cascade: {exc}") from None
        self.sizes = np.asarray(self.plans[0].stage_sizes, dtype=np.int64)
        self.cA = np.zeros((rows, stages), dtype=np.int64)
        self.count0 = np.zeros((rows, stages), dtype=np.int64)
        self.counts = np.zeros((rows, stages, classes), dtype=np.int64)
        self.ran = np.zeros((rows, stages), dtype=bool)
        self.done = np.zeros((rows, stages), dtype=np.int64)  # plan stages completed
        self.reason = np.full((rows, stages), "", dtype=object)
        self.answer_stage = np.full(rows, -1, dtype=np.int64)
        self.cursors: list[dict[int, StreamCursor]] = [{} for _ in range(stages)]

    def draw(self, k: int, members: np.ndarray) -> None:
        """The next block of stage ``k``'s plan for each of ``members``."""
        done = self.done[members, k]
        blocks = self.sizes[done] - np.where(done > 0, self.sizes[np.maximum(done - 1, 0)], 0)
        for size in np.unique(blocks):
            group = members[blocks == size]
            chosen = [self.cursors[k][int(i)] for i in group]
            votes = self.cascade.stages[k].counter.count(
                self.images[group],
                self.cascade.sigmas[k],
                int(size),
                [c.key for c in chosen],
                cursors=chosen,
            )
            self.counts[group, k] += votes.numpy()
        self.done[members, k] += 1

    def answer_phase(
        self,
        k: int,
        pending: np.ndarray,
        indices: Sequence[int],
        n0: int,
        seed: int,
        dataset: str,
        split: str,
        stage: int,
    ) -> np.ndarray:
        """Stage ``k`` on ``pending`` (selection, then blocks until each image's answer is
        decided); returns the images that move on."""
        chosen = [indices[i] for i in pending]
        votes0 = self.cascade.stages[k].votes(
            self.images[pending], n0, noise_keys(dataset, split, chosen, "select", seed, stage + k)
        )
        top = votes0.argmax(axis=1)
        self.cA[pending, k] = top
        self.count0[pending, k] = votes0[np.arange(pending.size), top]
        self.ran[pending, k] = True
        keys = noise_keys(dataset, split, chosen, "estimate", seed, stage + k)
        for i, key in zip(pending, keys):
            self.cursors[k][int(i)] = StreamCursor(key)
        plan, last_t = self.plans[k], self.sizes.size - 1
        moving: list[int] = []
        running = pending
        while running.size:
            self.draw(k, running)
            t = self.done[running, k] - 1
            nA = self.counts[running, k, self.cA[running, k]]
            d = decide(plan, nA, t)
            for i, why in zip(running[d.stop], d.reason[d.stop]):
                self.reason[i, k] = REASON_NAMES[int(why)]
            answers = d.stop & (d.lower >= self.p0)
            self.answer_stage[running[answers]] = k
            quits = d.stop & ~answers & (k < len(self.plans) - 1)
            at_max = quits & (t == last_t)
            if at_max.any():  # fixed CERTIFY's rule at n_max (any reason): move on when U < p0
                upper = stats.clopper_pearson_upper(
                    nA[at_max], self.sizes[last_t], plan.stage_alphas[last_t]
                )
                quits[np.flatnonzero(at_max)[upper >= self.p0]] = False
            moving += [int(i) for i in running[quits]]
            running = running[~d.stop]
        return np.asarray(sorted(moving), dtype=np.int64)

    def _own_level(self, i: int, k: int) -> int:
        t = self.done[i, k] - 1
        lower = stats.clopper_pearson_lower(
            self.counts[i, k, self.cA[i, k]], self.sizes[t], self.plans[k].stage_alphas[t]
        )
        return int(certified_on_grid(self.plans[k], lower))

    def cap_phase(self) -> None:
        """Resume the earlier stages of every image answered by a later stage while their cap
        could still lower the answer's grid level (:func:`certify_sequential`, step 2)."""
        later = np.flatnonzero(self.answer_stage > 0)
        if later.size == 0:
            return
        k_of = self.answer_stage[later]
        own = np.array([self._own_level(int(i), int(k)) for i, k in zip(later, k_of)])
        answer = self.cA[later, k_of]
        is_cap = np.arange(len(self.plans))[None, :] < k_of[:, None]  # [L, K] stages that cap
        active = is_cap.copy()  # caps still drawing
        level = np.zeros(is_cap.shape, dtype=np.int64)
        first_round = True
        while active.any():
            for j in range(len(self.plans) - 1):
                members = np.flatnonzero(active[:, j])
                if members.size == 0:
                    continue
                i = later[members]
                others = self.counts[i, j].copy()
                others[np.arange(i.size), answer[members]] = -1
                largest = np.maximum(others.max(axis=1), 0)
                t = self.done[i, j] - 1
                d = decide(self.caps[j], self.sizes[t] - largest, t)
                level[members, j] = certified_on_grid(self.caps[j], d.lower)
                if not first_round:  # a cap that drew no new sample keeps its answer's reason
                    for m, why in zip(members[d.stop], d.reason[d.stop]):
                        name = REASON_NAMES[int(why)]
                        self.reason[later[m], j] = f"cap_{'futile' if name == 'abstain' else name}"
                active[members[d.stop], j] = False
            frozen = np.where(is_cap & ~active, level, np.iinfo(np.int64).max)
            target = np.minimum(frozen.min(axis=1), own)
            met = active & (level >= target[:, None])
            if not first_round:
                for m, j in zip(*np.nonzero(met)):
                    self.reason[later[m], j] = "cap_met"
            active &= ~met
            for j in range(len(self.plans) - 1):
                members = np.flatnonzero(active[:, j])
                if members.size:
                    self.draw(j, later[members])
            first_round = False

    def record(self) -> _StageRecord:
        ran = self.ran
        t_stop = np.where(ran, self.done - 1, 0)
        # every stage's plan splits the same share over the same sizes: one list of levels
        levels = np.asarray(self.plans[0].stage_alphas)
        return _StageRecord(
            cA=self.cA,
            count0=self.count0,
            counts=self.counts,
            ran=ran,
            n_used=np.where(ran, self.sizes[t_stop], 0),
            stop_stage=np.where(ran, t_stop, -1),
            stop_alpha=np.where(ran, levels[t_stop], np.nan),
            reason=self.reason,
        )


def rescore_rows(
    stage_sigmas: Sequence[Sequence[float]],
    stage_cA: Sequence[Sequence[int]],
    stage_nA: Sequence[Sequence[int]],
    stage_counts: Sequence[Sequence[Sequence[int]]],
    n: Sequence[int],
    alpha: float,
    p0: Sequence[float],
    alpha_split: Sequence[str],
    stage_n: Sequence[Sequence[int] | None] | None = None,
    stage_alpha: Sequence[Sequence[float] | None] | None = None,
) -> list[dict[str, object]]:
    """:func:`combine_cascade` over stored result rows (ragged per-stage lists), one dict per row.

    Sequential rows give ``stage_n[i]`` (the estimation samples each stage drew) and
    ``stage_alpha[i]`` (each stage's bound level at the new total, see
    :func:`rsbench.results.rescore.stage_alpha`); they are combined on their recorded path
    (``combine_cascade(..., path=True)``). Others pass None there (fixed n).
    Rows are grouped by (sigmas, n, p0, split, classes, mode) and combined vectorised; each dict holds the
    row's ``prediction``, ``abstained``, ``radius``, ``stage`` and per-stage lists (``stage_alpha``,
    ``pA_lower``, ``pA_upper``, ``pB_upper``, ``stage_radius``) for the stages that ran.
    """
    out: list[dict[str, object]] = [{} for _ in stage_cA]
    groups: dict[tuple, list[int]] = {}
    for i, row_counts in enumerate(stage_counts):
        key = (
            tuple(float(s) for s in stage_sigmas[i]),
            int(n[i]),
            float(p0[i]),
            str(alpha_split[i]),
            len(row_counts[0]),
            stage_n is not None and stage_n[i] is not None,
        )
        groups.setdefault(key, []).append(i)
    for (sigmas, n_value, p0_value, split, classes, seq), members in groups.items():
        stages = len(sigmas)
        cA = np.zeros((len(members), stages), dtype=np.int64)
        nA = np.zeros((len(members), stages), dtype=np.int64)
        counts = np.zeros((len(members), stages, classes), dtype=np.int64)
        ran = np.zeros((len(members), stages), dtype=bool)
        n_of = np.full((len(members), stages), n_value, dtype=np.int64)
        levels = np.full((len(members), stages), np.nan) if seq else None
        for row, i in enumerate(members):
            run = len(stage_cA[i])
            cA[row, :run] = stage_cA[i]
            nA[row, :run] = stage_nA[i]
            counts[row, :run] = np.asarray([list(c) for c in stage_counts[i]], dtype=np.int64)
            ran[row, :run] = True
            if levels is not None:
                assert stage_n is not None and stage_alpha is not None
                n_of[row, :run] = np.asarray(stage_n[i], dtype=np.int64)[:run]
                levels[row, :run] = np.asarray(stage_alpha[i], dtype=np.float64)[:run]
        d = combine_cascade(
            cA,
            nA,
            counts,
            ran,
            n_of,
            sigmas,
            alpha,
            p0_value,
            split,
            stage_alpha=levels,
            path=seq,
        )
        for row, i in enumerate(members):
            run = len(stage_cA[i])
            answered = int(d["stage"][row])
            radii = np.full(run, np.nan)
            if answered >= 0:
                radii[:answered] = d["cap"][row, :answered]
                radii[answered] = d["own_radius"][row]
            out[i] = {
                "prediction": int(d["prediction"][row]),
                "abstained": bool(d["abstained"][row]),
                "radius": float(d["radius"][row]),
                "stage": answered,
                "stage_alpha": [float(v) for v in d["stage_alpha"][row, :run]],
                "pA_lower": [float(v) for v in d["pA_lower"][row, :run]],
                "pA_upper": [float(v) for v in d["pA_upper"][row, :run]],
                "pB_upper": [float(v) for v in d["pB_upper"][row, :run]],
                "stage_radius": [float(v) for v in radii],
            }
    return out


def _stage_moves_on(
    nA: np.ndarray, n: int, alpha: float, stage: int, stages: int, p0: float, split: str
) -> np.ndarray:
    """Rows whose stage ``stage`` moves on (upper bound below p0, lower bound below p0, not last)."""
    if stage == stages - 1:
        return np.zeros(len(nA), dtype=bool)
    a = answer_alpha(alpha, stage, stages, split)
    low = stats.clopper_pearson_lower(nA, n, a)
    high = stats.clopper_pearson_upper(nA, n, a)
    return (low < p0) & (high < p0)

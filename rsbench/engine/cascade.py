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
from rsbench.engine.sequential import SequentialSpec
from rsbench.engine.smoothing import CertifiesOne, SmoothedClassifier
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
) -> dict[str, np.ndarray]:
    """Cascade certificates from stored stage counts (vectorised over ``B`` rows, ``K`` stages).

    ``stage_cA``/``stage_nA`` are ``[B, K]``, ``stage_counts`` ``[B, K, C]`` (estimation votes),
    ``ran`` ``[B, K]`` says which stages were run; ``n`` is the estimation count per stage. Returns
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
    n = np.broadcast_to(np.asarray(n, dtype=np.int64), (rows,))
    phi_p0 = float(norm.ppf(p0))

    lower = np.full((rows, stages), np.nan)
    upper = np.full((rows, stages), np.nan)
    used_alpha = np.full((rows, stages), np.nan)
    moved = np.zeros((rows, stages), dtype=bool)
    answer_stage = np.full(rows, -1, dtype=np.int64)
    active = ran[:, 0].copy()
    for k in range(stages):
        a = answer_alpha(alpha, k, stages, alpha_split)
        here = active & ran[:, k]
        safe_nA = np.where(here, nA[:, k], 0)
        low = stats.clopper_pearson_lower(safe_nA, n, a)
        high = stats.clopper_pearson_upper(safe_nA, n, a)
        lower[:, k] = np.where(here, low, np.nan)
        upper[:, k] = np.where(here, high, np.nan)
        used_alpha[:, k] = np.where(here, a, np.nan)
        answers = here & (low >= p0)
        answer_stage[answers] = k
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
        a_cap = np.array(
            [cap_alpha(alpha, j, int(k), stages, alpha_split) for k in safe_stage], dtype=np.float64
        )
        bounds = stats.clopper_pearson_upper(
            counts[:, j, :], n[:, None], (a_cap / classes)[:, None]
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
        noise keys with ``stage = stage + k`` (purposes ``select`` and ``estimate``). Sequential
        estimation is not available for cascades (``sequential`` must be None): their move-on
        decisions and caps use every stage's fixed-n bounds.
        """
        if sequential is not None:
            raise ConfigError(
                "sequential estimation is not available for cascades; certify with fixed n"
            )
        n0, n = check_count(n0, "n0"), check_count(n, "n")
        alpha = check_alpha(alpha)
        images, indices = self.stages[0]._prepare(images, indices)
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
        final = combine_cascade(
            cA, nA, counts, ran, n, self.sigmas, alpha, self.p0, self.alpha_split
        )
        results = []
        for i in range(rows):
            run = int(ran[i].sum())
            answered = int(final["stage"][i])
            radii = np.full(run, np.nan)
            if answered >= 0:
                radii[:answered] = final["cap"][i, :answered]
                radii[answered] = final["own_radius"][i]
            results.append(
                CascadeCertificate(
                    prediction=int(final["prediction"][i]),
                    abstained=bool(final["abstained"][i]),
                    radius=float(final["radius"][i]),
                    alpha=alpha,
                    p0=self.p0,
                    alpha_split=self.alpha_split,
                    stage=answered,
                    stages_run=run,
                    samples=run * (n0 + n),
                    sigma=self.sigmas[answered] if answered >= 0 else None,
                    stage_sigmas=self.sigmas,
                    stage_cA=tuple(int(v) for v in cA[i, :run]),
                    stage_count0=tuple(int(v) for v in count0[i, :run]),
                    stage_nA=tuple(int(v) for v in nA[i, :run]),
                    stage_counts=tuple(tuple(int(c) for c in counts[i, k]) for k in range(run)),
                    stage_alpha=tuple(float(v) for v in final["stage_alpha"][i, :run]),
                    stage_pA_lower=tuple(float(v) for v in final["pA_lower"][i, :run]),
                    stage_pA_upper=tuple(float(v) for v in final["pA_upper"][i, :run]),
                    stage_pB_upper=tuple(float(v) for v in final["pB_upper"][i, :run]),
                    stage_radius=tuple(float(v) for v in radii),
                    n0=n0,
                    n=n,
                )
            )
        return results


def rescore_rows(
    stage_sigmas: Sequence[Sequence[float]],
    stage_cA: Sequence[Sequence[int]],
    stage_nA: Sequence[Sequence[int]],
    stage_counts: Sequence[Sequence[Sequence[int]]],
    n: Sequence[int],
    alpha: float,
    p0: Sequence[float],
    alpha_split: Sequence[str],
) -> list[dict[str, object]]:
    """:func:`combine_cascade` over stored result rows (ragged per-stage lists), one dict per row.

    Rows are grouped by (sigmas, n, p0, split, classes) and combined vectorised; each dict holds the
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
        )
        groups.setdefault(key, []).append(i)
    for (sigmas, n_value, p0_value, split, classes), members in groups.items():
        stages = len(sigmas)
        cA = np.zeros((len(members), stages), dtype=np.int64)
        nA = np.zeros((len(members), stages), dtype=np.int64)
        counts = np.zeros((len(members), stages, classes), dtype=np.int64)
        ran = np.zeros((len(members), stages), dtype=bool)
        for row, i in enumerate(members):
            run = len(stage_cA[i])
            cA[row, :run] = stage_cA[i]
            nA[row, :run] = stage_nA[i]
            counts[row, :run] = np.asarray([list(c) for c in stage_counts[i]], dtype=np.int64)
            ran[row, :run] = True
        d = combine_cascade(cA, nA, counts, ran, n_value, sigmas, alpha, p0_value, split)
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

"""Randomized smoothing: Cohen et al. (2019) CERTIFY and PREDICT.

``g(x) = argmax_c P[f(x + d) = c]``, ``d ~ N(0, sigma^2 I)`` in [0, 1] pixel space.

Guarantees
----------
* :meth:`SmoothedClassifier.certify`: with probability >= 1 - alpha over the sampling, either it
  abstains or ``g(x + e) == prediction`` for every ``||e||_2 < radius``. The class is selected on
  ``n0`` samples and its probability bounded on ``n`` *fresh* samples (one-sided Clopper–Pearson).
* Sequential estimation (``sequential=``, a :class:`rsbench.engine.sequential.SequentialSpec`):
  the selection step is unchanged; the estimation samples are drawn in the plan's pre-declared
  stages and each image stops as :func:`rsbench.engine.sequential.decide` says. ``pA_lower`` is
  the Clopper–Pearson bound at the stopping stage's ``alpha_k`` (``stop_alpha``), valid at a
  data-dependent stopping stage because the stage alphas sum to at most ``alpha`` (a union bound;
  proof in :mod:`rsbench.engine.sequential`), so the guarantee above holds as stated. The samples
  are a prefix of the image's estimation stream (:mod:`rsbench.engine.sampling`), so a row does
  not depend on the batch, the shard or a resume.
* Every abstention test is written so that a NaN bound abstains (``not (pA_lower >= 1/2)``).
* :meth:`SmoothedClassifier.predict`: with probability >= 1 - alpha it abstains or returns ``g(x)``
  (two-sided binomial test of the top count against the runner-up at p = 1/2).

Noise: the selection, estimation and prediction samples of the sample ``(dataset, split, index)``
come from the streams of :class:`rsbench.engine.noise.NoiseKey` with purposes ``select``, ``estimate`` and
``predict`` (and the run's ``seed``, ``stage``): fresh and independent of each other and of every
draw made for training or router labels (:mod:`rsbench.engine.noise`).

Both are pure functions of the vote counts (:func:`certify_from_counts`,
:func:`predict_from_counts`), so stored counts can be re-scored under another alpha offline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import nn

from rsbench.engine import stats
from rsbench.engine.noise import UNNAMED_DATASET, NoiseKey, noise_keys
from rsbench.engine.sampling import StreamCursor, VoteCounter
from rsbench.engine.sequential import REASON_NAMES, SequentialSpec, SequentialState
from rsbench.errors import ConfigError, check_alpha, check_count, check_precision, check_sigma


@dataclass(frozen=True)
class Certificate:
    """Result of CERTIFY for one image; ``prediction == -1`` (radius 0) means abstain."""

    prediction: int
    abstained: bool
    radius: float
    pA_lower: float
    cA: int
    count0: int
    nA: int
    counts0: tuple[int, ...]
    counts: tuple[int, ...]
    n0: int
    n: int
    alpha: float
    sigma: float
    #: ``fixed``, or ``sequential``: then ``n`` is n_max, ``n_used`` the estimation samples drawn,
    #: ``stop_stage``/``stop_reason`` where and why it stopped, ``stop_alpha`` its bound's level
    estimation: str = "fixed"
    n_used: int | None = None
    stop_stage: int | None = None
    stop_reason: str | None = None
    stop_alpha: float | None = None


@dataclass(frozen=True)
class Prediction:
    """Result of PREDICT for one image; ``prediction == -1`` means abstain."""

    prediction: int
    abstained: bool
    p_value: float
    top_count: int
    runner_up_count: int
    counts: tuple[int, ...]
    n: int
    alpha: float
    sigma: float


def certify_from_counts(
    counts0: np.ndarray, counts: np.ndarray, alpha: float, sigma: float | np.ndarray
) -> dict[str, np.ndarray]:
    """CERTIFY's decision from vote counts, vectorised over rows.

    ``counts0`` (selection) and ``counts`` (estimation) are ``[B, C]`` arrays. Returns arrays
    ``cA``, ``count0``, ``nA``, ``pA_lower``, ``radius``, ``abstained``, ``prediction``.
    """
    counts0 = np.atleast_2d(np.asarray(counts0, dtype=np.int64))
    counts = np.atleast_2d(np.asarray(counts, dtype=np.int64))
    rows = np.arange(counts0.shape[0])
    cA = counts0.argmax(axis=1)
    nA = counts[rows, cA]
    n = counts.sum(axis=1)
    return decide_certificate(cA, counts0[rows, cA], nA, n, alpha, sigma)


def decide_certificate(
    cA: np.ndarray,
    count0: np.ndarray,
    nA: np.ndarray,
    n: np.ndarray | int,
    alpha: float | np.ndarray,
    sigma: float | np.ndarray,
) -> dict[str, np.ndarray]:
    """CERTIFY's decision from the selected class ``cA`` and its estimation count ``nA`` of ``n``."""
    pA_lower = stats.clopper_pearson_lower(nA, n, alpha)
    abstained = ~(pA_lower >= 0.5)  # a NaN bound abstains
    radius = np.where(abstained, 0.0, stats.radius_from_bound(pA_lower, sigma))
    return {
        "cA": np.asarray(cA, dtype=np.int64),
        "count0": np.asarray(count0, dtype=np.int64),
        "nA": np.asarray(nA, dtype=np.int64),
        "pA_lower": pA_lower,
        "radius": radius,
        "abstained": abstained,
        "prediction": np.where(abstained, -1, cA).astype(np.int64),
    }


def predict_from_counts(counts: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """PREDICT's decision from ``[B, C]`` vote counts: abstain when the binomial p-value > alpha."""
    counts = np.atleast_2d(np.asarray(counts, dtype=np.int64))
    order = np.argsort(-counts, axis=1, kind="stable")
    rows = np.arange(counts.shape[0])
    top, runner_up = counts[rows, order[:, 0]], counts[rows, order[:, 1]]
    p_value = stats.binom_test_two_sided(top, runner_up)
    abstained = ~(p_value <= alpha)  # a NaN p-value abstains
    return {
        "prediction": np.where(abstained, -1, order[:, 0]).astype(np.int64),
        "abstained": abstained,
        "p_value": p_value,
        "top_count": top,
        "runner_up_count": runner_up,
    }


def check_images(images: torch.Tensor, input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Validate a ``[B, C, H, W]`` (or ``[C, H, W]``) float batch in [0, 1]; return it as 4-D (or 2-D for vectors)."""
    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ConfigError(
            f"images must be floating point in [0, 1], got dtype {images.dtype}; divide uint8 images by 255"
        )
    if input_shape is not None:
        expected = tuple(int(s) for s in input_shape)
        if tuple(images.shape) == expected:
            images = images.unsqueeze(0)
        elif tuple(images.shape[1:]) != expected:
            raise ConfigError(
                f"image shape {tuple(images.shape[1:]) if images.dim() > len(expected) else tuple(images.shape)} does not fit the model's input shape {expected}; "
                f"pass [C, H, W] = {list(expected)} or a batch [B, {', '.join(map(str, expected))}]"
            )
    if images.numel() and not torch.isfinite(images).all():
        raise ConfigError("images contain NaN or infinite values; pixel values must lie in [0, 1]")
    if images.numel():
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise ConfigError(
                f"pixel values span [{low:.4g}, {high:.4g}], outside [0, 1]; pass unnormalised images in [0, 1] "
                "(normalisation belongs to the model's input layer)"
            )
    return images


@dataclass(frozen=True)
class SequentialVotes:
    """Sequential estimation's outcome for a batch: votes and, per image, where it stopped."""

    counts: np.ndarray  # [B, C] estimation votes over the samples drawn
    n_used: np.ndarray  # [B] estimation samples drawn
    stage: np.ndarray  # [B] 0-based stopping stage
    reason: list[str]  # [B] stop reason (rsbench.engine.sequential.REASON_NAMES)
    alpha: np.ndarray  # [B] alpha of the stopping stage's bound


def sequential_votes(
    smoothed: SmoothedClassifier,
    images: torch.Tensor,
    cA: np.ndarray,
    keys: Sequence[NoiseKey],
    spec: SequentialSpec,
    alpha: float,
) -> SequentialVotes:
    """Draw estimation samples stage by stage until each image stops (the rule of ``spec``'s plan
    at ``alpha`` and ``smoothed.sigma``, on the votes for ``cA``). Image ``b`` draws the next
    block of the stream of ``keys[b]`` (a prefix of it in total; :mod:`rsbench.engine.sampling`)."""
    plan = spec.plan(alpha, smoothed.sigma)
    rows = len(keys)
    state = SequentialState(plan, rows)
    counts = np.zeros((rows, smoothed.num_classes), dtype=np.int64)
    cursors = [StreamCursor(key) for key in keys]
    cA = np.asarray(cA, dtype=np.int64)
    while not state.done:
        pending = state.pending()
        blocks = state.next_block(pending)
        votes = np.zeros((pending.size, smoothed.num_classes), dtype=np.int64)
        for size in np.unique(blocks):  # images advance together: one size in practice
            group = np.flatnonzero(blocks == size)
            chosen = pending[group]
            votes[group] = smoothed.counter.count(
                images[chosen],
                smoothed.sigma,
                int(size),
                [keys[i] for i in chosen],
                cursors=[cursors[i] for i in chosen],
            ).numpy()
        counts[pending] += votes
        state.update(pending, votes[np.arange(pending.size), cA[pending]])
    result = state.result()
    return SequentialVotes(
        counts=counts,
        n_used=result.samples,
        stage=result.stage,
        reason=[REASON_NAMES[int(r)] for r in result.reason],
        alpha=np.asarray(plan.stage_alphas)[result.stage],
    )


def check_sequential(sequential: SequentialSpec | None, n: int) -> None:
    """A sequential spec's ``n_max`` must be the run's ``n`` (a one-line ``ConfigError``)."""
    if sequential is not None and sequential.n_max != n:
        raise ConfigError(
            f"sequential estimation stops at n_max = {sequential.n_max} but n = {n}; pass "
            "n = n_max (a sequential row's n is its n_max)"
        )


CertificateT = TypeVar("CertificateT")
PredictionT = TypeVar("PredictionT")


class CertifiesOne(ABC, Generic[CertificateT]):
    """``certify(image, ...)``, one ``[C, H, W]`` image, in terms of the class's ``certify_batch``.

    The one per-image wrapper of every smoothed model (:class:`SmoothedClassifier`,
    :class:`rsbench.engine.dual.DualSmoothed`, :class:`rsbench.engine.cascade.CascadeSmoothed`): the image is the
    sample ``(dataset, split, index)``, certified exactly as in a batch (same noise keys).
    """

    @abstractmethod
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
    ) -> list[CertificateT]:
        """The model's batch CERTIFY, which every subclass defines (``sequential``: early-stopping
        estimation, :mod:`rsbench.engine.sequential`; None: Cohen's fixed n)."""

    def certify(
        self,
        image: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        seed: int = 0,
        index: int = 0,
        *,
        dataset: str = UNNAMED_DATASET,
        split: str = "test",
        stage: int = 0,
    ) -> CertificateT:
        """CERTIFY one ``[C, H, W]`` image, the sample ``(dataset, split, index)``."""
        return self.certify_batch(
            image.unsqueeze(0),
            n0,
            n,
            alpha,
            seed,
            [index],
            dataset=dataset,
            split=split,
            stage=stage,
        )[0]


class PredictsOne(ABC, Generic[PredictionT]):
    """``predict(image, ...)``, one ``[C, H, W]`` image, in terms of the class's ``predict_batch``."""

    @abstractmethod
    def predict_batch(
        self,
        images: torch.Tensor,
        n: int,
        alpha: float,
        seed: int = 0,
        indices: Sequence[int] | None = None,
        *,
        dataset: str = UNNAMED_DATASET,
        split: str = "test",
        stage: int = 0,
    ) -> list[PredictionT]:
        """The model's batch PREDICT, which every subclass defines."""

    def predict(
        self,
        image: torch.Tensor,
        n: int,
        alpha: float,
        seed: int = 0,
        index: int = 0,
        *,
        dataset: str = UNNAMED_DATASET,
        split: str = "test",
        stage: int = 0,
    ) -> PredictionT:
        """PREDICT one ``[C, H, W]`` image, the sample ``(dataset, split, index)``."""
        return self.predict_batch(
            image.unsqueeze(0), n, alpha, seed, [index], dataset=dataset, split=split, stage=stage
        )[0]


class SmoothedClassifier(CertifiesOne[Certificate], PredictsOne[Prediction]):
    """The smoothed version ``g`` of a base classifier ``f`` at noise level ``sigma``.

    ``base`` maps a batch of [0, 1] images to ``num_classes`` logits (normalisation inside it).
    ``input_shape`` ``(C, H, W)``, when given, is checked on every call. ``batch_size`` is the
    number of noisy samples per forward pass; it does not change any result (see
    :mod:`rsbench.engine.sampling`). ``device`` (default: where ``base``'s parameters are) is where the
    noise is drawn and the votes counted; ``base`` must already be there (see :mod:`rsbench.engine.device`).
    """

    def __init__(
        self,
        base: nn.Module,
        num_classes: int,
        sigma: float,
        batch_size: int = 1000,
        precision: str = "fp32",
        input_shape: Sequence[int] | None = None,
        channels_last: bool = False,
        device: torch.device | str | None = None,
        noise_dtype: str = "auto",
    ) -> None:
        self.sigma = check_sigma(sigma)
        self.num_classes = check_count(num_classes, "num_classes")
        batch_size = check_count(batch_size, "batch")
        check_precision(precision)
        self.base = base
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.counter = VoteCounter(
            base,
            self.num_classes,
            batch_size,
            precision,
            channels_last,
            device=device,
            noise_dtype=noise_dtype,
        )

    @property
    def batch_size(self) -> int:
        return self.counter.batch_size

    @property
    def precision(self) -> str:
        return self.counter.precision

    def _prepare(
        self, images: torch.Tensor, indices: Sequence[int] | None
    ) -> tuple[torch.Tensor, list[int]]:
        if self.input_shape is None and images.dim() == 3:
            images = images.unsqueeze(0)
        images = check_images(images, self.input_shape)
        if indices is None:
            indices = range(images.shape[0])
        indices = [int(i) for i in indices]
        if len(indices) != images.shape[0]:
            raise ConfigError(
                f"got {len(indices)} indices for {images.shape[0]} images; pass one index per image"
            )
        return images, indices

    def votes(self, images: torch.Tensor, num: int, keys: Sequence[NoiseKey]) -> np.ndarray:
        """Raw votes ``[B, C]`` of ``num`` noisy samples per image, image ``b`` from ``keys[b]``'s stream."""
        return self.counter.count(images, self.sigma, num, keys).numpy()

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
    ) -> list[Certificate]:
        """CERTIFY each image of a batch.

        Image ``b`` is the sample ``(dataset, split, indices[b])`` (indices default to 0..B-1); its
        noise comes from the keys of that sample with purposes ``select`` and ``estimate``. With
        ``sequential`` the estimation samples stop early per image (module docstring); ``n`` must
        then be its ``n_max``.
        """
        n0, n = check_count(n0, "n0"), check_count(n, "n")
        alpha = check_alpha(alpha)
        images, indices = self._prepare(images, indices)
        check_sequential(sequential, n)
        counts0 = self.votes(images, n0, noise_keys(dataset, split, indices, "select", seed, stage))
        estimate_keys = noise_keys(dataset, split, indices, "estimate", seed, stage)
        if sequential is None:
            counts = self.votes(images, n, estimate_keys)
            decision = certify_from_counts(counts0, counts, alpha, self.sigma)
            extra: list[dict] = [{} for _ in indices]
        else:
            cA = counts0.argmax(axis=1)
            seq = sequential_votes(self, images, cA, estimate_keys, sequential, alpha)
            counts = seq.counts
            rows = np.arange(len(indices))
            decision = decide_certificate(
                cA, counts0[rows, cA], counts[rows, cA], seq.n_used, seq.alpha, self.sigma
            )
            extra = [
                {
                    "estimation": "sequential",
                    "n_used": int(seq.n_used[i]),
                    "stop_stage": int(seq.stage[i]),
                    "stop_reason": seq.reason[i],
                    "stop_alpha": float(seq.alpha[i]),
                }
                for i in rows
            ]
        return [
            Certificate(
                prediction=int(decision["prediction"][i]),
                abstained=bool(decision["abstained"][i]),
                radius=float(decision["radius"][i]),
                pA_lower=float(decision["pA_lower"][i]),
                cA=int(decision["cA"][i]),
                count0=int(decision["count0"][i]),
                nA=int(decision["nA"][i]),
                counts0=tuple(int(c) for c in counts0[i]),
                counts=tuple(int(c) for c in counts[i]),
                n0=n0,
                n=n,
                alpha=alpha,
                sigma=self.sigma,
                **extra[i],
            )
            for i in range(len(indices))
        ]

    def predict_batch(
        self,
        images: torch.Tensor,
        n: int,
        alpha: float,
        seed: int = 0,
        indices: Sequence[int] | None = None,
        *,
        dataset: str = UNNAMED_DATASET,
        split: str = "test",
        stage: int = 0,
    ) -> list[Prediction]:
        """PREDICT each image of a batch (noise: the ``predict`` keys of each sample)."""
        n = check_count(n, "n")
        alpha = check_alpha(alpha)
        images, indices = self._prepare(images, indices)
        counts = self.votes(images, n, noise_keys(dataset, split, indices, "predict", seed, stage))
        decision = predict_from_counts(counts, alpha)
        return [
            Prediction(
                prediction=int(decision["prediction"][i]),
                abstained=bool(decision["abstained"][i]),
                p_value=float(decision["p_value"][i]),
                top_count=int(decision["top_count"][i]),
                runner_up_count=int(decision["runner_up_count"][i]),
                counts=tuple(int(c) for c in counts[i]),
                n=n,
                alpha=alpha,
                sigma=self.sigma,
            )
            for i in range(len(indices))
        ]

"""Dual randomized smoothing (Sun, Mao & Vechev, ICLR 2026): a smoothed router picks the expert.

Experts ``E_1..E_K`` certify at noise levels ``sigma_1..sigma_K``; a router network maps an image to
``K`` logits and is itself smoothed at ``sigma_router``.

DUAL CERTIFY(x):

1. CERTIFY the router (``router_n0``, ``router_n``, ``alpha_router``) -> expert index ``k`` with
   radius ``R_r``, or abstain; if the router abstains the whole certificate abstains and no expert
   runs.
2. CERTIFY expert ``k`` at ``sigma_k`` (``n0``, ``n``, ``alpha_expert``) -> class with ``R_e``, or
   abstain.
3. Return the class with radius ``min(R_r, R_e)``.

Guarantee: with probability >= 1 - (alpha_router + alpha_expert) = 1 - alpha over the sampling
(a union bound; the two sample sets need not be independent), the dual smoothed classifier is
constant on the L2 ball of the returned radius: the smoothed router's choice, hence sigma(.), is
constant on the ball of radius ``R_r``, and the chosen expert's smoothed prediction at that fixed
sigma is constant on the ball of radius ``R_e``.

Sequential estimation (``sequential=``): each stage draws its estimation samples in the stages of
its own plan (:mod:`rsbench.engine.sequential`; the router's at ``sigma_router`` and
``alpha_router``, the expert's at ``sigma_k`` and ``alpha_expert``) and stops on the same radius
grid; each stage's bound holds at its own alpha at its data-dependent stopping stage, so the union
bound above is unchanged. Both stages' stopping stage, reason, bound level and samples are recorded.

Noise: the router stage draws from the ``router-select``/``router-estimate`` (``router-predict``)
streams of each sample's :class:`rsbench.engine.noise.NoiseKey`, the expert stage from the same
``select``/``estimate`` (``predict``) streams as single-expert certification, so a router that always
picks expert ``k`` reproduces expert ``k``'s certificate at ``alpha_expert`` exactly. None of these
streams is used to label or train a router (:mod:`rsbench.engine.noise`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rsbench.engine.noise import UNNAMED_DATASET, noise_keys
from rsbench.engine.sequential import SequentialSpec
from rsbench.engine.smoothing import (
    CertifiesOne,
    PredictsOne,
    SequentialVotes,
    SmoothedClassifier,
    certify_from_counts,
    check_sequential,
    decide_certificate,
    predict_from_counts,
    sequential_votes,
)
from rsbench.errors import (
    ConfigError,
    check_alpha,
    check_alpha_router_fraction,
    check_count,
    check_sigma,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DualCertificate:
    """Result of DUAL CERTIFY for one image, with both stages recorded for offline re-scoring.

    ``prediction == -1`` means abstain (radius 0). ``router_choice == -1`` means the router
    abstained and the expert stage did not run (its fields are ``None``).
    """

    prediction: int
    abstained: bool
    radius: float
    alpha: float
    alpha_router: float
    alpha_expert: float
    sigma_router: float
    router_choice: int
    router_abstained: bool
    router_cA: int
    router_count0: int
    router_nA: int
    router_counts0: tuple[int, ...]
    router_counts: tuple[int, ...]
    router_pA_lower: float
    router_radius: float
    router_n0: int
    router_n: int
    expert_sigma: float | None
    expert_abstained: bool | None
    expert_cA: int | None
    expert_count0: int | None
    expert_nA: int | None
    expert_counts0: tuple[int, ...] | None
    expert_counts: tuple[int, ...] | None
    expert_pA_lower: float | None
    expert_radius: float | None
    n0: int
    n: int
    #: sequential estimation (else ``fixed`` and None): per stage, the estimation samples drawn,
    #: the 0-based stopping stage, why it stopped and the alpha of its bound
    estimation: str = "fixed"
    router_n_used: int | None = None
    router_stop_stage: int | None = None
    router_stop_reason: str | None = None
    router_stop_alpha: float | None = None
    n_used: int | None = None
    stop_stage: int | None = None
    stop_reason: str | None = None
    stop_alpha: float | None = None


def _stopped(seq: SequentialVotes | None, row: int, prefix: str = "") -> dict[str, Any]:
    """The sequential fields of one image (empty for fixed estimation)."""
    if seq is None:
        return {}
    return {
        f"{prefix}n_used": int(seq.n_used[row]),
        f"{prefix}stop_stage": int(seq.stage[row]),
        f"{prefix}stop_reason": seq.reason[row],
        f"{prefix}stop_alpha": float(seq.alpha[row]),
    }


@dataclass(frozen=True)
class DualPrediction:
    """Result of DUAL PREDICT: PREDICT on the router at ``alpha_router``, then on the chosen expert."""

    prediction: int
    abstained: bool
    router_choice: int
    router_p_value: float
    expert_p_value: float | None
    alpha_router: float
    alpha_expert: float


def split_alpha(alpha: float, alpha_router_fraction: float) -> tuple[float, float]:
    """``(alpha_router, alpha_expert)`` with ``alpha_router = fraction * alpha``; they sum to alpha."""
    alpha = check_alpha(alpha)
    alpha_router = alpha * check_alpha_router_fraction(alpha_router_fraction)
    return alpha_router, alpha - alpha_router


def combine_stages(
    router_cA: np.ndarray,
    router_count0: np.ndarray,
    router_nA: np.ndarray,
    router_n: np.ndarray | int,
    expert_cA: np.ndarray,
    expert_count0: np.ndarray,
    expert_nA: np.ndarray,
    expert_n: np.ndarray | int,
    expert_sigmas: np.ndarray,
    sigma_router: float | np.ndarray,
    alpha: float,
    alpha_router_fraction: float = 0.5,
    *,
    alpha_router: np.ndarray | None = None,
    alpha_expert: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Dual certificate from stored stage counts (vectorised), e.g. to re-score under another alpha.

    This is the one composition rule of stored dual certificates (``rsbench rescore`` uses it).
    Rows whose expert stage was not run carry ``expert_nA < 0`` (or NaN); they abstain whatever the
    router now says, which is always sound (an abstention promises nothing). ``alpha_router`` and
    ``alpha_expert`` (per-row arrays, both or neither) replace the split of ``alpha`` by
    ``alpha_router_fraction``, e.g. to reproduce stored rows with their own split exactly. Returns
    also ``router_choice`` (the router's class, -1 where it abstains).
    """
    if (alpha_router is None) != (alpha_expert is None):
        raise ConfigError("give both alpha_router and alpha_expert, or neither")
    a_router: float | np.ndarray
    a_expert: float | np.ndarray
    if alpha_router is None or alpha_expert is None:
        a_router, a_expert = split_alpha(alpha, alpha_router_fraction)
    else:
        a_router, a_expert = alpha_router, alpha_expert
    router = decide_certificate(
        router_cA, router_count0, router_nA, router_n, a_router, sigma_router
    )
    expert_nA = np.nan_to_num(np.asarray(expert_nA, dtype=np.float64), nan=-1.0)
    ran = expert_nA >= 0
    expert = decide_certificate(
        np.where(ran, np.nan_to_num(np.asarray(expert_cA, dtype=np.float64), nan=0), 0),
        np.where(ran, np.nan_to_num(np.asarray(expert_count0, dtype=np.float64), nan=0), 0),
        np.where(ran, expert_nA, 0),
        expert_n,
        a_expert,
        np.nan_to_num(np.asarray(expert_sigmas, dtype=np.float64), nan=1.0),
    )
    abstained = router["abstained"] | ~ran | expert["abstained"]
    radius = np.where(abstained, 0.0, np.minimum(router["radius"], expert["radius"]))
    return {
        "prediction": np.where(abstained, -1, expert["cA"]).astype(np.int64),
        "abstained": abstained,
        "radius": radius,
        "router_abstained": router["abstained"],
        "router_pA_lower": router["pA_lower"],
        "router_radius": router["radius"],
        "expert_pA_lower": np.where(ran, expert["pA_lower"], np.nan),
        "expert_radius": np.where(ran, expert["radius"], np.nan),
        "router_choice": np.where(router["abstained"], -1, router["cA"]).astype(np.int64),
        "alpha_router": np.broadcast_to(np.asarray(a_router, np.float64), radius.shape).copy(),
        "alpha_expert": np.broadcast_to(np.asarray(a_expert, np.float64), radius.shape).copy(),
    }


class DualSmoothed(CertifiesOne[DualCertificate], PredictsOne[DualPrediction]):
    """A dual randomized-smoothing classifier over a router and ``K`` experts.

    ``router`` maps [0, 1] images to ``K`` logits; ``experts[k]`` maps them to ``num_classes``
    logits and certifies at ``sigmas[k]`` (the same module may appear several times with different
    sigmas). ``alpha_router_fraction`` of each call's ``alpha`` goes to the router, the rest to the
    expert. A router sigma below the largest expert sigma is allowed but warned about: the router's
    own radius cap ``sigma_router * Phi^-1(alpha_router ** (1 / router_n))`` then limits every radius.
    """

    def __init__(
        self,
        router: nn.Module,
        experts: Sequence[nn.Module],
        sigmas: Sequence[float],
        sigma_router: float,
        num_classes: int,
        alpha_router_fraction: float = 0.5,
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
        self.sigmas = tuple(check_sigma(s, "expert sigma") for s in sigmas)
        self.sigma_router = check_sigma(sigma_router, "sigma_router")
        self.alpha_router_fraction = check_alpha_router_fraction(alpha_router_fraction)
        if self.sigma_router < max(self.sigmas):
            warnings.warn(
                f"sigma_router={self.sigma_router} is below the largest expert sigma {max(self.sigmas)}: "
                "the router's radius cap will limit every certificate",
                UserWarning,
                stacklevel=2,
            )
        kwargs: dict[str, Any] = {
            "batch_size": batch_size,
            "precision": precision,
            "input_shape": input_shape,
            "channels_last": channels_last,
            "device": device,
            "noise_dtype": noise_dtype,
        }
        self.router = SmoothedClassifier(router, len(experts), self.sigma_router, **kwargs)
        self.experts = [
            SmoothedClassifier(expert, num_classes, sigma, **kwargs)
            for expert, sigma in zip(experts, self.sigmas)
        ]
        self.num_classes = int(num_classes)

    def certify_batch(
        self,
        images: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        seed: int = 0,
        indices: Sequence[int] | None = None,
        router_n0: int | None = None,
        router_n: int | None = None,
        *,
        dataset: str = UNNAMED_DATASET,
        split: str = "test",
        stage: int = 0,
        sequential: SequentialSpec | None = None,
    ) -> list[DualCertificate]:
        """DUAL CERTIFY each image, the sample ``(dataset, split, indices[b])`` (see the module
        docstring; ``sequential``: both stages stop early, ``n`` and ``router_n`` are n_max)."""
        n0, n = check_count(n0, "n0"), check_count(n, "n")
        router_n0 = check_count(router_n0 if router_n0 is not None else n0, "router_n0")
        router_n = check_count(router_n if router_n is not None else n, "router_n")
        alpha = check_alpha(alpha)
        alpha_router, alpha_expert = split_alpha(alpha, self.alpha_router_fraction)
        images, indices = self.router._prepare(images, indices)

        def keys(chosen: Sequence[int], purpose):
            return noise_keys(dataset, split, chosen, purpose, seed, stage)

        check_sequential(sequential, n)
        check_sequential(sequential, router_n)
        router_counts0 = self.router.votes(images, router_n0, keys(indices, "router-select"))
        router_seq: SequentialVotes | None = None
        if sequential is None:
            router_counts = self.router.votes(images, router_n, keys(indices, "router-estimate"))
            router = certify_from_counts(
                router_counts0, router_counts, alpha_router, self.sigma_router
            )
        else:
            r_cA = router_counts0.argmax(axis=1)
            router_seq = sequential_votes(
                self.router,
                images,
                r_cA,
                keys(indices, "router-estimate"),
                sequential,
                alpha_router,
            )
            router_counts = router_seq.counts
            at = np.arange(len(indices))
            router = decide_certificate(
                r_cA,
                router_counts0[at, r_cA],
                router_counts[at, r_cA],
                router_seq.n_used,
                router_seq.alpha,
                self.sigma_router,
            )

        expert_rows: dict[
            int,
            tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, int, SequentialVotes | None],
        ] = {}
        for k, expert in enumerate(self.experts):
            chosen = np.nonzero(~router["abstained"] & (router["cA"] == k))[0]
            if chosen.size == 0:
                continue
            chosen_indices = [indices[i] for i in chosen]
            counts0 = expert.votes(images[chosen], n0, keys(chosen_indices, "select"))
            seq: SequentialVotes | None = None
            if sequential is None:
                counts = expert.votes(images[chosen], n, keys(chosen_indices, "estimate"))
                decision = certify_from_counts(counts0, counts, alpha_expert, expert.sigma)
            else:
                e_cA = counts0.argmax(axis=1)
                seq = sequential_votes(
                    expert,
                    images[chosen],
                    e_cA,
                    keys(chosen_indices, "estimate"),
                    sequential,
                    alpha_expert,
                )
                counts = seq.counts
                at = np.arange(chosen.size)
                decision = decide_certificate(
                    e_cA, counts0[at, e_cA], counts[at, e_cA], seq.n_used, seq.alpha, expert.sigma
                )
            for row, position in enumerate(chosen):
                expert_rows[int(position)] = (decision, counts0[row], counts[row], row, seq)

        results = []
        for i in range(len(indices)):
            router_fields: dict[str, Any] = {
                "alpha": alpha,
                "alpha_router": alpha_router,
                "alpha_expert": alpha_expert,
                "sigma_router": self.sigma_router,
                "router_abstained": bool(router["abstained"][i]),
                "router_cA": int(router["cA"][i]),
                "router_count0": int(router["count0"][i]),
                "router_nA": int(router["nA"][i]),
                "router_counts0": tuple(int(c) for c in router_counts0[i]),
                "router_counts": tuple(int(c) for c in router_counts[i]),
                "router_pA_lower": float(router["pA_lower"][i]),
                "router_radius": float(router["radius"][i]),
                "router_n0": router_n0,
                "router_n": router_n,
                "n0": n0,
                "n": n,
                "estimation": "fixed" if sequential is None else "sequential",
                **_stopped(router_seq, i, "router_"),
            }
            if i not in expert_rows:
                results.append(
                    DualCertificate(
                        prediction=-1,
                        abstained=True,
                        radius=0.0,
                        router_choice=-1,
                        expert_sigma=None,
                        expert_abstained=None,
                        expert_cA=None,
                        expert_count0=None,
                        expert_nA=None,
                        expert_counts0=None,
                        expert_counts=None,
                        expert_pA_lower=None,
                        expert_radius=None,
                        **router_fields,
                    )
                )
                continue
            decision, counts0, counts, row, seq = expert_rows[i]
            k = int(router["cA"][i])
            expert_abstained = bool(decision["abstained"][row])
            expert_radius = float(decision["radius"][row])
            results.append(
                DualCertificate(
                    prediction=int(decision["prediction"][row]),
                    abstained=expert_abstained,
                    radius=0.0
                    if expert_abstained
                    else min(float(router["radius"][i]), expert_radius),
                    router_choice=k,
                    expert_sigma=self.sigmas[k],
                    expert_abstained=expert_abstained,
                    expert_cA=int(decision["cA"][row]),
                    expert_count0=int(decision["count0"][row]),
                    expert_nA=int(decision["nA"][row]),
                    expert_counts0=tuple(int(c) for c in counts0),
                    expert_counts=tuple(int(c) for c in counts),
                    expert_pA_lower=float(decision["pA_lower"][row]),
                    expert_radius=expert_radius,
                    **router_fields,
                    **_stopped(seq, row),
                )
            )
        return results

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
    ) -> list[DualPrediction]:
        """DUAL PREDICT: PREDICT on the router at alpha_router, then on the chosen expert at alpha_expert.

        With probability >= 1 - alpha the result is either an abstention or the dual smoothed
        classifier's prediction.
        """
        n = check_count(n, "n")
        alpha_router, alpha_expert = split_alpha(alpha, self.alpha_router_fraction)
        images, indices = self.router._prepare(images, indices)
        router = predict_from_counts(
            self.router.votes(
                images, n, noise_keys(dataset, split, indices, "router-predict", seed, stage)
            ),
            alpha_router,
        )
        results: list[DualPrediction | None] = [None] * len(indices)
        for i in np.nonzero(router["abstained"])[0]:
            results[i] = DualPrediction(
                -1, True, -1, float(router["p_value"][i]), None, alpha_router, alpha_expert
            )
        for k, expert in enumerate(self.experts):
            chosen = np.nonzero(~router["abstained"] & (router["prediction"] == k))[0]
            if chosen.size == 0:
                continue
            chosen_keys = noise_keys(
                dataset, split, [indices[i] for i in chosen], "predict", seed, stage
            )
            votes = expert.votes(images[chosen], n, chosen_keys)
            decision = predict_from_counts(votes, alpha_expert)
            for row, i in enumerate(chosen):
                results[i] = DualPrediction(
                    prediction=int(decision["prediction"][row]),
                    abstained=bool(decision["abstained"][row]),
                    router_choice=k,
                    router_p_value=float(router["p_value"][i]),
                    expert_p_value=float(decision["p_value"][row]),
                    alpha_router=alpha_router,
                    alpha_expert=alpha_expert,
                )
        return [r for r in results if r is not None]

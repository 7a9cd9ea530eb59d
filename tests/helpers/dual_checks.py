"""Checks shared by the router tests: a dual whose router always picks expert ``k`` is expert ``k``."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

from rsbench.engine import stats
from rsbench.engine.dual import DualSmoothed
from rsbench.engine.smoothing import SmoothedClassifier


def assert_dual_reproduces_expert(
    router: nn.Module,
    experts: Sequence[nn.Module],
    sigmas: Sequence[float],
    k: int,
    images: torch.Tensor,
    indices: Sequence[int],
    num_classes: int = 4,
) -> None:
    """DUAL CERTIFY with ``router`` (which must always pick ``k``) gives, per image, expert ``k``'s
    own CERTIFY at ``alpha / 2`` (same counts, radius, prediction), capped by the unanimous
    router's radius at ``sigma_router = 1``: the expert stage shares the single expert's noise."""
    dual = DualSmoothed(
        router, list(experts), list(sigmas), sigma_router=1.0, num_classes=num_classes
    )
    alpha, n0, n = 0.002, 50, 1000
    results = dual.certify_batch(images, n0, n, alpha, seed=9, indices=list(indices))
    single = SmoothedClassifier(experts[k], num_classes, sigmas[k]).certify_batch(
        images, n0, n, alpha / 2, seed=9, indices=list(indices)
    )
    cap = float(stats.certified_radius(n, n, alpha / 2, 1.0))
    for dual_cert, cert in zip(results, single, strict=True):
        assert dual_cert.router_choice == k and dual_cert.router_radius == pytest.approx(cap)
        assert dual_cert.expert_counts == cert.counts and dual_cert.expert_radius == cert.radius
        assert dual_cert.prediction == cert.prediction
        assert dual_cert.radius == (0.0 if cert.abstained else min(cert.radius, cap))

"""Soundness tests with known answers for dual randomized smoothing (rsbench.engine.dual)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers.toy_models import Constant, Linear, Threshold
from torch import nn

from rsbench.engine import stats
from rsbench.engine.dual import DualSmoothed, combine_stages, split_alpha
from rsbench.engine.smoothing import SmoothedClassifier
from rsbench.errors import ConfigError


class Exploding(nn.Module):
    """An expert that must never run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the expert ran although the router abstained")


def _net(seed: int, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, classes))


@pytest.mark.parametrize("k", [0, 1, 2])
def test_router_that_always_picks_k_reproduces_expert_k_at_alpha_expert(k: int) -> None:
    experts, sigmas = [_net(1), _net(2), _net(3)], [0.25, 0.5, 1.0]
    dual = DualSmoothed(Constant(k, 3), experts, sigmas, sigma_router=1.0, num_classes=4)
    images, indices = torch.rand(6, 2, 2, 2), [3, 14, 15, 92, 65, 35]
    alpha, n0, n = 0.002, 50, 2000
    results = dual.certify_batch(images, n0, n, alpha, seed=9, indices=indices)
    single = SmoothedClassifier(experts[k], 4, sigmas[k]).certify_batch(
        images, n0, n, alpha / 2, seed=9, indices=indices
    )
    # the cap sigma_r * Phi^-1((alpha / 2) ** (1 / n)), as CERTIFY reaches it (bound rounded down)
    router_cap = float(stats.certified_radius(n, n, alpha / 2, 1.0))
    assert router_cap == pytest.approx(float(stats.max_radius(1.0, n, alpha / 2)), rel=1e-8)
    for dual_cert, cert in zip(results, single, strict=True):
        assert dual_cert.router_choice == k and not dual_cert.router_abstained
        assert dual_cert.router_radius == pytest.approx(router_cap, rel=1e-12)
        assert dual_cert.expert_counts0 == cert.counts0 and dual_cert.expert_counts == cert.counts
        assert dual_cert.expert_radius == cert.radius and dual_cert.expert_pA_lower == cert.pA_lower
        assert dual_cert.prediction == cert.prediction and dual_cert.abstained == cert.abstained
        assert dual_cert.radius == (0.0 if cert.abstained else min(cert.radius, router_cap))
        assert dual_cert.alpha_router + dual_cert.alpha_expert == pytest.approx(alpha)


def test_abstaining_router_abstains_without_running_an_expert() -> None:
    sigma_router = 1.0
    router = Threshold(0.5, sigma_router)  # a coin between the two experts
    dual = DualSmoothed(
        router, [Exploding(), Exploding()], [0.25, 0.5], sigma_router, num_classes=3
    )
    results = dual.certify_batch(torch.full((20, 1), 0.5), n0=100, n=1000, alpha=0.001, seed=1)
    assert all(r.abstained and r.prediction == -1 and r.radius == 0.0 for r in results)
    assert all(r.router_choice == -1 and r.expert_nA is None for r in results)
    predictions = dual.predict_batch(torch.full((20, 1), 0.5), n=1000, alpha=0.001, seed=1)
    assert all(p.abstained and p.router_choice == -1 for p in predictions)


@pytest.mark.parametrize("distance", [0.05, 0.2, 0.5])
def test_router_boundary_at_distance_d_bounds_every_radius(distance: float) -> None:
    # Router: linear boundary at L2 distance d from x; expert 0 says class 0, expert 1 says class 1,
    # so the dual classifier's prediction really changes at distance d. No certificate may exceed d.
    w = torch.zeros(1, 4, 4)
    w[0, 1, 2] = 0.6
    w[0, 3, 0] = 0.8
    x = torch.full((1, 4, 4), 0.5)
    b = -float((w * x).sum()) + distance
    dual = DualSmoothed(
        Linear(w, b), [Constant(0, 2), Constant(1, 2)], [0.5, 0.5], sigma_router=0.5, num_classes=2
    )
    results = dual.certify_batch(x.expand(40, -1, -1, -1), n0=100, n=20_000, alpha=0.01, seed=4)
    answered = [r for r in results if not r.abstained]
    assert all(r.router_choice == 1 and r.prediction == 1 for r in answered)
    assert max(r.radius for r in results) <= distance
    if distance >= 0.2:  # far enough from the boundary to certify: the bound is not vacuous
        assert len(answered) == len(results)
        assert min(r.radius for r in results) > 0.6 * distance


def test_composed_certificate_coverage_over_seeded_trials() -> None:
    # Failure = a stage's lower bound above its true probability. The union bound promises a joint
    # failure rate <= alpha_router + alpha_expert.
    sigma_router, sigma_expert, alpha, trials = 1.0, 0.5, 0.1, 3000
    p_router, p_expert = 0.8, 0.8
    dual = DualSmoothed(
        Threshold(p_router, sigma_router),
        [Threshold(p_expert, sigma_expert), Constant(1, 2)],
        [sigma_expert, 0.25],
        sigma_router,
        num_classes=2,
    )
    results = dual.certify_batch(torch.full((trials, 1), 0.5), n0=10, n=100, alpha=alpha, seed=21)
    routed = [r for r in results if r.router_choice == 0 and r.expert_cA == 0]
    assert len(routed) > 0.9 * trials
    failures = np.mean(
        [r.router_pA_lower > p_router or r.expert_pA_lower > p_expert for r in routed]
    )
    slack = 4 * np.sqrt(alpha * (1 - alpha) / len(routed))
    assert failures <= alpha + slack
    # Each stage alone runs at alpha / 2 and is close to its exact miscoverage, not at alpha.
    router_failures = np.mean([r.router_pA_lower > p_router for r in routed])
    assert router_failures <= alpha / 2 + 4 * np.sqrt(alpha / 2 / len(routed))


def test_dual_predict_follows_router_then_expert() -> None:
    dual = DualSmoothed(
        Threshold(0.999, 1.0), [Threshold(0.999, 0.5), Exploding()], [0.5, 1.0], 1.0, num_classes=2
    )
    predictions = dual.predict_batch(torch.full((10, 1), 0.5), n=1000, alpha=0.001, seed=2)
    assert all(p.prediction == 0 and p.router_choice == 0 for p in predictions)
    assert all(p.alpha_router == pytest.approx(0.0005) for p in predictions)
    coin_expert = DualSmoothed(
        Threshold(0.999, 1.0), [Threshold(0.5, 0.5), Exploding()], [0.5, 1.0], 1.0, num_classes=2
    )
    predictions = coin_expert.predict_batch(torch.full((10, 1), 0.5), n=1000, alpha=0.001, seed=2)
    assert sum(p.abstained for p in predictions) >= 9 and all(
        p.router_choice == 0 for p in predictions
    )


def test_stored_stage_counts_rescore_to_the_same_certificates() -> None:
    experts, sigmas = [_net(5), _net(6)], [0.25, 1.0]
    router = _net(7, classes=2)
    dual = DualSmoothed(router, experts, sigmas, sigma_router=1.0, num_classes=4)
    results = dual.certify_batch(torch.rand(30, 2, 2, 2), n0=20, n=500, alpha=0.01, seed=3)

    def column(name: str) -> np.ndarray:
        return np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in results])

    rescored = combine_stages(
        column("router_cA"), column("router_count0"), column("router_nA"), 500,
        column("expert_cA"), column("expert_count0"), column("expert_nA"), 500,
        column("expert_sigma"), 1.0, 0.01, 0.5,
    )  # fmt: skip
    np.testing.assert_array_equal(rescored["prediction"], column("prediction"))
    np.testing.assert_allclose(rescored["radius"], column("radius"), rtol=0, atol=0)
    smaller = combine_stages(
        column("router_cA"), column("router_count0"), column("router_nA"), 500,
        column("expert_cA"), column("expert_count0"), column("expert_nA"), 500,
        column("expert_sigma"), 1.0, 0.001, 0.5,
    )  # fmt: skip
    assert np.all(smaller["radius"] <= rescored["radius"])


def test_router_sigma_below_largest_expert_sigma_warns_and_bad_split_is_refused() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DualSmoothed(Constant(0, 2), [_net(1), _net(2)], [0.25, 1.0], 0.5, num_classes=4)
    assert any("sigma_router=0.5" in str(w.message) for w in caught)
    with pytest.raises(ConfigError, match="alpha_router_fraction=1.0"):
        split_alpha(0.001, 1.0)
    assert split_alpha(0.001, 0.5) == pytest.approx((0.0005, 0.0005))

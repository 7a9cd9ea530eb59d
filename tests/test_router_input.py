"""Routers over the experts' outputs (rsbench.models.router_input): soundness, coverage, zoo schema."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.dual_checks import assert_dual_reproduces_expert
from helpers.toy_models import Constant, Linear, Threshold
from torch import nn

from rsbench.engine.dual import DualSmoothed
from rsbench.errors import ZooError
from rsbench.models.router_input import ExpertsRouter, build_head, router_forwards
from rsbench.zoo.parse import parse_entry

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _net(seed: int, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, classes))


def _picking(k: int, experts: list[nn.Module], width: int) -> ExpertsRouter:
    """A router over ``experts`` whose head always answers ``k`` (zero weights, bias one-hot k)."""
    head = build_head("head_linear", width, len(experts))
    with torch.no_grad():
        head[0].weight.zero_()
        head[0].bias.copy_(torch.nn.functional.one_hot(torch.tensor(k), len(experts)) * 10.0)
    return ExpertsRouter(experts, head, "log-softmax")


def _identity(expert: nn.Module, classes: int, features: str = "log-softmax") -> ExpertsRouter:
    """A router over one expert that picks the expert's own top class (identity head)."""
    head = build_head("head_linear", classes, classes)
    with torch.no_grad():
        head[0].weight.copy_(torch.eye(classes))
        head[0].bias.zero_()
    return ExpertsRouter([expert], head, features)


@pytest.mark.parametrize("k", [0, 2])
def test_router_over_experts_that_always_picks_k_reproduces_expert_k(k: int) -> None:
    experts, sigmas = [_net(1), _net(2), _net(3)], [0.25, 0.5, 1.0]
    router = _picking(k, experts, width=12)
    images, indices = torch.rand(5, 2, 2, 2), [3, 14, 15, 92, 65]
    assert_dual_reproduces_expert(router, experts, sigmas, k, images, indices)


def test_experts_stay_frozen_and_in_eval_mode_while_the_head_trains() -> None:
    expert = nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.Dropout(0.5))
    router = _identity(expert, 4).train()
    assert not expert.training and router.head.training
    assert all(not p.requires_grad for p in expert.parameters())
    x = torch.rand(3, 2, 2, 2)
    torch.testing.assert_close(router(x), router(x))  # deterministic in train mode too
    router(x).sum().backward()
    assert router.head[0].weight.grad is not None and expert[1].weight.grad is None


@pytest.mark.parametrize("distance", [0.05, 0.3])
def test_router_over_a_linear_expert_never_certifies_past_its_boundary(distance: float) -> None:
    # the router follows a linear expert whose boundary lies at L2 distance d from x; experts 0 and
    # 1 answer different classes, so the dual's prediction really changes at distance d
    w = torch.zeros(1, 4, 4)
    w[0, 1, 2], w[0, 3, 0] = 0.6, 0.8
    x = torch.full((1, 4, 4), 0.5)
    b = -float((w * x).sum()) + distance
    router = _identity(Linear(w, b), 2)
    dual = DualSmoothed(
        router, [Constant(0, 2), Constant(1, 2)], [0.5, 0.5], sigma_router=0.5, num_classes=2
    )
    results = dual.certify_batch(x.expand(30, -1, -1, -1), n0=100, n=20_000, alpha=0.01, seed=4)
    answered = [r for r in results if not r.abstained]
    assert all(r.router_choice == 1 and r.prediction == 1 for r in answered)
    assert max(r.radius for r in results) <= distance
    if distance >= 0.3:  # far from the boundary: certified, and not vacuously small
        assert len(answered) == len(results) and min(r.radius for r in results) > 0.6 * distance


@pytest.mark.parametrize("features", ["log-softmax", "softmax", "logits"])
def test_router_over_experts_coverage_over_seeded_trials(features: str) -> None:
    # router = a head over a Threshold expert whose top class has probability exactly p_router
    # under sigma_router noise: its lower bound may exceed p_router on at most alpha_router of images
    sigma_router, alpha, trials, p_router = 1.0, 0.1, 2000, 0.8
    router = _identity(Threshold(p_router, sigma_router), 2, features)
    dual = DualSmoothed(
        router, [Constant(1, 2), Constant(0, 2)], [0.5, 0.5], sigma_router, num_classes=2
    )
    results = dual.certify_batch(torch.full((trials, 1), 0.5), n0=10, n=100, alpha=alpha, seed=3)
    routed = [r for r in results if r.router_choice == 0]
    assert len(routed) > 0.9 * trials
    failures = np.mean([r.router_pA_lower > p_router for r in routed])
    assert failures <= alpha / 2 + 4 * np.sqrt(alpha / 2 / len(routed))
    assert failures > 0 or len(routed) < 1000  # the bound is not vacuous (alpha/2 = 5% expected)


def _router_raw(**overrides) -> dict:
    raw = {
        "id": "r-router",
        "kind": "router",
        "dataset": "fashion-mnist",
        "num_classes": 2,
        "input_shape": [1, 28, 28],
        "arch": "head_mlp",
        "train_sigma": 1.0,
        "experts": ["a-s0.25", "a-s1.00"],
        "input_layer": {"type": "none"},
        "router_input": {"type": "experts-top", "experts": ["a-s1.00"], "features": "softmax"},
        "trained_on": {"dataset": "fashion-mnist", "split": "train", "indices": "0:100"},
        "source": {"type": "file", "path": "r.safetensors"},
    }
    raw.update(overrides)
    return raw


def test_router_input_round_trips_and_counts_its_forwards() -> None:
    entry = parse_entry(_router_raw())
    assert entry.router_input is not None and entry.router_input["features"] == "softmax"
    assert parse_entry(entry.to_yaml_dict()) == entry
    assert router_forwards(entry) == 1.0
    both = {"type": "experts", "experts": ["a-s0.25", "a-s1.00"]}
    assert router_forwards(parse_entry(_router_raw(router_input=both))) == 2.0
    assert router_forwards(parse_entry(_router_raw(router_input=None, arch="pooled_mlp"))) == 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"router_input": {"type": "experts", "experts": ["b-s1.00"]}}, "not one of the router's"),
        ({"router_input": {"type": "pixelz"}}, "router_input.type"),
        ({"router_input": {"type": "experts-top", "experts": ["a-s0.25", "a-s1.00"]}}, "uses one"),
        ({"arch": "pooled_mlp"}, "head arch"),
        ({"trained_on": {"dataset": "fashion-mnist", "split": "train"}}, "trained_on.indices"),
        ({"trained_on": {"dataset": "x", "split": "t", "indices": "a-b"}}, "not index text"),
    ],
)
def test_router_input_schema_errors_name_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(ZooError, match=message):
        parse_entry(_router_raw(**overrides))


@pytest.mark.parametrize("dual", ["embedded-fmnist-xdual", "embedded-fmnist-dual"])
def test_shipped_duals_are_refused_on_their_routers_training_images(dual: str, capsys) -> None:
    """The new router records ``trained_on``; the older one is read from its recipe's labels."""
    from rsbench.cli.main import main

    args = [
        "certify",
        dual,
        "--dataset",
        "fashion-mnist",
        "--split",
        "train",
        "--indices",
        "5,19999",
    ]
    with pytest.raises(SystemExit) as refused:
        main([*args, "--n0", "10", "--n", "20", "--out", "/nonexistent-rsbench-out"])
    assert refused.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was labelled and trained on 2 of the 2 images" in err[0], err

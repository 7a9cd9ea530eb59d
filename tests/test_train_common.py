"""The trainers' shared optimiser recipe and epoch/checkpoint loop (rsbench.train.common)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from rsbench.errors import ConfigError, WeightsError
from rsbench.train.common import EpochLoop, OptimizerConfig, Step, Tick, config_key


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "rmsprop"}, "optimizer='rmsprop' is not one of sgd, adam"),
        ({"schedule": "linear"}, "schedule='linear' is not one of cosine, step, constant"),
        ({"lr": 0.0}, "use a learning rate > 0, e.g. 0.05"),
        ({"lr": math.inf}, "use a learning rate > 0"),
        ({"momentum": 1.0}, "momentum in [0, 1)"),
        ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"schedule": "step", "step_size": 0}, "step_size"),
        ({"schedule": "step", "gamma": 0.0}, "gamma=0.0 is not allowed"),
    ],
)
def test_a_bad_recipe_is_refused_with_its_value(changes, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        OptimizerConfig(**changes).check()


def test_gamma_and_step_size_only_matter_for_the_step_schedule() -> None:
    OptimizerConfig(schedule="cosine", step_size=0, gamma=0.0).check()


def test_the_builders_follow_the_recipe() -> None:
    params = [nn.Parameter(torch.zeros(3))]
    adam, _ = OptimizerConfig(optimizer="adam", lr=0.002, weight_decay=0.0).build(params, 1, 1)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.002
    sgd, step = OptimizerConfig(schedule="step", lr=1.0, step_size=2, gamma=0.5).build(params, 6, 3)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    rates = []
    for _ in range(12):  # 4 epochs of 3 steps: the rate halves every 2 epochs
        rates.append(sgd.param_groups[0]["lr"])
        sgd.step()
        step.step()
    assert rates == [1.0] * 6 + [0.5] * 6
    cosine_opt, cosine = OptimizerConfig(lr=1.0).build(params, 2, 2)
    for _ in range(4):
        cosine_opt.step()
        cosine.step()
    assert cosine_opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def _fit(tmp_path, epochs: int, stop_after: int | None = None, resume: bool = True):
    """A tiny regression run through EpochLoop; returns (weights, history, ticks)."""
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    optimizer, scheduler = OptimizerConfig(lr=0.1).build(model.parameters(), epochs, 2)
    loop = EpochLoop(model, optimizer, scheduler, epochs, 2, "k", tmp_path / "ck.pt")
    resumed = loop.resume() if resume else None
    x = torch.arange(8.0).reshape(4, 2) / 8
    y = x.sum(1, keepdim=True)
    ticks: list[Tick] = []

    def batches(epoch: int):
        generator = torch.Generator().manual_seed(epoch)
        order = torch.randperm(4, generator=generator)
        for start in (0, 2):
            idx = order[start : start + 2]
            noisy = x[idx] + 0.1 * torch.randn(2, 2, generator=generator)
            yield Step(nn.functional.mse_loss(model(noisy), y[idx]), 2)

    def on_epoch(epoch: int, record) -> None:
        if epoch == stop_after:
            raise KeyboardInterrupt

    history = loop.run(
        batches, lambda e, loss: {"epoch": e + 1, "loss": loss}, ticks.append, on_epoch
    )
    return model.weight.detach().clone(), history, ticks, resumed


def test_an_interrupted_loop_resumes_to_the_same_weights_and_history(tmp_path) -> None:
    whole, history, ticks, _ = _fit(tmp_path / "a", 3)
    assert [t.step for t in ticks] == [1, 2] * 3 and [h["epoch"] for h in history] == [1, 2, 3]
    assert ticks[1].loss == history[0]["loss"]  # the last tick's running mean is the epoch's loss
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", 3, stop_after=2)
    resumed, resumed_history, _, resumed_from = _fit(tmp_path / "b", 3)
    assert resumed_from == 2
    assert torch.equal(resumed, whole) and resumed_history == history


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path) -> None:
    model = nn.Linear(2, 1)
    optimizer, scheduler = OptimizerConfig().build(model.parameters(), 1, 1)
    batches = lambda epoch: [Step(model(torch.ones(1, 2)).sum(), 1)]  # noqa: E731
    EpochLoop(model, optimizer, scheduler, 1, 1, config_key({"a": 1}), tmp_path / "ck.pt").run(
        batches, lambda e, loss: {"epoch": e + 1}
    )
    other = EpochLoop(model, optimizer, scheduler, 1, 1, config_key({"a": 2}), tmp_path / "ck.pt")
    with pytest.raises(WeightsError, match="another configuration"):
        other.resume()


def test_a_diverging_run_stops_with_a_hint() -> None:
    model = nn.Linear(1, 1)
    optimizer, scheduler = OptimizerConfig().build(model.parameters(), 1, 1)
    loop = EpochLoop(model, optimizer, scheduler, 1, 1, "k", what="router training")

    def batches(epoch: int):
        yield Step(model(torch.ones(1, 1)).sum() * math.inf, 1)

    with pytest.raises(ConfigError, match="router training diverged in epoch 1.*lower --lr"):
        loop.run(batches, lambda e, loss: {})

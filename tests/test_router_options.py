"""Router-training options for experts nobody here trained: image choice, cost estimate, collapse."""

from __future__ import annotations

from pathlib import Path

import torch
from click.testing import CliRunner
from torch import nn

from rsbench.archs import build_architecture
from rsbench.commands.train_router import router
from rsbench.train.router import (
    COLLAPSE_SHARE,
    RouterTrainConfig,
    _indices_text,
    collapse_message,
    command_line,
)

EXPERTS = ("embedded-fmnist-s0.25", "embedded-fmnist-s1.00")


def test_collapse_is_reported_above_the_share() -> None:
    assert collapse_message([0.5, 0.5], ["a", "b"], "labels") is None
    assert collapse_message([COLLAPSE_SHARE, 1 - COLLAPSE_SHARE], ["a", "b"], "labels") is None
    message = collapse_message([0.05, 0.95], ["a", "b"], "the labels")
    assert message is not None and "95.0% of the images go to b" in message


def test_indices_enter_the_recipe_and_the_resume_key() -> None:
    assert _indices_text(range(0, 60000, 3)) == "0:59998:3"  # same images as 0:60000:3
    assert _indices_text([1, 2, 7]) == "1,2,7"
    plain = RouterTrainConfig(experts=EXPERTS)
    chosen = RouterTrainConfig(experts=EXPERTS, indices=tuple(range(10, 20, 2)))
    assert "indices" not in plain.determining() and chosen.determining()["indices"]
    assert "--indices 10:19:2" in command_line(chosen)
    assert "--train-images 20000" in command_line(plain)


def test_dry_run_estimates_the_label_stage_and_writes_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "labels"
    result = CliRunner().invoke(
        router,
        [*EXPERTS, "--dataset", "fashion-mnist", "--split", "embedded", "--indices", "0:40:2"]
        + ["--dry-run", "--label-cache", str(cache), "--out", str(tmp_path / "out")],
    )
    assert result.exit_code == 0, result.output
    assert "20 images, 0 cached, 20 to certify = 2,200 samples" in result.output
    assert "Nothing was labelled or trained" in result.output
    assert not (tmp_path / "out").exists()


def test_user_architecture_receives_the_input_shape(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(
        "import torch.nn as nn\n"
        "def net(num_classes, **kwargs):\n"
        "    c, h, w = kwargs['input_shape']\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))\n"
    )
    model = build_architecture("nets.py:net", 3, (1, 28, 28), base_dir=tmp_path)
    assert isinstance(model, nn.Module) and model(torch.zeros(2, 1, 28, 28)).shape == (2, 3)

"""Router-training options for experts nobody here trained: image choice, cost estimate, collapse."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from rsbench.cli.train_router import router
from rsbench.models.archs import build_architecture
from rsbench.train.router_config import RouterTrainConfig, command_line, indices_text
from rsbench.train.router_labels import COLLAPSE_SHARE, collapse_message

EXPERTS = ("embedded-fmnist-s0.25", "embedded-fmnist-s1.00")


def test_collapse_is_reported_above_the_share() -> None:
    assert collapse_message([0.5, 0.5], ["a", "b"], "labels") is None
    assert collapse_message([COLLAPSE_SHARE, 1 - COLLAPSE_SHARE], ["a", "b"], "labels") is None
    message = collapse_message([0.05, 0.95], ["a", "b"], "the labels")
    assert message is not None and "95.0% of the images go to b" in message


def test_indices_enter_the_recipe_and_the_resume_key() -> None:
    assert indices_text(range(0, 60000, 3)) == "0:59998:3"  # same images as 0:60000:3
    assert indices_text([1, 2, 7]) == "1,2,7"
    plain = RouterTrainConfig(experts=EXPERTS)
    chosen = RouterTrainConfig(experts=EXPERTS, indices=tuple(range(10, 20, 2)))
    assert "indices" not in plain.determining() and chosen.determining()["indices"]
    assert "--indices 10:19:2" in command_line(chosen)
    assert "--train-images 20000" in command_line(plain)


def test_point_label_radius() -> None:
    from scipy.stats import norm

    from rsbench.train.router_labels import point_radius

    radii = point_radius([1, 1, 2, 1], [100, 50, 100, 80], 100, [1, 1, 1, 1], 0.5)
    assert radii[0] == pytest.approx(0.5 * norm.ppf(100.5 / 101))  # 2.58 sigma, not 1.50
    assert radii[1] == pytest.approx(0.5 * norm.ppf(50.5 / 101)) and radii[2] == 0.0
    assert radii[3] == pytest.approx(0.5 * norm.ppf(80.5 / 101))
    config = RouterTrainConfig(experts=EXPERTS, label_radius="point")
    assert "--label-radius point" in command_line(config)
    assert config.determining()["label_radius"] == "point"
    assert "label_radius" not in RouterTrainConfig(experts=EXPERTS).determining()


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


HALF_NETS = """
import torch
from rsbench.models.archs.small import fmnist_cnn


def _masked(num_classes, input_shape, keep):
    net = fmnist_cnn(num_classes, input_shape)
    if num_classes != 10:  # built as a router (when --arch names this file)
        return net
    mask = torch.full((num_classes,), -1e4)
    mask[list(keep)] = 0.0
    net.register_forward_hook(lambda module, args, out: out + mask)
    return net


def low(num_classes, input_shape):  # only ever answers classes 0-4
    return _masked(num_classes, input_shape, range(0, 5))


def high(num_classes, input_shape):  # only ever answers classes 5-9
    return _masked(num_classes, input_shape, range(5, 10))
"""


def _half_zoo(tmp_path: Path) -> Path:
    """Two experts nobody here trained for this: the embedded sigma-0.50 network restricted to
    classes 0-4 and to classes 5-9, so the best expert of an image is decided by its class."""
    from rsbench.zoo.registry import load_zoo

    (tmp_path / "nets.py").write_text(HALF_NETS)
    weights = load_zoo().get("embedded-fmnist-s0.50")
    path = Path(__file__).resolve().parents[1] / "rsbench" / weights.source.path
    entries = []
    for half in ("low", "high"):
        entries.append(
            f"""  - id: half-{half}-s0.50
    kind: expert
    dataset: fashion-mnist
    num_classes: 10
    input_shape: [1, 28, 28]
    arch: nets.py:{half}
    train_sigma: 0.5
    input_layer: {{type: normalize, mean: [0.286], std: [0.353]}}
    source: {{type: file, path: {path}}}
    sha256: {weights.sha256}
"""
        )
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("models:\n" + "".join(entries))
    return zoo


@pytest.mark.slow
def test_default_router_does_not_collapse_when_best_experts_are_split(tmp_path: Path) -> None:
    from rsbench.train.router import train_router
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo([_half_zoo(tmp_path)])
    config = RouterTrainConfig(
        experts=("half-low-s0.50", "half-high-s0.50"),
        dataset="fashion-mnist",
        split="embedded",
        indices=tuple(range(0, 2000, 2)),
        label_cache=str(tmp_path / "labels"),
    )  # every training option at its default
    result = train_router(config, tmp_path / "out", zoo_file=tmp_path / "out.yaml", zoo=zoo)
    shares = result.label_stats["best_share"]
    print(f"labels {shares}; last epoch {result.history[-1]}")
    assert 0.3 < shares["half-low-s0.50"] < 0.7, shares  # the labels are split
    final = result.history[-1]
    assert max(final["choice_share"]) <= COLLAPSE_SHARE, final
    assert not final.get("collapsed") and not result.label_stats.get("collapsed")
    assert final["agreement"] > max(shares.values()) + 0.05, final  # it learned the split


def _choices_by_label_share(history: dict, shares: dict[str, float]) -> dict[str, tuple]:
    return {e: (q, c) for (e, q), c in zip(shares.items(), history["choice_share"])}


def test_default_recipe_does_not_collapse_when_sigmas_split_the_labels(tmp_path: Path) -> None:
    """Issue 15 item 6: ``rsbench train router`` with default options, on 400 embedded images whose
    best expert is s0.25 for ~29% and s1.00 for ~71%, gives each expert with >= 10% of the labels
    >= 5% of the router's choices; the old default temperature 1 collapses on the same labels."""
    import json

    from rsbench.train.router import train_router

    cache, out = tmp_path / "labels", tmp_path / "out"
    data = ["--dataset", "fashion-mnist", "--split", "embedded", "--indices", "0:800:2"]
    result = CliRunner().invoke(
        router,
        [*EXPERTS, *data, "--label-cache", str(cache), "--out", str(out), "--threads", "1"],
    )  # every recipe option at its default
    assert result.exit_code == 0, result.output
    record = json.loads((out / "embedded-fmnist-router.train.json").read_text())
    shares = record["labels"]["best_share"]
    assert min(shares.values()) >= 0.1, shares  # the labels are split between the experts
    final = record["history"][-1]
    for expert, (label_share, chosen) in _choices_by_label_share(final, shares).items():
        assert chosen >= 0.05, (expert, label_share, final)
    assert not final.get("collapsed")
    config = record["config"]
    assert config["arch"] == "pooled_mlp" and config["temperature"] == 0.05
    steps = -(-record["labels"]["kept"] // config["batch_size"])
    assert config["epochs"] * steps >= 500 and (config["epochs"] - 1) * steps < 500  # MIN_STEPS

    # the cause: at the old default T = 1 the targets of images s0.25 wins are nearly flat (its
    # radius is at most 0.375), so the best constant output is s1.00 even with 1/q weights
    old = RouterTrainConfig(
        experts=EXPERTS,
        dataset="fashion-mnist",
        split="embedded",
        indices=tuple(range(0, 800, 2)),
        label_cache=str(cache),
        temperature=1.0,
    )
    collapsed = train_router(old, tmp_path / "old").history[-1]
    assert collapsed.get("collapsed") and max(collapsed["choice_share"]) > COLLAPSE_SHARE


def test_router_input_options_enter_the_command_and_the_resume_key() -> None:
    from rsbench.errors import ConfigError
    from rsbench.train.router_config import validate_config

    plain = RouterTrainConfig(experts=EXPERTS)
    assert not {"router_input", "features", "class_weighting"} & set(plain.determining())
    assert plain.determining()["training_noise"] == "router-training"
    old = RouterTrainConfig(experts=EXPERTS, training_noise="training")
    assert "training_noise" not in old.determining()  # older checkpoints keep their key
    assert "--training-noise training" in command_line(old)
    over = RouterTrainConfig(
        experts=EXPERTS, router_input="experts-top", features="softmax", class_weighting="none"
    )
    text = command_line(over)
    assert "--router-input experts-top --features softmax" in text
    assert "--class-weights none" in text
    assert over.determining()["router_input"] == "experts-top"
    assert (
        over.resolved([0.25, 1.0]).arch == "head_mlp" and plain.resolved([1.0]).arch == "pooled_mlp"
    )
    for bad, message in (
        ({"router_input": "experts", "arch": "pooled_mlp"}, "takes a head"),
        ({"router_input": "denoised"}, "needs --denoiser"),
        ({"router_input": "denoised", "denoiser": "d", "arch": "head_mlp"}, "pixel network"),
        ({"denoiser": "d"}, "is for --router-input denoised"),
        ({"features": "probits"}, "router features"),
        ({"class_weighting": "sqrt"}, "class weights"),
        ({"training_noise": "attack"}, "training noise"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate_config(RouterTrainConfig(experts=EXPERTS, **bad))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--router-input", "denoised"], "--router-input denoised needs --denoiser"),
        (["--denoiser", "embedded-fmnist-ddpm"], "--denoiser is for --router-input denoised"),
    ],
)
def test_finetune_refuses_a_router_input_mistake_before_fine_tuning(
    tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    """The router's input is checked before the experts are fine-tuned (minutes of work), not
    after: one line, exit status 2, nothing written."""
    from rsbench.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["train", "finetune", "embedded-fmnist-dual", "--out", str(tmp_path / "out"), *extra])
    assert refused.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert "fine-tune" not in captured.out + captured.err
    assert not (tmp_path / "out").exists()

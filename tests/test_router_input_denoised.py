"""The ``denoised`` router input: a pixel network behind a frozen one-shot denoiser (issue 24).

Soundness (a router that always picks k reproduces expert k through the dual), what the denoiser
sees (the router's noisy copy, at sigma_router), determinism (the DDPM one-step denoiser has no
randomness, in train() mode too), the zoo schema and its one-line refusals, the cost it declares,
and ``rsbench train router --router-input denoised`` end to end with ``rsbench certify`` of its dual.
Coverage of the router certificate over seeded trials is router-independent
(tests/test_router_input.py, tests/test_dual.py).
"""

from __future__ import annotations

import math
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers.dual_checks import assert_dual_reproduces_expert
from torch import nn

from rsbench.engine.dual import DualSmoothed
from rsbench.errors import ZooError
from rsbench.models.router_input import (
    DenoisedRouter,
    multiply_adds,
    router_forwards,
)
from rsbench.zoo.parse import parse_entry

EXPERTS = ["embedded-fmnist-s0.25", "embedded-fmnist-s1.00"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class Recording(nn.Module):
    """A denoiser that records what it is called with and returns its input (clamped later)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # something to freeze
        self.calls: list[tuple[torch.Tensor, float]] = []

    def forward(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        self.calls.append((z.detach().clone(), float(sigma)))
        return z * self.scale


class Picks(nn.Module):
    """A router network whose logits always pick ``k`` (whatever the image)."""

    def __init__(self, k: int, experts: int) -> None:
        super().__init__()
        self.register_buffer("logits", nn.functional.one_hot(torch.tensor(k), experts) * 10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.float().expand(x.shape[0], -1)


def _net(seed: int, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, classes))


def _embedded_denoiser(entry_id: str) -> nn.Module:
    from rsbench.models.loading import load_model
    from rsbench.zoo.registry import load_zoo

    return load_model(load_zoo().get(entry_id)).denoiser


@pytest.mark.parametrize("k", [0, 2])
def test_denoised_router_that_always_picks_k_reproduces_expert_k(k: int) -> None:
    experts, sigmas = [_net(1), _net(2), _net(3)], [0.25, 0.5, 1.0]
    router = DenoisedRouter(Recording(), Picks(k, 3), sigma=1.0)
    images, indices = torch.rand(4, 2, 2, 2), [3, 14, 15, 92]
    assert_dual_reproduces_expert(router, experts, sigmas, k, images, indices)


def test_the_denoiser_sees_the_routers_noisy_copy_at_sigma_router() -> None:
    recording = Recording()
    router = DenoisedRouter(recording, Picks(1, 2), sigma=0.75)
    dual = DualSmoothed(router, [_net(1, 2), _net(2, 2)], [0.25, 0.5], 0.75, num_classes=2)
    x = torch.full((1, 2, 2, 2), 0.5)
    dual.certify_batch(x, n0=20, n=400, alpha=0.01, seed=1)
    z = torch.cat([c for c, _ in recording.calls])
    assert {s for _, s in recording.calls} == {0.75}
    assert z.shape[0] == 420  # n0 + n router samples, each one noisy copy
    delta = z - x
    assert abs(float(delta.mean())) < 0.05 and abs(float(delta.std()) - 0.75) < 0.03
    # and what the network gets is the denoiser's output clamped to [0, 1]
    out = router.denoise(torch.tensor([[-1.0, 0.3, 2.0]]))
    assert out.tolist() == [[0.0, pytest.approx(0.3), 1.0]]


@pytest.mark.parametrize("entry_id", ["embedded-fmnist-ddpm", "embedded-fmnist-denoised"])
def test_denoiser_is_frozen_and_deterministic_in_train_mode_too(entry_id: str) -> None:
    denoiser = _embedded_denoiser(entry_id)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 3))
    router = DenoisedRouter(denoiser, net, sigma=1.0).train()
    assert router.training and net.training and not denoiser.training
    assert all(not p.requires_grad for p in denoiser.parameters())
    z = torch.rand(6, 1, 28, 28) + torch.randn(6, 1, 28, 28)
    torch.manual_seed(1)
    first = router(z)
    torch.manual_seed(2)  # another global RNG state: nothing inside draws from it
    second = router(z)
    assert torch.equal(first, second)
    assert torch.equal(router.denoise(z), router.eval().denoise(z))
    router.train()
    router(z).sum().backward()
    assert net[1].weight.grad is not None
    assert all(p.grad is None for p in denoiser.parameters())


def test_ddpm_one_step_denoiser_has_no_dropout_and_a_fixed_timestep() -> None:
    from rsbench.models.denoised import DiffusionDenoiser

    denoiser = _embedded_denoiser("embedded-fmnist-ddpm")
    assert isinstance(denoiser, DiffusionDenoiser)
    dropouts = [m for m in denoiser.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    assert dropouts == []
    assert all(
        not isinstance(m, nn.modules.batchnorm._BatchNorm) for m in denoiser.modules()
    )  # no running statistics
    assert denoiser.timestep(1.0) == denoiser.timestep(1.0) == 396


def test_multiply_adds_known_answers_and_the_declared_cost() -> None:
    conv = nn.Conv2d(1, 2, 3)  # 2 x 3 x 3 outputs, 9 multiply-adds each
    assert multiply_adds(conv, torch.zeros(1, 1, 5, 5)) == 162
    assert multiply_adds(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), torch.zeros(1, 4)) == 12
    entry = parse_entry(_router_raw())
    assert router_forwards(entry) == 41.5
    assert math.isnan(router_forwards({"kind": "router", "router_input": {"type": "denoised"}}))


def _router_raw(**overrides) -> dict:
    raw = {
        "id": "d-router",
        "kind": "router",
        "dataset": "fashion-mnist",
        "num_classes": 2,
        "input_shape": [1, 28, 28],
        "arch": "pooled_mlp",
        "train_sigma": 1.0,
        "experts": EXPERTS,
        "input_layer": {"type": "none"},
        "router_input": {
            "type": "denoised",
            "denoiser": "embedded-fmnist-ddpm",
            "sigma": 1.0,
            "forwards": 41.5,
        },
        "source": {"type": "file", "path": "d.safetensors"},
    }
    raw.update(overrides)
    return raw


def _with_input(**changes) -> dict:
    spec = dict(_router_raw()["router_input"])
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


def test_denoised_router_input_round_trips() -> None:
    entry = parse_entry(_router_raw())
    assert parse_entry(entry.to_yaml_dict()) == entry
    assert (
        entry.router_input is not None and entry.router_input["denoiser"] == "embedded-fmnist-ddpm"
    )


@pytest.mark.parametrize(
    ("router_input", "arch", "message"),
    [
        (_with_input(denoiser=None), "pooled_mlp", "router_input.denoiser.*is required"),
        (_with_input(sigma=None), "pooled_mlp", "router_input.sigma.*is required"),
        (_with_input(forwards=None), "pooled_mlp", "router_input.forwards.*is required"),
        (_with_input(forwards=0), "pooled_mlp", "not a number > 0"),
        (_with_input(experts=EXPERTS), "pooled_mlp", "router_input.experts.*unknown field"),
        (_with_input(), "head_mlp", "head over experts"),
    ],
)
def test_denoised_router_input_schema_errors(router_input: dict, arch: str, message: str) -> None:
    with pytest.raises(ZooError, match=message) as error:
        parse_entry(_router_raw(router_input=router_input, arch=arch))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"denoiser": "embedded-fmnist-ddpmm"}, "unknown id 'embedded-fmnist-ddpmm'.*did you mean"),
        ({"denoiser": "embedded-fmnist-s1.00"}, "is a expert, not a denoised"),
        ({"sigma": 0.75}, "0.75 is not served by 'embedded-fmnist-ddpm'"),
    ],
)
def test_zoo_refuses_a_router_whose_denoiser_is_not_a_served_denoised_entry(
    tmp_path, changes: dict, message: str
) -> None:
    from rsbench.zoo.registry import load_zoo

    path = tmp_path / "zoo.yaml"
    raw = _router_raw(router_input=_with_input(**changes))
    path.write_text(yaml.safe_dump({"models": [raw]}))
    with pytest.raises(ZooError, match=message) as error:
        load_zoo([path])
    assert "\n" not in str(error.value) and "router_input" in str(error.value)


def test_loading_refuses_a_denoiser_other_than_the_one_it_was_trained_with(tmp_path) -> None:
    from rsbench.models.loading import load_model
    from rsbench.zoo.registry import load_zoo

    path = tmp_path / "zoo.yaml"
    raw = _router_raw(router_input=_with_input(denoiser_identity="sha256:" + "0" * 64))
    path.write_text(yaml.safe_dump({"models": [raw]}))
    zoo = load_zoo([path])
    with pytest.raises(ZooError, match="retrain the router or pin the denoiser") as error:
        load_model(zoo.get("d-router"), zoo=zoo)
    assert "\n" not in str(error.value)


def _train_args(tmp_path: Path, zoo_file: Path, *extra: str) -> list[str]:
    args = ["train", "router", *EXPERTS, "--id", "dn-router", "--dual-id", "dn-dual"]
    args += ["--router-input", "denoised", "--denoiser", "embedded-fmnist-denoised"]
    args += ["--dataset", "fashion-mnist-embedded", "--split", "test", "--indices", "0:48"]
    args += ["--epochs", "1", "--batch-size", "16", "--label-n", "20"]
    args += ["--label-cache", str(tmp_path / "labels"), "--out", str(tmp_path / "r")]
    return [*args, "--zoo-file", str(zoo_file), "--threads", "1", *extra]


@pytest.mark.parametrize(
    ("denoiser", "message"),
    [
        ("embedded-fmnist-nope", "denoiser 'embedded-fmnist-nope' is not in the zoo"),
        ("embedded-fmnist-s1.00", "is a expert entry, not a denoised one"),
    ],
)
def test_cli_train_refuses_a_bad_denoiser_in_one_line(tmp_path, capsys, denoiser, message) -> None:
    from rsbench.cli.main import main

    args = _train_args(tmp_path, tmp_path / "z.yaml")
    args[args.index("--denoiser") + 1] = denoiser
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "labels").exists()  # refused before any labelling


def test_cli_train_denoised_router_replays_and_its_dual_certifies(tmp_path) -> None:
    from click.testing import CliRunner

    from rsbench.api import load_dual
    from rsbench.cli.main import main, main_group
    from rsbench.data.dataset import load_dataset
    from rsbench.models.loading import load_model
    from rsbench.zoo.entry import thaw
    from rsbench.zoo.files import read_zoo_file
    from rsbench.zoo.registry import load_zoo

    runner = CliRunner()
    zoo_file = tmp_path / "dual.yaml"
    result = runner.invoke(main_group, _train_args(tmp_path, zoo_file), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    router, dual = read_zoo_file(zoo_file)
    spec = thaw(router.router_input)
    assert spec["type"] == "denoised" and spec["denoiser"] == "embedded-fmnist-denoised"
    assert spec["sigma"] == 1.0 and spec["denoiser_identity"].startswith("sha256:632fc574")
    assert 5 < spec["forwards"] < 100  # small_denoiser + pooled_mlp, by multiply-adds
    assert router.arch == "pooled_mlp" and router.trained_on["indices"] == "0:48"
    assert router_forwards(router) == spec["forwards"]
    command = router.recipe["command"]
    assert "--router-input denoised --denoiser embedded-fmnist-denoised" in command
    assert "--features" not in command and router.recipe["denoiser"] == "embedded-fmnist-denoised"

    zoo = load_zoo([zoo_file])
    model = load_model(router, zoo=zoo)
    assert isinstance(model, DenoisedRouter) and not model.training
    assert model.weights_sha256 == router.sha256
    images = load_dataset("fashion-mnist", "embedded").images([200, 201])
    assert len(load_dual(zoo, "dn-dual").certify_batch(images, 10, 50, 0.01)) == 2

    # the recorded command re-runs as written and gives the same weights (labels from the cache)
    shutil.move(tmp_path / "r", tmp_path / "r-first")
    zoo_file.unlink()
    words = shlex.split(command)
    assert words[:3] == ["rsbench", "train", "router"]
    again = runner.invoke(main_group, words[1:], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert read_zoo_file(zoo_file)[0].sha256 == router.sha256

    # rsbench certify of the dual: on images the router did not train on, rows are written; its
    # training images are refused
    certify = ["certify", "dn-dual", "--zoo", str(zoo_file), "--dataset", "fashion-mnist"]
    certify += ["--split", "embedded", "--n0", "10", "--n", "50", "--threads", "1"]
    certify += ["--out", str(tmp_path / "runs"), "--no-leaderboard"]
    with pytest.raises(SystemExit) as refused:
        main([*certify, "--indices", "40:50"])
    assert refused.value.code != 0
    main([*certify, "--indices", "96:98"])
    runs = list((tmp_path / "runs").glob("dn-dual-*"))
    assert len(runs) == 1 and list(runs[0].glob("part-*.parquet"))
    run = yaml.safe_load((runs[0] / "run.json").read_text())
    recorded = [m["entry"] for m in run["models"] if m["entry"]["kind"] == "router"]
    assert recorded and recorded[0]["router_input"]["type"] == "denoised"

"""Architectures, the input layer, and strict loading of Cohen-format checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from rsbench.errors import WeightsError, ZooError
from rsbench.models.archs import ARCHITECTURES, build_architecture
from rsbench.models.loading import load_model
from rsbench.models.network import InputLayer, build_model, check_state_dict
from rsbench.zoo.entry import SourceSpec
from rsbench.zoo.parse import parse_entry
from rsbench.zoo.registry import load_zoo

LAYOUTS = Path(__file__).resolve().parent / "data" / "checkpoint_layouts.tsv"
PREFIX = {"cifar_resnet20": "1.", "cifar_resnet110": "1.", "resnet50": "1.module."}
SHAPES = {"resnet50": (3, 64, 64), "fmnist_cnn": (1, 28, 28), "mlp": (1, 28, 28)}


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.delenv("RSBENCH_ZOO", raising=False)
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))


def published_layout(arch: str) -> dict[str, tuple[int, ...]]:
    """checkpoint_layouts.tsv rows for ``arch``: key (with its prefix) -> shape."""
    out = {}
    for line in LAYOUTS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, key, shape = line.split("\t")
        if name == arch:
            out[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return out


# --------------------------------------------------------------------------------------------------
# input layer


def test_input_layer_known_values_and_no_state():
    x = torch.tensor([[[[0.5]], [[1.0]]]])  # [1, 2, 1, 1]
    normalize = InputLayer("normalize", [0.25, 0.5], [0.5, 0.25])
    assert torch.equal(normalize(x).flatten(), torch.tensor([0.5, 2.0]))
    center = InputLayer("center", [0.25, 0.5])
    assert torch.equal(center(x).flatten(), torch.tensor([0.25, 0.5]))
    assert InputLayer("none")(x) is x
    for layer in (normalize, center, InputLayer("none")):
        assert layer.state_dict() == {}  # non-persistent: never part of a checkpoint
    moved = normalize.to(torch.float64)
    assert moved.mean.dtype == torch.float64 and moved(x.double()).dtype == torch.float64
    with pytest.raises(ZooError):
        InputLayer("normalize", [0.5], None)
    with pytest.raises(ZooError):
        InputLayer("whiten")
    with pytest.raises(ZooError, match="<= 0"):
        InputLayer("normalize", [0.5], [0.0])


# --------------------------------------------------------------------------------------------------
# architectures


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_registered_architecture_builds_and_runs(name):
    shape = SHAPES.get(name, (3, 32, 32))
    torch.manual_seed(0)
    net = build_architecture(name, num_classes=7, input_shape=shape).eval()
    with torch.no_grad():
        out = net(torch.rand(2, *shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["timm:resnet10t", "torchvision:resnet18"])
def test_timm_and_torchvision_names(name):
    net = build_architecture(name, num_classes=5, input_shape=(3, 32, 32)).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 32, 32)).shape == (1, 5)


def test_cifar_resnet_accepts_grayscale_input_shape():
    net = build_architecture("cifar_resnet20", num_classes=10, input_shape=(1, 28, 28)).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("arch", ["cifar_resnet20", "cifar_resnet110", "resnet50"])
def test_state_dict_layout_equals_published_checkpoints(arch):
    layout = published_layout(arch)
    num_classes = 1000 if arch == "resnet50" else 10
    net = build_architecture(arch, num_classes=num_classes)
    ours = {PREFIX[arch] + k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert list(ours) == list(layout)  # same keys, same order
    assert ours == layout


# --------------------------------------------------------------------------------------------------
# Cohen-format checkpoints load strictly


def cohen_checkpoint(path: Path, net: nn.Module, arch: str, prefix: str) -> Path:
    """Save ``net`` the way Cohen et al.'s train.py does (Sequential(normalize, net) + optimizer)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.save(
        {
            "epoch": 90,
            "arch": arch,
            "state_dict": {prefix + k: v for k, v in net.state_dict().items()},
            "optimizer": optimizer.state_dict(),
        },
        path,
    )
    return path


@pytest.mark.parametrize(
    "model_id",
    [
        "cohen-cifar10-resnet110-s0.25",
        "smoothadv-cifar10-resnet110-pgd2-m8-eps255-s0.25",
        "cohen-imagenet-resnet50-s0.50",
    ],
)
def test_cohen_format_checkpoint_round_trips_strictly(tmp_path, model_id):
    entry = load_zoo().get(model_id)
    torch.manual_seed(1)
    reference = build_model(entry).eval()
    for module in reference.modules():  # non-trivial BN statistics, so a wrong load shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = cohen_checkpoint(
        tmp_path / "checkpoint.pth.tar", reference[1], entry.arch, entry.checkpoint.strip_prefix
    )
    local = dataclasses.replace(entry, source=SourceSpec(type="file", path=str(path)))
    model = load_model(local)
    assert not model.training and model.zoo_id == model_id and not model.weights_pinned
    size = 64 if entry.dataset == "imagenet" else 32
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    # the whole model's state dict is the checkpoint's, key for key (the input layer adds nothing)
    saved = torch.load(path, weights_only=True)["state_dict"]
    if entry.checkpoint.strip_prefix == "1.":
        assert list(model.state_dict()) == list(saved)
    if entry.input_layer.type == "center":
        with torch.no_grad():
            assert torch.equal(model[0](x), x - torch.tensor(entry.input_layer.mean).view(3, 1, 1))


def test_mismatches_name_the_keys(tmp_path):
    entry = load_zoo().get("cohen-cifar10-resnet110-s0.25")
    small = build_architecture("cifar_resnet20", num_classes=10)
    path = cohen_checkpoint(tmp_path / "ck.pth.tar", small, "cifar_resnet20", "1.")
    local = dataclasses.replace(entry, source=SourceSpec(type="file", path=str(path)))
    with pytest.raises(WeightsError, match=r"missing: layer1\.3\.conv1\.weight.*\(\+\d+ more\)"):
        load_model(local)
    wrong_prefix = dataclasses.replace(
        local, checkpoint=dataclasses.replace(local.checkpoint, strip_prefix="1.module.")
    )
    with pytest.raises(WeightsError, match="key '1.conv1.weight' lacks checkpoint.strip_prefix"):
        load_model(wrong_prefix)
    no_key = dataclasses.replace(
        local, checkpoint=dataclasses.replace(local.checkpoint, state_dict_key="model")
    )
    with pytest.raises(
        WeightsError, match=r"no 'model' \(checkpoint.state_dict_key\); top level: \['epoch'"
    ):
        load_model(no_key)
    no_key_set = dataclasses.replace(
        local, checkpoint=dataclasses.replace(local.checkpoint, state_dict_key=None)
    )
    with pytest.raises(WeightsError, match="'epoch' in the checkpoint is a int, not a tensor"):
        load_model(no_key_set)
    ten = build_architecture("cifar_resnet110", num_classes=100)
    with pytest.raises(WeightsError, match=r"shape: fc\.weight \(100, 64\) vs \(10, 64\)"):
        check_state_dict(build_architecture("cifar_resnet110", num_classes=10), ten.state_dict())


def test_dual_entries_are_not_models(tmp_path):
    dual = parse_entry(
        {"id": "d", "kind": "dual", "dataset": "cifar10", "router": "r", "experts": ["a", "b"]}
    )
    with pytest.raises(ZooError, match="dual"):
        build_model(dual)
    with pytest.raises(ZooError, match="dual"):
        load_model(dual)


def test_model_moves_with_its_input_layer():
    entry = load_zoo().get("cohen-cifar10-resnet110-s0.50")
    model = build_model(entry).to(torch.float64).eval()
    assert model[0].mean.dtype == torch.float64
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64

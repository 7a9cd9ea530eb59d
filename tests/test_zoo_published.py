"""The published zoo entries, checked against the authors' own records.

* Layout (generated from model_zoo.yaml, like timm's registry test): for every entry that names a
  published checkpoint, its architecture (built once per arch on the meta device) and its input layer
  give state-dict keys (with ``checkpoint.strip_prefix`` put back) and shapes equal to the layout of the
  checkpoints the authors' training code saves (tests/data/checkpoint_layouts.tsv). A wrong arch,
  prefix, class count or an input layer with state fails here.
* SmoothAdv entries: exactly the best models of the authors' final best-model tables
  (tests/data/smoothadv_best_models, commit cff781d), member paths spelt like the authors' certify
  paths, and reported numbers equal to the table at the radii where the model is best.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from rsbench.models.archs import build_architecture
from rsbench.models.network import input_layer_for
from rsbench.zoo.registry import load_zoo

DATA = Path(__file__).resolve().parent / "data"
PUBLISHED = [
    e for e in load_zoo(include_packaged=True) if e.source and e.source.type == "archive_url"
]


def layouts() -> dict[str, dict[str, tuple[int, ...]]]:
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for line in (DATA / "checkpoint_layouts.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        arch, key, shape = line.split("\t")
        out.setdefault(arch, {})[key] = tuple(int(v) for v in shape.strip("()").split(",") if v)
    return out


LAYOUTS = layouts()


def test_every_published_entry_is_checked():
    assert (
        len(PUBLISHED) == 4 + 3 + 10 + 8
    )  # Cohen CIFAR-10 + ImageNet, SmoothAdv CIFAR-10 + ImageNet


@functools.cache
def net_layout(arch: str, num_classes: int, input_shape: tuple[int, ...]) -> dict:
    """Keys and shapes of the architecture's state dict, and its output shape for one input."""
    with torch.device("meta"):  # no memory, no init
        net = build_architecture(arch, num_classes, input_shape)
        out = net(torch.empty((1, *input_shape)))
    return {"state": {k: tuple(v.shape) for k, v in net.state_dict().items()}, "out": out.shape}


@pytest.mark.parametrize("entry", PUBLISHED, ids=lambda e: e.id)
def test_published_entry_matches_the_checkpoint_layout(entry):
    assert entry.arch in LAYOUTS, f"no published layout for {entry.arch}"
    built = net_layout(entry.arch, entry.num_classes, entry.input_shape)
    assert input_layer_for(entry).state_dict() == {}, "the input layer must hold no state"
    prefix = entry.checkpoint.strip_prefix or ""
    assert entry.checkpoint.state_dict_key == "state_dict"
    assert {prefix + key: shape for key, shape in built["state"].items()} == LAYOUTS[entry.arch]
    assert tuple(built["out"]) == (1, entry.num_classes)


def best_models(name: str) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {}
    lines = (DATA / "smoothadv_best_models" / f"{name}.tsv").read_text().splitlines()
    for line in lines[1:]:
        radius, accuracy, model = line.split("\t")
        out.setdefault(model, {})[float(radius)] = float(accuracy)
    return out


@pytest.mark.parametrize(("dataset", "images"), [("cifar10", 10_000), ("imagenet", 500)])
def test_smoothadv_entries_are_the_final_best_models(dataset, images):
    table = best_models(f"{dataset}_ours")
    entries = load_zoo().select(f"smoothadv-{dataset}-")
    by_member = {e.source.member: e for e in entries}
    expected = {f"pretrained_models/{model}/checkpoint.pth.tar" for model in table}
    assert set(by_member) == expected  # none missing, none extra
    for model, accuracy in table.items():
        entry = by_member[f"pretrained_models/{model}/checkpoint.pth.tar"]
        assert dict(entry.reported["certified_accuracy"]) == accuracy, entry.id
        assert entry.reported["num_images"] == images and "cff781d" in entry.reported["source"]
        assert f"noise_{entry.train_sigma:.2f}" in model and model in entry.description
        # README of the authors: imagenet/ and cifar10/ (but pretraining/self-training) centre only
        assert entry.input_layer.type == "center" and entry.input_layer.std is None

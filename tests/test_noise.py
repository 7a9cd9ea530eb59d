"""Noise keys: distinct keys give distinct streams; no purpose or split shares noise with another."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from rsbench.engine.noise import NOISE_SCHEME, PURPOSES, NoiseKey, _mt_generator, noise_keys

BASE = NoiseKey("fashion-mnist", "test", 7, "estimate", 0)


def first_rows(key: NoiseKey, rows: int = 4, dim: int = 64) -> torch.Tensor:
    return torch.randn((rows, dim), generator=key.generator())


def variants() -> list[NoiseKey]:
    """Keys that differ from BASE (and from each other) in one or more fields."""
    keys = [replace(BASE, purpose=p) for p in PURPOSES]
    keys += [replace(BASE, split=s) for s in ("train", "val", "embedded")]
    keys += [replace(BASE, dataset=d) for d in ("cifar10", "imagenet", "unnamed")]
    keys += [replace(BASE, stage=s) for s in (1, 2)]
    keys += [replace(BASE, index=i) for i in (0, 8, 2**32 + 7)]
    keys += [replace(BASE, seed=s) for s in (1, 2**32)]
    keys += [replace(BASE, purpose="label-select", split="train")]
    return list(dict.fromkeys(keys))


def test_every_pair_of_keys_gives_different_streams() -> None:
    keys = variants()
    assert len(keys) == len({k.encode() for k in keys})  # the encoding is injective on them
    streams = [first_rows(k) for k in keys]
    for (a, sa), (b, sb) in itertools.combinations(zip(keys, streams), 2):
        assert not torch.equal(sa, sb), (a, b)
        assert not torch.isclose(sa, sb).any(), (a, b)  # no shifted or partial overlap either


def test_every_purpose_split_dataset_and_stage_pair_differs() -> None:
    fields = {
        "purpose": PURPOSES,
        "split": ("train", "test", "val"),
        "dataset": ("fashion-mnist", "cifar10"),
        "stage": (0, 1, 2),
    }
    for name, values in fields.items():
        seen = {}
        for value in values:
            key = replace(BASE, **{name: value})
            seen[value] = first_rows(key, rows=1).flatten()
        for a, b in itertools.combinations(values, 2):
            assert not torch.equal(seen[a], seen[b]), (name, a, b)


def test_a_key_gives_the_same_stream_every_time_and_is_a_value() -> None:
    again = NoiseKey("fashion-mnist", "test", 7, "estimate", 0)
    assert again == BASE and hash(again) == hash(BASE)
    assert torch.equal(first_rows(again), first_rows(BASE))
    with pytest.raises(AttributeError):
        BASE.index = 3  # type: ignore[misc]


def test_cpu_streams_use_the_whole_generator_state_not_32_bits_of_a_seed() -> None:
    # torch keeps only the low 32 bits of a CPU seed: these two manual seeds give one stream
    same = [torch.randn(3, generator=torch.Generator().manual_seed(s)) for s in (5, 5 + 2**32)]
    assert torch.equal(*same)
    # a key's state is 624 words of SHAKE-256 output: a change in the last word changes the stream
    material = bytearray(BASE.digest(4 * 624))
    other = bytearray(material)
    other[-1] ^= 1
    a = torch.randn(700, generator=_mt_generator(bytes(material), 0))
    b = torch.randn(700, generator=_mt_generator(bytes(other), 0))
    assert not torch.equal(a, b)
    state = BASE.generator().get_state().numpy().tobytes()
    words = np.frombuffer(state, "<u8", 624, 24)
    assert np.array_equal(words, np.frombuffer(BASE.digest(4 * 624), "<u4"))
    assert BASE.encode().startswith(f'["rsbench-noise",{NOISE_SCHEME},'.encode())


@pytest.mark.parametrize(
    "bad",
    [
        dict(purpose="estimation"),
        dict(dataset=""),
        dict(split=None),
        dict(index=-1),
        dict(stage=-1),
        dict(seed=1.5),
        dict(index=True),
    ],
)
def test_bad_keys_are_refused(bad) -> None:
    fields = {"dataset": "d", "split": "test", "index": 0, "purpose": "select", "seed": 0} | bad
    with pytest.raises(ValueError):
        NoiseKey(**fields)


class Identity(nn.Module):
    """Logits = the first coordinates of the noisy input: the vote reveals the noise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3]


def _label_and_test_noise(rows: int):
    """The first draws of the router label stage on training image i, and of test image i."""
    from rsbench.engine.smoothing import SmoothedClassifier

    smoothed = SmoothedClassifier(Identity(), 3, sigma=1.0, batch_size=rows)
    seen: dict[str, torch.Tensor] = {}

    def spy(name):
        def hook(module, args):
            seen[name] = args[0].detach().clone()

        return hook

    image = torch.zeros(1, 1, 4, 4)
    handle = smoothed.base.register_forward_pre_hook(spy("label"))
    smoothed.votes(image, rows, noise_keys("fashion-mnist", "train", [3], "label-estimate", 0))
    handle.remove()
    handle = smoothed.base.register_forward_pre_hook(spy("test"))
    smoothed.certify_batch(
        image, rows, rows, 0.001, seed=0, indices=[3], dataset="fashion-mnist", split="test"
    )
    handle.remove()
    return seen["label"], seen["test"]


def test_router_label_noise_is_not_the_noise_that_certifies_the_test_image() -> None:
    label, test = _label_and_test_noise(100)
    assert label.shape == test.shape == (100, 1, 4, 4)
    assert not torch.equal(label, test)
    assert not torch.isclose(label, test).any()


class TrainData:
    """Six 1x4x4 'training images' of fashion-mnist/train."""

    name = source_name = "fashion-mnist"
    split = "train"
    source_indices = torch.arange(6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])

    def images(self, indices):
        g = torch.Generator().manual_seed(0)
        return torch.rand(6, 1, 4, 4, generator=g)[list(indices)]


def test_the_label_stage_draws_from_label_keys_on_the_training_split(tmp_path) -> None:
    """label_radii's counts equal votes from the label-select/label-estimate keys of train images."""
    from rsbench.engine.smoothing import SmoothedClassifier, certify_from_counts
    from rsbench.train.router_labels import LabelBudget, label_radii

    data = TrainData()
    budget = LabelBudget(n0=10, n=50, alpha=0.01, seed=0)
    radii = label_radii(Identity(), "id", "sha", 0.5, 3, data, range(6), budget, tmp_path)
    smoothed = SmoothedClassifier(Identity(), 3, 0.5)
    images = data.images(range(6))
    counts0 = smoothed.votes(
        images, 10, noise_keys("fashion-mnist", "train", range(6), "label-select", 0)
    )
    counts = smoothed.votes(
        images, 50, noise_keys("fashion-mnist", "train", range(6), "label-estimate", 0)
    )
    decision = certify_from_counts(counts0, counts, 0.01, 0.5)
    expected = np.where(decision["prediction"] == data.labels.numpy(), decision["radius"], 0.0)
    assert np.array_equal(radii, expected)
    # and they are not the test-time certificates of the same indices
    test = smoothed.certify_batch(images, 10, 50, 0.01, indices=range(6), dataset="fashion-mnist")
    assert [c.nA for c in test] != decision["nA"].tolist()


def test_test_time_streams_are_none_of_the_training_streams() -> None:
    """Every purpose used at test time differs from every purpose used in training, per index."""
    test_purposes = (
        "select",
        "estimate",
        "predict",
        "router-select",
        "router-estimate",
        "router-predict",
    )
    training_purposes = (
        "label-select",
        "label-estimate",
        "router-assign",
        "training",
        "router-training",
        "denoiser-training",
        "attack",
    )
    assert set(test_purposes) | set(training_purposes) == set(PURPOSES)
    train = {
        first_rows(NoiseKey("fashion-mnist", split, i, p, 0), rows=1)
        .flatten()[:8]
        .numpy()
        .tobytes()
        for p in training_purposes
        for split in ("train", "test")
        for i in range(20)
    }
    for p in test_purposes:
        for i in range(20):
            row = first_rows(NoiseKey("fashion-mnist", "test", i, p, 0), rows=1).flatten()[:8]
            assert row.numpy().tobytes() not in train


@pytest.mark.parametrize("old", [None, 1])
def test_a_label_cache_of_another_noise_scheme_is_refused(tmp_path, old) -> None:
    from rsbench.errors import ConfigError
    from rsbench.train.router_labels import LabelBudget, label_dir, label_key, label_radii

    budget = LabelBudget(n0=10, n=50, alpha=0.01, seed=0)
    key = label_key("id", "sha", 0.5, budget, "fashion-mnist", "train", "cpu")
    assert key["noise_scheme"] == NOISE_SCHEME and key["device_type"] == "cpu"
    assert label_dir(tmp_path, key) != label_dir(tmp_path, {**key, "device_type": "cuda"})
    args = (Identity(), "id", "sha", 0.5, 3, TrainData(), range(6), budget, tmp_path)
    first = label_radii(*args)
    key_file = label_dir(tmp_path, key) / "key.json"
    assert json.loads(key_file.read_text()) == key
    assert np.array_equal(label_radii(*args), first)  # same scheme: read back from the cache
    stale = dict(key)
    if old is None:
        del stale["noise_scheme"]
    else:
        stale["noise_scheme"] = old
    key_file.write_text(json.dumps(stale))
    with pytest.raises(ConfigError, match="noise scheme.*delete that folder or pass another"):
        label_radii(*args)

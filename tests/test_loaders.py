"""rsbench.api: load_dual / load_cascade are kind-checked rsbench.load, nothing more."""

from __future__ import annotations

import pytest
import torch

import rsbench
from rsbench.api import load_cascade, load_dual
from rsbench.engine.cascade import CascadeSmoothed
from rsbench.engine.dual import DualSmoothed
from rsbench.errors import ConfigError
from rsbench.zoo.registry import load_zoo

DUAL = "embedded-fmnist-dual"
CASCADE = "embedded-fmnist-cascade"


@pytest.fixture(scope="module")
def zoo():
    return load_zoo()


@pytest.mark.parametrize(
    ("loader", "model_id", "needle"),
    [
        (load_dual, CASCADE, "is a cascade entry, not a dual one"),
        (load_dual, "embedded-fmnist-s0.25", "is an expert entry, not a dual one"),
        (load_cascade, DUAL, "is a dual entry, not a cascade one"),
    ],
)
def test_an_entry_of_another_kind_is_refused_before_anything_loads(zoo, loader, model_id, needle):
    with pytest.raises(ConfigError, match=needle):
        loader(zoo, model_id)


def test_the_loaders_give_what_rsbench_load_gives(zoo):
    """Same values (resolved once, by runconfig.resolve_config) and the same certificates."""
    images, indices = torch.rand(2, 1, 28, 28), [3, 8]
    dual = load_dual(zoo, zoo.get(DUAL), sigma_router=1.0)  # an entry works like its id
    same = rsbench.load(DUAL, zoo, device="cpu", batch_size=1000, sigma_router=1.0)
    assert isinstance(dual, DualSmoothed) and isinstance(same, DualSmoothed)
    assert (dual.sigmas, dual.sigma_router, dual.alpha_router_fraction) == (
        (0.25, 0.5, 1.0),
        1.0,
        0.5,
    )
    args = (images, 20, 100, 0.01, 1, indices)
    assert dual.certify_batch(*args, dataset="fashion-mnist") == same.certify_batch(
        *args, dataset="fashion-mnist"
    )
    cascade = load_cascade(zoo, CASCADE, p0=0.6)
    assert isinstance(cascade, CascadeSmoothed)
    assert cascade.sigmas == (1.0, 0.5, 0.25) and cascade.p0 == 0.6
    assert cascade.alpha_split == "union"

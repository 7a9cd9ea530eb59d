"""A tiny user zoo for runner/CLI tests: linear experts and router over 1x28x28 images.

Everything is written into a temporary folder: the architecture file (``tiny_arch.py:linear``), the
safetensors weights (fixed seeds), and a zoo YAML with two experts, a router and a dual entry. The
models certify the embedded Fashion-MNIST images in milliseconds, so the tests stay fast while going
through the real zoo -> weights -> models -> smoothing/dual -> runner -> results path.
"""

from __future__ import annotations

from pathlib import Path

ARCH = """
from torch import nn


def linear(num_classes, input_shape=None):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))
"""

EXPERTS = ("tiny-s0.25", "tiny-s0.50")


def write_weights(path: Path, num_classes: int, seed: int) -> None:
    """Nearest-centroid weights from the embedded images (10 classes) or random ones (router)."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    if num_classes == 10:
        from rsbench.data.dataset import load_dataset

        data = load_dataset("fashion-mnist", "embedded")
        x = data.images(range(len(data))).flatten(1)
        means = torch.stack([x[data.labels == c].mean(0) for c in range(10)])
        weight = means + 0.01 * torch.randn(means.shape, generator=gen)
        bias = -0.5 * (weight**2).sum(1)
    else:
        weight = torch.randn(num_classes, 784, generator=gen) * 0.05
        bias = torch.zeros(num_classes)
    save_file({"1.weight": weight.contiguous(), "1.bias": bias.contiguous()}, str(path))


def make_zoo(folder: Path) -> Path:
    """Write the tiny zoo into ``folder`` and return the zoo YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny_arch.py").write_text(ARCH)
    for i, expert in enumerate(EXPERTS):
        write_weights(folder / f"{expert}.safetensors", 10, seed=i + 1)
    write_weights(folder / "tiny-router.safetensors", len(EXPERTS), seed=7)
    entries = []
    for expert in EXPERTS:
        sigma = float(expert.split("-s")[1])
        entries.append(
            f"""  - id: {expert}
    kind: expert
    dataset: fashion-mnist
    num_classes: 10
    input_shape: [1, 28, 28]
    arch: tiny_arch.py:linear
    train_sigma: {sigma}
    input_layer: {{type: none}}
    source: {{type: file, path: {expert}.safetensors}}
    sha256: null
"""
        )
    entries.append(
        f"""  - id: tiny-router
    kind: router
    dataset: fashion-mnist
    num_classes: {len(EXPERTS)}
    input_shape: [1, 28, 28]
    arch: tiny_arch.py:linear
    train_sigma: 0.5
    experts: [{", ".join(EXPERTS)}]
    input_layer: {{type: none}}
    source: {{type: file, path: tiny-router.safetensors}}
    sha256: null
  - id: tiny-dual
    kind: dual
    dataset: fashion-mnist
    router: tiny-router
    experts: [{", ".join(EXPERTS)}]
    sigma_router: 0.5
    alpha_router_fraction: 0.5
"""
    )
    path = folder / "zoo.yaml"
    path.write_text("models:\n" + "".join(entries))
    return path

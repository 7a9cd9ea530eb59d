"""Small networks for 28x28 grayscale images (Fashion-MNIST, MNIST): the embedded experts.

They are sized for certification on a CPU: ``fmnist_cnn`` (about 104k parameters) classifies
10,000 noisy 28x28 images in roughly 0.1-0.15 s on two CPU cores (``bench/embedded_accuracy.py``
and the issue report give the measured figures), so one Cohen certificate with n = 10,000 costs
well under a second. Max-pooling is avoided on purpose: strided convolutions give the same
receptive field at a fraction of the CPU cost of pooling in PyTorch.

Neither network normalises its input; that is the model's input layer (:mod:`rsbench.models.network`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from rsbench.errors import ConfigError

_DEFAULT_SHAPE = (1, 28, 28)


def _shape(input_shape: Sequence[int] | None) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in (input_shape or _DEFAULT_SHAPE))
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape={list(shape)} is not [C, H, W] with positive sizes")
    return shape  # type: ignore[return-value]


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def fmnist_cnn(num_classes: int, input_shape: Sequence[int] | None = None) -> nn.Sequential:
    """A two-convolution LeNet-style network with strided convolutions (no pooling).

    Layout for ``input_shape = (C, H, W)``: conv 5x5/2 (C -> 8), ReLU, conv 3x3/2 (8 -> 32), ReLU,
    flatten, linear (-> 64), ReLU, linear (-> ``num_classes``). For 1x28x28 inputs: 103,610
    parameters with 10 classes. Layer names (``0.weight`` ... ``7.bias``) are the state-dict keys of
    the shipped embedded experts, so they must not change.
    """
    channels, height, width = _shape(input_shape)
    h = _conv_out(_conv_out(height, 5, 2, 2), 3, 2, 1)
    w = _conv_out(_conv_out(width, 5, 2, 2), 3, 2, 1)
    return nn.Sequential(
        nn.Conv2d(channels, 8, kernel_size=5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv2d(8, 32, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * h * w, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def mlp(
    num_classes: int, input_shape: Sequence[int] | None = None, hidden: Sequence[int] = (256, 128)
) -> nn.Sequential:
    """A fully connected ReLU network: flatten, then ``hidden`` layers, then ``num_classes`` logits.

    For 1x28x28 inputs and the default ``hidden = (256, 128)``: 235,146 parameters with 10 classes.
    """
    channels, height, width = _shape(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = channels * height * width
    for size in hidden:
        layers += [nn.Linear(width_in, int(size)), nn.ReLU()]
        width_in = int(size)
    layers.append(nn.Linear(width_in, num_classes))
    return nn.Sequential(*layers)


def pooled_mlp(
    num_classes: int,
    input_shape: Sequence[int] | None = None,
    pool: int = 4,
    hidden: int = 128,
) -> nn.Sequential:
    """A router network that costs almost nothing next to an expert: average-pool, then a small MLP.

    ``pool x pool`` average pooling (28x28 -> 7x7 for Fashion-MNIST) also averages the router's
    Gaussian noise down by a factor ``pool`` per pooled pixel; then one hidden ReLU layer of
    ``hidden`` units and ``num_classes`` (= number of experts) logits. For 1x28x28 inputs and 3
    experts: 6,787 parameters and about 7,000 multiply-adds per sample (``fmnist_cnn``: ~250,000),
    so the router stage of a dual certificate costs little more than its noise. Registry name:
    ``pooled_mlp``.
    """
    channels, height, width = (int(s) for s in (input_shape or (1, 28, 28)))
    if height < pool or width < pool:
        raise ConfigError(f"input {height}x{width} is smaller than the pooling window {pool}")
    features = channels * (height // pool) * (width // pool)
    return nn.Sequential(
        nn.AvgPool2d(pool),
        nn.Flatten(),
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )

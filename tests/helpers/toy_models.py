"""Base classifiers with known smoothed behaviour, shared by the engine and dual tests."""

from __future__ import annotations

import torch
from scipy.stats import norm
from torch import nn


class Constant(nn.Module):
    """Always predicts ``label``."""

    def __init__(self, label: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer(
            "logits", torch.nn.functional.one_hot(torch.tensor(label), num_classes).float()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


class Linear(nn.Module):
    """Binary linear classifier: class 1 where w . x + b > 0."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.register_buffer("w", w.flatten())
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([-score, score], dim=1)


class Threshold(nn.Module):
    """1-D classifier whose top class 0 has probability exactly ``p`` under N(0.5, sigma^2) inputs."""

    def __init__(self, p: float, sigma: float) -> None:
        super().__init__()
        self.cut = 0.5 + sigma * float(norm.ppf(p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        is_one = (x.flatten(1)[:, 0] > self.cut).float()
        return torch.stack([1 - is_one, is_one], dim=1)


class Bins(nn.Module):
    """1-D classifier whose classes have probabilities exactly ``probs`` under N(0.5, sigma^2) inputs.

    Class ``i`` is predicted where the input's first value falls in the ``i``-th quantile bin.
    """

    def __init__(self, probs: list[float], sigma: float) -> None:
        super().__init__()
        edges = torch.tensor([float(norm.ppf(q)) for q in torch.tensor(probs).cumsum(0)[:-1]])
        self.register_buffer("cuts", 0.5 + sigma * edges)
        self.classes = len(probs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = torch.bucketize(x.flatten(1)[:, 0].contiguous(), self.cuts)
        return torch.nn.functional.one_hot(label, self.classes).float()

"""A small noise-conditional denoiser for 28x28 grayscale images (the embedded denoised expert).

Contract of every rsbench denoiser (:mod:`rsbench.models.denoised`): ``denoiser(x_noisy, sigma)`` takes a
batch ``[B, C, H, W]`` of noisy images in [0, 1] pixel units (``x + N(0, sigma^2 I)``, not clipped)
and the noise level ``sigma`` (a float), and returns an estimate of the clean ``x`` of the same shape.

:class:`SmallDenoiser` predicts the noise (``eps``) and returns ``x_noisy - sigma * eps_hat``, the
parametrisation of diffusion models, so one network serves every noise level it was trained on. It
sees ``sigma`` as an extra constant input channel. Layout: pixel-unshuffle by 4 (28x28x2 ->
7x7x32: the image and the sigma channel), conv 3x3 (-> 64), two conv 3x3 (64 -> 64) with a
residual connection, conv 3x3 (64 -> 16 C), pixel-shuffle by 4 back to full resolution. For 1x28x28:
101,584 parameters. Working at 7x7 with wide convolutions is several times faster on a CPU than a
U-Net of the same quality at 28x28 (small-channel convolutions are memory-bound); still, one
denoiser pass costs about 15 ``fmnist_cnn`` passes: ``bench/denoised_throughput.py`` measures the
ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rsbench.models.archs.small import _shape


class SmallDenoiser(nn.Module):
    """Noise-conditional residual denoiser; see the module docstring for the layout and contract."""

    def __init__(self, channels: int = 1, width: int = 64, patch: int = 4) -> None:
        super().__init__()
        self.down = nn.PixelUnshuffle(patch)
        self.up = nn.PixelShuffle(patch)
        self.inp = nn.Conv2d((channels + 1) * patch * patch, width, 3, padding=1)
        self.mid1 = nn.Conv2d(width, width, 3, padding=1)
        self.mid2 = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, channels * patch * patch, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` at noise level ``sigma`` (a float, or one per image for training)."""
        if isinstance(sigma, torch.Tensor):
            scale = sigma.to(dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        else:
            scale = torch.full((1, 1, 1, 1), float(sigma), dtype=x.dtype, device=x.device)
        level = scale.expand(x.shape[0], 1, x.shape[2], x.shape[3])
        h = self.act(self.inp(self.down(torch.cat([x - 0.5, level], dim=1))))
        h = self.act(self.mid2(self.act(self.mid1(h)))) + h
        return x - scale * self.up(self.out(h))


def small_denoiser(num_classes: int, input_shape: Sequence[int] | None = None) -> SmallDenoiser:
    """Registry builder ``small_denoiser``: for a denoiser, ``num_classes`` is its channel count.

    Images must have height and width divisible by 4 (28x28, 32x32, ...).
    """
    channels, height, width = _shape(input_shape)
    if height % 4 or width % 4:
        from rsbench.errors import ConfigError

        raise ConfigError(
            f"small_denoiser needs height and width divisible by 4, got {height}x{width}"
        )
    return SmallDenoiser(channels=channels)

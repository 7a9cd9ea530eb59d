"""A small DDPM noise-prediction U-Net (diffusers ``UNet2DModel``) behind the one-step denoiser.

``small_ddpm_unet`` is the denoiser of the embedded diffusion-denoised experts: the module it
builds is a :class:`rsbench.models.denoised.DiffusionDenoiser` (the one-step path of Carlini et
al. 2023 that the published ``google/ddpm-cifar10-32`` entry also goes through) around

* a diffusers ``UNet2DModel`` predicting the noise ``eps`` of ``x_t = sqrt(abar_t) x0 +
  sqrt(1 - abar_t) eps`` (``x0`` in [-1, 1]), the DDPM convention;
* the ``alphas_cumprod`` of ``DDPMScheduler()``'s defaults: 1,000 steps, linear betas 1e-4 to
  0.02 (the schedule of ``google/ddpm-cifar10-32``);
* zero padding (pixel value 0, Fashion-MNIST's background) of the *noisy* input to a side that is a
  multiple of 8 (28x28 -> 32x32, 2 pixels each side) inside the model, after the noise: smoothing
  adds ``N(0, sigma^2 I)`` at the certified 28x28 resolution and the denoiser is part of the base
  model; the estimate is cropped back to the input's size;
* a space-to-depth step: the padded image is pixel-unshuffled by 2 (1x32x32 -> 4x16x16) before the
  U-Net and its noise estimate shuffled back, so the U-Net's convolutions run at 16x16, 8x8 and
  4x4 (about 3x cheaper on a CPU than the same U-Net at 32x32). This is a fixed, invertible
  reshuffle of pixels: the U-Net still predicts every pixel's ``eps``.

U-Net: ``block_out_channels`` (32, 64, 64), one ResNet layer per block, no attention,
``DownBlock2D`` / ``UpBlock2D``, GroupNorm with 8 groups; 1,047,460 parameters for 1x28x28
(about 4.2 MB of float32 safetensors). Needs ``diffusers`` (a base dependency of rsbench).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rsbench.models.archs.small import _shape

#: side lengths of the padded image must be a multiple of this (unshuffle 2, then two 2x downsamplings)
MULTIPLE = 8


class SpaceToDepthEps(nn.Module):
    """``eps_model(x_t, t)`` = pixel-shuffle(``unet``(pixel-unshuffle(``x_t``), ``t``)); ``unet`` is
    a diffusers ``UNet2DModel`` (its ``.sample``) with ``factor^2`` times the image's channels."""

    def __init__(self, unet: nn.Module, factor: int = 2) -> None:
        super().__init__()
        self.unet = unet
        self.down = nn.PixelUnshuffle(factor)
        self.up = nn.PixelShuffle(factor)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.up(self.unet(self.down(x_t), t).sample)


def ddpm_alphas_cumprod() -> torch.Tensor:
    """``alphas_cumprod`` of ``diffusers.DDPMScheduler()`` (1,000 steps, linear betas 1e-4..0.02)."""
    from diffusers import DDPMScheduler

    scheduler: Any = DDPMScheduler()
    return scheduler.alphas_cumprod.clone()


def small_ddpm_unet(num_classes: int, input_shape: Sequence[int] | None = None) -> nn.Module:
    """Registry builder ``small_ddpm_unet`` (a denoiser: ``num_classes`` is the channel count);
    see the module docstring. Random weights (torch's seeded default initialisation)."""
    from diffusers import UNet2DModel

    from rsbench.models.denoised import DiffusionDenoiser

    channels, height, width = _shape(input_shape)
    side = max(height, width)
    padded = -(-side // MULTIPLE) * MULTIPLE
    pad_h, pad_w = padded - height, padded - width
    if pad_h % 2 or pad_w % 2:
        from rsbench.errors import ConfigError

        raise ConfigError(
            f"small_ddpm_unet pads the image evenly to a multiple of {MULTIPLE}; {height}x{width} "
            f"would need an odd padding (use an even height and width)"
        )
    unet: Any = UNet2DModel(
        sample_size=padded // 2,
        in_channels=4 * channels,
        out_channels=4 * channels,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        add_attention=False,
    )
    return DiffusionDenoiser(
        SpaceToDepthEps(unet, 2), ddpm_alphas_cumprod(), pad=(pad_h // 2, pad_w // 2)
    )

"""A zoo file with ``tiny-unet-denoised``: a random ``small_ddpm_unet`` denoiser (seed 0) in front of
the shipped noise-free classifier ``embedded-fmnist-clean``, serving sigma 0.25, 0.5 and 1.0.

It runs the real diffusers U-Net path (one-step denoising, padding inside the model) end to end
without a trained denoiser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

SIGMAS = (0.25, 0.5, 1.0)
#: sha256 of rsbench/embedded/embedded-fmnist-clean.safetensors
CLEAN_SHA = "a74d918e33bdfc7035f7cfb9585b8386037ac9b7daa7f0f2c38b0b8845fb2c21"


def unet_denoised_zoo(
    folder: Path,
    denoiser_layer: dict[str, Any] | None = None,
    eps_std: float | None = None,
    name: str = "zoo.yaml",
) -> Path:
    """Write the U-Net's weights and the zoo file ``name`` into ``folder``; return the zoo file.

    ``denoiser_layer``: the denoiser's ``input_layer`` (default: none given). ``eps_std``: draw the
    U-Net's output convolution from N(0, eps_std^2), so the predicted noise is not exactly 0 (the
    default initialisation predicts eps = 0: the denoiser is then the identity on x + noise).
    """
    from safetensors.torch import save_file

    from rsbench.models.archs import build_architecture
    from rsbench.weights.cache import sha256_file

    torch.manual_seed(0)
    net = build_architecture("small_ddpm_unet", 1, (1, 28, 28))
    if eps_std is not None:
        torch.nn.init.normal_(net.eps_model.unet.conv_out.weight, std=eps_std)
    path = folder / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    denoiser: dict[str, Any] = {
        "arch": "small_ddpm_unet",
        "source": {"type": "file", "path": path.name},
        "sha256": sha256_file(path),
    }
    if denoiser_layer is not None:
        denoiser["input_layer"] = denoiser_layer
    entry = {
        "id": "tiny-unet-denoised",
        "kind": "denoised",
        "dataset": "fashion-mnist",
        "num_classes": 10,
        "input_shape": [1, 28, 28],
        "sigmas": list(SIGMAS),
        "denoiser": denoiser,
        "classifier": {
            "arch": "fmnist_cnn",
            "input_layer": {"type": "normalize", "mean": [0.286], "std": [0.353]},
            "source": {"type": "package", "path": "embedded/embedded-fmnist-clean.safetensors"},
            "sha256": CLEAN_SHA,
        },
    }
    zoo = folder / name
    zoo.write_text(yaml.safe_dump({"models": [entry]}, sort_keys=False))
    return zoo

"""Denoised experts: one classifier serves several sigmas behind a denoiser (denoised smoothing).

A ``denoised`` zoo entry names a *denoiser* and a *classifier* and the sigmas it serves. At sigma
``s`` its base model is ``f_s(z) = classifier(clamp(denoise(z, s), 0, 1))``, an ordinary
``nn.Module`` from [0, 1] images to logits: smoothing adds the noise (``z = x + N(0, s^2 I)``)
exactly as for any expert, so certification, dual routing, cascades, router labels and the
leaderboard treat a denoised expert at ``s`` like any expert at ``s``. Randomized smoothing only
needs ``f_s`` to be a fixed function of the noisy input, so every guarantee of
:mod:`rsbench.engine.smoothing` and :mod:`rsbench.engine.dual` holds unchanged; the certified radius is in the
input's pixel space at ``s``.

Denoisers (contract: ``denoiser(z, sigma) -> estimate of x``, same shape):

* an rsbench architecture with weights (e.g. ``small_denoiser``, :mod:`rsbench.models.archs.denoiser`,
  trained by ``rsbench train denoiser``);
* a DDPM noise-prediction UNet through ``diffusers`` (:class:`DiffusionDenoiser`), the one-step
  denoiser of Carlini et al. 2023, "(Certified!!) Adversarial Robustness for Free!":

  With ``abar_t`` the scheduler's ``alphas_cumprod`` and the model trained on
  ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` for ``x0`` in [-1, 1]:

  1. map the noisy image to the model's range: ``y = 2 z - 1 = (2x - 1) + 2 delta`` (noise std 2s);
  2. pick ``t* = argmin_t |(1 - abar_t) / abar_t - (2s)^2|`` (the closest trained noise level);
  3. scale: ``x_t* = sqrt(abar_t*) y`` (then ``x_t*`` has the form above up to the rounding of t*);
  4. ``x0_hat = (x_t* - sqrt(1 - abar_t*) eps_hat(x_t*, t*)) / sqrt(abar_t*)``;
  5. return ``clamp((x0_hat + 1) / 2, 0, 1)``.

Classifiers: a network with weights (rsbench architecture, input layer) or a Hugging Face
``transformers`` image classifier (:class:`HubClassifier`: resized to the model's resolution and
normalised inside the wrapper, after the noise).

Hub components load with ``from_pretrained`` at the entry's 40-hex commit ``revision`` (or from a
local ``path`` written by ``save_pretrained``, the offline tests' path); ``diffusers`` is a base
dependency (the embedded ``small_ddpm_unet`` denoiser, :mod:`rsbench.models.archs.ddpm_unet`, is a
``UNet2DModel`` behind the same :class:`DiffusionDenoiser`), ``transformers`` an optional extra
(``pip install rsbench[denoised]``). A network denoiser takes no ``input_layer``: it maps [0, 1]
pixels to [0, 1] pixels, and an entry naming one other than ``none`` is refused when loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsbench.errors import ConfigError, WeightsError, ZooError
from rsbench.models.components import check_served, component_identity, hub_location

HUB_LIBRARIES = ("diffusers", "transformers")
_INSTALL_HINT = "install the optional extra: pip install 'rsbench[denoised]'"


# --------------------------------------------------------------------------------------------------
# the composed base model


class DenoisedClassifier(nn.Module):
    """``classifier(clamp(denoiser(z, sigma), 0, 1))``: a denoised expert's base model at ``sigma``.

    ``denoiser`` and ``classifier`` are shared between the sigmas of one entry (no copies).
    """

    def __init__(self, denoiser: nn.Module, classifier: nn.Module, sigma: float) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.classifier = classifier
        self.sigma = float(sigma)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.denoiser(z, self.sigma).clamp(0.0, 1.0))

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"


class DenoisedExpert(nn.Module):
    """A loaded ``denoised`` entry: its denoiser, classifier and served sigmas.

    :meth:`at_sigma` gives the base model at one served sigma (sharing the networks). Calling the
    expert directly is an error: a denoised expert has no single sigma.
    """

    def __init__(self, denoiser: nn.Module, classifier: nn.Module, sigmas: Sequence[float]):
        super().__init__()
        self.denoiser = denoiser
        self.classifier = classifier
        self.sigmas = tuple(float(s) for s in sigmas)

    def at_sigma(self, sigma: float) -> DenoisedClassifier:
        """The base model at ``sigma``; a sigma the entry does not serve raises :class:`ConfigError`."""
        check_served(getattr(self, "zoo_id", "denoised expert"), self.sigmas, sigma)
        model = DenoisedClassifier(self.denoiser, self.classifier, sigma)
        for name in ("zoo_id", "weights_sha256", "weights_pinned"):
            if hasattr(self, name):
                setattr(model, name, getattr(self, name))
        return model.eval()

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - guarded misuse
        raise ConfigError(
            f"{getattr(self, 'zoo_id', 'a denoised expert')} serves sigmas {list(self.sigmas)}; "
            "take its model at one of them (DenoisedExpert.at_sigma)"
        )


# --------------------------------------------------------------------------------------------------
# diffusion one-step denoising


def diffusion_timestep(sigma: float, alphas_cumprod: torch.Tensor) -> int:
    """``t* = argmin_t |(1 - abar_t) / abar_t - (2 sigma)^2|`` (0-based index into ``alphas_cumprod``).

    ``sigma`` is the noise std in [0, 1] pixel units; the model's [-1, 1] range doubles it. Ties go
    to the smaller t.
    """
    abar = alphas_cumprod.to(torch.float64)
    ratio = (1.0 - abar) / abar
    return int(torch.argmin((ratio - (2.0 * float(sigma)) ** 2).abs()))


class DiffusionDenoiser(nn.Module):
    """One-step DDPM denoiser (Carlini et al. 2023); the formula is in the module docstring.

    ``eps_model(x_t, t)`` returns the predicted noise (``[B, C', H, W]``; when ``C' = 2C`` the model
    also predicts variances and the first ``C`` channels are the noise). ``alphas_cumprod`` comes
    from the model's scheduler.

    ``pad`` = ``(rows, cols)``: the noisy input ``z`` is zero-padded by that many pixels on each
    side (pixel value 0) before step 1 and the estimate is cropped back to ``z``'s size, for a
    U-Net that needs a larger side than the certified images (28x28 -> 32x32). The padding happens
    inside the base model, after smoothing's noise; ``(0, 0)`` (the published Hub UNets) changes
    nothing.
    """

    alphas_cumprod: torch.Tensor  # a buffer (registered in __init__)

    def __init__(
        self, eps_model: nn.Module, alphas_cumprod: torch.Tensor, pad: tuple[int, int] = (0, 0)
    ) -> None:
        super().__init__()
        self.eps_model = eps_model
        self.pad = (int(pad[0]), int(pad[1]))
        self.register_buffer(
            "alphas_cumprod", torch.as_tensor(alphas_cumprod, dtype=torch.float64), persistent=False
        )

    def timestep(self, sigma: float) -> int:
        """The timestep whose noise level matches ``sigma`` (:func:`diffusion_timestep`)."""
        return diffusion_timestep(sigma, self.alphas_cumprod)

    def _levels(self, z: torch.Tensor, sigma: float | torch.Tensor):
        """``(t, sqrt(abar_t), sqrt(1 - abar_t))``: ``t`` shaped ``[B]``; the two factors Python
        floats for one sigma (float64 arithmetic, as the published path always had), else
        ``[B, 1, 1, 1]`` tensors (one sigma per image, for training)."""
        if isinstance(sigma, torch.Tensor) and sigma.numel() > 1:
            steps = [self.timestep(float(s)) for s in sigma.reshape(-1).tolist()]
            t = torch.tensor(steps, device=z.device, dtype=torch.long)
            abar = self.alphas_cumprod.to(z.device)[t]
            scale = abar.sqrt().to(z.dtype).view(-1, 1, 1, 1)
            return t, scale, (1.0 - abar).sqrt().to(z.dtype).view(-1, 1, 1, 1)
        step = self.timestep(float(sigma))
        value = float(self.alphas_cumprod[step])
        t = torch.full((z.shape[0],), step, device=z.device, dtype=torch.long)
        return t, math.sqrt(value), math.sqrt(1.0 - value)

    def _padded(self, z: torch.Tensor) -> torch.Tensor:
        rows, cols = self.pad
        if rows or cols:
            return nn.functional.pad(z, (cols, cols, rows, rows), value=0.0)
        return z

    def _crop(self, out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        rows, cols = self.pad
        return out[..., rows : rows + z.shape[-2], cols : cols + z.shape[-1]]

    def estimate(self, z: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Steps 1-4 of the module docstring, unclamped, in [0, 1] pixel units (``sigma``: a float
        or one per image)."""
        t, scale, rest = self._levels(z, sigma)
        x_t = scale * (2.0 * self._padded(z) - 1.0)
        eps = self.eps_model(x_t, t)[:, : z.shape[1]]
        x0 = (x_t - rest * eps) / scale
        return self._crop((x0 + 1.0) / 2.0, z)

    def forward(self, z: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        return self.estimate(z, sigma).clamp(0.0, 1.0)

    def eps_loss(self, z: torch.Tensor, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """DDPM's simple loss at the served levels: the mean squared error between the predicted
        noise and ``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``, the noise that the
        scheduler's arithmetic puts in ``x_t = sqrt(abar_t) (2 z - 1)`` for ``x0 = 2 x - 1``, over
        the image's own pixels (not the padding). Its minimiser is the minimum-MSE estimate of
        ``x`` from ``z`` at each served sigma (the estimate's error is ``sqrt(1 - abar) / (2
        sqrt(abar))`` times the noise's)."""
        t, scale, rest = self._levels(z, sigma)
        x_t = scale * (2.0 * self._padded(z) - 1.0)
        target = (x_t - scale * (2.0 * self._padded(x) - 1.0)) / rest
        eps = self.eps_model(x_t, t)[:, : z.shape[1]]
        return nn.functional.mse_loss(self._crop(eps, z), self._crop(target, z))


class DiffusersEps(nn.Module):
    """``diffusers`` ``UNet2DModel`` as ``eps_model(x_t, t) -> noise`` (its ``.sample``)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t).sample


class HubClassifier(nn.Module):
    """A ``transformers`` image classifier on [0, 1] images: resize, input layer, logits.

    ``size``: the model's resolution (bilinear resize inside the model, after the noise; ``None``
    keeps the input size). ``input_layer`` maps [0, 1] pixels to the model's input (e.g. ViT's
    mean 0.5, std 0.5).
    """

    def __init__(self, model: nn.Module, input_layer: nn.Module, size: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.input_layer = input_layer
        self.size = int(size) if size else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        return self.model(pixel_values=self.input_layer(x)).logits


# --------------------------------------------------------------------------------------------------
# loading


def _import(library: str):
    try:
        if library == "diffusers":
            import diffusers

            return diffusers
        import transformers

        return transformers
    except ImportError:
        raise ConfigError(f"this denoised entry needs {library}; {_INSTALL_HINT}") from None


def _from_pretrained(entry, what: str, loader, location: str, kwargs: dict[str, Any]):
    try:
        return loader.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:  # HF raises OSError subclasses (also when offline)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        hint = ""
        if not Path(location).is_dir():
            revision = kwargs.get("revision") or "unpinned"
            hint = (
                f"; revision {revision}: it is fetched from the Hugging Face Hub once (network "
                "access, or a Hugging Face cache that holds it; HF_HUB_OFFLINE=1 reads the cache only)"
            )
        raise WeightsError(
            f"{entry.id}: cannot load the {what} from {location!r} ({first}){hint}"
        ) from None


def _load_hub_denoiser(entry, spec: Mapping[str, Any], cache_dir) -> nn.Module:
    diffusers = _import("diffusers")
    location, kwargs = hub_location(entry, spec)
    if cache_dir is not None and not spec.get("path"):
        kwargs["cache_dir"] = str(Path(cache_dir) / "huggingface")
    unet = _from_pretrained(entry, "UNet", diffusers.UNet2DModel, location, dict(kwargs))
    scheduler_kwargs = dict(kwargs)
    if spec.get("scheduler_subfolder"):
        scheduler_kwargs["subfolder"] = spec["scheduler_subfolder"]
    scheduler = _from_pretrained(
        entry, "scheduler", diffusers.DDPMScheduler, location, scheduler_kwargs
    )
    return DiffusionDenoiser(DiffusersEps(unet), scheduler.alphas_cumprod)


def _load_hub_classifier(entry, spec: Mapping[str, Any], cache_dir) -> nn.Module:
    from rsbench.models.network import InputLayer

    transformers = _import("transformers")
    location, kwargs = hub_location(entry, spec)
    if cache_dir is not None and not spec.get("path"):
        kwargs["cache_dir"] = str(Path(cache_dir) / "huggingface")
    model = _from_pretrained(
        entry, "classifier", transformers.AutoModelForImageClassification, location, kwargs
    )
    layer = spec.get("input_layer") or {"type": "none"}
    input_layer = InputLayer(layer.get("type", "none"), layer.get("mean"), layer.get("std"))
    return HubClassifier(model, input_layer, spec.get("resize"))


def _load_network(entry, role: str, device, cache_dir, require_pinned, progress):
    """A component with an rsbench ``arch`` + ``source``: built and loaded like any zoo network."""
    from rsbench.models.network import load_network
    from rsbench.zoo.parse import component_entry

    if role == "denoiser":
        layer = (getattr(entry, role) or {}).get("input_layer") or {"type": "none"}
        if layer.get("type", "none") != "none":
            raise ZooError(
                f"{entry.id}: the denoiser's input_layer is {layer.get('type')!r}, but a denoiser "
                "maps [0, 1] pixels to [0, 1] pixels and rsbench applies no input layer to it; "
                "remove input_layer (or set type: none) and normalise inside the architecture"
            )
    sub = component_entry(entry, role)
    model = load_network(
        sub, device, cache_dir=cache_dir, require_pinned=require_pinned, progress=progress
    )
    if role == "denoiser":  # Sequential(InputLayer = none, net): a denoiser takes (z, sigma)
        return model[1], model.weights_sha256, model.weights_pinned  # type: ignore[index]
    return model, model.weights_sha256, model.weights_pinned


def load_denoised(
    entry,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    progress: Any = None,
) -> DenoisedExpert:
    """Load a ``denoised`` entry's denoiser and classifier; return the :class:`DenoisedExpert`.

    ``weights_sha256`` of the result is the sha256 of both components' identities (weights digests
    or pinned hub revisions), so caches keyed by it (router labels) change when either does.
    ``require_pinned`` refuses a hub component without a revision (and unpinned weights).
    """
    if entry.kind != "denoised":
        raise ZooError(f"{entry.id} is a {entry.kind} entry, not a denoised one")
    parts: dict[str, nn.Module] = {}
    digests: dict[str, str] = {}
    pinned = True
    for role in ("denoiser", "classifier"):
        spec = getattr(entry, role)
        if spec.get("hub"):
            if spec.get("path") is None and not spec.get("revision"):
                if require_pinned:
                    raise WeightsError(
                        f"{entry.id}: the {role} {spec['repo_id']} has no pinned revision and "
                        "--require-pinned is set"
                    )
                pinned = False
            loader = _load_hub_denoiser if role == "denoiser" else _load_hub_classifier
            parts[role] = loader(entry, spec, cache_dir)
            digests[role] = component_identity(spec)
        else:
            parts[role], sha, ok = _load_network(
                entry, role, device, cache_dir, require_pinned, progress
            )
            digests[role] = f"sha256:{sha}"
            pinned = pinned and bool(ok)
    expert = DenoisedExpert(parts["denoiser"], parts["classifier"], entry.sigmas or ())
    expert.eval().to(device)
    expert.zoo_id = entry.id  # type: ignore[attr-defined,assignment]
    text = json.dumps(digests, sort_keys=True)
    expert.weights_sha256 = hashlib.sha256(text.encode()).hexdigest()  # type: ignore[attr-defined,assignment]
    expert.weights_pinned = pinned  # type: ignore[attr-defined,assignment]
    expert.component_identities = digests  # type: ignore[attr-defined,assignment]
    return expert


def serve(model: nn.Module, sigma: float) -> nn.Module:
    """The base model of a loaded expert at ``sigma``: ``model.at_sigma(sigma)`` for a denoised
    expert, ``model`` itself for any other (one network, one sigma)."""
    at_sigma = getattr(model, "at_sigma", None)
    return at_sigma(sigma) if callable(at_sigma) else model

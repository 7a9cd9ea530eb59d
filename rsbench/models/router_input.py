"""Routers that look at the experts: a small trained head over the frozen experts' outputs.

A dual-RS router (:mod:`rsbench.engine.dual`) is any network from [0, 1] images to ``K`` logits,
smoothed at ``sigma_router``. What it looks at is its *input* (:data:`ROUTER_INPUTS`):

* ``pixels``: a network on the noisy image itself (``pooled_mlp`` by default; every router
  rsbench shipped before this module);
* ``experts``: :class:`ExpertsRouter` over all the dual's experts: on the noisy copy
  ``z = x + delta`` (``delta ~ N(0, sigma_router^2 I)``) each frozen expert ``E_k`` computes its
  outputs ``E_k(z)`` (:data:`FEATURES`: log-softmax, softmax or logits), they are concatenated and
  a small head (:data:`HEAD_ARCHS`) maps them to ``K`` logits;
* ``experts-top``: the same over the largest-sigma expert only (one expert forward per router
  sample instead of ``K``);
* ``denoised``: :class:`DenoisedRouter`, a pixel network (``pooled_mlp``, ``fmnist_cnn``, ...)
  behind the frozen one-shot denoiser of a ``denoised`` zoo entry at ``sigma_router`` (the
  paper's estimator; its docstring says why the certificate is unchanged and what a sample costs).

**The router certificate is unchanged.** An :class:`ExpertsRouter` is an ordinary deterministic
function ``g(z) = head(phi(E_1(z)), ..., phi(E_K(z)))`` of the one noisy copy ``z``: every expert
is in eval mode with frozen weights, nothing is random inside it, and it sees the same ``z`` the
router's head is smoothed over. Randomized smoothing certifies *any* deterministic base classifier,
so CERTIFY on ``g`` at ``sigma_router`` gives exactly the guarantee of a pixel router: with
probability ``>= 1 - alpha_router`` the smoothed router's choice is constant on the returned
radius, and the dual's union bound over the two stages (:mod:`rsbench.engine.dual`) holds as
before. The expert stage draws its own noise at the chosen expert's sigma; that the router ran the
same expert networks on other noise does not matter (the union bound needs no independence).

**Cost.** One router sample costs ``len(experts)`` expert forwards plus the head (a few hundred
multiply-adds); :func:`router_forwards` says how many expert-sized forwards a router entry costs
per sample, and ``rsbench compare`` counts them.

:func:`load_router` builds it for a router zoo entry whose ``router_input`` is not ``pixels``:
the experts are loaded from the zoo (their own verified weights), the head from the router entry's
weights (the head's state dict only). :func:`rsbench.models.loading.load_model` sends such entries
here, so the engine, ``rsbench.load``, certify, rescore, sweep and compare need no special case.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rsbench.errors import ZooError
from rsbench.zoo.entry import ROUTER_EXPERT_INPUTS as EXPERT_INPUTS
from rsbench.zoo.entry import ROUTER_FEATURES as FEATURES
from rsbench.zoo.entry import ROUTER_HEADS as HEAD_ARCHS
from rsbench.zoo.entry import ROUTER_INPUTS

if TYPE_CHECKING:
    from rsbench.zoo.entry import ZooEntry

__all__ = [
    "EXPERT_INPUTS",
    "FEATURES",
    "HEAD_ARCHS",
    "ROUTER_INPUTS",
    "DenoisedRouter",
    "ExpertsRouter",
]
#: hidden width of ``head_mlp`` (features -> 64 -> ReLU -> K); ``head_linear`` is one linear layer
HEAD_HIDDEN = 64


def build_head(arch: str, in_features: int, outputs: int) -> nn.Module:
    """The head network ``arch`` (:data:`HEAD_ARCHS`) from ``in_features`` to ``outputs`` logits."""
    if arch == "head_linear":
        return nn.Sequential(nn.Linear(in_features, outputs))
    if arch == "head_mlp":
        return nn.Sequential(
            nn.Linear(in_features, HEAD_HIDDEN), nn.ReLU(), nn.Linear(HEAD_HIDDEN, outputs)
        )
    raise ZooError(f"router head {arch!r} is not one of {', '.join(HEAD_ARCHS)}")


def features_of(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """``logits`` turned into the head's features: ``kind`` is one of :data:`FEATURES`."""
    if kind == "log-softmax":
        return torch.log_softmax(logits, dim=-1)
    if kind == "softmax":
        return torch.softmax(logits, dim=-1)
    if kind == "logits":
        return logits
    raise ZooError(f"router features {kind!r} are not one of {', '.join(FEATURES)}")


class ExpertsRouter(nn.Module):
    """``head(cat_k features(E_k(z)))``: a router over frozen experts (module docstring).

    ``experts`` are put in eval mode with ``requires_grad`` off and stay so (``train()`` trains the
    head only), so the router is a deterministic function of its input whatever mode it is in.
    ``state_dict`` of :attr:`head` is what a router entry's weights hold.
    """

    def __init__(self, experts: Sequence[nn.Module], head: nn.Module, features: str) -> None:
        super().__init__()
        if len(experts) == 0:
            raise ZooError("a router over experts needs at least one expert")
        features_of(torch.zeros(1, 2), features)  # validates the name
        self.experts = nn.ModuleList(experts)
        for parameter in self.experts.parameters():
            parameter.requires_grad_(False)
        self.experts.eval()
        self.head = head
        self.features = features

    def train(self, mode: bool = True) -> ExpertsRouter:
        super().train(mode)
        self.experts.eval()  # frozen: batch-norm statistics and dropout never change
        return self

    def expert_features(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, sum_k C_k]``: each expert's features on ``z``, concatenated (no gradient)."""
        with torch.no_grad():
            return torch.cat(
                [features_of(e(z).float(), self.features) for e in self.experts], dim=1
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        feats = self.expert_features(z)
        return self.head(feats.to(next(self.head.parameters()).dtype))

    def extra_repr(self) -> str:
        return f"features={self.features}, experts={len(self.experts)}"


def router_input_of(entry: ZooEntry) -> Mapping[str, Any]:
    """The entry's ``router_input`` mapping (``{"type": "pixels"}`` when absent)."""
    spec = getattr(entry, "router_input", None)
    return spec if spec is not None else {"type": "pixels"}


def router_forwards(entry: ZooEntry | Mapping[str, Any] | None) -> float:
    """Expert-sized forward passes one router sample costs (``rsbench compare``'s cost column).

    ``pixels``: 1 (the router network, counted like one expert forward, as before; the shipped
    ``pooled_mlp`` costs far less); ``experts`` / ``experts-top``: one per expert that feeds it
    (the head is negligible next to them); ``denoised``: the entry's declared
    ``router_input.forwards`` (the denoiser plus the network in expert-sized forwards by
    multiply-adds, :func:`denoised_router_forwards`; about 240 for the embedded DDPM U-Net), NaN
    for a mapping without it (shown as unknown, never as a cheap 1).
    ``entry`` is a router :class:`~rsbench.zoo.entry.ZooEntry` or its YAML mapping.
    """
    if entry is None:
        return 1.0
    if isinstance(entry, Mapping):
        spec = entry.get("router_input") or {"type": "pixels"}
    else:
        spec = router_input_of(entry)
    kind = spec.get("type", "pixels")
    if kind in EXPERT_INPUTS:
        return float(len(spec.get("experts") or ()))
    if kind == "denoised":
        declared = spec.get("forwards")
        return float(declared) if declared is not None else float("nan")
    return 1.0


def build_router(entry: ZooEntry, experts: Sequence[nn.Module], outputs: int) -> ExpertsRouter:
    """An :class:`ExpertsRouter` with a random head for router ``entry`` over loaded ``experts``."""
    spec = router_input_of(entry)
    if spec.get("type") not in EXPERT_INPUTS:
        raise ZooError(f"{entry.id}: router_input {spec.get('type')!r} is not over experts")
    features = str(spec.get("features", "log-softmax"))
    shape = tuple(entry.input_shape or ())
    with torch.no_grad():
        probe = torch.zeros((1, *shape))
        device = _device_of(experts[0])
        width = sum(int(e(probe.to(device)).shape[-1]) for e in experts)
    head = build_head(str(entry.arch), width, outputs).to(device)
    return ExpertsRouter(experts, head, features)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def load_router(
    entry: ZooEntry,
    experts: Sequence[nn.Module],
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    progress: Any = None,
) -> nn.Module:
    """A router entry whose ``router_input`` is over experts, over the loaded ``experts`` (those
    its ``router_input.experts`` names, in order; :func:`rsbench.models.loading.load_model` loads
    them), with its head weights fetched and verified like any network's; eval mode on ``device``.
    """
    from rsbench.models.network import check_state_dict
    from rsbench.weights import checkpoints, sources

    spec = router_input_of(entry)
    if spec.get("type") not in EXPERT_INPUTS:
        raise ZooError(
            f"{entry.id}: router_input {spec.get('type')!r} is not implemented in this rsbench; "
            "use pixels, experts or experts-top"
        )
    router = build_router(entry, experts, int(entry.num_classes or len(entry.experts)))
    fetched = sources.fetch(
        entry, cache_dir=cache_dir, require_pinned=require_pinned, progress=progress
    )
    state = checkpoints.load_state_dict(fetched.path, entry)
    check_state_dict(router.head, state, what=f"{entry.id}: head weights {fetched.path.name}")
    router.head.load_state_dict(state, strict=True)
    router.eval()
    router.to(device)
    router.zoo_id = entry.id  # type: ignore[attr-defined,assignment]
    router.weights_sha256 = fetched.sha256  # type: ignore[attr-defined,assignment]
    router.weights_pinned = fetched.pinned and all(  # type: ignore[attr-defined,assignment]
        bool(getattr(m, "weights_pinned", True)) for m in experts
    )
    return router


# --------------------------------------------------------------------------------------------------
# the ``denoised`` router input: a pixel network behind a frozen one-shot denoiser


class DenoisedRouter(nn.Module):
    """``net(clamp(D(z, sigma), 0, 1))``: the router's network behind a frozen denoiser.

    The paper's estimator (Sun, Mao & Vechev 2026, after Salman et al.'s denoised smoothing): on
    the router's noisy copy ``z = x + delta`` (``delta ~ N(0, sigma_router^2 I)``) the denoiser of a
    ``denoised`` zoo entry estimates the clean image in one shot at level ``sigma`` (the router's
    ``sigma_router``), and the router's network (``pooled_mlp``, ``fmnist_cnn``, ... with its
    input layer) maps that estimate to ``K`` logits.

    **The router certificate is unchanged.** ``g(z) = net(clamp(D(z, sigma), 0, 1))`` is an
    ordinary deterministic function of the one noisy copy ``z``: ``D`` is frozen (weights
    ``requires_grad`` off, eval mode in every mode of the router: :meth:`train` keeps it in eval)
    and draws no randomness of its own. For the one-step DDPM denoiser
    (:class:`rsbench.models.denoised.DiffusionDenoiser`) that is checked, not assumed: the
    timestep ``t*`` is a fixed function of ``sigma``, no noise is added (the one-shot estimate
    ``x0_hat = (x_t - sqrt(1 - abar) eps_hat(x_t, t*)) / sqrt(abar)`` uses the noise already in
    ``z``), the embedded ``small_ddpm_unet`` has no dropout (diffusers' default 0) and GroupNorm
    has no running statistics. So CERTIFY on ``g`` at ``sigma_router`` gives exactly a pixel
    router's guarantee, and the dual's union bound (:mod:`rsbench.engine.dual`) holds as before.

    **Cost.** One router sample costs one denoiser pass plus the network; the zoo entry records
    it as ``router_input.forwards`` in expert-sized forwards (:func:`denoised_router_forwards`
    counts multiply-adds). For the embedded set that is far more than one expert forward: the
    ``small_ddpm_unet`` denoiser of ``embedded-fmnist-ddpm`` takes 61.1 M multiply-adds per 28x28
    image, an ``fmnist_cnn`` expert 0.253 M, so a DDPM router sample costs ~241 expert forwards
    (~200x in wall time on one CPU core); ``embedded-fmnist-denoised``'s ``small_denoiser``
    (4.97 M) ~20.

    The state dict that a router entry's weights hold is the network's (``net[1]``, behind its
    input layer), as for a pixel router.
    """

    def __init__(self, denoiser: nn.Module, net: nn.Module, sigma: float) -> None:
        super().__init__()
        self.denoiser = denoiser
        for parameter in self.denoiser.parameters():
            parameter.requires_grad_(False)
        self.denoiser.eval()
        self.net = net
        self.sigma = float(sigma)

    def train(self, mode: bool = True) -> DenoisedRouter:
        super().train(mode)
        self.denoiser.eval()  # frozen: no dropout, no statistics updated
        return self

    def denoise(self, z: torch.Tensor) -> torch.Tensor:
        """``clamp(D(z, sigma), 0, 1)`` (no gradient: the denoiser does not train)."""
        with torch.no_grad():
            return self.denoiser(z, self.sigma).clamp(0.0, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.denoise(z))

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"


def multiply_adds(module: nn.Module, *inputs: Any) -> int:
    """Multiply-adds of one call ``module(*inputs)``: convolutions and linear layers (what
    dominates these networks; normalisations, activations and pooling are not counted)."""
    total = [0]

    def conv(layer: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        kernel = 1
        for size in layer.kernel_size:  # type: ignore[union-attr]
            kernel *= int(size)
        per_output = int(layer.in_channels) // int(layer.groups) * kernel  # type: ignore[arg-type]
        total[0] += int(output.numel()) * per_output

    def linear(layer: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        total[0] += int(output.numel()) * int(layer.in_features)  # type: ignore[arg-type]

    hooks = []
    for layer in module.modules():
        if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d):
            hooks.append(layer.register_forward_hook(conv))
        elif isinstance(layer, nn.Linear):
            hooks.append(layer.register_forward_hook(linear))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]


def denoised_router_forwards(
    router: DenoisedRouter, experts: Sequence[nn.Module], input_shape: Sequence[int]
) -> float:
    """What one sample of ``router`` costs in forward passes of the dual's ``experts`` (their mean):
    multiply-adds of the denoiser at its sigma plus the network, over an expert's, on one image
    of ``input_shape``; rounded to 3 significant digits (the ``router_input.forwards`` of its entry).
    Deterministic and machine-independent; wall time on a CPU can differ (the DDPM U-Net's many
    small convolutions run below the expert's rate per multiply-add: results/dual-embedded.md)."""
    device = _device_of(router.net)
    probe = torch.zeros((1, *(int(s) for s in input_shape)), device=device)
    own = multiply_adds(router.denoiser, probe, router.sigma) + multiply_adds(router.net, probe)
    each = [multiply_adds(e, probe.to(_device_of(e))) for e in experts]
    expert = sum(each) / len(each) if each and sum(each) > 0 else 1.0
    value = own / expert
    return float(f"{value:.3g}")


def denoised_spec_of(entry: ZooEntry) -> Mapping[str, Any]:
    """The ``router_input`` of a ``denoised`` router entry (a :class:`ZooError` otherwise)."""
    spec = router_input_of(entry)
    if spec.get("type") != "denoised":
        raise ZooError(f"{entry.id}: router_input {spec.get('type')!r} is not denoised")
    return spec


def load_named_denoiser(
    owner: str,
    ref: str,
    sigma: float,
    zoo: Any,
    dataset: str | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    progress: Any = None,
    recorded: str | None = None,
) -> tuple[nn.Module, str, bool]:
    """(denoiser, its identity, pinned) of the ``denoised`` zoo entry ``ref`` that router ``owner``
    looks through at ``sigma``, resolved in ``zoo``. An unknown id, an entry that is not
    ``denoised``, one of another ``dataset``, a sigma it does not serve, or a denoiser other than
    the one the router was trained with (``recorded``, its ``denoiser_identity``) is a one-line
    :class:`ZooError`."""
    from rsbench.models.components import component_identity
    from rsbench.models.denoised import load_denoised

    hint = "; name a denoised entry (e.g. embedded-fmnist-ddpm, embedded-fmnist-denoised)"
    if ref not in zoo:
        raise ZooError(f"{owner}: denoiser {ref!r} is not in the zoo{hint}")
    target = zoo.get(ref)
    if target.kind != "denoised":
        raise ZooError(
            f"{owner}: denoiser {ref!r} is a {target.kind} entry, not a denoised one{hint}"
        )
    if dataset is not None and target.dataset != dataset:
        raise ZooError(f"{owner}: denoiser {ref!r} is for {target.dataset}, not {dataset}")
    served = target.sigmas or ()
    if not any(abs(float(sigma) - float(s)) <= 1e-9 for s in served):
        listed = ", ".join(f"{s:g}" for s in served)
        raise ZooError(
            f"{owner}: denoiser {ref!r} serves sigma {listed}, not {float(sigma):g}; "
            "use one of them as --sigma-router"
        )
    identity = component_identity(target.denoiser or {})
    if recorded is not None and recorded != identity:
        raise ZooError(
            f"{owner}: was trained behind the denoiser {recorded}, but {ref} now has {identity}; "
            "retrain the router or pin the denoiser it was trained with"
        )
    loaded = load_denoised(
        target, device, cache_dir=cache_dir, require_pinned=require_pinned, progress=progress
    )
    return loaded.denoiser, identity, bool(getattr(loaded, "weights_pinned", True))


def load_router_denoiser(
    entry: ZooEntry,
    zoo: Any,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    progress: Any = None,
) -> tuple[nn.Module, str, bool]:
    """:func:`load_named_denoiser` for the ``router_input`` of router ``entry``."""
    spec = denoised_spec_of(entry)
    return load_named_denoiser(
        entry.id,
        str(spec.get("denoiser")),
        float(spec["sigma"]),
        zoo,
        entry.dataset,
        device,
        cache_dir,
        require_pinned,
        progress,
        spec.get("denoiser_identity"),
    )


def load_denoised_router(
    entry: ZooEntry,
    zoo: Any,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    require_pinned: bool = False,
    progress: Any = None,
) -> DenoisedRouter:
    """Router ``entry`` (``router_input.type: denoised``): its network, fetched, verified and
    strictly loaded like a pixel router's, behind the named entry's denoiser
    (:func:`load_router_denoiser`); eval mode on ``device``, with ``zoo_id``, ``weights_sha256``
    (the network's) and ``weights_pinned`` (both parts)."""
    from rsbench.models.network import load_network

    spec = denoised_spec_of(entry)
    denoiser, _, denoiser_pinned = load_router_denoiser(
        entry, zoo, device, cache_dir, require_pinned, progress
    )
    net = load_network(
        entry, device, cache_dir=cache_dir, require_pinned=require_pinned, progress=progress
    )
    router = DenoisedRouter(denoiser, net, float(spec["sigma"]))
    router.eval().to(device)
    router.zoo_id = entry.id  # type: ignore[attr-defined,assignment]
    router.weights_sha256 = net.weights_sha256  # type: ignore[attr-defined,assignment]
    router.weights_pinned = bool(net.weights_pinned) and denoiser_pinned  # type: ignore[attr-defined,assignment]
    return router

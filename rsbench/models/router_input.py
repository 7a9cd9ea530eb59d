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
  sample instead of ``K``).

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

__all__ = ["EXPERT_INPUTS", "FEATURES", "HEAD_ARCHS", "ROUTER_INPUTS", "ExpertsRouter"]
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
    (the head is negligible next to them); ``denoised``: 2 (the denoiser and the router network).
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
        return 2.0
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

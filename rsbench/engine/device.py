"""Where rsbench computes: the one module that resolves ``--device`` and does every step that
depends on the device.

Supported devices: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` and ``cuda:N``.
Anything else (``mps``, ``xpu``, a typo), ``cuda`` when CUDA is not available and ``cuda:N`` beyond
the visible devices are a :class:`~rsbench.errors.ConfigError` naming what is supported.

Guarantees:

* :func:`resolve` always returns an *indexed* CUDA device (``cuda:N``): ``cuda`` and ``auto`` mean
  ``cuda:LOCAL_RANK`` under torchrun and ``cuda:0`` otherwise; an explicit ``cuda:N`` is kept.
  :func:`activate` therefore never hands ``torch.cuda.set_device`` an index-less device.
* Every device-dependent step of a run goes through a function here: :func:`activate`
  (``set_device``), :func:`backend` (nccl on CUDA, gloo on CPU), :func:`precision_context`
  (TF32 switches, autocast), :func:`to_device` (pinned memory + non-blocking copy to CUDA),
  :func:`generator` (the noise generator's device), :func:`is_out_of_memory` /
  :func:`release_memory` (the OOM back-off), :func:`compile_model` (``torch.compile``),
  :func:`name` (run.json), and for benchmarks :func:`synchronize` and :func:`peak_memory`. Tests fake CUDA at the torch boundary and check
  the arguments these functions pass to torch.
* Importing this module does not import torch (``rsbench --help`` stays fast).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rsbench.errors import (
    ConfigError,
    check_precision,  # re-exported
)

#: What ``--device`` accepts, as printed in error messages.
SUPPORTED = "auto, cpu, cuda, cuda:N"

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class Device:
    """A resolved device: ``cpu`` or ``cuda:N`` (``index`` is set for CUDA, None for CPU)."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    @property
    def is_cuda(self) -> bool:
        return self.type == "cuda"

    @property
    def torch(self) -> Any:
        """The ``torch.device``."""
        import torch

        return torch.device(str(self))


def device_type(device: Any) -> str:
    """``cpu`` or ``cuda`` from a device string like ``cuda:1`` (or a Device / torch.device)."""
    kind = getattr(device, "type", None)
    return str(kind) if kind is not None else str(device).split(":", 1)[0]


def local_rank(environ: Mapping[str, str] | None = None) -> int | None:
    """torchrun's ``LOCAL_RANK`` (this process's GPU on its node), or None outside torchrun."""
    env = os.environ if environ is None else environ
    text = env.get("LOCAL_RANK")
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(
            f"LOCAL_RANK={text!r} is not an integer (it is set by torchrun)"
        ) from None
    if value < 0:
        raise ConfigError(f"LOCAL_RANK={value} is negative (it is set by torchrun)")
    return value


def _cuda_missing(torch: Any) -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    return f"torch {torch.__version__} finds no CUDA GPU (driver, CUDA_VISIBLE_DEVICES?)"


def resolve(text: Any = "auto", *, environ: Mapping[str, str] | None = None) -> Device:
    """The :class:`Device` that ``--device text`` means here; :class:`ConfigError` when unsupported.

    ``auto`` (or None / empty) is CUDA when available, else CPU. CUDA devices always come back
    indexed: ``cuda`` / ``auto`` are ``cuda:LOCAL_RANK`` under torchrun, else ``cuda:0``.
    """
    if isinstance(text, Device):
        text = str(text)
    raw = "auto" if text is None or str(text).strip() == "" else str(text).strip()
    match = _DEVICE_RE.match(raw.lower())
    if not match or (match[1] != "cuda" and match[2] is not None):
        raise ConfigError(f"device {raw!r} is not supported; use one of {SUPPORTED}")
    kind, index = match[1], (int(match[2]) if match[2] is not None else None)
    if kind == "cpu":
        return Device("cpu")
    import torch

    available = torch.cuda.is_available()
    if kind == "auto" and not available:
        return Device("cpu")
    if not available:
        raise ConfigError(
            f"device {raw!r} needs CUDA, but {_cuda_missing(torch)}; use --device cpu (or auto)"
        )
    count = int(torch.cuda.device_count())
    if index is None:
        rank = local_rank(environ)
        index = 0 if rank is None else rank
        if index >= count:
            raise ConfigError(
                f"LOCAL_RANK={index} needs cuda:{index}, but {count} CUDA device(s) are visible; "
                f"start at most {count} process(es) per node (torchrun --nproc-per-node)"
            )
    elif index >= count:
        raise ConfigError(
            f"device {raw!r} does not exist: {count} CUDA device(s) are visible "
            f"(cuda:0 .. cuda:{count - 1}); use one of {SUPPORTED} with N < {count}"
        )
    return Device("cuda", index)


def of_model(model: Any) -> Any:
    """The ``torch.device`` of the model's first parameter or buffer (CPU for one with neither)."""
    import torch

    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def as_torch(device: Any) -> Any:
    """``device`` (a :class:`Device`, ``torch.device`` or string) as a ``torch.device``."""
    import torch

    if isinstance(device, Device):
        return device.torch
    return device if isinstance(device, torch.device) else torch.device(str(device))


def activate(device: Any) -> None:
    """Make ``device`` the current CUDA device (``torch.cuda.set_device`` with an indexed device);
    nothing on CPU."""
    dev = resolve(device) if isinstance(device, str) else device
    if device_type(dev) != "cuda":
        return
    import torch

    target = as_torch(dev)
    if target.index is None:  # never reached through resolve(); kept as a guard for callers
        target = torch.device("cuda", 0)
    torch.cuda.set_device(target)


def backend(device: Any) -> str:
    """The ``torch.distributed`` backend for ``device``: ``nccl`` on CUDA, ``gloo`` on CPU."""
    return "nccl" if device_type(device) == "cuda" else "gloo"


@contextlib.contextmanager
def precision_context(precision: str, device: Any) -> Iterator[None]:
    """Run forward passes in ``precision``: fp32 (exact: TF32 off on CUDA), tf32 (TF32 matmuls and
    convolutions on CUDA; plain fp32 on CPU), bf16/fp16 (``torch.autocast`` on the device's type).

    The TF32 switches are restored on exit.
    """
    import torch

    check_precision(precision)
    kind = device_type(device)
    if precision in ("fp32", "tf32"):
        if kind != "cuda":
            yield
            return
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        allow = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=kind, dtype=dtype):
        yield


def to_device(tensor: Any, device: Any) -> Any:
    """``tensor`` on ``device``; a CPU tensor bound for CUDA goes through pinned memory with a
    non-blocking copy (ordered on the current stream, so later kernels see the data)."""
    target = as_torch(device)
    if target.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(target, non_blocking=True)
    return tensor.to(target)


def generator(device: Any, seed: int) -> Any:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (the noise is drawn where it is used)."""
    import torch

    gen = torch.Generator(device=as_torch(device))
    gen.manual_seed(int(seed))
    return gen


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (``torch.cuda.OutOfMemoryError``)."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


def release_memory(device: Any) -> None:
    """Return cached blocks to the CUDA driver after an out-of-memory error (nothing on CPU)."""
    if device_type(device) == "cuda":
        import torch

        torch.cuda.empty_cache()


def compile_model(model: Any, backend: str | Callable = "inductor") -> Any:
    """``torch.compile(model, dynamic=False)``: static shapes, which the vote counter keeps few.

    In exact arithmetic the compiled model computes the same logits; in floating point fused kernels
    may round differently, so a vote on a near-tie can differ from eager execution (rare; the runner
    records ``compile`` in the run identity for that reason).
    """
    import torch

    return torch.compile(model, dynamic=False, backend=backend)


def name(device: Any) -> str:
    """A human name for run.json: the GPU's name on CUDA, the processor (or machine) on CPU."""
    if device_type(device) == "cuda":
        import torch

        return str(torch.cuda.get_device_name(as_torch(device)))
    import platform

    return platform.processor() or platform.machine()


def synchronize(device: Any) -> None:
    """Wait for the work queued on ``device`` (for timings; nothing on CPU)."""
    if device_type(device) == "cuda":
        import torch

        torch.cuda.synchronize(as_torch(device))


def reset_peak_memory(device: Any) -> None:
    """Start counting peak allocated memory on ``device`` afresh (nothing on CPU)."""
    if device_type(device) == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(as_torch(device))


def peak_memory(device: Any) -> int | None:
    """Peak bytes allocated by torch on ``device`` since :func:`reset_peak_memory` (None on CPU)."""
    if device_type(device) != "cuda":
        return None
    import torch

    return int(torch.cuda.max_memory_allocated(as_torch(device)))

"""CUDA faked at the torch boundary, so that the GPU path of rsbench runs (and is checked) on a CPU.

:class:`FakeCuda` patches what rsbench (and torch code it calls) asks of CUDA: availability,
device count, ``set_device``, ``current_device``, ``synchronize``, device names, streams, memory
statistics, ``empty_cache``, ``torch.autocast(device_type="cuda")``, ``Tensor.pin_memory``,
``Tensor.to("cuda:N", non_blocking=...)`` / ``.cuda()``, tensor factories with ``device="cuda:N"``,
``torch.Generator(device="cuda:N")``, ``torch.compile`` and ``torch.distributed``'s process group.
Tensors stay on the CPU, so the real computation runs (CUDA autocast becomes CPU autocast with the
same dtype); every call is RECORDED with its arguments in :attr:`FakeCuda.calls`, so tests assert
what rsbench asked for (an indexed device for ``set_device``, ``nccl``, pinned non-blocking copies,
the autocast dtype...). ``set_device`` validates its argument as torch does (an index-less
``torch.device("cuda")`` raises the same ``ValueError``) and checks the index against the count.

``oom_above`` makes the next forward pass with more rows than that raise
``torch.cuda.OutOfMemoryError`` once, as a real GPU would when a batch does not fit.

This lives in the tests, never in the package; ``tests/conftest.py`` makes it the ``fake_cuda``
fixture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.distributed as dist

FAKE_NAME = "Fake CUDA GPU (tests)"

_FACTORIES = (
    "empty",
    "zeros",
    "ones",
    "full",
    "tensor",
    "as_tensor",
    "arange",
    "randn",
    "rand",
    "randint",
    "empty_like",
    "zeros_like",
    "ones_like",
    "full_like",
)


def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, str) and device.split(":", 1)[0] == "cuda"


class FakeCuda:
    """Install with :meth:`install` (the ``fake_cuda`` fixture does); read :attr:`calls`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, device_count: int = 1) -> None:
        self.monkeypatch = monkeypatch
        self.device_count = device_count
        self.current = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.oom_above: int | None = None
        self.forward_rows: list[int] = []
        self.forward_tf32: list[bool] = []
        self.initialized = False
        self._pinned: set[int] = set()
        self._keep: list[torch.Tensor] = []
        self._hook = None

    # ------------------------------------------------------------------ records

    def record(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))

    def of(self, name: str) -> list[dict[str, Any]]:
        """The arguments of every recorded call ``name``, in order."""
        return [kwargs for call, kwargs in self.calls if call == name]

    def clear(self) -> None:
        self.calls.clear()
        self.forward_rows.clear()
        self.forward_tf32.clear()

    # ------------------------------------------------------------------ install

    def install(self) -> FakeCuda:
        mp = self.monkeypatch
        cuda = torch.cuda
        mp.setattr(cuda, "is_available", lambda: True)
        mp.setattr(cuda, "device_count", lambda: self.device_count)
        mp.setattr(cuda, "set_device", self._set_device)
        mp.setattr(cuda, "current_device", lambda: self.current)
        mp.setattr(cuda, "get_device_name", self._get_device_name)
        mp.setattr(
            cuda, "synchronize", lambda device=None: self.record("synchronize", device=device)
        )
        mp.setattr(cuda, "empty_cache", lambda: self.record("empty_cache"))
        mp.setattr(cuda, "is_initialized", lambda: True)
        mp.setattr(cuda, "init", lambda: None)
        for stat in ("max_memory_allocated", "memory_allocated", "max_memory_reserved"):
            mp.setattr(cuda, stat, self._stat(stat, 1 << 20))
        mp.setattr(cuda, "reset_peak_memory_stats", self._stat("reset_peak_memory_stats", None))
        mp.setattr(cuda, "mem_get_info", self._stat("mem_get_info", (8 << 30, 16 << 30)))
        mp.setattr(cuda, "Stream", _FakeStream)
        mp.setattr(cuda, "current_stream", lambda device=None: _FakeStream(device))
        mp.setattr(cuda, "default_stream", lambda device=None: _FakeStream(device))
        mp.setattr(cuda, "stream", self._stream)
        mp.setattr(torch, "autocast", self._autocast)
        mp.setattr(torch, "Generator", self._generator(torch.Generator))
        mp.setattr(torch, "compile", self._compile)
        for name in _FACTORIES:
            mp.setattr(torch, name, self._factory(name, getattr(torch, name)))
        # plain functions (not bound methods), so that the tensor is bound as ``self``
        mp.setattr(torch.Tensor, "pin_memory", lambda t, *a, **k: self._pin_memory(t))
        mp.setattr(torch.Tensor, "to", self._to(torch.Tensor.to))
        mp.setattr(torch.Tensor, "cuda", lambda t, *a, **k: self._cuda(t, *a, **k))
        mp.setattr(dist, "is_available", lambda: True)
        mp.setattr(dist, "is_initialized", lambda: self.initialized)
        mp.setattr(dist, "init_process_group", self._init_process_group)
        mp.setattr(dist, "destroy_process_group", self._destroy_process_group)
        mp.setattr(dist, "barrier", lambda *a, **k: self.record("barrier"))
        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(self._forward)
        return self

    def uninstall(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # ------------------------------------------------------------------ torch.cuda

    def _set_device(self, device: Any) -> None:
        from torch.cuda._utils import _get_device_index

        index = _get_device_index(device)  # torch's own check: an index-less device raises
        if not 0 <= index < self.device_count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index} (fake)")
        self.record("set_device", device=device, index=index)
        self.current = index

    def _get_device_name(self, device: Any = None) -> str:
        self.record("get_device_name", device=device)
        return FAKE_NAME

    def _stat(self, name: str, value: Any):
        def stat(device: Any = None) -> Any:
            self.record(name, device=device)
            return value

        return stat

    @contextlib.contextmanager
    def _stream(self, stream: Any) -> Iterator[None]:
        self.record("stream", stream=stream)
        yield

    # ------------------------------------------------------------------ torch

    @contextlib.contextmanager
    def _autocast(self, device_type: str, dtype: Any = None, enabled: bool = True, **kwargs):
        self.record("autocast", device_type=device_type, dtype=dtype, enabled=enabled)
        real = torch.amp.autocast_mode.autocast
        target = "cpu" if device_type == "cuda" else device_type
        with real(target, dtype=dtype, enabled=enabled, **kwargs):
            yield

    def _generator(self, real):
        def generator(device: Any = "cpu") -> torch.Generator:
            self.record("Generator", device=str(device))
            return real("cpu" if _is_cuda(device) else device)

        return generator

    def _compile(self, model: Any = None, **kwargs: Any) -> Any:
        self.record("compile", **kwargs)
        return model

    def _factory(self, name: str, real):
        def factory(*args: Any, **kwargs: Any) -> Any:
            if _is_cuda(kwargs.get("device")):
                self.record("alloc", function=name, device=str(kwargs["device"]))
                kwargs["device"] = "cpu"
            return real(*args, **kwargs)

        return factory

    def _pin_memory(self, tensor: torch.Tensor) -> torch.Tensor:
        pinned = tensor.clone()
        self._pinned.add(id(pinned))
        self._keep.append(pinned)
        self.record("pin_memory", shape=tuple(tensor.shape))
        return pinned

    def _to(self, real):
        def to(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            args = list(args)
            device = None
            if args and _is_cuda(args[0]):
                device, args[0] = args[0], "cpu"
                non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            elif _is_cuda(kwargs.get("device")):
                device, kwargs["device"] = kwargs["device"], "cpu"
                non_blocking = kwargs.get("non_blocking", False)
            if device is not None:
                self.record(
                    "to",
                    device=str(device),
                    non_blocking=bool(non_blocking),
                    pinned=id(tensor) in self._pinned,
                )
            return real(tensor, *args, **kwargs)

        return to

    def _cuda(self, tensor: torch.Tensor, device: Any = None, non_blocking: bool = False, **kw):
        self.record("to", device=str(device or "cuda"), non_blocking=non_blocking, pinned=False)
        return tensor

    def _forward(self, module: torch.nn.Module, args: tuple) -> None:
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() < 2:
            return
        rows = int(args[0].shape[0])
        self.forward_rows.append(rows)
        self.forward_tf32.append(bool(torch.backends.cuda.matmul.allow_tf32))
        if self.oom_above is not None and rows > self.oom_above:
            self.oom_above = None
            self.record("oom", rows=rows)
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory for {rows} rows (fake)")

    # ------------------------------------------------------------------ torch.distributed

    def _init_process_group(self, backend: str | None = None, **kwargs: Any) -> None:
        self.record("init_process_group", backend=backend)
        self.initialized = True

    def _destroy_process_group(self, *args: Any) -> None:
        self.record("destroy_process_group")
        self.initialized = False


class _FakeStream:
    def __init__(self, device: Any = None, priority: int = 0, **kwargs: Any) -> None:
        self.device = device

    def synchronize(self) -> None:
        return None

    def wait_stream(self, other: Any) -> None:
        return None

    def record_event(self, event: Any = None) -> Any:
        return event

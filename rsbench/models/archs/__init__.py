"""Network architectures by name.

A name is one of:

* a registry name (``cifar_resnet20``, ``cifar_resnet110``, ``resnet50``, ``fmnist_cnn``, ``mlp``, ``pooled_mlp``, ...; denoisers: ``small_denoiser``, ``small_ddpm_unet``);
* ``timm:<model name>`` (``timm.create_model(name, num_classes=...)``);
* ``torchvision:<model name>`` (``torchvision.models.get_model(name, num_classes=...)``);
* a user's ``package.module:callable`` or ``path/to/file.py:callable``.

Registry builders are called as ``builder(num_classes=..., input_shape=(C, H, W))``. A user's
``module:callable`` / ``file.py:callable`` receives the keyword ``num_classes`` (the entry's
``num_classes``: classes for an expert, experts for a router) and, when its signature has an
``input_shape`` parameter or ``**kwargs``, also ``input_shape=(C, H, W)`` (the entry's
``input_shape``, a tuple of ints); it must return an ``nn.Module`` mapping ``[B, C, H, W]`` images
(after the entry's input layer) to ``[B, num_classes]`` logits. timm/torchvision builders receive
``num_classes`` only. Architectures carry no input normalisation: that is the model's input layer
(:mod:`rsbench.models.network`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path

from rsbench.errors import ZooError

#: registry name -> "module:callable"
ARCHITECTURES: dict[str, str] = {
    "cifar_resnet20": "rsbench.models.archs.cifar_resnet:cifar_resnet20",
    "cifar_resnet110": "rsbench.models.archs.cifar_resnet:cifar_resnet110",
    "resnet50": "rsbench.models.archs.imagenet:resnet50",
    "fmnist_cnn": "rsbench.models.archs.small:fmnist_cnn",
    "mlp": "rsbench.models.archs.small:mlp",
    "pooled_mlp": "rsbench.models.archs.small:pooled_mlp",
}

#: denoisers by registry name -> "module:callable": ``net(z, sigma) -> image`` (not logits); the
#: ``denoiser`` of a denoised zoo entry, built with ``num_classes`` = the image's channel count.
DENOISER_ARCHITECTURES: dict[str, str] = {
    "small_denoiser": "rsbench.models.archs.denoiser:small_denoiser",
    "small_ddpm_unet": "rsbench.models.archs.ddpm_unet:small_ddpm_unet",
}


def _describe(exc: BaseException) -> str:
    """``ExceptionType: first line of its message`` (at most 200 characters of it)."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _load_callable(target: str, base_dir: Path | None = None) -> Callable:
    """The callable ``module:attr`` / ``file.py:attr`` names; every failure, an exception raised
    by the user's module at import included, is one :class:`ZooError` line naming the file (or
    module), the function and the exception."""
    module_part, _, attribute = target.rpartition(":")
    if not module_part or not attribute:
        raise ZooError(
            f"architecture {target!r} is not 'module:callable' or 'path/file.py:callable'"
        )
    if module_part.endswith(".py"):
        path = Path(module_part).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ZooError(
                f"architecture file {str(path)!r} does not exist; give a path to a .py file"
            )
        spec = importlib.util.spec_from_file_location(f"rsbench_user_arch_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ZooError(f"architecture file {str(path)!r} is not a Python file; name a .py file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - user code: SyntaxError, ImportError, anything
            raise ZooError(
                f"building the architecture failed: importing {str(path)!r} (for function "
                f"{attribute!r}) raised {_describe(exc)}; fix the file or the entry's arch"
            ) from None
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as exc:
            raise ZooError(
                f"architecture module {module_part!r} cannot be imported ({exc})"
            ) from None
        except Exception as exc:  # noqa: BLE001 - user code raising at import
            raise ZooError(
                f"building the architecture failed: importing module {module_part!r} (for "
                f"function {attribute!r}) raised {_describe(exc)}; fix the module or the entry's arch"
            ) from None
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise ZooError(
            f"architecture {target!r}: {module_part!r} has no attribute {attribute!r}"
        ) from None
    if not callable(found):
        raise ZooError(
            f"architecture {target!r}: {attribute!r} in {module_part!r} is a "
            f"{type(found).__name__}, not a function"
        )
    return found


def build_architecture(
    name: str,
    num_classes: int,
    input_shape: tuple[int, ...] | None = None,
    base_dir: Path | None = None,
):
    """Build the network called ``name`` with ``num_classes`` outputs (random weights).

    ``base_dir`` resolves relative ``path/file.py:callable`` names (the zoo file's folder).
    Raises :class:`ZooError` naming the architecture and the known names when it cannot be built;
    a user's ``file.py:fn`` whose module or function raises (any exception) is one
    :class:`ZooError` line "building the architecture failed: ..." naming the file, the function
    and the exception.
    """
    registered = ARCHITECTURES.get(name) or DENOISER_ARCHITECTURES.get(name)
    if registered:
        builder = _load_callable(registered)
        return builder(
            num_classes=num_classes, input_shape=tuple(input_shape) if input_shape else None
        )
    if name.startswith("timm:"):
        import timm

        try:
            return timm.create_model(name[5:], pretrained=False, num_classes=num_classes)
        except RuntimeError as exc:
            raise ZooError(f"architecture {name!r}: timm does not know it ({exc})") from None
    if name.startswith("torchvision:"):
        import torchvision

        try:
            return torchvision.models.get_model(name[12:], weights=None, num_classes=num_classes)
        except ValueError as exc:
            raise ZooError(f"architecture {name!r}: torchvision does not know it ({exc})") from None
    if ":" in name:
        builder = _load_callable(name, base_dir)
        try:
            params = dict(inspect.signature(builder).parameters)
        except (TypeError, ValueError):  # a builtin without a signature: num_classes only
            params = {}
        kwargs: dict[str, object] = {"num_classes": num_classes}
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if ("input_shape" in params or takes_kwargs) and input_shape is not None:
            kwargs["input_shape"] = tuple(input_shape)
        try:
            return builder(**kwargs)
        except ZooError:
            raise
        except Exception as exc:  # noqa: BLE001 - user code: ValueError, RecursionError, MemoryError...
            file_part, _, func = name.rpartition(":")
            raise ZooError(
                f"building the architecture failed: {func}() in {file_part!r} raised "
                f"{_describe(exc)}; fix the function or the entry's arch"
            ) from None
    import difflib

    close = difflib.get_close_matches(name, list(ARCHITECTURES) + list(DENOISER_ARCHITECTURES), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ZooError(
        f"unknown architecture {name!r}{hint} (known: {', '.join(sorted(ARCHITECTURES))}, "
        "or timm:<name>, torchvision:<name>, module:callable, file.py:callable)"
    )

"""Readers of the datasets' on-disk formats: idx files (MNIST, Fashion-MNIST) and CIFAR-10 batches.

Guarantees: :func:`read_idx` reads an idx file (``.gz`` or raw) and refuses a bad magic number, a
truncated header or data of the wrong length with one :class:`~rsbench.errors.DataError` line;
:func:`read_cifar_batch` unpickles a CIFAR-10 python batch with an unpickler that accepts plain
containers and numpy arrays only (anything else is refused; no code runs) and checks its shape.
Where the files are looked for, and the datasets built from them, is :mod:`rsbench.data.dataset`.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from rsbench.errors import DataError

_IDX_DTYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (``.gz`` or raw) into a numpy array; :class:`DataError` if malformed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read idx file {str(path)!r} ({exc}); re-download it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{str(path)!r} is not an idx file (bad magic number); re-download it")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{str(path)!r} is truncated (header); re-download it")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(
            f"{str(path)!r} holds {len(raw) - header} data bytes, expected {count * dtype.itemsize} "
            f"for shape {list(shape)}; the file is truncated or corrupt, re-download it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; anything else is refused (no code runs)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """The ``[N, 3072]`` uint8 pixels and the labels of one CIFAR-10 python batch file."""
    try:
        with open(path, "rb") as handle:
            batch = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise DataError(
            f"cannot read CIFAR-10 batch {str(path)!r} ({exc}); re-download it"
        ) from None
    if not isinstance(batch, dict):
        raise DataError(f"{str(path)!r} is not a CIFAR-10 batch (no dict inside)")
    data = batch.get("data", batch.get(b"data"))
    labels = batch.get("labels", batch.get(b"labels"))
    if data is None or labels is None:
        raise DataError(f"{str(path)!r} is not a CIFAR-10 batch (no 'data' / 'labels')")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{str(path)!r}: data {list(data.shape)} is not [N, 3072] with N labels")
    return data, [int(v) for v in labels]

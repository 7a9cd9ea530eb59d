"""Networks from zoo entries: architectures, input layers, checkpoints, denoised experts.

Owns: the architecture registry (:mod:`~rsbench.models.archs`), ``Sequential(InputLayer, net)`` with
its checkpoint loaded strictly (:mod:`~rsbench.models.network`), denoiser + classifier experts
(:mod:`~rsbench.models.denoised`; their torch-free description: :mod:`~rsbench.models.components`),
:func:`~rsbench.models.loading.load_model` (every kind) and the offline archive import behind
``rsbench zoo import-archive`` (:mod:`~rsbench.models.import_archive`).

May import: :mod:`rsbench.errors`, :mod:`rsbench.engine`, :mod:`rsbench.data`, :mod:`rsbench.zoo`,
:mod:`rsbench.weights`. The names of the 0.1 module ``rsbench.models`` still resolve here (with a
DeprecationWarning naming their new module) for one more release.
"""

from __future__ import annotations

from rsbench._moved import moved_names

__getattr__ = moved_names(
    "rsbench.models",
    {
        "InputLayer": "rsbench.models.network",
        "WeightsError": "rsbench.errors",
        "ZooEntry": "rsbench.zoo.entry",
        "ZooError": "rsbench.errors",
        "build_architecture": "rsbench.models.archs",
        "build_model": "rsbench.models.network",
        "check_state_dict": "rsbench.models.network",
        "input_layer_for": "rsbench.models.network",
        "load_model": "rsbench.models.loading",
    },
)

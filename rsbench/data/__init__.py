"""Datasets: static facts, file formats, index subsets, loaders and the protocol registry.

Owns: what each dataset is (:mod:`~rsbench.data.catalog`, torch-free), reading its files
(:mod:`~rsbench.data.files`), which positions a run certifies (:mod:`~rsbench.data.indices`), the
:class:`~rsbench.data.dataset.ImageDataset` loaders (:mod:`~rsbench.data.dataset`) and the named
protocols that fix what makes numbers comparable (:mod:`~rsbench.data.protocols`, read from
``rsbench/protocols.yaml``).

May import: :mod:`rsbench.errors`, :mod:`rsbench.safeyaml`, :mod:`rsbench.engine`.
``rsbench.data.load_dataset`` and the other names of the 0.1 module ``rsbench.data`` still resolve
here (with a DeprecationWarning naming their new module) for one more release.
"""

from __future__ import annotations

from rsbench._moved import moved_names

__getattr__ = moved_names(
    "rsbench.data",
    {
        "DATASETS": "rsbench.data.catalog",
        "DATA_ENV": "rsbench.data.dataset",
        "DEBIAN_DATASETS": "rsbench.data.dataset",
        "DataError": "rsbench.errors",
        "DatasetInfo": "rsbench.data.catalog",
        "EMBEDDED_FILE": "rsbench.data.dataset",
        "EMBEDDED_SIZE": "rsbench.data.catalog",
        "FolderImageDataset": "rsbench.data.dataset",
        "ImageDataset": "rsbench.data.dataset",
        "SPLIT_PREFIXES": "rsbench.data.catalog",
        "TensorImageDataset": "rsbench.data.dataset",
        "dataset_info": "rsbench.data.catalog",
        "default_data_root": "rsbench.data.dataset",
        "embedded_path": "rsbench.data.dataset",
        "load_dataset": "rsbench.data.dataset",
        "parse_indices": "rsbench.data.indices",
        "read_cifar_batch": "rsbench.data.files",
        "read_idx": "rsbench.data.files",
        "select_indices": "rsbench.data.indices",
        "write_embedded": "rsbench.data.dataset",
    },
)

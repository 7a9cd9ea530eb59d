"""Static facts about the datasets rsbench knows: names, classes, shapes, split sizes, normalisation.

Torch-free (the zoo, the protocol registry and ``--help`` read it without importing torch).
:data:`DATASETS` maps each name to its :class:`DatasetInfo`; :func:`dataset_info` answers an
unknown name with one :class:`~rsbench.errors.DataError` line ("did you mean"). The mean and std
are the usual per-channel normalisation of each dataset (Cohen et al.'s for CIFAR-10 and ImageNet),
the defaults of ``rsbench zoo add``. Loading the images is :mod:`rsbench.data.dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsbench.errors import DataError

#: number of images in the shipped Fashion-MNIST test subset
EMBEDDED_SIZE = 2000

#: Splits that are the first images of another split of the same dataset: (dataset, split) ->
#: (the split result rows record, how many images). Rows name each sample in its source split
#: (``runner`` writes ``fashion-mnist``/``test`` for the embedded subset), so protocol checks
#: accept that split for indices below the count.
SPLIT_PREFIXES: dict[tuple[str, str], tuple[str, int]] = {
    ("fashion-mnist", "embedded"): ("test", EMBEDDED_SIZE),
}


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: classes, image shape, split sizes, normalisation, license."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    splits: dict[str, int | None]  # split -> size (None: depends on the folder)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    license: str
    how_to_get: str


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10",
        10,
        (3, 32, 32),
        {"train": 50000, "test": 10000},
        (0.4914, 0.4822, 0.4465),
        (0.2023, 0.1994, 0.2010),
        "CIFAR-10 (Krizhevsky 2009); see https://www.cs.toronto.edu/~kriz/cifar.html",
        "pass --data-root DIR holding cifar-10-batches-py/, set RSBENCH_DATA, or add --download",
    ),
    "imagenet": DatasetInfo(
        "imagenet",
        1000,
        (3, 224, 224),
        {"val": 50000, "train": None},
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        "ImageNet terms of access (non-commercial research); see https://image-net.org",
        "pass --data-root DIR holding imagenet/val/<wnid>/*.JPEG (val sorted into class folders) "
        "or set RSBENCH_DATA; ImageNet cannot be downloaded automatically",
    ),
    "mnist": DatasetInfo(
        "mnist",
        10,
        (1, 28, 28),
        {"train": 60000, "test": 10000},
        (0.1307,),
        (0.3081,),
        "MNIST (LeCun, Cortes, Burges); CC BY-SA 3.0",
        "pass --data-root DIR holding the idx files, set RSBENCH_DATA, or add --download",
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        10,
        (1, 28, 28),
        {"train": 60000, "test": 10000},
        (0.2860,),
        (0.3530,),
        "MIT, Copyright (c) 2017 Zalando SE",
        "run `apt-get install dataset-fashion-mnist`, pass --data-root DIR holding the idx files, "
        "set RSBENCH_DATA, or add --download",
    ),
    "fashion-mnist-embedded": DatasetInfo(
        "fashion-mnist-embedded",
        10,
        (1, 28, 28),
        {"test": EMBEDDED_SIZE},
        (0.2860,),
        (0.3530,),
        "MIT, Copyright (c) 2017 Zalando SE (rsbench/embedded/LICENSE-fashion-mnist)",
        "reinstall rsbench: the file ships inside the package",
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of ``name``; :class:`DataError` naming the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), list(DATASETS), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise DataError(f"unknown dataset {name!r}{hint} (known: {', '.join(DATASETS)})") from None

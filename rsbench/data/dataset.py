"""Datasets in [0, 1] pixel space, in canonical order.

A sample is identified by ``(dataset, split, index)``, where ``index`` is its position in the
dataset's canonical order: the order of the original files (idx files for MNIST / Fashion-MNIST,
the pickled batches for CIFAR-10, the sorted class folders and file names of an ImageFolder for
ImageNet). Every loader returns an :class:`ImageDataset` whose items are
``(image float32 [C, H, W] in [0, 1], label int)``; ``.images(indices)`` gives a batch at once.

Names and splits:

* ``cifar10`` (``train``, ``test``): torchvision's ``cifar-10-batches-py`` layout under a root;
  downloaded through torchvision when ``download=True``.
* ``imagenet`` (``val``, ``train``): ``<root>/imagenet/<split>`` or ``<root>/<split>``, sorted into
  one folder per class (wnid); Cohen's transform: resize 256, center crop 224.
* ``mnist``, ``fashion-mnist`` (``train``, ``test``): the original idx files (``.gz`` or not) from
  ``root``, ``$RSBENCH_DATA``, ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist``) or
  a torchvision download.
* ``fashion-mnist-embedded`` (``test``; ``load_dataset("fashion-mnist", "embedded")`` is an alias):
  the first :data:`EMBEDDED_SIZE` images of the Fashion-MNIST test set, shipped inside the package
  (``rsbench/embedded/fashion-mnist-test-first2000.npz``). Position ``i`` of the embedded set *is*
  index ``i`` of the full test set (``.source_indices`` records it), so its certificates are those of
  ``(fashion-mnist, test, i)``. It needs no network, no root and no Debian package.

Subsets: :func:`select_indices` (``--stride``, ``--limit``, ``--indices``, ``--start``); the
protocols' subsets live in the protocol registry (:meth:`rsbench.data.protocols.Protocol.indices`).

This module owns the :class:`ImageDataset` classes, where files are
looked for and :func:`load_dataset`; the static facts are :mod:`rsbench.data.catalog`, the file formats
:mod:`rsbench.data.files` and the index subsets :mod:`rsbench.data.indices`.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rsbench.data.catalog import DATASETS, dataset_info
from rsbench.data.files import read_cifar_batch, read_idx
from rsbench.data.indices import select_indices
from rsbench.errors import DataError

log = logging.getLogger(__name__)

#: environment variable naming the default data root
DATA_ENV = "RSBENCH_DATA"
#: where Debian's ``dataset-<name>`` packages put the original files
DEBIAN_DATASETS = Path("/usr/share/datasets")

#: package-relative file of the shipped subset
EMBEDDED_FILE = "fashion-mnist-test-first2000.npz"


class ImageDataset(Dataset, ABC):
    """A labelled image dataset in canonical order, images as float32 ``[C, H, W]`` in [0, 1].

    Attributes: ``name``, ``split``, ``num_classes``, ``input_shape`` (C, H, W), ``labels``
    (``torch.LongTensor [N]``, canonical order) and ``source_indices`` (``LongTensor [N]``: each
    item's index in the canonical order of ``(source_name, split)``; ``arange(N)`` unless this is a
    subset shipped on its own, like the embedded Fashion-MNIST images).
    """

    def __init__(
        self,
        name: str,
        split: str,
        num_classes: int,
        input_shape: tuple[int, int, int],
        labels: torch.Tensor,
        source_name: str | None = None,
        source_indices: torch.Tensor | None = None,
        location: str = "",
    ) -> None:
        self.name = name
        self.split = split
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.labels = labels.to(torch.long)
        self.source_name = source_name or name
        n = len(self.labels)
        self.source_indices = (
            torch.arange(n, dtype=torch.long) if source_indices is None else source_indices.long()
        )
        self.location = location

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = self._check_index(index)
        return self.images([index])[0], int(self.labels[index])

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= int(index) < n:
            raise DataError(f"index {index} is outside {self.name}/{self.split} (0..{n - 1})")
        return int(index) % n

    @abstractmethod
    def images(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Images at ``indices`` (positions in this dataset) as float32 ``[B, C, H, W]`` in [0, 1]."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"input_shape={self.input_shape}, location={self.location!r})"
        )


class TensorImageDataset(ImageDataset):
    """An :class:`ImageDataset` held in memory as uint8 ``[N, C, H, W]`` (MNIST, CIFAR-10, ...)."""

    def __init__(
        self,
        name: str,
        split: str,
        num_classes: int,
        data: torch.Tensor,
        labels: torch.Tensor,
        **kw,
    ):
        if data.dtype != torch.uint8 or data.ndim != 4:
            raise DataError(
                f"{name}/{split}: expected uint8 [N, C, H, W] pixels, got {data.dtype} {list(data.shape)}"
            )
        if len(data) != len(labels):
            raise DataError(f"{name}/{split}: {len(data)} images but {len(labels)} labels")
        channels, height, width = (int(d) for d in data.shape[1:])
        super().__init__(name, split, num_classes, (channels, height, width), labels, **kw)
        self.data = data

    def images(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if len(idx) and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise DataError(f"indices outside {self.name}/{self.split} (0..{len(self) - 1})")
        return self.data[idx].to(torch.float32).div_(255.0)


class FolderImageDataset(ImageDataset):
    """An ImageFolder-style dataset (ImageNet) read from disk, resized 256 and center-cropped 224."""

    def __init__(
        self,
        name: str,
        split: str,
        num_classes: int,
        folder,
        size: int = 224,
        resize: int = 256,
        **kw,
    ):
        self.folder = folder  # torchvision.datasets.ImageFolder without transform
        labels = torch.as_tensor(folder.targets, dtype=torch.long)
        super().__init__(name, split, num_classes, (3, size, size), labels, **kw)
        from torchvision import transforms

        self.transform = transforms.Compose(
            [transforms.Resize(resize), transforms.CenterCrop(size), transforms.ToTensor()]
        )

    def images(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        idx = [self._check_index(i) for i in torch.as_tensor(indices).reshape(-1).tolist()]
        if not idx:
            return torch.empty((0, *self.input_shape), dtype=torch.float32)
        out = []
        for i in idx:
            path, _ = self.folder.samples[i]
            image = self.folder.loader(path)
            out.append(self.transform(image))
        return torch.stack(out).to(torch.float32)


# --------------------------------------------------------------------------------------------
# locations


def default_data_root() -> Path:
    """``$RSBENCH_DATA`` if set, else the user cache folder ``.../rsbench/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rsbench")) / "data"


def _roots(root: str | os.PathLike | None) -> list[Path]:
    """Roots to search, in order: ``root`` if given, else ``$RSBENCH_DATA`` and the user cache."""
    if root is not None:
        return [Path(root).expanduser()]
    roots = []
    env = os.environ.get(DATA_ENV)
    if env:
        roots.append(Path(env).expanduser())
    roots.append(default_data_root())
    return list(dict.fromkeys(roots))


def _missing(name: str, split: str, looked: Sequence[Path | str]) -> DataError:
    info = DATASETS[name]
    where = ", ".join(str(p) for p in looked)
    return DataError(f"dataset {name}/{split} not found (looked in: {where}); {info.how_to_get}")


def _check_split(name: str, split: str) -> str:
    info = dataset_info(name)
    if split not in info.splits:
        raise DataError(f"dataset {name} has no split {split!r} (splits: {', '.join(info.splits)})")
    return split


# --------------------------------------------------------------------------------------------
# idx files (MNIST, Fashion-MNIST)

_IDX_PREFIX = {"train": "train", "test": "t10k"}
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_candidates(name: str, root: str | os.PathLike | None) -> list[Path]:
    folders: list[Path] = []
    for base in _roots(root):
        folders += [base / name, base / _TORCHVISION_DIRS[name] / "raw", base]
    if root is None:
        folders.append(DEBIAN_DATASETS / name)
    return list(dict.fromkeys(folders))


def _load_idx_dataset(name: str, split: str, root, download: bool) -> TensorImageDataset:
    prefix = _IDX_PREFIX[split]
    folders = _idx_candidates(name, root)
    for folder in folders:
        images_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
        if images_path and labels_path:
            return _idx_dataset(name, split, images_path, labels_path)
    if download:
        target = Path(root).expanduser() if root is not None else default_data_root()
        _torchvision_download(name, target)
        folder = target / _TORCHVISION_DIRS[name] / "raw"
        images_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
        if images_path and labels_path:
            return _idx_dataset(name, split, images_path, labels_path)
        folders.append(folder)
    raise _missing(name, split, folders)


def _idx_dataset(name: str, split: str, images_path: Path, labels_path: Path) -> TensorImageDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{str(images_path)!r} / {str(labels_path)!r}: shapes {list(images.shape)} and "
            f"{list(labels.shape)} are not [N, H, W] images with N labels"
        )
    log.info("loaded %s/%s from %s (%d images)", name, split, images_path.parent, len(images))
    data = torch.from_numpy(images.astype(np.uint8, copy=True)).unsqueeze(1)
    return TensorImageDataset(
        name,
        split,
        DATASETS[name].num_classes,
        data,
        torch.from_numpy(labels.astype(np.int64)),
        location=str(images_path.parent),
    )


def _torchvision_download(name: str, target: Path) -> None:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}[
        name
    ]
    target.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s into %s", name, target)
    try:
        cls(str(target), train=True, download=True)
        cls(str(target), train=False, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(
            f"downloading {name} into {str(target)!r} failed ({exc}); {DATASETS[name].how_to_get}"
        ) from None


# --------------------------------------------------------------------------------------------
# CIFAR-10 (torchvision's python pickle layout)

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _load_cifar10(split: str, root, download: bool) -> TensorImageDataset:
    bases = _roots(root)
    folders = [b / _CIFAR_DIR for b in bases] + [b / "cifar10" / _CIFAR_DIR for b in bases]
    folder = next((f for f in folders if all((f / n).is_file() for n in _CIFAR_FILES[split])), None)
    if folder is None and download:
        import torchvision

        target = Path(root).expanduser() if root is not None else default_data_root()
        target.mkdir(parents=True, exist_ok=True)
        try:
            torchvision.datasets.CIFAR10(str(target), train=split == "train", download=True)
        except (OSError, RuntimeError) as exc:
            raise DataError(f"downloading cifar10 into {str(target)!r} failed ({exc})") from None
        folder = target / _CIFAR_DIR
    if folder is None:
        raise _missing("cifar10", split, folders)
    parts = [read_cifar_batch(folder / n) for n in _CIFAR_FILES[split]]
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = torch.tensor([label for p in parts for label in p[1]], dtype=torch.long)
    return TensorImageDataset(
        "cifar10", split, 10, torch.from_numpy(data.copy()), labels, location=str(folder)
    )


# --------------------------------------------------------------------------------------------
# ImageNet (ImageFolder)


def _load_imagenet(split: str, root) -> FolderImageDataset:
    bases = _roots(root)
    folders = [b / "imagenet" / split for b in bases] + [b / split for b in bases]
    folder = next((f for f in folders if f.is_dir() and any(p.is_dir() for p in f.iterdir())), None)
    if folder is None:
        raise _missing("imagenet", split, folders)
    from torchvision.datasets import ImageFolder

    image_folder = ImageFolder(str(folder))
    if len(image_folder.classes) != 1000:
        log.warning("%s has %d class folders, not 1000", folder, len(image_folder.classes))
    return FolderImageDataset("imagenet", split, 1000, image_folder, location=str(folder))


# --------------------------------------------------------------------------------------------
# embedded Fashion-MNIST subset


def embedded_path() -> Path:
    """Path of the shipped Fashion-MNIST test subset (``rsbench/embedded/<EMBEDDED_FILE>``)."""
    return Path(str(resources.files("rsbench") / "embedded" / EMBEDDED_FILE))


def _load_embedded() -> TensorImageDataset:
    path = embedded_path()
    if not path.is_file():
        raise _missing("fashion-mnist-embedded", "test", [path])
    with np.load(path, allow_pickle=False) as archive:
        images = archive["images"]
        labels = archive["labels"]
        indices = archive["indices"]
    return TensorImageDataset(
        "fashion-mnist-embedded",
        "test",
        10,
        torch.from_numpy(images.astype(np.uint8)).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        source_name="fashion-mnist",
        source_indices=torch.from_numpy(indices.astype(np.int64)),
        location=str(path),
    )


def write_embedded(dataset: ImageDataset, count: int, path: str | os.PathLike) -> Path:
    """Write the first ``count`` images of ``dataset`` (canonical order) as the embedded ``.npz``.

    Stored compressed: ``images`` uint8 [count, H, W], ``labels`` uint8, ``indices`` int64 (each
    image's index in ``dataset``). Used once to build the shipped file; kept for reproducibility.
    """
    if not isinstance(dataset, TensorImageDataset) or dataset.input_shape[0] != 1:
        raise DataError("write_embedded needs an in-memory single-channel dataset (mnist-like)")
    indices = np.asarray(select_indices(len(dataset), limit=count), dtype=np.int64)
    path = Path(path)
    np.savez_compressed(
        path,
        images=dataset.data[indices, 0].numpy(),
        labels=dataset.labels[indices].numpy().astype(np.uint8),
        indices=indices,
    )
    return path


# --------------------------------------------------------------------------------------------
# public entry points


def load_dataset(
    name: str, split: str, root: str | os.PathLike | None = None, download: bool = False
) -> ImageDataset:
    """Load ``name``/``split`` in canonical order with pixels in [0, 1].

    ``root`` (``--data-root``) replaces the default search (``$RSBENCH_DATA``, the user cache and,
    for MNIST-like sets, ``/usr/share/datasets/<name>``). ``download=True`` lets torchvision fetch
    CIFAR-10 / MNIST / Fashion-MNIST into ``root`` (or the default root) when not found. A dataset
    that cannot be found raises one :class:`DataError` line naming where rsbench looked and how to
    get it.
    """
    if name == "fashion-mnist" and split == "embedded":
        name, split = "fashion-mnist-embedded", "test"
    _check_split(name, split)
    if name == "fashion-mnist-embedded":
        return _load_embedded()
    if name in ("mnist", "fashion-mnist"):
        return _load_idx_dataset(name, split, root, download)
    if name == "cifar10":
        return _load_cifar10(split, root, download)
    if name == "imagenet":
        if download:
            raise DataError(
                "ImageNet cannot be downloaded automatically; " + DATASETS["imagenet"].how_to_get
            )
        return _load_imagenet(split, root)
    raise DataError(f"no loader for dataset {name!r}")  # pragma: no cover - DATASETS covers all

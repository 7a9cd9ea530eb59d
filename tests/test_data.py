"""Datasets: real CIFAR-10 pixels through the torchvision layout, idx files, the embedded subset,
subset selection and the missing-dataset message."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import pickle
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from rsbench.data import catalog, indices
from rsbench.data import dataset as data
from rsbench.data.dataset import load_dataset
from rsbench.data.indices import select_indices
from rsbench.errors import DataError

#: the first 10 real CIFAR-10 test images (tests/data/README.md)
CIFAR_CSV = (
    Path(__file__).resolve().parent / "data" / "cifar10_first10" / "cifar10_test_first10.csv.gz"
)
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
#: labels of the first ten Fashion-MNIST test images (t10k-labels-idx1-ubyte)
FMNIST_TEST_FIRST_LABELS = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


@pytest.fixture(autouse=True)
def _no_default_roots(monkeypatch, tmp_path):
    """Keep the user's RSBENCH_DATA and cache out of the tests."""
    monkeypatch.setenv("RSBENCH_DATA", str(tmp_path / "env-root"))


# ------------------------------------------------------------------------------------------------
# CIFAR-10


def _cifar_rows() -> tuple[np.ndarray, np.ndarray]:
    rows = np.loadtxt(CIFAR_CSV, delimiter=",", dtype=np.int64)  # loadtxt reads .gz itself
    return rows[:, 1:].astype(np.uint8), rows[:, 0]


def _write_cifar_layout(root: Path, pixels_hwc: np.ndarray, labels: np.ndarray) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    chw = pixels_hwc.reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2).reshape(-1, 3072)
    batch = {
        "batch_label": "testing batch 1 of 1",
        "labels": [int(v) for v in labels],
        "data": np.ascontiguousarray(chw),
        "filenames": [f"img_{i}.png" for i in range(len(labels))],
    }
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    return folder


def test_cifar10_loader_returns_the_real_pixels_and_labels(tmp_path):
    pixels, labels = _cifar_rows()
    _write_cifar_layout(tmp_path, pixels, labels)
    ds = load_dataset("cifar10", "test", root=tmp_path)
    assert len(ds) == 10 and ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    assert (ds.name, ds.split) == ("cifar10", "test")
    expected = torch.from_numpy(pixels.reshape(-1, 32, 32, 3)).permute(0, 3, 1, 2).float() / 255
    got = ds.images(range(10))
    assert got.dtype == torch.float32 and got.shape == (10, 3, 32, 32)
    assert torch.equal(got, expected)
    assert ds.labels.tolist() == labels.tolist()
    # the first CIFAR-10 test images are a cat, two ships and an airplane
    assert ds.labels[:4].tolist() == [3, 8, 8, 0]
    image, label = ds[7]
    assert torch.equal(image, expected[7]) and label == int(labels[7])
    assert torch.equal(ds.images([5, 2]), expected[[5, 2]])
    # pixel (row 0, col 0) of image 0 is (158, 112, 49) in the CSV: R, G, B
    assert torch.allclose(got[0, :, 0, 0], torch.tensor([158, 112, 49]) / 255.0)


def test_cifar10_layout_under_named_subfolder_and_missing_train(tmp_path):
    pixels, labels = _cifar_rows()
    _write_cifar_layout(tmp_path / "cifar10", pixels[:3], labels[:3])
    assert len(load_dataset("cifar10", "test", root=tmp_path)) == 3
    with pytest.raises(DataError, match="cifar10/train not found") as info:
        load_dataset("cifar10", "train", root=tmp_path)
    assert "--download" in str(info.value) and "\n" not in str(info.value)


def test_cifar10_pickle_with_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset("cifar10", "test", root=tmp_path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# idx files


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def _write_idx_set(
    folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        raw = _idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)


def _tiny_images(count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), np.arange(
        count, dtype=np.uint8
    ) % 10


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_are_read_exactly(tmp_path, gz):
    images, labels = _tiny_images()
    _write_idx_set(tmp_path / "fashion-mnist", "t10k", images, labels, gz)
    ds = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert len(ds) == 5 and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert torch.equal(ds.images(range(5)), torch.from_numpy(images).unsqueeze(1).float() / 255)
    assert ds.labels.tolist() == labels.tolist()
    assert ds.location == str(tmp_path / "fashion-mnist")


def test_idx_torchvision_layout_and_env_root(tmp_path, monkeypatch):
    images, labels = _tiny_images(3)
    _write_idx_set(tmp_path / "envdata" / "MNIST" / "raw", "train", images, labels, gz=False)
    monkeypatch.setenv("RSBENCH_DATA", str(tmp_path / "envdata"))
    ds = load_dataset("mnist", "train")
    assert ds.labels.tolist() == [0, 1, 2]


def test_truncated_and_bad_idx_files_are_clear_errors(tmp_path):
    images, labels = _tiny_images()
    folder = tmp_path / "fashion-mnist"
    _write_idx_set(folder, "t10k", images, labels, gz=False)
    raw = (folder / "t10k-images-idx3-ubyte").read_bytes()
    (folder / "t10k-images-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("fashion-mnist", "test", root=tmp_path)
    (folder / "t10k-images-idx3-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="bad magic number"):
        load_dataset("fashion-mnist", "test", root=tmp_path)


def test_missing_dataset_is_one_line_naming_places_and_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_DATASETS", tmp_path / "no-debian")
    monkeypatch.delenv("RSBENCH_DATA")
    monkeypatch.setattr(data, "default_data_root", lambda: tmp_path / "cache")
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", "test")
    message = str(info.value)
    assert "\n" not in message
    assert "fashion-mnist/test not found" in message
    assert str(tmp_path / "no-debian" / "fashion-mnist") in message
    assert str(tmp_path / "cache") in message
    for fix in (
        "apt-get install dataset-fashion-mnist",
        "--data-root",
        "RSBENCH_DATA",
        "--download",
    ):
        assert fix in message
    with pytest.raises(DataError, match="imagenet/val not found.*cannot be downloaded"):
        load_dataset("imagenet", "val", root=tmp_path)


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(DataError, match="did you mean cifar10"):
        load_dataset("cifar-10", "test")
    with pytest.raises(DataError, match="has no split 'validation'"):
        load_dataset("fashion-mnist", "validation")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


def test_download_through_torchvision_from_a_local_server(tmp_path, monkeypatch):
    """The real download path (torchvision's downloader, md5 check, gunzip) against 127.0.0.1."""
    import torchvision

    served = tmp_path / "served"
    resources = []
    for prefix, count in (("train", 4), ("t10k", 3)):
        images, labels = _tiny_images(count)
        _write_idx_set(served, prefix, images, labels, gz=True)
        for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
            name = f"{stem}.gz"
            resources.append((name, hashlib.md5((served / name).read_bytes()).hexdigest()))
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cls = torchvision.datasets.FashionMNIST
        monkeypatch.setattr(cls, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
        monkeypatch.setattr(cls, "resources", resources)
        root = tmp_path / "root"
        with pytest.raises(DataError, match="not found"):
            load_dataset("fashion-mnist", "test", root=root)
        ds = load_dataset("fashion-mnist", "test", root=root, download=True)
        assert len(ds) == 3 and ds.labels.tolist() == [0, 1, 2]
        assert (root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
        # the second time it is found without downloading
        assert len(load_dataset("fashion-mnist", "train", root=root)) == 4
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------------
# real Fashion-MNIST (Debian's dataset-fashion-mnist) and the embedded subset


@pytest.fixture(scope="module")
def debian_test_set():
    if not (DEBIAN_FMNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            "Debian's dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)"
        )
    return load_dataset("fashion-mnist", "test", root=DEBIAN_FMNIST)


def test_real_fashion_mnist_files(debian_test_set):
    ds = debian_test_set
    assert len(ds) == 10000 and ds.input_shape == (1, 28, 28)
    assert ds.labels[:10].tolist() == FMNIST_TEST_FIRST_LABELS
    assert ds.labels.bincount().tolist() == [1000] * 10
    pixels = ds.images(range(100))
    assert float(pixels.min()) == 0.0 and float(pixels.max()) == 1.0
    train = load_dataset("fashion-mnist", "train", root=DEBIAN_FMNIST)
    assert len(train) == 60000 and train.labels.bincount().tolist() == [6000] * 10


def test_debian_location_is_searched_by_default(monkeypatch, tmp_path):
    if not (DEBIAN_FMNIST / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    monkeypatch.setattr(data, "default_data_root", lambda: tmp_path / "cache")
    ds = load_dataset("fashion-mnist", "test")
    assert ds.location == str(DEBIAN_FMNIST) and len(ds) == 10000


def test_embedded_subset_ships_with_the_package():
    ds = load_dataset("fashion-mnist-embedded", "test")
    alias = load_dataset("fashion-mnist", "embedded")
    assert len(ds) == catalog.EMBEDDED_SIZE >= 1000
    assert (ds.name, ds.split, ds.source_name) == (
        "fashion-mnist-embedded",
        "test",
        "fashion-mnist",
    )
    assert ds.source_indices.tolist() == list(range(len(ds)))
    assert ds.labels[:10].tolist() == FMNIST_TEST_FIRST_LABELS
    assert torch.equal(alias.images([0, 1999]), ds.images([0, 1999]))
    license_file = data.embedded_path().parent / "LICENSE-fashion-mnist"
    text = license_file.read_text(encoding="utf-8")
    assert "MIT" in text and "Zalando SE" in text


def test_embedded_subset_equals_the_full_test_set(debian_test_set):
    embedded = load_dataset("fashion-mnist-embedded", "test")
    idx = embedded.source_indices
    assert torch.equal(embedded.images(range(len(embedded))), debian_test_set.images(idx))
    assert torch.equal(embedded.labels, debian_test_set.labels[idx])


# ------------------------------------------------------------------------------------------------
# ImageNet folder layout


def test_imagenet_folder_resize_and_crop(tmp_path):
    from PIL import Image

    colours = {"n01440764": (255, 0, 0), "n01443537": (0, 128, 255)}
    for wnid, colour in colours.items():
        (tmp_path / "imagenet" / "val" / wnid).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (320 + 40 * k, 260), colour).save(
                tmp_path / "imagenet" / "val" / wnid / f"{k}.png"
            )
    ds = load_dataset("imagenet", "val", root=tmp_path)
    assert len(ds) == 4 and ds.input_shape == (3, 224, 224) and ds.num_classes == 1000
    assert ds.labels.tolist() == [0, 0, 1, 1]
    batch = ds.images([0, 3])
    assert batch.shape == (2, 3, 224, 224)
    assert torch.allclose(batch[0], torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 224, 224))
    assert torch.allclose(batch[1][:, 100, 100], torch.tensor([0, 128, 255]) / 255.0)


# ------------------------------------------------------------------------------------------------
# subsets


def test_select_indices_stride_limit_start_and_indices():
    assert select_indices(10) == list(range(10))
    assert select_indices(10, stride=3) == [0, 3, 6, 9]
    assert select_indices(10, stride=3, limit=2) == [0, 3]
    assert select_indices(10, stride=4, start=1) == [1, 5, 9]
    assert select_indices(10, indices=[7, 2, 9]) == [7, 2, 9]
    assert select_indices(10, indices=[7, 2, 9], limit=2) == [7, 2]
    assert select_indices(10, stride=10) == [0]
    assert indices.parse_indices("0,5, 10-12") == [0, 5, 10, 11, 12]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stride": 11}, "stride=11 is beyond the dataset"),
        ({"stride": 0}, "stride=0 is not allowed"),
        ({"limit": 11}, "limit=11 is beyond the 10 images"),
        ({"stride": 5, "limit": 3}, "limit=3 is beyond the 2 images"),
        ({"limit": 0}, "limit=0 is not allowed"),
        ({"start": 10}, "start=10 is outside"),
        ({"indices": [3, 10]}, "index 10 is outside the dataset"),
        ({"indices": [-1]}, "index -1 is outside"),
        ({"indices": [1, 1]}, "indices repeat"),
        ({"indices": [1.5]}, "is not an integer"),
        ({"indices": []}, "empty"),
        ({"indices": [1], "stride": 2}, "not both"),
    ],
)
def test_select_indices_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        select_indices(10, **kwargs)


def test_parse_indices_errors():
    with pytest.raises(DataError, match="cannot read index"):
        indices.parse_indices("1,x")
    with pytest.raises(DataError, match="backwards"):
        indices.parse_indices("5-2")


def test_standard_protocol_subsets():
    from rsbench.data.protocols import get_protocol

    cifar = get_protocol("cohen").indices("cifar10")
    assert len(cifar) == 500 and cifar[:3] == [0, 20, 40] and cifar[-1] == 9980
    imagenet = get_protocol("cohen").indices("imagenet")
    assert len(imagenet) == 500 and imagenet[:2] == [0, 100] and imagenet[-1] == 49900
    assert len(get_protocol("dualrs").indices("cifar10")) == 10_000

"""`rsbench zoo import-archive` on archives built here in the authors' layouts, then certify.

The checkpoints are written the way the authors' train.py / train_pgd.py save them:
``torch.save({'epoch', 'arch', 'state_dict', 'optimizer'})`` of ``Sequential(input layer, net)``, the
ImageNet ResNet-50 inside ``DataParallel`` (keys ``1.module.*``), the CIFAR ResNet-110 bare (``1.*``).
Real architectures, random weights. The certify run uses the first CIFAR-10 test images shipped in
tests/data (eth-sri/eran's copy, Apache-2.0).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml

from rsbench.cli.main import main
from rsbench.models.archs.cifar_resnet import cifar_resnet20, cifar_resnet110
from rsbench.models.import_archive import match_members
from rsbench.weights.cache import blob_path, cached_file, sha256_file
from rsbench.zoo.registry import load_zoo

DATA = Path(__file__).resolve().parent / "data"
COHEN_CIFAR = "models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar"
COHEN_IMAGENET = "models/imagenet/resnet50/noise_0.25/checkpoint.pth.tar"
SMOOTHADV_CIFAR = (
    "pretrained_models/cifar10/PGD_2steps_multiNoiseSamples/8-multitrain/eps_255/cifar10/"
    "resnet110/noise_0.25/checkpoint.pth.tar"
)
SMOOTHADV_IMAGENET = (
    "pretrained_models/imagenet/PGD_1step/eps_255/resnet50/noise_0.25/checkpoint.pth.tar"
)


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.delenv("RSBENCH_ZOO", raising=False)
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))


def saved_like_the_authors(net: torch.nn.Module, arch: str, prefix: str) -> bytes:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    buffer = io.BytesIO()
    torch.save(
        {
            "epoch": 90,
            "arch": arch,
            "state_dict": {prefix + k: v for k, v in net.state_dict().items()},
            "optimizer": optimizer.state_dict(),
        },
        buffer,
    )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoints() -> dict[str, bytes]:
    torch.manual_seed(0)
    return {
        "cifar_resnet110": saved_like_the_authors(cifar_resnet110(10), "cifar_resnet110", "1."),
        "resnet50": saved_like_the_authors(
            torchvision.models.resnet50(num_classes=1000), "resnet50", "1.module."
        ),
        "cifar_resnet20": saved_like_the_authors(cifar_resnet20(10), "cifar_resnet20", "1."),
    }


def write_tar(path: Path, members: dict[str, bytes], gz: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@dataclass
class Run:
    exit_code: int
    output: str


@pytest.fixture()
def cli(capsys):
    """Run ``rsbench ARGS`` through the console entry point (one ``error:`` line on failure)."""

    def run(*args) -> Run:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Run(code, out + err)

    return run


def test_match_tolerates_a_leading_folder():
    entries = load_zoo().select("cohen-cifar10-resnet110-s0.25")
    for name in (COHEN_CIFAR, "smoothing/" + COHEN_CIFAR, COHEN_CIFAR.split("/", 1)[1]):
        assert match_members([name, "models/cifar10/resnet110/noise_0.50/x.pth"], entries)[0] == {
            "cohen-cifar10-resnet110-s0.25": name
        }
    found, ambiguous = match_members(["a/" + COHEN_CIFAR, "b/" + COHEN_CIFAR], entries)
    assert found == {} and list(ambiguous) == ["cohen-cifar10-resnet110-s0.25"]
    # a SmoothAdv path ends like Cohen's less its top folder: it must not match Cohen's entry
    assert match_members([SMOOTHADV_CIFAR, "x/" + SMOOTHADV_CIFAR[18:]], entries) == ({}, {})
    smoothadv = load_zoo().select("smoothadv-imagenet-resnet50-pgd1-eps255-s0.25")
    assert match_members([SMOOTHADV_IMAGENET], smoothadv)[0] == {
        "smoothadv-imagenet-resnet50-pgd1-eps255-s0.25": SMOOTHADV_IMAGENET
    }
    assert match_members(["checkpoint.pth.tar"], entries) == ({}, {})


def test_import_cohen_archive_pins_entries_for_the_user(tmp_path, checkpoints, cli):
    archive = write_tar(
        tmp_path / "models.tar",
        {
            COHEN_CIFAR: checkpoints["cifar_resnet110"],
            COHEN_IMAGENET: checkpoints["resnet50"],
            "models/cifar10/resnet110/noise_9.99/checkpoint.pth.tar": b"not matched",
            "models/cifar10/resnet110/noise_0.25/log": b"epoch\ttime\n",
        },
    )
    zoo_file = tmp_path / "my_zoo.yaml"
    result = cli("zoo", "import-archive", str(archive), "--zoo-file", str(zoo_file))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ok cohen-cifar10-resnet110-s0.25" in out and "ok cohen-imagenet-resnet50-s0.25" in out
    assert "no entry: models/cifar10/resnet110/noise_9.99/checkpoint.pth.tar" in out
    assert "2 entries available, 0 failed; 1 checkpoint files matched no entry" in out
    assert "(1 other files ignored)" in out and f"--zoo {zoo_file}" in out
    written = {e["id"]: e for e in yaml.safe_load(zoo_file.read_text())["models"]}
    digests = {
        "cohen-cifar10-resnet110-s0.25": hashlib.sha256(checkpoints["cifar_resnet110"]).hexdigest(),
        "cohen-imagenet-resnet50-s0.25": hashlib.sha256(checkpoints["resnet50"]).hexdigest(),
    }
    zoo = load_zoo([zoo_file])
    for entry_id in ("cohen-cifar10-resnet110-s0.25", "cohen-imagenet-resnet50-s0.25"):
        entry = zoo.get(entry_id)
        path = cached_file(entry)
        assert entry.zoo_file == zoo_file and entry.pinned
        assert written[entry_id]["sha256"] == entry.sha256 == digests[entry_id]
        assert path == blob_path(digests[entry_id]) and sha256_file(path) == digests[entry_id]
    listing = json.loads(
        cli("zoo", "list", "cohen-", "--zoo", str(zoo_file), "--format", "json").output
    )
    state = {r["id"]: (r["pinned"], r["cached"]) for r in listing}
    assert state["cohen-cifar10-resnet110-s0.25"] == (True, True)
    assert state["cohen-cifar10-resnet110-s0.50"] == (False, False)


def test_import_smoothadv_folder_and_zip(tmp_path, checkpoints, cli):
    folder = tmp_path / "pretrained_models"  # the user passes the extracted folder itself
    target = tmp_path / SMOOTHADV_CIFAR
    target.parent.mkdir(parents=True)
    target.write_bytes(checkpoints["cifar_resnet110"])
    (tmp_path / "pretrained_models" / "imagenet").mkdir()  # other folders are walked too
    zoo_file = tmp_path / "zoo.yaml"
    result = cli("zoo", "import-archive", str(folder), "--zoo-file", str(zoo_file))
    assert result.exit_code == 0, result.output
    assert "ok smoothadv-cifar10-resnet110-pgd2-m8-eps255-s0.25" in result.output
    zipped = tmp_path / "models.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("download/" + SMOOTHADV_CIFAR, checkpoints["cifar_resnet110"])
    result = cli("zoo", "import-archive", str(zipped), "--zoo-file", str(zoo_file))
    assert result.exit_code == 0 and "1 entries available" in result.output, result.output
    assert "cohen" not in result.output  # a SmoothAdv path is not Cohen's, though it ends alike
    assert len(yaml.safe_load(zoo_file.read_text())["models"]) == 1  # the pin was checked, kept


def test_wrong_checkpoint_or_digest_is_refused_and_not_kept(tmp_path, checkpoints, cli):
    archive = write_tar(
        tmp_path / "models.tar.gz", {SMOOTHADV_CIFAR: checkpoints["cifar_resnet20"]}, gz=True
    )
    zoo_file = tmp_path / "zoo.yaml"
    result = cli("zoo", "import-archive", str(archive), "--zoo-file", str(zoo_file))
    assert result.exit_code != 0
    assert "FAIL smoothadv-cifar10-resnet110-pgd2-m8-eps255-s0.25" in result.output
    assert "error: 1 of 1 matched entries failed" in result.output
    assert "0 entries available, 1 failed" in result.output and not zoo_file.exists()
    entry = load_zoo().get("smoothadv-cifar10-resnet110-pgd2-m8-eps255-s0.25")
    assert cached_file(entry) is None
    # a user zoo that already pins another digest: the archive's bytes are refused
    good = write_tar(tmp_path / "good.tar", {SMOOTHADV_CIFAR: checkpoints["cifar_resnet110"]})
    assert cli("zoo", "import-archive", str(good), "--zoo-file", str(zoo_file)).exit_code == 0
    result = cli("zoo", "import-archive", str(archive), "--zoo-file", str(zoo_file))
    assert result.exit_code != 0 and "but the entry pins" in result.output
    nothing = write_tar(tmp_path / "other.tar", {"readme.txt": b"hi"})
    result = cli("zoo", "import-archive", str(nothing), "--zoo-file", str(zoo_file))
    assert (
        result.exit_code != 0
        and f"error: no member of {nothing} is named by a zoo entry" in result.output
    )
    (tmp_path / "junk.bin").write_bytes(b"junk")
    result = cli("zoo", "import-archive", tmp_path / "junk.bin", "--zoo-file", zoo_file)
    assert result.exit_code != 0 and result.output.startswith("error: ")
    assert result.output.count("\n") == 1
    assert "neither a folder nor a .tar/.tar.gz/.zip archive" in result.output


def cifar_root(tmp_path: Path) -> Path:
    """cifar-10-batches-py/test_batch holding the first 10 test images shipped in tests/data."""
    rows = np.loadtxt(DATA / "cifar10_first10" / "cifar10_test_first10.csv.gz", delimiter=",")
    labels = rows[:, 0].astype(int).tolist()
    hwc = rows[:, 1:].astype(np.uint8).reshape(-1, 32, 32, 3)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {"data": hwc.transpose(0, 3, 1, 2).reshape(-1, 3072), "labels": labels}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    return folder.parent


def test_certify_runs_imported_cohen_and_smoothadv_experts(tmp_path, checkpoints, cli):
    torch.manual_seed(1)
    smoothadv = saved_like_the_authors(cifar_resnet110(10), "cifar_resnet110", "1.")
    archive = write_tar(
        tmp_path / "models.tar",
        {COHEN_CIFAR: checkpoints["cifar_resnet110"], SMOOTHADV_CIFAR: smoothadv},
    )
    zoo_file = tmp_path / "zoo.yaml"
    assert cli("zoo", "import-archive", str(archive), "--zoo-file", str(zoo_file)).exit_code == 0
    ids = ["cohen-cifar10-resnet110-s0.25", "smoothadv-cifar10-resnet110-pgd2-m8-eps255-s0.25"]
    out = tmp_path / "runs"
    result = cli(
        "certify", *ids, "--zoo", str(zoo_file), "--require-pinned",
        "--data-root", str(cifar_root(tmp_path)), "--protocol", "cohen", "--stride", "1",
        "--limit", "2", "--n0", "8", "--n", "32", "--batch", "40", "--device", "cpu",
        "--out", str(out), "--no-leaderboard", "--threads", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import pandas as pd

    rows = pd.concat(pd.read_parquet(p) for p in out.rglob("*.parquet"))
    assert len(rows) == 4 and set(rows["model_id"]) == set(ids)
    runs = [json.dumps(json.loads(p.read_text())) for p in out.rglob("run.json")]
    zoo = load_zoo([zoo_file])
    for entry_id in ids:  # each run records the imported, pinned weights
        assert sum(zoo.get(entry_id).sha256 in run for run in runs) == 1

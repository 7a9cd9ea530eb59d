"""Downloads against a local stand-in for Google Drive (tests/helpers/drive_server.py): the confirmation
form, quota / sign-in / missing pages, truncated bodies resumed with Range, servers that ignore
Range, digests, and one download per archive shared by the zoo entries that name it."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers.drive_server import UUID, File

from rsbench.errors import WeightsError
from rsbench.models.archs.cifar_resnet import cifar_resnet20
from rsbench.weights.cache import archive_cache_path, blob_path, read_ref, ref_path
from rsbench.weights.download import download, drive_download_url, partial_meta_path, partial_path
from rsbench.weights.sources import fetch, is_cached, remove_cached
from rsbench.zoo.entry import SourceSpec
from rsbench.zoo.parse import parse_entry


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.delenv("RSBENCH_ZOO", raising=False)
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(size: int = 300_000, seed: int = 0) -> bytes:
    return (
        torch.randint(0, 256, (size,), generator=torch.Generator().manual_seed(seed))
        .to(torch.uint8)
        .numpy()
        .tobytes()
    )


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# the Drive flow


def test_confirmation_form_leads_to_the_file_on_another_host(drive, tmp_path):
    data = blob()
    drive.state.files["BIG"] = File(data)
    seen_progress = []
    dest = tmp_path / "out" / "models.tar.gz"
    digest = download(
        drive.url("BIG"),
        dest,
        what="cohen",
        expected_sha256=sha(data),
        progress=lambda what, done, total: seen_progress.append((what, done, total)),
    )
    assert digest == sha(data) and dest.read_bytes() == data
    assert files_in(tmp_path / "out") == ["models.tar.gz"]  # no partial left
    first, second = drive.state.hits
    assert first[0] == "/uc?export=download&id=BIG"
    assert second[0] == f"/download?id=BIG&export=download&confirm=t&uuid={UUID}"
    assert seen_progress[-1] == ("cohen", len(data), len(data))


def test_share_link_is_turned_into_a_download_link(drive, tmp_path):
    drive.state.files["ID1"] = File(b"payload")
    assert drive_download_url(drive.share_link("ID1")) == drive.url("ID1")
    assert download(drive.share_link("ID1"), tmp_path / "f", what="x") == sha(b"payload")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("quota", "too many users have viewed or downloaded this file recently"),
        ("signin", "asks to sign in"),
        ("denied", "says you need permission"),
        ("missing", "HTTP 404"),
    ],
)
def test_refusals_are_one_line_and_leave_nothing(drive, tmp_path, case, expected):
    if case == "quota":
        drive.state.quota.add("ID")
    if case == "signin":
        drive.state.signin.add("ID")
    if case == "denied":
        drive.state.denied.add("ID")
    dest = tmp_path / "out" / "models.tar.gz"
    with pytest.raises(WeightsError) as info:
        download(
            drive.url("ID"), dest, what="cohen", manual="run `rsbench zoo import-archive FILE`"
        )
    message = str(info.value)
    assert expected in message and "\n" not in message and message.startswith("cohen: ")
    if case != "missing":
        assert "in a browser and run `rsbench zoo import-archive FILE`" in message
    assert files_in(tmp_path / "out") == []


def test_truncated_body_is_kept_and_resumed_with_range(drive, tmp_path):
    data = blob()
    drive.state.files["BIG"] = File(data, truncate_first=100_000)
    dest = tmp_path / "models.tar.gz"
    with pytest.raises(WeightsError, match=r"truncated \(100000 of 300000 bytes\).*resumes"):
        download(drive.url("BIG"), dest, what="cohen", expected_sha256=sha(data))
    assert partial_path(dest).stat().st_size == 100_000 and not dest.exists()
    assert download(drive.url("BIG"), dest, what="cohen", expected_sha256=sha(data)) == sha(data)
    assert dest.read_bytes() == data and not partial_path(dest).exists()
    assert not partial_meta_path(dest).exists()
    ranges = [rng for _, rng in drive.file_hits()]
    assert ranges == [None, "bytes=100000-"]
    assert drive.state.files["BIG"].served == 2


def test_server_that_ignores_range_restarts_from_zero(drive, tmp_path):
    data = blob()
    drive.state.files["BIG"] = File(data, truncate_first=50_000, ignore_range=True)
    dest = tmp_path / "models.tar.gz"
    with pytest.raises(WeightsError, match="truncated"):
        download(drive.url("BIG"), dest, what="x")
    assert download(drive.url("BIG"), dest, what="x") == sha(data)
    assert dest.read_bytes() == data  # the whole file once, not the first bytes twice


def test_unsatisfiable_range_and_foreign_partial_restart(drive, tmp_path):
    data = blob(1000)
    drive.state.files["ID"] = File(data)
    dest = tmp_path / "f.bin"
    partial_path(dest).write_bytes(b"x" * 5000)  # longer than the file: the server answers 416
    partial_meta_path(dest).write_text(json.dumps({"url": drive.url("ID")}))
    assert download(drive.url("ID"), dest, what="x") == sha(data) and dest.read_bytes() == data
    partial_path(dest).write_bytes(b"y" * 10)  # recorded for no URL: discarded, never resumed
    dest.unlink()
    assert download(drive.url("ID"), dest, what="x") == sha(data)
    assert [rng for _, rng in drive.file_hits()] == ["bytes=5000-", None, None]


def test_wrong_digest_keeps_nothing_for_a_resume(drive, tmp_path):
    drive.state.files["ID"] = File(b"payload")
    dest = tmp_path / "out" / "f"
    with pytest.raises(WeightsError, match="sha256 mismatch.*not kept"):
        download(drive.url("ID"), dest, what="x", expected_sha256="0" * 64)
    assert files_in(tmp_path / "out") == []


# --------------------------------------------------------------------------------------------------
# one download per archive, through the zoo


def checkpoint(seed: int) -> bytes:
    torch.manual_seed(seed)
    net = cifar_resnet20(num_classes=10)
    buffer = io.BytesIO()
    state = {f"1.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 1, "arch": "cifar_resnet20", "state_dict": state}, buffer)
    return buffer.getvalue()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def entry(url: str, sigma: str, digest: str | None = None):
    return parse_entry(
        {
            "id": f"t-cifar-resnet20-s{sigma}",
            "kind": "expert",
            "dataset": "cifar10",
            "num_classes": 10,
            "input_shape": [3, 32, 32],
            "arch": "cifar_resnet20",
            "train_sigma": float(sigma),
            "input_layer": {"type": "normalize", "mean": [0.5] * 3, "std": [0.25] * 3},
            "checkpoint": {"state_dict_key": "state_dict", "strip_prefix": "1."},
            "source": {
                "type": "archive_url",
                "url": url,
                "member": f"models/cifar10/resnet20/noise_{sigma}/checkpoint.pth.tar",
            },
            "sha256": digest,
        }
    )


@pytest.fixture()
def archive_on_drive(drive):
    members = {
        f"models/cifar10/resnet20/noise_{s}/checkpoint.pth.tar": checkpoint(i)
        for i, s in enumerate(["0.25", "0.50"])
    }
    drive.state.files["ARCH"] = File(tar_gz(members))
    return members


def test_two_entries_share_one_download(drive, archive_on_drive):
    members = archive_on_drive
    a = entry(drive.url("ARCH"), "0.25", sha(members[next(iter(members))]))
    b = entry(drive.url("ARCH"), "0.50")
    assert not is_cached(b)
    first = fetch(a)
    assert is_cached(b)  # the archive in the cache serves b's member without the network
    assert archive_cache_path(a.source.url).name == "drive-ARCH"
    second = fetch(b)
    assert first.path.read_bytes() == members[a.source.member]
    assert second.path.read_bytes() == members[b.source.member]
    assert len(drive.file_hits()) == 1  # the archive came once, both members from it
    assert archive_cache_path(a.source.url).is_file()


def test_corrupted_unpinned_member_is_detected(drive, archive_on_drive, caplog):
    b = entry(drive.url("ARCH"), "0.50")
    path = fetch(b).path
    good = path.read_bytes()
    path.write_bytes(good[:-10] + b"0123456789")  # same size, other bytes
    with caplog.at_level(logging.WARNING, logger="rsbench.weights.sources"):
        assert fetch(b).path.read_bytes() == good  # extracted again from the intact archive
    assert "fetching it again" in caplog.text and len(drive.file_hits()) == 1
    archive = archive_cache_path(b.source.url)
    archive.write_bytes(archive.read_bytes()[:-1] + b"!")
    path.write_bytes(b"garbage")
    with pytest.raises(WeightsError) as info:
        fetch(b)
    message = str(info.value)
    assert "changed since it was downloaded" in message and "\n" not in message
    assert f"rsbench zoo check {b.id} --download --refetch" in message
    removed = remove_cached(b)  # what --refetch does: the member and the changed archive go
    assert archive in removed and not archive.exists() and not path.exists()
    assert fetch(b).path.read_bytes() == good and len(drive.file_hits()) == 2


def test_corrupted_unpinned_url_file_is_moved_aside_and_changed_upstream_refused(drive):
    drive.state.files["CK"] = File(checkpoint(3))
    raw = entry(drive.url("CK"), "0.25")
    url_entry = replace(raw, source=SourceSpec(type="url", url=drive.url("CK")))
    path = fetch(url_entry).path
    data = path.read_bytes()
    assert path == blob_path(sha(data)) and read_ref(url_entry) == sha(data)
    flipped = data[:100] + bytes([data[100] ^ 1]) + data[101:]
    path.write_bytes(flipped)  # changed on disk: moved aside, the first-seen bytes fetched again
    assert fetch(url_entry).path.read_bytes() == data and len(drive.file_hits()) == 2
    assert [p.read_bytes() for p in path.parent.glob("*.corrupt-*")] == [flipped]
    drive.state.files["CK"] = File(checkpoint(4))  # the server now sends other bytes
    path.write_bytes(flipped)
    with pytest.raises(WeightsError, match="not the .* first seen .*--refetch"):
        fetch(url_entry)
    assert read_ref(url_entry) == sha(data)  # the first-seen digest is not replaced
    assert [p.name for p in remove_cached(url_entry)] == [ref_path(url_entry).name]
    assert fetch(url_entry).path.read_bytes() == checkpoint(4)  # --refetch accepts the new file


def test_cli_zoo_check_downloads_through_drive_and_reports_quota(drive, tmp_path, capsys):
    from rsbench.cli.main import main
    from rsbench.zoo.files import write_entries

    members = {"models/cifar10/resnet20/noise_0.25/checkpoint.pth.tar": checkpoint(0)}
    drive.state.files["ARCH"] = File(tar_gz(members), truncate_first=1000)
    drive.state.quota.add("BUSY")
    zoo_file = write_entries(
        tmp_path / "z.yaml",
        [entry(drive.url("ARCH"), "0.25"), entry(drive.url("BUSY"), "0.50")],
    )

    def run(*args) -> tuple[int, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out + err

    check = ("zoo", "check", "t-cifar-resnet20-s0.25", "--zoo", zoo_file, "--download")
    code, out = run(*check)  # the first body is cut short: one FAIL line, bytes kept
    assert code != 0 and "the next attempt resumes" in out
    code, out = run(*check)
    assert code == 0 and "ok t-cifar-resnet20-s0.25: strict load + forward" in out
    assert [rng for _, rng in drive.file_hits()][-1] == "bytes=1000-"
    code, out = run("zoo", "check", "t-cifar-resnet20-s0.50", "--zoo", zoo_file, "--download")
    assert code != 0 and "too many users have viewed or downloaded this file recently" in out
    assert "rsbench zoo import-archive FILE" in out and "Traceback" not in out

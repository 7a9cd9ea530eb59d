"""Nothing lost in the weights cache and the zoo files (issue 23, item 3), through the real CLI.

A user zoo (``base.yaml``) names a tiny checkpoint inside an archive at an unreachable URL
(``http://127.0.0.1:9/``: any attempt to use the network fails loudly), with a
``tiny_arch.py:linear`` architecture; archives built here hold good, bad, duplicated, linked and
oversized members. Each case runs ``rsbench`` through its console entry point and asserts its one
line, its exit status, and that every file of the cache and the zoo files that existed before is
byte-for-byte unchanged (lock files aside).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from helpers.cli import ARCH, write_weights

from rsbench.cli.main import main
from rsbench.weights.cache import blob_path, cache_path, read_ref, sha256_file
from rsbench.zoo.registry import load_zoo

ID = "tiny-arch-s0.25"
MEMBER = "models/tiny/noise_0.25/tiny.safetensors"
URL = "http://127.0.0.1:9/models.tar"  # the discard port: nothing listens, a fetch fails at once
BASE = f"""models:
  - id: {ID}
    kind: expert
    dataset: fashion-mnist
    num_classes: 10
    input_shape: [1, 28, 28]
    arch: tiny_arch.py:linear
    train_sigma: 0.25
    input_layer: {{type: none}}
    source: {{type: archive_url, url: "{URL}", member: {MEMBER}}}
    sha256: null
"""


@dataclass
class Run:
    code: int
    out: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


@dataclass
class Work:
    root: Path
    cache: Path
    base: Path
    good: bytes  # a checkpoint the entry's architecture loads
    other: bytes  # another one (other weights), also good

    def tar(self, name: str, members: dict[str, bytes], links: dict[str, str] | None = None):
        path = self.root / name
        with tarfile.open(path, "w:gz" if name.endswith("gz") else "w") as archive:
            for member, data in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            for member, target in (links or {}).items():
                info = tarfile.TarInfo(member)
                info.type = tarfile.SYMTYPE
                info.linkname = target
                archive.addfile(info)
        return path

    def snapshot(self) -> dict[Path, bytes]:
        """Every file of the cache and the work folder's zoo files, but lock files."""
        files = [p for p in self.cache.rglob("*") if p.is_file()]
        files += list(self.root.glob("*.yaml"))
        return {p: p.read_bytes() for p in files if not p.name.endswith(".lock")}


@pytest.fixture()
def work(tmp_path, monkeypatch) -> Work:
    torch.set_num_threads(1)
    monkeypatch.delenv("RSBENCH_ZOO", raising=False)
    monkeypatch.delenv("RSBENCH_MAX_MEMBER_BYTES", raising=False)
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tiny_arch.py").write_text(ARCH)
    write_weights(tmp_path / "good.safetensors", 784)
    write_weights(tmp_path / "other.safetensors", 784, classes=10, prefix="1.")
    other = bytearray((tmp_path / "other.safetensors").read_bytes())
    other[-1] ^= 1  # other weights, same layout: a different, equally loadable checkpoint
    (tmp_path / "base.yaml").write_text(BASE)
    return Work(
        tmp_path,
        tmp_path / "cache",
        tmp_path / "base.yaml",
        (tmp_path / "good.safetensors").read_bytes(),
        bytes(other),
    )


@pytest.fixture()
def cli(capsys):
    def run(*args) -> Run:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err, out + err
        return Run(code, out + err)

    return run


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pins(zoo_file: Path) -> dict[str, str]:
    return {e["id"]: e["sha256"] for e in yaml.safe_load(zoo_file.read_text())["models"]}


def imported(cli, work: Work, archive: Path, zoo_file: Path) -> Run:
    return cli("zoo", "import-archive", archive, "--zoo", work.base, "--zoo-file", zoo_file)


def fail_lines(run: Run) -> list[str]:
    return [line for line in run.lines if line.lstrip().startswith("FAIL")]


def test_a_bad_archive_never_replaces_the_file_a_zoo_file_pins(work, cli):
    zoo_a = work.root / "a.yaml"
    good = work.tar("good.tar", {MEMBER: work.good})
    assert imported(cli, work, good, zoo_a).code == 0
    assert pins(zoo_a) == {ID: sha(work.good)}
    before = work.snapshot()
    page = b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></html>"
    bad = work.tar("bad.tar.gz", {MEMBER: page})
    run = imported(cli, work, bad, zoo_a)
    assert run.code == 1
    [line] = fail_lines(run)
    assert f"sha256 of {MEMBER} is {sha(page)}, but the entry pins {sha(work.good)}" in line
    assert run.lines[-1] == "error: 1 of 1 matched entries failed (the FAIL lines above say why)"
    assert work.snapshot() == before  # the good file and a.yaml, byte for byte
    # the pinned file is still there and serves the entry, offline
    check = cli("zoo", "check", ID, "--zoo", work.base, "--zoo", zoo_a)
    assert check.code == 0 and f"sha256 {sha(work.good)} (pinned)" in check.out
    # with nothing pinned yet, the page is refused as a checkpoint and nothing is kept
    zoo_c = work.root / "c.yaml"
    run = imported(cli, work, bad, zoo_c)
    assert run.code == 1 and not zoo_c.exists()
    [line] = fail_lines(run)
    assert "HTML" in line and "not kept" in line
    assert work.snapshot() == before


def test_another_zoo_file_never_replaces_the_first_users_file(work, cli):
    zoo_a, zoo_b = work.root / "a.yaml", work.root / "b.yaml"
    assert imported(cli, work, work.tar("a.tar", {MEMBER: work.good}), zoo_a).code == 0
    before = work.snapshot()
    run = imported(cli, work, work.tar("b.tar", {MEMBER: work.other}), zoo_b)
    assert run.code == 0, run.out
    assert pins(zoo_b) == {ID: sha(work.other)} and pins(zoo_a) == {ID: sha(work.good)}
    after = work.snapshot()
    assert {p: after[p] for p in before} == before  # every earlier file kept, byte for byte
    assert blob_path(sha(work.good)).read_bytes() == work.good
    assert blob_path(sha(work.other)).read_bytes() == work.other
    for zoo_file, data in ((zoo_a, work.good), (zoo_b, work.other)):
        # each user's file serves each user; --refetch never deletes a verified file, and the
        # network (an unreachable URL here) is never tried for it
        for extra in ((), ("--download", "--refetch")):
            check = cli("zoo", "check", ID, "--zoo", work.base, "--zoo", zoo_file, *extra)
            assert check.code == 0, check.out
            assert f"sha256 {sha(data)} (pinned)" in check.out
    assert work.snapshot() == after
    # the digest first seen for the unpinned packaged entry is a's, never replaced by b's
    assert read_ref(load_zoo([work.base]).get(ID)) == sha(work.good)


def test_oversized_members_are_refused_before_copying(work, cli, monkeypatch):
    archive = work.tar("big.tar", {MEMBER: work.good})
    size = len(work.good)
    zoo_file = work.root / "z.yaml"
    before = work.snapshot()
    monkeypatch.setenv("RSBENCH_MAX_MEMBER_BYTES", "1K")
    run = imported(cli, work, archive, zoo_file)
    assert run.code == 1
    [line] = fail_lines(run)
    assert f"member {MEMBER!r} is {size} bytes, over the 1024-byte limit" in line
    assert "refused before copying" in line and "--max-member-size" in line
    assert "$RSBENCH_MAX_MEMBER_BYTES" in line
    assert work.snapshot() == before and not zoo_file.exists()
    assert not list(work.cache.rglob("*.part"))
    run = cli(
        "zoo", "import-archive", archive, "--zoo", work.base, "--zoo-file", zoo_file,
        "--max-member-size", str(size - 1),
    )  # fmt: skip
    assert run.code == 1 and f"over the {size - 1}-byte limit" in fail_lines(run)[0]
    assert work.snapshot() == before
    run = cli(
        "zoo", "import-archive", archive, "--zoo", work.base, "--zoo-file", zoo_file,
        "--max-member-size", "lots",
    )  # fmt: skip
    assert run.code == 2 and run.lines == [
        "error: --max-member-size='lots' is not a size; give a positive number of bytes, "
        "e.g. 2G or 500M"
    ]
    monkeypatch.setenv("RSBENCH_MAX_MEMBER_BYTES", str(size))  # exactly the bound: accepted
    assert imported(cli, work, archive, zoo_file).code == 0


def test_an_archive_with_two_members_of_the_entrys_name_is_refused(work, cli):
    archive = work.root / "dup.tar"
    with tarfile.open(archive, "w") as tar:
        for data in (work.good, work.other):
            info = tarfile.TarInfo(MEMBER)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    zoo_file = work.root / "z.yaml"
    before = work.snapshot()
    run = imported(cli, work, archive, zoo_file)
    assert run.code == 1
    assert [line for line in run.lines if ID in line] == [
        f"FAIL {ID}: the archive holds 2 members named {MEMBER!r}; refusing it (which one is "
        "meant is ambiguous: extract the right one and import that file)"
    ]  # reported once, never both ok and FAIL
    assert work.snapshot() == before and not zoo_file.exists()
    zipped = work.root / "dup.zip"  # a regular file and a link of that one name count as two
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr(MEMBER, work.good)
        link = zipfile.ZipInfo(MEMBER)
        link.external_attr = 0o120777 << 16
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr(link, "/etc/passwd")
    run = imported(cli, work, zipped, zoo_file)
    assert run.code == 1 and [line for line in run.lines if ID in line] == [
        f"FAIL {ID}: the archive holds 2 members named {MEMBER!r}; refusing it (which one is "
        "meant is ambiguous: extract the right one and import that file)"
    ]
    assert work.snapshot() == before and not zoo_file.exists()


def test_a_symlink_at_the_entrys_path_is_reported_as_a_link(work, cli):
    archive = work.tar("link.tar", {"readme.txt": b"x"}, links={MEMBER: "/etc/passwd"})
    zoo_file = work.root / "z.yaml"
    before = work.snapshot()
    run = imported(cli, work, archive, zoo_file)
    assert run.code == 1
    assert fail_lines(run) == [
        f"FAIL {ID}: member {MEMBER!r} is a symbolic link (to '/etc/passwd'), not a checkpoint "
        "file; refusing it"
    ]
    assert "no member" not in run.out and "no entry:" not in run.out
    assert work.snapshot() == before and not zoo_file.exists()


def test_a_ten_byte_tar_gz_is_one_error_line(work, cli):
    stub = work.root / "models.tar.gz"
    stub.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03")  # a gzip header, then nothing
    assert stub.stat().st_size == 10
    before = work.snapshot()
    run = imported(cli, work, stub, work.root / "z.yaml")
    assert run.code == 2, run.out
    assert len(run.lines) == 1 and run.lines[0].startswith(f"error: {stub}: the archive is damaged")
    assert "download it again" in run.lines[0] and "aborted" not in run.out
    assert work.snapshot() == before


# --------------------------------------------------------------------------------------------------
# caches written by rsbench 0.2 (files at cache_path with <file>.sha256 sidecars)


def write_legacy(work: Work, data: bytes, sidecar: str | None) -> Path:
    entry = load_zoo([work.base]).get(ID)
    legacy = cache_path(entry)
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(data)
    if sidecar is not None:
        legacy.with_name(legacy.name + ".sha256").write_text(f"{sidecar}  {legacy.name}\n")
    return legacy


def test_an_old_layout_cache_is_read_and_copied_in_untouched(work, cli):
    legacy = write_legacy(work, work.good, sha(work.good))
    before = work.snapshot()
    run = cli("zoo", "check", ID, "--zoo", work.base)  # unpinned: the sidecar's digest vouches
    assert run.code == 0, run.out
    assert f"sha256 {sha(work.good)} (UNPINNED)" in run.out
    after = work.snapshot()
    assert {p: after[p] for p in before} == before  # the old file and its sidecar, untouched
    assert blob_path(sha(work.good)).read_bytes() == work.good  # copied into the new layout
    assert read_ref(load_zoo([work.base]).get(ID)) == sha(work.good)
    assert sha256_file(legacy) == sha(work.good)
    run = cli("zoo", "check", ID, "--zoo", work.base)  # now served from the new layout
    assert run.code == 0 and work.snapshot() == after


def test_an_old_layout_file_that_fails_its_pin_is_left_alone(work, cli):
    zoo_a = work.root / "a.yaml"
    zoo_a.write_text(BASE.replace("sha256: null", f"sha256: {sha(work.good)}"))
    write_legacy(work, work.other, sha(work.other))  # another file where a's pinned one would be
    before = work.snapshot()
    run = cli("zoo", "check", ID, "--zoo", zoo_a)
    assert run.code == 1
    [line] = fail_lines(run)  # not adopted: the archive is fetched instead, and that fails here
    assert f"FAIL {ID}: {ID} (archive): download of {URL} failed" in line
    assert work.snapshot() == before  # the old file stays as it was

"""Fetching, verifying, caching and safely loading weights: a real HTTP server on 127.0.0.1,
real archives, a real (offline) Hugging Face cache, and a malicious pickle."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import pickle
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from rsbench.errors import WeightsError, ZooError
from rsbench.models.archs.cifar_resnet import cifar_resnet20
from rsbench.models.loading import load_model
from rsbench.models.network import build_model
from rsbench.weights.archive import extract_member
from rsbench.weights.cache import blob_path, cached_file, read_ref, sha256_file
from rsbench.weights.checkpoints import load_checkpoint, load_state_dict, sniff_format
from rsbench.weights.hf import allowing_unpinned_revisions
from rsbench.weights.sources import fetch, fetch_weights, is_cached, remove_cached
from rsbench.zoo.entry import SourceSpec
from rsbench.zoo.parse import parse_entry

MEMBER = "models/cifar10/resnet20/noise_0.25/checkpoint.pth.tar"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.delenv("RSBENCH_ZOO", raising=False)
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        body = route["body"]
        self.send_response(200)
        self.send_header("Content-Type", route.get("type", "application/octet-stream"))
        if route.get("length", True):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: route["truncate"]] if route.get("truncate") else body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    """A local HTTP server: ``server.routes[path] = {"body": bytes, ...}``; ``server.url(path)``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.hits = {}, []
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def checkpoint_bytes() -> tuple[bytes, dict]:
    """A Cohen-format CIFAR ResNet-20 checkpoint (bytes) and the net's state dict."""
    torch.manual_seed(0)
    net = cifar_resnet20(num_classes=10)
    buffer = io.BytesIO()
    state = {f"1.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 90, "arch": "cifar_resnet20", "state_dict": state}, buffer)
    return buffer.getvalue(), net.state_dict()


def entry_for(source: dict, sha256: str | None = None, **overrides):
    raw = {
        "id": "test-cifar-resnet20-s0.25",
        "kind": "expert",
        "dataset": "cifar10",
        "num_classes": 10,
        "input_shape": [3, 32, 32],
        "arch": "cifar_resnet20",
        "train_sigma": 0.25,
        "input_layer": {"type": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "checkpoint": {"state_dict_key": "state_dict", "strip_prefix": "1."},
        "source": source,
        "sha256": sha256,
    }
    raw.update(overrides)
    return parse_entry(raw)


def cache_files(tmp_path: Path) -> list[Path]:
    """Everything in the cache but lock files."""
    root = tmp_path / "cache"
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# URL downloads


def test_sha256_file_known_answer(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_url_good_file_is_cached_verified_and_loads(server, tmp_path, checkpoint_bytes):
    data, state = checkpoint_bytes
    server.routes["/w/checkpoint.pth.tar"] = {"body": data}
    entry = entry_for({"type": "url", "url": server.url("/w/checkpoint.pth.tar")}, sha(data))
    assert not is_cached(entry)
    progress = []
    fetched = fetch(entry, progress=lambda what, done, total: progress.append((done, total)))
    assert fetched.path == blob_path(sha(data)) and fetched.path.read_bytes() == data
    assert fetched.sha256 == sha(data) and fetched.pinned and is_cached(entry)
    assert progress[-1] == (len(data), len(data))
    assert fetch_weights(entry) == fetched.path and server.hits == ["/w/checkpoint.pth.tar"]
    model = load_model(entry)
    reference = build_model(entry).eval()
    reference[1].load_state_dict(state)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert cache_files(tmp_path) == [fetched.path]  # pinned: the pin names the file, no ref


def test_url_wrong_digest_keeps_nothing(server, tmp_path, checkpoint_bytes):
    data, _ = checkpoint_bytes
    server.routes["/w.pth"] = {"body": data}
    entry = entry_for({"type": "url", "url": server.url("/w.pth")}, "0" * 64)
    with pytest.raises(WeightsError) as info:
        fetch(entry)
    message = str(info.value)
    assert "sha256 mismatch" in message and "0" * 64 in message and sha(data) in message
    assert "not kept" in message and "\n" not in message
    assert cache_files(tmp_path) == []


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_url_html_page_is_a_clear_error(server, tmp_path, content_type):
    page = (
        b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>"
    )
    server.routes["/uc"] = {"body": page, "type": content_type}
    entry = entry_for({"type": "url", "url": server.url("/uc")})
    with pytest.raises(WeightsError, match="HTML page, not a file"):
        fetch(entry)
    assert cache_files(tmp_path) == []


def test_url_truncated_download(server, tmp_path, checkpoint_bytes):
    data, _ = checkpoint_bytes
    server.routes["/cut.pth"] = {"body": data, "truncate": len(data) // 2}
    entry = entry_for({"type": "url", "url": server.url("/cut.pth")}, sha(data))
    with pytest.raises(WeightsError, match=rf"truncated \({len(data) // 2} of {len(data)} bytes\)"):
        fetch(entry)
    partial = [p for p in cache_files(tmp_path) if p.name.endswith(".partial")]
    assert [p.stat().st_size for p in partial] == [len(data) // 2]  # kept for a resume
    assert cached_file(entry) is None  # (test_download.py resumes it)


def test_url_truncated_without_content_length(server, tmp_path, checkpoint_bytes):
    data, _ = checkpoint_bytes
    server.routes["/cut.pth"] = {"body": data[: len(data) // 2], "length": False}
    entry = entry_for({"type": "url", "url": server.url("/cut.pth")})  # unpinned: only the format
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        fetch(entry)
    assert cache_files(tmp_path) == []


def test_url_http_error(server, tmp_path):
    entry = entry_for({"type": "url", "url": server.url("/missing.pth")})
    with pytest.raises(WeightsError, match="HTTP 404"):
        fetch(entry)
    assert cache_files(tmp_path) == []


def test_unpinned_warns_records_digest_and_require_pinned_refuses(
    server, tmp_path, checkpoint_bytes, caplog
):
    data, _ = checkpoint_bytes
    server.routes["/w.pth"] = {"body": data}
    entry = entry_for({"type": "url", "url": server.url("/w.pth")})
    with pytest.raises(WeightsError, match="unpinned .* --require-pinned"):
        fetch(entry, require_pinned=True)
    assert server.hits == []  # refused before any download
    with caplog.at_level(logging.WARNING, logger="rsbench.weights.sources"):
        fetched = fetch(entry)
    assert not fetched.pinned and fetched.sha256 == sha(data)
    assert "unpinned" in caplog.text and sha(data) in caplog.text
    assert fetched.path == blob_path(sha(data)) and read_ref(entry) == sha(data)
    model = load_model(entry)
    assert model.weights_sha256 == sha(data) and model.weights_pinned is False
    with pytest.raises(WeightsError, match="unpinned"):
        load_model(entry, require_pinned=True)


def test_tampered_cache_is_moved_aside_and_fetched_again(server, tmp_path, checkpoint_bytes):
    data, _ = checkpoint_bytes
    server.routes["/w.pth"] = {"body": data}
    entry = entry_for({"type": "url", "url": server.url("/w.pth")}, sha(data))
    path = fetch_weights(entry)
    path.write_bytes(b"tampered")
    assert fetch_weights(entry).read_bytes() == data and len(server.hits) == 2
    aside = [p for p in cache_files(tmp_path) if ".corrupt-" in p.name]
    assert [p.read_bytes() for p in aside] == [b"tampered"]  # kept, never read as the weights


# --------------------------------------------------------------------------------------------------
# archives


def make_archive(
    kind: str, members: dict[str, bytes], links: dict[str, str] | None = None
) -> bytes:
    """A .tar / .tar.gz / .zip with regular ``members`` and symbolic ``links`` (name -> target)."""
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
            for name, target in (links or {}).items():
                info = zipfile.ZipInfo(name)
                info.external_attr = (0o120777 << 16) | 0
                archive.writestr(info, target)
        return buffer.getvalue()
    with tarfile.open(fileobj=buffer, mode="w:gz" if kind == "tar.gz" else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE if name.startswith("hard") else tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_archive_member(server, tmp_path, checkpoint_bytes, kind):
    data, state = checkpoint_bytes
    other = b"PK-not-used"
    server.routes[f"/models.{kind}"] = {
        "body": make_archive(
            kind, {"./" + MEMBER if kind == "tar" else MEMBER: data, "README": other}
        )
    }
    url = server.url(f"/models.{kind}")
    entry = entry_for({"type": "archive_url", "url": url, "member": MEMBER}, sha(data))
    model = load_model(entry)
    reference = build_model(entry).eval()
    reference[1].load_state_dict(state)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert cached_file(entry) == blob_path(sha(data)) and is_cached(entry)
    assert blob_path(sha(data)).read_bytes() == data
    missing = entry_for(
        {"type": "archive_url", "url": url, "member": MEMBER.replace("0.25", "0.5")}
    )
    with pytest.raises(WeightsError, match=f"no member .*did you mean '{MEMBER}'"):
        fetch(missing)
    assert server.hits == [f"/models.{kind}"]  # the archive is downloaded once


def test_archive_member_with_wrong_digest_is_not_kept(server, tmp_path, checkpoint_bytes):
    data, _ = checkpoint_bytes
    server.routes["/m.tar"] = {"body": make_archive("tar", {MEMBER: data})}
    entry = entry_for(
        {"type": "archive_url", "url": server.url("/m.tar"), "member": MEMBER}, "f" * 64
    )
    with pytest.raises(WeightsError, match="sha256 mismatch for member"):
        fetch(entry)
    assert cached_file(entry) is None
    assert [p for p in cache_files(tmp_path) if "sha256" in p.parts] == []  # only the archive


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_truncated_or_html_archive(server, tmp_path, checkpoint_bytes, kind):
    data, _ = checkpoint_bytes
    whole = make_archive(kind, {MEMBER: data})
    server.routes["/cut"] = {"body": whole[: len(whole) // 2], "length": False}
    server.routes["/page"] = {"body": b"<html><body>quota exceeded</body></html>", "length": False}
    for path, words in (("/cut", "truncated or not a .tar"), ("/page", "HTML page")):
        entry = entry_for({"type": "archive_url", "url": server.url(path), "member": MEMBER})
        with pytest.raises(WeightsError, match=words):
            fetch(entry)
    assert cache_files(tmp_path) == []


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_unsafe_archive_members_are_refused(server, tmp_path, checkpoint_bytes, kind):
    data, _ = checkpoint_bytes
    outside = tmp_path / "outside.pth"
    members = {"../evil.pth": b"evil", str(outside): b"absolute", MEMBER: data}
    links = {"link.pth": "../../outside.pth"}
    if kind == "tar":
        links["hard.pth"] = "../evil.pth"
    server.routes["/bad"] = {"body": make_archive(kind, members, links)}
    url = server.url("/bad")
    good = entry_for({"type": "archive_url", "url": url, "member": MEMBER}, sha(data))
    with pytest.raises(ZooError, match="'..'"):  # the zoo refuses such members up front
        entry_for({"type": "archive_url", "url": url, "member": "../evil.pth"})
    for member, words in [
        ("../evil.pth", "unsafe"),
        (str(outside), "unsafe"),
        ("link.pth", "link"),
        *([("hard.pth", "link")] if kind == "tar" else []),
    ]:
        bad = dataclasses.replace(
            good, source=SourceSpec(type="archive_url", url=url, member=member)
        )
        with pytest.raises(WeightsError, match=words):
            fetch(bad)
    assert fetch(good).path.read_bytes() == data  # the safe member of the same archive is fine
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "cache" not in p.parts]
    assert written == [] and not outside.exists() and not (tmp_path / "evil.pth").exists()


def test_extract_member_refuses_names_directly(tmp_path):
    archive = tmp_path / "a.tar"
    archive.write_bytes(make_archive("tar", {"ok.pth": b"x"}))
    for name in ("../ok.pth", "/ok.pth", "a/../../ok.pth", "C:/x", ""):
        with pytest.raises(WeightsError, match="unsafe"):
            extract_member(archive, name, tmp_path / "out" / "x")
    assert extract_member(archive, "./ok.pth", tmp_path / "out" / "x") == sha(b"x")


# --------------------------------------------------------------------------------------------------
# Hugging Face Hub, offline, from a real cache layout


def build_hf_cache(root: Path, repo_id: str, filename: str, data: bytes, commit: str) -> Path:
    """The layout ``hf_hub_download`` reads: blobs/<etag>, snapshots/<commit>/<file>, refs/main."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / sha(data)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    pointer = repo / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return blob


@pytest.fixture()
def offline_hub(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE and HF_HOME set in the environment only (rsbench reads them when fetching).

    huggingface_hub is imported first: it reads HF_HUB_OFFLINE once, at import, into its constants,
    and a first import under this fixture would leave the process offline for later test files."""
    import huggingface_hub.constants  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf-home" / "hub"


def test_hub_download_offline_from_local_cache(tmp_path, checkpoint_bytes, offline_hub, caplog):
    data, state = checkpoint_bytes
    commit = "0123456789abcdef0123456789abcdef01234567"
    blob = build_hf_cache(offline_hub, "rs-org/cifar-experts", "s0.25/ck.pth", data, commit)
    source = {"type": "hf", "repo_id": "rs-org/cifar-experts", "filename": "s0.25/ck.pth"}
    pinned = entry_for({**source, "revision": commit}, sha(data))
    assert is_cached(pinned)
    fetched = fetch(pinned)
    assert fetched.path.read_bytes() == data and fetched.path.resolve() == blob.resolve()
    model = load_model(pinned)
    reference = build_model(pinned).eval()
    reference[1].load_state_dict(state)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    on_main = entry_for({**source, "revision": "main"}, sha(data))
    with pytest.raises(
        WeightsError, match="'main' is a branch or tag, not a commit.*--allow-unpin"
    ):
        fetch(on_main)
    with (
        caplog.at_level(logging.WARNING, logger="rsbench.weights.sources"),
        allowing_unpinned_revisions(),
    ):
        assert fetch(on_main).path.read_bytes() == data
    assert "not a commit hash" in caplog.text
    absent = entry_for({**source, "revision": commit, "filename": "s0.50/ck.pth"})
    with pytest.raises(WeightsError) as info:
        fetch(absent)
    assert "'s0.50/ck.pth' of the Hub repo 'rs-org/cifar-experts'" in str(info.value)
    assert "not in the Hugging Face cache" in str(info.value) and "HF_HUB_OFFLINE" in str(
        info.value
    )
    assert "\n" not in str(info.value)


def test_hub_file_with_wrong_digest_is_an_error_and_the_hub_cache_untouched(
    tmp_path, checkpoint_bytes, offline_hub
):
    data, _ = checkpoint_bytes
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    blob = build_hf_cache(offline_hub, "org/x", "ck.pth", data, commit)
    before = {p: p.read_bytes() for p in offline_hub.rglob("*") if p.is_file()}
    entry = entry_for(
        {"type": "hf", "repo_id": "org/x", "filename": "ck.pth", "revision": commit}, "e" * 64
    )
    with pytest.raises(WeightsError) as info:
        fetch(entry)
    message = str(info.value)
    assert "sha256 mismatch" in message and "e" * 64 in message and sha(data) in message
    assert "left as it is" in message and "\n" not in message
    assert {p: p.read_bytes() for p in offline_hub.rglob("*") if p.is_file()} == before
    assert blob.read_bytes() == data and is_cached(entry)
    assert remove_cached(entry) == [] and blob.exists()  # an intact Hub blob is never removed


def test_cli_hub_pin_mismatch_is_one_line_and_the_hub_cache_is_untouched(
    tmp_path, checkpoint_bytes, offline_hub, capsys
):
    from rsbench.cli.main import main
    from rsbench.zoo.files import write_entries

    data, _ = checkpoint_bytes
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    build_hf_cache(offline_hub, "org/y", "ck.pth", data, commit)
    entry = entry_for(
        {"type": "hf", "repo_id": "org/y", "filename": "ck.pth", "revision": commit}, "d" * 64
    )
    zoo_file = write_entries(tmp_path / "z.yaml", [entry])
    before = {p: p.read_bytes() for p in [*offline_hub.rglob("*"), zoo_file] if p.is_file()}
    for extra in ((), ("--download", "--refetch")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["zoo", "check", entry.id, "--zoo", str(zoo_file), *extra])
        out, err = capsys.readouterr()
        assert exit_info.value.code == 1
        [line] = out.splitlines()
        assert line.startswith(f"FAIL {entry.id}: {entry.id}: sha256 mismatch for 'ck.pth'")
        assert "d" * 64 in line and sha(data) in line and "left as it is" in line
        assert err.splitlines() == [
            "error: 1 of 1 checked entries failed (the FAIL lines above say why)"
        ]
        after = {p: p.read_bytes() for p in [*offline_hub.rglob("*"), zoo_file] if p.is_file()}
        assert after == before  # the shared Hub cache and the zoo file, byte for byte


# --------------------------------------------------------------------------------------------------
# safe loading


class Payload:
    """Unpickling this object opens (creates) ``marker``: code execution at load time."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(Payload(control)))  # the payload is live: plain unpickling runs it
    assert control.exists()
    marker = tmp_path / "marker"
    torch_file = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload(marker)}, torch_file)
    raw_file = tmp_path / "evil.pkl"
    raw_file.write_bytes(pickle.dumps({"state_dict": Payload(marker)}, protocol=2))
    for path in (torch_file, raw_file):
        entry = entry_for({"type": "file", "path": str(path)})
        with pytest.raises(WeightsError) as info:
            load_model(entry)
        message = str(info.value)
        assert "needs code to unpickle" in message and "ran none of it" in message
        assert "torch.save" in message and "safetensors" in message and "\n" not in message
        with pytest.raises(WeightsError):
            load_checkpoint(path)
    assert not marker.exists()


def test_safetensors_and_format_checks(tmp_path, checkpoint_bytes):
    from safetensors.torch import save_file

    _, state = checkpoint_bytes
    good = tmp_path / "net.safetensors"
    save_file(dict(state), good)
    assert sniff_format(good) == "safetensors"
    entry = entry_for({"type": "file", "path": str(good)}, sha256_file(good), checkpoint=None)
    loaded = load_state_dict(good, entry)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert load_model(entry).weights_pinned
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(
            dataclasses.replace(entry, source=SourceSpec(type="file", path=str(cut)), sha256=None)
        )
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        fetch(
            dataclasses.replace(entry, source=SourceSpec(type="file", path=str(empty)), sha256=None)
        )
    with pytest.raises(WeightsError, match="does not exist"):
        fetch(
            dataclasses.replace(
                entry, source=SourceSpec(type="file", path=str(tmp_path / "no.pth"))
            )
        )
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        fetch(dataclasses.replace(entry, sha256="a" * 64))


def test_package_source_resolves_inside_the_package():
    entry = entry_for({"type": "package", "path": "embedded/no-such-file.safetensors"})
    with pytest.raises(
        WeightsError, match=r"rsbench/embedded/no-such-file.safetensors' does not exist"
    ):
        fetch(entry)
    with pytest.raises(ZooError, match="inside the package"):
        entry_for({"type": "package", "path": "../setup.py"})


def test_safetensors_whose_header_length_starts_like_a_pickle_is_safetensors(tmp_path):
    # a header of 384 bytes begins the file with 0x80 0x01: a pickle's PROTO opcode
    import json
    import struct

    from safetensors.torch import load_file, save_file

    from rsbench.weights.checkpoints import load_checkpoint, sniff_format

    path = tmp_path / "w.safetensors"
    for pad in range(0, 600):
        save_file({"w": torch.ones(2)}, str(path), metadata={"p": "x" * pad})
        if path.read_bytes()[:2] == b"\x80\x01":
            break
    (size,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert size % 256 == 0x80 and json.loads(path.read_bytes()[8 : 8 + size])
    assert sniff_format(path) == "safetensors"
    assert torch.equal(load_checkpoint(path)["w"], load_file(str(path))["w"])


def test_only_stale_temporary_files_are_cleaned_from_the_store(tmp_path):
    from rsbench.weights.cache import clean_stale_stages, commit, stage_path, store_dir

    staged = stage_path()
    staged.write_bytes(b"abc")
    blob = commit(staged, sha(b"abc"))
    old_stage, old_extract, fresh = (
        stage_path(),
        store_dir() / f".{stage_path().name}.0123abcd.part",  # extract_member's tmp of a stage
        stage_path(),
    )
    for path in (old_stage, old_extract, fresh):
        path.write_bytes(b"partial")
    for path in (old_stage, old_extract):
        os.utime(path, (0, 0))  # left by a process killed long ago
    os.utime(blob, (0, 0))
    clean_stale_stages()
    assert not old_stage.exists() and not old_extract.exists()
    assert fresh.read_bytes() == b"partial" and blob.read_bytes() == b"abc"

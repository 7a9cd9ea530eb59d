"""Hugging Face sources against the real huggingface_hub, with HF_ENDPOINT pointed at a local
stand-in for the Hub (127.0.0.1, random port): pinned commits, HF_HUB_OFFLINE and HF_HOME read when a
file is fetched, an unreachable Hub refused at once (one line, not huggingface_hub's five retries),
and a corrupted cached blob of an unpinned entry detected."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from rsbench.errors import WeightsError
from rsbench.models.archs.cifar_resnet import cifar_resnet20
from rsbench.weights.hf import allowing_unpinned_revisions
from rsbench.weights.sources import fetch, is_cached, remove_cached
from rsbench.zoo.parse import parse_entry

COMMIT = "4c1c0ffee0ddba11c0de5eed0123456789abcdef"
REPO = "rs-org/cifar-experts"
FILE = "s0.25/checkpoint.pth"


@pytest.fixture(scope="module")
def payload() -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save({"state_dict": {f"1.{k}": v for k, v in cifar_resnet20(10).state_dict().items()}},
               buffer)  # fmt: skip
    return buffer.getvalue()


class _Hub(BaseHTTPRequestHandler):
    """``/{repo}/resolve/{revision}/{file}``: HEAD gives the commit, ETag (sha256) and size."""

    def _answer(self, body: bool) -> None:
        self.server.hits.append((self.command, self.path))
        prefix = f"/{REPO}/resolve/"
        data = self.server.data
        if not self.path.startswith(prefix) or not self.path.endswith("/" + FILE):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):  # noqa: N802 - http.server's name
        self._answer(body=False)

    def do_GET(self):  # noqa: N802
        self._answer(body=True)

    def log_message(self, *args):
        pass


@pytest.fixture()
def hub(monkeypatch, tmp_path, payload):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    httpd.data, httpd.hits = payload, []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "RSBENCH_ZOO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def hf_entry(revision: str = COMMIT, digest: str | None = None):
    return parse_entry(
        {
            "id": "hub-cifar-resnet20-s0.25",
            "kind": "expert",
            "dataset": "cifar10",
            "num_classes": 10,
            "input_shape": [3, 32, 32],
            "arch": "cifar_resnet20",
            "train_sigma": 0.25,
            "input_layer": {"type": "none"},
            "checkpoint": {"state_dict_key": "state_dict", "strip_prefix": "1."},
            "source": {"type": "hf", "repo_id": REPO, "filename": FILE, "revision": revision},
            "sha256": digest,
        }
    )


def test_pinned_commit_downloads_into_hf_home_then_needs_no_request(hub, tmp_path, payload):
    entry = hf_entry(digest=hashlib.sha256(payload).hexdigest())
    fetched = fetch(entry)
    assert fetched.path.read_bytes() == payload and fetched.pinned
    assert str(tmp_path / "hf-home" / "hub") in str(fetched.path) and is_cached(entry)
    hits = len(hub.hits)
    assert hits >= 1
    assert fetch(entry).path == fetched.path and len(hub.hits) == hits  # cache first: no request


def test_branch_names_are_refused_unless_allowed(hub, payload):
    entry = hf_entry(revision="main")
    with pytest.raises(WeightsError) as info:
        fetch(entry)
    message = str(info.value)
    assert "'main' is a branch or tag, not a commit" in message and "--allow-unpinned" in message
    assert hub.hits == []  # refused before any request
    with allowing_unpinned_revisions():
        assert fetch(entry).path.read_bytes() == payload


def test_offline_fails_at_once_with_one_line_and_no_request(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the environment only: read when fetching
    with pytest.raises(WeightsError) as info:
        fetch(hf_entry())
    message = str(info.value)
    assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE is set" in message
    assert "\n" not in message and hub.hits == []


def test_unreachable_hub_is_refused_without_retries(hub, monkeypatch, caplog):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsError) as info:
        fetch(hf_entry())
    message = str(info.value)
    assert f"cannot reach http://127.0.0.1:{port}" in message and "\n" not in message
    assert "Retrying" not in caplog.text  # huggingface_hub's back-off never started


def test_corrupted_cached_blob_of_an_unpinned_entry_is_detected(hub, payload):
    entry = hf_entry()  # unpinned: the blob's name (its sha256 ETag) is the digest first seen
    path = fetch(entry).path
    blob = path.resolve()
    blob.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))
    with pytest.raises(WeightsError) as info:
        fetch(entry)
    assert "no longer has the digest it was downloaded with" in str(info.value)
    assert "--refetch" in str(info.value)
    assert blob in remove_cached(entry) and not is_cached(entry)
    assert fetch(entry).path.read_bytes() == payload


def test_cli_lists_the_revision_and_check_honours_allow_unpinned(hub, tmp_path, capsys):
    from rsbench.cli.main import main
    from rsbench.zoo.files import write_entries

    zoo_file = write_entries(tmp_path / "z.yaml", [hf_entry(revision="main")])

    def run(*args) -> tuple[int, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out + err

    code, out = run("zoo", "list", "hub-", "--zoo", zoo_file, "--format", "json")
    assert code == 0 and '"revision": "main"' in out
    code, out = run("zoo", "list", "hub-", "--zoo", zoo_file)
    assert code == 0 and "hf@main" in out
    code, out = run("zoo", "check", "hub-cifar-resnet20-s0.25", "--zoo", zoo_file, "--download")
    assert code != 0 and "branch or tag, not a commit" in out and hub.hits == []
    args = ("zoo", "check", "hub-cifar-resnet20-s0.25", "--zoo", zoo_file, "--download")
    code, out = run(*args, "--allow-unpinned")
    assert code == 0 and "strict load + forward" in out

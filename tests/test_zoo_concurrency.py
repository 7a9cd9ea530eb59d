"""Concurrent writers lose nothing, and interrupted zoo commands say what is true (issue 23, items
4 and 9), with real processes.

The concurrent cases fork several processes from one driver that imported rsbench once; every
child waits at a barrier (a pipe the driver closes once all are forked) and then runs the console
entry point, so the writers really overlap. The interrupted cases run ``python -m rsbench`` reading
a FIFO that never delivers, and send it SIGINT or SIGTERM once it is blocked on the read.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from helpers.cli import ARCH, cli_env, run_many, write_weights

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="the driver forks (POSIX only)"),
]

#: Forks one child per job; all wait at a barrier, then run ``rsbench ARGS`` at the same moment.
BARRIER_DRIVER = r"""
import json, os, sys, traceback
from rsbench.cli.main import main
import rsbench.cli.zoo, rsbench.zoo.files, rsbench.weights.cache  # noqa: F401
if os.environ.get("DRIVER_TORCH"):
    import torch, rsbench.models.import_archive, rsbench.models.network  # noqa: F401
    torch.set_num_threads(1)

jobs = json.load(sys.stdin)
gate_r, gate_w = os.pipe()
pids = {}
for job in jobs:
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(gate_w)
            os.chdir(job["cwd"])
            for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            os.read(gate_r, 1)  # the barrier: returns once the driver closes its end
            try:
                main(job["args"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    pids[pid] = job["name"]
os.close(gate_r)
os.close(gate_w)  # every child leaves the barrier now
codes = {}
for pid, name in pids.items():
    _, status = os.waitpid(pid, 0)
    codes[name] = os.waitstatus_to_exitcode(status)
json.dump(codes, sys.stdout)
"""


def run_together(
    jobs: dict[str, list[str]], cwd: Path, torch: bool = False
) -> dict[str, subprocess.CompletedProcess]:
    """Run the jobs as concurrent processes released at one moment (see :data:`BARRIER_DRIVER`)."""
    return run_many(jobs, cwd, driver=BARRIER_DRIVER, env={"DRIVER_TORCH": "1"} if torch else None)


@pytest.fixture()
def workdir(tmp_path) -> Path:
    (tmp_path / "tiny_arch.py").write_text(ARCH)
    write_weights(tmp_path / "tiny.safetensors", 784)
    return tmp_path


def add_args(model_id: str, zoo_file: str = "same.yaml", checkpoint: str = "tiny.safetensors"):
    return [
        "zoo", "add", "--id", model_id, "--checkpoint", checkpoint, "--arch",
        "tiny_arch.py:linear", "--dataset", "fashion-mnist", "--train-sigma", "0.25",
        "--input-layer", "none", "--zoo-file", zoo_file, "--no-check",
    ]  # fmt: skip


def ids(zoo_file: Path) -> list[str]:
    return [e["id"] for e in yaml.safe_load(zoo_file.read_text())["models"]]


@pytest.mark.parametrize("trial", range(3))
def test_eight_concurrent_zoo_adds_keep_all_eight_entries(workdir, trial):
    same = workdir / "same.yaml"
    first = subprocess.run(
        [sys.executable, "-m", "rsbench", *add_args("first-s0.25")],
        cwd=workdir,
        env=cli_env(workdir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    same.write_text("# my experts\n" + same.read_text())
    original = same.read_text()
    jobs = {f"add{i}": add_args(f"writer{i}-s0.25") for i in range(8)}
    results = run_together(jobs, workdir)
    for i in range(8):
        result = results[f"add{i}"]
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"wrote writer{i}-s0.25 (sha256 ")
    assert sorted(ids(same)) == sorted(["first-s0.25"] + [f"writer{i}-s0.25" for i in range(8)])
    assert same.read_text().startswith(original)  # the earlier entry and comment, byte for byte
    assert [p.name for p in workdir.glob(".same.yaml.*.tmp")] == []  # no temporary file left


def tar_of(path: Path, member: str, data: bytes) -> Path:
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def test_concurrent_imports_of_one_entry_all_succeed(workdir):
    member = "models/tiny/noise_0.25/tiny.safetensors"
    (workdir / "base.yaml").write_text(
        "models:\n  - id: tiny-arch-s0.25\n    kind: expert\n    dataset: fashion-mnist\n"
        "    num_classes: 10\n    input_shape: [1, 28, 28]\n    arch: tiny_arch.py:linear\n"
        "    train_sigma: 0.25\n    input_layer: {type: none}\n"
        f"    source: {{type: archive_url, url: 'http://127.0.0.1:9/m.tar', member: {member}}}\n"
        "    sha256: null\n"
    )
    good = (workdir / "tiny.safetensors").read_bytes()
    other = bytearray(good)
    other[-1] ^= 1
    tar_of(workdir / "good.tar", member, good)
    tar_of(workdir / "other.tar", member, bytes(other))

    def job(archive: str, zoo_file: str) -> list[str]:
        return ["zoo", "import-archive", archive, "--zoo", "base.yaml", "--zoo-file", zoo_file]

    jobs = {
        "same1": job("good.tar", "same.yaml"),
        "same2": job("good.tar", "same.yaml"),
        "same3": job("good.tar", "same.yaml"),
        "other": job("other.tar", "other.yaml"),
    }
    results = run_together(jobs, workdir, torch=True)
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stdout}\n{result.stderr}"
        assert "1 entries available, 0 failed" in result.stdout
    digest = {n: hashlib.sha256(d).hexdigest() for n, d in (("good", good), ("other", other))}
    pinned = {
        f: yaml.safe_load((workdir / f).read_text())["models"][0]["sha256"]
        for f in ("same.yaml", "other.yaml")
    }
    assert pinned == {"same.yaml": digest["good"], "other.yaml": digest["other"]}
    store = workdir / ".cache" / "sha256"
    assert sorted(p.name for p in store.iterdir() if not p.name.endswith(".lock")) == sorted(
        digest.values()
    )  # both files, under their digests; no temporary file left behind


# --------------------------------------------------------------------------------------------------
# interrupted


def blocked_on_fifo(args: list[str], fifo: Path, cwd: Path) -> tuple[subprocess.Popen, int]:
    """Start ``rsbench ARGS``; return once it has opened ``fifo`` for reading (and our write end)."""
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rsbench", *args],
        cwd=cwd,
        env=cli_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:  # succeeds only once a reader has the FIFO open; we then never write
            return proc, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                out, err = proc.communicate()
                pytest.fail(f"rsbench never opened the FIFO: {proc.returncode}\n{out}\n{err}")
            time.sleep(0.05)


def interrupt(proc: subprocess.Popen, writer: int, signum: int) -> tuple[int, str, str]:
    time.sleep(0.3)  # let it reach the blocking read
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(writer)
    return proc.returncode, out, err


def test_interrupted_zoo_hash_says_what_it_did(workdir):
    fifo = workdir / "never.pth"
    proc, writer = blocked_on_fifo(["zoo", "hash", "tiny.safetensors", str(fifo)], fifo, workdir)
    code, out, err = interrupt(proc, writer, signal.SIGINT)
    assert code == 130, err
    digest = hashlib.sha256((workdir / "tiny.safetensors").read_bytes()).hexdigest()
    assert out.startswith(f"{digest}  tiny.safetensors")
    assert err.splitlines() == [
        "interrupted; 1 of 2 files hashed (printed above); hash reads the files and writes "
        "nothing, so there is nothing to resume: run it again"
    ]
    assert "results written so far" not in err


@pytest.mark.parametrize(("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])  # fmt: skip
def test_interrupted_zoo_add_writes_nothing_and_says_so(workdir, signum, code, word):
    same = workdir / "same.yaml"
    same.write_text("# mine\nmodels: []\n")
    fifo = workdir / "never.pth"
    proc, writer = blocked_on_fifo(add_args("late-s0.25", checkpoint=str(fifo)), fifo, workdir)
    got, out, err = interrupt(proc, writer, signum)
    assert got == code, err
    assert err.splitlines() == [
        f"{word}; nothing was written to same.yaml (it is as it was); run it again"
    ]
    assert out == "" and same.read_text() == "# mine\nmodels: []\n"


def test_interrupted_import_archive_writes_nothing_and_says_so(workdir):
    zoo_file = workdir / "z.yaml"
    zoo_file.write_text("# mine\nmodels: []\n")
    fifo = workdir / "models.tar"  # the archive never arrives
    args = ["zoo", "import-archive", str(fifo), "--zoo-file", "z.yaml"]
    proc, writer = blocked_on_fifo(args, fifo, workdir)
    code, out, err = interrupt(proc, writer, signal.SIGINT)
    assert code == 130, err
    assert err.splitlines() == [
        "interrupted; nothing was written to z.yaml (it is as it was); members already checked "
        "stay in the cache; run it again"
    ]
    assert out == "" and zoo_file.read_text() == "# mine\nmodels: []\n"
    assert not (workdir / ".cache").exists()

"""Under CI (``CI=true``, as ``.ci/run`` sets it), a skipped test fails unless its reason is allowed.

A fresh clone must run the whole default suite: the data the tests need lives in ``tests/data``,
so a skip means a test did not run where it should. The only skips allowed are those whose reason
matches :data:`ALLOWED_SKIPS` (each says why it is acceptable). GPU and network tests carry the
``gpu`` / ``network`` markers and are deselected by default, so they never get here.

The fixtures shared by the test files live here too (tests never import each other). The support
code they build on lives in the ``helpers`` package next to this file: ``helpers.tiny_zoo`` (a user
zoo of linear experts, a router and a dual), ``helpers.fake_cuda`` (CUDA faked at the torch
boundary), ``helpers.drive_server`` (a local Google Drive), ``helpers.cli`` (the forked CLI driver
and its bad-input folder) and ``helpers.rows`` (small results frames).

Markers (registered in pyproject.toml): ``slow``, ``gpu`` and ``network`` tests are left out of the
default run; ``subprocess`` marks tests that start Python processes (``-m "not subprocess"`` runs the
in-process tests only).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.cli import write_workdir
from helpers.drive_server import DriveServer
from helpers.fake_cuda import FakeCuda
from helpers.tiny_zoo import make_zoo

#: (pattern of the skip reason, why such a skip is acceptable)
ALLOWED_SKIPS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Hardware this machine may lack: a test that probes for a CUDA device at run time.
    (re.compile(r"\b(CUDA|GPU)\b"), "needs a CUDA device"),
    # The internet: unreachable from some CI machines (network tests are marked and deselected).
    (re.compile(r"\b(network|internet)\b", re.IGNORECASE), "needs the internet"),
    # A Debian system package (the 60,000 real Fashion-MNIST training images): .ci/run installs it
    # where it can (root with apt-get); elsewhere these few data tests cannot run.
    (re.compile(r"dataset-fashion-mnist"), "needs Debian's dataset-fashion-mnist package"),
    # A web browser: one test lays the HTML leaderboard out in headless Chromium (a 1400 px
    # window) to measure its width; Chromium is a system package, not a Python one, so a machine
    # with only Python cannot run it. .ci/run installs it; `apt-get install chromium` adds it.
    (re.compile(r"^no chromium to lay out the page"), "needs a Chromium browser"),
)


def strict() -> bool:
    """Whether unexpected skips fail (``CI`` set to true/1/yes)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def allowed(reason: str) -> bool:
    """Whether a skip with this reason is on :data:`ALLOWED_SKIPS`."""
    return any(pattern.search(reason) for pattern, _ in ALLOWED_SKIPS)


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_unexpected_skip(report) -> None:
    if not (strict() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    if allowed(reason):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"unexpected skip under CI: {reason!r}; make the test run (ship its data in tests/data) "
        "or add the reason, with why, to ALLOWED_SKIPS in tests/conftest.py"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_unexpected_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_unexpected_skip(outcome.get_result())


# ------------------------------------------------------------------------ shared fixtures


@pytest.fixture(scope="module")
def zoo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny user zoo (``tiny-s0.25``, ``tiny-s0.50``, ``tiny-router``, ``tiny-dual``), one per
    test module."""
    return make_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one CPU thread for the test (small networks; the suite runs on 2 cores), then the
    thread count it had. Modules that train or certify small networks use it for every test:
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCuda]:
    """One fake CUDA device (set ``fake.device_count`` for more); undone after the test."""
    fake = FakeCuda(monkeypatch).install()
    try:
        yield fake
    finally:
        fake.uninstall()


@pytest.fixture
def drive(monkeypatch: pytest.MonkeyPatch) -> Iterator[DriveServer]:
    """A local Google Drive on 127.0.0.1 that rsbench's downloads are allowed to use."""
    with DriveServer() as server:
        monkeypatch.setenv("RSBENCH_DRIVE_HOSTS", ",".join(server.hosts))
        yield server


@pytest.fixture(scope="module")
def cli_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny architecture, weights, good and broken zoo files and sweep files."""
    return write_workdir(tmp_path_factory.mktemp("bad-input"))

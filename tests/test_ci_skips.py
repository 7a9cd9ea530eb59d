"""tests/conftest.py: under CI an unexpected skip fails the run; an allowed one does not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = """
import pytest

pytestmark = []


def test_runs():
    assert sum(range(4)) == 6


def test_probes_for_a_gpu():
    pytest.skip("no CUDA device on this machine")


def test_data_is_missing():
    pytest.skip("reference logs not found next to the checkout")
"""


def _run(folder: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def suite(tmp_path) -> Path:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    shutil.copytree(  # the conftest's fixtures build on the support package
        Path(__file__).with_name("helpers"),
        tmp_path / "helpers",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (tmp_path / "test_sample.py").write_text(SUITE)
    return tmp_path


@pytest.mark.subprocess
def test_an_unexpected_skip_fails_under_ci_and_an_allowed_one_passes(suite) -> None:
    strict = _run(suite, "true")
    assert strict.returncode == 1, strict.stdout
    assert "1 failed, 1 passed, 1 skipped" in strict.stdout
    assert "unexpected skip under CI: 'reference logs not found" in strict.stdout
    relaxed = _run(suite, None)
    assert relaxed.returncode == 0 and "1 passed, 2 skipped" in relaxed.stdout, relaxed.stdout
    skipped_module = SUITE.replace("pytestmark = []", "pytestmark = [pytest.mark.skip('no data')]")
    (suite / "test_sample.py").write_text(skipped_module)
    module = _run(suite, "true")  # a skip at setup is reported as an error
    assert module.returncode == 1 and "3 errors" in module.stdout, module.stdout

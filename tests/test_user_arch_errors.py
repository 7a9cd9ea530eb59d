"""A user's ``arch: file.py:fn`` that raises, through the real CLI (issue 23, item 5).

Ten ways user code fails (its module raises at import: RuntimeError, SyntaxError,
ModuleNotFoundError; its function raises: ValueError, KeyError, ZeroDivisionError, RecursionError,
MemoryError; its forward raises: AssertionError, IndexError), each in ``certify``, ``zoo check`` and
``zoo add``: no traceback, one line naming the file, the function and the exception, a truthful exit
status, and nothing written (no results folder, no zoo file; the zoo files read are unchanged).
The 30 commands run in processes forked from one driver that imported rsbench once
(:func:`helpers.cli.run_many`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.cli import assert_one_clear_error, run_many, write_weights

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="the CLI driver forks (POSIX only)"),
]

FNS = """
from torch import nn


def value_error(num_classes, input_shape=None):
    raise ValueError("width must be even")


def key_error(num_classes, input_shape=None):
    return {}["depth"]


def zero_division(num_classes, input_shape=None):
    return 1 // 0


def recursion(num_classes, input_shape=None):
    return recursion(num_classes, input_shape)


def memory_error(num_classes, input_shape=None):
    raise MemoryError("cannot allocate the network")


class _Asserts(nn.Sequential):
    def forward(self, x):
        assert x.shape[1] == 3, "expects RGB images"
        return super().forward(x)


class _Indexes(nn.Sequential):
    def forward(self, x):
        return super().forward(x)[:, [99]]


def assert_forward(num_classes, input_shape=None):
    return _Asserts(nn.Flatten(), nn.Linear(784, num_classes))


def index_forward(num_classes, input_shape=None):
    return _Indexes(nn.Flatten(), nn.Linear(784, num_classes))
"""

MODULES = {
    "arch_runtime.py": 'raise RuntimeError("no GPU kernels for this net")\n\ndef linear(n):\n    pass\n',
    "arch_syntax.py": "def linear(num_classes:\n    pass\n",
    "arch_missing.py": "import rsbench_no_such_module_xyz\n\ndef linear(n):\n    pass\n",
    "arch_fns.py": FNS,
}


@dataclass(frozen=True)
class Case:
    arch: str  # file.py:fn
    exception: str
    stage: str  # "build" or "forward"


CASES = {
    "import-runtime": Case("arch_runtime.py:linear", "RuntimeError", "build"),
    "import-syntax": Case("arch_syntax.py:linear", "SyntaxError", "build"),
    "import-missing": Case("arch_missing.py:linear", "ModuleNotFoundError", "build"),
    "fn-value": Case("arch_fns.py:value_error", "ValueError", "build"),
    "fn-key": Case("arch_fns.py:key_error", "KeyError", "build"),
    "fn-zero": Case("arch_fns.py:zero_division", "ZeroDivisionError", "build"),
    "fn-recursion": Case("arch_fns.py:recursion", "RecursionError", "build"),
    "fn-memory": Case("arch_fns.py:memory_error", "MemoryError", "build"),
    "forward-assert": Case("arch_fns.py:assert_forward", "AssertionError", "forward"),
    "forward-index": Case("arch_fns.py:index_forward", "IndexError", "forward"),
}

ENTRY = """  - id: u-{name}-s0.25
    kind: expert
    dataset: fashion-mnist
    num_classes: 10
    input_shape: [1, 28, 28]
    arch: {arch}
    train_sigma: 0.25
    input_layer: {{type: none}}
    source: {{type: file, path: tiny.safetensors}}
    sha256: {sha256}
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess], dict]:
    root = tmp_path_factory.mktemp("user-arch")
    for name, text in MODULES.items():
        (root / name).write_text(text)
    write_weights(root / "tiny.safetensors", 784)
    digest = hashlib.sha256((root / "tiny.safetensors").read_bytes()).hexdigest()
    zoo = "models:\n" + "".join(
        ENTRY.format(name=n, arch=c.arch, sha256=digest) for n, c in CASES.items()
    )
    (root / "archs.yaml").write_text(zoo)
    jobs = {}
    for name, case in CASES.items():
        model = f"u-{name}-s0.25"
        jobs[f"certify:{name}"] = [
            "certify", model, "--zoo", "archs.yaml", "--out", f"out-{name}", "--limit", "2",
            "--n0", "10", "--n", "50", "--device", "cpu", "--no-leaderboard",
        ]  # fmt: skip
        jobs[f"check:{name}"] = ["zoo", "check", model, "--zoo", "archs.yaml"]
        jobs[f"add:{name}"] = [
            "zoo", "add", "--id", model, "--checkpoint", "tiny.safetensors", "--arch", case.arch,
            "--dataset", "fashion-mnist", "--train-sigma", "0.25", "--input-layer", "none",
            "--zoo-file", f"added-{name}.yaml",
        ]  # fmt: skip
    before = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    return root, run_many(jobs, root), before


def _shown(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def _names_the_failure(line: str, case: Case) -> None:
    file, fn = case.arch.split(":")
    for word in (file, fn, case.exception):
        assert word in line, f"{word!r} not in {line!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_certify_says_one_line_and_writes_nothing(outcomes, name):
    root, results, before = outcomes
    result = results[f"certify:{name}"]
    assert result.returncode == 2, _shown(result)
    line = assert_one_clear_error(result)  # (the progress bar drew its first frame before it)
    _names_the_failure(line, CASES[name])
    if CASES[name].stage == "build":
        assert "building the architecture failed" in line
    else:
        assert "the network fails on a [1, 28, 28] image" in line
    assert not (root / f"out-{name}").exists()
    assert {n: (root / n).read_bytes() for n in before} == before


@pytest.mark.parametrize("name", list(CASES))
def test_zoo_check_says_which_step_failed(outcomes, name):
    _, results, _ = outcomes
    result = results[f"check:{name}"]
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, _shown(
        result
    )
    [line] = [x for x in result.stdout.splitlines() if x.strip()]
    assert line.startswith(f"FAIL u-{name}-s0.25: ")
    _names_the_failure(line, CASES[name])
    if CASES[name].stage == "build":
        assert "building the architecture failed" in line and "forward pass" not in line
    else:
        assert "forward pass failed" in line and "building" not in line
    assert result.stderr.splitlines() == [
        "error: 1 of 1 checked entries failed (the FAIL lines above say why)"
    ]


@pytest.mark.parametrize("name", list(CASES))
def test_zoo_add_says_one_line_and_writes_no_zoo_file(outcomes, name):
    root, results, _ = outcomes
    result = results[f"add:{name}"]
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, _shown(
        result
    )
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and result.stdout == ""
    _names_the_failure(line, CASES[name])
    assert not (root / f"added-{name}.yaml").exists()

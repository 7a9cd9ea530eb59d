"""Running the ``rsbench`` command line from tests, cheaply, and checking its one-line errors.

:func:`run_cli` runs ``python -m rsbench``; :func:`run_many` runs many invocations forked from one
driver process that imported rsbench (and torch) once (:data:`DRIVER`). :func:`write_workdir` writes
the tiny user zoo the bad-input tests run against (a ``tiny_arch.py:linear`` architecture and
safetensors weights, so those tests do not depend on the embedded models).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ARCH = """
from torch import nn


def linear(num_classes, input_shape=None):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))


def wide(num_classes, input_shape=None):
    # expects 3x32x32 images although its zoo entry says 1x28x28
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
"""

ENTRY = """  - id: {id}
    kind: expert
    dataset: fashion-mnist
    num_classes: {num_classes}
    input_shape: {input_shape}
    arch: {arch}
    train_sigma: {train_sigma}
    input_layer: {{type: none}}
    source: {{type: file, path: {weights}}}
    sha256: null
"""

GOOD = {
    "id": "tiny-s0.25",
    "num_classes": 10,
    "input_shape": "[1, 28, 28]",
    "arch": "tiny_arch.py:linear",
    "train_sigma": 0.25,
    "weights": "tiny.safetensors",
}

DUAL = """  - id: tiny-s0.50
    kind: expert
    dataset: fashion-mnist
    num_classes: 10
    input_shape: [1, 28, 28]
    arch: tiny_arch.py:linear
    train_sigma: 0.5
    input_layer: {type: none}
    source: {type: file, path: tiny.safetensors}
    sha256: null
  - id: tiny-router
    kind: router
    dataset: fashion-mnist
    num_classes: 2
    input_shape: [1, 28, 28]
    arch: tiny_arch.py:linear
    train_sigma: 0.5
    experts: [tiny-s0.25, tiny-s0.50]
    input_layer: {type: none}
    source: {type: file, path: router.safetensors}
    sha256: null
  - id: tiny-dual
    kind: dual
    dataset: fashion-mnist
    router: tiny-router
    experts: [tiny-s0.25, tiny-s0.50]
    sigma_router: 0.5
"""

#: Small, fast certification settings appended to every good certify command.
FAST = ("--limit", "2", "--n0", "10", "--n", "50", "--device", "cpu", "--no-leaderboard")


def zoo_text(**changes) -> str:
    fields = {**GOOD, **changes}
    return "models:\n" + ENTRY.format(**fields) + DUAL


def write_weights(path: Path, inputs: int, classes: int = 10, prefix: str = "1.") -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file(
        {
            f"{prefix}weight": (0.01 * rng.standard_normal((classes, inputs))).astype(np.float32),
            f"{prefix}bias": np.zeros(classes, dtype=np.float32),
        },
        str(path),
    )


def certify_args(*extra: str, zoo: str = "zoo.yaml", model: str = "tiny-s0.25") -> tuple[str, ...]:
    return ("certify", model, "--zoo", zoo, "--out", "{out}", *FAST, *extra)


def write_workdir(root: Path) -> Path:
    """Write the tiny architecture, weights, good and broken zoo files and sweep files into ``root``."""

    root.mkdir(parents=True, exist_ok=True)
    (root / "tiny_arch.py").write_text(ARCH)
    write_weights(root / "tiny.safetensors", 784)
    write_weights(root / "router.safetensors", 784, classes=2)
    write_weights(root / "renamed.safetensors", 784, prefix="fc.")
    write_weights(root / "wide.safetensors", 3 * 32 * 32)
    zoos = {
        "zoo.yaml": zoo_text(),
        "malformed.yaml": "models:\n  - id: tiny-s0.25\n    kind: [expert\n",
        "type-num-classes.yaml": zoo_text(num_classes='"ten"'),
        "type-train-sigma.yaml": zoo_text(train_sigma='"abc"'),
        "type-input-shape.yaml": zoo_text(input_shape="784"),
        "type-arch.yaml": zoo_text(arch="[1, 2]"),
        "not-a-list.yaml": "models: {id: tiny-s0.25}\n",
        "negative-sigma.yaml": zoo_text(train_sigma=-0.25),
        "keys.yaml": zoo_text(weights="renamed.safetensors"),
        "shape.yaml": zoo_text(input_shape="[3, 32, 32]"),
        "wide.yaml": zoo_text(arch="tiny_arch.py:wide", weights="wide.safetensors"),
    }
    for name, text in zoos.items():
        (root / name).write_text(text)
    (root / "sweep-key.yaml").write_text("ids: [tiny-s0.25]\nsigma: [0.25]\n")
    (root / "sweep-option.yaml").write_text("ids: [tiny-s0.25]\noptions: {limt: 2}\n")
    return root


def cli_env(cwd: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RSBENCH_ZOO", "RSBENCH_DATA", "RSBENCH_RESULTS")
    }
    env.update(RSBENCH_CACHE=str(cwd / ".cache"), COLUMNS="200", OMP_NUM_THREADS="1")
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m rsbench ARGS`` in ``cwd`` with a private weights cache and no user zoo."""
    return subprocess.run(
        [sys.executable, "-m", "rsbench", *args],
        cwd=cwd,
        env=cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: Runs many CLI invocations cheaply: one Python process imports rsbench (and torch) once, then
#: forks one child per invocation; the child points fd 1 / fd 2 at files and calls the console
#: entry point ``rsbench.cli.main``, so it prints exactly what ``python -m rsbench`` prints (an
#: uncaught exception is printed as the interpreter prints it, with exit status 1).
DRIVER = r"""
import json, os, sys, traceback
import torch, rsbench.cli.main, rsbench.run.runner, rsbench.data.dataset, rsbench.zoo.registry, rsbench.models.network  # noqa: F401

jobs = json.load(sys.stdin)
codes = {}
for job in jobs:
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(job["cwd"])
            for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            sys.argv = ["rsbench", *job["args"]]
            if job.get("prelude"):
                exec(job["prelude"], {"__name__": "prelude"})
            try:
                rsbench.cli.main(job["args"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    codes[job["name"]] = os.waitstatus_to_exitcode(status)
json.dump(codes, sys.stdout)
"""


def run_many(
    jobs: dict[str, list[str]],
    cwd: Path,
    prelude: str = "",
    prefix: Sequence[str] = (),
    driver: str = DRIVER,
    env: dict[str, str] | None = None,
) -> dict[str, subprocess.CompletedProcess]:
    """Run each named argument list as ``rsbench ARGS`` in ``cwd`` (see :data:`DRIVER`).

    ``prelude``, when given, is Python code each child runs just before the command (fault
    injection, e.g. a write that fails with ENOSPC). ``prefix`` runs the driver under a wrapper
    command (e.g. ``setpriv`` dropping root's permission override). ``driver`` replaces
    :data:`DRIVER` (it reads the same job list on stdin and prints the exit codes as JSON);
    ``env`` adds variables to the children's environment.
    """
    logs = cwd / ".logs"
    logs.mkdir(exist_ok=True)
    spec = [
        {
            "name": name,
            "args": args,
            "cwd": str(cwd),
            "stdout": str(logs / f"{name}.out"),
            "stderr": str(logs / f"{name}.err"),
            "prelude": prelude,
        }
        for name, args in jobs.items()
    ]
    driver = subprocess.run(
        [*prefix, sys.executable, "-c", driver],
        input=json.dumps(spec),
        env={**cli_env(cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert driver.returncode == 0, driver.stderr
    codes = json.loads(driver.stdout)
    return {
        job["name"]: subprocess.CompletedProcess(
            job["args"],
            codes[job["name"]],
            Path(job["stdout"]).read_text(),
            Path(job["stderr"]).read_text(),
        )
        for job in spec
    }


def assert_one_clear_error(result: subprocess.CompletedProcess, words=()) -> str:
    """Non-zero exit, no traceback, exactly one ``error:`` line, last on stderr; return it."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode != 0, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, shown
    assert result.stderr.rstrip().splitlines()[-1] == errors[0], shown
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    return errors[0]

"""Bad input through the real command line: what a user sees (issue 9, item 3).

Every case runs the ``rsbench`` console entry point in a separate process, against a small user zoo
written into a temporary folder (a ``tiny_arch.py:linear`` architecture and safetensors weights
written here, so the tests do not depend on the embedded models). Each must:

* exit non-zero;
* print no ``Traceback`` (stdout or stderr);
* print exactly one line starting with ``error:``, the last line on stderr, naming the problem;
* write nothing into the output directory (it is not even created).

Importing torch costs a few seconds per process, so the refusal cases run in processes forked from
one driver that imported rsbench once (:data:`DRIVER`); ``test_forked_cases_match_python_m_rsbench``
checks on a sample that a plain ``python -m rsbench`` subprocess prints the same. The good control
and the results-format cases run ``python -m rsbench`` itself. About 20-40 s on two CPU cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="the CLI driver forks one process per command (POSIX only)"
)

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


def _zoo_text(**changes) -> str:
    fields = {**GOOD, **changes}
    return "models:\n" + ENTRY.format(**fields) + DUAL


def _write_weights(path: Path, inputs: int, classes: int = 10, prefix: str = "1.") -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file(
        {
            f"{prefix}weight": (0.01 * rng.standard_normal((classes, inputs))).astype(np.float32),
            f"{prefix}bias": np.zeros(classes, dtype=np.float32),
        },
        str(path),
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with the tiny architecture, weights, good and broken zoo files and sweep files."""
    root = tmp_path_factory.mktemp("bad-input")
    (root / "tiny_arch.py").write_text(ARCH)
    _write_weights(root / "tiny.safetensors", 784)
    _write_weights(root / "router.safetensors", 784, classes=2)
    _write_weights(root / "renamed.safetensors", 784, prefix="fc.")
    _write_weights(root / "wide.safetensors", 3 * 32 * 32)
    zoos = {
        "zoo.yaml": _zoo_text(),
        "malformed.yaml": "models:\n  - id: tiny-s0.25\n    kind: [expert\n",
        "type-num-classes.yaml": _zoo_text(num_classes='"ten"'),
        "type-train-sigma.yaml": _zoo_text(train_sigma='"abc"'),
        "type-input-shape.yaml": _zoo_text(input_shape="784"),
        "type-arch.yaml": _zoo_text(arch="[1, 2]"),
        "not-a-list.yaml": "models: {id: tiny-s0.25}\n",
        "negative-sigma.yaml": _zoo_text(train_sigma=-0.25),
        "keys.yaml": _zoo_text(weights="renamed.safetensors"),
        "shape.yaml": _zoo_text(input_shape="[3, 32, 32]"),
        "wide.yaml": _zoo_text(arch="tiny_arch.py:wide", weights="wide.safetensors"),
    }
    for name, text in zoos.items():
        (root / name).write_text(text)
    (root / "sweep-key.yaml").write_text("ids: [tiny-s0.25]\nsigma: [0.25]\n")
    (root / "sweep-option.yaml").write_text("ids: [tiny-s0.25]\noptions: {limt: 2}\n")
    return root


def _env(cwd: Path) -> dict[str, str]:
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
        env=_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass(frozen=True)
class Case:
    """A command that must be refused, and words its ``error:`` line must contain."""

    args: tuple[str, ...]
    words: tuple[str, ...]


def _certify(*extra: str, zoo: str = "zoo.yaml", model: str = "tiny-s0.25") -> tuple[str, ...]:
    return ("certify", model, "--zoo", zoo, "--out", "{out}", *FAST, *extra)


CASES: dict[str, Case] = {
    # unknown id, with suggestions (certify and zoo show)
    "unknown-id": Case(_certify(model="tiny-s0.2"), ("'tiny-s0.2'", "did you mean", "tiny-s0.25")),
    "unknown-id-zoo-show": Case(
        ("zoo", "show", "tiny-dul", "--zoo", "zoo.yaml"), ("'tiny-dul'", "did you mean tiny-dual")
    ),
    # zoo files
    "malformed-yaml": Case(_certify(zoo="malformed.yaml"), ("malformed.yaml", "not valid YAML")),
    "malformed-yaml-zoo-list": Case(
        ("zoo", "list", "--zoo", "malformed.yaml"), ("malformed.yaml", "line")
    ),
    "models-not-a-list": Case(_certify(zoo="not-a-list.yaml"), ("not-a-list.yaml",)),
    "type-num-classes": Case(_certify(zoo="type-num-classes.yaml"), ("num_classes", "'ten'")),
    "type-train-sigma": Case(_certify(zoo="type-train-sigma.yaml"), ("train_sigma", "'abc'")),
    "type-input-shape": Case(_certify(zoo="type-input-shape.yaml"), ("input_shape", "784")),
    "type-arch": Case(_certify(zoo="type-arch.yaml"), ("arch",)),
    "zoo-sigma-negative": Case(_certify(zoo="negative-sigma.yaml"), ("train_sigma", "-0.25")),
    "zoo-file-missing": Case(_certify(zoo="nowhere.yaml"), ("nowhere.yaml",)),
    # certification parameters
    "sigma-zero": Case(_certify("--sigma", "0"), ("sigma=0",)),
    "sigma-negative": Case(_certify("--sigma", "-0.5"), ("sigma=-0.5",)),
    "sigma-nan": Case(_certify("--sigma", "nan"), ("sigma=nan",)),
    "sigma-inf": Case(_certify("--sigma", "inf"), ("sigma=inf",)),
    "alpha-zero": Case(_certify("--alpha", "0"), ("alpha=0",)),
    "alpha-one": Case(_certify("--alpha", "1"), ("alpha=1",)),
    "alpha-negative": Case(_certify("--alpha", "-0.01"), ("alpha=-0.01",)),
    "alpha-above-one": Case(_certify("--alpha", "1.5"), ("alpha=1.5",)),
    "n0-zero": Case(_certify("--n0", "0"), ("n0=0",)),
    "n-zero": Case(_certify("--n", "0"), ("n=0",)),
    "n-negative": Case(_certify("--n", "-100"), ("n=-100",)),
    "stride-beyond": Case(_certify("--stride", "100000"), ("stride=100000", "beyond")),
    "limit-beyond": Case(_certify("--limit", "100000"), ("limit=100000", "beyond")),
    "index-beyond": Case(
        ("certify", "tiny-s0.25", "--zoo", "zoo.yaml", "--out", "{out}", "--indices", "5000"),
        ("5000", "outside"),
    ),
    "dual-alpha-router-fraction": Case(
        _certify("--alpha-router-fraction", "1.5", model="tiny-dual"), ("alpha_router_fraction",)
    ),
    "dual-sigma-router-zero": Case(
        _certify("--sigma-router", "0", model="tiny-dual"), ("sigma_router=0",)
    ),
    # checkpoint and image shape
    "checkpoint-keys": Case(
        _certify(zoo="keys.yaml"),
        ("does not match the architecture", "missing: 1.weight", "unexpected: fc."),
    ),
    "entry-shape-vs-dataset": Case(_certify(zoo="shape.yaml"), ("[3, 32, 32]", "[1, 28, 28]")),
    # sweep files
    "sweep-unknown-key": Case(
        ("sweep", "sweep-key.yaml", "--zoo", "zoo.yaml", "--out", "{out}"), ("'sigma'", "allowed")
    ),
    "sweep-unknown-option": Case(
        ("sweep", "sweep-option.yaml", "--zoo", "zoo.yaml", "--out", "{out}"), ("'limt'", "allowed")
    ),
}

#: Refused cases that rsbench does not yet handle well (name -> reason); they run as strict xfails.
KNOWN_BUGS: dict[str, str] = {}
# a network that cannot take the entry's input_shape: refused after a probe forward, before any
# run directory is written
CASES["arch-cannot-take-shape"] = Case(
    _certify(zoo="wide.yaml"), ("tiny-s0.25", "[1, 28, 28]", "arch")
)


#: Runs many CLI invocations cheaply: one Python process imports rsbench (and torch) once, then
#: forks one child per invocation; the child points fd 1 / fd 2 at files and calls the console
#: entry point ``rsbench.cli.main``, so it prints exactly what ``python -m rsbench`` prints (an
#: uncaught exception is printed as the interpreter prints it, with exit status 1).
DRIVER = r"""
import json, os, sys, traceback
import torch, rsbench.cli, rsbench.runner, rsbench.data, rsbench.zoo, rsbench.models  # noqa: F401

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
    jobs: dict[str, list[str]], cwd: Path, prelude: str = "", prefix: Sequence[str] = ()
) -> dict[str, subprocess.CompletedProcess]:
    """Run each named argument list as ``rsbench ARGS`` in ``cwd`` (see :data:`DRIVER`).

    ``prelude``, when given, is Python code each child runs just before the command (fault
    injection, e.g. a write that fails with ENOSPC). ``prefix`` runs the driver under a wrapper
    command (e.g. ``setpriv`` dropping root's permission override).
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
        [*prefix, sys.executable, "-c", DRIVER],
        input=json.dumps(spec),
        env=_env(cwd),
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


@pytest.fixture(scope="module")
def outcomes(workdir) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Run every case once; each gets its own (not yet existing) output folder."""
    outs = {name: workdir / f"out-{name}" for name in CASES}
    jobs = {
        name: [a.replace("{out}", str(outs[name])) for a in case.args]
        for name, case in CASES.items()
    }
    results = run_many(jobs, workdir)
    return {name: (results[name], outs[name]) for name in CASES}


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


def _params():
    for name in CASES:
        marks = []
        if name in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name]))
        yield pytest.param(name, id=name, marks=marks)


@pytest.mark.parametrize("name", list(_params()))
def test_bad_input_is_refused_with_one_line_and_writes_nothing(outcomes, name: str) -> None:
    result, out = outcomes[name]
    assert_one_clear_error(result, CASES[name].words)
    assert not out.exists(), f"{out} was created: {sorted(p.name for p in out.rglob('*'))}"


def test_the_good_command_works(workdir) -> None:
    """The control: the same zoo and options certify fine, so the refusals above are specific."""
    out = workdir / "out-good"
    args = [a.replace("{out}", str(out)) for a in _certify()]
    result = run_cli(args, workdir)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len(list(out.rglob("part-*.parquet"))) == 1


@pytest.mark.parametrize("name", ["checkpoint-keys"])
def test_forked_cases_match_python_m_rsbench(workdir, outcomes, name: str) -> None:
    forked, _ = outcomes[name]
    out = workdir / f"out-plain-{name}"
    plain = run_cli([a.replace("{out}", str(out)) for a in CASES[name].args], workdir)
    assert plain.returncode == forked.returncode
    assert plain.stderr.splitlines()[-1] == forked.stderr.splitlines()[-1].replace(
        f"out-{name}", f"out-plain-{name}"
    )
    assert not out.exists()


def _set_format_version(run_dir: Path, version: int) -> None:
    path = run_dir / "run.json"
    info = json.loads(path.read_text())
    info["format_version"] = version
    path.write_text(json.dumps(info))


@pytest.fixture(scope="module")
def future_format(workdir) -> dict[str, tuple[subprocess.CompletedProcess, dict, dict]]:
    """A finished run whose run.json then claims results format 99, and three commands on it.

    Each command (``resume``, ``leaderboard``, ``rescore``) gets its own copy of the run; returns
    its outcome and snapshots of its folders before and after (the rescore output included).
    """
    made_in = workdir / "future"
    made = run_many({"make": [a.replace("{out}", str(made_in)) for a in _certify()]}, workdir)[
        "make"
    ]
    assert made.returncode == 0, made.stderr
    (run_dir,) = made_in.iterdir()
    _set_format_version(run_dir, 99)
    commands, folders = {}, {}
    for name in ("resume", "leaderboard", "rescore"):
        out = workdir / f"future-{name}"
        shutil.copytree(made_in, out)
        rescored = workdir / f"future-{name}-rescored"
        folders[name] = (out, rescored)
        commands[name] = {
            "resume": [a.replace("{out}", str(out)) for a in _certify()],
            "leaderboard": ["leaderboard", str(out / run_dir.name)],
            "rescore": [
                "rescore",
                str(out / run_dir.name),
                "--alpha",
                "0.01",
                "--out",
                str(rescored),
            ],
        }[name]
    before = {name: _snapshot(workdir, folders[name]) for name in commands}
    results = run_many(commands, workdir)
    return {
        name: (results[name], before[name], _snapshot(workdir, folders[name])) for name in commands
    }


def _snapshot(root: Path, folders) -> dict[str, bytes]:
    """File contents under ``folders`` (lock files aside: taking a lock is not writing results)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for folder in folders
        for p in (folder.rglob("*") if folder.exists() else ())
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.mark.parametrize(
    "command",
    [
        "resume",
        "leaderboard",
        "rescore",
    ],
)
def test_results_of_another_format_are_refused_and_left_alone(future_format, command) -> None:
    result, before, after = future_format[command]
    assert_one_clear_error(result, ("format", "99"))
    assert after == before

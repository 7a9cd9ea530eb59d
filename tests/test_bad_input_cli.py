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
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.cli import assert_one_clear_error, certify_args, run_cli, run_many

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(
        not hasattr(os, "fork"), reason="the CLI driver forks one process per command (POSIX only)"
    ),
]


@dataclass(frozen=True)
class Case:
    """A command that must be refused, and words its ``error:`` line must contain."""

    args: tuple[str, ...]
    words: tuple[str, ...]


CASES: dict[str, Case] = {
    # unknown id, with suggestions (certify and zoo show)
    "unknown-id": Case(
        certify_args(model="tiny-s0.2"), ("'tiny-s0.2'", "did you mean", "tiny-s0.25")
    ),
    "unknown-id-zoo-show": Case(
        ("zoo", "show", "tiny-dul", "--zoo", "zoo.yaml"), ("'tiny-dul'", "did you mean tiny-dual")
    ),
    # zoo files
    "malformed-yaml": Case(
        certify_args(zoo="malformed.yaml"), ("malformed.yaml", "not valid YAML")
    ),
    "malformed-yaml-zoo-list": Case(
        ("zoo", "list", "--zoo", "malformed.yaml"), ("malformed.yaml", "line")
    ),
    "models-not-a-list": Case(certify_args(zoo="not-a-list.yaml"), ("not-a-list.yaml",)),
    "type-num-classes": Case(certify_args(zoo="type-num-classes.yaml"), ("num_classes", "'ten'")),
    "type-train-sigma": Case(certify_args(zoo="type-train-sigma.yaml"), ("train_sigma", "'abc'")),
    "type-input-shape": Case(certify_args(zoo="type-input-shape.yaml"), ("input_shape", "784")),
    "type-arch": Case(certify_args(zoo="type-arch.yaml"), ("arch",)),
    "zoo-sigma-negative": Case(certify_args(zoo="negative-sigma.yaml"), ("train_sigma", "-0.25")),
    "zoo-file-missing": Case(certify_args(zoo="nowhere.yaml"), ("nowhere.yaml",)),
    # certification parameters
    "sigma-zero": Case(certify_args("--sigma", "0"), ("sigma=0",)),
    "sigma-negative": Case(certify_args("--sigma", "-0.5"), ("sigma=-0.5",)),
    "sigma-nan": Case(certify_args("--sigma", "nan"), ("sigma=nan",)),
    "sigma-inf": Case(certify_args("--sigma", "inf"), ("sigma=inf",)),
    "alpha-zero": Case(certify_args("--alpha", "0"), ("alpha=0",)),
    "alpha-one": Case(certify_args("--alpha", "1"), ("alpha=1",)),
    "alpha-negative": Case(certify_args("--alpha", "-0.01"), ("alpha=-0.01",)),
    "alpha-above-one": Case(certify_args("--alpha", "1.5"), ("alpha=1.5",)),
    "n0-zero": Case(certify_args("--n0", "0"), ("n0=0",)),
    "n-zero": Case(certify_args("--n", "0"), ("n=0",)),
    "n-negative": Case(certify_args("--n", "-100"), ("n=-100",)),
    "stride-beyond": Case(certify_args("--stride", "100000"), ("stride=100000", "beyond")),
    "limit-beyond": Case(certify_args("--limit", "100000"), ("limit=100000", "beyond")),
    "index-beyond": Case(
        ("certify", "tiny-s0.25", "--zoo", "zoo.yaml", "--out", "{out}", "--indices", "5000"),
        ("5000", "outside"),
    ),
    "dual-alpha-router-fraction": Case(
        certify_args("--alpha-router-fraction", "1.5", model="tiny-dual"),
        ("alpha_router_fraction",),
    ),
    "dual-sigma-router-zero": Case(
        certify_args("--sigma-router", "0", model="tiny-dual"), ("sigma_router=0",)
    ),
    # checkpoint and image shape
    "checkpoint-keys": Case(
        certify_args(zoo="keys.yaml"),
        ("does not match the architecture", "missing: 1.weight", "unexpected: fc."),
    ),
    "entry-shape-vs-dataset": Case(certify_args(zoo="shape.yaml"), ("[3, 32, 32]", "[1, 28, 28]")),
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
    certify_args(zoo="wide.yaml"), ("tiny-s0.25", "[1, 28, 28]", "arch")
)


@pytest.fixture(scope="module")
def outcomes(cli_workdir) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Run every case once; each gets its own (not yet existing) output folder."""
    outs = {name: cli_workdir / f"out-{name}" for name in CASES}
    jobs = {
        name: [a.replace("{out}", str(outs[name])) for a in case.args]
        for name, case in CASES.items()
    }
    results = run_many(jobs, cli_workdir)
    return {name: (results[name], outs[name]) for name in CASES}


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


def test_the_good_command_works(cli_workdir) -> None:
    """The control: the same zoo and options certify fine, so the refusals above are specific."""
    out = cli_workdir / "out-good"
    args = [a.replace("{out}", str(out)) for a in certify_args()]
    result = run_cli(args, cli_workdir)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len(list(out.rglob("part-*.parquet"))) == 1


@pytest.mark.parametrize("name", ["checkpoint-keys"])
def test_forked_cases_match_python_m_rsbench(cli_workdir, outcomes, name: str) -> None:
    forked, _ = outcomes[name]
    out = cli_workdir / f"out-plain-{name}"
    plain = run_cli([a.replace("{out}", str(out)) for a in CASES[name].args], cli_workdir)
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
def future_format(cli_workdir) -> dict[str, tuple[subprocess.CompletedProcess, dict, dict]]:
    """A finished run whose run.json then claims results format 99, and three commands on it.

    Each command (``resume``, ``leaderboard``, ``rescore``) gets its own copy of the run; returns
    its outcome and snapshots of its folders before and after (the rescore output included).
    """
    made_in = cli_workdir / "future"
    made = run_many(
        {"make": [a.replace("{out}", str(made_in)) for a in certify_args()]}, cli_workdir
    )["make"]
    assert made.returncode == 0, made.stderr
    (run_dir,) = made_in.iterdir()
    _set_format_version(run_dir, 99)
    commands, folders = {}, {}
    for name in ("resume", "leaderboard", "rescore"):
        out = cli_workdir / f"future-{name}"
        shutil.copytree(made_in, out)
        rescored = cli_workdir / f"future-{name}-rescored"
        folders[name] = (out, rescored)
        commands[name] = {
            "resume": [a.replace("{out}", str(out)) for a in certify_args()],
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
    before = {name: _snapshot(cli_workdir, folders[name]) for name in commands}
    results = run_many(commands, cli_workdir)
    return {
        name: (results[name], before[name], _snapshot(cli_workdir, folders[name]))
        for name in commands
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

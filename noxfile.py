"""nox sessions: ``nox -s tests`` (default suite), ``nox -s slow``, ``nox -s subprocess``,
``nox -s lint`` (ruff + mypy)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """The default test suite (no slow, GPU or network tests)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def slow(session: nox.Session) -> None:
    """Slow tests: retraining the embedded experts, long certifications."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-m", "slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint (complexity rules included) and format check; mypy on the package (pyproject)."""
    session.install("-e", ".[test]")  # mypy reads torch's, numpy's, ... own type hints
    session.run("ruff", "check", "rsbench", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "rsbench", "tests", "bench", "noxfile.py")
    session.run("mypy")


@nox.session(name="subprocess")
def subprocess_tests(session: nox.Session) -> None:
    """Only the tests that start Python processes (the CLI, torchrun, signals): ``-m subprocess``."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-q",
        "-m",
        "subprocess and not slow and not gpu and not network",
        *session.posargs,
    )

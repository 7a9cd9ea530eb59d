"""nox sessions: ``nox -s tests`` (default suite), ``nox -s slow``, ``nox -s lint``."""

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
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "rsbench", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "rsbench", "tests", "bench", "noxfile.py")

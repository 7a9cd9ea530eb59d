"""Under CI (``CI=true``, as ``.ci/run`` sets it), a skipped test fails unless its reason is allowed.

A fresh clone must run the whole default suite: the data the tests need lives in ``tests/data``,
so a skip means a test did not run where it should. The only skips allowed are those whose reason
matches :data:`ALLOWED_SKIPS` (each says why it is acceptable). GPU and network tests carry the
``gpu`` / ``network`` markers and are deselected by default, so they never get here.
"""

from __future__ import annotations

import os
import re

import pytest

#: (pattern of the skip reason, why such a skip is acceptable)
ALLOWED_SKIPS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Hardware this machine may lack: a test that probes for a CUDA device at run time.
    (re.compile(r"\b(CUDA|GPU)\b"), "needs a CUDA device"),
    # The internet: unreachable from some CI machines (network tests are marked and deselected).
    (re.compile(r"\b(network|internet)\b", re.IGNORECASE), "needs the internet"),
    # A Debian system package (the 60,000 real Fashion-MNIST training images): .ci/run installs it
    # where it can (root with apt-get); elsewhere these few data tests cannot run.
    (re.compile(r"dataset-fashion-mnist"), "needs Debian's dataset-fashion-mnist package"),
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

"""The CLI shell: instant --help/--version (no torch import), one-line errors, every command loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rsbench import __version__
from rsbench.cli.main import _COMMANDS, _TRAIN_COMMANDS, main_group

pytestmark = pytest.mark.subprocess  # every test runs `python -m rsbench`

LIGHT = "import sys, rsbench.cli.main; print(sorted(m for m in ('torch', 'pandas', 'pyarrow', 'matplotlib') if m in sys.modules))"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rsbench", *args], capture_output=True, text=True)


def test_help_and_version_import_no_heavy_module() -> None:
    # Importing the CLI module (what --help and --version need) loads neither torch nor pandas.
    loaded = subprocess.run(
        [sys.executable, "-c", LIGHT], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
    helped = _run("--help")
    assert helped.returncode == 0 and "certify" in helped.stdout and "Examples" in helped.stdout
    version = _run("--version")
    assert version.returncode == 0 and __version__ in version.stdout


def test_usage_errors_are_one_line() -> None:
    for args in (["no-such-command"], ["certify", "--n0", "abc"]):
        result = _run(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_every_command_loads_and_has_help(name: str) -> None:
    import click

    command = main_group.get_command(click.Context(main_group), name)
    assert isinstance(command, click.Command)
    assert command.help or command.short_help


@pytest.mark.parametrize("name", sorted(_TRAIN_COMMANDS))
def test_every_train_command_loads(name: str) -> None:
    import click

    from rsbench.cli.main import train

    command = train.get_command(click.Context(train), name)
    assert isinstance(command, click.Command) and command.help

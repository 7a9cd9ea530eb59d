"""The options and helpers every ``rsbench zoo`` subcommand shares (:mod:`rsbench.cli.zoo`,
:mod:`rsbench.cli.zoo_add`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from rsbench.cli import options

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

zoo_option = options.zoo_option(
    help="Extra zoo file (repeatable); also $RSBENCH_ZOO (os.pathsep-separated)."
)
device_option = options.device_option(
    help="Device for the forward pass: cpu, cuda, cuda:N or auto."
)
cache_option = click.option(
    "--cache-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Weights cache (default $RSBENCH_CACHE, else the user cache dir).",
)


def load_group_zoo(ctx: click.Context, zoo_paths: tuple[str, ...]):
    """The zoo of the group's ``--zoo`` files and the command's own."""
    from rsbench.zoo.registry import load_zoo

    group_files = tuple((ctx.obj or {}).get("zoo_paths", ()))
    return load_zoo(extra_paths=group_files + tuple(zoo_paths))


def make_console():
    """A rich console; wide enough for whole tables when writing to a pipe or file."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # pipes and files: wide enough for the whole table
        console = Console(width=160)
    return console


@contextmanager
def interrupt_says(what_is_true: Callable[[], str]) -> Iterator[None]:
    """On Ctrl-C (exit 130) or SIGTERM (exit 143) inside the block, print one line saying what is
    true for this command (``what_is_true()``), instead of the run commands' "results written so
    far are kept and rerunning resumes"."""
    try:
        yield
    except KeyboardInterrupt as exc:
        from rsbench.cli.main import Terminated

        terminated = isinstance(exc, Terminated)
        word = "terminated (SIGTERM)" if terminated else "interrupted"
        click.echo(f"{word}; {what_is_true()}", err=True)
        sys.exit(143 if terminated else 130)

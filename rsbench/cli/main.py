"""The ``rsbench`` command line: a thin shell over the library.

Sub-commands live in :mod:`rsbench.cli` and are imported only when invoked, so that
``rsbench --help`` and ``rsbench --version`` never import torch. Every user mistake raised as
:class:`rsbench.errors.RSBenchError` is printed as one ``error: ...`` line (no traceback) with a
non-zero exit status.

A group called with no sub-command (``rsbench``, ``rsbench zoo``, ``rsbench train``) prints its
help, as ``--help`` does, with status 0.

Exit status: 0 on success; 1 when a command ran but found failures (:class:`CheckFailed`, or a
command's own ``ctx.exit(N)``); 2 for a user mistake or usage error; 130 after Ctrl-C, which prints
that the results written so far are kept and that rerunning resumes; 143 after SIGTERM, handled
the same way (a scheduler's preemption, torchrun stopping its workers). Click runs with
``standalone_mode=False`` (so that errors are printed here, as one line), which returns a command's
exit code instead of exiting: :func:`main` exits with it.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
from collections.abc import Iterator

import click

from rsbench import __version__

# name -> ("module:attribute", one-line help shown by --help without importing the module)
_COMMANDS: dict[str, tuple[str, str]] = {
    "certify": (
        "rsbench.cli.certify:certify",
        "Certify zoo models (no ID: the embedded default run).",
    ),
    "sweep": (
        "rsbench.cli.sweep:sweep",
        "Run a grid of certifications from a sweep YAML file.",
    ),
    "leaderboard": (
        "rsbench.cli.report:leaderboard",
        "Tabulate certified accuracy from results.",
    ),
    "plot": ("rsbench.cli.report:plot", "Plot certified accuracy against radius."),
    "import-logs": (
        "rsbench.cli.results:import_logs",
        "Import Cohen-format TSV certification logs.",
    ),
    "rescore": (
        "rsbench.cli.results:rescore",
        "Recompute certificates from stored counts (new alpha).",
    ),
    "compare": (
        "rsbench.cli.compare:compare",
        "Head to head: experts, envelope, oracle, dual, cascade on common images.",
    ),
    "zoo": ("rsbench.cli.zoo:zoo", "List, inspect, check, hash and add zoo models."),
    "train": (
        "rsbench.cli.main:train",
        "Train experts, denoisers, routers, and co-train (fine-tune) experts.",
    ),
}

_TRAIN_COMMANDS: dict[str, tuple[str, str]] = {
    "expert": (
        "rsbench.cli.train_expert:expert",
        "Train an expert with Gaussian noise augmentation.",
    ),
    "denoiser": (
        "rsbench.cli.train_denoiser:denoiser",
        "Train a denoiser; with a classifier it forms a denoised expert.",
    ),
    "router": (
        "rsbench.cli.train_router:router",
        "Train a smoothed router over zoo experts (dual RS).",
    ),
    "finetune": (
        "rsbench.cli.finetune:finetune",
        "Co-train: fine-tune experts on router-assigned noise.",
    ),
}


class LazyGroup(click.Group):
    """A Click group whose sub-commands are imported on first use."""

    def __init__(self, *args, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            target, _ = self.lazy_commands[cmd_name]
            module_name, attribute = target.split(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy_commands[name][1]) for name in sorted(self.lazy_commands)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy_commands=_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  rsbench certify                      # embedded Fashion-MNIST default run, offline, CPU
  rsbench certify cohen-cifar10-resnet110-s0.25 --protocol cohen --data-root ~/data
  rsbench zoo list --dataset cifar10
  rsbench leaderboard results/reference --protocol all --format markdown
""",
)
@click.version_option(__version__, "-V", "--version", prog_name="rsbench")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main_group(verbose: int) -> None:
    """rsbench: certify randomized-smoothing models and dual RS ensembles, and rank them."""
    import logging

    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)


@click.group(
    cls=LazyGroup,
    lazy_commands=_TRAIN_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def train() -> None:
    """Train experts and routers; co-train experts with a router."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, torchrun stopping its workers), handled like Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the CLI runs, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``), so that a
    run records ``interrupted`` and says how to resume, as after Ctrl-C. Main thread only."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user mistakes into one ``error:`` line."""
    from rsbench.errors import RSBenchError

    try:
        with _sigterm_as_interrupt():
            status = main_group.main(args=argv, prog_name="rsbench", standalone_mode=False)
    except RSBenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        # Click turns Ctrl-C (KeyboardInterrupt) into Abort, chained from it
        if isinstance(exc.__cause__, KeyboardInterrupt):
            _interrupted(exc.__cause__)
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        # a bare group (`rsbench`, `rsbench zoo`, `rsbench train`): its help, as --help prints it
        click.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "rsbench"
        message = " ".join(exc.format_message().split())
        click.echo(f"error: {message} (see '{command} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    # without standalone mode, Click returns the code of ctx.exit(N) instead of exiting
    if isinstance(status, int) and not isinstance(status, bool) and status != 0:
        sys.exit(status)


def _interrupted(exc: KeyboardInterrupt) -> None:
    terminated = isinstance(exc, Terminated)
    click.echo(
        f"{'terminated (SIGTERM)' if terminated else 'interrupted'}; results written so far are "
        "kept and rerunning the command resumes where it stopped",
        err=True,
    )
    sys.exit(143 if terminated else 130)

"""``rsbench leaderboard`` and ``rsbench plot``: tables and curves from certification results.

Thin shell over :mod:`rsbench.report`; results are read with :func:`rsbench.results.read_results`
and reported (paper) numbers come from the zoo's optional ``reported`` field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

log = logging.getLogger(__name__)

_FORMATS = ("rich", "markdown", "csv", "json", "html")
_SUFFIX_FORMATS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "csv",
    ".json": "json",
    ".html": "html",
    ".htm": "html",
    ".txt": "rich",
}
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _paths(results: Sequence[str]) -> list[Path]:
    from rsbench.results.storage import default_results_dir

    return [Path(p) for p in results] or [default_results_dir()]


def _read(results: Sequence[str]) -> Any:
    """Rows of every run under ``results`` (default :func:`rsbench.results.default_results_dir`)."""
    from rsbench.errors import ResultsError
    from rsbench.results.storage import read_results

    paths = _paths(results)
    for path in paths:
        if not path.exists():
            raise ResultsError(
                f"results path {path} does not exist; pass run directories or parents of runs "
                "(default: $RSBENCH_RESULTS, else ./rsbench-results, where certify writes)"
            )
    df = read_results(paths)
    if len(df) == 0:
        raise ResultsError(
            f"no result rows under {', '.join(str(p) for p in paths)}; "
            "run `rsbench certify` or `rsbench import-logs` first"
        )
    return df


def _reported(zoo_paths: Sequence[str], model_ids: Iterable[str]) -> dict[str, Any]:
    """``model_id -> reported`` for the ids the zoo knows and that carry reported numbers.

    A broken packaged zoo only loses the reported column (with a warning); a broken zoo the user
    passed with --zoo is an error.
    """
    from rsbench.errors import ZooError

    try:
        from rsbench.zoo.registry import load_zoo
    except ImportError as exc:  # pragma: no cover - the zoo module ships with the package
        log.warning("no zoo module (%s); reported numbers are not shown", exc)
        return {}
    try:
        zoo = load_zoo(extra_paths=tuple(zoo_paths))
    except ZooError as exc:
        if zoo_paths:
            raise
        log.warning("the zoo could not be read (%s); reported numbers are not shown", exc)
        return {}
    out: dict[str, Any] = {}
    for model_id in sorted(set(model_ids)):
        if model_id in zoo:
            reported = getattr(zoo.get(model_id), "reported", None)
            if reported:
                out[model_id] = reported
    return out


def _radii(text: str | None) -> Any:
    from rsbench.report.metrics import parse_radii

    return None if text is None else parse_radii(text)


@click.command(
    "leaderboard",
    context_settings=_CONTEXT,
    epilog="""\b
Examples:
  rsbench leaderboard                                   # every run under ./rsbench-results
  rsbench leaderboard results/reference --protocol all --format markdown
  rsbench leaderboard my-runs/ --protocol cohen --radii 0,0.25,0.5,0.75,1 -o board.html
  rsbench leaderboard runs/a runs/b --format json -o board.json --zoo my_zoo.yaml

\b
One row per (model, sigma, protocol): certified accuracy at each radius (abstentions count as
wrong; r=0 is clean accuracy), abstain rate, ACR (secondary), seconds per image, n, alpha and the
number of images. Rows of different protocols (or datasets) are never ranked together: select
one with --protocol / --dataset, or pass --protocol all for one separately ranked table per
section. With two or more experts, an envelope row (best expert per radius) and an oracle row
(best expert per image in hindsight; an upper bound, not a certificate) follow, both over the
images every ranked expert evaluated. A run that has not finished is marked (e.g. "32/160
incomplete" under images) and not ranked unless --include-incomplete. A configuration known to
be unsound (the cascade under --alpha-split reference) is marked "unsound, not ranked" and listed
below the ranked rows; a ranked row over other images than the rest reads "N (other images)",
with a note under the table. Where the zoo records the paper's numbers (`reported:`), cells read
"measured (reported)". -o never writes inside a run folder, onto an input, or to a file named
run.json or part-*.parquet.
Radius grid defaults: CIFAR-10 and Fashion-MNIST 0..2 by 0.25, ImageNet 0..3 by 0.5.
""",
)
@click.argument("results", nargs=-1, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_FORMATS),
    default=None,
    help="Output format (default: from the -o extension, else rich).",
)
@click.option(
    "--radii", default=None, help="Radius grid: 0,0.25,0.5 or start:stop:step (0:2:0.25)."
)
@click.option(
    "--protocol",
    default=None,
    help="Protocol to rank (cohen, dualrs, imported, ...), or 'all' for one table per section.",
)
@click.option("--dataset", default=None, help="Dataset to rank (cifar10, imagenet, fashion-mnist).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write to FILE."
)
@click.option(
    "--zoo",
    "zoo_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Extra zoo file(s) with reported numbers (repeatable).",
)
@click.option(
    "--no-reported", is_flag=True, help="Do not read the zoo; show measured numbers only."
)
@click.option("--no-bounds", is_flag=True, help="Leave out the envelope and oracle rows.")
@click.option(
    "--include-incomplete",
    is_flag=True,
    help="Rank runs that have not finished as they stand (default: shown marked, unranked).",
)
@click.option("--title", default="rsbench leaderboard", show_default=True, help="HTML page title.")
def leaderboard(
    results: tuple[str, ...],
    fmt: str | None,
    radii: str | None,
    protocol: str | None,
    dataset: str | None,
    output: str | None,
    zoo_paths: tuple[str, ...],
    no_reported: bool,
    no_bounds: bool,
    include_incomplete: bool,
    title: str,
) -> None:
    """Tabulate certified accuracy from RESULTS (run directories or their parents; default
    $RSBENCH_RESULTS, else ./rsbench-results, where certify writes)."""
    from rsbench import report

    if fmt is None:
        fmt = _SUFFIX_FORMATS.get(Path(output).suffix.lower(), "rich") if output else "rich"
    from rsbench.results.storage import run_states

    if output:
        _check_output(output, results)

    df = _read(results)
    states = run_states(_paths(results))
    reported = {} if no_reported else _reported(zoo_paths, df["model_id"].dropna().astype(str))
    every = protocol == "all"
    boards = report.build_leaderboards(
        df,
        radii=_radii(radii),
        reported=reported,
        protocol=None if every else protocol,
        dataset=dataset,
        all_sections=every,
        bounds=not no_bounds,
        states=states,
        include_incomplete=include_incomplete,
    )
    if fmt == "rich":
        _print_rich(boards, output)
        return
    if fmt == "markdown":
        text = report.to_markdown(boards)
    elif fmt == "csv":
        text = report.to_csv(boards)
    elif fmt == "json":
        text = report.to_json(boards)
    else:
        text = report.to_html(boards, df=df, title=title, states=states)
    if output:
        _write(Path(output), text)
    else:
        click.echo(text, nl=False)


def _check_output(output: str, results: Sequence[str], option: str = "-o/--output") -> None:
    """Refuse, before anything is read, an output that is an input, lies inside a run folder or
    takes a name rsbench uses for results (:func:`rsbench.output.check_output_path`)."""
    from rsbench.output import check_output_path

    check_output_path(output, _paths(results), option=option)


def _write(path: Path, text: str) -> None:
    from rsbench.output import write_text

    write_text(path, text)
    click.echo(f"wrote {path}", err=True)


def _print_rich(boards: Sequence[Any], output: str | None) -> None:
    from rich.console import Console

    from rsbench import report

    if output is None:
        console = report.table_console()
        for board in boards:
            console.print(report.to_rich(board, width=console.width))
        return
    from rsbench.output import atomic_output

    path = Path(output)
    with atomic_output(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        console = Console(file=handle, width=240, no_color=True, force_terminal=False)
        for board in boards:
            console.print(report.to_rich(board))
    click.echo(f"wrote {path}", err=True)


@click.command(
    "plot",
    context_settings=_CONTEXT,
    epilog="""\b
Examples:
  rsbench plot -o curves.png                            # every run under ./rsbench-results
  rsbench plot results/reference --dataset cifar10 -o cifar10.svg
  rsbench plot runs/dual runs/experts --radii 0:1.5:0.25 -o dual.pdf

\b
Certified accuracy against L2 radius, one line per model; with two or more experts, their
envelope (black, dashed) and oracle (grey, dashed; an upper bound, not a certificate). Dual runs
add a panel of router choice frequencies and a scatter of router radius R_r against expert
radius R_e. One figure row per (protocol, dataset); curves of different protocols never share
axes. The format follows the extension: .png, .svg or .pdf.
""",
)
@click.argument("results", nargs=-1, type=click.Path())
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Figure file (.png, .svg, .pdf).",
)
@click.option("--radii", default=None, help="Radius grid (sets the x range): 0,0.5,1 or 0:2:0.25.")
@click.option("--protocol", default=None, help="Plot only this protocol.")
@click.option("--dataset", default=None, help="Plot only this dataset.")
@click.option("--no-bounds", is_flag=True, help="Leave out the envelope and oracle curves.")
def plot(
    results: tuple[str, ...],
    output: str,
    radii: str | None,
    protocol: str | None,
    dataset: str | None,
    no_bounds: bool,
) -> None:
    """Plot certified accuracy against radius from RESULTS (default ./rsbench-results) into FILE."""
    from rsbench import report
    from rsbench.errors import ResultsError

    if Path(output).suffix.lower().lstrip(".") not in report.FIGURE_FORMATS:
        raise ResultsError(
            f"cannot write a plot to {output!r}: the extension must be one of .png, .svg, .pdf"
        )
    _check_output(output, results)
    df = _read(results)
    for column, value in (("protocol", protocol), ("dataset", dataset)):
        if value is not None and value != "all":
            present = sorted(df[column].dropna().astype(str).unique())
            df = df[df[column].astype(str) == value]
            if df.empty:
                raise ResultsError(
                    f"no results with {column} {value!r}; present: {', '.join(present) or 'none'}"
                )
    from rsbench.results.storage import run_states

    fig = report.plot_curves(
        df, radii=_radii(radii), bounds=not no_bounds, states=run_states(_paths(results))
    )
    path = report.save_figure(fig, output)
    click.echo(f"wrote {path}", err=True)

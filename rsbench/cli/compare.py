"""``rsbench compare``: head to head of experts and their compositions on common images.

Thin shell over :mod:`rsbench.report.headtohead`.
"""

from __future__ import annotations

from pathlib import Path

import click

_EXAMPLES = """\b
Examples:
  rsbench compare results/embedded
  rsbench compare results/embedded -o results/embedded-head-to-head.md --plot results/embedded-head-to-head.png
  rsbench compare results/ --protocol cohen --dataset cifar10 --radii 0:1.5:0.25

Every model (expert, dual, cascade) is scored on the images that all of them certified, under one
(n0, n, alpha); the envelope and oracle of the experts are computed on the same images. Costs:
mean and worst-case forward samples per image (worst: observed, and the bound in parentheses),
and mean wall time per image from the stored rows.
"""


@click.command(epilog=_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results", nargs=-1, type=click.Path())
@click.option("--protocol", default=None, help="Only rows of this protocol.")
@click.option("--dataset", default=None, help="Only rows of this dataset.")
@click.option(
    "--radii", default=None, help="Radius grid: 0,0.5,1 or 0:2:0.25 (default: dataset's)."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the table here (.md markdown, .csv CSV) instead of printing it.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the curves and cost panel (.png, .svg or .pdf).",
)
def compare(results, protocol, dataset, radii, output, plot_path) -> None:
    """Head to head: experts, their envelope and oracle, dual and cascade, on common images."""
    from rsbench.cli.report import _check_output, _read
    from rsbench.errors import ConfigError, RSBenchError
    from rsbench.report import headtohead, metrics
    from rsbench.report.plots import FIGURE_FORMATS

    # every output is checked before anything is read or written
    if output is not None:
        if Path(output).suffix.lower() not in (".md", ".csv"):
            raise ConfigError(f"cannot write the table to {output!r}; use a .md or .csv file")
        _check_output(output, results)
    if plot_path is not None:
        if Path(plot_path).suffix.lower().lstrip(".") not in FIGURE_FORMATS:
            raise ConfigError(
                f"cannot write the plot to {plot_path!r}; use a .png, .svg or .pdf file"
            )
        _check_output(plot_path, results, option="--plot")
        if output is not None and Path(plot_path).absolute() == Path(output).absolute():
            raise ConfigError(f"-o and --plot name the same file {output!r}; give two files")
    df = _read(results)
    if protocol is not None:
        df = df[df["protocol"].astype(str) == protocol]
    if dataset is not None:
        df = df[df["dataset"].astype(str) == dataset]
    grid = metrics.parse_radii(radii) if radii else None
    table = headtohead.compare(df, grid, headtohead.router_forwards_of(results))
    text = headtohead.to_markdown(table)
    if output is not None:
        suffix = Path(output).suffix.lower()
        from rsbench.output import write_text  # all or nothing; one error line if unwritable

        write_text(output, table.to_csv(index=False) if suffix == ".csv" else text)
    else:
        click.echo(text, nl=False)
    if plot_path is not None:
        from rsbench.report.plots import save_figure

        try:
            save_figure(headtohead.plot(table), plot_path)
        except RSBenchError as exc:
            if output is None:
                raise
            # the table is already written: say so, not that nothing was
            raise type(exc)(f"{exc}; the table was written to {output}") from None

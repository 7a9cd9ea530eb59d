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
    from rsbench.cli.report import _read
    from rsbench.errors import ConfigError
    from rsbench.report import headtohead, metrics

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
        if suffix not in (".md", ".csv"):
            raise ConfigError(f"cannot write the table to {output!r}; use a .md or .csv file")
        from rsbench.output import write_text  # all or nothing; one error line if unwritable

        write_text(output, table.to_csv(index=False) if suffix == ".csv" else text)
    else:
        click.echo(text, nl=False)
    if plot_path is not None:
        from rsbench.report.plots import save_figure

        save_figure(headtohead.plot(table), plot_path)

"""``rsbench sweep``: a grid of certifications (ids x sigmas x protocols) from a sweep YAML file.

The file, its options and its jobs are the library's (:mod:`rsbench.run.sweep`); every job runs
as ``rsbench certify`` runs it (:func:`rsbench.cli.certify.run_and_show`), skipping runs already
complete.
"""

from __future__ import annotations

from typing import Any

import click

_SWEEP_EXAMPLES = """\b
Examples:
  rsbench sweep sweeps/embedded.yaml
  rsbench sweep sweeps/cohen-cifar10.yaml --data-root ~/data --device cuda
  rsbench sweep sweeps/cohen-cifar10.yaml --shard 0/4 --dry-run

\b
A sweep file:
  ids: [cohen-cifar10-resnet110-s0.25, cohen-cifar10-resnet110-s0.50]
  sigmas: [0.25, 0.5]      # optional; default: each expert's train_sigma (dual ids: the entry's)
  protocols: [cohen]       # optional; default: cpu
  options: {batch: 1000, out: my-results, seed: 0, precision: bf16, channels_last: true}
                           # any certify option, spelled with _
Every id x sigma x protocol is one run; finished runs are skipped. Options are typed strictly
(true/false is not a number, 1.5 is not an index, the dataset and split must exist): a wrong one
is one error line naming the file and the option.
"""


@click.command(epilog=_SWEEP_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sweep_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Override options.out."
)
@click.option("--device", default=None, help="Override options.device.")
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Override options.data_root.",
)
@click.option("--shard", default=None, help="Override options.shard (I/N).")
@click.option(
    "--zoo", "zoo_paths", multiple=True, type=click.Path(dir_okay=False), help="Extra zoo file."
)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan and a cost estimate; certify nothing."
)
@click.option("--no-leaderboard", is_flag=True, help="Do not print the table at the end.")
def sweep(
    sweep_file: str,
    out_dir: str | None,
    device: str | None,
    data_root: str | None,
    shard: str | None,
    zoo_paths: tuple[str, ...],
    dry_run: bool,
    no_leaderboard: bool,
) -> None:
    """Run a grid of certifications (ids x sigmas x protocols) from a sweep YAML file."""
    from rsbench.cli.certify import run_and_show
    from rsbench.run.sweep import load_sweep, sweep_jobs, sweep_options
    from rsbench.zoo.registry import load_zoo

    spec = load_sweep(sweep_file)
    overrides: dict[str, Any] = {
        "out": out_dir,
        "device": device,
        "data_root": data_root,
        "shard": shard,
        "zoo": zoo_paths,
    }
    options = sweep_options(spec, overrides)
    options.update(dry_run=dry_run, no_leaderboard=no_leaderboard)
    run_and_show(sweep_jobs(spec, load_zoo(options["zoo"])), options, skip_complete=True)

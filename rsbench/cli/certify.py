"""``rsbench certify``: run certifications and show where they stand (``rsbench sweep``,
:mod:`rsbench.cli.sweep`, shows its grids through :func:`run_and_show`).

Options and printing only: the jobs, their defaults, planning and running are the library's
(:mod:`rsbench.run.jobs`, which :func:`rsbench.certify` calls too); the dry-run plan and the final
leaderboard are drawn by :mod:`rsbench.cli.certify_view`, the progress bars by
:mod:`rsbench.cli.progress`. Heavy modules (torch, pandas, pyarrow) are imported inside the commands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from rsbench.cli.options import (
    data_root_option,
    device_option,
    download_option,
    out_option,
    seed_option,
    threads_option,
    zoo_option,
)
from rsbench.errors import PRECISIONS
from rsbench.run.jobs import DEFAULTS, Reporter

if TYPE_CHECKING:
    from rich.console import Console

    from rsbench.run.jobs import Job
    from rsbench.run.runner import Prepared, RunResult

_EXAMPLES = """\b
Examples:
  rsbench certify                                   # embedded Fashion-MNIST default run (CPU, offline)
  rsbench certify embedded-fmnist-s0.50 --limit 100 --n 1000
  rsbench certify cohen-cifar10-resnet110-s0.25 --protocol cohen --data-root ~/data --device cuda
  rsbench certify cohen-cifar10-resnet110-s0.50 --protocol cohen --shard 3/8   # one job of an array
  torchrun --nproc-per-node 4 -m rsbench certify cohen-imagenet-resnet50-s0.50 --protocol cohen
  python -m torch.distributed.run --nproc-per-node 2 -m rsbench certify embedded-fmnist-s0.50 --num-samples 500
  rsbench certify embedded-fmnist-dual --dry-run    # plan and cost estimate, certifies nothing
  rsbench certify embedded-fmnist-s0.50 --protocol cpu-seq      # sequential, n_max = 100,000
  rsbench certify embedded-fmnist-s0.50 --estimation sequential --n-max 20000 --limit 50
  rsbench certify cohen-cifar10-resnet110-s0.25 --device cuda --precision bf16 --channels-last --compile

Running the same command again resumes the run where it stopped; a changed configuration starts a
new run directory under --out.
"""


F = TypeVar("F", bound=Callable[..., Any])


def _common_options(func: F) -> F:
    """``func`` with certify's options (also read by :func:`default_options`)."""
    options = [
        click.option(
            "--protocol",
            default=None,
            help="A registered protocol (rsbench/protocols.yaml: cohen, dualrs, cpu, ...) "
            "[default: cpu].",
        ),
        click.option("--dataset", default=None, help="Dataset (default: the model's)."),
        click.option(
            "--split", default=None, help="Split (default: the protocol's for the dataset)."
        ),
        click.option("--n0", type=int, default=None, help="Selection samples (default: protocol)."),
        click.option(
            "--n",
            "--num-samples",
            "n",
            type=int,
            default=None,
            help="Estimation samples per stage (default: protocol). Under torchrun write "
            "--num-samples: torchrun's own parser mistakes --n for its options.",
        ),
        click.option(
            "--estimation",
            type=click.Choice(["fixed", "sequential"]),
            default=DEFAULTS["estimation"],
            help="fixed: Cohen's n estimation samples per image; sequential: draw them in "
            "pre-declared stages and stop per image as soon as more cannot change the answer on "
            "the radius grid (a union bound over the stages keeps the guarantee at alpha; radii "
            "and ACR come out smaller, so the leaderboard never ranks the two together) "
            "[default: the protocol's, fixed but for cohen-seq and cpu-seq].",
        ),
        click.option(
            "--n-max",
            "n_max",
            type=int,
            default=DEFAULTS["n_max"],
            help="Sequential estimation: most estimation samples per image and stage "
            "(default: the protocol's n).",
        ),
        click.option(
            "--radii",
            default=DEFAULTS["radii"],
            help="Sequential estimation: the radius grid it stops on, 0,0.25,0.5 or 0:2:0.25 "
            "(default: the dataset's leaderboard grid; part of the run identity).",
        ),
        click.option(
            "--futility-alpha",
            "futility_alpha",
            type=float,
            default=DEFAULTS["futility_alpha"],
            help="Sequential estimation: level of the upper bound that stops an image once the "
            "next grid radius is out of reach (default 0.1). Larger stops sooner and may lose a "
            "grid radius; it never affects the guarantee. 0.2 was picked on the ImageNet imports "
            "(results/sequential-offline.md); a value other than 0.1 records the protocol as custom.",
        ),
        click.option(
            "--alpha",
            type=float,
            default=None,
            help="Total failure probability (default: protocol).",
        ),
        click.option(
            "--stride", type=int, default=None, help="Every STRIDE-th image (default: protocol)."
        ),
        click.option(
            "--limit", type=int, default=None, help="First LIMIT images of the selection."
        ),
        click.option(
            "--indices",
            default=None,
            help="Explicit dataset indices instead of the protocol's subset: 0,5,10-12 or "
            "start:stop:step (e.g. 0:2000:8); parts combine with commas.",
        ),
        click.option(
            "--batch",
            "batch",
            type=int,
            default=DEFAULTS["batch"],
            help="Noisy samples per forward pass; halved automatically after a CUDA out-of-memory "
            "error (does not change results) [default: 1000].",
        ),
        seed_option(
            "Run seed, an integer 0 <= SEED < 2**63 (part of the run identity).",
            default=DEFAULTS["seed"],
        ),
        device_option(
            default=DEFAULTS["device"],
            help="auto (the GPU when there is one; under torchrun the local rank's), cpu, cuda, "
            "cuda:N.",
        ),
        click.option(
            "--precision",
            type=click.Choice(list(PRECISIONS)),
            default=DEFAULTS["precision"],
            show_default=True,
            help="Forward precision: fp32 (exact), tf32 (TF32 matmuls on CUDA), bf16/fp16 "
            "(autocast). Lower precision can change votes; it is part of the run identity.",
        ),
        click.option(
            "--channels-last",
            is_flag=True,
            help="Run the networks in channels-last memory format (faster convolutions on GPUs "
            "with bf16/fp16; part of the run identity, as float rounding can differ).",
        ),
        click.option(
            "--noise-dtype",
            type=click.Choice(["auto", "float64", "float32"]),
            default=DEFAULTS["noise_dtype"],
            show_default=True,
            help="Dtype of the Gaussian draws: auto = float64 (cast to float32) for inputs of 2048 "
            "values or more, float64 = always, float32 = never (faster; float32 truncates the "
            "Gaussian's tails, docs/reliability.md). Part of the run identity.",
        ),
        click.option(
            "--compile",
            "compile",
            is_flag=True,
            help="torch.compile the networks (static shapes; partial batches are padded, so a run "
            "compiles each network a few times; part of the run identity).",
        ),
        out_option(
            default=DEFAULTS["out"],
            name="out",
            help="Parent directory of run directories [default: $RSBENCH_RESULTS, else "
            "./rsbench-results].",
        ),
        click.option(
            "--shard",
            default=DEFAULTS["shard"],
            show_default=True,
            help="I/N: certify only images at positions p with p % N == I (job arrays).",
        ),
        zoo_option(name="zoo"),
        data_root_option("Dataset root folder (also RSBENCH_DATA)."),
        click.option("--require-pinned", is_flag=True, help="Refuse zoo entries without sha256."),
        click.option(
            "--allow-unpinned",
            is_flag=True,
            help="Let Hugging Face sources name a branch or tag instead of a commit.",
        ),
        download_option("Let torchvision download CIFAR-10/MNIST data if missing."),
        click.option(
            "--chunk-size",
            type=int,
            default=DEFAULTS["chunk_size"],
            show_default=True,
            help="Rows per Parquet part (a kill loses at most one chunk).",
        ),
        click.option(
            "--alpha-router-fraction",
            type=float,
            default=None,
            help="Dual ids: share of alpha for the router (default: the entry's, else 0.5).",
        ),
        click.option(
            "--sigma-router", type=float, default=None, help="Dual ids: router noise level."
        ),
        click.option(
            "--p0",
            type=float,
            default=None,
            help="Cascade ids: confidence threshold in [0.5, 1) (default: the entry's, else 0.5).",
        ),
        click.option(
            "--alpha-split",
            type=click.Choice(["union", "reference"]),
            default=None,
            help="Cascade ids: union (alpha / (2K - 1) per bound, sound for every input; default) or "
            "reference (the authors' alpha / (k + 1), not covered by a union bound; labelled in the "
            "results).",
        ),
        threads_option(
            "CPU threads for torch (default: 1 on CPU for the small fmnist_cnn/mlp networks, "
            "e.g. the embedded default run, whose noise thread uses a second core; torch's "
            "default otherwise). See results/perf.md.",
        ),
        click.option(
            "--dry-run", is_flag=True, help="Print the plan and a cost estimate; certify nothing."
        ),
        click.option("--no-leaderboard", is_flag=True, help="Do not print the table at the end."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command(epilog=_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("ids", nargs=-1)
@click.option(
    "--sigma",
    type=float,
    default=None,
    help="Expert ids: certification sigma, 0 < SIGMA <= 100 (default: train_sigma).",
)
@_common_options
def certify(ids: tuple[str, ...], sigma: float | None, **options: Any) -> None:
    """Certify zoo models (experts, dual ensembles or cascades) and store per-sample certificates.

    With no ID, runs the embedded default: the embedded Fashion-MNIST dual model and its three
    experts on the embedded test subset under the cpu protocol, then prints the leaderboard.
    """
    from rsbench.run import jobs

    run_and_show(*jobs.default_jobs(ids, sigma, options))


def run_and_show(
    job_list: Sequence[Job], options: dict[str, Any], skip_complete: bool = False
) -> list[RunResult]:
    """Plan ``job_list`` (``--dry-run``: print the plan and stop), run it with progress bars, then
    print each run's state and the leaderboard of the runs made (unless ``--no-leaderboard``)."""
    from rich.console import Console

    from rsbench.cli.certify_view import print_leaderboard, print_plan
    from rsbench.run import distributed, jobs

    console = Console(stderr=True)
    with jobs.unpinned_revisions(options):
        plan = jobs.plan(job_list, options)
        if options["dry_run"]:
            print_plan(plan.runs, plan.shard, console)
            return []
        quiet = distributed.dist_info().rank != 0
        reporter = _BarReporter(console) if not quiet else None
        results = jobs.run_plan(plan, reporter=reporter, skip_complete=skip_complete)
    if not quiet:
        for result in results:
            state = "complete" if result.complete else "partial (other shards pending)"
            console.print(
                f"{result.run_dir}: {result.written} written, {result.skipped} already there, {state} "
                f"({result.seconds:.1f} s)"
            )
        if not options["no_leaderboard"] and results:
            print_leaderboard([r.run_dir for r in results], plan.zoo)
    return results


class _BarReporter(Reporter):
    """The CLI's :class:`rsbench.run.jobs.Reporter`: a certification bar and a download bar per run."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def skipped(self, run_dir: Any) -> None:
        self.console.print(f"[green]complete[/green] {run_dir} (skipped)")

    @contextlib.contextmanager
    def run(self, prepared: Prepared) -> Iterator[tuple[Any, Any]]:
        from rsbench.cli.progress import certify_progress, download_progress

        label = prepared.config.model_id
        if prepared.config.kind == "expert":
            label += f" σ={prepared.config.sigma:g}"
        elif prepared.config.kind == "cascade":
            label += f" p0={prepared.config.p0:g}"
        with certify_progress(label, self.console) as progress:
            downloads, close_downloads = download_progress()
            try:
                yield progress, downloads
            finally:
                close_downloads()

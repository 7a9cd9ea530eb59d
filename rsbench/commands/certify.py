"""``rsbench certify``: run certifications and show where they stand (``rsbench sweep``,
:mod:`rsbench.commands.sweep`, runs its grids through :func:`run_jobs`).

Options and calls only: planning, running and storing are :mod:`rsbench.runner` and
:mod:`rsbench.results`; the dry-run plan and the final leaderboard are drawn by
:mod:`rsbench.commands.certify_view`, the progress bars by :mod:`rsbench.commands.progress`.
Heavy modules (torch, pandas, pyarrow) are imported inside the commands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from rsbench.commands.options import (
    data_root_option,
    device_option,
    download_option,
    out_option,
    seed_option,
    threads_option,
    zoo_option,
)
from rsbench.errors import PRECISIONS, check_count

if TYPE_CHECKING:
    from rich.console import Console

    from rsbench.runner import Prepared, RunResult
    from rsbench.zoo import Zoo

_EXAMPLES = """\b
Examples:
  rsbench certify                                   # embedded Fashion-MNIST default run (CPU, offline)
  rsbench certify embedded-fmnist-s0.50 --limit 100 --n 1000
  rsbench certify cohen-cifar10-resnet110-s0.25 --protocol cohen --data-root ~/data --device cuda
  rsbench certify cohen-cifar10-resnet110-s0.50 --protocol cohen --shard 3/8   # one job of an array
  torchrun --nproc-per-node 4 -m rsbench certify cohen-imagenet-resnet50-s0.50 --protocol cohen
  python -m torch.distributed.run --nproc-per-node 2 -m rsbench certify embedded-fmnist-s0.50 --num-samples 500
  rsbench certify embedded-fmnist-dual --dry-run    # plan and cost estimate, certifies nothing
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
            "batch_size",
            type=int,
            default=None,
            help="Noisy samples per forward pass; halved automatically after a CUDA out-of-memory "
            "error (does not change results) [default: 1000].",
        ),
        seed_option("Run seed, an integer 0 <= SEED < 2**63 (part of the run identity)."),
        device_option(
            default="auto",
            help="auto (the GPU when there is one; under torchrun the local rank's), cpu, cuda, "
            "cuda:N.",
        ),
        click.option(
            "--precision",
            type=click.Choice(list(PRECISIONS)),
            default="fp32",
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
            default="auto",
            show_default=True,
            help="Dtype of the Gaussian draws: auto = float64 (cast to float32) for inputs of 2048 "
            "values or more, float64 = always, float32 = never (faster; float32 truncates the "
            "Gaussian's tails, docs/reliability.md). Part of the run identity.",
        ),
        click.option(
            "--compile",
            "compile_models",
            is_flag=True,
            help="torch.compile the networks (static shapes; partial batches are padded, so a run "
            "compiles each network a few times; part of the run identity).",
        ),
        out_option(
            default=None,
            help="Parent directory of run directories [default: $RSBENCH_RESULTS, else "
            "./rsbench-results].",
        ),
        click.option(
            "--shard",
            default="0/1",
            show_default=True,
            help="I/N: certify only images at positions p with p % N == I (job arrays).",
        ),
        zoo_option(),
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
            default=64,
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
    certify_ids(ids, sigma, options)


def default_options() -> dict[str, Any]:
    """The options ``rsbench certify`` runs with when none is given (read from its Click
    parameters, so the Python API and the CLI share one set of defaults)."""
    out: dict[str, Any] = {}
    for param in certify.params:
        if param.name in ("ids", "sigma"):
            continue
        default = param.default
        if getattr(param, "is_flag", False):
            default = bool(default) if isinstance(default, bool) else False
        elif getattr(param, "multiple", False):
            default = tuple(default) if isinstance(default, (list, tuple)) else ()
        elif not isinstance(default, (str, int, float, type(None))):
            default = None
        out[str(param.name)] = default
    return out


def certify_ids(ids: Sequence[str], sigma: float | None, options: dict[str, Any]) -> list[Any]:
    """What ``rsbench certify IDS`` runs (``rsbench.certify`` calls it too): the embedded default
    when ``ids`` is empty, else each id under ``options``; returns the RunResults."""
    from rsbench import runconfig

    options = dict(options)
    embedded = not ids
    ids = tuple(ids) or runconfig.EMBEDDED_DEFAULT_IDS
    if embedded and options["protocol"] is None:
        options["protocol"] = runconfig.EMBEDDED_DEFAULT_PROTOCOL
    if embedded and options["threads"] is None:
        options["threads"] = runconfig.EMBEDDED_DEFAULT_THREADS
    if options["batch_size"] is None:
        options["batch_size"] = (
            runconfig.EMBEDDED_DEFAULT_BATCH if embedded else runconfig.DEFAULT_BATCH
        )
    jobs = [(model_id, sigma, options["protocol"] or "cpu") for model_id in ids]
    return run_jobs(jobs, options, leaderboard=not options["no_leaderboard"])


def run_jobs(
    jobs: Sequence[tuple[str, float | None, str]],
    options: dict[str, Any],
    leaderboard: bool,
    skip_complete: bool = False,
) -> list[Any]:
    """Resolve, plan (dry run) or run each (id, sigma, protocol) job; return the RunResults."""
    from rsbench.weights import allowing_unpinned_revisions

    with allowing_unpinned_revisions(bool(options.get("allow_unpinned", False))):
        return _run_jobs(jobs, options, leaderboard, skip_complete)


def _run_jobs(
    jobs: Sequence[tuple[str, float | None, str]],
    options: dict[str, Any],
    leaderboard: bool,
    skip_complete: bool,
) -> list[Any]:
    from rich.console import Console

    from rsbench import distributed, runconfig, runner, store
    from rsbench.commands.certify_view import print_leaderboard, print_plan
    from rsbench.results import default_results_dir

    options = {**options, "out_dir": options.get("out_dir") or default_results_dir()}
    from rsbench.data import parse_indices
    from rsbench.zoo import load_zoo

    console = Console(stderr=True)
    info = distributed.dist_info()
    if options.get("threads"):
        import torch

        torch.set_num_threads(check_count(options["threads"], "threads"))
    zoo = load_zoo(options["zoo_paths"])
    shard = distributed.parse_shard(options["shard"])
    indices = parse_indices(options["indices"]) if options["indices"] is not None else None
    prepared_runs = []
    for model_id, sigma, protocol in jobs:
        entry = zoo.get(model_id)
        config = runconfig.resolve_config(
            entry,
            zoo=zoo,
            protocol=protocol,
            dataset=options["dataset"],
            split=options["split"],
            n0=options["n0"],
            n=options["n"],
            alpha=options["alpha"],
            sigma=sigma,
            stride=options["stride"],
            limit=options["limit"],
            indices=indices,
            batch_size=options["batch_size"],
            seed=options["seed"],
            precision=options["precision"],
            device=options["device"],
            chunk_size=options["chunk_size"],
            data_root=options["data_root"],
            alpha_router_fraction=options["alpha_router_fraction"],
            sigma_router=options["sigma_router"],
            p0=options.get("p0"),
            alpha_split=options.get("alpha_split"),
            channels_last=bool(options.get("channels_last", False)),
            compile=bool(options.get("compile_models", False)),
            threads=options.get("threads"),
            noise_dtype=options.get("noise_dtype") or "auto",
        )
        prepared_runs.append(
            runner.prepare(config, zoo, options["out_dir"], download=options.get("download", False))
        )

    if options["dry_run"]:
        print_plan(prepared_runs, shard, console)
        return []

    results = []
    quiet = info.rank != 0 or bool(options.get("quiet", False))
    # one process group for all runs of this invocation (under torchrun)
    with distributed.distributed(runconfig.resolve_device(options["device"])):
        for prepared in prepared_runs:
            if skip_complete and store.run_status(prepared.run_dir) == "complete":
                if not quiet:
                    console.print(f"[green]complete[/green] {prepared.run_dir} (skipped)")
                continue
            results.append(_run_one(prepared, zoo, shard, options, console, quiet))
    if not quiet:
        for result in results:
            state = "complete" if result.complete else "partial (other shards pending)"
            console.print(
                f"{result.run_dir}: {result.written} written, {result.skipped} already there, {state} "
                f"({result.seconds:.1f} s)"
            )
        if leaderboard and results:
            print_leaderboard([r.run_dir for r in results], zoo)
    return results


def _run_one(
    prepared: Prepared,
    zoo: Zoo,
    shard: tuple[int, int],
    options: dict[str, Any],
    console: Console,
    quiet: bool,
) -> RunResult:
    from rsbench import runner
    from rsbench.commands.progress import certify_progress, download_progress

    label = prepared.config.model_id
    if prepared.config.kind == "expert":
        label += f" σ={prepared.config.sigma:g}"
    elif prepared.config.kind == "cascade":
        label += f" p0={prepared.config.p0:g}"
    with certify_progress(label, console, quiet) as progress:
        downloads, close_downloads = (None, lambda: None) if quiet else download_progress()
        try:
            return runner.run_certification(
                prepared.config,
                zoo,
                options["out_dir"],
                shard=shard,
                progress=progress,
                require_pinned=options["require_pinned"],
                weights_progress=downloads,
                prepared=prepared,
            )
        finally:
            close_downloads()

"""``rsbench certify`` and ``rsbench sweep``: run certifications and show where they stand.

Rendering only: planning, running and storing are :mod:`rsbench.runner` and :mod:`rsbench.results`.
Heavy modules (torch, pandas, pyarrow) are imported inside the commands.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from rsbench.errors import PRECISIONS, ConfigError, check_count

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


def _common_options(func):
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
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Run seed, an integer 0 <= SEED < 2**63 (part of the run identity).",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
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
        click.option(
            "--out",
            "out_dir",
            type=click.Path(file_okay=False),
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
        click.option(
            "--zoo",
            "zoo_paths",
            multiple=True,
            type=click.Path(dir_okay=False),
            help="Extra zoo file (repeatable; also RSBENCH_ZOO).",
        ),
        click.option(
            "--data-root",
            type=click.Path(file_okay=False),
            default=None,
            help="Dataset root folder (also RSBENCH_DATA).",
        ),
        click.option("--require-pinned", is_flag=True, help="Refuse zoo entries without sha256."),
        click.option(
            "--allow-unpinned",
            is_flag=True,
            help="Let Hugging Face sources name a branch or tag instead of a commit.",
        ),
        click.option(
            "--download",
            is_flag=True,
            help="Let torchvision download CIFAR-10/MNIST data if missing.",
        ),
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
        click.option(
            "--threads",
            type=int,
            default=None,
            help="CPU threads for torch (default: 1 on CPU for the small fmnist_cnn/mlp networks, "
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
    from rsbench import runner

    options = dict(options)
    embedded = not ids
    ids = tuple(ids) or runner.EMBEDDED_DEFAULT_IDS
    if embedded and options["protocol"] is None:
        options["protocol"] = runner.EMBEDDED_DEFAULT_PROTOCOL
    if embedded and options["threads"] is None:
        options["threads"] = runner.EMBEDDED_DEFAULT_THREADS
    if options["batch_size"] is None:
        options["batch_size"] = runner.EMBEDDED_DEFAULT_BATCH if embedded else runner.DEFAULT_BATCH
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

    from rsbench import runner
    from rsbench.results import default_results_dir

    options = {**options, "out_dir": options.get("out_dir") or default_results_dir()}
    from rsbench.data import parse_indices
    from rsbench.zoo import load_zoo

    console = Console(stderr=True)
    info = runner.dist_info()
    if options.get("threads"):
        import torch

        torch.set_num_threads(check_count(options["threads"], "threads"))
    zoo = load_zoo(options["zoo_paths"])
    shard = runner.parse_shard(options["shard"])
    indices = parse_indices(options["indices"]) if options["indices"] is not None else None
    prepared_runs = []
    for model_id, sigma, protocol in jobs:
        entry = zoo.get(model_id)
        config = runner.resolve_config(
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
        _print_plan(prepared_runs, shard, zoo, console)
        return []

    results = []
    quiet = info.rank != 0 or bool(options.get("quiet", False))
    # one process group for all runs of this invocation (under torchrun)
    with runner.distributed(runner.resolve_device(options["device"])):
        for prepared in prepared_runs:
            if skip_complete and runner.run_status(prepared.run_dir) == "complete":
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
            _print_leaderboard([r.run_dir for r in results], zoo)
    return results


def _run_one(prepared, zoo, shard, options, console, quiet: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from rsbench import runner
    from rsbench.commands.progress import download_progress

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cert. acc {task.fields[acc]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    label = prepared.config.model_id
    if prepared.config.kind == "expert":
        label += f" σ={prepared.config.sigma:g}"
    elif prepared.config.kind == "cascade":
        label += f" p0={prepared.config.p0:g}"
    with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
        task = bar.add_task(label, total=None, acc="-")
        state = {"started": False}

        def progress(event: runner.ProgressEvent) -> None:
            if event.message:
                bar.console.print(f"[yellow]{event.message}[/yellow]")
            if not state["started"]:
                # samples found already written do not count toward the speed / ETA
                bar.update(task, total=event.total, completed=0)
                bar.reset(task, total=event.total - event.done, completed=0)
                state["offset"] = event.done
                state["started"] = True
            acc = "-" if not event.done else f"{100 * event.accuracy:.1f}%"
            bar.update(
                task,
                completed=event.done - state["offset"],
                acc=acc,
                description=f"{label} ({event.done}/{event.total})",
            )

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


#: Plan columns, and the steps that make the plan fit a narrow terminal (leave out, or fold to n).
_PLAN_COLUMNS = (
    "model",
    "kind",
    "protocol",
    "data",
    "images",
    "n0",
    "n",
    "alpha",
    "sigma",
    "done",
    "samples/s",
    "estimate",
)
_PLAN_STEPS = (
    "kind",
    "alpha",
    "n0",
    ("model", 20),
    "samples/s",
    "data",
    "done",
    "protocol",
    ("sigma", 6),
    ("model", 12),
)
_PLAN_NUMERIC = {"images", "n0", "n", "alpha", "done", "samples/s"}


def _print_plan(prepared_runs, shard, zoo, console) -> None:
    from rich.table import Table

    from rsbench import runner
    from rsbench.report import fit_columns
    from rsbench.results import list_parts, read_results

    rows = []
    total = 0.0
    for prepared in prepared_runs:
        config = prepared.config
        mine = [p for k, p in enumerate(prepared.positions) if k % shard[1] == shard[0]]
        done = len(read_results(prepared.run_dir)) if list_parts(prepared.run_dir) else 0
        rate, note = _throughput(prepared)
        todo = max(0, len(mine) - done) if shard[1] == 1 else len(mine)
        seconds = runner.estimate_seconds(config, todo, rate) if rate else float("nan")
        if math.isfinite(seconds):
            total += seconds
        sigma = (
            f"{config.sigma:g}"
            if config.kind == "expert"
            else "/".join(f"{s:g}" for s in config.sigmas)
        )
        rows.append(
            [
                config.model_id,
                config.kind,
                config.protocol,
                f"{config.dataset}/{config.split}",
                str(len(mine)),
                str(config.n0),
                str(config.n),
                f"{config.alpha:g}",
                sigma,
                str(done),
                f"{rate:,.0f}" if rate else note,
                _duration(seconds),
            ]
        )
    headers = list(_PLAN_COLUMNS)
    keep, widths = fit_columns(
        headers, rows, console.width, _PLAN_STEPS, lambda h: h in _PLAN_NUMERIC, ("model",)
    )
    table = Table(title=f"certification plan (shard {shard[0]}/{shard[1]})")
    for i in keep:
        table.add_column(
            headers[i],
            justify="right" if headers[i] in _PLAN_NUMERIC else "left",
            overflow="fold",
            min_width=widths.get(i),
            max_width=widths.get(i),
        )
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    left_out = [h for i, h in enumerate(headers) if i not in keep]
    if left_out:
        console.print(
            f"not shown at this terminal width ({console.width} columns): {', '.join(left_out)}; "
            "widen the terminal (or set COLUMNS) to see them"
        )
    for prepared in prepared_runs:  # soft wrap: a long path stays one line to copy
        console.print(f"  {prepared.config.model_id} -> {prepared.run_dir}", soft_wrap=True)
    console.print(
        f"estimated total: {_duration(total)} on {prepared_runs[0].config.device if prepared_runs else '-'} "
        "(forward samples per image x images / measured samples per second; dual counts router + "
        "expert, cascade every stage: an upper bound, as a cascade often stops early)"
    )


def _throughput(prepared) -> tuple[float | None, str]:
    """Samples per second from a short warm-up forward, when the weights are available locally."""
    from rsbench import runner, weights

    entry = prepared.entry
    first = prepared.zoo.get(entry.experts[0]) if entry.kind in ("dual", "cascade") else entry
    if (
        first.source is not None
        and first.source.type not in ("file", "package")
        and not weights.is_cached(first)
    ):
        return None, "weights not cached"
    with runner.torch_threads(prepared.config.threads):
        certifier, _ = runner.build_certifier(prepared, prepared.config.device)
        image = prepared.dataset.images([prepared.positions[0]])[0]
        return runner.measure_throughput(certifier, image, seconds=0.5), ""


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _print_leaderboard(run_dirs: Sequence[Path], zoo) -> None:

    from rsbench import report
    from rsbench.results import read_results, run_states

    df = read_results(list(run_dirs))
    reported = {e.id: dict(e.reported) for e in zoo if e.reported}
    boards = report.build_leaderboards(
        df, reported=reported, all_sections=True, states=run_states(list(run_dirs))
    )
    console = report.table_console()
    for board in boards:
        console.print(report.to_rich(board, width=console.width))


# ------------------------------------------------------------------------------------ sweep

_SWEEP_KEYS = {"ids", "sigmas", "protocols", "options"}
_SWEEP_OPTIONS = {
    "dataset",
    "split",
    "n0",
    "n",
    "alpha",
    "stride",
    "limit",
    "indices",
    "batch",
    "seed",
    "device",
    "precision",
    "channels_last",
    "compile",
    "noise_dtype",
    "out",
    "shard",
    "zoo",
    "data_root",
    "require_pinned",
    "allow_unpinned",
    "chunk_size",
    "download",
    "threads",
    "alpha_router_fraction",
    "sigma_router",
    "p0",
    "alpha_split",
}


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a sweep file: ``ids`` (list), optional ``sigmas``, ``protocols``, ``options``.

    Unknown keys are a :class:`ConfigError` naming the key and the allowed ones.
    """
    import yaml

    from rsbench import safeyaml

    path = Path(path)
    try:
        text = safeyaml.read_text(path, "sweep file", ConfigError)
        data = safeyaml.load(
            text, getattr(yaml, "CSafeLoader", yaml.SafeLoader), str(path), ConfigError
        )
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep file {path} is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path} must be a mapping with keys {sorted(_SWEEP_KEYS)}")
    unknown = set(data) - _SWEEP_KEYS
    if unknown:
        raise ConfigError(
            f"sweep file {path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_SWEEP_KEYS)}"
        )
    ids = data.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ConfigError(f"sweep file {path}: 'ids' must be a non-empty list of zoo ids")
    sigmas = data.get("sigmas") or [None]
    if not isinstance(sigmas, list) or not all(
        s is None or isinstance(s, (int, float)) for s in sigmas
    ):
        raise ConfigError(f"sweep file {path}: 'sigmas' must be a list of numbers")
    protocols = data.get("protocols") or ["cpu"]
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise ConfigError(f"sweep file {path}: 'protocols' must be a list of protocol names")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"sweep file {path}: 'options' must be a mapping")
    unknown = set(options) - _SWEEP_OPTIONS
    if unknown:
        raise ConfigError(
            f"sweep file {path}: unknown option(s) {sorted(unknown)}; allowed: {sorted(_SWEEP_OPTIONS)}"
        )
    return {"ids": ids, "sigmas": sigmas, "protocols": protocols, "options": options}


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
Every id x sigma x protocol is one run; finished runs are skipped.
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
    out_dir,
    device,
    data_root,
    shard,
    zoo_paths,
    dry_run: bool,
    no_leaderboard: bool,
) -> None:
    """Run a grid of certifications (ids x sigmas x protocols) from a sweep YAML file."""
    from rsbench.runner import DEFAULT_BATCH

    spec = load_sweep(sweep_file)
    opts = dict(spec["options"])
    options: dict[str, Any] = {
        "dataset": opts.get("dataset"),
        "split": opts.get("split"),
        "n0": opts.get("n0"),
        "n": opts.get("n"),
        "alpha": opts.get("alpha"),
        "stride": opts.get("stride"),
        "limit": opts.get("limit"),
        "indices": _indices_text(opts.get("indices")),
        "batch_size": opts.get("batch", DEFAULT_BATCH),
        "seed": opts.get("seed", 0),
        "device": device or opts.get("device", "auto"),
        "precision": opts.get("precision", "fp32"),
        "channels_last": bool(opts.get("channels_last", False)),
        "compile_models": bool(opts.get("compile", False)),
        "noise_dtype": opts.get("noise_dtype", "auto"),
        "out_dir": out_dir or opts.get("out"),
        "shard": shard or opts.get("shard", "0/1"),
        "zoo_paths": tuple(_as_list(opts.get("zoo"))) + tuple(zoo_paths),
        "data_root": data_root or opts.get("data_root"),
        "require_pinned": bool(opts.get("require_pinned", False)),
        "allow_unpinned": bool(opts.get("allow_unpinned", False)),
        "download": bool(opts.get("download", False)),
        "threads": opts.get("threads"),
        "chunk_size": opts.get("chunk_size", 64),
        "alpha_router_fraction": opts.get("alpha_router_fraction"),
        "sigma_router": opts.get("sigma_router"),
        "p0": opts.get("p0"),
        "alpha_split": opts.get("alpha_split"),
        "dry_run": dry_run,
    }
    from rsbench.zoo import load_zoo

    zoo = load_zoo(options["zoo_paths"])
    jobs = []
    for model_id in spec["ids"]:
        entry = zoo.get(model_id)
        if entry.kind == "expert":
            sigmas = spec["sigmas"]
        elif entry.kind == "denoised":  # the sweep's sigmas, else every sigma it serves
            sigmas = [s for s in spec["sigmas"] if s is not None] or list(entry.sigmas)
        else:
            sigmas = [None]
        for sigma in sigmas:
            for protocol in spec["protocols"]:
                job = (model_id, sigma, protocol)
                if job not in jobs:
                    jobs.append(job)
    run_jobs(jobs, options, leaderboard=not no_leaderboard, skip_complete=True)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _indices_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ",".join(str(int(v)) for v in value)
    return str(value)

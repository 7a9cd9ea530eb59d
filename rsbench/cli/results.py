"""``rsbench import-logs`` and ``rsbench rescore``: results that need no network to be run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from rsbench.errors import ConfigError

_IMPORT_EXAMPLES = """\b
Examples:
  rsbench import-logs noise_0.25/test_sigma_0.25.tsv --dataset cifar10 --split test \\
      --model-id cohen-cifar10-resnet110-s0.25 --sigma 0.25 --protocol cohen-full --out results/imported
  rsbench import-logs logs/*/test_sigma_*.tsv --model-id 'cohen-cifar10-resnet110-s{sigma}' \\
      --dataset cifar10 --split test      # sigma from each file name; protocol from the rows

The log has no vote counts: nA is reconstructed as the smallest count whose radius prints as the
logged one, and the radius is recomputed from it (--radius-from count; see docs/results-schema.md,
"Imported logs"). A log whose n0, n, alpha, split or indices deviate from --protocol is refused.
"""


def _sigma_from_name(path: Path) -> str | None:
    match = re.search(r"sigma_(\d+(?:\.\d+)?)", str(path))
    return match[1] if match else None


@click.command(epilog=_IMPORT_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("logs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--dataset", required=True, help="Dataset the log certified (cifar10, imagenet, ...)."
)
@click.option("--split", required=True, help="Split (test, val).")
@click.option(
    "--model-id", required=True, help="Model id; '{sigma}' is replaced by the log's sigma."
)
@click.option(
    "--sigma", type=float, default=None, help="Noise level (default: from 'sigma_X' in the path)."
)
@click.option("--n0", type=int, default=100, show_default=True, help="Selection samples used.")
@click.option(
    "--n", "n", type=int, default=100_000, show_default=True, help="Estimation samples used."
)
@click.option(
    "--alpha", type=float, default=0.001, show_default=True, help="Failure probability used."
)
@click.option(
    "--protocol",
    default=None,
    help="Protocol the log follows (validated: n0, n, alpha, split and every index must fit it). "
    "Default: the registered protocol the rows follow, else custom.",
)
@click.option(
    "--radius-from",
    type=click.Choice(["count", "printed"]),
    default="count",
    show_default=True,
    help="count: radius recomputed from the smallest count consistent with the printed radius "
    "(conservative; rescoring at the same alpha reproduces it); printed: the log's rounded radius "
    "(the authors' own numbers).",
)
@click.option(
    "--digits", type=int, default=3, show_default=True, help="Significant digits of printed radii."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Parent directory for the imported run directories [default: imported/ in "
    "$RSBENCH_RESULTS, else in ./rsbench-results].",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing imported run of the same name."
)
def import_logs(
    logs,
    dataset,
    split,
    model_id,
    sigma,
    n0,
    n,
    alpha,
    protocol,
    radius_from,
    digits,
    out_dir,
    overwrite,
) -> None:
    """Import Cohen-format TSV certification logs into rsbench results (one run per log)."""
    from rich.console import Console

    from rsbench.output import check_output_path
    from rsbench.results.importers import import_cohen_log
    from rsbench.results.provenance import digest, recorded_path, utc_now
    from rsbench.results.storage import check_run_id, write_run
    from rsbench.weights.cache import sha256_file

    console = Console(stderr=True)
    if out_dir is None:
        from rsbench.results.storage import default_results_dir

        out_dir = default_results_dir() / "imported"
    check_output_path(out_dir, logs, option="--out", folder=True)
    from rsbench.run.sweep import check_dataset_split

    check_dataset_split(dataset, split, "import-logs --")
    if not model_id.strip():
        raise ConfigError("import-logs: --model-id is empty; give the model's id, e.g. my-model")
    for log_path in map(Path, logs):
        sigma_text = f"{sigma:g}" if sigma is not None else _sigma_from_name(log_path)
        if sigma_text is None:
            raise ConfigError(f"{log_path}: no 'sigma_X' in the path; pass --sigma")
        this_id = model_id.replace("{sigma}", sigma_text)
        params = {
            "dataset": dataset,
            "split": split,
            "model_id": this_id,
            "sigma": float(sigma_text),
            "n0": n0,
            "n": n,
            "alpha": alpha,
            "protocol": protocol,
        }
        file_hash = sha256_file(log_path)
        frame = import_cohen_log(
            log_path, significant_digits=digits, radius_from=radius_from, **params
        )
        params["protocol"] = str(frame["protocol"].iloc[0])  # validated, or the one the rows follow
        params["radius_from"] = radius_from
        run_id = check_run_id(
            f"imported-{this_id}-{params['protocol']}-"
            f"{digest({**params, 'sha256': file_hash})[:12]}"
        )
        frame["run_id"] = run_id
        info = {
            "status": "complete",
            "config": params,
            "source": {"path": recorded_path(log_path), "sha256": file_hash, "format": "cohen-tsv"},
            "import": frame.attrs.get("import", {}),
            "created": utc_now(),
        }
        run_dir = write_run(Path(out_dir) / run_id, frame, info, overwrite=overwrite)
        summary = info["import"]
        console.print(
            f"{log_path} -> {run_dir}: {len(frame)} rows, clean accuracy "
            f"{100 * float(frame['correct'].mean()):.1f}%, {summary.get('rows_with_ambiguous_count', 0)} rows "
            f"with several consistent counts (smallest used, up to {summary.get('max_consistent_counts', 1)})"
        )


_RESCORE_EXAMPLES = """\b
Examples:
  rsbench rescore results/ --alpha 0.01 --out results-rescored/
  rsbench rescore results/embedded-fmnist-dual-cpu-... --alpha 0.001 --alpha-router-fraction 0.2 --out rescored/

Recomputes pA_lower, radius, prediction/abstain and correctness from the stored counts (no network
runs). Dual rows: both stages under the new split; a router abstention abstains. Cascade rows:
every stage decision and cap again, with the row's own p0 and alpha split; a stage that would now
be needed but never ran makes the row abstain.
"""


@click.command(epilog=_RESCORE_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results_path", type=click.Path(exists=True, file_okay=False))
@click.option("--alpha", type=float, required=True, help="New total failure probability.")
@click.option(
    "--alpha-router-fraction",
    type=float,
    default=None,
    help="Dual rows: share of alpha for the router (default: each row's stored split).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Parent directory for the rescored run directories.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing rescored runs of the same name.")
def rescore(results_path, alpha, alpha_router_fraction, out_dir, overwrite) -> None:
    """Re-score stored certificates under another alpha (and alpha split) without running any network."""
    from rich.console import Console

    from rsbench.errors import ResultsError
    from rsbench.results.rescore import rescore_run
    from rsbench.results.storage import find_run_dirs, read_results

    console = Console(stderr=True)
    run_dirs = find_run_dirs(results_path)
    if not run_dirs:
        raise ResultsError(f"no run directories under {results_path}")
    out = Path(out_dir).resolve()
    source = Path(results_path).resolve()
    if out == source or any(out == d.resolve() or d.resolve() in out.parents for d in run_dirs):
        raise ResultsError(
            f"--out {out_dir} is {results_path} itself or lies inside one of its runs; rescored "
            f"runs go next to the originals, never into them: use e.g. --out "
            f"{shlex.quote(source.name + '-rescored')}"
        )
    from rsbench.output import check_output_path

    check_output_path(out_dir, [results_path], option="--out", folder=True)
    todo = [d for d in run_dirs if out not in d.resolve().parents]  # never rescore our own output
    if not todo:
        raise ResultsError(
            f"every run under {results_path} lies inside --out {out_dir}; nothing to rescore: "
            "choose an --out outside it"
        )
    for run_dir in todo:
        new_dir = rescore_run(run_dir, out_dir, alpha, alpha_router_fraction, overwrite=overwrite)
        before, after = read_results(run_dir), read_results(new_dir)
        console.print(
            f"{run_dir.name} -> {new_dir}: clean accuracy {100 * float(before['correct'].mean()):.1f}% -> "
            f"{100 * float(after['correct'].mean()):.1f}%, mean radius {float(before['radius'].mean()):.3f} -> "
            f"{float(after['radius'].mean()):.3f}"
        )

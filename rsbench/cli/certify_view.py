"""What ``rsbench certify`` and ``rsbench sweep`` print besides the progress bars: the dry-run
plan (with a measured cost estimate) and the leaderboard of the runs just made.

Rendering only: the plan's numbers come from :mod:`rsbench.run.runner` (the prepared runs) and
:mod:`rsbench.run.certifiers` (throughput, samples per image); the tables from :mod:`rsbench.report`.
Heavy modules (torch, rich, pandas) are imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from rsbench.run.runner import Prepared
    from rsbench.zoo.registry import Zoo

#: Plan columns, and the steps that make the plan fit a narrow terminal (leave out, or fold to n).
PLAN_COLUMNS = (
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
PLAN_STEPS: tuple[str | tuple[str, int], ...] = (
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
PLAN_NUMERIC = {"images", "n0", "n", "alpha", "done", "samples/s"}


def print_plan(prepared_runs: Sequence[Prepared], shard: tuple[int, int], console: Console) -> None:
    """The dry-run table: per run its images, parameters, rows already written, measured samples
    per second and estimated time; then each run directory and the estimated total."""
    from rich.table import Table

    from rsbench.report.terminal import fit_columns
    from rsbench.results.storage import list_parts, read_results
    from rsbench.run import certifiers

    rows = []
    total = 0.0
    for prepared in prepared_runs:
        config = prepared.config
        mine = [p for k, p in enumerate(prepared.positions) if k % shard[1] == shard[0]]
        done = len(read_results(prepared.run_dir)) if list_parts(prepared.run_dir) else 0
        rate, note = throughput(prepared)
        todo = max(0, len(mine) - done) if shard[1] == 1 else len(mine)
        seconds = certifiers.estimate_seconds(config, todo, rate) if rate else float("nan")
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
                str(config.n) if config.estimation == "fixed" else f"≤{config.n} (seq)",
                f"{config.alpha:g}",
                sigma,
                str(done),
                f"{rate:,.0f}" if rate else note,
                duration(seconds),
            ]
        )
    headers = list(PLAN_COLUMNS)
    keep, widths = fit_columns(
        headers, rows, console.width, PLAN_STEPS, lambda h: h in PLAN_NUMERIC, ("model",)
    )
    table = Table(title=f"certification plan (shard {shard[0]}/{shard[1]})")
    for i in keep:
        table.add_column(
            headers[i],
            justify="right" if headers[i] in PLAN_NUMERIC else "left",
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
        f"estimated total: {duration(total)} on {prepared_runs[0].config.device if prepared_runs else '-'} "
        "(forward samples per image x images / measured samples per second; dual counts router + "
        "expert, cascade every stage: an upper bound, as a cascade often stops early)"
    )
    if any(p.config.estimation == "sequential" for p in prepared_runs):
        console.print(
            "sequential runs are estimated at n_max for every image (seq): an upper bound, as "
            "most images stop far earlier"
        )


def throughput(prepared: Prepared) -> tuple[float | None, str]:
    """Samples per second from a short warm-up forward, when the weights are available locally
    (else None and the reason, for the plan's samples/s cell)."""
    from rsbench.run import certifiers, distributed, runner
    from rsbench.weights import sources as weights

    entry = prepared.entry
    first = prepared.zoo.get(entry.experts[0]) if entry.kind in ("dual", "cascade") else entry
    if (
        first.source is not None
        and first.source.type not in ("file", "package")
        and not weights.is_cached(first)
    ):
        return None, "weights not cached"
    with distributed.torch_threads(prepared.config.threads):
        certifier, _ = runner.build_certifier(prepared, prepared.config.device)
        image = prepared.dataset.images([prepared.positions[0]])[0]
        return certifiers.measure_throughput(certifier, image, seconds=0.5), ""


def duration(seconds: float) -> str:
    """``12m05s`` / ``3h07m``; ``?`` when unknown (NaN)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def print_leaderboard(run_dirs: Sequence[Path], zoo: Zoo) -> None:
    """The leaderboards of ``run_dirs`` (every section, unfinished runs marked), as tables on
    stdout sized to the terminal."""
    from rsbench import report
    from rsbench.results.storage import read_results, run_states

    df = read_results(list(run_dirs))
    reported: dict[str, Any] = {e.id: dict(e.reported) for e in zoo if e.reported}
    boards = report.build_leaderboards(
        df, reported=reported, all_sections=True, states=run_states(list(run_dirs))
    )
    console = report.table_console()
    for board in boards:
        console.print(report.to_rich(board, width=console.width))

"""Offline evaluation of sequential certification on real vote distributions (issue 22).

For every expert run given (a fixed-n run directory, or a parent of several), each image's top-class
probability is estimated from its stored estimation counts, ``pA = nA / n``; sequential estimation
(:mod:`rsbench.engine.sequential`) is then simulated from that ``pA`` with a seeded NumPy generator
(Binomial increments per stage, ``n_max`` = the run's n, the dataset's leaderboard radius grid), and
compared with fixed-n CERTIFY: mean and worst-case estimation samples per image, and certified
accuracy at each grid radius (only images whose stored prediction is correct count, as in the
leaderboard). Writes a Markdown report; see its header for what is simulated and its limits.

Usage (about 3 minutes on 2 shared cores)::

    python bench/sequential.py --out results/sequential-offline.md     # the committed table
    python bench/sequential.py results/reference/runs --seeds 1          # some runs, quicker
    python bench/sequential.py --first 500 --ratio 2 --futility-alpha 0.1  # another plan
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from rsbench.engine import sequential, stats
from rsbench.report import metrics
from rsbench.results import read_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ("results/reference/runs", "results/embedded")
#: Cohen CIFAR-10 target of issue 22: mean samples <= 10 % of n, accuracy at most 1 point lower.
TARGET_FRACTION = 0.10
TARGET_POINTS = -1.0
#: Width of the band above the abstention threshold that the density model reflects below it.
MIRROR_WIDTH = 0.1
#: Alternative plans tried on the Cohen CIFAR-10 runs: each changes the named settings of the
#: module's default plan (first 500, ratio 1.25, "final-half", futility 0.1 "reachable").
SENSITIVITY: tuple[tuple[str, dict[str, object]], ...] = (
    ("first 1000, ratio 2", {"first": 1000, "ratio": 2.0}),
    ("first 1000, ratio 1.5", {"first": 1000, "ratio": 1.5}),
    ("first 250", {"first": 250}),
    ("ratio 1.5", {"ratio": 1.5}),
    ("equal alpha split", {"weighting": "equal"}),
    ("proportional alpha split", {"weighting": "proportional"}),
    ("futility at alpha_k", {"futility_alpha": None}),
    ("futility 0.05", {"futility_alpha": 0.05}),
    ("futility 0.2", {"futility_alpha": 0.2}),
    ("futility vs Phi(r/sigma)", {"futility": "threshold"}),
)
DEFAULT_PLAN: dict[str, object] = {
    "first": sequential.DEFAULT_FIRST,
    "ratio": sequential.DEFAULT_RATIO,
    "weighting": sequential.DEFAULT_WEIGHTING,
    "futility_alpha": sequential.DEFAULT_FUTILITY_ALPHA,
    "futility": "reachable",
}


@dataclass
class Outcome:
    """One run under one plan, averaged over seeds."""

    run_id: str
    model_id: str
    dataset: str
    sigma: float
    n: int
    n_max: int
    alpha: float
    images: int
    unknown: int  # rows without a count (abstained imports)
    stages: tuple[int, ...]
    mean_hi: float  # mean samples, unknown pA at the abstention threshold
    mean_mid: float  # mean samples, unknown pA from the continuous-density model
    mean_lo: float  # mean samples, unknown pA = 0
    worst: int  # most samples any image used, over seeds
    reasons: np.ndarray  # share of images per StopReason (index 1..4)
    spent: np.ndarray  # share of samples per StopReason (index 1..4)
    grid: np.ndarray
    stored: np.ndarray | None  # certified accuracy of the stored radii (None when n_max != n)
    fixed_sim: np.ndarray  # fixed-n CERTIFY at n_max on the simulated draws
    seq: np.ndarray  # sequential on the same draws
    oracle: float = float("nan")  # mean oracle samples (see oracle_samples), exact levels
    oracle_point: float = float("nan")  # the same, allowed to lose 1 point at every radius
    oracle_floor: float = float("nan")  # every image pays at least the plan's first block
    oracle_pa: float = float("nan")  # fixed n chosen per image knowing its pA (see _knowing_pa)
    levels: str = ""  # fixed-n images per grid level (0: none), as the oracle counts them
    note: str = ""
    early_alpha: float = float("nan")  # the plan's first stage alpha


def oracle_samples(grid_radius: np.ndarray, sigma: float, alpha: float) -> np.ndarray:
    """Per image, the fewest estimation samples with which ANY sound procedure at level ``alpha``
    can certify ``grid_radius`` (NaN: nothing to certify, 0 samples).

    ``m*(r) = ceil(log(alpha) / log(Phi(r / sigma)))``. Why no procedure does better: certifying
    ``r`` needs a lower bound ``L >= Phi(r / sigma)``. If some procedure, after ``m`` samples that
    all vote for ``cA`` (the most favourable data), could stop with ``L = l > alpha ** (1 / m)``,
    take ``p`` with ``alpha ** (1 / m) < p < l``: under ``p`` that path has probability
    ``p ** m > alpha`` and its bound exceeds ``p``, so the procedure is not sound at ``alpha``. Any
    other votes only lower what can be certified at ``m`` samples. The full ``alpha`` is used (no
    split over stopping times), so this is a lower bound for every stopping rule, ours included
    (which pays ``log(1/alpha_k) / log(1/alpha)`` more on early stages)."""
    r = np.asarray(grid_radius, dtype=np.float64)
    known = ~np.isnan(r)
    phi = norm.cdf(np.where(known, r, 0.0) / sigma)
    return np.where(known, np.ceil(np.log(alpha) / np.log(phi)), 0.0)


def _knowing_pa(
    correct: np.ndarray, radius: np.ndarray, p: np.ndarray, grid, sigma: float, alpha: float, n: int
) -> float:
    """Mean samples of fixed-n CERTIFY at the full alpha with n chosen per image knowing its
    ``pA`` (``p``): the smallest m on a fine geometric grid whose bound on ``floor(pA m)`` votes
    reaches the image's fixed-n grid level (images without one: 0). Not a bound on every
    procedure (a lucky run may do better), but what an image with that ``pA`` typically needs."""
    grid = np.asarray(grid, dtype=np.float64)
    levels = _levels(correct, radius, grid)
    need = norm.cdf(np.where(levels > 0, grid[np.maximum(levels - 1, 0)], 0.0) / sigma)
    sizes = np.unique(np.round(np.geomspace(10, n, 300)).astype(np.int64))
    cost = np.zeros(len(p))
    todo = np.flatnonzero(levels > 0)
    for m in sizes:
        if todo.size == 0:
            break
        ok = stats.clopper_pearson_lower(np.floor(p[todo] * m), m, alpha) >= need[todo]
        cost[todo[ok]] = m
        todo = todo[~ok]
    cost[todo] = n  # at n the stored count certifies the level
    return float(cost.mean())


def _levels(correct: np.ndarray, radius: np.ndarray, grid) -> np.ndarray:
    return np.searchsorted(np.asarray(grid, float), np.where(correct, radius, -1.0), side="right")


def _oracle_means(
    correct: np.ndarray, radius: np.ndarray, grid, sigma: float, alpha: float, first: int
) -> tuple[float, float, float]:
    """Mean oracle samples for the grid levels of ``radius`` (correct images only): exact; with
    the ``floor(N / 100)`` most expensive images free (losing at most 1 point at every radius:
    the cost depends only on the level, so dropping the highest levels is optimal); and with
    every image paying at least ``first`` (the plan's first block)."""
    grid = np.asarray(grid, dtype=np.float64)
    levels = _levels(correct, radius, grid)
    target = np.where(levels > 0, grid[np.maximum(levels - 1, 0)], np.nan)
    cost = oracle_samples(target, sigma, alpha)
    free = len(cost) // 100
    point = np.sort(cost)[: len(cost) - free].sum() / len(cost)
    return float(cost.mean()), float(point), float(np.maximum(cost, first).mean())


def _one(frame: pd.DataFrame, column: str) -> Any:
    values = frame[column].dropna().unique()
    if len(values) != 1:
        raise SystemExit(f"run {frame['run_id'].iloc[0]}: {column} is not one value ({values})")
    return values[0]


def _accuracy(correct: np.ndarray, lower: np.ndarray, radius: np.ndarray, grid) -> np.ndarray:
    rows = pd.DataFrame({"correct": correct & (lower >= 0.5), "abstained": lower < 0.5})
    rows["radius"] = np.where(lower >= 0.5, radius, 0.0)
    return metrics.certified_accuracy(rows, grid)


def evaluate(  # noqa: PLR0915 — one pass: estimate pA, simulate per seed, aggregate
    frame: pd.DataFrame,
    *,
    seeds: int,
    base_seed: int,
    first: int,
    ratio: float,
    weighting: str,
    futility_alpha: float | None,
    futility: str = "reachable",
    n_max: int | None = None,
) -> Outcome:
    """Simulate sequential certification for one expert run (see the module docstring)."""
    run_id = str(frame["run_id"].iloc[0])
    n, alpha = int(_one(frame, "n")), float(_one(frame, "alpha"))
    sigma, dataset = float(_one(frame, "sigma")), str(_one(frame, "dataset"))
    n_max = n if n_max is None else n_max
    grid = metrics.default_radii(dataset)
    plan = sequential.SequentialPlan.geometric(
        n_max=n_max,
        alpha=alpha,
        sigma=sigma,
        radii=[float(r) for r in grid],
        first=first,
        ratio=ratio,
        weighting=weighting,
        futility_alpha=futility_alpha,
        futility=futility,
    )
    correct = frame["correct"].fillna(False).to_numpy(dtype=bool)
    abstained = frame["abstained"].fillna(False).to_numpy(dtype=bool)
    nA = pd.to_numeric(frame["nA"], errors="coerce").to_numpy(dtype=np.float64)
    unknown = np.isnan(nA)
    if np.any(unknown & ~abstained):
        raise SystemExit(f"run {run_id}: rows without a count that did not abstain")
    # Abstained imports: any count whose bound is below 1/2 is consistent; the largest is the
    # most expensive pA to simulate (it sits just under the abstention threshold).
    lower_table = stats.clopper_pearson_lower(np.arange(n + 1), n, alpha)
    c_max = int(np.searchsorted(lower_table, 0.5, side="left")) - 1
    p = np.where(unknown, c_max / n, nA / n)
    threshold = c_max / n
    key = zlib.crc32(run_id.encode())
    means: dict[str, list[float]] = {"hi": [], "mid": [], "lo": []}
    worst, reasons, spent = 0, np.zeros(5), np.zeros(5)
    fixed_sim, seq, oracles = [], [], []
    for s in range(seeds):
        rng = np.random.default_rng([base_seed, key, s])
        counts = sequential.simulate_counts(plan, p, rng)
        result = sequential.certify_cumulative(plan, counts)
        lower_fixed = stats.clopper_pearson_lower(counts[:, -1], n_max, alpha)
        fixed_sim.append(
            _accuracy(correct, lower_fixed, sequential.fixed_from_counts(plan, counts), grid)
        )
        seq.append(_accuracy(correct, result.lower, result.radius, grid))
        fixed_radius = np.where(
            lower_fixed >= 0.5, sequential.fixed_from_counts(plan, counts), -1.0
        )
        oracles.append(_oracle_means(correct, fixed_radius, grid, sigma, alpha, first))
        samples = result.samples.astype(np.float64)
        means["hi"].append(samples.mean())
        worst = max(worst, int(result.samples.max()))
        reasons += np.bincount(result.reason, minlength=5) / len(p)
        spent += np.bincount(result.reason, weights=samples, minlength=5) / samples.sum()
        for name, unknown_p in (
            ("mid", _mirrored(p[~unknown], threshold, int(unknown.sum()), rng)),
            ("lo", np.zeros(int(unknown.sum()))),
        ):
            if unknown.any():  # the same images, other pA for the unknown ones
                samples[unknown] = sequential.simulate(plan, unknown_p, rng).samples
            means[name].append(samples.mean())
    stored = metrics.certified_accuracy(frame, grid) if n_max == n else None
    if n_max == n:  # the levels the run's own certificates reach
        stored_radius = np.where(abstained, -1.0, frame["radius"].to_numpy(dtype=np.float64))
        oracle = _oracle_means(correct, stored_radius, grid, sigma, alpha, first)
        histogram = np.bincount(_levels(correct, stored_radius, grid), minlength=len(grid) + 1)
        knowing = _knowing_pa(correct, stored_radius, p, grid, sigma, alpha, n_max)
    else:  # fixed-n CERTIFY at n_max on the simulated draws, mean over seeds
        oracle = tuple(float(v) for v in np.mean(oracles, axis=0))
        histogram = np.bincount(_levels(correct, fixed_radius, grid), minlength=len(grid) + 1)
        knowing = _knowing_pa(correct, fixed_radius, p, grid, sigma, alpha, n_max)
    return Outcome(
        run_id=run_id,
        model_id=str(_one(frame, "model_id")),
        dataset=dataset,
        sigma=sigma,
        n=n,
        n_max=n_max,
        alpha=alpha,
        images=len(frame),
        unknown=int(unknown.sum()),
        stages=plan.stage_sizes,
        mean_hi=float(np.mean(means["hi"])),
        mean_mid=float(np.mean(means["mid"])),
        mean_lo=float(np.mean(means["lo"])),
        worst=worst,
        reasons=reasons / seeds,
        spent=spent / seeds,
        grid=grid,
        stored=stored,
        fixed_sim=np.mean(fixed_sim, axis=0),
        seq=np.mean(seq, axis=0),
        oracle=oracle[0],
        oracle_point=oracle[1],
        oracle_floor=oracle[2],
        oracle_pa=knowing,
        levels=" / ".join(str(int(v)) for v in histogram),
        early_alpha=float(plan.stage_alphas[0]),
    )


def _mirrored(
    known: np.ndarray, threshold: float, count: int, rng: np.random.Generator
) -> np.ndarray:
    """pA for ``count`` abstained rows without a count, under a density of pA that is continuous
    across the abstention threshold: as many of them as there are known pA in
    ``[threshold, threshold + MIRROR_WIDTH)`` get those values reflected below the threshold; the
    rest (far below it) get 0."""
    near = known[(known >= threshold) & (known < threshold + MIRROR_WIDTH)]
    placed = min(near.size, count)
    out = np.zeros(count)
    out[:placed] = threshold - (rng.choice(near, placed, replace=False) - threshold)
    return np.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------------- report


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _delta(x: float) -> str:
    return f"{100 * x:+.2f}"


def _samples(o: Outcome) -> str:
    if o.unknown:
        return f"{o.mean_hi:,.0f} / {o.mean_mid:,.0f} / {o.mean_lo:,.0f}"
    return f"{o.mean_hi:,.0f}"


def _ratio(o: Outcome) -> str:
    if o.unknown:
        return " / ".join(f"{m / o.n_max:.3f}" for m in (o.mean_hi, o.mean_mid, o.mean_lo))
    return f"{o.mean_hi / o.n_max:.3f}"


def _worst_delta(o: Outcome) -> tuple[float, float | None]:
    vs_sim = float(np.min(o.seq - o.fixed_sim))
    vs_stored = None if o.stored is None else float(np.min(o.seq - o.stored))
    return vs_sim, vs_stored


def summary_table(outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| run | sigma | n_max | images | no count | mean samples | ratio to n | worst case | "
        "stopped by top / futile / abstain / n_max: % of images · % of samples | "
        "worst Δ vs fixed (sim) | worst Δ vs stored | oracle: ratio to n (exact / 1 point / "
        "floor) | fixed n knowing pA |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        vs_sim, vs_stored = _worst_delta(o)
        reasons = " / ".join(f"{100 * r:.0f}" for r in o.reasons[1:])
        reasons += " · " + " / ".join(f"{100 * r:.0f}" for r in o.spent[1:])
        lines.append(
            f"| {o.model_id} | {metrics.format_sigma(o.sigma)} | {o.n_max:,} | {o.images:,} | "
            f"{o.unknown:,} | {_samples(o)} | {_ratio(o)} | {o.worst:,} | {reasons} | "
            f"{_delta(vs_sim)} | {'n/a' if vs_stored is None else _delta(vs_stored)} | "
            f"{_oracle(o)} | {_knowing(o)} |"
        )
    return lines


def _oracle(o: Outcome) -> str:
    return " / ".join(f"{m / o.n_max:.3f}" for m in (o.oracle, o.oracle_point, o.oracle_floor))


def _knowing(o: Outcome) -> str:
    return f"{o.oracle_pa / o.n_max:.3f}"


def accuracy_table(outcomes: list[Outcome]) -> list[str]:
    grid = outcomes[0].grid
    head = " | ".join(f"r={float(r):g}" for r in grid)
    lines = [
        f"| run | sigma | estimation | {head} |",
        "|---|---:|---|" + "---:|" * len(grid),
    ]
    for o in outcomes:
        rows: list[tuple[str, np.ndarray, bool]] = []
        if o.stored is not None:
            rows.append(("fixed n (stored radii)", o.stored, False))
        rows += [
            ("fixed n (simulated)", o.fixed_sim, False),
            ("sequential (simulated)", o.seq, False),
        ]
        if o.stored is not None:
            rows.append(("Δ sequential − stored", o.seq - o.stored, True))
        rows.append(("Δ sequential − fixed (sim)", o.seq - o.fixed_sim, True))
        for label, values, delta in rows:
            cells = " | ".join(_delta(v) if delta else _pct(v) for v in values)
            lines.append(f"| {o.model_id} | {metrics.format_sigma(o.sigma)} | {label} | {cells} |")
    return lines


def header(args: argparse.Namespace, command: str) -> list[str]:
    futility = "alpha_k" if args.futility_alpha is None else f"{args.futility_alpha:g}"
    return [
        "# Sequential certification, offline on real vote distributions (issue 22)",
        "",
        f"Generated by `{command}` ({args.seeds} seeds per run, base seed {args.base_seed}).",
        "",
        "**What is simulated.** For each image of a fixed-n run, its top-class probability is "
        "estimated from the run's stored estimation counts, `pA = nA / n`, and sequential "
        "estimation (`rsbench/engine/sequential.py`) is simulated from it: Binomial increments per "
        "stage from a seeded NumPy generator, `n_max` = the run's n, alpha = the run's alpha, the "
        "dataset's leaderboard radius grid (CIFAR-10 and Fashion-MNIST 0..2 by 0.25, ImageNet 0..3 by "
        "0.5). Plan: geometric stages from a first block of "
        f"{args.first:,} with ratio {args.ratio:g} up to `n_max`, alpha split `{args.weighting}`, "
        f"futility upper bound at level {futility} (`reachable`). The class `cA` and the selection "
        "draws (n0 = 100) are the run's, the same in both modes; **samples** count the estimation "
        "draws only. Certified accuracy credits only images whose stored prediction is correct, "
        "as in the leaderboard; abstentions count as wrong.",
        "",
        "**Columns.** *fixed n (stored radii)*: the run's own certificates, as the leaderboard shows "
        "them. *fixed n (simulated)*: CERTIFY at n on the same simulated draws as the sequential run "
        "(its last stage's counts), so *Δ sequential − fixed (sim)* isolates the cost of stopping "
        "early from simulation noise; *Δ sequential − stored* also contains the difference "
        "between the simulated and the real draws. Percent of all images, mean over seeds; Δ in "
        "points. *worst case*: the most samples any image used in any seed. *no count*: abstained "
        "rows of imported logs, which record no count: any count whose bound is below 1/2 is "
        "consistent, so their samples are shown three ways: *max*, `pA` just under the abstention "
        "threshold (the most expensive: such images mostly run to `n_max`) / *model*, a density of "
        f"`pA` continuous across the threshold (as many of them as the run has images with `pA` in "
        f"[threshold, threshold + {MIRROR_WIDTH:g}) get those values reflected below the threshold, "
        "the rest `pA = 0`) / *min*, `pA = 0` (they stop at the first block). Their accuracy is "
        "unaffected (their class is unknown: never credited).",
        "",
        "**Oracle** (a lower bound, not a method): for each image, the grid radius fixed n "
        "certifies for it (its stored certificate; in the projection, fixed-n CERTIFY at n_max on "
        "the simulated draws) and the fewest samples with which *any* sound procedure at level "
        "alpha could certify it: `m*(r) = ceil(log(alpha) / log(Phi(r / sigma)))`, the votes all "
        "for `cA` and the full alpha (after m unanimous votes no valid bound exceeds "
        "alpha^(1/m), `oracle_samples` in `bench/sequential.py`; r = 0 costs 10 samples at alpha "
        "= 0.001); images certifying no grid radius cost 0. Mean over images as a ratio to n: "
        "*exact* keeps every image's level; *1 point* lets the floor(N/100) most expensive "
        "images cost 0 (the cheapest way to lose at most 1 point at every radius, since the cost "
        "depends only on the level); *floor* charges every image at least the plan's first block. "
        "A sequential rule that must also be valid at every stopping time can only need more. "
        "*fixed n knowing pA* (not a bound on every procedure: what an image with that `pA` "
        "typically needs): fixed-n CERTIFY at the full alpha with n chosen per image, the "
        "smallest n whose bound on `floor(pA n)` votes reaches the image's fixed-n grid level; "
        "images near a grid threshold need many samples whatever the rule.",
        "",
        "**Limits.** `pA` is an estimate from the stored counts, so this simulates a plausible "
        "distribution of votes, not the real one: the images that cost most are those whose `pA` "
        "lies near a grid threshold, and how many lie there is itself estimated from n draws. "
        "Cohen et al.'s logs print radii, not counts: their `nA` is the smallest count consistent "
        "with the printed radius (`rsbench/results/importers.py`), slightly below the true one. "
        "The embedded runs have n = 2,000: at most n / (first block) fewer samples; the "
        "projection section extrapolates them to n_max = 100,000 from pA estimated at n = 2,000 "
        "(an image unanimous over 2,000 draws is simulated as pA = 1). Dual and cascade runs are "
        "not simulated (their certificate combines several estimations).",
        "",
    ]


def oracle_lines(outcomes: list[Outcome], live: list[Outcome]) -> list[str]:
    """Why the 10 % target is missed at sigma = 0.5: the oracle's own cost."""
    pick = [o for o in outcomes if o.sigma == 0.5 and o.n_max == 100_000] + live
    if not pick:
        return []
    lines = [
        "## Why sigma = 0.5 misses 10 %: a lower bound on any sound procedure",
        "",
        "The oracle (above) on the runs at sigma = 0.5, n = 100,000, against the mean samples "
        "the sequential rule uses:",
        "",
        "| run | images | fixed-n images per grid level (0 = none, 1 = r 0, ...) | oracle: exact / "
        "1 point / floor | fixed n knowing pA | sequential (ratio to n) |",
        "|---|---:|---|---|---:|---:|",
    ]
    for o in pick:
        lines.append(
            f"| {o.model_id}{' (' + o.note + ')' if o.note else ''} | {o.images:,} | "
            f"{o.levels} | {_oracle(o)} | {_knowing(o)} | {_ratio(o)} |"
        )
    o = pick[0]
    top = float(max(r for r in o.grid if oracle_samples(np.array([r]), 0.5, o.alpha)[0] <= o.n_max))
    need = int(oracle_samples(np.array([top]), 0.5, o.alpha)[0])
    early = int(oracle_samples(np.array([top]), 0.5, o.early_alpha)[0])
    lines += [
        "",
        f"At sigma = 0.5 the grid's top reachable radius {top:g} = {top / 0.5:g} sigma needs "
        f"`Phi({top / 0.5:g}) = {norm.cdf(top / 0.5):.5f}`: {need:,} unanimous votes at alpha = "
        f"{o.alpha:g} ({need / o.n_max:.1%} of n) before any sound bound can reach it, and a rule "
        f"valid at every stopping time pays more ({early:,} at the default plan's early-stage "
        f"level {o.early_alpha:.3g}). So every image that fixed n certifies at {top:g} costs "
        "that much even for the oracle, and the oracle's mean is set by how many images reach the "
        "top level: the last column of the level counts. Where the oracle's exact ratio is at or "
        "near 10 %, the target cannot be met on this grid by any sound procedure without "
        "lowering those images' level, i.e. losing accuracy at the top radius (the 1-point "
        "column is the most a 1-point loss at every radius can save; with 40 images it frees "
        "none).",
        "",
    ]
    for o in pick:
        exact, point, knowing = (m / o.n_max for m in (o.oracle, o.oracle_point, o.oracle_pa))
        name = f"{o.model_id}{' (' + o.note.split(';')[0] + ')' if o.note else ''}"
        if point >= TARGET_FRACTION:
            verdict = "**the target is unreachable** on this grid for any sound procedure"
        elif point >= 0.9 * TARGET_FRACTION:
            verdict = (
                "**the target is out of reach in practice**: the lower bound alone is within "
                f"{TARGET_FRACTION - point:.1%} of n of it, before any price for validity at a "
                f"data-dependent stopping time, and fixed n chosen knowing each pA needs "
                f"{knowing:.1%}"
            )
        else:
            verdict = (
                "the lower bound leaves room: the gap to 10 % is the rule's (validity at every "
                f"stopping time, and images near a grid threshold: fixed n knowing each pA needs "
                f"{knowing:.1%})"
            )
        lines.append(
            f"- {name}: the oracle needs {exact:.1%} of n ({point:.1%} with a 1-point "
            f"allowance); {verdict}."
        )
    return [*lines, ""]


def target_lines(outcomes: list[Outcome]) -> list[str]:
    cohen = [o for o in outcomes if o.dataset == "cifar10" and o.n_max == 100_000]
    if not cohen:
        return []
    lines = [
        "**Target (issue 22, Cohen CIFAR-10 at n = 100,000):** mean samples <= 10 % of n and "
        "certified accuracy at every grid radius at most 1.0 point below fixed n.",
        "",
    ]
    for o in cohen:
        vs_sim, vs_stored = _worst_delta(o)
        accuracy_ok = 100 * vs_sim >= TARGET_POINTS
        ends = [m / o.n_max <= TARGET_FRACTION for m in (o.mean_hi, o.mean_mid, o.mean_lo)]
        if not accuracy_ok:
            verdict = "not met (accuracy)"
        elif ends[0]:
            verdict = "met"
        elif ends[1]:
            verdict = "met under the density model, not at the max end"
        elif ends[2]:
            verdict = "met only at the min end (abstained images free)"
        else:
            verdict = "not met (samples)"
        stored = "" if vs_stored is None else f" ({_delta(vs_stored)} vs the stored radii)"
        lines.append(
            f"- sigma {metrics.format_sigma(o.sigma)}: samples {_ratio(o)} of n (max / model / "
            f"min), worst Δ {_delta(vs_sim)} points vs fixed n on the same draws{stored}: "
            f"**{verdict}**"
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 — argument parsing and report assembly
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", help=f"run directories (default: {DEFAULT_RUNS})")
    parser.add_argument("--seeds", type=int, default=5, help="simulations per run (default 5)")
    parser.add_argument("--base-seed", type=int, default=0)
    parser.add_argument("--first", type=int, default=sequential.DEFAULT_FIRST)
    parser.add_argument("--ratio", type=float, default=sequential.DEFAULT_RATIO)
    parser.add_argument(
        "--weighting", choices=sequential.WEIGHTINGS, default=sequential.DEFAULT_WEIGHTING
    )
    parser.add_argument(
        "--futility-alpha",
        type=lambda s: None if s == "alpha_k" else float(s),
        default=sequential.DEFAULT_FUTILITY_ALPHA,
        help="level of the futility upper bound, or alpha_k (default %(default)s)",
    )
    parser.add_argument(
        "--no-sensitivity", action="store_true", help="skip the alternative plans section"
    )
    parser.add_argument(
        "--project-n-max",
        type=int,
        default=100_000,
        help="n_max of the projection of runs with smaller n (0: none; default %(default)s)",
    )
    parser.add_argument(
        "--live",
        nargs="*",
        default=[],
        help="fixed-n expert run directories of bench/sequential_live.py (e.g. "
        "/tmp/seq-live/fixed): their oracle at sigma 0.5 is added to the lower-bound section",
    )
    parser.add_argument("--out", default=None, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    command = "python bench/sequential.py " + " ".join(argv if argv is not None else sys.argv[1:])

    started = time.monotonic()
    paths = args.runs or [str(ROOT / p) for p in DEFAULT_RUNS]
    frame = read_results(paths)
    skipped = sorted(frame.loc[frame["kind"] != "expert", "run_id"].unique())
    frame = frame[frame["kind"] == "expert"]
    plan_args = {
        "seeds": args.seeds,
        "base_seed": args.base_seed,
        "first": args.first,
        "ratio": args.ratio,
        "weighting": args.weighting,
        "futility_alpha": args.futility_alpha,
    }
    outcomes = [
        evaluate(group, **plan_args)  # type: ignore[arg-type]
        for _, group in sorted(frame.groupby("run_id"), key=lambda kv: str(kv[0]))
    ]
    outcomes.sort(key=lambda o: (o.dataset, o.n_max, o.model_id, o.sigma))
    live: list[Outcome] = []
    if args.live:
        live_frame = read_results(args.live)
        live_frame = live_frame[(live_frame["kind"] == "expert") & (live_frame["sigma"] == 0.5)]
        for _, group in sorted(live_frame.groupby("run_id"), key=lambda kv: str(kv[0])):
            o = evaluate(group, **plan_args)  # type: ignore[arg-type]
            o.note = f"live: {len(group)} images, real counts at n = {o.n:,}; sequential simulated"
            live.append(o)
    projected: list[Outcome] = []
    if args.project_n_max:
        projected = [
            evaluate(
                frame[frame["run_id"] == o.run_id],
                n_max=args.project_n_max,
                **plan_args,  # type: ignore[arg-type]
            )
            for o in outcomes
            if o.n < args.project_n_max
        ]
        for o in projected:
            o.note = f"projected from n = {o.n:,}"
    lines = header(args, command)
    lines += target_lines(outcomes)
    lines += oracle_lines(outcomes, live + [o for o in projected if o.sigma == 0.5])
    lines += ["## Samples and stopping", ""]
    lines += [f"Stages (n_max = 100,000): {_stages(outcomes, 100_000)}", ""]
    lines += summary_table(outcomes) + [""]
    lines += [
        "_Mean samples and ratio for runs with abstained rows of unknown count: max / model / min "
        "(see above). Stop reasons and worst case at the max end. Worst Δ: the most negative "
        "accuracy difference over the grid radii (points)._",
        "",
    ]
    for dataset in sorted({o.dataset for o in outcomes}):
        lines += [f"## Certified accuracy: {dataset} (% of all images)", ""]
        lines += accuracy_table([o for o in outcomes if o.dataset == dataset]) + [""]

    if not args.no_sensitivity:
        lines += sensitivity(frame, args)
    if projected:
        lines += [
            f"## Projection: runs with n < {args.project_n_max:,} at n_max = "
            f"{args.project_n_max:,}",
            "",
            "pA estimated from the run's n draws, simulated at n_max; no stored certificate at "
            "that n, so Δ is against fixed-n CERTIFY on the same simulated draws.",
            "",
            f"Stages: {_stages(projected, args.project_n_max)}",
            "",
        ]
        lines += summary_table(projected) + [""]
        lines += accuracy_table(projected) + [""]
    if skipped:
        lines += ["Not simulated (dual / cascade): " + ", ".join(f"`{s}`" for s in skipped), ""]
    text = "\n".join(lines) + "\n"
    print(text)
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


def _stages(outcomes: list[Outcome], n_max: int) -> str:
    for o in outcomes:
        if o.n_max == n_max:
            return ", ".join(f"{s:,}" for s in o.stages)
    return "n/a"


def _mean_model_ratio(results: list[Outcome]) -> float:
    return float(np.mean([o.mean_mid / o.n_max for o in results]))


def sensitivity(frame: pd.DataFrame, args: argparse.Namespace) -> list[str]:
    """Alternative plans chosen on validation runs, CIFAR-10 held out (2 seeds each).

    Every plan of :data:`SENSITIVITY` runs on the Cohen ImageNet imports (n = 100,000, the
    validation set: never the evaluation set); the plan picked is the one with the lowest mean
    ratio of samples to n (density model) whose worst accuracy difference to fixed n on the same
    draws is at most 1 point below, over all validation sigmas and radii. Only the default and
    the picked plan are then run on the Cohen CIFAR-10 runs (held out)."""
    validation = frame[(frame["dataset"] == "imagenet") & (frame["n"] == 100_000)]
    cohen = frame[(frame["dataset"] == "cifar10") & (frame["n"] == 100_000)]
    if validation.empty or cohen.empty:
        return []

    def groups_of(part: pd.DataFrame) -> list:
        return sorted(part.groupby("run_id"), key=lambda kv: float(kv[1]["sigma"].iloc[0]))

    def run(groups: list, change: dict[str, object]) -> list[Outcome]:
        settings = {**DEFAULT_PLAN, **change}
        return [
            evaluate(g, seeds=2, base_seed=args.base_seed, **settings)  # type: ignore[arg-type]
            for _, g in groups
        ]

    val_groups, test_groups = groups_of(validation), groups_of(cohen)
    sigmas = [metrics.format_sigma(float(g["sigma"].iloc[0])) for _, g in val_groups]
    lines = [
        "## Sensitivity: other plans, chosen on ImageNet, CIFAR-10 held out (n = 100,000, 2 seeds)",
        "",
        "Validation: the Cohen ImageNet imports. Ratio of mean samples to n (max / model / min "
        "for the abstained rows) per sigma, and the worst accuracy difference to fixed n on the "
        "same draws over all sigmas and radii. Each row changes the named setting of the "
        "module's default plan (first block 500, ratio 1.25, `final-half`, futility 0.1 "
        "`reachable`). Rule, fixed before looking: pick the lowest mean *model* ratio over the "
        "sigmas among plans whose worst Δ is >= -1.0 point; then run only the default and the "
        "picked plan on the CIFAR-10 runs (held out). The shipped defaults are not changed here "
        "(they predate this split: `rsbench/engine/sequential.py` says they were tuned on the "
        "CIFAR-10 logs, so its CIFAR-10 figures are not a held-out result).",
        "",
        "| plan | " + " | ".join(f"sigma {s}" for s in sigmas) + " | mean model ratio | worst Δ vs "
        "fixed (sim) |",
        "|---|" + "---:|" * (len(sigmas) + 2),
    ]
    best: tuple[float, str, dict[str, object]] | None = None
    for label, change in (("default", {}), *SENSITIVITY):
        results = run(val_groups, dict(change))
        worst = min(_worst_delta(o)[0] for o in results)
        mean = _mean_model_ratio(results)
        cells = " | ".join(_ratio(o) for o in results)
        lines.append(f"| {label} | {cells} | {mean:.3f} | {_delta(worst)} |")
        if 100 * worst >= TARGET_POINTS and (best is None or mean < best[0]):
            best = (mean, label, dict(change))
    if best is None:
        return [*lines, "", "No plan keeps the validation accuracy within 1 point.", ""]
    _, label, change = best
    test_sigmas = [metrics.format_sigma(float(g["sigma"].iloc[0])) for _, g in test_groups]
    lines += [
        "",
        f"Picked on validation: **{label}**. Held out, the Cohen CIFAR-10 runs:",
        "",
        "| plan | " + " | ".join(f"sigma {s}" for s in test_sigmas) + " | worst Δ vs fixed (sim) |",
        "|---|" + "---:|" * (len(test_sigmas) + 1),
    ]
    for name, plan in dict.fromkeys([("default", ()), (label, tuple(change.items()))]):
        results = run(test_groups, dict(plan))
        worst = min(_worst_delta(o)[0] for o in results)
        cells = " | ".join(_ratio(o) for o in results)
        lines.append(f"| {name} | {cells} | {_delta(worst)} |")
    return [*lines, ""]


if __name__ == "__main__":
    raise SystemExit(main())

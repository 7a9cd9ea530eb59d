"""Live: fixed n vs sequential estimation on the embedded Fashion-MNIST set (issue 22, item 4).

Certifies the three embedded experts and the embedded dual model twice on the same images, through
the real CLI (``python -m rsbench certify``): fixed n = N (``--n N``) and sequential with
n_max = N (``--estimation sequential --n-max N``), n0 = 100, alpha = 0.001, one torch thread.
Each (model, mode) runs in its own process, timed from the outside (wall clock, model loading
included). The table compares, per model: mean and worst forward samples per image (selection
included, router and expert stages for the dual), certified accuracy at every radius of the
Fashion-MNIST grid (0..2 by 0.25) for both modes on the same images, the images whose grid level
differs, and the wall time ratio. The machine's load average is recorded before and after (the
machine is shared: timings are only comparable within one run of this script).

Usage::

    PYTHONPATH=. python bench/sequential_live.py --indices 0:2000:50 --out /tmp/seq-live \
        --report results/sequential-live.md

The certify runs resume: an interrupted invocation picks up where it stopped (its timing is then
that of the last piece only, and the report says so).

The cascade (``embedded-fmnist-cascade``: every stage sequential, caps resumed to the answer's
grid level, :func:`rsbench.engine.cascade.certify_sequential`) is added as its own section of an
existing report, keeping the rest::

    PYTHONPATH=. python bench/sequential_live.py --indices 0:2000:50 --out /tmp/seqc-live \
        --models embedded-fmnist-cascade --append-section

``--timings FILE`` (JSON ``{"model mode": seconds}``, or ``{"model mode": {"seconds": s, "load":
"the load average before it"}}``) reuses a run already made with the same command into
``--out`` instead of running it again (its wall time as measured then).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MODELS = (
    "embedded-fmnist-s0.25",
    "embedded-fmnist-s0.50",
    "embedded-fmnist-s1.00",
    "embedded-fmnist-dual",
)
CASCADE_HEADING = "## The cascade"
GRID = tuple(0.25 * i for i in range(9))


def _args(model: str, mode: str, n: int, indices: str, out: Path) -> list[str]:
    args = ["certify", model, "--n0", "100", "--alpha", "0.001", "--indices", indices]
    args += ["--threads", "1", "--out", str(out / mode), "--no-leaderboard"]
    args += (
        ["--n", str(n)] if mode == "fixed" else ["--estimation", "sequential", "--n-max", str(n)]
    )
    return args


def command_of(model: str, mode: str, n: int, indices: str, out: Path) -> str:
    return "rsbench " + " ".join(_args(model, mode, n, indices, out))


def certify(model: str, mode: str, n: int, indices: str, out: Path) -> tuple[float, str]:
    """Run one certification through the CLI; its wall time and the command."""
    args = _args(model, mode, n, indices, out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rsbench", *args], env=env, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"rsbench {' '.join(args)} failed with status {done.returncode}")
    return seconds, "rsbench " + " ".join(args)


def levels(frame: pd.DataFrame) -> np.ndarray:
    """Per image (sorted by index): how many grid radii it is certified at (0: wrong/abstain)."""
    rows = frame.sort_values("index")
    radius = rows["radius"].to_numpy(dtype=float)
    correct = rows["correct"].to_numpy(dtype=bool)
    count = np.searchsorted(np.asarray(GRID), radius, side="right")
    return np.where(correct, count, 0)


def accuracy(frame: pd.DataFrame) -> list[float]:
    lv = levels(frame)
    return [float(np.mean(lv > j)) for j in range(len(GRID))]


def reasons_of(frame: pd.DataFrame) -> dict[str, int]:
    """Stop reasons: the expert stage's (a cascade: every stage that ran, caps included)."""
    if (frame["kind"] == "cascade").all() and "stage_stop_reason" in frame:
        flat = [str(r) for row in frame["stage_stop_reason"] for r in row]
        return pd.Series(flat).value_counts().to_dict()
    return frame["stop_reason"].value_counts().to_dict()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--indices", default="0:2000:50")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rsbench-sequential-live"))
    parser.add_argument("--report", type=Path, default=ROOT / "results" / "sequential-live.md")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument(
        "--append-section",
        action="store_true",
        help="write the models as the cascade section of the existing --report (replacing it)",
    )
    parser.add_argument("--timings", type=Path, default=None)
    args = parser.parse_args()
    import json

    known = json.loads(args.timings.read_text()) if args.timings else {}
    sys.path.insert(0, str(ROOT))
    from rsbench.results import read_results

    load_before = load()
    timings: dict[tuple[str, str], float] = {}
    commands = []
    for model in args.models:
        for mode in ("sequential", "fixed"):
            if f"{model} {mode}" in known:
                entry = known[f"{model} {mode}"]
                entry = entry if isinstance(entry, dict) else {"seconds": entry}
                command = command_of(model, mode, args.n, args.indices, args.out)
                timings[(model, mode)] = float(entry["seconds"])
                load_note = f", load average {entry['load']} before it" if "load" in entry else ""
                commands.append(f"{command}  # measured earlier{load_note}, not rerun")
                continue
            seconds, command = certify(model, mode, args.n, args.indices, args.out)
            timings[(model, mode)] = seconds
            commands.append(command)
            print(f"{model} {mode}: {seconds:.1f} s (load {load()})", flush=True)
    load_after = load()

    lines = [
        "# Sequential estimation, live on the embedded Fashion-MNIST set",
        "",
        f"Written by `bench/sequential_live.py --indices {args.indices} --n {args.n}` "
        f"(`rsbench certify`, n0 = 100, alpha = 0.001, `--threads 1`, CPU). Fixed n = "
        f"{args.n:,} against sequential n_max = {args.n:,} (default plan: stages 500 x 1.25^k, "
        "alpha/2 on the last stage, futility bound at 0.1; grid 0..2 by 0.25) on the same images: "
        f"the embedded subset's indices `{args.indices}`.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"shared with other work; load average (1/5/15 min) {load_before} before, {load_after} "
        "after. Wall times are per process, model loading included, measured one after the other "
        "on this shared machine: their ratio is indicative, not a benchmark.",
        "",
        "| model | mode | images | mean samples/img | worst samples/img | "
        + " | ".join(f"r={r:g}" for r in GRID)
        + " | ACR | certify s | process s |",
        "|---|---" + "|---" * (len(GRID) + 6) + "|",
    ]
    summary = []
    for model in args.models:
        frames = {}
        for mode in ("fixed", "sequential"):
            frame = read_results(args.out / mode)
            frame = frame[frame["model_id"] == model]
            frames[mode] = frame
            samples = frame["samples"].to_numpy(dtype=float)
            radius = np.where(frame["correct"].to_numpy(dtype=bool), frame["radius"], 0.0)
            cells = [f"{100 * a:.1f}" for a in accuracy(frame)]
            lines.append(
                f"| {model} | {mode} | {len(frame)} | {samples.mean():,.0f} | "
                f"{samples.max():,.0f} | " + " | ".join(cells) + f" | {radius.mean():.3f} | "
                f"{frame['seconds'].sum():.1f} | {timings[(model, mode)]:.1f} |"
            )
        fixed, seq = frames["fixed"], frames["sequential"]
        assert fixed["index"].sort_values().tolist() == seq["index"].sort_values().tolist()
        diff = levels(seq) - levels(fixed)
        gap = max(100 * (a - b) for a, b in zip(accuracy(fixed), accuracy(seq), strict=True))
        summary.append(
            {
                "model": model,
                "ratio": float(seq["samples"].mean() / fixed["samples"].mean()),
                "time": float(fixed["seconds"].sum() / seq["seconds"].sum()),
                "process": timings[(model, "fixed")] / timings[(model, "sequential")],
                "gap": gap,
                "lower": int((diff < 0).sum()),
                "higher": int((diff > 0).sum()),
                "images": len(seq),
                "reasons": reasons_of(seq),
            }
        )
    lines += [
        "",
        "Certified accuracy in % of the images (abstentions count as wrong); samples = forward "
        "passes per image, selection included (the dual: router and expert stages). certify s: "
        "the run's own certification time (sum of the rows' `seconds`); process s: the whole "
        "`rsbench certify` process, start-up and model loading included.",
        "",
        "| model | samples: sequential / fixed | certify time: fixed / sequential (process) | "
        "largest accuracy "
        "drop over the grid (points) | images one grid level lower / higher | expert-stage stop "
        "reasons |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["reasons"].items()))
        lines.append(
            f"| {s['model']} | {100 * s['ratio']:.1f} % | {s['time']:.1f}x ({s['process']:.1f}x) | "
            f"{s['gap']:.1f} | "
            f"{s['lower']} / {s['higher']} of {s['images']} | {reasons} |"
        )
    if args.append_section:
        write_section(args, lines, summary, commands, load_before, load_after)
        return
    experts = [s for s in summary if s["model"] != "embedded-fmnist-dual"]
    images = summary[0]["images"] if summary else 0
    resolution = 100.0 / images if images else float("nan")
    lines += [
        "",
        "## Targets of issue 22",
        "",
        "- mean samples <= 10 % of fixed n on the embedded experts: "
        + ", ".join(f"{100 * s['ratio']:.1f} %" for s in experts)
        + (" (met)" if all(s["ratio"] <= 0.10 for s in experts) else " (not met for every expert)"),
        "- certified accuracy at every grid radius at most 1.0 point below fixed n: largest drops "
        + ", ".join(f"{s['gap']:.1f}" for s in summary)
        + f" points; one image is {resolution:.1f} points of this subset, so the check resolves "
        "only whole images"
        + (
            " (met on these images)"
            if all(s["gap"] <= 1.0 for s in summary)
            else " (not met on these images)"
        ),
        "- wall time of the experts' runs falls by at least 5x: "
        + ", ".join(f"{s['time']:.1f}x" for s in experts)
        + (" (met)" if all(s["time"] >= 5 for s in experts) else " (not met for every expert)"),
        "",
        "Commands (each timed separately):",
        "",
        *[f"    {c}" for c in commands],
        "",
    ]
    args.report.write_text("\n".join(lines))
    print(f"wrote {args.report}")


def write_section(args, lines, summary, commands, load_before, load_after) -> None:
    """Replace (or add) the cascade section at the end of ``args.report``, keeping the rest."""
    text = args.report.read_text() if args.report.exists() else ""
    head = text.split("\n" + CASCADE_HEADING)[0].rstrip("\n")
    first = lines.index("") + 1  # drop the title: keep the machine line and the tables
    models = " ".join(args.models)
    section = [
        "",
        CASCADE_HEADING,
        "",
        f"Written by `bench/sequential_live.py --indices {args.indices} --n {args.n} --models "
        f"{models} --append-section`: the same images and protocol as above, every cascade stage "
        "sequential (its answer bound at alpha / 5 from p0 = 0.5, the union split; an earlier "
        "stage's samples resumed only while its cap could lower the answer's grid level: "
        "`rsbench.engine.cascade.certify_sequential`). Samples count every stage run, selection "
        "included.",
        "",
        *[line for line in lines[first + 2 :]],
        "",
        "Stop reasons count every cascade stage that ran: top / futile / abstain / n_max are the "
        "answer phase's (abstain: p0 out of reach, the image moved on or abstained); cap_* a stage "
        "resumed for its cap (cap_met: it reached the answer's grid level).",
        "",
        "Commands"
        + (
            " (a run marked 'measured earlier' was made with this command before the others, "
            "on the same machine; its wall time is the one measured then):"
            if any("measured earlier" in c for c in commands)
            else ":"
        ),
        "",
        *[f"    {c}" for c in commands],
        "",
    ]
    args.report.write_text(head + "\n" + "\n".join(section))
    print(f"wrote the cascade section of {args.report}")


if __name__ == "__main__":
    main()

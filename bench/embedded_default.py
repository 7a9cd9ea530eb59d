"""Wall time and peak memory of the embedded default run (``rsbench certify`` with no id).

Each measurement runs the real command in a fresh process with a fresh ``--out`` folder (nothing
is resumed) and reports its wall time and peak resident memory (``ru_maxrss`` of the process and
its children). With ``--threads`` / ``--batch`` lists, every combination is measured in each of
``--repeats`` rounds, in a rotated order, and the median is printed. Never asserts a time.

    python bench/embedded_default.py                            # the defaults, once
    python bench/embedded_default.py --threads 1,2 --batch 500,1000 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs the command given as arguments; prints {"rc", "seconds", "maxrss_kib"} as the last line.
WRAPPER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
if rc.returncode:
    sys.stderr.write(rc.stderr[-2000:])
print(json.dumps({"rc": rc.returncode, "seconds": seconds, "maxrss_kib": peak}))
"""


def measure(threads: int | None, batch: int | None) -> dict:
    """One embedded default run in a fresh process and output folder."""
    with tempfile.TemporaryDirectory(prefix="rsbench-embedded-") as out:
        cmd = [sys.executable, "-m", "rsbench", "certify", "--out", out, "--no-leaderboard"]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        if batch is not None:
            cmd += ["--batch", str(batch)]
        done = subprocess.run(
            [sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, cwd=ROOT
        )
        if done.returncode:
            raise SystemExit(f"wrapper failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["rc"]:
            raise SystemExit(f"rsbench certify failed (rc {result['rc']}): {done.stderr[-2000:]}")
        rows = sum(1 for _ in Path(out).glob("*/part-*.parquet"))
        result["parts"] = rows
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", default="", help="comma-separated (default: the run's own)")
    parser.add_argument("--batch", default="", help="comma-separated (default: the run's own)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t] or [None]
    batches = [int(b) for b in args.batch.split(",") if b] or [None]
    combos = [(t, b) for t in threads for b in batches]
    print(
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
        "command: rsbench certify --out <fresh dir>"
    )
    results: dict[tuple, list[dict]] = {c: [] for c in combos}
    for repeat in range(args.repeats):
        shift = repeat % len(combos)
        for combo in combos[shift:] + combos[:shift]:
            t0 = time.time()
            results[combo].append(measure(*combo))
            last = results[combo][-1]
            print(
                f"  round {repeat + 1}: threads={combo[0] or 'default'} batch={combo[1] or 'default'}: "
                f"{last['seconds']:.1f} s, peak {last['maxrss_kib'] / 1024:.0f} MiB "
                f"(load {os.getloadavg()[0]:.2f}, {time.time() - t0:.0f} s)",
                flush=True,
            )
    print(f"\n{'threads':>8}{'batch':>8}{'wall s (median)':>17}{'peak MiB':>10}")
    for combo in combos:
        runs = results[combo]
        print(
            f"{combo[0] or 'default':>8}{combo[1] or 'default':>8}"
            f"{statistics.median(r['seconds'] for r in runs):>17.1f}"
            f"{max(r['maxrss_kib'] for r in runs) / 1024:>10.0f}"
        )


if __name__ == "__main__":
    main()

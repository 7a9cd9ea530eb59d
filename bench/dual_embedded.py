"""Evidence for the embedded dual model: certified accuracy curves, the two targets, the time ratio.

Protocol (``rsbench certify --protocol cpu``): the embedded Fashion-MNIST test subset, every 4th of
the first 2,000 test images (500 images), n0 = 100, n = 2,000 (per stage for dual models), total
alpha = 0.001 (dual: half to the router, half to the expert), seed 0. Each model's per-sample
certificates are written as Parquet under ``results/embedded/`` (resumable: rerunning skips what is
done). Then, from those rows:

* certified accuracy at radii 0, 0.25, ..., 2.0 for each expert, their per-radius envelope, the
  oracle (best expert per image in hindsight: an upper bound, not a certificate), the dual model
  with off-the-shelf experts and the co-trained dual model (when its entry exists);
* target 1: the dual's largest shortfall below the envelope over those radii is less than half of
  the smallest largest-shortfall of any single expert;
* target 2: the wall-time ratio of dual certification to single-expert certification at the same n
  (<= 1.4), measured in this process, interleaved (expert, dual, expert, dual, ...) on the same
  images to cancel the load of other processes sharing the CPU, median over rounds; the per-sample
  ``seconds`` of the stored runs give a second, noisier figure.

Writes ``results/dual-embedded.md``. Usage::

    python bench/dual_embedded.py                 # certify (resumes), then write the report
    python bench/dual_embedded.py --threads 2 --timing-images 100 --timing-rounds 5
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "rsbench" / "embedded"
CANDIDATE_ZOOS = [EMBEDDED / "zoo-entries.yaml", EMBEDDED / "dual-entries.yaml"]
RADII = np.round(np.arange(0.0, 2.0001, 0.25), 2)
DUAL = "embedded-fmnist-dual"
DUAL_CT = "embedded-fmnist-dual-ct"


def extra_zoos() -> list[Path]:
    """Embedded zoo files whose entries are not yet merged into the packaged model_zoo.yaml."""
    from rsbench.zoo import load_zoo, read_zoo_file

    packaged = set(load_zoo(include_packaged=True).ids())
    return [
        p
        for p in CANDIDATE_ZOOS
        if p.is_file() and any(e.id not in packaged for e in read_zoo_file(p))
    ]


def certify(ids: list[str], zoos: list[Path], out: Path, threads: int) -> list[str]:
    """Run ``rsbench certify`` for each id (cpu protocol); return the commands."""
    commands = []
    for model_id in ids:
        cmd = [sys.executable, "-m", "rsbench", "certify", model_id, "--protocol", "cpu"]
        cmd += ["--device", "cpu", "--out", str(out.relative_to(ROOT)), "--no-leaderboard"]
        for zoo in zoos:
            cmd += ["--zoo", str(zoo.relative_to(ROOT))]
        shown = "rsbench " + shlex.join(cmd[3:])
        commands.append(shown)
        print(f"$ {shown}", flush=True)
        env = {"OMP_NUM_THREADS": str(threads)}
        import os

        subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, **env})
    return commands


def curves(out: Path, experts: list[str], duals: list[str]):
    """Certified accuracy per model, envelope and oracle of the experts, from the stored rows."""
    from rsbench import metrics
    from rsbench.results import read_results

    df = read_results(out)
    df = df[df["protocol"] == "cpu"]
    acc = {}
    for model_id in experts + duals:
        rows = df[df["model_id"] == model_id]
        if len(rows):
            acc[model_id] = metrics.certified_accuracy(rows, RADII)
    expert_rows = df[df["model_id"].isin(experts)]
    env = metrics.envelope(expert_rows, RADII)
    orc, oracle_images = metrics.oracle(expert_rows, RADII)
    seconds = {
        m: float(df.loc[df["model_id"] == m, "seconds"].sum()) / max(1, (df["model_id"] == m).sum())
        for m in acc
    }
    counts = {m: int((df["model_id"] == m).sum()) for m in acc}
    choices = {}
    for d in duals:
        rows = df[df["model_id"] == d]
        if len(rows):
            choice = rows["router_choice"].astype("Int64").to_numpy()
            choices[d] = {k: float(np.mean(choice == k)) for k in range(-1, len(experts))}
    return acc, env, orc, oracle_images, seconds, counts, choices


def timing(zoos: list[Path], dual_id: str, images: int, rounds: int, n0: int, n: int):
    """Median ratio of dual to single-expert certification wall time, interleaved, same n."""
    import torch

    from rsbench.data import load_dataset
    from rsbench.dual import load_dual
    from rsbench.models import load_model
    from rsbench.smoothing import SmoothedClassifier
    from rsbench.zoo import load_zoo

    zoo = load_zoo(zoos)
    dual_entry = zoo.get(dual_id)
    dual = load_dual(zoo, dual_entry)
    experts = [load_model(zoo.get(e)) for e in dual_entry.experts]
    sigmas = dual.sigmas
    singles = [SmoothedClassifier(m, 10, s) for m, s in zip(experts, sigmas)]
    data = load_dataset("fashion-mnist", "embedded")
    idx = list(range(0, 4 * images, 4))
    x = data.images(idx)
    ratios, single_times, dual_times = [], [], []
    with torch.inference_mode():
        for r in range(rounds):
            k = r % len(singles)
            t = time.perf_counter()
            singles[k].certify_batch(x, n0, n, 0.001, seed=r, indices=idx)
            single = time.perf_counter() - t
            t = time.perf_counter()
            dual.certify_batch(x, n0, n, 0.001, seed=r, indices=idx)
            both = time.perf_counter() - t
            ratios.append(both / single)
            single_times.append(single / images)
            dual_times.append(both / images)
    return (
        statistics.median(ratios),
        statistics.median(single_times),
        statistics.median(dual_times),
        ratios,
    )


def shortfalls(acc: dict[str, np.ndarray], env: np.ndarray) -> dict[str, tuple[float, float]]:
    """Largest shortfall below the envelope per model, and the radius where it happens."""
    out = {}
    for m, a in acc.items():
        gap = env - a
        i = int(np.argmax(gap))
        out[m] = (float(gap[i]), float(RADII[i]))
    return out


def pct(v: float) -> str:
    return "n/a" if v is None or np.isnan(v) else f"{100 * v:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "embedded"))
    parser.add_argument("--report", default=str(ROOT / "results" / "dual-embedded.md"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-certify", action="store_true")
    parser.add_argument("--timing-images", type=int, default=50)
    parser.add_argument("--timing-rounds", type=int, default=6)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from rsbench.zoo import load_zoo

    zoos = extra_zoos()
    zoo = load_zoo(zoos)
    experts = list(zoo.get(DUAL).experts)
    duals = [DUAL] + ([DUAL_CT] if DUAL_CT in zoo else [])
    ct_experts = list(zoo.get(DUAL_CT).experts) if DUAL_CT in zoo else []
    out = Path(args.out)
    commands = []
    if not args.skip_certify:
        commands = certify(experts + duals, zoos, out, args.threads)
    acc, env, orc, oracle_images, seconds, counts, choices = curves(out, experts, duals)
    gaps = shortfalls(acc, env)
    single_gaps = [gaps[e][0] for e in experts if e in gaps]
    bound = min(single_gaps) / 2 if single_gaps else float("nan")

    ratio, single_t, dual_t, ratios = timing(
        zoos, DUAL, args.timing_images, args.timing_rounds, 100, 2000
    )
    run_ratio = seconds[DUAL] / statistics.mean(seconds[e] for e in experts)

    lines = ["# Dual randomized smoothing on the embedded Fashion-MNIST set", ""]
    lines += [
        "Produced by `python bench/dual_embedded.py` (this file is overwritten by it).",
        "",
        "**Protocol** (`cpu`): the embedded Fashion-MNIST test subset, every 4th of the first 2,000",
        "test images (500 images, indices 0, 4, ..., 1996), n0 = 100, n = 2,000 (per stage for the",
        "dual models), total alpha = 0.001 (dual: 0.0005 router + 0.0005 expert), seed 0, CPU, fp32.",
        "Per-sample certificates: Parquet under `results/embedded/`. With n = 2,000 the largest",
        "reachable radius is 2.63 sigma (experts) and 2.67 sigma at alpha/2 for each dual stage.",
        "",
        "Models: experts "
        + ", ".join(f"`{e}`" for e in experts)
        + f"; dual `{DUAL}` (router `{zoo.get(DUAL).router}`, sigma_router"
        f" {zoo.get(DUAL).sigma_router:g})"
        + (
            f"; co-trained dual `{DUAL_CT}` (router `{zoo.get(DUAL_CT).router}`, experts "
            + ", ".join(f"`{e}`" for e in ct_experts)
            + ")"
            if DUAL_CT in zoo
            else "; no co-trained dual entry exists"
        )
        + ".",
        "",
        "## Certified accuracy (%) at radius r",
        "",
        "| model | " + " | ".join(f"{r:g}" for r in RADII) + " | largest shortfall (at r) |",
        "|---|" + "---|" * (len(RADII) + 1),
    ]
    for m in experts + duals:
        if m in acc:
            gap, where = gaps[m]
            lines.append(
                f"| {m} | "
                + " | ".join(pct(v) for v in acc[m])
                + f" | {100 * gap:.1f} ({where:g}) |"
            )
    lines.append("| envelope of the experts | " + " | ".join(pct(v) for v in env) + " | 0 |")
    lines.append(
        f"| oracle (best expert per image, {oracle_images} images; upper bound) | "
        + " | ".join(pct(v) for v in orc)
        + " | |"
    )
    lines += ["", "## Target 1: dual close to the envelope", ""]
    lines.append(
        "Largest shortfall below the envelope over r in {0, 0.25, ..., 2.0}: "
        + ", ".join(f"{m} {100 * gaps[m][0]:.1f} pts (r = {gaps[m][1]:g})" for m in experts)
        + f". Smallest of the single experts: {100 * min(single_gaps):.1f} pts; half of it:"
        f" {100 * bound:.1f} pts."
    )
    lines.append("")
    for d in duals:
        if d in gaps:
            met = gaps[d][0] < bound
            lines.append(
                f"- `{d}`: largest shortfall {100 * gaps[d][0]:.1f} pts (r = {gaps[d][1]:g}) "
                f"{'<' if met else '>='} {100 * bound:.1f} pts: **target {'met' if met else 'not met'}**."
            )
    lines += ["", "Router choices on the test subset (share of images; -1 = router abstained):", ""]
    for d, share in choices.items():
        names = ["abstain"] + experts if d == DUAL else ["abstain"] + ct_experts
        lines.append(
            f"- `{d}`: " + ", ".join(f"{names[k + 1]} {100 * v:.1f}%" for k, v in share.items())
        )
    lines += ["", "## Target 2: time of dual certification vs one expert (same n)", ""]
    lines.append(
        f"Measured in one process with {args.threads} torch threads, interleaved on the same"
        f" {args.timing_images} images (n0 = 100, n = 2,000 per stage), {args.timing_rounds}"
        f" rounds cycling through the experts: single expert {single_t:.3f} s/image, dual"
        f" {dual_t:.3f} s/image; median ratio **{ratio:.2f}** (rounds: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"): **target <= 1.4 {'met' if ratio <= 1.4 else 'not met'}**."
    )
    lines.append(
        f"From the stored runs (per-sample `seconds`, other processes sharing the CPU): dual"
        f" {seconds[DUAL]:.3f} s/image vs the experts' mean"
        f" {statistics.mean(seconds[e] for e in experts):.3f} s/image, ratio {run_ratio:.2f}."
    )
    router_arch = zoo.get(zoo.get(DUAL).router).arch
    expert_arch = zoo.get(experts[0]).arch
    lines.append(
        f"The router's architecture is `{router_arch}`, the experts' `{expert_arch}`; each stage"
        " draws the same number of noisy samples, so the ratio is 1 + (router stage cost) /"
        " (expert stage cost)."
    )
    lines += ["", "## Commands", "", "```"]
    lines += commands or [
        "(certification skipped: --skip-certify; rows already in results/embedded/)"
    ]
    lines += ["python bench/dual_embedded.py", "```", ""]
    lines.append(f"Rows used: {counts}.")
    Path(args.report).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

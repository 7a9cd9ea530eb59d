"""What limits a dual model against the cascade and the envelope: the router's radius or its choice.

Reads committed result rows (default: the embedded 500-image, n = 2,000 runs in
``results/embedded``) and prints certified accuracy (%) on the leaderboard grid for

* ``envelope``: per radius, the best of the dual's experts' own runs on the same images;
* ``cascade``: the cascade run (the sound ``union`` alpha split; the ``reference`` split's run
  beside it is not a certificate for every input);
* ``dual``: the dual run as certified (radius ``min(R_router, R_expert)``);
* ``two-sided router``: the same rows with the router radius replaced by the two-sided bound
  ``sigma_r / 2 * (Phi^-1(pA_lower) - Phi^-1(pB_upper))``, ``pA_lower`` at ``alpha_router / 2`` and
  each other expert's Clopper-Pearson upper bound at ``alpha_router / (2 (K - 1))`` (Bonferroni:
  the pair holds with probability >= 1 - alpha_router, so this certificate would be as sound as the
  one-sided one; it is a candidate router certificate, measured here, not shipped);
* ``no router radius``: the expert's radius alone: NOT a certificate, an upper bound on what any
  router certificate could add with the same choices. Where it is still below the cascade, the
  choice (not the radius) limits the dual.

Never asserts; an analysis of stored counts (no sampling).

    python bench/dual_router_radius.py
    python bench/dual_router_radius.py --dual results/embedded/embedded-fmnist-xdual-* \
        --cascade results/embedded/embedded-fmnist-cascade-custom-*-ae6ed7e2988a \
        --experts 'results/embedded/embedded-fmnist-s*'
"""

from __future__ import annotations

import argparse
import glob

import numpy as np
from scipy.stats import norm

from rsbench.engine.stats import clopper_pearson_lower, clopper_pearson_upper
from rsbench.results.storage import read_results

GRID = np.arange(0, 2.01, 0.25)


def accuracy(correct: np.ndarray, radius: np.ndarray) -> np.ndarray:
    return np.array([100 * np.mean(correct & (radius >= r)) for r in GRID])


def two_sided_router_radius(frame) -> np.ndarray:
    counts = np.stack(frame.router_counts.values)
    n = frame.router_n.values
    top = frame.router_cA.values
    alpha = frame.alpha_router.values
    rows = np.arange(len(frame))
    lower = clopper_pearson_lower(counts[rows, top], n, alpha / 2)
    others = counts.shape[1] - 1
    upper = clopper_pearson_upper(counts, n[:, None], (alpha / (2 * others))[:, None])
    upper[rows, top] = -1.0
    pb = np.clip(upper.max(axis=1), 1e-300, 1.0)
    sigma = frame.sigma_router.values
    radius = sigma / 2 * (norm.ppf(lower) - norm.ppf(pb))
    return np.where((lower > pb) & (frame.router_choice.values >= 0), radius, 0.0)


def one(pattern: str):
    paths = sorted(glob.glob(pattern))
    if len(paths) != 1:
        raise SystemExit(f"{pattern!r} matches {len(paths)} run folders; give exactly one")
    return read_results(paths[0]).sort_values("index").reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dual", default="results/embedded/embedded-fmnist-xdual-*")
    parser.add_argument(
        "--cascade", default="results/embedded/embedded-fmnist-cascade-custom-*-ae6ed7e2988a"
    )
    parser.add_argument("--experts", default="results/embedded/embedded-fmnist-s*")
    args = parser.parse_args()

    dual = one(args.dual)
    cascade = one(args.cascade)
    experts = [one(p) for p in sorted(glob.glob(args.experts))]
    for frame in [cascade, *experts]:
        if not np.array_equal(frame["index"].values, dual["index"].values):
            raise SystemExit("the runs certify different images; compare runs on the same images")
    correct = dual.correct.values.astype(bool)
    expert_radius = dual.expert_radius.fillna(0.0).values
    rows = {
        "envelope": np.max(
            [accuracy(e.correct.values.astype(bool), e.radius.values) for e in experts], axis=0
        ),
        "cascade": accuracy(cascade.correct.values.astype(bool), cascade.radius.values),
        "dual": accuracy(correct, dual.radius.values),
        "two-sided router": accuracy(
            correct, np.minimum(two_sided_router_radius(dual), expert_radius)
        ),
        "no router radius": accuracy(correct, expert_radius),
    }
    print(
        f"{len(dual)} images; certified accuracy (%) at r = " + " / ".join(f"{r:g}" for r in GRID)
    )
    for name, values in rows.items():
        print(f"  {name:<18} " + " / ".join(f"{v:.1f}" for v in values))
    gap = rows["dual"] - rows["cascade"]
    print("  dual - cascade     " + " / ".join(f"{v:+.1f}" for v in gap))


if __name__ == "__main__":
    main()

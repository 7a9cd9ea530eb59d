"""A dual behind a denoiser router, head to head on the embedded test protocol (issue 24).

Certifies one dual model (``--dual``, e.g. the one chosen on held-out *training* images by
``bench/router_variants.py``) once on the embedded Fashion-MNIST test images with the benchmark's
budget (n0 = 100, n = 2,000, alpha = 0.001), every ``--stride``-th image (default 20: 100 of the
500 images of the committed ``stride 4`` runs, because one router sample of a DDPM-denoiser
router costs ~240 expert forwards), then compares it with the committed 500-image runs of
``results/embedded`` (the three experts, ``embedded-fmnist-xdual`` and ``embedded-fmnist-cascade``
with the union alpha split) on the images they share (``rsbench compare`` scores every model on
the common images: here the subset). Prints the head-to-head table and, per radius, dual minus
cascade and the shortfall below the experts' envelope for both duals.

Usage::

    python bench/dual_denoised_router.py --dual v-dn-ddpm-pool-dual \\
        --zoo runs/router-variants-dn/routers/zoo.yaml --out runs/dn-test
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "embedded"
BASELINES = [
    "embedded-fmnist-s0.25-custom-fashion-mnist-embedded-s0.25-b33d2f9b7eef",
    "embedded-fmnist-s0.50-custom-fashion-mnist-embedded-s0.5-42519e23d9ec",
    "embedded-fmnist-s1.00-custom-fashion-mnist-embedded-s1-eaff54dc1eaa",
    "embedded-fmnist-xdual-custom-fashion-mnist-embedded-de7892b4013c",
    "embedded-fmnist-cascade-custom-fashion-mnist-embedded-ae6ed7e2988a",  # alpha_split union
]
RADII = "0:1.75:0.25"


def certify(dual: str, zoo: Path | None, stride: int, out: Path) -> Path:
    args = [sys.executable, "-m", "rsbench", "certify", dual]
    args += ["--zoo", str(zoo)] if zoo else []
    args += ["--dataset", "fashion-mnist", "--split", "embedded", "--stride", str(stride)]
    args += ["--n0", "100", "--n", "2000", "--alpha", "0.001", "--device", "cpu"]
    args += ["--threads", "1", "--out", str(out), "--no-leaderboard"]
    print("$ " + shlex.join(args), flush=True)
    subprocess.run(args, check=True, cwd=ROOT)
    (run,) = out.glob(f"{dual}-custom-fashion-mnist-embedded-*")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dual", required=True)
    parser.add_argument("--zoo", type=Path, default=None, help="zoo file holding the dual")
    parser.add_argument("--stride", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "dn-test")
    args = parser.parse_args()

    from rsbench.report import headtohead, metrics

    run = certify(args.dual, args.zoo, args.stride, args.out)
    paths = [str(COMMITTED / name) for name in BASELINES] + [str(run)]
    radii = metrics.check_radii(np.round(np.arange(0.0, 1.7501, 0.25), 2))
    table = headtohead.compare(_read(paths), radii, headtohead.router_forwards_of(paths))
    print(headtohead.to_markdown(table))
    cols = [metrics.radius_column(r) for r in radii]
    by = table.set_index("model")
    env = by.loc["envelope of the experts", cols].to_numpy(dtype=float)
    cascade = by.loc["embedded-fmnist-cascade", cols].to_numpy(dtype=float)
    head = " | ".join(f"{r:g}" for r in radii)
    print(f"\n| per radius (points) | {head} | largest |\n|---|" + "---|" * (len(radii) + 1))
    for dual in ("embedded-fmnist-xdual", args.dual):
        curve = by.loc[dual, cols].to_numpy(dtype=float)
        for name, values in (
            (f"{dual} - cascade", curve - cascade),
            (f"envelope - {dual}", env - curve),
        ):
            cells = " | ".join(f"{100 * v:+.1f}" for v in values)
            extreme = values.min() if "cascade" in name else values.max()
            print(f"| {name} | {cells} | {100 * extreme:+.1f} |")


def _read(paths: list[str]):
    from rsbench.results.storage import read_results

    return read_results(paths)


if __name__ == "__main__":
    main()

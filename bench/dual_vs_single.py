"""Dual vs single-expert certification time at the same n, and where the difference goes.

On the embedded Fashion-MNIST images, with the embedded dual model (its router, ``pooled_mlp``
in the packaged zoo, over three ``fmnist_cnn`` experts) and its sigma = 0.50 expert alone, certifies the same images at the same
n0 / n (dual: per stage) the way the runner does (``runner.images_per_call`` images per call):

* ``single``: CERTIFY with the expert;
* ``dual``: DUAL CERTIFY (router stage, then the chosen expert on the images the router did not
  abstain on);
* ``router``: the router stage alone (CERTIFY with the smoothed router).

Rounds are interleaved (single, dual, router, ...) and medians compared. The dual's cost is the
router stage plus the expert stage, so the expected ratio is about
``1 + router / single`` (less when the router abstains: those images skip the expert stage). The
router/expert forward-cost ratio from bare forward loops is printed next to it. Never asserts.

    python bench/dual_vs_single.py                       # 48 images, n0 = 100, n = 1000
    python bench/dual_vs_single.py --n 10000 --images 16 --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from rsbench.run import runconfig, runner

ROOT = Path(__file__).resolve().parents[1]
DUAL, EXPERT = "embedded-fmnist-dual", "embedded-fmnist-s0.50"


def load(batch: int):
    """(zoo, DualSmoothed, the expert's SmoothedClassifier, the dual entry)."""
    from rsbench.api import load_dual
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo()
    dual = load_dual(zoo, DUAL, batch_size=batch)
    position = list(zoo.get(DUAL).experts).index(EXPERT)
    return zoo, dual, dual.experts[position]


def timed(certifier, images, n0: int, n: int, group: int) -> tuple[float, list]:
    """Seconds to certify ``images`` in calls of ``group`` images; the certificates."""
    certs, start = [], time.perf_counter()
    for first in range(0, images.shape[0], group):
        part = images[first : first + group]
        indices = range(first, first + part.shape[0])
        certs += certifier.certify_batch(part, n0, n, 0.001, seed=0, indices=indices)
    return time.perf_counter() - start, certs


def forward_rate(model, batch: int, shape, repeats: int = 20) -> float:
    """Samples per second of a bare forward + argmax loop over 4 pre-made batches."""
    batches = [torch.rand(batch, *shape) for _ in range(4)]
    with torch.inference_mode():
        model(batches[0]).argmax(1)
        start = time.perf_counter()
        for i in range(repeats):
            model(batches[i % 4]).argmax(1)
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=runconfig.DEFAULT_BATCH)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=runconfig.EMBEDDED_DEFAULT_THREADS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from rsbench.data.dataset import load_dataset

    zoo, dual, expert = load(args.batch)
    data = load_dataset("fashion-mnist", "embedded")
    images = data.images(range(args.images))
    config = runconfig.RunConfig(
        model_id=DUAL, kind="dual", dataset="fashion-mnist", split="embedded", protocol="cpu",
        n0=args.n0, n=args.n, alpha=0.001, batch_size=args.batch,
    )  # fmt: skip
    group = runner.images_per_call(config)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load "
        f"{os.getloadavg()[0]:.2f}; {args.images} images, n0={args.n0}, n={args.n} (dual: per "
        f"stage), batch {args.batch}, {group} images per call, {args.rounds} interleaved rounds"
    )
    timed(dual, images[:2], 10, 100, group)  # warm-up
    timed(expert, images[:2], 10, 100, group)
    times: dict[str, list[float]] = {"single": [], "dual": [], "router": []}
    dual_certs = []
    for _ in range(args.rounds):
        times["single"].append(timed(expert, images, args.n0, args.n, group)[0])
        seconds, dual_certs = timed(dual, images, args.n0, args.n, group)
        times["dual"].append(seconds)
        times["router"].append(timed(dual.router, images, args.n0, args.n, group)[0])
    single, both, router = (statistics.median(times[k]) for k in ("single", "dual", "router"))
    abstained = sum(c.router_choice < 0 for c in dual_certs)
    shape = tuple(images.shape[1:])
    rate_router = forward_rate(dual.router.base, args.batch, shape)
    rate_expert = forward_rate(expert.base, args.batch, shape)
    ran = (args.images - abstained) / args.images
    router_arch = zoo.get(zoo.get(DUAL).router).arch
    print(f"single expert ({EXPERT}): {single:7.2f} s  ({args.images / single:6.1f} images/s)")
    print(f"dual ({DUAL}):    {both:7.2f} s  ({args.images / both:6.1f} images/s)")
    print(f"router stage alone:               {router:7.2f} s")
    print(f"dual / single:                    {both / single:7.3f}   (paper: 1.6; target <= 1.4)")
    print(
        f"expected from the stages:         {router / single + ran:7.3f}   (router/single "
        f"{router / single:.3f} + expert stage on {ran:.0%} of the images: the router abstained "
        f"on {abstained})"
    )
    print(
        f"bare forward, samples/s:          router ({router_arch}) {rate_router:,.0f}, expert "
        f"{rate_expert:,.0f}: "
        f"router cost / expert cost = {rate_expert / rate_router:.3f}"
    )


if __name__ == "__main__":
    main()

"""Batch size x torch threads for CPU certification of the embedded default's networks.

For each network (the embedded experts' ``fmnist_cnn`` and the router's ``mlp``, random weights of
the same shapes: speed does not depend on the values) and each (batch, threads) pair, certifies
``--images`` synthetic 28x28 images under the cpu protocol (n0 = 100, n = 1,000) exactly as the
runner does (``runner.images_per_call`` images per CERTIFY call) and reports certified samples per
second. Every repeat runs all pairs, in a rotated order, so that a change of machine load hits all
pairs alike; the median over repeats is printed, and the best and worst repeat. Never asserts.

    python bench/cpu_defaults.py                         # both networks, default grid
    python bench/cpu_defaults.py --nets fmnist_cnn --batches 500,1000 --threads 1,2 --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from rsbench.engine.smoothing import SmoothedClassifier
from rsbench.models.archs import build_architecture
from rsbench.run import runconfig, runner

SHAPE = (1, 28, 28)


def certify_rate(model, images, batch: int, threads: int, n0: int, n: int) -> float:
    """Certified noisy samples per second for ``images``, grouped as the runner groups them."""
    torch.set_num_threads(threads)
    smoothed = SmoothedClassifier(model, 10, 0.5, batch_size=batch)
    config = runconfig.RunConfig(
        model_id="bench", kind="expert", dataset="d", split="s", protocol="cpu", n0=n0, n=n,
        alpha=0.001, batch_size=batch, chunk_size=64,
    )  # fmt: skip
    group = runner.images_per_call(config)
    start = time.perf_counter()
    for first in range(0, images.shape[0], group):
        part = images[first : first + group]
        smoothed.certify_batch(part, n0, n, 0.001, indices=range(first, first + part.shape[0]))
    return images.shape[0] * (n0 + n) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nets", default="fmnist_cnn,mlp")
    parser.add_argument("--batches", default="250,500,1000,2000,4000")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    pairs = [(b, t) for t in threads for b in batches]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
        f"{args.images} images x (100 + 1000) samples per measurement, {args.repeats} repeats"
    )
    for name in args.nets.split(","):
        torch.manual_seed(0)
        model = build_architecture(name, 10, SHAPE).eval()
        images = torch.rand(args.images, *SHAPE)
        certify_rate(model, images[:2], 1000, 1, 100, 1000)  # warm-up
        rates: dict[tuple[int, int], list[float]] = {p: [] for p in pairs}
        for repeat in range(args.repeats):
            shift = repeat % len(pairs)
            for pair in pairs[shift:] + pairs[:shift]:
                rates[pair].append(certify_rate(model, images, *pair, 100, 1000))
        best = max(pairs, key=lambda p: statistics.median(rates[p]))
        print(f"\n{name}: samples/s (median [min-max]); load now {os.getloadavg()[0]:.2f}")
        print(f"{'batch':>6}" + "".join(f"{f'{t} thread(s)':>26}" for t in threads))
        for b in batches:
            cells = []
            for t in threads:
                r = rates[(b, t)]
                cells.append(f"{statistics.median(r):>9.0f} [{min(r):>6.0f}-{max(r):>6.0f}]")
            print(f"{b:>6}" + "".join(f"{c:>26}" for c in cells))
        print(f"best: batch {best[0]}, {best[1]} thread(s)")


if __name__ == "__main__":
    main()

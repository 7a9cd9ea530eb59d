"""Samples per second of a denoised expert against its bare classifier, in the same process.

A denoised expert's base model is ``classifier(denoise(x + noise, sigma))``: every noisy sample
pays a denoiser pass. This script certifies the same embedded Fashion-MNIST images at the same
n0 / n and sigma with

* ``bare``: the classifier alone (``embedded-fmnist-clean``, a zoo expert) smoothed at sigma;
* ``denoised``: the denoised expert at sigma (``embedded-fmnist-denoised``: ``small_denoiser`` +
  that classifier),

in interleaved rounds, and prints the median samples per second of each and their ratio. It also
prints what ``rsbench certify --dry-run`` measures for each (``certifiers.measure_throughput`` on the
composed model), to show the estimate includes the denoiser. Never asserts.

    python bench/denoised_throughput.py                     # 32 images, n0 = 100, n = 1000, sigma 0.5
    python bench/denoised_throughput.py --threads 1 --sigma 1.0 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

DENOISED, CLASSIFIER = "embedded-fmnist-denoised", "embedded-fmnist-clean"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--denoised", default=DENOISED)
    parser.add_argument("--classifier", default=CLASSIFIER)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from rsbench.data.dataset import load_dataset
    from rsbench.engine import device as D
    from rsbench.engine.smoothing import SmoothedClassifier
    from rsbench.models.loading import load_model
    from rsbench.run import certifiers
    from rsbench.zoo.registry import load_zoo

    device = D.resolve(args.device)
    D.activate(device)
    zoo = load_zoo()
    entry = zoo.get(args.denoised)
    classes = entry.num_classes
    common = dict(batch_size=args.batch, device=device.torch)
    bare_model = load_model(zoo.get(args.classifier), device.torch)
    bare = SmoothedClassifier(bare_model, classes, args.sigma, **common)
    denoised_model = load_model(entry, device.torch, sigma=args.sigma)
    denoised = SmoothedClassifier(denoised_model, classes, args.sigma, **common)
    data = load_dataset("fashion-mnist-embedded", "test")
    images = data.images(list(range(args.images)))
    group = max(1, min(64, -(-4 * args.batch // (args.n0 + args.n))))
    samples = args.images * (args.n0 + args.n)

    def rate(certifier) -> float:
        start = time.perf_counter()
        for first in range(0, args.images, group):
            part = images[first : first + group]
            certifier.certify_batch(
                part, args.n0, args.n, 0.001, seed=0, indices=range(first, first + len(part))
            )
        return samples / (time.perf_counter() - start)

    rate(bare), rate(denoised)  # warm-up
    rates: dict[str, list[float]] = {"bare": [], "denoised": []}
    for _ in range(args.rounds):
        rates["bare"].append(rate(bare))
        rates["denoised"].append(rate(denoised))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"{args.denoised} vs {args.classifier}: sigma {args.sigma:g}, {args.images} images, "
        f"n0 {args.n0} + n {args.n}, batch {args.batch}, {device}, torch threads {torch.get_num_threads()}, "
        f"{args.rounds} rounds (medians)"
    )
    for name, value in medians.items():
        print(f"  {name:9s} {value:12,.0f} samples/s")
    print(f"  ratio     bare / denoised = {medians['bare'] / medians['denoised']:.1f}x")
    dry = {
        name: certifiers.measure_throughput(certifier, images[0])
        for name, certifier in (("bare", bare), ("denoised", denoised))
    }
    print(
        "  --dry-run throughput (certifiers.measure_throughput): "
        + ", ".join(f"{k} {v:,.0f} samples/s" for k, v in dry.items())
    )


if __name__ == "__main__":
    main()

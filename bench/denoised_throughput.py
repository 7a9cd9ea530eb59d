"""Samples per second of denoised experts against a Gaussian-trained expert, in the same process.

A denoised expert's base model is ``classifier(denoise(x + noise, sigma))``: every noisy sample
pays a denoiser pass. This script certifies the same embedded Fashion-MNIST images at the same
n0 / n and sigma with

* ``gaussian``: the Gaussian-trained expert at sigma (default ``embedded-fmnist-s0.50``: one
  ``fmnist_cnn``, the same network as the denoised experts' classifier);
* each denoised expert at sigma (default ``embedded-fmnist-ddpm``, the ``small_ddpm_unet``
  diffusion denoiser, and ``embedded-fmnist-denoised``, the ``small_denoiser``),

in interleaved rounds, and prints the median samples per second of each and the ratio
gaussian / denoised. It also prints what ``rsbench certify --dry-run`` measures for each
(``certifiers.measure_throughput`` on the composed model), to show the estimate includes the
denoiser. Never asserts.

    python bench/denoised_throughput.py                     # 16 images, n0 = 100, n = 500, sigma 0.5
    python bench/denoised_throughput.py --threads 1 --sigma 1.0 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

DENOISED = "embedded-fmnist-ddpm,embedded-fmnist-denoised"
GAUSSIAN = "embedded-fmnist-s0.50"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--denoised", default=DENOISED, help="comma list of denoised entries")
    parser.add_argument("--gaussian", default=GAUSSIAN, help="the expert to compare with")
    parser.add_argument("--zoo", action="append", default=[], help="extra zoo file(s)")
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=500)
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
    zoo = load_zoo(args.zoo)
    gaussian = zoo.get(args.gaussian)
    classes = gaussian.num_classes
    common = dict(batch_size=args.batch, device=device.torch)
    certifiers_by_name = {
        "gaussian": SmoothedClassifier(
            load_model(gaussian, device.torch), classes, args.sigma, **common
        )
    }
    for name in args.denoised.split(","):
        model = load_model(zoo.get(name), device.torch, sigma=args.sigma)
        certifiers_by_name[name] = SmoothedClassifier(model, classes, args.sigma, **common)
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

    for certifier in certifiers_by_name.values():  # warm-up
        rate(certifier)
    rates: dict[str, list[float]] = {name: [] for name in certifiers_by_name}
    for _ in range(args.rounds):
        for name, certifier in certifiers_by_name.items():
            rates[name].append(rate(certifier))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"{args.denoised} vs {args.gaussian}: sigma {args.sigma:g}, {args.images} images, "
        f"n0 {args.n0} + n {args.n}, batch {args.batch}, {device}, torch threads "
        f"{torch.get_num_threads()}, {args.rounds} interleaved rounds (medians)"
    )
    for name, value in medians.items():
        ratio = (
            "" if name == "gaussian" else f"   gaussian / this = {medians['gaussian'] / value:.1f}x"
        )
        print(f"  {name:26s} {value:12,.0f} samples/s{ratio}")
    dry = {
        name: certifiers.measure_throughput(certifier, images[0])
        for name, certifier in certifiers_by_name.items()
    }
    print(
        "  --dry-run throughput (certifiers.measure_throughput): "
        + ", ".join(f"{k} {v:,.0f} samples/s" for k, v in dry.items())
    )


if __name__ == "__main__":
    main()

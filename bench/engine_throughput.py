"""Certification engine vs a bare forward loop, measured in one process on this machine.

For each network, (a) a bare loop of forward passes (argmax) over pre-made noisy batches, and
(b) ``SmoothedClassifier.certify_batch`` over the same total number of noisy samples (noise
generation, packing and vote counting included). Prints samples/s of both and the ratio (b)/(a).
Runs are interleaved and the median of ``--repeats`` is reported. Never asserts a time.

    python bench/engine_throughput.py                     # fp32, default sizes
    python bench/engine_throughput.py --precision bf16 --channels-last
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rsbench.archs import build_architecture
from rsbench.sampling import precision_context
from rsbench.smoothing import SmoothedClassifier


def bare_loop(
    model, batches: list[torch.Tensor], total: int, precision: str, channels_last: bool
) -> float:
    """Seconds for ``total`` samples of plain forward + argmax over pre-made noisy batches."""
    done, start = 0, time.perf_counter()
    with torch.inference_mode(), precision_context(precision, torch.device("cpu")):
        while done < total:
            batch = batches[(done // batches[0].shape[0]) % len(batches)]
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            model(batch).argmax(dim=1)
            done += batch.shape[0]
    return time.perf_counter() - start


def engine(
    model, images, n0: int, n: int, batch: int, precision: str, channels_last: bool
) -> float:
    smoothed = SmoothedClassifier(
        model, 10, sigma=0.25, batch_size=batch, precision=precision, channels_last=channels_last
    )
    start = time.perf_counter()
    smoothed.certify_batch(images, n0=n0, n=n, alpha=0.001, seed=0)
    return time.perf_counter() - start


def measure(name: str, arch: str, shape, images: int, n0: int, n: int, batch: int, args) -> float:
    torch.manual_seed(0)
    model = build_architecture(arch, 10, shape).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = torch.rand(images, *shape)
    total = images * (n0 + n)
    batches = [(data[i % images] + 0.25 * torch.randn(batch, *shape)) for i in range(4)]
    bare_loop(model, batches, batch * 2, args.precision, args.channels_last)  # warm-up
    bare_times, engine_times = [], []
    for _ in range(args.repeats):
        bare_times.append(bare_loop(model, batches, total, args.precision, args.channels_last))
        engine_times.append(engine(model, data, n0, n, batch, args.precision, args.channels_last))
    bare, eng = statistics.median(bare_times), statistics.median(engine_times)
    ratio = bare / eng
    print(
        f"{name:<14} {args.precision:<5} cl={int(args.channels_last)} batch={batch:<5} samples={total:<7} "
        f"bare {total / bare:10.0f}/s  engine {total / eng:10.0f}/s  ratio {ratio:.3f}"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "tf32"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    measure("cifar_resnet20", "cifar_resnet20", (3, 32, 32), 2, 100, 2000, 400, args)
    measure("mlp", "mlp", (1, 28, 28), 4, 100, 10_000, 1000, args)
    measure("fmnist_cnn", "fmnist_cnn", (1, 28, 28), 4, 100, 10_000, 1000, args)


if __name__ == "__main__":
    main()

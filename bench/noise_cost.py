"""Cost of the sound noise: float64 draws (cast to float32) against float32 draws, same process.

rsbench draws the Gaussian noise of inputs with 2,048 values or more in float64 and casts it to
float32 (``--noise-dtype auto``, the default), because float32 ``torch.randn`` truncates the tails
(docs/reliability.md, section 2); ``--noise-dtype float32`` is the opt-out. This script measures what
the float64 draws cost, through the engine itself (``VoteCounter.count``):

* **noise only**: a model that reads one value per sample (so the forward pass costs nothing) at
  the sizes of Fashion-MNIST (784 values), CIFAR-10 (3,072) and ImageNet (150,528): samples per
  second with ``noise_dtype="float32"`` and ``"float64"``, and their ratio;
* **end to end**: the same with a real network at the same batch (CPU: ``cifar_resnet20`` on a
  CIFAR-10-size image; CUDA: ``cifar_resnet110`` on CIFAR-10 and ``resnet50`` on ImageNet size),
  where the ratio is what a certification run pays.

The two dtypes alternate ``--repeats`` times; each ratio is the median of the per-round ratios
(which cancels most of a shared machine's drift). Prints a table; never asserts a time.

    python bench/noise_cost.py                    # CPU, 1 torch thread
    python bench/noise_cost.py --device cuda      # the GPU figures (bench/gpu.sh runs this)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from rsbench.engine.noise import NoiseKey
from rsbench.engine.sampling import VoteCounter
from rsbench.models.archs import build_architecture


class OneValue(nn.Module):
    """Logits from the first 10 input values: the forward pass costs (almost) nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]


def rate(counter: VoteCounter, image: torch.Tensor, num: int, calls: int) -> float:
    """Noisy samples per second of ``counter`` on ``image`` (``calls`` calls of ``num`` samples)."""
    keys = [NoiseKey("bench", "test", 0, "estimate", 0)]
    device = counter.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        counter.count(image, 0.5, num, keys)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return calls * num / (time.perf_counter() - start)


def measure(model, shape, batch, num, calls, repeats, device) -> tuple[float, float, float]:
    """(float32 samples/s, float64 samples/s, median per-round ratio float64 time / float32 time)."""
    model = model.to(device).eval()
    image = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    counters = {
        dtype: VoteCounter(model, 10, batch_size=batch, noise_dtype=dtype, device=device)
        for dtype in ("float32", "float64")
    }
    for counter in counters.values():  # warm-up (allocations, cudnn autotuning)
        rate(counter, image, min(num, batch), 1)
    rates: dict[str, list[float]] = {"float32": [], "float64": []}
    ratios = []
    for r in range(repeats):
        order = ("float32", "float64") if r % 2 == 0 else ("float64", "float32")
        now = {dtype: rate(counters[dtype], image, num, calls) for dtype in order}
        for dtype, value in now.items():
            rates[dtype].append(value)
        ratios.append(now["float32"] / now["float64"])
    return (
        statistics.median(rates["float32"]),
        statistics.median(rates["float64"]),
        statistics.median(ratios),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    cases = [  # label, model, shape, batch, samples per call, calls
        ("noise only, 1x28x28", OneValue(), (1, 28, 28), 1000, 10_000, 2),
        ("noise only, 3x32x32", OneValue(), (3, 32, 32), 1000, 10_000, 2),
        ("noise only, 3x224x224", OneValue(), (3, 224, 224), 100, 200 if not gpu else 2000, 2),
    ]
    if gpu:
        cases += [
            ("cifar_resnet110, 3x32x32", build_architecture("cifar_resnet110", 10, (3, 32, 32)),
             (3, 32, 32), 1000, 10_000, 2),
            ("resnet50, 3x224x224", build_architecture("resnet50", 10, (3, 224, 224)),
             (3, 224, 224), 200, 2000, 1),
        ]  # fmt: skip
    else:
        cases += [
            ("cifar_resnet20, 3x32x32", build_architecture("cifar_resnet20", 10, (3, 32, 32)),
             (3, 32, 32), 100, 1000, 1),
        ]  # fmt: skip
    name = (
        torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    print(f"noise cost on {name}, torch {torch.__version__}, {args.repeats} rounds")
    print("| case | float32 samples/s | float64 samples/s | float64 time / float32 time |")
    print("|---|---:|---:|---:|")
    with torch.inference_mode():
        for label, model, shape, batch, num, calls in cases:
            f32, f64, ratio = measure(model, shape, batch, num, calls, args.repeats, device)
            print(f"| {label} | {f32:,.0f} | {f64:,.0f} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

"""GPU certification throughput of a CIFAR ResNet-110 in every precision / layout option.

Certifies ``--images`` synthetic 32x32 images at ``n0 = 100``, ``n = --n`` with each option and
compares with a bare forward loop (forward + argmax over pre-made noisy batches, same batch size)
measured in the same process. Prints images/s, seconds per image, samples/s, the ratio to the bare
loop, the speed-up over fp32, and peak GPU memory. Needs only this repository and a Python with
torch, numpy and scipy (no install, no network):

    PYTHONPATH=. python3 bench/gpu_certify.py                 # or: bash bench/gpu.sh
    PYTHONPATH=. python3 bench/gpu_certify.py --device cpu --arch fmnist_cnn --images 2 --n 200 \
        --batch 100 --options fp32,bf16+cl                      # smoke test on a CPU

``--compile`` options use :func:`rsbench.engine.device.compile_model` (static shapes) and warm up on the
batch shapes of the timed run, so no compilation is timed. Stops starting new options once
``--budget`` seconds have passed. Never asserts a time.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rsbench.engine import device as D
from rsbench.engine.device import compile_model, precision_context
from rsbench.engine.smoothing import SmoothedClassifier
from rsbench.models.archs import build_architecture
from rsbench.models.network import InputLayer

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]

# (label, precision, channels_last, compile)
OPTIONS = [
    ("fp32", "fp32", False, False),
    ("tf32", "tf32", False, False),
    ("bf16", "bf16", False, False),
    ("fp16", "fp16", False, False),
    ("bf16+cl", "bf16", True, False),
    ("fp16+cl", "fp16", True, False),
    ("bf16+cl+compile", "bf16", True, True),
]


def make_model(device: torch.device, arch: str, channels_last: bool, compiled: bool):
    """The normalised network on ``device``, channels-last and/or compiled as asked."""
    torch.manual_seed(0)
    net = build_architecture(arch, 10, (3, 32, 32))
    model = (
        torch.nn.Sequential(InputLayer("normalize", CIFAR_MEAN, CIFAR_STD), net).eval().to(device)
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compiled:
        model = compile_model(model)
    return model


def bare_rate(
    model, device, batch: int, samples: int, precision: str, channels_last: bool
) -> float:
    """Samples per second of plain forward + argmax over pre-made noisy batches."""
    batches = [
        torch.rand(1, 3, 32, 32, device=device)
        + 0.25 * torch.randn(batch, 3, 32, 32, device=device)
        for _ in range(2)
    ]
    if channels_last:
        batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    with torch.inference_mode(), precision_context(precision, device):
        for b in batches:  # warm-up (and compilation)
            model(b).argmax(dim=1)
        D.synchronize(device)
        start, done = time.perf_counter(), 0
        while done < samples:
            model(batches[(done // batch) % 2]).argmax(dim=1)
            done += batch
        D.synchronize(device)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="cifar_resnet110", help="network (default ResNet-110)")
    parser.add_argument(
        "--options",
        default=",".join(o[0] for o in OPTIONS),
        help="comma-separated subset of: " + ", ".join(o[0] for o in OPTIONS),
    )
    parser.add_argument(
        "--budget", type=float, default=420.0, help="seconds after which no new option starts"
    )
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    device = D.resolve(args.device).torch
    name = D.name(device)
    print(
        f"device: {name}; torch {torch.__version__}; {args.arch}; {args.images} images, n0=100, "
        f"n={args.n}, batch {args.batch}"
    )
    wanted = [o.strip() for o in args.options.split(",") if o.strip()]
    unknown = set(wanted) - {o[0] for o in OPTIONS}
    if unknown:
        raise SystemExit(f"unknown option(s) {sorted(unknown)}; known: {[o[0] for o in OPTIONS]}")
    images = torch.rand(args.images, 3, 32, 32)
    total = args.images * (100 + args.n)
    rows, started = [], time.perf_counter()
    header = f"{'option':<17}{'img/s':>9}{'s/img':>9}{'samples/s':>12}{'bare/s':>12}{'vs bare':>9}{'vs fp32':>9}{'peak GiB':>10}"
    print(header)
    for label, precision, channels_last, compiled in OPTIONS:
        if label not in wanted:
            continue
        if time.perf_counter() - started > args.budget:
            print(f"{label:<17} skipped (time budget of {args.budget:.0f} s spent)")
            continue
        try:
            model = make_model(device, args.arch, channels_last, compiled)
            D.reset_peak_memory(device)
            bare = bare_rate(
                model,
                device,
                args.batch,
                max(args.batch * 20, total // 5),
                precision,
                channels_last,
            )
            smoothed = SmoothedClassifier(
                model,
                10,
                0.25,
                batch_size=args.batch,
                precision=precision,
                channels_last=channels_last,
            )
            # warm-up on the timed run's shapes: its selection batch, then full estimation batches
            warm_n = -(-args.batch // args.images)
            smoothed.certify_batch(images, n0=100, n=warm_n, alpha=0.001, seed=1)
            D.synchronize(device)
            start = time.perf_counter()
            smoothed.certify_batch(images, n0=100, n=args.n, alpha=0.001, seed=0)
            D.synchronize(device)
            seconds = time.perf_counter() - start
            smoothed_batch = smoothed.counter.forward_batch  # smaller after an out-of-memory
        except Exception as exc:  # report and go on with the next option
            first = (str(exc).strip().splitlines() or [""])[0][:120]
            print(f"{label:<17} failed: {type(exc).__name__}: {first}")
            continue
        finally:
            model = smoothed = None
            D.release_memory(device)
        peak_bytes = D.peak_memory(device)
        peak = peak_bytes / 2**30 if peak_bytes is not None else float("nan")
        row = {
            "option": label, "images_per_s": args.images / seconds, "s_per_image": seconds / args.images,
            "samples_per_s": total / seconds, "bare_samples_per_s": bare, "ratio_vs_bare": total / seconds / bare,
            "peak_gib": peak, "device": name, "n": args.n, "batch": args.batch, "arch": args.arch,
            "torch": torch.__version__, "forward_batch": smoothed_batch,
        }  # fmt: skip
        fp32 = next((r for r in rows if r["option"] == "fp32"), None)
        row["speedup_vs_fp32"] = row["samples_per_s"] / fp32["samples_per_s"] if fp32 else 1.0
        rows.append(row)
        print(
            f"{label:<17}{row['images_per_s']:9.3f}{row['s_per_image']:9.2f}{row['samples_per_s']:12.0f}"
            f"{bare:12.0f}{row['ratio_vs_bare']:9.3f}{row['speedup_vs_fp32']:9.2f}{peak:10.2f}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()

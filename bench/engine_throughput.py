"""Certification engine vs a bare forward loop, measured in one process on this machine.

For each network and each option (precision / memory layout / torch.compile), (a) a bare loop of
forward passes (argmax) over pre-made noisy batches, and (b) ``SmoothedClassifier.certify_batch``
over the same total number of noisy samples (noise generation, packing and vote counting
included), at the same batch size, threads and option, and (c) the same with the noise drawn in
the forward thread instead of the engine's background thread (``inline``). Prints samples/s of (a)
and (b) and the ratios (b)/(a) and (c)/(a). The three are interleaved ``--repeats`` times (the
order rotating each round); a ratio is the median over rounds of the ratio within a round, which
cancels most of the drift of a shared machine's speed. Never asserts a time. Compilation (and the engine's padded partial-batch
shapes) is warmed up before timing.

    python bench/engine_throughput.py                          # every option, 1 torch thread
    python bench/engine_throughput.py --options fp32,bf16 --threads 2 --nets fmnist_cnn,mlp
    python bench/engine_throughput.py --options fp32+compile --nets mlp --repeats 5

Options: fp32, tf32, bf16, fp16 (autocast; bf16/fp16 on CPU where torch supports them), with
``+cl`` (channels-last) and/or ``+compile`` (``torch.compile(dynamic=False)``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from rsbench.engine.device import compile_model, precision_context
from rsbench.engine.smoothing import SmoothedClassifier
from rsbench.models.archs import build_architecture

#: name -> (arch, input shape, images, n0, n, batch)
NETS = {
    "cifar_resnet20": ("cifar_resnet20", (3, 32, 32), 1, 100, 1000, 100),
    "fmnist_cnn": ("fmnist_cnn", (1, 28, 28), 4, 100, 5000, 1000),
    "mlp": ("mlp", (1, 28, 28), 4, 100, 5000, 1000),
}
DEFAULT_OPTIONS = "fp32,bf16,fp32+cl,fp32+compile"


def parse_option(text: str) -> tuple[str, bool, bool]:
    """``'bf16+cl+compile'`` -> ``('bf16', True, True)``."""
    parts = text.split("+")
    unknown = set(parts[1:]) - {"cl", "compile"}
    if parts[0] not in ("fp32", "tf32", "bf16", "fp16") or unknown:
        raise SystemExit(f"unknown option {text!r}; e.g. fp32, bf16+cl, fp32+compile")
    return parts[0], "cl" in parts[1:], "compile" in parts[1:]


def bare_loop(model, batches: list[torch.Tensor], total: int, precision: str) -> float:
    """Seconds for ``total`` samples of plain forward + argmax over pre-made noisy batches."""
    done, start = 0, time.perf_counter()
    with torch.inference_mode(), precision_context(precision, torch.device("cpu")):
        while done < total:
            batch = batches[(done // batches[0].shape[0]) % len(batches)]
            model(batch).argmax(dim=1)
            done += batch.shape[0]
    return time.perf_counter() - start


def engine(smoothed: SmoothedClassifier, images, n0: int, n: int) -> float:
    """Seconds for CERTIFY of ``images`` (n0 + n noisy samples each) through the engine."""
    start = time.perf_counter()
    smoothed.certify_batch(images, n0=n0, n=n, alpha=0.001, seed=0)
    return time.perf_counter() - start


def measure(name: str, option: str, repeats: int) -> float:
    """Print one line for ``name`` under ``option``; return the engine/bare ratio."""
    arch, shape, images, n0, n, batch = NETS[name]
    precision, channels_last, compiled = parse_option(option)
    torch.manual_seed(0)
    model = build_architecture(arch, 10, shape).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compiled:
        model = compile_model(model)
    data = torch.rand(images, *shape)
    total = images * (n0 + n)
    batches = [(data[i % images] + 0.25 * torch.randn(batch, *shape)) for i in range(4)]
    if channels_last:
        batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    kwargs = dict(batch_size=batch, precision=precision, channels_last=channels_last)
    smoothed = SmoothedClassifier(model, 10, 0.25, **kwargs)
    inline = SmoothedClassifier(model, 10, 0.25, **kwargs)
    inline.counter.overlap = False
    bare_loop(model, batches, batch * 2, precision)  # warm-up (and compilation)
    engine(smoothed, data, n0, n)  # warm-up (and the padded shapes' compilation)
    engine(inline, data, n0, n)
    runs = {
        "bare": lambda: bare_loop(model, batches, total, precision),
        "engine": lambda: engine(smoothed, data, n0, n),
        "inline": lambda: engine(inline, data, n0, n),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for round_ in range(repeats):
        for key in order[round_ % 3 :] + order[: round_ % 3]:
            times[key].append(runs[key]())
    ratios = [b / e for b, e in zip(times["bare"], times["engine"])]
    inline_ratio = statistics.median(b / i for b, i in zip(times["bare"], times["inline"]))
    bare, eng = statistics.median(times["bare"]), statistics.median(times["engine"])
    ratio = statistics.median(ratios)
    print(
        f"{name:<15}{option:<16}{batch:>6}{total:>8}{total / bare:>11.0f}{total / eng:>11.0f}"
        f"{ratio:>8.3f} [{min(ratios):.2f}-{max(ratios):.2f}]{inline_ratio:>8.3f}",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--options", default=DEFAULT_OPTIONS, help="comma-separated options")
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated networks")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = [o.strip() for o in args.options.split(",") if o.strip()]
    for option in options:
        parse_option(option)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, load {load:.2f}; "
        f"{args.repeats} interleaved rounds; ratio: median of the per-round ratios [their range]; "
        "inline: noise drawn in the forward thread"
    )
    print(
        f"{'net':<15}{'option':<16}{'batch':>6}{'samples':>8}{'bare/s':>11}{'engine/s':>11}"
        f"{'ratio':>8}{'':>12}{'inline':>8}"
    )
    for name in args.nets.split(","):
        for option in options:
            try:
                measure(name.strip(), option, args.repeats)
            except Exception as exc:  # report and go on (e.g. an option torch lacks on this CPU)
                first = (str(exc).strip().splitlines() or [""])[0][:100]
                print(f"{name:<15}{option:<16} failed: {type(exc).__name__}: {first}")


if __name__ == "__main__":
    main()

"""Accuracy and certification speed of the embedded Fashion-MNIST experts.

For each embedded Fashion-MNIST expert of the packaged zoo (or the ids given with ``--id``), on the FULL Fashion-MNIST test set (10,000 images, from Debian's dataset-fashion-mnist,
``--data-root`` or ``$RSBENCH_DATA``):

* clean accuracy;
* accuracy under Gaussian noise at the expert's own train_sigma: one noise draw per image, from one
  generator seeded with ``--seed`` (default 0) and drawn in canonical order, batch 1000;
* the same noisy accuracy at the other embedded sigmas (cross table), useful for dual RS;
* speed: seconds to CERTIFY one image with n0 = 100, n = 10,000 (median of ``--repeats`` images)
  through :class:`rsbench.engine.smoothing.SmoothedClassifier`, with ``--threads`` torch threads.

Prints a Markdown report; ``--out FILE`` also writes it there.

    .venv/bin/python bench/embedded_accuracy.py --threads 2 --out results/embedded-experts.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _entries(ids: list[str]):
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo()
    ids = ids or [e.id for e in zoo if e.id.startswith("embedded-fmnist-") and e.kind == "expert"]
    return [zoo.get(i) for i in ids]


def _certify_seconds(
    model, sigma: float, images: torch.Tensor, repeats: int
) -> tuple[float, float]:
    """(median seconds per certificate with n0=100, n=10,000; share of non-abstained)."""
    from rsbench.engine.smoothing import SmoothedClassifier

    smoothed = SmoothedClassifier(model, 10, sigma, batch_size=1000, input_shape=(1, 28, 28))
    smoothed.certify(images[0], n0=100, n=1000, alpha=0.001, seed=0, index=0)  # warm-up
    times, answered = [], 0
    for i in range(repeats):
        start = time.perf_counter()
        cert = smoothed.certify(images[i], n0=100, n=10_000, alpha=0.001, seed=0, index=i)
        times.append(time.perf_counter() - start)
        answered += not cert.abstained
    return statistics.median(times), answered / repeats


@torch.inference_mode()
def _bare_seconds(model, image: torch.Tensor, sigma: float, repeats: int) -> float:
    """Median seconds of a bare loop: 10,100 noisy copies (batches of 1000 and 100), argmax."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for size in (1000,) * 10 + (100,):
            batch = image.expand(size, -1, -1, -1)
            model(batch + torch.randn_like(batch) * sigma).argmax(1).bincount(minlength=10)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--id", action="append", default=[], help="expert id (repeatable)")
    parser.add_argument(
        "--zoo", action="append", default=[], help="also score every expert of this zoo file"
    )
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10, help="images timed per expert")
    parser.add_argument("--out", default=None, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rsbench.data.dataset import load_dataset
    from rsbench.models.loading import load_model
    from rsbench.train.expert import evaluate
    from rsbench.weights.sources import fetch

    test_set = load_dataset("fashion-mnist", "test", root=args.data_root)
    entries = _entries(args.id)
    for extra in args.zoo:
        from rsbench.zoo.files import read_zoo_file

        entries += [e for e in read_zoo_file(extra) if e.kind == "expert"]
    sigmas = sorted({float(e.train_sigma) for e in entries})
    lines = [
        "# Embedded Fashion-MNIST experts",
        "",
        f"Full Fashion-MNIST test set ({len(test_set):,} images, `{test_set.location}`). Noisy accuracy:",
        f"one Gaussian noise draw per image in [0, 1] pixel space, seed {args.seed}, batch 1000 (a plain",
        "base-classifier accuracy, not a certificate). Certify time: one image, n0 = 100, n = 10,000,",
        f"alpha = 0.001, median over {args.repeats} images, {args.threads} torch thread(s), CPU",
        f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start: other jobs share",
        "the cores, and timings under contention are slower). The bare loop is the same forward",
        "work without the engine (no per-sample generators, no certificate): the engine's overhead.",
        "",
        "| expert | arch | params | weights (bytes) | clean acc | noisy acc at own sigma | "
        + " | ".join(f"noisy @ {s:g}" for s in sigmas)
        + " | certify s / image | bare loop s / 10,100 samples | not abstained |",
        "|---|---|---|---|---|---|" + "---|" * len(sigmas) + "---|---|---|",
    ]
    commands = []
    for entry in entries:
        model = load_model(entry)
        params = sum(p.numel() for p in model.parameters())
        size = fetch(entry).path.stat().st_size
        clean, own = evaluate(model, test_set, entry.train_sigma, seed=args.seed)
        cross = [evaluate(model, test_set, s, seed=args.seed)[1] for s in sigmas]
        seconds, answered = _certify_seconds(
            model, entry.train_sigma, test_set.images(range(args.repeats)), args.repeats
        )
        bare = _bare_seconds(model, test_set.images([0])[0], entry.train_sigma, args.repeats)
        lines.append(
            f"| `{entry.id}` | {entry.arch} | {params:,} | {size:,} | {clean:.4f} | {own:.4f} | "
            + " | ".join(f"{c:.4f}" for c in cross)
            + f" | {seconds:.3f} | {bare:.3f} | {answered:.0%} |"
        )
        commands.append(f"- `{entry.id}` (sha256 `{entry.sha256}`):\n  `{entry.recipe['command']}`")
    lines += [
        "",
        "Produced by:",
        "",
        "```",
        "python bench/embedded_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "```",
        "",
        "Training commands (from each zoo entry's recipe):",
        "",
        *commands,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

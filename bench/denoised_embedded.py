"""The embedded denoised experts against the Gaussian-trained ones: what limits them, and the table.

Two subcommands (results/denoised-embedded.md holds their output and the commands):

``diagnose``: on the embedded Fashion-MNIST images (the 2,000 shipped test images, one seeded
noise draw per image and sigma), per sigma:

* the mean squared error (per pixel, [0, 1] units) of the noisy input, of each denoiser's estimate
  (``--denoised`` entries; the estimate is clamped to [0, 1] as inside the base model);
* the accuracy of each denoised entry's classifier on its denoiser's estimate (one draw: the base
  model's accuracy under noise, which bounds the smoothed classifier's clean accuracy from
  above in expectation), of the noise-free classifier on clean images, and of the Gaussian
  expert at that sigma on the noisy image.

``table RUN_DIR...``: certified accuracy (%) at r = 0, sigma/2 and sigma of each run folder
written by ``rsbench certify`` (one model at one sigma each), as a markdown table; with
``--radii 0,0.25,...`` at those radii instead (cascades, duals).

    python bench/denoised_embedded.py diagnose --threads 1
    python bench/denoised_embedded.py table runs/denoised/*
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

DENOISED = "embedded-fmnist-ddpm,embedded-fmnist-ddpm-ft,embedded-fmnist-denoised"
GAUSSIAN = {
    0.25: "embedded-fmnist-s0.25",
    0.5: "embedded-fmnist-s0.50",
    1.0: "embedded-fmnist-s1.00",
}
CLEAN = "embedded-fmnist-clean"


@torch.no_grad()
def diagnose(args: argparse.Namespace) -> None:
    from rsbench.data.dataset import load_dataset
    from rsbench.models.loading import load_model
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo(args.zoo)
    data = load_dataset("fashion-mnist-embedded", "test")
    count = min(args.images, len(data))
    images = data.images(list(range(count)))
    labels = data.labels[:count]
    names = args.denoised.split(",")
    experts = {name: load_model(zoo.get(name), "cpu") for name in names}
    clean = load_model(zoo.get(CLEAN), "cpu").eval()

    def accuracy(model, x) -> float:
        right = 0
        for start in range(0, count, args.batch):
            logits = model(x[start : start + args.batch])
            right += int((logits.argmax(1) == labels[start : start + args.batch]).sum())
        return 100.0 * right / count

    def denoise(denoiser, x, sigma) -> torch.Tensor:
        parts = [
            denoiser(x[start : start + args.batch], sigma).clamp(0, 1)
            for start in range(0, count, args.batch)
        ]
        return torch.cat(parts)

    print(
        f"{count} embedded images, one noise draw per image and sigma (seed {args.seed}); "
        f"MSE per pixel in [0, 1] units; accuracy in %"
    )
    print(f"noise-free classifier {CLEAN} on clean images: {accuracy(clean, images):.1f}")
    header = ["sigma", "MSE noisy input"]
    header += [f"MSE {n}" for n in names]
    header += [f"acc {n} (classifier on its denoised images)" for n in names]
    header += ["acc Gaussian expert on noisy images"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for sigma in args.sigmas:
        generator = torch.Generator().manual_seed(args.seed)
        noisy = images + sigma * torch.randn(images.shape, generator=generator)
        row = [f"{sigma:g}", f"{float(((noisy - images) ** 2).mean()):.4f}"]
        accs = []
        for name in names:
            expert = experts[name]
            estimate = denoise(expert.denoiser, noisy, sigma)
            row.append(f"{float(((estimate - images) ** 2).mean()):.4f}")
            accs.append(f"{accuracy(expert.classifier, estimate):.1f}")
        row += accs
        gaussian = load_model(zoo.get(GAUSSIAN[sigma]), "cpu").eval()
        row.append(f"{accuracy(gaussian, noisy):.1f}")
        print("| " + " | ".join(row) + " |")


def table(args: argparse.Namespace) -> None:
    from rsbench.report.metrics import certified_accuracy
    from rsbench.results.storage import read_results

    if args.radii:
        radii = [float(r) for r in args.radii.split(",")]
        print("| model | images | n | " + " | ".join(f"r = {r:g}" for r in radii) + " |")
        print("|---|---|---|" + "---|" * len(radii))
        for folder in args.runs:
            frame = read_results(Path(folder))
            acc = certified_accuracy(frame, radii) * 100
            model, n = f"`{frame['model_id'].iloc[0]}`", int(frame["n"].iloc[0])
            if str(frame["kind"].iloc[0]) == "expert":
                model += f" at sigma {float(frame['sigma'].iloc[0]):g}"
            cells = " | ".join(f"{a:.0f}" for a in acc)
            print(f"| {model} | {len(frame)} | {n} | {cells} |")
        return
    rows = []
    for folder in args.runs:
        frame = read_results(Path(folder))
        if frame.empty:
            continue
        sigma = float(frame["sigma"].iloc[0])
        model = str(frame["model_id"].iloc[0])
        acc = certified_accuracy(frame, [0.0, sigma / 2, sigma]) * 100
        rows.append((sigma, model, len(frame), int(frame["n"].iloc[0]), acc))
    print("| sigma | model | images | n | r = 0 | r = sigma/2 | r = sigma |")
    print("|---|---|---|---|---|---|---|")
    for sigma, model, images, n, acc in sorted(rows, key=lambda r: (r[0], r[1])):
        print(
            f"| {sigma:g} | `{model}` | {images} | {n} | "
            + " | ".join(f"{a:.0f}" for a in acc)
            + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("diagnose", help="denoiser MSE and accuracy on denoised images")
    one.add_argument("--denoised", default=DENOISED, help="comma list of denoised entries")
    one.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    one.add_argument("--images", type=int, default=2000)
    one.add_argument("--batch", type=int, default=250)
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--zoo", action="append", default=[], help="extra zoo file(s)")
    one.add_argument("--threads", type=int, default=None)
    two = sub.add_parser("table", help="certified accuracy at r = 0, sigma/2, sigma")
    two.add_argument("runs", nargs="+", help="run folders written by rsbench certify")
    two.add_argument(
        "--radii", default=None, help="comma list: accuracy at these radii (e.g. for cascades)"
    )
    args = parser.parse_args()
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    (diagnose if args.command == "diagnose" else table)(args)


if __name__ == "__main__":
    main()

"""Router recipe variants for the embedded dual model, scored on held-out training images (issue 15).

Selecting a router recipe on the test images would tune it to the benchmark, so the variants are
compared on Fashion-MNIST *training* images that none of them trains on:

* every variant trains with ``rsbench train router`` over the three embedded experts on training
  images 0-16,999 (labels from the shared label cache; the shipped router used 0-19,999);
* held-out images: every 10th of 17,000-19,999 (300 images). The three experts are certified on
  them once with the benchmark's budget (``rsbench certify --n0 100 --n 2000 --alpha 0.001``);
* each variant's dual is then scored without re-running the experts: its router stage is certified
  for real (``n0 = 100``, ``n = 2000``, ``alpha/2 = 0.0005`` at its ``sigma_router``, on the router
  noise streams of :class:`rsbench.engine.smoothing.SmoothedClassifier`), and the chosen expert's stage is
  the stored expert certificate rescored at ``alpha/2`` (its counts with a Clopper-Pearson bound at
  0.0005). The dual's radius is ``min(R_router, R_expert)`` as in :mod:`rsbench.engine.dual`. The expert
  stage's noise differs from the one a dual certificate draws (another purpose key), so this is a
  proxy with the same distribution, not the certificate itself; the winner is certified for real
  on the test protocol by ``bench/dual_embedded.py``.

Writes ``results/router-variants.md``. Usage (2 shared cores: about 4 minutes per variant)::

    python bench/router_variants.py                       # every variant in VARIANTS
    python bench/router_variants.py --only default t10    # some of them
    python bench/router_variants.py --only dn-small-cnn dn-ddpm-pool --held-out 17000:20000:20 \
        --work runs/router-variants-dn                    # routers behind a denoiser: fewer images
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPERTS = ["embedded-fmnist-s0.25", "embedded-fmnist-s0.50", "embedded-fmnist-s1.00"]
SIGMAS = [0.25, 0.5, 1.0]
TRAIN = "0:17000"
HELD_OUT = "17000:20000:10"
N0, N, ALPHA = 100, 2000, 0.001
RADII = np.round(np.arange(0.0, 2.0001, 0.25), 2)
#: the training budget of the denoised routers (one denoiser pass per router sample)
DENOISED = ["--router-input", "denoised", "--indices", "0:5000", "--epochs", "10"]
#: name -> extra `rsbench train router` options (on top of the defaults of rsbench.train.router_config)
VARIANTS: dict[str, list[str]] = {
    "shipped": [
        "--arch",
        "pooled_mlp",
        "--temperature",
        "0.05",
        "--batch-size",
        "256",
        "--lr",
        "0.003",
    ],
    "default": [],
    "t02": ["--temperature", "0.02"],
    "t10": ["--temperature", "0.1"],
    "t20": ["--temperature", "0.2"],
    "lam20": ["--lambda", "20"],
    "lam80": ["--lambda", "80"],
    "sr125": ["--sigma-router", "1.25"],
    "sr075": ["--sigma-router", "0.75"],
    "sr050": ["--sigma-router", "0.5"],
    "eta0": ["--eta", "0"],
    "mlp": ["--arch", "mlp"],
    "ep60": ["--epochs", "60"],
    "point": ["--label-radius", "point"],
    "copies4": ["--copies", "4"],
    "c8": ["--copies", "8"],
    "c4ep60": ["--copies", "4", "--epochs", "60"],
    "more": ["--indices", "0:17000,20000:40000"],  # 37,000 labelled images instead of 17,000
    "mlpmore": ["--arch", "mlp", "--indices", "0:17000,20000:40000"],
    # issue 24: routers that see the experts (a head over their outputs on the same noisy copy);
    # 6 epochs (1,440 steps): the head is small, and 20 epochs of three expert forwards per copy
    # cost 12 minutes of a shared core per variant
    "x-logsm": ["--router-input", "experts", "--features", "log-softmax", "--epochs", "6"],
    "x-softmax": ["--router-input", "experts", "--features", "softmax", "--epochs", "6"],
    "x-logits": ["--router-input", "experts", "--features", "logits", "--epochs", "6"],
    "x-lam10": ["--router-input", "experts", "--lambda", "10", "--epochs", "6"],
    "top-logsm": ["--router-input", "experts-top", "--features", "log-softmax", "--epochs", "6"],
    "x-noweights": ["--router-input", "experts", "--class-weights", "none", "--epochs", "6"],
    "top-noweights": ["--router-input", "experts-top", "--class-weights", "none", "--epochs", "6"],
    "top-lam80": ["--router-input", "experts-top", "--lambda", "80", "--epochs", "6"],
    "top-t10": ["--router-input", "experts-top", "--temperature", "0.1", "--epochs", "6"],
    "top-softmax": ["--router-input", "experts-top", "--features", "softmax", "--epochs", "6"],
    # issue 24, the paper's estimator: a pixel network behind a frozen one-shot denoiser at
    # sigma_router. One denoiser pass per router sample (the DDPM U-Net: ~540 samples/s on one
    # core), so these train on 5,000 images for 10 epochs and are scored with --held-out
    # 17000:20000:20 (150 images; results/dual-embedded.md, "Denoised router")
    "dn-ddpm-pool": DENOISED + ["--denoiser", "embedded-fmnist-ddpm", "--arch", "pooled_mlp"],
    "dn-ddpm-cnn": DENOISED + ["--denoiser", "embedded-fmnist-ddpm", "--arch", "fmnist_cnn"],
    "dn-small-cnn": DENOISED + ["--denoiser", "embedded-fmnist-denoised", "--arch", "fmnist_cnn"],
    # the shipped xrouter's recipe on the denoised routers' 5,000 training images and epochs
    "top-5k": ["--router-input", "experts-top", "--features", "softmax"] + DENOISED[2:],
}


def run(args: list[str]) -> None:
    print("$ " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(args, check=True, cwd=ROOT)


def certify_experts(out: Path, held_out: str = HELD_OUT) -> None:
    for expert in EXPERTS:
        run(
            [sys.executable, "-m", "rsbench", "certify", expert, "--dataset", "fashion-mnist"]
            + ["--split", "train", "--indices", held_out, "--n0", str(N0), "--n", str(N)]
            + ["--alpha", str(ALPHA), "--device", "cpu", "--threads", "1", "--out", str(out)]
            + ["--no-leaderboard"]
        )


def train(name: str, options: list[str], out: Path) -> None:
    if (out / f"v-{name}-router.safetensors").is_file():
        return
    data = [] if "--indices" in options else ["--indices", TRAIN]
    run(
        [sys.executable, "-m", "rsbench", "train", "router", *EXPERTS, *data]
        + ["--id", f"v-{name}-router", "--dual-id", f"v-{name}-dual", "--out", str(out)]
        + ["--zoo-file", str(out / "zoo.yaml"), "--threads", "1", "--overwrite", *options]
    )


def expert_radii(certs: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, radii at alpha [N, K], radii at alpha/2 [N, K]); 0 where wrong or abstaining."""
    from rsbench.engine.stats import certified_radius
    from rsbench.results.storage import read_results

    full, half, index = [], [], None
    for expert, sigma in zip(EXPERTS, SIGMAS):
        (folder,) = certs.glob(f"{expert}-custom-fashion-mnist-train-*")
        df = read_results(folder).sort_values("index").reset_index(drop=True)
        ok = (df["prediction"] == df["label"]).to_numpy() & ~df["abstained"].to_numpy()
        full.append(np.where(ok, df["radius"].to_numpy(), 0.0))
        r = certified_radius(df["nA"].to_numpy(), df["n"].to_numpy(), ALPHA / 2, sigma)
        half.append(np.where(ok & (r > 0), r, 0.0))
        index = df["index"].to_numpy()
    assert index is not None
    return index, np.stack(full, 1), np.stack(half, 1)


def curve(radius: np.ndarray) -> list[float]:
    """Certified accuracy (%) at RADII of correct-certificate radii (0 = wrong or abstained)."""
    return [
        round(100 * float((radius > 0).mean() if r == 0 else (radius >= r).mean()), 1)
        for r in RADII
    ]


def score(name: str, out: Path, index: np.ndarray, half: np.ndarray) -> dict:
    import torch

    from rsbench.data.dataset import load_dataset
    from rsbench.engine.smoothing import SmoothedClassifier
    from rsbench.models.loading import load_model
    from rsbench.models.router_input import router_forwards
    from rsbench.zoo.registry import load_zoo

    torch.set_num_threads(1)
    zoo = load_zoo([out / "zoo.yaml"])
    entry = zoo.get(f"v-{name}-router")
    model = load_model(entry, "cpu", zoo=zoo)
    smoothed = SmoothedClassifier(model, len(EXPERTS), entry.train_sigma, batch_size=2100)
    images = load_dataset("fashion-mnist", "train").images([int(i) for i in index])
    certs = smoothed.certify_batch(
        images, N0, N, ALPHA / 2, 0, [int(i) for i in index], dataset="fashion-mnist", split="train"
    )
    choice = np.array([c.prediction for c in certs])
    r_router = np.array([0.0 if c.abstained else c.radius for c in certs])
    rows = np.arange(len(index))
    r_expert = np.where(choice >= 0, half[rows, np.clip(choice, 0, len(EXPERTS) - 1)], 0.0)
    record = json.loads((out / f"v-{name}-router.train.json").read_text())
    return {
        "name": name,
        "dual": curve(np.where(choice >= 0, np.minimum(r_router, r_expert), 0.0)),
        "expert_only": curve(r_expert),
        "share": [float((choice == k).mean()) for k in range(-1, len(EXPERTS))],
        "agreement": record["history"][-1]["agreement"],
        "forwards": router_forwards(entry),
    }


def cached_score(name: str, out: Path, index: np.ndarray, half: np.ndarray) -> dict:
    """:func:`score`, kept in ``<out>/v-<name>.score.json`` next to the router (keyed by its
    weights' sha256), so a report over many variants certifies each router stage once."""
    import hashlib

    weights = (out / f"v-{name}-router.safetensors").read_bytes()
    digest = hashlib.sha256(weights).hexdigest()
    path = out / f"v-{name}.score.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("sha256") == digest:
            return stored["row"]
    row = score(name, out, index, half)
    path.write_text(json.dumps({"sha256": digest, "row": row}))
    return row


def render(rows: list[dict], full: np.ndarray, half: np.ndarray, held_out: str = HELD_OUT) -> str:
    envelope = np.max([curve(full[:, k]) for k in range(len(EXPERTS))], axis=0)
    head = " | ".join(f"{r:g}" for r in RADII)
    lines = [
        "# Router recipe variants (held-out training images)",
        "",
        "Produced by `python bench/router_variants.py` (see its docstring for the protocol): routers "
        f"trained on Fashion-MNIST train {TRAIN} (unless the options name --indices), scored on "
        f"train {held_out} ({len(full)} images none of them trained on); router stage certified (n0 = 100, n = 2,000, alpha/2), expert stage = "
        "the stored expert certificate rescored at alpha/2. Certified accuracy in %.",
        "",
        f"| variant (options on top of the defaults) | {head} | largest shortfall (at r) "
        "| choices abstain / s0.25 / s0.50 / s1.00 (%) | train agreement "
        "| worst cost (x one expert) |",
        "|---|" + "---|" * len(RADII) + "---|---|---|---|",
    ]
    for k, expert in enumerate(EXPERTS):
        lines.append(
            f"| {expert} | " + " | ".join(f"{v:.1f}" for v in curve(full[:, k])) + " | | | | 1 |"
        )
    lines.append(
        "| envelope of the experts | " + " | ".join(f"{v:.1f}" for v in envelope) + " | | | | |"
    )
    for row in rows:
        short = envelope - np.array(row["dual"])
        at = int(np.argmax(short))
        options = " ".join(VARIANTS[row["name"]]) or "(defaults)"
        shares = " / ".join(f"{100 * s:.1f}" for s in row["share"])
        lines.append(
            f"| `{row['name']}`: {options} | "
            + " | ".join(f"{v:.1f}" for v in row["dual"])
            + f" | {short[at]:.1f} ({RADII[at]:g}) | {shares} | {row['agreement']:.3f} "
            + f"| {row['forwards'] + 1:g} |"
        )
    lines += [
        "",
        "Defaults (`rsbench.train.router_config`): `pooled_mlp` router, temperature 0.05 x the largest "
        "sigma (here 0.05), batch 64, Adam lr 3e-3 cosine, lambda 40, eta 0.5, 2 copies, 20 epochs "
        "(at least 500 steps), "
        "sigma_router 1, labels n0 = 10, n = 100, alpha = 0.001 (Clopper-Pearson label radii). One "
        f"image is {100 / len(full):.2f} points. `train agreement`: the last epoch's share of training images whose "
        "router choice (mean softmax over the noisy copies) is the best expert of the labels. "
        "`worst cost`: (router forwards per sample + 1 expert) x (n0 + n), in units of one "
        "expert's certificate (`rsbench.models.router_input.router_forwards`; a pixel router "
        "counts as one forward).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="variant names (default: all)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "router-variants")
    parser.add_argument(
        "--held-out",
        default=HELD_OUT,
        help=f"held-out training images to score on (default {HELD_OUT}; a --work folder holds "
        "the expert certificates of one held-out set)",
    )
    parser.add_argument("--report", type=Path, default=ROOT / "results" / "router-variants.md")
    parser.add_argument(
        "--section",
        default=None,
        help="write the table as the section '## SECTION' of --report (replacing a section of "
        "that title, keeping the rest) instead of overwriting the file",
    )
    args = parser.parse_args()
    names = args.only or list(VARIANTS)
    certs, routers = args.work / "certs", args.work / "routers"
    certify_experts(certs, args.held_out)
    for name in names:
        train(name, VARIANTS[name], routers)
    index, full, half = expert_radii(certs)
    rows = [cached_score(name, routers, index, half) for name in names]
    text = render(rows, full, half, args.held_out)
    if args.section:
        work = args.work.relative_to(ROOT) if args.work.is_relative_to(ROOT) else args.work
        text = with_section(args.report, args.section, text, names, args.held_out, work)
    args.report.write_text(text)
    print(text)


def with_section(
    report: Path,
    title: str,
    rendered: str,
    names: list[str],
    held_out: str = HELD_OUT,
    work: Path | str = "runs/router-variants",
) -> str:
    """``report``'s text with the section ``## title`` set to ``rendered`` (its first heading dropped;
    an existing section of that title is replaced, everything else kept)."""
    body = rendered.split("\n", 2)[2] if rendered.startswith("# ") else rendered
    heading = f"## {title}"
    command = shlex.join(["python", "bench/router_variants.py", "--only", *names])
    if held_out != HELD_OUT:
        command += f" --held-out {held_out} --work {shlex.quote(str(work))}"
    command += " --section " + shlex.quote(title)
    section = f"{heading}\n\nCommand: `{command}`.\n\n{body.strip()}\n"
    old = report.read_text() if report.is_file() else ""
    if heading in old:
        before, rest = old.split(heading, 1)
        after = rest.split("\n## ", 1)
        tail = "\n## " + after[1] if len(after) > 1 else ""
        return before + section + tail
    return old.rstrip() + "\n\n" + section


if __name__ == "__main__":
    main()

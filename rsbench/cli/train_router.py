"""``rsbench train router``: train a dual-RS router over zoo experts.

Also the pieces ``rsbench train finetune`` (:mod:`rsbench.cli.finetune`) shares with it: the
router option list (:func:`router_options`), the config it builds (:func:`router_config`), the
reproducing command's output options (:func:`io_suffix`), the progress bars (:class:`RouterBars`)
and the final report (:func:`report_router`).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from rsbench.errors import check_seed

SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _train_images(value: str) -> int | None:
    if str(value).lower() in ("all", "none", "0"):
        return None
    try:
        count = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of images or 'all'") from None
    if count < 1:
        raise click.BadParameter(f"{value!r}: use a number of images >= 1 or 'all'")
    return count


def _indices(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    from rsbench.data.indices import parse_indices

    return tuple(parse_indices(value))


def _sigmas(value: str | None) -> tuple[float, ...] | None:
    if not value:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma list of numbers, e.g. 0.25,0.5,1"
        ) from None


def router_options(func):
    """Options shared by ``router`` and ``finetune`` (label stage, router recipe, I/O)."""
    options = [
        click.option(
            "--sigma-router",
            default=1.0,
            show_default=True,
            type=float,
            help="The router's own noise level (train and certify); keep it >= the largest expert sigma.",
        ),
        click.option(
            "--sigmas",
            default=None,
            help="Certify sigma per expert, comma list (default: each expert's train_sigma).",
        ),
        click.option(
            "--router-input",
            type=click.Choice(["pixels", "experts", "experts-top", "denoised"]),
            default="pixels",
            show_default=True,
            help="What the router looks at, on the same noisy copy at --sigma-router: pixels (a "
            "network on the image), experts (a small head over every expert's outputs: K expert "
            "forwards per router sample), experts-top (over the largest-sigma expert only: one "
            "forward) or denoised (the --arch network behind the one-shot denoiser of --denoiser: "
            "one denoiser pass per router sample, e.g. ~240 expert forwards by multiply-adds for "
            "embedded-fmnist-ddpm). Experts and denoiser are frozen, so the router stays a "
            "deterministic function of the noisy copy and its certificate is unchanged.",
        ),
        click.option(
            "--denoiser",
            default=None,
            metavar="ENTRY",
            help="With --router-input denoised: the denoised zoo entry whose denoiser the router "
            "looks through at --sigma-router (e.g. embedded-fmnist-ddpm, embedded-fmnist-denoised).",
        ),
        click.option(
            "--features",
            type=click.Choice(["log-softmax", "softmax", "logits"]),
            default="softmax",
            show_default=True,
            help="Which expert outputs a router over experts sees (softmax: up to 2.7 points above "
            "log-softmax on held-out training images, results/router-variants.md).",
        ),
        click.option(
            "--arch",
            default=None,
            help="Router architecture (default: pooled_mlp, 4x4 average pooling + a small MLP: "
            "pooling averages the router's noise down, so it learns from few images and costs "
            "almost nothing to certify; e.g. cifar_resnet20 for a larger one). A router over "
            "experts takes a head: head_mlp (default) or head_linear.",
        ),
        click.option(
            "--label-n0",
            default=10,
            show_default=True,
            type=int,
            help="Label stage: selection draws per image and expert.",
        ),
        click.option(
            "--label-n",
            default=100,
            show_default=True,
            type=int,
            help="Label stage: estimation draws (the paper's n = 100).",
        ),
        click.option("--label-alpha", default=0.001, show_default=True, type=float),
        click.option(
            "--label-radius",
            type=click.Choice(["bound", "point"]),
            default="bound",
            show_default=True,
            help="Label radius from the label counts: bound = CERTIFY's Clopper-Pearson radius "
            "(at n = 100 at most 1.50 sigma, which favours the largest sigma on easy images); "
            "point = sigma * Phi^-1((nA + 1/2) / (n + 1)) (labels are not certificates).",
        ),
        click.option(
            "--train-images",
            default=None,
            help="Label and train on the first N training images ('all' for the whole split; "
            "default 20000 of --split train; another split needs --indices).",
        ),
        click.option(
            "--indices",
            default=None,
            help="Label and train on these images of the split instead of the first N: "
            "0,5,10-12 or start:stop:step (e.g. 0:60000:3); parts combine with commas.",
        ),
        click.option(
            "--temperature",
            default=None,
            type=float,
            help="Soft targets softmax(R / T) (default: 0.05 x the largest expert sigma; label "
            "radii scale with sigma, and at T = 1 the targets of images a small sigma wins are "
            "nearly flat, so a router collapses to the largest sigma).",
        ),
        click.option(
            "--lambda",
            "lam",
            default=40.0,
            show_default=True,
            type=float,
            help="Consistency weight (KL to the mean over copies).",
        ),
        click.option(
            "--eta",
            default=0.5,
            show_default=True,
            type=float,
            help="Entropy weight of the mean prediction.",
        ),
        click.option(
            "--class-weights",
            "class_weighting",
            type=click.Choice(["inverse", "none"]),
            default="inverse",
            show_default=True,
            help="Per-image loss weights: inverse = 1/q of the image's best expert (the paper's), "
            "none = all 1 (a router more concentrated on the majority expert).",
        ),
        click.option(
            "--copies",
            default=2,
            show_default=True,
            type=int,
            help="Noisy copies per image (m >= 2).",
        ),
        click.option(
            "--epochs",
            default=None,
            type=int,
            help="Router training epochs (default: 20, or more on a small set so that the router "
            "takes at least 500 optimiser steps).",
        ),
        click.option("--batch-size", default=64, show_default=True, type=int),
        click.option(
            "--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "sgd"])
        ),
        click.option("--lr", default=3e-3, show_default=True, type=float),
        click.option("--momentum", default=0.9, show_default=True, type=float),
        click.option("--weight-decay", default=0.0, show_default=True, type=float),
        click.option(
            "--schedule",
            default="cosine",
            show_default=True,
            type=click.Choice(["cosine", "step", "constant"]),
        ),
        click.option(
            "--seed",
            default=0,
            show_default=True,
            type=int,
            help="Seeds the label noise, weights, order and training noise (0 <= SEED < 2**63).",
        ),
        click.option(
            "--dataset",
            default=None,
            help="Data to label/train on (default: the experts' dataset, e.g. fashion-mnist).",
        ),
        click.option(
            "--split",
            default="train",
            show_default=True,
            help="Split to label and train on; any other than train needs --indices, and a dual "
            "is then refused on those images.",
        ),
        click.option(
            "--training-noise",
            type=click.Choice(["router-training", "training"]),
            default="router-training",
            show_default=True,
            help="Noise purpose of router training: the router's own (default), or training, "
            "the shared one routers drew before (reproduces routers trained before this option).",
        ),
        click.option(
            "--alpha-router-fraction",
            default=0.5,
            show_default=True,
            type=float,
            help="Share of alpha the dual entry gives the router.",
        ),
        click.option(
            "--out",
            "out_dir",
            default="runs/router",
            show_default=True,
            type=click.Path(file_okay=False),
            help="Output folder.",
        ),
        click.option(
            "--zoo-file",
            default=None,
            type=click.Path(dir_okay=False),
            help="Zoo file that receives the entries (default <out>/zoo.yaml).",
        ),
        click.option(
            "--zoo",
            "zoo_paths",
            multiple=True,
            type=click.Path(dir_okay=False, exists=True),
            help="Extra zoo file(s) that define the experts (repeatable; also $RSBENCH_ZOO).",
        ),
        click.option(
            "--label-cache",
            default=None,
            type=click.Path(file_okay=False),
            help="Label radii cache (default <rsbench cache>/router-labels).",
        ),
        click.option(
            "--cache-dir",
            default=None,
            type=click.Path(file_okay=False),
            help="Weights cache (default $RSBENCH_CACHE or the user cache).",
        ),
        click.option(
            "--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto."
        ),
        click.option(
            "--data-root",
            default=None,
            type=click.Path(file_okay=False),
            help="Dataset root (default $RSBENCH_DATA, the user cache, /usr/share/datasets).",
        ),
        click.option(
            "--threads", default=None, type=int, help="CPU threads for torch (default: torch's)."
        ),
        click.option(
            "--resume/--no-resume",
            default=True,
            show_default=True,
            help="Continue router training from <out>/<id>.checkpoint.pt.",
        ),
        click.option("--keep-checkpoint", is_flag=True, help="Keep the resume checkpoint."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def router_config(experts: tuple[str, ...], options: dict[str, Any], **extra):
    from rsbench.engine.device import resolve as resolve_device
    from rsbench.errors import ConfigError
    from rsbench.train.router_config import RouterTrainConfig

    if options["train_images"] is not None and options.get("indices"):
        raise ConfigError("give --train-images or --indices, not both")
    if (
        options["split"] != "train"
        and options["train_images"] is None
        and not options.get("indices")
    ):
        raise ConfigError(
            f"--split {options['split']} needs --indices naming the images to label and train on "
            "(the default --train-images would take the split's evaluation images too); a dual "
            "is then refused on those images"
        )

    return RouterTrainConfig(
        experts=tuple(experts),
        sigma_router=options["sigma_router"],
        sigmas=_sigmas(options["sigmas"]),
        arch=options["arch"],
        label_n0=options["label_n0"],
        label_n=options["label_n"],
        label_alpha=options["label_alpha"],
        label_radius=options["label_radius"],
        train_images=_train_images(options["train_images"] or "20000"),
        indices=_indices(options.get("indices")),
        temperature=options["temperature"],
        lam=options["lam"],
        eta=options["eta"],
        copies=options["copies"],
        epochs=options["epochs"],
        batch_size=options["batch_size"],
        optimizer=options["optimizer"],
        lr=options["lr"],
        momentum=options["momentum"],
        weight_decay=options["weight_decay"],
        schedule=options["schedule"],
        seed=check_seed(options["seed"]),
        dataset=options["dataset"],
        split=options["split"],
        alpha_router_fraction=options["alpha_router_fraction"],
        data_root=options["data_root"],
        device=str(resolve_device(options["device"])),
        label_cache=options["label_cache"],
        router_input=options.get("router_input", "pixels"),
        features=options.get("features", "softmax"),
        training_noise=options.get("training_noise", "router-training"),
        class_weighting=options.get("class_weighting", "inverse"),
        denoiser=options.get("denoiser"),
        **extra,
    )


def io_suffix(options: dict[str, Any], zoo_file: Path) -> str:
    parts = [f"--out {shlex.quote(str(options['out_dir']))}"]
    if options["zoo_file"]:
        parts.append(f"--zoo-file {shlex.quote(str(zoo_file))}")
    parts += [f"--zoo {shlex.quote(str(p))}" for p in options["zoo_paths"]]
    if options.get("label_cache"):  # a rerun as written reuses (and only uses) the same labels
        parts.append(f"--label-cache {shlex.quote(str(options['label_cache']))}")
    if options.get("threads"):  # CPU results depend on the thread count: part of the recipe
        parts.append(f"--threads {int(options['threads'])}")
    return " " + " ".join(parts)


class RouterBars:
    """Rich progress bars for router events: one per expert's label stage (with ETA), one for training."""

    def __init__(self, title: str = "") -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.title = title
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.labels: dict[str, Any] = {}
        self.train: Any = None  # the rich task id of the training bar, once it starts

    def __enter__(self) -> RouterBars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event) -> None:
        prefix = f"{self.title} " if self.title else ""
        if event.phase == "warning":
            self.progress.console.print(f"[yellow]warning: {event.message}[/yellow]")
            return
        if event.phase == "label-start":
            cached = f"{event.done} cached" if event.done else ""
            self.labels[event.expert] = self.progress.add_task(
                f"{prefix}labels {event.expert_index + 1}/{event.experts} {event.expert}",
                total=event.total,
                completed=event.done,
                info=cached,
            )
        elif event.phase in ("label", "label-done"):
            task = self.labels.get(event.expert)
            if task is not None:
                self.progress.update(task, completed=event.done)
        elif event.phase == "train-start":
            total = event.epochs * event.steps
            self.train = self.progress.add_task(
                f"{prefix}router epoch {event.epoch}/{event.epochs}",
                total=total,
                completed=event.epoch * event.steps,
                info="",
            )
            if event.resumed_from:
                self.console.print(f"resuming router training from epoch {event.resumed_from}")
        elif event.phase == "batch" and self.train is not None:
            self.progress.update(
                self.train,
                completed=(event.epoch - 1) * event.steps + event.step,
                description=f"{prefix}router epoch {event.epoch}/{event.epochs}",
                info=f"loss {event.loss:.4f} agree {event.agreement:.3f}",
            )
        elif event.phase == "epoch":
            self.progress.console.print(
                f"{prefix}epoch {event.epoch}/{event.epochs}: loss {event.loss:.4f}, "
                f"agreement with best expert {event.agreement:.3f}, lr {event.lr:.3g}"
            )
        elif event.phase == "assign":
            self.progress.console.print(f"assigning {event.total} images with the router ...")
        elif event.phase == "finetune-start":
            self.train = self.progress.add_task(
                f"fine-tune {event.expert}", total=event.epochs * event.steps, info=""
            )
        elif event.phase == "finetune-batch" and self.train is not None:
            self.progress.update(
                self.train,
                completed=(event.epoch - 1) * event.steps + event.step,
                info=f"loss {event.loss:.4f} noisy acc {event.agreement:.3f}",
            )
        elif event.phase == "finetune-epoch":
            self.progress.console.print(
                f"fine-tune {event.expert} epoch {event.epoch}/{event.epochs}: "
                f"loss {event.loss:.4f}, noisy acc {event.agreement:.3f}"
            )


def _print_label_plan(config, options: dict[str, Any]) -> None:
    from rsbench.train.router_config import label_plan

    plan = label_plan(config, zoo_paths=list(options["zoo_paths"]), cache_dir=options["cache_dir"])
    total = 0.0
    click.echo(
        f"label stage: n0 = {config.label_n0}, n = {config.label_n}, alpha = {config.label_alpha:g}"
    )
    for row in plan:
        total += row["seconds"]
        click.echo(
            f"  {row['expert']} (sigma {row['sigma']:g}): {row['images']} images, {row['cached']} "
            f"cached, {row['missing']} to certify = {row['samples']:,} samples at "
            f"{row['samples_per_second']:,.0f}/s -> {row['seconds']:.0f} s"
        )
    click.echo(
        f"estimated label time: {total:.0f} s ({total / 60:.1f} min) on this machine now; "
        f"then {config.epochs or 'at least 20'} epochs of router training (at least 500 optimiser "
        "steps by default). Nothing was labelled or trained."
    )


def report_router(result) -> None:
    stats = result.label_stats
    click.echo(
        f"labels: {stats['kept']}/{stats['images']} images certified by some expert; "
        f"best-expert shares {stats['best_share']}"
    )
    click.echo(f"router weights: {result.weights}")
    click.echo(f"sha256: {result.sha256}")
    where = result.zoo_file if result.zoo_file is not None else "(no zoo file)"
    click.echo(f"zoo entries {result.router_id!r} and {result.dual_id!r} written to {where}")
    click.echo(f"done in {result.seconds:.1f} s")


@click.command(
    "router",
    context_settings=SETTINGS,
    epilog="""\b
Examples:
  # a router over the three embedded Fashion-MNIST experts with the default recipe
  rsbench train router embedded-fmnist-s0.25 embedded-fmnist-s0.50 embedded-fmnist-s1.00 \\
      --id my-fmnist-router --dual-id my-fmnist-dual --out runs/router --zoo-file my_zoo.yaml
  # then: rsbench certify my-fmnist-dual --zoo my_zoo.yaml
  # Cohen's CIFAR-10 experts, labels on 10,000 training images, on a GPU
  rsbench train router cohen-cifar10-resnet110-s0.25 cohen-cifar10-resnet110-s0.50 \\
      cohen-cifar10-resnet110-s1.00 --arch cifar_resnet20 --train-images 10000 \\
      --data-root ~/data --device cuda
  # experts from your own zoo file; an interrupted run resumes: run the same command again
  # a router that sees the experts' outputs (a head over their log-softmax on the noisy copy)
  rsbench train router embedded-fmnist-s0.25 embedded-fmnist-s0.50 embedded-fmnist-s1.00 \\
      --router-input experts --id my-router --dual-id my-dual --zoo-file my_zoo.yaml
  # labelling test images is allowed only for named --indices (a dual is then refused on them)
  rsbench train router embedded-fmnist-s0.25 embedded-fmnist-s1.00 --dataset fashion-mnist \\
      --split test --indices 5000:10000

\b
Stages: (1) each expert certifies each training image at its sigma with n0/n draws
(--label-n0/--label-n, alpha --label-alpha); radius if right, else 0; cached in Parquet under
--label-cache and reused by later runs and other routers sharing an expert. (2) soft targets
softmax(R / T), images certified by no expert dropped, class weights 1/q_k. (3) the router
trains on --copies noisy copies at --sigma-router: soft cross-entropy + lambda KL + eta entropy.
Defaults (pooled_mlp, T = 0.05 x the largest sigma, batch 64, lr 3e-3, >= 500 steps) are chosen so that a
router over experts nobody here trained does not collapse to the largest sigma on a few hundred
labelled images (rsbench.train.router, results/dual-embedded.md).
Outputs in --out: <id>.safetensors, <id>.train.json; router + dual entries in --zoo-file.
""",
)
@click.argument("expert_ids", nargs=-1, required=True)
@click.option("--id", "router_id", default=None, help="Router id (default <common prefix>-router).")
@click.option("--dual-id", default=None, help="Dual entry id (default <common prefix>-dual).")
@router_options
@click.option("--overwrite", is_flag=True, help="Replace entries with the same ids in --zoo-file.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the label stage's cost (images cached / to certify, samples, measured samples/s, "
    "time estimate) and train nothing.",
)
def router(expert_ids: tuple[str, ...], **options) -> None:
    """Train a smoothed router over EXPERT_ID... (zoo experts of one dataset) for dual RS.

    The router's output k selects the k-th expert; it is trained to pick, under noise, the expert
    that certifies each image with the largest radius (Sun, Mao & Vechev, ICLR 2026).
    """
    import torch

    from rsbench.train.router import train_router
    from rsbench.train.router_config import command_line

    if options["threads"]:
        torch.set_num_threads(int(options["threads"]))
    out_dir = Path(options["out_dir"])
    zoo_file = Path(options["zoo_file"]) if options["zoo_file"] else out_dir / "zoo.yaml"
    config = router_config(
        expert_ids, options, router_id=options["router_id"], dual_id=options["dual_id"]
    )
    if options["dry_run"]:
        _print_label_plan(config, options)
        return
    command = command_line(config) + io_suffix(options, zoo_file)
    config = type(config)(**{**config.__dict__, "command": command})
    with RouterBars() as bars:
        result = train_router(
            config,
            out_dir,
            zoo_file=zoo_file,
            zoo_paths=list(options["zoo_paths"]),
            resume=options["resume"],
            keep_checkpoint=options["keep_checkpoint"],
            overwrite_entries=options["overwrite"],
            cache_dir=options["cache_dir"],
            progress=bars,
        )
    report_router(result)

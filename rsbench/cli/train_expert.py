"""``rsbench train expert``: train an expert with Gaussian noise augmentation (Cohen et al.)."""

from __future__ import annotations

import shlex

import click

from rsbench.cli.options import (
    data_options,
    device_options,
    loop_options,
    optimizer_options,
    optimizer_values,
    output_options,
    resume_options,
    seed_option,
    selection_options,
    zoo_option,
)
from rsbench.errors import check_seed

_DATASETS = ["fashion-mnist", "mnist", "cifar10", "imagenet", "fashion-mnist-embedded"]


@click.command(
    "expert",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  # the embedded expert's recipe at sigma 0.50 (data: /usr/share/datasets/fashion-mnist)
  rsbench train expert --dataset fashion-mnist --arch fmnist_cnn --train-sigma 0.5 --epochs 20 \\
      --optimizer adam --lr 0.002 --id my-fmnist-s0.50 --out runs/fmnist --zoo-file my_zoo.yaml
  # then certify it: rsbench certify my-fmnist-s0.50 --zoo my_zoo.yaml
  # a CIFAR-10 ResNet-20 (Cohen's recipe: SGD 0.1, step 30, 90 epochs; crop+flip on by default)
  rsbench train expert --dataset cifar10 --arch cifar_resnet20 --train-sigma 0.25 --epochs 90 \\
      --optimizer sgd --lr 0.1 --schedule step --step-size 30 --data-root ~/data --download --device cuda
  # an interrupted run resumes from its last finished epoch: run the same command again
  # the classifier of a denoised expert, fine-tuned on its denoiser's outputs at its served sigmas
  # (writes the classifier <id> and the denoised entry --denoised-id; the embedded -ft recipe)
  rsbench train expert --dataset fashion-mnist --arch fmnist_cnn --denoiser embedded-fmnist-ddpm \
      --init embedded-fmnist-clean --epochs 1 --optimizer adam --lr 0.001 \
      --id my-ddpm-ft-classifier --denoised-id my-ddpm-ft --out runs/ft --threads 1

\b
Outputs in --out: <id>.safetensors (the network's state dict), <id>.train.json (config, per-epoch
history, sha256), <id>.checkpoint.pt while training (removed at the end unless --keep-checkpoint).
The zoo entry (recipe with this command, seed, epochs, data; sha256) goes into --zoo-file.
""",
)
@click.option("--dataset", required=True, type=click.Choice(_DATASETS), help="Training data.")
@click.option(
    "--arch",
    required=True,
    help="Architecture: registry name (fmnist_cnn, mlp, cifar_resnet20, ...), timm:NAME, torchvision:NAME, module:fn, file.py:fn.",
)
@click.option(
    "--train-sigma",
    default=None,
    type=float,
    help="Gaussian noise level of the augmentation, in [0,1] pixel units (0: no noise, e.g. the "
    "classifier of a denoised expert). Required, except with --denoiser (0).",
)
@click.option(
    "--denoiser",
    default=None,
    help="A denoised zoo entry: train the classifier on its denoiser's outputs at its served "
    "sigmas (the denoiser is frozen) and write a denoised entry with this classifier.",
)
@click.option(
    "--denoised-id",
    default=None,
    help="Id of the denoised entry written with --denoiser (default <id>-denoised).",
)
@click.option(
    "--init",
    default=None,
    help="A zoo expert of the same --arch whose weights start the training (fine-tuning).",
)
@loop_options(epochs=20, batch_size=128)
@optimizer_options(optimizer="sgd", lr=0.05, weight_decay=1e-4)
@seed_option()
@selection_options()
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Random crop + flip (default: on for cifar10/imagenet).",
)
@click.option("--id", "model_id", default=None, help="Zoo id (default <dataset>-<arch>-s<sigma>).")
@output_options()
@zoo_option(help="Extra zoo file(s) defining --denoiser / --init.")
@data_options()
@device_options()
@click.option(
    "--workers", default=0, show_default=True, type=int, help="Data loader worker processes."
)
@resume_options()
def expert(**options) -> None:
    """Train an expert with Gaussian noise augmentation (Cohen et al. 2019) at --train-sigma.

    Seeded and deterministic; checkpoints every epoch and resumes after interruption; writes the
    network's weights as safetensors and a zoo entry with the recipe and the weights' sha256.
    """
    from pathlib import Path

    import torch
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from rsbench.engine.device import resolve as resolve_device
    from rsbench.errors import ConfigError
    from rsbench.train.expert import ExpertTrainConfig, command_line, train_expert
    from rsbench.zoo.registry import load_zoo

    train_sigma = options["train_sigma"]
    if train_sigma is None:
        if not options["denoiser"]:
            raise ConfigError("give --train-sigma (e.g. 0.5; 0 trains without noise)")
        train_sigma = 0.0
    if options["threads"]:
        torch.set_num_threads(int(options["threads"]))
    out_dir = Path(options["out_dir"])
    zoo_file = Path(options["zoo_file"]) if options["zoo_file"] else out_dir / "zoo.yaml"
    config = ExpertTrainConfig(
        dataset=options["dataset"],
        arch=options["arch"],
        train_sigma=train_sigma,
        epochs=options["epochs"],
        batch_size=options["batch_size"],
        **optimizer_values(options),
        seed=check_seed(options["seed"]),
        split=options["split"],
        limit=options["limit"],
        eval_limit=options["eval_limit"],
        augment=options["augment"],
        model_id=options["model_id"],
        denoiser=options["denoiser"],
        denoised_id=options["denoised_id"],
        init=options["init"],
        data_root=options["data_root"],
        download=options["download"],
        device=str(resolve_device(options["device"])),
        num_workers=options["workers"],
    )
    command = command_line(config)
    if options["threads"]:
        command += f" --threads {int(options['threads'])}"
    command += f" --out {shlex.quote(str(out_dir))}"
    if options["zoo_file"]:
        command += f" --zoo-file {shlex.quote(str(zoo_file))}"
    for path in options["zoo_paths"]:
        command += f" --zoo {shlex.quote(path)}"
    zoo = load_zoo(options["zoo_paths"]) if (config.denoiser or config.init) else None
    config = ExpertTrainConfig(**{**config.__dict__, "command": command})

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batches"),
        TextColumn("loss {task.fields[loss]:.4f}  noisy acc {task.fields[acc]:.3f}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = None

    def report(event) -> None:
        nonlocal task
        if event.phase == "start":
            total = event.epochs * event.steps
            done = event.epoch * event.steps
            task = progress.add_task(
                f"{config.resolved_id()}", total=total, completed=done, loss=0.0, acc=0.0
            )
            if event.resumed_from:
                console.print(f"resuming from epoch {event.resumed_from}/{event.epochs}")
        elif event.phase == "batch" and task is not None:
            progress.update(
                task,
                completed=(event.epoch - 1) * event.steps + event.step,
                description=f"epoch {event.epoch}/{event.epochs}",
                loss=event.loss,
                acc=event.accuracy,
            )
        elif event.phase == "epoch":
            line = (
                f"epoch {event.epoch}/{event.epochs}: loss {event.loss:.4f}, "
                f"noisy train acc {event.accuracy:.4f}, lr {event.lr:.3g}"
            )
            if event.eval_clean is not None:
                line += f", test clean {event.eval_clean:.4f}, test noisy {event.eval_noisy:.4f}"
            if event.eval_denoised:
                line += ", test denoised " + ", ".join(
                    f"s{k} {v:.4f}" for k, v in event.eval_denoised.items()
                )
            progress.console.print(line, soft_wrap=True)

    with progress:
        result = train_expert(
            config,
            out_dir,
            zoo_file=zoo_file,
            resume=options["resume"],
            keep_checkpoint=options["keep_checkpoint"],
            progress=report,
            zoo=zoo,
        )
    click.echo(f"weights: {result.weights}")
    click.echo(f"sha256:  {result.sha256}")
    click.echo(f"zoo entry {result.model_id!r} written to {result.zoo_file}")
    if result.denoised_entry is not None:
        click.echo(f"zoo entry {result.denoised_entry.id!r} written to {result.zoo_file}")
    click.echo(f"trained in {result.seconds:.1f} s")

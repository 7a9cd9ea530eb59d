"""``rsbench train denoiser``: train a denoiser; with a zoo classifier it forms a denoised expert."""

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

_DATASETS = ["fashion-mnist", "mnist", "cifar10", "fashion-mnist-embedded"]


def _sigmas(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma list of numbers like 0.25,0.5,1"
        ) from None


@click.command(
    "denoiser",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  # the embedded denoised expert (classifier: embedded-fmnist-clean, trained with --train-sigma 0)
  rsbench train denoiser --dataset fashion-mnist --sigmas 0.25,0.5,1 --epochs 8 \\
      --classifier embedded-fmnist-clean --id my-fmnist-denoised --out runs/dn --zoo-file my_zoo.yaml
  # then certify it at one of its sigmas: rsbench certify my-fmnist-denoised --sigma 0.5 --zoo my_zoo.yaml
  # a diffusion (DDPM noise-prediction U-Net) denoiser, the embedded embedded-fmnist-ddpm recipe
  rsbench train denoiser --dataset fashion-mnist --arch small_ddpm_unet --sigmas 0.25,0.5,1 \
      --epochs 2 --lr 0.002 --classifier embedded-fmnist-clean --id my-fmnist-ddpm --out runs/ddpm
  # an interrupted run resumes from its last finished epoch: run the same command again

\b
Outputs in --out: <id>-denoiser.safetensors, <id>-denoiser.train.json (config, per-epoch history with
the test MSE per sigma, sha256), <id>-denoiser.checkpoint.pt while training. With --classifier, the
denoised zoo entry <id> (denoiser + classifier, serving --sigmas; recipe, sha256) goes into --zoo-file.
""",
)
@click.option("--dataset", required=True, type=click.Choice(_DATASETS), help="Training data.")
@click.option("--arch", default="small_denoiser", show_default=True, help="Denoiser architecture.")
@click.option(
    "--sigmas",
    default="0.25,0.5,1",
    show_default=True,
    help="Noise levels to train on (and serve), comma list in [0,1] pixel units.",
)
@click.option("--classifier", default=None, help="Zoo expert that classifies the denoised images.")
@click.option(
    "--noise-purpose",
    type=click.Choice(["denoiser-training", "training"]),
    default="denoiser-training",
    show_default=True,
    help="Noise stream purpose; 'training' (shared with the router trainer before) reproduces "
    "denoisers trained then, e.g. embedded-fmnist-denoised.",
)
@loop_options(epochs=10, batch_size=128)
@optimizer_options(optimizer="adam", lr=0.001, weight_decay=0.0)
@seed_option()
@selection_options(eval_help="Test images scored (MSE per sigma) after each epoch (0: none).")
@click.option(
    "--id", "model_id", default=None, help="Denoised entry id (default <dataset>-denoised)."
)
@output_options()
@zoo_option(help="Extra zoo file(s) defining --classifier.")
@data_options()
@device_options()
@resume_options("<out>/<id>-denoiser.checkpoint.pt")
def denoiser(**options) -> None:
    """Train a noise-conditional denoiser over --sigmas (MSE); seeded, resumable, safetensors.

    With --classifier (a zoo expert, e.g. one trained with --train-sigma 0) it writes a `denoised`
    zoo entry: at each of its sigmas s the base model is classifier(denoise(x + noise, s)).
    """
    from pathlib import Path

    import torch

    from rsbench.engine.device import resolve as resolve_device
    from rsbench.train.denoiser import DenoiserTrainConfig, command_line, train_denoiser
    from rsbench.zoo.registry import load_zoo

    if options["threads"]:
        torch.set_num_threads(int(options["threads"]))
    out_dir = Path(options["out_dir"])
    zoo_file = Path(options["zoo_file"]) if options["zoo_file"] else out_dir / "zoo.yaml"
    config = DenoiserTrainConfig(
        dataset=options["dataset"],
        arch=options["arch"],
        sigmas=_sigmas(options["sigmas"]),
        epochs=options["epochs"],
        batch_size=options["batch_size"],
        **optimizer_values(options),
        seed=check_seed(options["seed"]),
        split=options["split"],
        limit=options["limit"],
        eval_limit=options["eval_limit"],
        model_id=options["model_id"],
        classifier=options["classifier"],
        noise_purpose=options["noise_purpose"],
        data_root=options["data_root"],
        download=options["download"],
        device=str(resolve_device(options["device"])),
    )
    command = command_line(config)
    if options["threads"]:
        command += f" --threads {int(options['threads'])}"
    command += f" --out {shlex.quote(str(out_dir))}"
    if options["zoo_file"]:
        command += f" --zoo-file {shlex.quote(str(zoo_file))}"
    for path in options["zoo_paths"]:
        command += f" --zoo {shlex.quote(path)}"
    config = DenoiserTrainConfig(**{**config.__dict__, "command": command})
    zoo = load_zoo(options["zoo_paths"]) if config.classifier else None

    def report(event) -> None:
        if event.phase == "start" and event.resumed_from:
            click.echo(f"resuming from epoch {event.resumed_from}/{event.epochs}", err=True)
        elif event.phase == "epoch":
            line = f"epoch {event.epoch}/{event.epochs}: loss {event.loss:.5f}, lr {event.lr:.3g}"
            if event.eval_mse:
                line += ", test mse " + ", ".join(
                    f"s{k} {v:.4f}" for k, v in event.eval_mse.items()
                )
            click.echo(line, err=True)

    result = train_denoiser(
        config,
        out_dir,
        zoo=zoo,
        zoo_file=zoo_file,
        resume=options["resume"],
        keep_checkpoint=options["keep_checkpoint"],
        progress=report,
    )
    click.echo(f"weights: {result.weights}")
    click.echo(f"sha256:  {result.sha256}")
    if result.entry is not None:
        click.echo(f"zoo entry {result.model_id!r} written to {result.zoo_file}")
    click.echo(f"trained in {result.seconds:.1f} s")

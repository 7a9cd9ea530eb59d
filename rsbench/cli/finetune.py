"""``rsbench train finetune``: one co-training round of a dual model's experts and router.

The command only: the round itself is :func:`rsbench.train.finetune.finetune_dual`; the router
options, bars and report are shared with ``rsbench train router``
(:mod:`rsbench.cli.train_router`).
"""

from __future__ import annotations

from pathlib import Path

import click

from rsbench.cli.train_router import (
    SETTINGS,
    RouterBars,
    io_suffix,
    report_router,
    router_config,
    router_options,
)


@click.command(
    "finetune",
    context_settings=SETTINGS,
    epilog="""\b
Examples:
  # one co-training round of the embedded dual model: new ids end in -ct
  rsbench train finetune embedded-fmnist-dual --out runs/ct --zoo-file my_zoo.yaml
  # fewer images and epochs for a quick try
  rsbench train finetune my-fmnist-dual --zoo my_zoo.yaml --train-images 5000 --ft-epochs 1

\b
One round (the paper found one enough): the dual entry's router assigns each training image to an
expert (argmax of the router's mean softmax over --assign-copies noisy copies at sigma_router);
each expert with weights of our own is fine-tuned at its sigma on its assigned images, mixed with
--replay of its other training images (so it keeps what it knows), with a small --ft-lr for
--ft-epochs; then labels are recomputed for the new experts and a new router is trained. Writes
NEW entries (<id><suffix>), never overwrites existing ones.
""",
)
@click.argument("dual_id")
@click.option("--suffix", default="-ct", show_default=True, help="Appended to every new id.")
@click.option(
    "--ft-epochs", default=2, show_default=True, type=int, help="Expert fine-tuning epochs."
)
@click.option(
    "--ft-lr", default=2e-4, show_default=True, type=float, help="Expert fine-tuning LR (Adam)."
)
@click.option("--ft-batch-size", default=128, show_default=True, type=int)
@click.option(
    "--replay",
    default=0.5,
    show_default=True,
    type=float,
    help="Share of each fine-tuning batch drawn from images NOT assigned to the expert.",
)
@click.option(
    "--assign-copies",
    default=8,
    show_default=True,
    type=int,
    help="Noisy copies averaged for the router's assignment.",
)
@router_options
def finetune(dual_id: str, **options) -> None:
    """Co-train DUAL_ID's experts with its router for one round; write new -ct entries.

    Experts without weights of our own (not a local file or package source) are kept as they
    are. The router is always retrained on labels of the new experts.
    """
    import torch

    from rsbench.train.finetune import FinetuneConfig, command_line, finetune_dual

    if options["threads"]:
        torch.set_num_threads(int(options["threads"]))
    out_dir = Path(options["out_dir"])
    zoo_file = Path(options["zoo_file"]) if options["zoo_file"] else out_dir / "zoo.yaml"
    template = router_config((), options)
    config = FinetuneConfig(
        dual_id=dual_id,
        suffix=options["suffix"],
        epochs=options["ft_epochs"],
        lr=options["ft_lr"],
        batch_size=options["ft_batch_size"],
        replay=options["replay"],
        assign_copies=options["assign_copies"],
        router=template,
    )
    command = command_line(config) + io_suffix(options, zoo_file)
    config = FinetuneConfig(**{**config.__dict__, "command": command})
    with RouterBars() as bars:
        result = finetune_dual(
            config,
            out_dir,
            zoo_file=zoo_file,
            zoo_paths=list(options["zoo_paths"]),
            cache_dir=options["cache_dir"],
            progress=bars,
        )
    for old, new in result.experts.items():
        click.echo(f"expert {old} -> {new}")
    click.echo(f"assignment shares: {result.assignment_share}")
    report_router(result.router)

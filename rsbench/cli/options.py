"""Click option groups shared by the commands (``train expert``, ``train denoiser``, ``certify``).

One definition per option: its flags, Python parameter name, type and default live here; a
command passes only what differs for it (a default, or a help text that names its own files).
Every function returns a decorator; a group adds its options in the order listed, which is the
order ``--help`` shows. Options whose value a command checks (``--seed``: :func:`check_seed`) are
still checked in the command, so a bad value is one ``error:`` line like every other.

Groups for trainers: :func:`loop_options` (``--epochs``, ``--batch-size``), :func:`optimizer_options`
(the recipe of :class:`rsbench.train.common.OptimizerConfig`; :func:`optimizer_values` picks those
values out of a command's options), :func:`selection_options` (``--split``, ``--limit``,
``--eval-limit``), :func:`output_options` (``--out``, ``--zoo-file``), :func:`data_options`
(``--data-root``, ``--download``), :func:`device_options` (``--device``, ``--threads``) and
:func:`resume_options` (``--resume/--no-resume``, ``--keep-checkpoint``). Single options that
several commands share with their own wording: :func:`seed_option`, :func:`zoo_option`,
:func:`out_option`, :func:`data_root_option`, :func:`download_option`, :func:`device_option`,
:func:`threads_option`.

Imports click and :mod:`rsbench.train.common` (which loads torch only when training).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from rsbench.train.common import OPTIMIZERS, SCHEDULES

#: a Click decorator: takes the command function, returns it with more parameters
Decorator = Callable[[Any], Any]

#: the optimiser recipe's option names (as Python parameters), in --help order
OPTIMIZER_KEYS = ("optimizer", "lr", "momentum", "weight_decay", "schedule", "step_size", "gamma")


def group(*decorators: Decorator) -> Decorator:
    """One decorator that applies ``decorators`` so that ``--help`` lists them in this order."""

    def apply(func: Any) -> Any:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


# ------------------------------------------------------------------------------------------------
# single options


def seed_option(
    help: str = "Seeds weights, data order and noise (0 <= SEED < 2**63).", default: int = 0
) -> Decorator:
    """``--seed`` (an integer; the command checks it with :func:`rsbench.errors.check_seed`)."""
    return click.option("--seed", default=default, show_default=True, type=int, help=help)


def device_option(default: str = "cpu", help: str = "cpu, cuda, cuda:N or auto.") -> Decorator:
    """``--device`` (resolved by :func:`rsbench.engine.device.resolve`)."""
    return click.option("--device", default=default, show_default=True, help=help)


def threads_option(help: str = "CPU threads for torch (default: torch's choice).") -> Decorator:
    """``--threads`` (CPU threads for torch; ``None``: leave torch's setting)."""
    return click.option("--threads", default=None, type=int, help=help)


def data_root_option(
    help: str = "Dataset root (default $RSBENCH_DATA, then the user cache; Fashion-MNIST also "
    "/usr/share/datasets).",
) -> Decorator:
    """``--data-root`` (a folder)."""
    return click.option("--data-root", default=None, type=click.Path(file_okay=False), help=help)


def download_option(
    help: str = "Let torchvision download the dataset if it is missing.",
) -> Decorator:
    """``--download`` (a flag)."""
    return click.option("--download", is_flag=True, help=help)


def out_option(
    default: str | None = "runs/train", help: str | None = "Output folder.", name: str = "out_dir"
) -> Decorator:
    """``--out`` as the parameter ``name`` (a folder)."""
    return click.option(
        "--out",
        name,
        default=default,
        show_default=default is not None,
        type=click.Path(file_okay=False),
        help=help,
    )


def zoo_option(
    help: str = "Extra zoo file (repeatable; also RSBENCH_ZOO).",
    exists: bool = False,
    name: str = "zoo_paths",
) -> Decorator:
    """``--zoo`` as the parameter ``name`` (repeatable zoo files)."""
    return click.option(
        "--zoo",
        name,
        multiple=True,
        type=click.Path(dir_okay=False, exists=exists),
        help=help,
    )


def zoo_file_option(
    help: str = "Zoo file that receives the entry (default <out>/zoo.yaml).",
) -> Decorator:
    """``--zoo-file``: the zoo file a trainer writes its entry into."""
    return click.option("--zoo-file", default=None, type=click.Path(dir_okay=False), help=help)


# ------------------------------------------------------------------------------------------------
# groups


def loop_options(epochs: int, batch_size: int) -> Decorator:
    """``--epochs`` and ``--batch-size`` with this trainer's defaults."""
    return group(
        click.option("--epochs", default=epochs, show_default=True, type=int),
        click.option("--batch-size", default=batch_size, show_default=True, type=int),
    )


def optimizer_options(optimizer: str, lr: float, weight_decay: float) -> Decorator:
    """The optimiser recipe: ``--optimizer``, ``--lr``, ``--momentum``, ``--weight-decay``,
    ``--schedule``, ``--step-size``, ``--gamma`` (checked by ``OptimizerConfig.check``)."""
    return group(
        click.option(
            "--optimizer",
            default=optimizer,
            show_default=True,
            type=click.Choice(list(OPTIMIZERS)),
        ),
        click.option("--lr", default=lr, show_default=True, type=float, help="Peak learning rate."),
        click.option(
            "--momentum", default=0.9, show_default=True, type=float, help="SGD momentum."
        ),
        click.option("--weight-decay", default=weight_decay, show_default=True, type=float),
        click.option(
            "--schedule", default="cosine", show_default=True, type=click.Choice(list(SCHEDULES))
        ),
        click.option(
            "--step-size",
            default=30,
            show_default=True,
            type=int,
            help="Epochs per step (--schedule step).",
        ),
        click.option(
            "--gamma",
            default=0.1,
            show_default=True,
            type=float,
            help="LR factor per step (--schedule step).",
        ),
    )


def optimizer_values(options: Mapping[str, Any]) -> dict[str, Any]:
    """The optimiser recipe's values out of a command's options (keyword arguments of a trainer
    config)."""
    return {key: options[key] for key in OPTIMIZER_KEYS}


def selection_options(
    eval_help: str = "Test images scored after each epoch (0: none).",
) -> Decorator:
    """``--split``, ``--limit`` and ``--eval-limit``: the images a trainer trains and scores on."""
    return group(
        click.option("--split", default="train", show_default=True, help="Training split."),
        click.option("--limit", default=None, type=int, help="Train on the first N images only."),
        click.option("--eval-limit", default=1000, show_default=True, type=int, help=eval_help),
    )


def output_options() -> Decorator:
    """``--out`` (default ``runs/train``) and ``--zoo-file``."""
    return group(out_option(), zoo_file_option())


def data_options() -> Decorator:
    """``--data-root`` and ``--download``."""
    return group(data_root_option(), download_option())


def device_options() -> Decorator:
    """``--device`` (default cpu) and ``--threads``."""
    return group(device_option(), threads_option())


def resume_options(checkpoint: str = "<out>/<id>.checkpoint.pt") -> Decorator:
    """``--resume/--no-resume`` (from ``checkpoint``) and ``--keep-checkpoint``."""
    return group(
        click.option(
            "--resume/--no-resume",
            default=True,
            show_default=True,
            help=f"Continue from {checkpoint}.",
        ),
        click.option(
            "--keep-checkpoint", is_flag=True, help="Keep the resume checkpoint after the run."
        ),
    )

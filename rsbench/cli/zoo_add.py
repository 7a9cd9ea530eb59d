"""``rsbench zoo add`` and ``rsbench zoo import-archive``: the subcommands that write a zoo file.

The :func:`rsbench.cli.zoo.zoo` group adds them. ``add`` builds one
expert entry from a local checkpoint (checked by loading it), ``import-archive`` pins the entries
an offline archive holds (:mod:`rsbench.models.import_archive`); both write through
:func:`rsbench.zoo.files.write_entries` (comments kept, atomic).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from rsbench.cli.zoo_options import (
    CONTEXT,
    cache_option,
    device_option,
    interrupt_says,
    load_group_zoo,
    make_console,
    zoo_option,
)
from rsbench.zoo.entry import DATASETS as ZOO_DATASETS

# --------------------------------------------------------------------------------------------------
# add


def _floats(text: str | None, name: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not comma-separated numbers", param_hint=name
        ) from None


@click.command(
    "add",
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  rsbench zoo add --id my-cifar-s0.25 --checkpoint runs/ck.pth.tar --arch cifar_resnet110 \\
      --dataset cifar10 --train-sigma 0.25 --input-layer normalize \\
      --state-dict-key state_dict --strip-prefix 1. --zoo-file my_zoo.yaml
  rsbench zoo add --id my-net-s0.50 --checkpoint net.safetensors --arch nets.py:build \\
      --dataset fashion-mnist --train-sigma 0.5 --input-layer none --zoo-file my_zoo.yaml
  rsbench zoo check my-net-s0.50 --zoo my_zoo.yaml
""",
)
@click.option("--id", "model_id", required=True, help="Zoo id (with s<sigma> if it names a sigma).")
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Local checkpoint file (.pth / .pt / .safetensors).",
)
@click.option(
    "--arch",
    required=True,
    help="Registry name, timm:NAME, torchvision:NAME, module:fn or file.py:fn.",
)
@click.option("--dataset", required=True, type=click.Choice(sorted(ZOO_DATASETS)))
@click.option("--train-sigma", required=True, type=float, help="Noise the model was trained with.")
@click.option(
    "--input-layer",
    "input_layer",
    required=True,
    type=click.Choice(["normalize", "center", "none"]),
    help="Input layer inside the model (checkpoints do not record it).",
)
@click.option(
    "--mean",
    default=None,
    help="Comma-separated channel means (default: the dataset's usual values).",
)
@click.option(
    "--std",
    default=None,
    help="Comma-separated channel stds for normalize (default: the dataset's).",
)
@click.option(
    "--num-classes", default=None, type=int, help="Outputs (default: the dataset's classes)."
)
@click.option("--input-shape", default=None, help="C,H,W (default: the dataset's).")
@click.option(
    "--state-dict-key",
    default=None,
    help="Key of the state dict inside the checkpoint (e.g. state_dict).",
)
@click.option(
    "--strip-prefix", default=None, help="Prefix to strip from the keys (e.g. '1.' or '1.module.')."
)
@click.option(
    "--kind", default="expert", show_default=True, type=click.Choice(["expert", "router"])
)
@click.option(
    "--experts", default=None, help="Router only: comma-separated expert ids, in output order."
)
@click.option("--license", "license_", default=None, help="License of the weights.")
@click.option("--paper", default=None, help="Paper reference.")
@click.option("--description", default=None)
@click.option(
    "--zoo-file",
    required=True,
    type=click.Path(dir_okay=False),
    help="User zoo file to write (created if missing).",
)
@click.option(
    "--pin/--no-pin", default=True, show_default=True, help="Record the checkpoint's sha256."
)
@click.option(
    "--check/--no-check",
    "run_check",
    default=True,
    show_default=True,
    help="Strict-load the checkpoint and run it forward once before writing.",
)
@click.option("--overwrite", is_flag=True, help="Replace an entry with the same id in --zoo-file.")
@zoo_option
@click.pass_context
def add(ctx: click.Context, **options: Any) -> None:
    """Write a validated entry for a local checkpoint into a user zoo file.

    With --check (the default) the checkpoint is loaded strictly into the architecture and run
    forward once before anything is written. The zoo file is updated under a lock (re-read, merged,
    atomically replaced), so concurrent `zoo add` runs on one file keep every entry.
    """
    zoo_file = Path(options["zoo_file"]).expanduser()
    written: list[Path] = []
    with interrupt_says(lambda: _written_or_not(zoo_file, written)):
        _add(ctx, options, written)


def _written_or_not(zoo_file: Path, written: list[Path]) -> str:
    if written:
        return f"{zoo_file} was already written (complete: it is replaced atomically)"
    return f"nothing was written to {zoo_file} (it is as it was); run it again"


def _add(ctx: click.Context, options: dict[str, Any], written: list[Path]) -> None:
    import os

    from rsbench.data.catalog import DATASETS
    from rsbench.errors import ZooError
    from rsbench.weights.cache import sha256_file
    from rsbench.zoo.files import write_entries
    from rsbench.zoo.parse import parse_entry

    info = DATASETS[options["dataset"]]  # the defaults: the dataset's classes, shape, mean, std
    classes, mean, std = info.num_classes, list(info.mean), list(info.std)
    shape: tuple[int, ...] = info.input_shape
    if options["input_shape"]:
        try:
            shape = tuple(int(v) for v in options["input_shape"].split(","))
        except ValueError:
            raise click.BadParameter("use C,H,W like 3,32,32", param_hint="--input-shape") from None
    layer: dict[str, Any] = {"type": options["input_layer"]}
    if layer["type"] in ("normalize", "center"):
        layer["mean"] = _floats(options["mean"], "--mean") or mean
    if layer["type"] == "normalize":
        layer["std"] = _floats(options["std"], "--std") or std
    zoo_file = Path(options["zoo_file"]).expanduser()
    checkpoint = Path(options["checkpoint"]).expanduser().resolve()
    try:
        rel = Path(os.path.relpath(checkpoint, zoo_file.resolve().parent))
        path = rel.as_posix() if not rel.as_posix().startswith("../../..") else str(checkpoint)
    except ValueError:  # another drive on Windows
        path = str(checkpoint)
    raw: dict[str, Any] = {
        "id": options["model_id"],
        "kind": options["kind"],
        "dataset": options["dataset"],
        "description": options["description"],
        "num_classes": options["num_classes"] or classes,
        "input_shape": list(shape),
        "arch": options["arch"],
        "train_sigma": options["train_sigma"],
        "input_layer": layer,
        "checkpoint": {
            k: options[k] for k in ("state_dict_key", "strip_prefix") if options[k] is not None
        }
        or None,
        "source": {"type": "file", "path": path},
        "sha256": sha256_file(checkpoint) if options["pin"] else None,
        "license": options["license_"],
        "paper": options["paper"],
    }
    if options["kind"] == "router":
        raw["experts"] = [e for e in (options["experts"] or "").split(",") if e]
        if options["num_classes"] is None:
            raw["num_classes"] = len(raw["experts"])
    raw = {k: v for k, v in raw.items() if v is not None or k == "sha256"}
    arch = raw["arch"]
    if ":" in arch and arch.split(":", 1)[0].endswith(".py"):
        file_part, func = arch.rsplit(":", 1)
        arch_path = Path(file_part).expanduser().resolve()
        rel_arch = Path(os.path.relpath(arch_path, zoo_file.resolve().parent)).as_posix()
        raw["arch"] = f"{rel_arch}:{func}"
    entry = parse_entry(raw, file=zoo_file)
    existing = load_group_zoo(ctx, options["zoo_paths"])
    if entry.id in existing:
        other = existing.get(entry.id).zoo_file
        if other is None or other.resolve() != zoo_file.resolve():
            raise ZooError(f"id {entry.id!r} is already defined in {other}; pick another --id")
    if options["run_check"]:
        from rsbench.models.loading import load_model
        from rsbench.models.network import forward_check

        forward_check(load_model(entry), entry, batch=1)
    written.append(write_entries(zoo_file, [entry], overwrite=options["overwrite"]))
    pin = f"sha256 {entry.sha256}" if entry.sha256 else "UNPINNED"
    click.echo(f"wrote {entry.id} ({pin}) to {zoo_file}")
    click.echo(f"check it with: rsbench zoo check {entry.id} --zoo {shlex.quote(str(zoo_file))}")


# --------------------------------------------------------------------------------------------------
# import-archive


@click.command(
    "import-archive",
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  rsbench zoo import-archive ~/Downloads/models.tar.gz --zoo-file my_zoo.yaml
  rsbench zoo import-archive ~/smoothing/models --zoo-file my_zoo.yaml    # an extracted folder
  rsbench zoo import-archive big.tar --zoo-file my_zoo.yaml --max-member-size 2G
  rsbench certify cohen-cifar10-resnet110-s0.25 --zoo my_zoo.yaml
""",
)
@click.argument("path", type=click.Path(exists=True))
@click.option(
    "--zoo-file",
    required=True,
    type=click.Path(dir_okay=False),
    help="User zoo file that records the sha256 of each imported entry (created if missing).",
)
@click.option(
    "--max-member-size",
    default=None,
    metavar="SIZE",
    help=(
        "Refuse members larger than SIZE before copying them (bytes, or 500M, 2G; default 1G, "
        "about 5x the largest checkpoint in the zoo; also $RSBENCH_MAX_MEMBER_BYTES)."
    ),
)
@device_option
@zoo_option
@cache_option
@click.pass_context
def import_archive_cmd(
    ctx: click.Context,
    path: str,
    zoo_file: str,
    max_member_size: str | None,
    device: str,
    zoo_paths: tuple[str, ...],
    cache_dir: str | None,
) -> None:
    """Make zoo entries available from an archive or folder you downloaded yourself.

    PATH is the authors' models.tar.gz (or .tar / .zip) or the folder it extracts to. Every member
    that a zoo entry names (by its path, with or without the top folder) is copied into the cache,
    loaded strictly and run forward once; the sha256 of each is written to --zoo-file, which pins
    those entries for you (use it with --zoo FILE or $RSBENCH_ZOO). Exits with a non-zero status
    when an entry failed or nothing matched. A member that fails a check is not kept, and never
    replaces or deletes a file the cache or --zoo-file already holds (the cache stores files by
    their sha256).
    """
    from rsbench.errors import CheckFailed
    from rsbench.models.import_archive import import_archive
    from rsbench.weights.archive import parse_size
    from rsbench.zoo.files import write_entries

    limit = None if max_member_size is None else parse_size(max_member_size, "--max-member-size")
    zoo_ = load_group_zoo(ctx, zoo_paths + (zoo_file,) if Path(zoo_file).exists() else zoo_paths)
    console = make_console()

    def report(entry_id: str, status: str, detail: str) -> None:
        color = "green" if status == "ok" else "red"
        console.print(
            f"[{color}]{status:>4}[/] {entry_id}: {detail}", highlight=False, soft_wrap=True
        )

    from rsbench.engine.device import resolve

    written: list[Path] = []

    def what_is_true() -> str:
        if written:
            return _written_or_not(Path(zoo_file), written)
        return (
            f"nothing was written to {zoo_file} (it is as it was); members already checked stay "
            "in the cache; run it again"
        )

    with interrupt_says(what_is_true):
        result = import_archive(
            path,
            zoo_,
            cache_dir=cache_dir,
            device=str(resolve(device)),
            on_entry=report,
            max_member_bytes=limit,
        )
        if result.imported:
            written.append(write_entries(zoo_file, result.imported, overwrite=True))
    for name in result.unmatched:
        console.print(f"  no entry: {name}", highlight=False, soft_wrap=True)
    summary = (
        f"{len(result.imported)} entries available, {len(result.failed)} failed; "
        f"{len(result.unmatched)} checkpoint files matched no entry"
    )
    if result.other_files:
        summary += f" ({result.other_files} other files ignored)"
    console.print(summary, highlight=False, soft_wrap=True)
    if result.imported:
        console.print(
            f"pinned in {zoo_file}; use them with --zoo {zoo_file} (or RSBENCH_ZOO={zoo_file}), "
            f"e.g. rsbench certify {result.imported[0].id} --zoo {shlex.quote(str(zoo_file))}",
            highlight=False,
            soft_wrap=True,
        )
    if not result.imported and not result.failed:
        raise CheckFailed(
            f"no member of {path} is named by a zoo entry (see `rsbench zoo list`; entries name "
            "members like models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar)"
        )
    if result.failed:
        raise CheckFailed(
            f"{len(result.failed)} of {len(result.failed) + len(result.imported)} matched entries "
            "failed (the FAIL lines above say why)"
        )

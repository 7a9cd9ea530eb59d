"""``rsbench zoo``: list, inspect, check, hash, import (archives) and add zoo models."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: per-dataset defaults for `zoo add`: num_classes, input_shape, mean, std (Cohen et al.'s values)
_DATASET_DEFAULTS: dict[str, tuple[int, tuple[int, ...], list[float], list[float]]] = {
    "cifar10": (10, (3, 32, 32), [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
    "imagenet": (1000, (3, 224, 224), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "fashion-mnist": (10, (1, 28, 28), [0.2860], [0.3530]),
    "mnist": (10, (1, 28, 28), [0.1307], [0.3081]),
}

zoo_option = click.option(
    "--zoo",
    "zoo_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Extra zoo file (repeatable); also $RSBENCH_ZOO (os.pathsep-separated).",
)
cache_option = click.option(
    "--cache-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Weights cache (default $RSBENCH_CACHE, else the user cache dir).",
)


def _load(ctx: click.Context, zoo_files: tuple[str, ...]):
    from rsbench.zoo import load_zoo

    group_files = tuple((ctx.obj or {}).get("zoo_files", ()))
    return load_zoo(extra_paths=group_files + tuple(zoo_files))


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # pipes and files: wide enough for the whole table
        console = Console(width=160)
    return console


@click.group(
    "zoo",
    context_settings=_CONTEXT,
    epilog="""\b
Examples:
  rsbench zoo list --dataset cifar10
  rsbench zoo show cohen-cifar10-resnet110-s0.25
  rsbench zoo check my-expert --zoo my_zoo.yaml
  rsbench zoo hash checkpoint.pth.tar
  rsbench zoo import-archive ~/Downloads/models.tar.gz --zoo-file my_zoo.yaml
  rsbench zoo add --id my-cifar-s0.25 --checkpoint ck.pth --arch cifar_resnet110 \\
      --dataset cifar10 --train-sigma 0.25 --input-layer normalize --zoo-file my_zoo.yaml
""",
)
@zoo_option
@click.pass_context
def zoo(ctx: click.Context, zoo_files: tuple[str, ...]) -> None:
    """List, inspect, check, hash, import and add zoo models (packaged zoo + --zoo / $RSBENCH_ZOO)."""
    ctx.ensure_object(dict)
    ctx.obj["zoo_files"] = zoo_files


# --------------------------------------------------------------------------------------------------
# list


def _denoised_arch(entry) -> str:
    from rsbench.denoised import describe

    return describe(entry)


def _row(entry, cache_dir: str | None) -> dict[str, Any]:
    from rsbench import weights
    from rsbench.zoo import entry_digest

    cached: bool | None = None
    if entry.kind == "denoised":
        from rsbench import denoised

        cached = denoised.is_cached(entry, cache_dir)
    elif entry.kind not in ("dual", "cascade"):
        cached = weights.is_cached(entry, cache_dir)
    return {
        "id": entry.id,
        "kind": entry.kind,
        "dataset": entry.dataset,
        "train_sigma": entry.train_sigma,
        "arch": entry.arch if entry.kind != "denoised" else _denoised_arch(entry),
        "sigmas": list(entry.sigmas) if entry.kind == "denoised" else None,
        "pinned": entry.pinned if entry.kind not in ("dual", "cascade") else None,
        "sha256": entry.sha256,
        "cached": cached,
        "source": entry.source.describe() if entry.source else None,
        "source_type": entry.source.type if entry.source else None,
        "revision": entry.source.revision if entry.source else None,
        "experts": list(entry.experts) or None,
        "router": entry.router,
        "zoo_file": str(entry.zoo_file) if entry.zoo_file else None,
        "entry_digest": entry_digest(entry),
    }


@zoo.command(
    "list",
    context_settings=_CONTEXT,
    epilog="""\b
Examples:
  rsbench zoo list
  rsbench zoo list cohen --dataset cifar10
  rsbench zoo list 'smoothadv-*-s0.25' --format json
""",
)
@click.argument("pattern", required=False)
@click.option(
    "--dataset", default=None, help="Only entries for this dataset (cifar10, imagenet, ...)."
)
@click.option(
    "--kind",
    default=None,
    type=click.Choice(["expert", "router", "dual", "cascade", "denoised"]),
)
@click.option(
    "--format", "fmt", default="rich", show_default=True, type=click.Choice(["rich", "json"])
)
@zoo_option
@cache_option
@click.pass_context
def list_cmd(
    ctx: click.Context,
    pattern: str | None,
    dataset: str | None,
    kind: str | None,
    fmt: str,
    zoo_files: tuple[str, ...],
    cache_dir: str | None,
) -> None:
    """List zoo entries: PATTERN is a substring or glob of the id.

    "unpinned" means the entry has no sha256: its bytes are checked only when someone pins it
    (`rsbench zoo hash`). "cached" means the checkpoint is present locally (verified on load).
    """
    entries = _load(ctx, zoo_files).select(pattern, dataset=dataset, kind=kind)
    rows = [_row(e, cache_dir) for e in entries]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"rsbench zoo ({len(rows)} entries)")
    console = _console()
    wide = console.width >= 140
    columns = ["id", "kind", "dataset", "sigma", "arch", "weights", "cached", "source"]
    if not wide:
        columns.remove("arch")
    for name in columns:
        table.add_column(name, no_wrap=name == "id")
    for row in rows:
        pinned = {True: "[green]pinned[/]", False: "[yellow]unpinned[/]", None: "-"}[row["pinned"]]
        cached = {True: "yes", False: "no", None: "-"}[row["cached"]]
        sigma = f"{row['train_sigma']:.2f}" if row["train_sigma"] is not None else "-"
        if row["sigmas"]:  # a denoised expert: the sigmas it serves
            sigma = ",".join(f"{s:g}" for s in row["sigmas"])
        arch = row["arch"] or f"router {row['router']}"
        cells = [row["id"], row["kind"], row["dataset"], sigma, arch, pinned, cached]
        source = row["source_type"] or "-"
        if row["revision"]:
            source += f"@{row['revision'][:12]}"
        cells.append(source)
        if not wide:
            cells.pop(4)
        table.add_row(*cells)
    console.print(table)
    unpinned = sum(1 for r in rows if r["pinned"] is False)
    if unpinned:
        console.print(
            f"{unpinned} unpinned: no published checksum; loading logs the sha256 seen, "
            "`--require-pinned` refuses them."
        )


# --------------------------------------------------------------------------------------------------
# show


@zoo.command(
    "show",
    context_settings=_CONTEXT,
    epilog="""\b
Examples:
  rsbench zoo show cohen-cifar10-resnet110-s0.25
  rsbench zoo show my-expert --zoo my_zoo.yaml
""",
)
@click.argument("model_id")
@zoo_option
@cache_option
@click.pass_context
def show(
    ctx: click.Context, model_id: str, zoo_files: tuple[str, ...], cache_dir: str | None
) -> None:
    """Show one entry as YAML, with its provenance digest and cache state."""
    from rsbench import weights
    from rsbench.zoo import dump_entries, entry_digest

    entry = _load(ctx, zoo_files).get(model_id)
    click.echo(dump_entries([entry], indent=0).rstrip())
    click.echo(f"# zoo file:     {entry.zoo_file}")
    click.echo(f"# entry digest: {entry_digest(entry)}")
    if entry.kind in ("dual", "cascade"):
        return
    if entry.kind == "denoised":
        from rsbench import denoised

        pinned = "pinned" if entry.pinned else "UNPINNED (a component has no sha256 / revision)"
        click.echo(f"# weights:      {pinned}")
        click.echo(f"# cached:       {'yes' if denoised.is_cached(entry, cache_dir) else 'no'}")
        return
    click.echo(f"# weights:      {'pinned' if entry.pinned else 'UNPINNED (no sha256)'}")
    click.echo(f"# cached:       {'yes' if weights.is_cached(entry, cache_dir) else 'no'}")
    path = weights.cache_path(entry, cache_dir)
    if path is not None:
        click.echo(f"# cache path:   {path}")
    if entry.source is not None and entry.source.type == "archive_url":
        archive = weights.archive_cache_path(entry.source.url or "", cache_dir)
        click.echo(f"# archive:      {archive}")
        click.echo(
            "# offline:      download the archive in a browser, then `rsbench zoo import-archive FILE`"
        )


# --------------------------------------------------------------------------------------------------
# check


def _nothing() -> None:
    return None


def _check_one(
    entry, zoo, download: bool, require_pinned: bool, cache_dir, device, refetch: bool = False
) -> tuple[str, str]:
    import torch

    from rsbench import weights
    from rsbench.commands.progress import download_progress
    from rsbench.errors import RSBenchError
    from rsbench.models import load_model

    if entry.kind == "dual":
        for ref in (entry.router, *entry.experts):
            zoo.get(ref)
        return "ok", f"router {entry.router} + {len(entry.experts)} experts resolve"
    if entry.kind == "cascade":
        for ref in entry.experts:
            zoo.get(ref)
        return "ok", f"{len(entry.experts)} cascade experts resolve"
    if require_pinned and not entry.pinned:
        return "FAIL", "unpinned (no sha256) and --require-pinned is set"
    if refetch and entry.kind != "denoised":
        weights.remove_cached(entry, cache_dir)
    if entry.kind == "denoised":
        from rsbench import denoised

        cached = denoised.is_cached(entry, cache_dir)
    else:
        cached = weights.is_cached(entry, cache_dir)
    if not download and not cached:
        return "skip", "schema ok; weights not available locally (add --download to fetch them)"
    bar, close_bar = download_progress() if download and sys.stderr.isatty() else (None, _nothing)
    try:
        model = load_model(
            entry,
            device=device,
            cache_dir=cache_dir,
            require_pinned=require_pinned,
            progress=bar,
            sigma=entry.sigmas[0] if entry.kind == "denoised" else None,  # denoiser + classifier
        )
        shape = tuple(entry.input_shape or ())
        generator = torch.Generator().manual_seed(0)
        batch = torch.rand((2, *shape), generator=generator).to(device)
        with torch.no_grad():
            logits = model(batch)
    except RSBenchError as exc:
        return "FAIL", str(exc)
    except (RuntimeError, ValueError, TypeError) as exc:
        return "FAIL", f"forward pass failed: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    finally:
        close_bar()
    if tuple(logits.shape) != (2, entry.num_classes):
        return (
            "FAIL",
            f"forward pass gave shape {tuple(logits.shape)}, expected (2, {entry.num_classes})",
        )
    if not bool(torch.isfinite(logits).all()):
        return "FAIL", "forward pass gave non-finite logits"
    pin = "pinned" if model.weights_pinned else "UNPINNED"
    return (
        "ok",
        f"strict load + forward {tuple(logits.shape)}; sha256 {model.weights_sha256} ({pin})",
    )


@zoo.command(
    "check",
    context_settings=_CONTEXT,
    epilog="""\b
Examples:
  rsbench zoo check                                   # schema of every entry, loads what is cached
  rsbench zoo check my-expert --zoo my_zoo.yaml       # strict load + one forward pass
  rsbench zoo check cohen-cifar10-resnet110-s0.25 --download --require-pinned
""",
)
@click.argument("model_ids", nargs=-1)
@click.option("--download", is_flag=True, help="Fetch weights that are not available locally.")
@click.option("--require-pinned", is_flag=True, help="Fail entries without a sha256.")
@click.option(
    "--allow-unpinned",
    is_flag=True,
    help="Let Hugging Face sources name a branch or tag instead of a commit.",
)
@click.option(
    "--refetch",
    is_flag=True,
    help="Forget the cached file (and a changed archive) first; with --download, fetch it again.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Device for the forward pass: cpu, cuda, cuda:N or auto.",
)
@zoo_option
@cache_option
@click.pass_context
def check(
    ctx: click.Context,
    model_ids: tuple[str, ...],
    download: bool,
    require_pinned: bool,
    allow_unpinned: bool,
    refetch: bool,
    device: str,
    zoo_files: tuple[str, ...],
    cache_dir: str | None,
) -> None:
    """Check entries: schema, download (--download), sha256, strict load, one forward pass.

    Without IDs every entry is checked; weights that are not local are skipped unless --download.
    Exits with status 1 when any entry fails.
    """
    from rsbench.device import resolve

    device = str(resolve(device))
    from rsbench import weights

    zoo_ = _load(ctx, zoo_files)
    entries = [zoo_.get(i) for i in model_ids] if model_ids else list(zoo_)
    console = _console()
    failed = 0
    for entry in entries:
        with weights.allowing_unpinned_revisions(allow_unpinned):
            status, message = _check_one(
                entry, zoo_, download, require_pinned, cache_dir, device, refetch
            )
        color = {"ok": "green", "skip": "yellow", "FAIL": "red"}[status]
        console.print(
            f"[{color}]{status:>4}[/] {entry.id}: {message}", highlight=False, soft_wrap=True
        )
        failed += status == "FAIL"
    if failed:
        from rsbench.errors import CheckFailed

        raise CheckFailed(
            f"{failed} of {len(entries)} checked entries failed (the FAIL lines above say why)"
        )
    console.print(f"{len(entries)} checked, 0 failed", highlight=False)


# --------------------------------------------------------------------------------------------------
# hash


@zoo.command(
    "hash",
    context_settings=_CONTEXT,
    epilog="""\b
Examples:
  rsbench zoo hash ~/Downloads/checkpoint.pth.tar
  # then add `sha256: <hex>` to the entry to pin it
""",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def hash_cmd(files: tuple[str, ...]) -> None:
    """Print the sha256 of checkpoint FILES (the value for an entry's `sha256:`)."""
    from rsbench.weights import sha256_file, sniff_format

    for name in files:
        click.echo(f"{sha256_file(name)}  {name}  ({sniff_format(name)})")


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


@zoo.command(
    "add",
    context_settings=_CONTEXT,
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
@click.option("--dataset", required=True, type=click.Choice(sorted(_DATASET_DEFAULTS)))
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
    help="Strict-load the checkpoint before writing.",
)
@click.option("--overwrite", is_flag=True, help="Replace an entry with the same id in --zoo-file.")
@zoo_option
@click.pass_context
def add(ctx: click.Context, **options: Any) -> None:
    """Write a validated entry for a local checkpoint into a user zoo file."""
    import os

    from rsbench.errors import ZooError
    from rsbench.weights import sha256_file
    from rsbench.zoo import parse_entry, write_entries

    classes, shape, mean, std = _DATASET_DEFAULTS[options["dataset"]]
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
    existing = _load(ctx, options["zoo_files"])
    if entry.id in existing:
        other = existing.get(entry.id).zoo_file
        if other is None or other.resolve() != zoo_file.resolve():
            raise ZooError(f"id {entry.id!r} is already defined in {other}; pick another --id")
    if options["run_check"]:
        from rsbench.models import load_model

        load_model(entry)
    write_entries(zoo_file, [entry], overwrite=options["overwrite"])
    pin = f"sha256 {entry.sha256}" if entry.sha256 else "UNPINNED"
    click.echo(f"wrote {entry.id} ({pin}) to {zoo_file}")
    click.echo(f"check it with: rsbench zoo check {entry.id} --zoo {zoo_file}")


# --------------------------------------------------------------------------------------------------
# import-archive


@zoo.command(
    "import-archive",
    context_settings=_CONTEXT,
    epilog="""\b
Examples:
  rsbench zoo import-archive ~/Downloads/models.tar.gz --zoo-file my_zoo.yaml
  rsbench zoo import-archive ~/smoothing/models --zoo-file my_zoo.yaml    # an extracted folder
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
    "--device",
    default="cpu",
    show_default=True,
    help="Device for the forward pass: cpu, cuda, cuda:N or auto.",
)
@zoo_option
@cache_option
@click.pass_context
def import_archive_cmd(
    ctx: click.Context,
    path: str,
    zoo_file: str,
    device: str,
    zoo_files: tuple[str, ...],
    cache_dir: str | None,
) -> None:
    """Make zoo entries available from an archive or folder you downloaded yourself.

    PATH is the authors' models.tar.gz (or .tar / .zip) or the folder it extracts to. Every member
    that a zoo entry names (by its path, with or without the top folder) is copied into the cache,
    loaded strictly and run forward once; the sha256 of each is written to --zoo-file, which pins
    those entries for you (use it with --zoo FILE or $RSBENCH_ZOO). Exits with a non-zero status
    when an entry failed or nothing matched.
    """
    from rsbench.errors import CheckFailed
    from rsbench.zoo import write_entries
    from rsbench.zoo_import import import_archive

    zoo_ = _load(ctx, zoo_files + (zoo_file,) if Path(zoo_file).exists() else zoo_files)
    console = _console()

    def report(entry_id: str, status: str, detail: str) -> None:
        color = "green" if status == "ok" else "red"
        console.print(
            f"[{color}]{status:>4}[/] {entry_id}: {detail}", highlight=False, soft_wrap=True
        )

    from rsbench.device import resolve

    result = import_archive(
        path, zoo_, cache_dir=cache_dir, device=str(resolve(device)), on_entry=report
    )
    if result.imported:
        write_entries(zoo_file, result.imported, overwrite=True)
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
            f"e.g. rsbench certify {result.imported[0].id} --zoo {zoo_file}",
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

"""``rsbench zoo``: list, inspect, check, hash, import (archives) and add zoo models.

This module owns the group, its shared options and the reading subcommands (list, show, check,
hash); the subcommands that write a zoo file (add, import-archive) are
:mod:`rsbench.cli.zoo_add`, registered on the group when this module is imported.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from rsbench.cli.zoo_add import add, import_archive_cmd
from rsbench.cli.zoo_options import (
    CONTEXT,
    cache_option,
    device_option,
    interrupt_says,
    load_group_zoo,
    make_console,
    zoo_option,
)


@click.group(
    "zoo",
    context_settings=CONTEXT,
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
def zoo(ctx: click.Context, zoo_paths: tuple[str, ...]) -> None:
    """List, inspect, check, hash, import and add zoo models (packaged zoo + --zoo / $RSBENCH_ZOO)."""
    ctx.ensure_object(dict)
    ctx.obj["zoo_paths"] = zoo_paths


# --------------------------------------------------------------------------------------------------
# list


def _denoised_arch(entry) -> str:
    from rsbench.models.components import describe

    return describe(entry)


def _row(entry, cache_dir: str | None) -> dict[str, Any]:
    from rsbench.weights import sources as weights
    from rsbench.zoo.entry import entry_digest

    cached: bool | None = None
    if entry.kind == "denoised":
        from rsbench.models import components

        cached = components.is_cached(entry, cache_dir)
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
    context_settings=CONTEXT,
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
    zoo_paths: tuple[str, ...],
    cache_dir: str | None,
) -> None:
    """List zoo entries: PATTERN is a substring or glob of the id.

    "unpinned" means the entry has no sha256: its bytes are checked only when someone pins it
    (`rsbench zoo hash`). "cached" means the checkpoint is present locally (verified on load).
    """
    entries = load_group_zoo(ctx, zoo_paths).select(pattern, dataset=dataset, kind=kind)
    rows = [_row(e, cache_dir) for e in entries]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"rsbench zoo ({len(rows)} entries)")
    console = make_console()
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
        arch = row["arch"] or (
            f"router {row['router']}" if row["router"] else f"{len(row['experts'])} stages"
        )
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
    context_settings=CONTEXT,
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
    ctx: click.Context, model_id: str, zoo_paths: tuple[str, ...], cache_dir: str | None
) -> None:
    """Show one entry as YAML, with its provenance digest and cache state."""
    from rsbench.weights import cache
    from rsbench.weights import sources as weights
    from rsbench.zoo.entry import entry_digest
    from rsbench.zoo.files import dump_entries

    entry = load_group_zoo(ctx, zoo_paths).get(model_id)
    click.echo(dump_entries([entry], indent=0).rstrip())
    click.echo(f"# zoo file:     {entry.zoo_file}")
    click.echo(f"# entry digest: {entry_digest(entry)}")
    if entry.kind in ("dual", "cascade"):
        return
    if entry.kind == "denoised":
        from rsbench.models import components

        pinned = "pinned" if entry.pinned else "UNPINNED (a component has no sha256 / revision)"
        click.echo(f"# weights:      {pinned}")
        click.echo(f"# cached:       {'yes' if components.is_cached(entry, cache_dir) else 'no'}")
        return
    click.echo(f"# weights:      {'pinned' if entry.pinned else 'UNPINNED (no sha256)'}")
    click.echo(f"# cached:       {'yes' if weights.is_cached(entry, cache_dir) else 'no'}")
    path = cache.cached_file(entry, cache_dir)
    source_type = entry.source.type if entry.source is not None else None
    if path is None and entry.sha256 is not None and source_type in ("url", "archive_url"):
        path = cache.blob_path(entry.sha256, cache_dir)  # where the pinned file will be
    if path is not None:
        click.echo(f"# cache path:   {path}")
    if entry.source is not None and entry.source.type == "archive_url":
        archive = cache.archive_cache_path(entry.source.url or "", cache_dir)
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
    from rsbench.cli.progress import download_progress
    from rsbench.errors import RSBenchError
    from rsbench.models.loading import load_model
    from rsbench.models.network import forward_check
    from rsbench.weights import sources as weights

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
        from rsbench.models import components

        cached = components.is_cached(entry, cache_dir)
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
    except RSBenchError as exc:  # building the architecture, fetching, loading: one line each
        return "FAIL", str(exc)
    except (RuntimeError, ValueError, TypeError) as exc:
        return "FAIL", f"loading failed: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    finally:
        close_bar()
    try:
        logits = forward_check(model, entry, batch=2, device=device)
    except RSBenchError as exc:
        return "FAIL", str(exc)
    pin = "pinned" if model.weights_pinned else "UNPINNED"
    return (
        "ok",
        f"strict load + forward {tuple(logits.shape)}; sha256 {model.weights_sha256} ({pin})",
    )


@zoo.command(
    "check",
    context_settings=CONTEXT,
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
    help=(
        "Forget the digest recorded for an unpinned entry, partial downloads and files that "
        "changed on disk, so that --download fetches again; verified files are never deleted."
    ),
)
@device_option
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
    zoo_paths: tuple[str, ...],
    cache_dir: str | None,
) -> None:
    """Check entries: schema, download (--download), sha256, strict load, one forward pass.

    Without IDs every entry is checked; weights that are not local are skipped unless --download.
    Exits with status 1 when any entry fails.
    """
    from rsbench.engine.device import resolve

    device = str(resolve(device))
    from rsbench.weights.hf import allowing_unpinned_revisions

    zoo_ = load_group_zoo(ctx, zoo_paths)
    entries = [zoo_.get(i) for i in model_ids] if model_ids else list(zoo_)
    console = make_console()
    failed = 0
    for entry in entries:
        with allowing_unpinned_revisions(allow_unpinned):
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
    context_settings=CONTEXT,
    epilog="""\b
Examples:
  rsbench zoo hash ~/Downloads/checkpoint.pth.tar
  # then add `sha256: <hex>` to the entry to pin it
""",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def hash_cmd(files: tuple[str, ...]) -> None:
    """Print the sha256 of checkpoint FILES (the value for an entry's `sha256:`)."""
    from rsbench.weights.cache import sha256_file
    from rsbench.weights.checkpoints import sniff_format

    done = 0

    def said() -> str:
        return (
            f"{done} of {len(files)} files hashed (printed above); hash reads the files and "
            "writes nothing, so there is nothing to resume: run it again"
        )

    with interrupt_says(said):
        for name in files:
            click.echo(f"{sha256_file(name)}  {name}  ({sniff_format(name)})")
            done += 1


# the subcommands that write zoo files (rsbench.cli.zoo_add)
zoo.add_command(add)
zoo.add_command(import_archive_cmd)

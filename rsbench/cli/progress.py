"""Progress bars for the CLI (the library only calls a callback; it renders nothing).

:func:`download_progress` returns ``(callback, close)``: pass ``callback`` as the ``progress`` of
:func:`rsbench.weights.sources` (or ``weights_progress`` of the runner, ``progress`` of
:func:`rsbench.models.loading.load_model`), call ``close`` when the command is done. The bar appears on
stderr at the first report and goes away once every file it shows is complete.

:func:`certify_progress` is the certification bar of one run: a context manager yielding the
``progress`` callback of :func:`rsbench.run.runner.run_certification`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rsbench.weights.sources import ProgressCallback

if TYPE_CHECKING:
    from rich.console import Console

    from rsbench.run.runner import ProgressEvent


def download_progress() -> tuple[ProgressCallback, Callable[[], None]]:
    """A rich progress bar on stderr, started lazily, as ``(callback, close)``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    state: dict[str, Any] = {"bar": None, "tasks": {}}

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].stop()
        state["bar"], state["tasks"] = None, {}

    def callback(description: str, done: int, total: int | None) -> None:
        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            bar.start()
        tasks = state["tasks"]
        if description not in tasks:
            tasks[description] = bar.add_task(description, total=total)
        bar.update(tasks[description], completed=done, total=total)
        if all(task.finished for task in bar.tasks):
            close()

    return callback, close


@contextlib.contextmanager
def certify_progress(
    label: str, console: Console, quiet: bool = False
) -> Iterator[Callable[[ProgressEvent], None]]:
    """A certification bar for one run (samples done of this shard, running certified accuracy,
    elapsed time, ETA), shown on ``console`` unless ``quiet``; yields the runner's callback.

    Samples found already written when the run starts (resume) do not count toward the speed or
    the ETA; a message of the runner (e.g. waiting for another process's shard lock) is printed
    above the bar."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("cert. acc {task.fields[acc]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
        task = bar.add_task(label, total=None, acc="-")
        offset: int | None = None

        def progress(event: ProgressEvent) -> None:
            nonlocal offset
            if event.message:
                bar.console.print(f"[yellow]{event.message}[/yellow]")
            if offset is None:
                # samples found already written do not count toward the speed / ETA
                bar.update(task, total=event.total, completed=0)
                bar.reset(task, total=event.total - event.done, completed=0)
                offset = event.done
            acc = "-" if not event.done else f"{100 * event.accuracy:.1f}%"
            bar.update(
                task,
                completed=event.done - offset,
                acc=acc,
                description=f"{label} ({event.done}/{event.total})",
            )

        yield progress

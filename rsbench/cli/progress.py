"""Progress bars for the CLI (the library only calls a callback; it renders nothing).

:func:`download_progress` returns ``(callback, close)``: pass ``callback`` as the ``progress`` of
:func:`rsbench.weights.sources` (or ``weights_progress`` of the runner, ``progress`` of
:func:`rsbench.models.loading.load_model`), call ``close`` when the command is done. The bar appears on
stderr at the first report and goes away once every file it shows is complete.

:func:`certify_progress` is the certification bar of one run: a context manager yielding the
``progress`` callback of :func:`rsbench.run.runner.run_certification`. When its console is not a
terminal (output sent to a log file, a batch job), no bar is drawn; one plain line says where the
run stands every :data:`PLAIN_INTERVAL` seconds (``$RSBENCH_PROGRESS_SECONDS`` overrides it), and
once when the run ends, so a log never stays silent for minutes.
"""

from __future__ import annotations

import contextlib
import os
import time
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


#: Seconds between two progress lines when the output is not a terminal.
PLAIN_INTERVAL = 30.0
ENV_INTERVAL = "RSBENCH_PROGRESS_SECONDS"


def _interval() -> float:
    text = os.environ.get(ENV_INTERVAL, "")
    try:
        value = float(text)
    except ValueError:
        return PLAIN_INTERVAL
    return value if value >= 0 else PLAIN_INTERVAL


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@contextlib.contextmanager
def _plain_progress(label: str, console: Console) -> Iterator[Callable[[ProgressEvent], None]]:
    """Progress as plain lines (no terminal): at most one every :func:`_interval` seconds, the
    runner's messages as they come, and the last state when the run ends."""
    interval, started = _interval(), time.monotonic()
    state: dict[str, Any] = {"last": None, "event": None, "shown": None}

    def line(event: ProgressEvent) -> None:
        acc = "-" if not event.done else f"{100 * event.accuracy:.1f}%"
        elapsed = _clock(time.monotonic() - started)
        text = f"{label}: {event.done}/{event.total} images, cert. acc {acc}, {elapsed} elapsed"
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        state["last"], state["shown"] = time.monotonic(), (event.done, event.total)

    def progress(event: ProgressEvent) -> None:
        if event.message:
            console.print(event.message, markup=False, highlight=False, soft_wrap=True)
        state["event"] = event
        now = time.monotonic()
        if state["last"] is None or now - state["last"] >= interval:
            line(event)

    yield progress
    event = state["event"]
    if event is not None and state["shown"] != (event.done, event.total):
        line(event)


@contextlib.contextmanager
def certify_progress(
    label: str, console: Console, quiet: bool = False
) -> Iterator[Callable[[ProgressEvent], None]]:
    """A certification bar for one run (samples done of this shard, running certified accuracy,
    elapsed time, ETA), shown on ``console`` unless ``quiet``; yields the runner's callback.

    Samples found already written when the run starts (resume) do not count toward the speed or
    the ETA; a message of the runner (e.g. waiting for another process's shard lock) is printed
    above the bar. On a console that is not a terminal: plain lines at intervals instead."""
    if not quiet and not console.is_terminal:
        with _plain_progress(label, console) as plain:
            yield plain
        return
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

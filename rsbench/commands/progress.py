"""Download progress bars for the CLI (the library only calls a callback; it renders nothing).

:func:`download_progress` returns ``(callback, close)``: pass ``callback`` as the ``progress`` of
:func:`rsbench.weights.fetch` (or ``weights_progress`` of the runner, ``progress`` of
:func:`rsbench.models.load_model`), call ``close`` when the command is done. The bar appears on
stderr at the first report and goes away once every file it shows is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rsbench.weights import ProgressCallback


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

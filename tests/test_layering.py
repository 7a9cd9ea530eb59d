"""The library renders no progress bars: only the CLI side (``rsbench/cli.py``, ``rsbench/commands``)
draws them; library functions take a callback."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rsbench"
BARS = re.compile(r"^\s*(from|import)\s+(rich\.progress|rich\.live|tqdm)\b", re.MULTILINE)


def test_no_library_module_imports_a_progress_bar() -> None:
    library = [
        path
        for path in PACKAGE.rglob("*.py")
        if path.name != "cli.py" and "commands" not in path.relative_to(PACKAGE).parts
    ]
    assert len(library) > 20
    offenders = [str(p.relative_to(PACKAGE)) for p in library if BARS.search(p.read_text())]
    assert offenders == []


def test_download_progress_starts_at_the_first_report_and_stops_when_complete() -> None:
    from rsbench.commands.progress import download_progress

    callback, close = download_progress()
    for _ in range(2):  # a second download after the first bar went away starts a new one
        callback("a.safetensors", 0, 10)
        callback("a.safetensors", 10, 10)
    callback("b.pt", 5, None)  # unknown size: shown until close
    close()
    close()  # closing twice is harmless

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


def test_progress_parameters_default_to_no_callback() -> None:
    """A library function's ``progress`` is a callback or None (never a flag a CLI could mean as
    "draw a bar"), so a default can never be called as if it were a callback."""
    import importlib
    import inspect

    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "commands" in parts or parts[-1] in ("cli", "__main__"):
            continue
        module = importlib.import_module(".".join(p for p in parts if p != "__init__"))
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if func.__module__ != module.__name__:
                continue
            for param in inspect.signature(func).parameters.values():
                if param.name in ("progress", "weights_progress"):
                    checked += 1
                    assert param.default in (None, inspect.Parameter.empty), (name, param)
    assert checked >= 5


#: The certification engine: what it may import from rsbench (no zoo, weights, files or runs).
ENGINE = {"stats", "noise", "sampling", "smoothing", "dual", "cascade"}
ENGINE_MAY_IMPORT = ENGINE | {"errors", "device"}
#: Loader conveniences of the engine modules that build models from a zoo entry (through rsbench.api).
ENGINE_LOADERS = {"load_dual", "load_cascade"}


def _rsbench_imports(tree, skip_functions=frozenset()):
    import ast

    found = set()

    def visit(node, skipping: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = skipping or (
                isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                and child.name in skip_functions
            )
            if not inner and isinstance(child, ast.ImportFrom) and child.module:
                if child.module == "rsbench":
                    found.update(alias.name for alias in child.names)
                elif child.module.startswith("rsbench."):
                    found.add(child.module.split(".")[1])
            if not inner and isinstance(child, ast.Import):
                found.update(
                    a.name.split(".")[1] for a in child.names if a.name.startswith("rsbench.")
                )
            visit(child, inner)

    visit(tree, False)
    return found


def test_the_engine_imports_no_zoo_files_or_runs() -> None:
    import ast

    for name in sorted(ENGINE):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        imported = _rsbench_imports(tree, ENGINE_LOADERS)
        assert imported <= ENGINE_MAY_IMPORT, (name, sorted(imported - ENGINE_MAY_IMPORT))

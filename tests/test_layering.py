"""The package's layers, read from the code's own imports (docs/architecture.md draws them).

Each subpackage is a layer; a module imports its own layer or lower ones, anywhere in the file
(imports inside functions and under ``TYPE_CHECKING`` included), the whole import graph has no
cycle, only the CLI imports Click, the library renders no progress bar, and nothing inside
rsbench goes through the old import paths kept for users (``rsbench._moved``).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rsbench"

#: The layers, lowest first: a module may import from its own layer and from lower ones only.
LAYERS: dict[str, int] = {
    "errors": 0,
    "safeyaml": 0,
    "output": 0,
    "_moved": 0,
    "engine": 1,
    "data": 2,
    "zoo": 3,
    "weights": 4,
    "models": 5,
    "results": 6,
    "report": 7,
    "metrics": 7,  # old path of report.metrics (a shim)
    "run": 8,
    "train": 9,
    "api": 10,
    "loaders": 10,  # old path of api.load_dual / load_cascade (a shim)
    "cli": 11,
    "__main__": 11,
}
#: Old import paths kept for one release; no rsbench module imports through them.
SHIMS = {"rsbench.metrics", "rsbench.loaders"}
#: Packages whose ``__init__`` resolves the names of a 0.1 module of the same name (lazily).
SHIM_PACKAGES = {"rsbench.zoo", "rsbench.weights", "rsbench.data", "rsbench.models"}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``rsbench.zoo.entry``; a package: its name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _targets(node: ast.AST, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """``(module imported, names)`` for an import node, rsbench modules only; ``from P import m``
    of a submodule ``m`` counts as an import of ``P.m``."""
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if not node.module.startswith("rsbench"):
            return []
        out = []
        for alias in node.names:
            sub = f"{node.module}.{alias.name}"
            out.append((sub, []) if sub in modules else (node.module, [alias.name]))
        return out
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names if a.name.startswith("rsbench")]
    return []


def imports_of(path: Path, modules: dict[str, Path] = MODULES) -> list[tuple[str, list[str], int]]:
    """Every rsbench import anywhere in ``path`` (functions and ``TYPE_CHECKING`` included)."""
    tree = ast.parse(path.read_text())
    return [
        (m, names, node.lineno) for node in ast.walk(tree) for m, names in _targets(node, modules)
    ]


def layer(module: str) -> int | None:
    """The layer of ``rsbench.<part>...``; None for the package root (``__version__``)."""
    parts = module.split(".")
    return None if len(parts) == 1 else LAYERS[parts[1]]


def test_every_module_is_in_a_layer() -> None:
    missing = {name.split(".")[1] for name in MODULES if name != "rsbench"} - set(LAYERS)
    assert not missing, f"add {sorted(missing)} to LAYERS (and to docs/architecture.md)"


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for name, path in MODULES.items():
        own = layer(name)
        for target, _, line in imports_of(path):
            theirs = layer(target)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{name}:{line} imports {target}")
    assert upward == []


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _, _ in imports_of(path):
            if target in MODULES and target != name and target != "rsbench":
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    """No two modules import each other, directly or through others, even lazily."""
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_import_check_sees_imports_inside_functions(tmp_path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from rsbench.zoo.registry import load_zoo\n    import yaml\n")
    assert imports_of(source) == [("rsbench.zoo.registry", ["load_zoo"], 2)]


def test_nothing_inside_rsbench_uses_an_old_import_path() -> None:
    """The shims (``rsbench.metrics``, ``rsbench.loaders``, the names a shim package's
    ``__init__`` resolves) are for users' code only."""
    old = []
    for name, path in MODULES.items():
        for target, names, line in imports_of(path):
            if target in SHIMS or (target in SHIM_PACKAGES and names):
                old.append(f"{name}:{line} imports {names or ''} from {target}")
    assert old == []


def test_the_old_import_paths_resolve_with_a_warning_naming_the_new_one() -> None:
    import importlib

    cases = [
        ("rsbench.zoo", "load_zoo", "rsbench.zoo.registry"),
        ("rsbench.zoo", "ZooEntry", "rsbench.zoo.entry"),
        ("rsbench.weights", "fetch", "rsbench.weights.sources"),
        ("rsbench.weights", "sha256_file", "rsbench.weights.cache"),
        ("rsbench.data", "load_dataset", "rsbench.data.dataset"),
        ("rsbench.data", "parse_indices", "rsbench.data.indices"),
        ("rsbench.models", "load_model", "rsbench.models.loading"),
        ("rsbench.metrics", "certified_accuracy", "rsbench.report.metrics"),
        ("rsbench.loaders", "load_dual", "rsbench.api"),
    ]
    for old, name, new in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(importlib.import_module(old), name)
        assert value is getattr(importlib.import_module(new), name), (old, name)
        assert any(f"moved to {new}.{name}" in str(w.message) for w in caught), (old, name)
    from rsbench.results import read_results  # the results package's face, not an old path

    assert callable(read_results)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        importlib.import_module("rsbench.zoo").nope  # noqa: B018


def test_only_the_cli_imports_click_or_the_cli() -> None:
    offenders = []
    for name, path in MODULES.items():
        if name.startswith("rsbench.cli") or name == "rsbench.__main__":
            continue
        text = path.read_text()
        if re.search(r"^\s*(import click|from click\b)", text, re.MULTILINE):
            offenders.append(f"{name} imports click")
        offenders += [
            f"{name}:{line} imports {t}"
            for t, _, line in imports_of(path)
            if t.startswith("rsbench.cli")
        ]
    assert offenders == []


BARS = re.compile(r"^\s*(from|import)\s+(rich\.progress|rich\.live|tqdm)\b", re.MULTILINE)


def test_no_library_module_imports_a_progress_bar() -> None:
    """Only the CLI draws bars; library functions take a callback."""
    library = [p for n, p in MODULES.items() if not n.startswith("rsbench.cli")]
    assert len(library) > 20
    assert [str(p.relative_to(PACKAGE)) for p in library if BARS.search(p.read_text())] == []


def test_download_progress_starts_at_the_first_report_and_stops_when_complete() -> None:
    from rsbench.cli.progress import download_progress

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
    for name in MODULES:
        if name.startswith("rsbench.cli") or name == "rsbench.__main__":
            continue
        module = importlib.import_module(name)
        for fname, func in inspect.getmembers(module, inspect.isfunction):
            if func.__module__ != module.__name__:
                continue
            for param in inspect.signature(func).parameters.values():
                if param.name in ("progress", "weights_progress"):
                    checked += 1
                    assert param.default in (None, inspect.Parameter.empty), (fname, param)
    assert checked >= 5


#: Modules that read or write files or YAML: the engine imports none of them (Cohen's core.py neither).
FILE_MODULES = {"os", "pathlib", "shutil", "tempfile", "io", "yaml", "pickle", "glob"}


def _third_party(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
    return found - {"rsbench"}


def test_the_engine_imports_no_files_or_yaml() -> None:
    """stats, noise, sampling, smoothing, dual and cascade know no files (the layer rule
    already keeps zoo, weights and runs out): loading a model from an entry is :mod:`rsbench.api`."""
    engine = [p for n, p in MODULES.items() if n.startswith("rsbench.engine.")]
    assert len(engine) >= 7
    engine = [p for p in engine if p.name != "device.py"]  # reads LOCAL_RANK from os.environ
    for path in engine:
        assert not _third_party(path) & FILE_MODULES, (path.name, _third_party(path) & FILE_MODULES)


def test_the_zoo_registry_imports_no_torch() -> None:
    for name, path in MODULES.items():
        if name.startswith("rsbench.zoo"):
            assert not _third_party(path) & {"torch", "safetensors", "huggingface_hub"}, name


#: Finer directions inside a layer (dotted below rsbench), anywhere in the module: the results
#: layer reads and writes rows (schema -> storage -> rescore), the report layer only reads rows
#: it is given (leaderboard -> tables -> terminal / page; plots); the run layer's parts never reach
#: the runner; router training: labels <- config <- fitting.
MAY_IMPORT = {
    "results.schema": {"errors"},
    "results.provenance": {"rsbench"},
    "results.storage": {"errors", "results.schema", "results.provenance"},
    "results.importers": {"errors", "results.schema", "engine.stats", "data.protocols"},
    "results.rescore": {
        "errors",
        "results.storage",
        "results.provenance",
        "engine.smoothing",
        "engine.dual",
        "engine.cascade",
        "data.protocols",
    },
    "report.metrics": {"errors"},
    "report.leaderboard": {"errors", "report.metrics", "data.protocols"},
    "report.tables": {"report.metrics", "report.leaderboard"},
    "report.terminal": {"report.leaderboard", "report.tables"},
    "report.plots": {"errors", "report.metrics", "output", "report.leaderboard"},
    "report.page": {"report.metrics", "report.leaderboard", "report.tables", "report.plots"},
    "run.distributed": {"engine.device", "errors"},
    "train.router_labels": {
        "engine.device",
        "errors",
        "engine.noise",
        "engine.sampling",
        "engine.smoothing",
        "train.common",
        "weights.cache",
    },
    "train.common": {"errors", "rsbench", "weights.cache"},
}


def test_modules_import_in_their_layers_direction() -> None:
    for name, allowed in sorted(MAY_IMPORT.items()):
        found = {t.removeprefix("rsbench.") for t, _, _ in imports_of(MODULES[f"rsbench.{name}"])}
        assert found <= allowed, (name, sorted(found - allowed))
    for name, path in MODULES.items():
        if name.startswith("rsbench.run.") and name not in (
            "rsbench.run.runner",
            "rsbench.run.jobs",
        ):
            reached = {t for t, _, _ in imports_of(path)} & {
                "rsbench.run.runner",
                "rsbench.run.jobs",
            }
            if name != "rsbench.run.sweep":
                assert not reached, (name, reached)


def _no_torch(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.subprocess
def test_zoo_protocols_and_dataset_facts_load_no_torch() -> None:
    """Reading the zoo, the dataset facts and a protocol's indices (what `rsbench zoo list`, the
    leaderboard's checks and `--help` do) imports no torch, and neither does `rsbench zoo list`."""
    code = (
        "import sys; from rsbench.data import catalog, protocols; from rsbench.zoo import registry;"
        " registry.load_zoo(); protocols.get_protocol('cohen').indices('cifar10');"
        " catalog.dataset_info('mnist'); print('torch' in sys.modules)"
    )
    assert _no_torch(code) == "False"
    code = (
        "import sys\nfrom rsbench.cli.main import main\nsys.argv = ['rsbench', 'zoo', 'list']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('torch' in sys.modules)"
    )
    assert _no_torch(code) == "False"


@pytest.mark.subprocess
def test_the_shared_training_pieces_load_no_torch() -> None:
    """The CLI's shared option groups (cli/options.py, which reads train/common.py's optimiser
    names) load no torch on import, so a command's ``--help`` stays fast."""
    assert _no_torch("import sys, rsbench.cli.options; print('torch' in sys.modules)") == "False"

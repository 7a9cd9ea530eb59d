"""The library renders no progress bars: only the CLI side (``rsbench/cli.py``, ``rsbench/commands``)
draws them; library functions take a callback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


#: Modules that read or write files or YAML: the engine imports none of them (Cohen's core.py neither).
FILE_MODULES = {"os", "pathlib", "shutil", "tempfile", "io", "yaml", "pickle", "glob"}


def _imports(tree) -> tuple[set[str], set[str]]:
    """(rsbench modules, top-level third-party / stdlib modules) imported anywhere in ``tree``."""
    import ast

    ours: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "rsbench":
                ours.update(alias.name for alias in node.names)
            elif node.module.startswith("rsbench."):
                ours.add(node.module.split(".")[1])
            else:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("rsbench."):
                    ours.add(alias.name.split(".")[1])
                else:
                    others.add(alias.name.split(".")[0])
    return ours, others


def test_the_engine_imports_no_zoo_files_or_runs() -> None:
    """stats, noise, sampling, smoothing, dual and cascade know no zoo, weights, files or runs:
    loading a composed model from a zoo entry is :mod:`rsbench.loaders` / :mod:`rsbench.api`."""
    import ast

    for name in sorted(ENGINE):
        ours, others = _imports(ast.parse((PACKAGE / f"{name}.py").read_text()))
        assert ours <= ENGINE_MAY_IMPORT, (name, sorted(ours - ENGINE_MAY_IMPORT))
        assert not others & FILE_MODULES, (name, sorted(others & FILE_MODULES))


def test_the_import_check_sees_imports_inside_functions() -> None:
    import ast

    tree = ast.parse("def f():\n    from rsbench.zoo import load_zoo\n    import yaml\n")
    assert _imports(tree) == ({"zoo"}, {"yaml"})


#: The zoo registry: entries, validation, files, merging. It builds no model and imports no torch.
REGISTRY = {"zoo", "zoo_entry", "zoo_parse", "zoo_files"}
REGISTRY_MAY_IMPORT = REGISTRY | {"errors", "safeyaml", "datasets"}


def test_the_zoo_registry_builds_no_model() -> None:
    import ast

    for name in sorted(REGISTRY):
        ours, others = _imports(ast.parse((PACKAGE / f"{name}.py").read_text()))
        assert ours <= REGISTRY_MAY_IMPORT, (name, sorted(ours - REGISTRY_MAY_IMPORT))
        assert not others & {"torch", "safetensors", "huggingface_hub"}, (name, others)


@pytest.mark.subprocess
def test_zoo_protocols_and_dataset_facts_load_no_torch() -> None:
    """Reading the zoo, the dataset facts and a protocol's indices (what `rsbench zoo list`, the
    leaderboard's checks and `--help` do) imports no torch."""
    import subprocess
    import sys

    code = (
        "import sys; from rsbench import datasets, protocols, zoo; zoo.load_zoo(); "
        "protocols.get_protocol('cohen').indices('cifar10'); datasets.dataset_info('mnist'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


#: What the trainers' shared module may import from rsbench (torch, safetensors only lazily).
TRAIN_COMMON_MAY_IMPORT = {"errors", "weights"}


@pytest.mark.subprocess
def test_the_shared_training_pieces_load_no_torch() -> None:
    """train/common.py imports only errors and weights; it and the CLI's shared option groups
    (commands/options.py, which reads its optimiser names) load no torch on import, so a
    command's ``--help`` stays fast."""
    import ast
    import subprocess
    import sys

    ours, _ = _imports(ast.parse((PACKAGE / "train" / "common.py").read_text()))
    assert ours <= TRAIN_COMMON_MAY_IMPORT, sorted(ours - TRAIN_COMMON_MAY_IMPORT)
    code = "import sys, rsbench.commands.options; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


#: The parts of rsbench.weights: each knows files and bytes, none the zoo registry or a model.
WEIGHT_PARTS = {"checkpoints", "weights_cache", "weights_archive", "weights_hf", "download"}
WEIGHT_PARTS_MAY_IMPORT = WEIGHT_PARTS | {"errors", "zoo_entry", "__version__"}


def test_the_weights_parts_know_no_zoo_or_model() -> None:
    import ast

    for name in sorted(WEIGHT_PARTS):
        ours, _ = _imports(ast.parse((PACKAGE / f"{name}.py").read_text()))
        assert ours <= WEIGHT_PARTS_MAY_IMPORT, (name, sorted(ours - WEIGHT_PARTS_MAY_IMPORT))


def _dotted_imports(tree) -> set[str]:
    """rsbench modules imported anywhere in ``tree``, as dotted names below ``rsbench``
    (``from rsbench.report.tables import notes`` -> ``report.tables``)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "rsbench":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("rsbench."):
                found.add(node.module.removeprefix("rsbench."))
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("rsbench.") for a in node.names if a.name.startswith("rsbench.")
            )
    return found


#: What each module of the results and report layers may import from rsbench. The results layer
#: reads and writes rows (schema -> storage -> rescore); it never loads a model or renders. The
#: report layer only reads rows it is given (leaderboard -> tables -> terminal / page; plots).
ROWS_MAY_IMPORT = {
    "results/schema.py": {"errors"},
    "results/provenance.py": {"__version__"},
    "results/storage.py": {"errors", "results.schema", "results.provenance"},
    "results/importers.py": {"errors", "results.schema", "stats", "protocols"},
    "results/rescore.py": {
        "errors",
        "results.storage",
        "results.provenance",
        "smoothing",
        "dual",
        "cascade",
        "protocols",
    },
    "report/leaderboard.py": {"errors", "metrics", "protocols"},
    "report/tables.py": {"metrics", "report.leaderboard"},
    "report/terminal.py": {"report.leaderboard", "report.tables"},
    "report/plots.py": {"errors", "metrics", "output", "report.leaderboard"},
    "report/page.py": {"metrics", "report.leaderboard", "report.tables", "report.plots"},
}


def test_results_and_report_modules_import_in_one_direction() -> None:
    import ast

    listed = {
        str(p.relative_to(PACKAGE))
        for folder in ("results", "report")
        for p in (PACKAGE / folder).glob("*.py")
        if p.name != "__init__.py"
    }
    assert listed == set(ROWS_MAY_IMPORT), "list every new module of results/ and report/ here"
    for name, allowed in sorted(ROWS_MAY_IMPORT.items()):
        imported = _dotted_imports(ast.parse((PACKAGE / name).read_text()))
        assert imported <= allowed, (name, sorted(imported - allowed))


#: The run layer (docs/architecture.md): what each module may import from rsbench at module level.
RUNS_MAY_IMPORT = {
    "runconfig": {"device", "errors", "noise", "protocols", "results"},
    "store": {"errors", "noise", "results", "runconfig"},
    "distributed": {"device", "errors"},
    "certifiers": {"device", "errors", "runconfig"},
    "runner": {"certifiers", "device", "distributed", "errors", "results", "runconfig", "store"},
}


def _module_level_imports(tree) -> set[str]:
    """rsbench modules imported at module level (not inside functions or ``if TYPE_CHECKING``)."""
    import ast

    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "rsbench":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("rsbench."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("rsbench."))
    return found


def test_the_run_modules_import_downward() -> None:
    """runconfig -> store | distributed | certifiers -> runner, as the module map says; none of the
    parts reaches the runner, the API or the CLI, even lazily."""
    import ast

    for name, allowed in RUNS_MAY_IMPORT.items():
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        imported = _module_level_imports(tree)
        assert imported <= allowed, (name, sorted(imported - allowed))
        if name != "runner":
            upward = _imports(tree)[0] & {"runner", "api", "commands", "cli"}
            assert not upward, (name, sorted(upward))


#: Router training (docs/architecture.md): labels <- config <- fitting <- co-training, anywhere in
#: the module (lazy imports included); none of them reaches the CLI, the runner or the API.
ROUTER_MAY_IMPORT = {
    "router_labels": {
        "device",
        "errors",
        "noise",
        "sampling",
        "smoothing",
        "train.common",
        "weights",
    },
    "router_config": {
        "data",
        "denoised",
        "errors",
        "models",
        "noise",
        "smoothing",
        "train.common",
        "train.router_labels",
        "zoo",
    },
    "router": {
        "device",
        "errors",
        "models",
        "noise",
        "train.common",
        "train.router_config",
        "train.router_labels",
        "zoo",
    },
}


def test_the_router_modules_import_in_one_direction() -> None:
    import ast

    for name, allowed in ROUTER_MAY_IMPORT.items():
        imported = _dotted_imports(ast.parse((PACKAGE / "train" / f"{name}.py").read_text()))
        assert imported <= allowed, (name, sorted(imported - allowed))

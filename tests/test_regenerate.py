"""The committed results regenerate bit for bit (issue 16's "done when").

The guard of every refactor: whatever moves in the package, the committed ``results/`` must come out
of today's code unchanged. The machinery is ``bench/verify_regenerate.py`` (which also runs the
full re-certifications); these tests drive it on cheap slices:

* every committed run certified from shipped weights (embedded experts, dual, denoised dual,
  cascade with both alpha splits) is certified again, through ``rsbench certify`` with exactly its
  recorded configuration, on the images at positions 0, 100, 200, ... of its selection (its first
  image and later ones): the run id and every column of every row must equal the committed Parquet
  rows bit for bit, except ``seconds`` (the wall time of the sample on the machine that certified
  it; no other column depends on the host), and ``run.json`` must be equal but for the host/clock
  keys (``started``, ``finished``, ``environment``, ``device_name``) and, for a slice, ``status``
  and ``num_rows``; the dual is also certified through the Python API (``rsbench.certify``) on
  other images (positions 1, 101, ...), with the same outcome;
* the ``rsbench`` commands of ``results/regenerate.sh`` (recorded by running the script with a
  stand-in for ``rsbench``) are replayed on copies of the committed runs, and every table they
  write (markdown, HTML, CSV, the head to head) must equal the committed file byte for byte; the
  published logs are imported again and their Parquet parts must be byte-identical (their
  ``run.json`` equal but for ``created``, the time of the import). The slow tests add the
  10,000-row CIFAR-10 imports, the PNG curves (byte for byte) and
  ``results/dual-embedded.md`` (byte for byte but for its section of wall times measured as it runs).
* the README's tables of models (leaderboards, head to head) are copies of committed results rows.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_verify():
    spec = importlib.util.spec_from_file_location(
        "verify_regenerate", ROOT / "bench" / "verify_regenerate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    return module


verify = _load_verify()
RUNS = verify.committed_runs()
REBUILDABLE = [r for r in RUNS if r.offline_reason() is None]
#: positions p % 100 == 0 of each run's selection: 5 of the 500 images of an embedded run
SHARD = (0, 100)
#: runs whose stored rows took more than SLOW_ROW_SECONDS per image (the U-Net denoised runs: a
#: U-Net sample costs about 137x a Gaussian one on CPU) are checked on their first image only
#: (``python bench/verify_regenerate.py RUN`` certifies any run again in full)
SLOW_ROW_SECONDS, SLOW_SHARD = 1.0, (0, 10_000)
#: logs at most this big (the ImageNet ones, ~500 rows) are imported again in the default run; the
#: CIFAR-10 logs (10,000 rows, ~90 kB) in the slow test
SMALL_LOG_BYTES = 50_000


@pytest.fixture
def torch_threads():
    """``rsbench certify --threads`` sets torch's thread count for the process: restore it."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_committed_runs_are_all_checked(tmp_path: Path) -> None:
    """Every committed run is either certified again below or re-imported by regenerate.sh."""
    assert len(REBUILDABLE) >= 7, [r.run_id for r in REBUILDABLE]  # experts, duals, cascades
    kinds = {(r.info["config"]["kind"], r.info["config"].get("alpha_split")) for r in REBUILDABLE}
    assert {
        ("expert", None),
        ("dual", None),
        ("cascade", "union"),
        ("cascade", "reference"),
    } <= kinds
    imports = [a for a in verify.record_regenerate(tmp_path) if a[0] == "import-logs"]
    prefixes = {
        (
            a[a.index("--out") + 1],
            f"imported-{a[a.index('--model-id') + 1]}-{a[a.index('--protocol') + 1]}-",
        )
        for a in imports
    }
    for run in RUNS:
        if run in REBUILDABLE:
            continue
        folder = str(run.path.parent.relative_to(ROOT))
        assert any(folder == out and run.run_id.startswith(p) for out, p in prefixes), (
            f"{run.path.relative_to(ROOT)} cannot be certified again ({run.offline_reason()}) and "
            "results/regenerate.sh does not import it"
        )


@pytest.mark.parametrize("run", REBUILDABLE, ids=lambda r: r.path.name)
def test_a_slice_of_each_committed_run_certifies_to_the_same_rows(
    run, tmp_path: Path, torch_threads
) -> None:
    seconds = verify.read_rows(run.path).column("seconds").to_numpy()
    shard = SLOW_SHARD if float(seconds.mean()) > SLOW_ROW_SECONDS else SHARD
    verdict = verify.recertify(run, tmp_path, shard)
    assert verdict.ok, verdict.summary()
    committed = len(seconds)
    assert verdict.rows == len(range(0, committed, shard[1])) > (shard != SLOW_SHARD)


def test_rsbench_certify_regenerates_the_committed_dual_rows(tmp_path: Path, torch_threads) -> None:
    """The Python API route (``rsbench.certify``) gives the committed rows too."""
    import rsbench

    run = next(r for r in REBUILDABLE if r.info["config"]["model_id"] == "embedded-fmnist-dual")
    frame = rsbench.certify(
        run.info["config"]["model_id"], **verify.certify_kwargs(run.info, tmp_path, "1/100")
    )
    assert set(frame["run_id"]) == {run.run_id}
    committed = verify.read_rows(run.path)
    indices = committed.column("index").to_pylist()
    assert sorted(frame["index"]) == indices[1::100]
    made = verify.read_rows(tmp_path / run.run_id)
    expected = committed.take([indices.index(i) for i in made.column("index").to_pylist()])
    assert verify.compare_rows(expected, made) == []


def _small_or_table(argv) -> bool:
    """The default run's share of regenerate.sh: every table, the small imports, no curves."""
    if argv[0] == "plot":
        return False
    if argv[0] == "import-logs":
        return Path(argv[1]).stat().st_size <= SMALL_LOG_BYTES
    return True


def test_regenerate_sh_tables_and_imports_are_byte_identical(tmp_path: Path) -> None:
    checked, diffs = verify.verify_render(tmp_path, _small_or_table)
    assert not diffs, "\n".join(diffs)
    assert {
        "results/embedded-leaderboard.md",
        "results/embedded-leaderboard.html",
        "results/embedded-leaderboard.csv",
        "results/embedded-head-to-head.md",
        "results/embedded-head-to-head.png",  # written with the markdown (--plot)
        "results/embedded-head-to-head.csv",
        "results/reference/leaderboard.md",
        "results/reference/leaderboard.html",
        "results/reference/leaderboard.csv",
    } <= set(checked)
    assert sum("imported-cohen-imagenet" in p for p in checked) == 3


@pytest.mark.slow
def test_regenerate_sh_every_output_is_byte_identical(tmp_path: Path) -> None:
    checked, diffs = verify.verify_render(tmp_path)
    assert not diffs, "\n".join(diffs)
    assert sum(p.endswith(".png") for p in checked) >= 4
    assert sum("/imported-cohen-" in p for p in checked) == 7


@pytest.mark.slow
def test_dual_embedded_report_is_identical_but_for_its_timing_section(tmp_path: Path) -> None:
    """results/dual-embedded.md rendered again from the committed runs: only the wall times
    measured while the script runs (its "Target 2" section) may differ."""
    assert (
        len(
            verify.section_span(
                (ROOT / "results" / "dual-embedded.md").read_text().splitlines(),
                verify.TIMING_SECTION,
            )
        )
        > 0
    )
    assert verify.verify_dual_report(tmp_path) == []


@pytest.mark.subprocess
def test_denoised_head_to_head_report_is_identical_and_its_runs_are_its_commands(
    tmp_path: Path,
) -> None:
    """results/denoised-head-to-head.md (issue 25's targets) renders again byte for byte from the
    committed runs, and results/embedded-denoised holds exactly the runs of the commands it shows."""
    import subprocess

    report = tmp_path / "denoised-head-to-head.md"
    script = ROOT / "bench" / "denoised_embedded.py"
    cmd = [sys.executable, str(script), "protocol", "--skip-certify", "--report", str(report)]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    committed = ROOT / "results" / "denoised-head-to-head.md"
    assert report.read_text() == committed.read_text()
    shown = [
        line.split()[2:]
        for line in report.read_text().splitlines()
        if line.startswith("rsbench certify")
    ]
    runs = [r for r in RUNS if r.path.parent.name == "embedded-denoised"]

    def served(run) -> tuple[str, float | None]:
        config = run.info["config"]
        return config["model_id"], config["sigma"] if config["kind"] == "expert" else None

    assert len(shown) == len(runs) == 5
    for argv in shown:
        flag = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}
        sigma = float(flag["--sigma"]) if "--sigma" in flag else None

        match = [r for r in runs if served(r) == (argv[0], sigma)]
        assert len(match) == 1, argv
        config = match[0].info["config"]
        assert (config["n0"], config["n"], config["alpha"], config["stride"]) == (
            int(flag["--n0"]),
            int(flag["--n"]),
            float(flag["--alpha"]),
            int(flag["--stride"]),
        )
        assert config["protocol"] == "custom" and config["limit"] is None


@pytest.mark.subprocess
def test_the_denoised_report_without_runs_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """An empty run folder gives one error line naming the folder and the fix, exit status 1, and
    no report file (the committed one is never touched)."""
    import subprocess

    report = tmp_path / "report.md"
    script = ROOT / "bench" / "denoised_embedded.py"
    for flag, fix in (("--out", "without --skip-certify"), ("--gaussian", "--gaussian")):
        cmd = [sys.executable, str(script), "protocol", "--skip-certify", flag, str(tmp_path)]
        done = subprocess.run(
            [*cmd, "--report", str(report)], cwd=ROOT, capture_output=True, text=True
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert lines[0].startswith(f"error: no certified runs in {tmp_path}; ") and fix in lines[0]
        assert not report.exists()


def test_the_row_comparison_is_exact_and_ignores_only_timing() -> None:
    """One ulp in one radius is a difference; a row equals itself (NaN columns included); a
    changed ``seconds`` or ``finished`` is not a difference, a changed ``config.n`` is."""
    import math

    import pyarrow as pa

    run = REBUILDABLE[0]
    rows = verify.read_rows(run.path).slice(0, 3)
    assert verify.compare_rows(rows, rows) == []
    radius = rows.column("radius").to_pylist()
    radius[1] = math.nextafter(radius[1], math.inf)
    changed = rows.set_column(rows.column_names.index("radius"), "radius", pa.array(radius))
    diffs = verify.compare_rows(rows, changed)
    assert len(diffs) == 1 and diffs[0].startswith("column radius: 1 of 3 rows differ")
    seconds = rows.column("seconds").to_pylist()
    slower = rows.set_column(
        rows.column_names.index("seconds"), "seconds", pa.array([s + 1 for s in seconds])
    )
    assert verify.compare_rows(rows, slower) == []  # timing is excluded
    info = json.loads((run.path / "run.json").read_text())
    other = {
        **info,
        "finished": "later",
        "config": {**info["config"], "n": info["config"]["n"] + 1},
    }
    assert verify.compare_run_json(info, other, verify.RUN_JSON_VOLATILE) == [
        f"run.json config.n: {info['config']['n'] + 1} (committed {info['config']['n']})"
    ]


def _tables(text: str) -> list[list[str]]:
    """The markdown tables of ``text``: lists of consecutive lines starting with ``|``."""
    tables: list[list[str]] = []
    previous = False
    for line in text.splitlines():
        row = line.startswith("|")
        if row and not previous:
            tables.append([])
        if row:
            tables[-1].append(line)
        previous = row
    return tables


def test_readme_result_tables_are_copies_of_committed_results() -> None:
    """Every row of a README table of models (a leaderboard or head to head pasted from results/)
    is a row of a committed results/*.md file: the README shows the numbers that regenerate."""
    committed = {
        line
        for p in sorted((ROOT / "results").rglob("*.md"))
        for line in p.read_text().splitlines()
    }
    tables = [t for t in _tables((ROOT / "README.md").read_text()) if "| model |" in t[0]]
    assert len(tables) >= 2  # the embedded head to head and the CIFAR-10 reference rows
    stale = [row for t in tables for row in t if row not in committed]
    assert not stale, "README rows not in any results/*.md:\n" + "\n".join(stale)

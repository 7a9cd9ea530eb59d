"""Nothing a user had is lost, whatever the input (issue 23: items 1, 2, 5, 6, 7 and 9, results).

Every case runs the real ``rsbench`` console entry point (forked from one driver that imported
rsbench once, ``helpers.cli.DRIVER``) and checks its exit status, its one ``error:`` line (naming
the file where there is one) and that every earlier file (results, inputs) is byte for byte as it
was. The cases:

* **resume** (item 1): only a part that is positively this run's and truncated is replaced, after
  it was moved aside to ``part-...parquet.corrupt``, kept until the rerun completes; a part the OS
  will not open (mode 000), a file that is not Parquet, a foreign Parquet file named ``part-*``,
  one with other column types, a truncated part of another run, and parts with impossible counts
  are refused and kept. A folder whose name is not UTF-8 works for every command.
* **outputs** (item 2): every ``-o``/``--out``/``--plot`` refuses a results file name, a path
  inside a run folder and a path equal to an input.
* **input** (items 5, 6): sweep options of the wrong type, import options out of range, index
  ranges too large (refused before any list is built), altered run.json files.
* **messages** (item 9): a full disk during rescore/import-logs, compare's second output failing,
  bare groups, quoted follow-up commands, plain progress lines without a terminal.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers.cli import assert_one_clear_error, certify_args, run_many

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(
        not hasattr(os, "fork"), reason="the CLI driver forks one process per command (POSIX only)"
    ),
]

#: four images in two parts of two
TWO_PARTS = ("--limit", "4", "--chunk-size", "2")
LOG = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.512\t1\t0:00:01.5\n"
IMPORT = ("--dataset", "cifar10", "--split", "test", "--sigma", "0.25")

WRITES_FAIL = f"""
import errno, pyarrow.parquet as pq
def _write_table(table, where, *args, **kwargs):
    raise OSError(errno.ENOSPC, {os.strerror(errno.ENOSPC)!r})
pq.write_table = _write_table
"""


def _args(out: Path, *extra: str) -> list[str]:
    return [a.replace("{out}", str(out)) for a in certify_args(*TWO_PARTS, *extra)]


def _snapshot(*folders: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mode under ``folders`` (lock files aside: a lock writes no result)."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.endswith(".lock") and ".logs" not in p.parts:
                out[str(p)] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


def _only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def _rows(run_dir: Path):
    from rsbench.results import read_results

    return (
        read_results(run_dir).drop(columns=["seconds"]).sort_values("index").reset_index(drop=True)
    )


@pytest.fixture(scope="module")
def base(cli_workdir) -> dict[str, Path]:
    """Two finished runs of four images in two parts each: seed 0 and seed 1 (another run)."""
    outs = {"mine": cli_workdir / "lost-mine", "theirs": cli_workdir / "lost-theirs"}
    made = run_many(
        {
            "mine": _args(outs["mine"]),
            "theirs": _args(outs["theirs"], "--seed", "1"),
        },
        cli_workdir,
    )
    for name, result in made.items():
        assert result.returncode == 0, (name, result.stderr)
    return outs


# ------------------------------------------------------------------------------------ resume


def test_a_truncated_part_of_this_run_is_set_aside_until_the_rerun_completes(
    cli_workdir, base
) -> None:
    out = cli_workdir / "lost-truncated"
    shutil.copytree(base["mine"], out)
    run_dir = _only_run(out)
    part = run_dir / "part-0of1-000001.parquet"
    cut = part.read_bytes()[: part.stat().st_size // 2]
    part.write_bytes(cut)
    first = run_dir / "part-0of1-000000.parquet"
    kept = first.read_bytes()
    # the rerun sets the truncated part aside, then fails to write (full disk): it is still there
    failed = run_many({"full": _args(out)}, cli_workdir, prelude=WRITES_FAIL)["full"]
    assert_one_clear_error(failed, ("No space left",))
    assert "moved aside to part-0of1-000001.parquet.corrupt" in failed.stderr
    aside = run_dir / "part-0of1-000001.parquet.corrupt"
    assert aside.read_bytes() == cut and not part.exists()
    assert first.read_bytes() == kept
    # the next rerun completes: the samples are certified again and the set-aside file goes
    done = run_many({"rerun": _args(out)}, cli_workdir)["rerun"]
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert not aside.exists() and first.read_bytes() == kept
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    _same = _rows(run_dir).equals(_rows(_only_run(base["mine"])))
    assert _same, "the rerun's rows differ from the uninterrupted run's"


def _write_changed(part: Path, column: str, change) -> None:
    """Rewrite ``part`` with ``column`` replaced by ``change(column)`` (a real rsbench part
    otherwise)."""
    table = pq.read_table(part)
    at = table.schema.get_field_index(column)
    new = change(table.column(column))
    table = table.set_column(at, pa.field(column, new.type), new)
    with open(part, "wb") as handle:
        pq.write_table(table, handle)


def _damage(run_dir: Path, theirs: Path, how: str) -> str:
    """Damage ``run_dir`` in one way; return the name of the file the refusal must name."""
    part = run_dir / "part-0of1-000001.parquet"
    if how == "not-parquet":
        part.write_bytes(b"this is not a Parquet file\n")
    elif how == "foreign-parquet":
        part = run_dir / "part-0of1-000002.parquet"
        pq.write_table(pa.table({"x": [1, 2]}), part)
    elif how == "other-column-types":
        _write_changed(part, "index", lambda c: pa.array([f"img-{v}" for v in c.to_pylist()]))
    elif how == "truncated-part-of-another-run":
        data = (_only_run(theirs) / "part-0of1-000001.parquet").read_bytes()
        part.write_bytes(data[: len(data) // 2])
    elif how == "nA-above-n":
        _write_changed(part, "nA", lambda c: pc.add(c, 1000))
    elif how == "negative-count":
        _write_changed(part, "count0", lambda c: pc.subtract(c, 1000))
    elif how == "counts-not-summing-to-n":
        _write_changed(
            part,
            "counts",
            lambda c: pa.array(
                [[v + 1 for v in row] for row in c.to_pylist()], pa.list_(pa.int64())
            ),
        )
    else:  # pragma: no cover
        raise AssertionError(how)
    return part.name


REFUSED = {
    "not-parquet": ("truncated or corrupted",),
    "foreign-parquet": ("not an rsbench results file",),
    "other-column-types": ("wrong column types",),
    "truncated-part-of-another-run": ("truncated or corrupted",),
    "nA-above-n": ("nA > n",),
    "negative-count": ("count0 < 0",),
    "counts-not-summing-to-n": ("counts do not sum to n",),
}


@pytest.fixture(scope="module")
def refusals(cli_workdir, base):
    """Each damaged copy of the run, resumed, tabulated and rescored; outcomes and snapshots."""
    copies, names, jobs = {}, {}, {}
    for how in REFUSED:
        out = cli_workdir / f"lost-{how}"
        shutil.copytree(base["mine"], out)
        names[how] = _damage(_only_run(out), base["theirs"], how)
        copies[how] = out
        jobs[f"{how}--resume"] = _args(out)
        jobs[f"{how}--leaderboard"] = ["leaderboard", str(out)]
        jobs[f"{how}--rescore"] = [
            "rescore", str(out), "--alpha", "0.01", "--out", str(cli_workdir / f"lost-r-{how}")
        ]  # fmt: skip
    before = _snapshot(*copies.values())
    results = run_many(jobs, cli_workdir)
    return results, names, copies, before, _snapshot(*copies.values())


@pytest.mark.parametrize("command", ["resume", "leaderboard", "rescore"])
@pytest.mark.parametrize("how", list(REFUSED))
def test_a_part_that_cannot_be_read_is_refused_and_kept(refusals, cli_workdir, how, command):
    results, names, copies, before, after = refusals
    line = assert_one_clear_error(results[f"{how}--{command}"], (names[how], *REFUSED[how]))
    assert results[f"{how}--{command}"].returncode == 2
    assert "left it as it was" in line
    assert {k: v for k, v in after.items() if str(copies[how]) in k} == {
        k: v for k, v in before.items() if str(copies[how]) in k
    }
    assert not (cli_workdir / f"lost-r-{how}").exists()


def _no_override_prefix() -> list[str]:
    """A command prefix under which file modes apply to this process (or skip the test)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file modes cannot be made to apply")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def test_a_part_the_os_will_not_open_is_refused_and_kept(cli_workdir, base) -> None:
    prefix = _no_override_prefix()
    out = cli_workdir / "lost-mode-000"
    shutil.copytree(base["mine"], out)
    part = _only_run(out) / "part-0of1-000001.parquet"
    part.chmod(0)
    before = _snapshot(out)
    results = run_many(
        {"resume": _args(out), "leaderboard": ["leaderboard", str(out)]}, cli_workdir, prefix=prefix
    )
    for result in results.values():
        line = assert_one_clear_error(result, (part.name, "cannot be read", "Permission denied"))
        assert "left it as it was" in line and result.returncode == 2
    assert _snapshot(out) == before


def test_a_folder_whose_name_is_not_utf8_works_everywhere(cli_workdir) -> None:
    root = cli_workdir / os.fsdecode(b"lost-runs-M\xfcller")
    made = run_many({"make": _args(root)}, cli_workdir)["make"]
    assert made.returncode == 0, made.stderr
    run_dir = _only_run(root)
    first = (run_dir / "part-0of1-000000.parquet").read_bytes()
    (run_dir / "part-0of1-000001.parquet").unlink()  # an interrupted run
    resumed = run_many({"resume": _args(root)}, cli_workdir)["resume"]
    assert resumed.returncode == 0, resumed.stderr
    assert (run_dir / "part-0of1-000000.parquet").read_bytes() == first  # read, not redone
    assert "1 written" not in resumed.stderr and "2 already there" in " ".join(
        resumed.stderr.split()
    )
    sibling = cli_workdir / os.fsdecode(b"lost-out-M\xfcller")
    before = _snapshot(root)
    results = run_many(
        {
            "leaderboard": ["leaderboard", str(root)],
            "plot": ["plot", str(root), "-o", str(sibling / "p.png")],
            "compare": ["compare", str(root), "-o", str(sibling / "c.md")],
            "rescore": ["rescore", str(root), "--alpha", "0.01", "--out", str(sibling / "r")],
        },
        cli_workdir,
    )
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr)
        assert "Traceback" not in result.stderr
    assert (sibling / "p.png").is_file() and (sibling / "c.md").is_file()
    assert len(list((sibling / "r").rglob("part-*.parquet"))) == 1
    assert _snapshot(root) == before


# ----------------------------------------------------------------------------------- outputs


def test_no_command_writes_over_what_it_reads(cli_workdir, base, tmp_path) -> None:
    runs = base["mine"]
    run_dir = _only_run(runs)
    part = run_dir / "part-0of1-000000.parquet"
    log = tmp_path / "log_sigma_0.25.tsv"
    log.write_text(LOG)
    imp = ("import-logs", str(log), *IMPORT, "--model-id", "m")
    cases = {
        "leaderboard-o-part": (("leaderboard", str(runs), "-o", str(part)), ("part-0of1-000000",)),
        "leaderboard-json-run-json": (
            ("leaderboard", str(runs), "--format", "json", "-o", str(run_dir / "run.json")),
            ("'run.json' is a file name rsbench uses",),
        ),
        "leaderboard-run-json-elsewhere": (
            ("leaderboard", str(runs), "--format", "json", "-o", str(tmp_path / "run.json")),
            ("'run.json' is a file name rsbench uses",),
        ),
        "leaderboard-in-run-folder": (
            ("leaderboard", str(runs), "-o", str(run_dir / "board.md")),
            ("lies inside the run folder",),
        ),
        "leaderboard-o-input": (
            ("leaderboard", str(log), "-o", str(log)),
            ("also an input",),
        ),
        "plot-in-run-folder": (
            ("plot", str(runs), "-o", str(run_dir / "p.png")),
            ("lies inside the run folder",),
        ),
        "compare-plot-in-run-folder": (
            ("compare", str(runs), "-o", str(tmp_path / "c.md"), "--plot", str(run_dir / "x.png")),
            ("--plot", "lies inside the run folder"),
        ),
        "rescore-into-a-run": (
            ("rescore", str(runs), "--alpha", "0.01", "--out", str(run_dir / "sub")),
            ("--out",),
        ),
        "import-into-a-run": ((*imp, "--out", str(run_dir)), ("is the run folder",)),
        "import-under-a-run": ((*imp, "--out", str(run_dir / "x")), ("lies inside the run",)),
    }
    before = _snapshot(runs, tmp_path)
    results = run_many({name: list(args) for name, (args, _) in cases.items()}, cli_workdir)
    for name, (_, words) in cases.items():
        assert_one_clear_error(results[name], words)
        assert results[name].returncode == 2, name
    assert _snapshot(runs, tmp_path) == before  # c.md of compare is not written either
    assert not (tmp_path / "c.md").exists()


# ------------------------------------------------------------------------------------- input

SWEEPS = {
    "out-123": ("options: {out: 123}", ("option out", "123", "a string")),
    "zoo-mapping": ("options: {zoo: {a: 1}}", ("option zoo", "zoo file path")),
    "dataset-list": ("options: {dataset: [a]}", ("option dataset", "['a']", "a string")),
    "indices-x": ("options: {indices: [1, x]}", ("option indices", "[1, 'x']")),
    "indices-float": ("options: {indices: [1.5, 2]}", ("option indices", "[1.5, 2]")),
    "batch-bool": ("options: {batch: true}", ("option batch", "True", "not true/false")),
    "alpha-bool": ("options: {alpha: false}", ("option alpha", "False", "a number")),
    "n-float": ("options: {n: 100.5}", ("option n", "100.5", "an integer")),
    "sigma-bool": ("sigmas: [true]", ("'sigmas'", "not true/false")),
    "dataset-unknown": ("options: {dataset: cifar100}", ("option dataset", "'cifar100'")),
    "split-unknown": (
        "options: {dataset: fashion-mnist, split: valid}",
        ("option split", "'valid'", "fashion-mnist"),
    ),
    "channels-last-no": (
        "options: {channels_last: 'no'}",
        ("option channels_last", "true or false"),
    ),
    "indices-huge": ("options: {indices: '0:1000000000000'}", ("option indices", "999999999999")),
}


def test_bad_input_is_one_line_and_changes_nothing(cli_workdir, base, tmp_path) -> None:
    runs = base["mine"]
    log = tmp_path / "log_sigma_0.25.tsv"
    log.write_text(LOG)
    out = tmp_path / "out"
    jobs: dict[str, tuple[list[str], tuple[str, ...]]] = {}
    for name, (text, words) in SWEEPS.items():
        path = tmp_path / f"sweep-{name}.yaml"
        path.write_text(f"ids: [tiny-s0.25]\n{text}\n")
        jobs[f"sweep-{name}"] = (
            ["sweep", str(path), "--zoo", "zoo.yaml", "--out", str(out), "--dry-run"],
            (path.name, *words),
        )
    imp = ["import-logs", str(log), *IMPORT, "--out", str(out)]
    jobs.update(
        {
            "import-long-id": ([*imp, "--model-id", "m" * 300], ("characters long", "shorter")),
            "import-digits": (
                [*imp, "--model-id", "m", "--digits", "-3"],
                ("digits=-3", "1 to 17"),
            ),
            "import-n-1e15-text": ([*imp, "--model-id", "m", "--n", "1e15"], ("'1e15'",)),
            "import-n-1e15": (
                [*imp, "--model-id", "m", "--n", str(10**15)],
                ("n=10000", "1,000,000"),
            ),
            "import-n-1e8": ([*imp, "--model-id", "m", "--n", str(10**8)], ("n=100000000",)),
            "import-empty-id": ([*imp, "--model-id", ""], ("--model-id is empty",)),
            "import-blank-id": ([*imp, "--model-id", "  "], ("--model-id is empty",)),
            "import-unknown-dataset": (
                [
                    "import-logs",
                    str(log),
                    "--dataset",
                    "cifar100",
                    "--split",
                    "test",
                    "--model-id",
                    "m",
                    "--out",
                    str(out),
                ],
                ("--dataset", "'cifar100'"),
            ),  # fmt: skip
            "import-unknown-split": (
                [
                    "import-logs",
                    str(log),
                    "--dataset",
                    "cifar10",
                    "--split",
                    "valid",
                    "--model-id",
                    "m",
                    "--out",
                    str(out),
                ],
                ("--split", "'valid'", "cifar10"),
            ),  # fmt: skip
            "certify-indices-1e12": (
                [*_args(out, "--indices", "0:1000000000000")],
                ("999999999999", "--indices"),
            ),
            "certify-indices-1e8-dry-run": (
                [*_args(out, "--indices", "0:100000000", "--dry-run")],
                ("99999999", "--indices"),
            ),
        }
    )
    # altered run.json files: a string config (rescore), dual sigmas that are not numbers
    bad_config = tmp_path / "bad-config"
    shutil.copytree(runs, bad_config)
    info_path = _only_run(bad_config) / "run.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "config": "oops"}))
    bad_sigmas = tmp_path / "bad-sigmas"
    shutil.copytree(runs, bad_sigmas)
    info_path = _only_run(bad_sigmas) / "run.json"
    config = {**info["config"], "kind": "dual", "expert_ids": ["a", "b"], "sigmas": ["x", None]}
    info_path.write_text(json.dumps({**info, "config": config}))
    jobs.update(
        {
            "rescore-config-string": (
                ["rescore", str(bad_config), "--alpha", "0.01", "--out", str(out)],
                ("run.json", "'config' must be a mapping", "str"),
            ),
            "leaderboard-dual-sigmas": (
                ["leaderboard", str(bad_sigmas)],
                ("run.json", "finite numbers", "'x'"),
            ),
            "plot-dual-sigmas": (
                ["plot", str(bad_sigmas), "-o", str(out / "p.png")],
                ("run.json", "finite numbers"),
            ),
        }
    )
    before = _snapshot(runs, tmp_path)
    results = run_many({name: args for name, (args, _) in jobs.items()}, cli_workdir)
    for name, (_, words) in jobs.items():
        assert_one_clear_error(results[name], words)
        assert results[name].returncode == 2, name
    assert _snapshot(runs, tmp_path) == before
    assert not out.exists()


def test_index_ranges_are_refused_before_any_list_is_built() -> None:
    import tracemalloc

    from rsbench.data.indices import MAX_INDICES, parse_indices
    from rsbench.errors import DataError

    tracemalloc.start()
    for text in ("0:100000000", "0:1000000000000", "0-99999999999", "0:3000000:1,5"):
        with pytest.raises(DataError):
            parse_indices(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated to refuse an index range"
    with pytest.raises(DataError, match="outside the dataset"):
        parse_indices("0:3000", size=2000)
    assert len(parse_indices("0:1000000")) == 1_000_000 <= MAX_INDICES


# ---------------------------------------------------------------------------------- messages


def test_full_disk_during_rescore_and_import_says_nothing_resumes(cli_workdir, base, tmp_path):
    log = tmp_path / "log_sigma_0.25.tsv"
    log.write_text(LOG)
    out = tmp_path / "out"
    jobs = {
        "rescore": ["rescore", str(base["mine"]), "--alpha", "0.01", "--out", str(out)],
        "import": ["import-logs", str(log), *IMPORT, "--model-id", "m", "--out", str(out)],
    }
    before = _snapshot(base["mine"], tmp_path)
    results = run_many(jobs, cli_workdir, prelude=WRITES_FAIL)
    for result in results.values():
        line = assert_one_clear_error(result, ("No space left", "nothing of it was written"))
        assert "to resume" not in line and "intact" not in line
    assert _snapshot(base["mine"], tmp_path) == before
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def messages(cli_workdir, base, tmp_path_factory):
    """compare with a failing --plot, bare groups and a suggested command, in one driver."""
    root = tmp_path_factory.mktemp("messages")
    (root / "a-file").write_text("not a folder\n")
    table = root / "c.md"
    source = root / "my runs"
    shutil.copytree(base["mine"], source)
    jobs = {
        "compare": [
            *("compare", str(base["mine"]), "-o", str(table)),
            *("--plot", str(root / "a-file" / "x.png")),
        ],
        "rescore": ["rescore", str(source), "--alpha", "0.01", "--out", str(source)],
        **{f"bare-{'-'.join(group)}": list(group) for group in BARE},
    }
    return run_many(jobs, cli_workdir), table


BARE = [(), ("zoo",), ("train",)]


def test_compare_says_what_it_wrote_when_the_plot_fails(messages) -> None:
    results, table = messages
    line = assert_one_clear_error(
        results["compare"], ("a-file", f"the table was written to {table}")
    )
    assert "nothing was written" not in line and table.is_file()


@pytest.mark.parametrize("group", BARE)
def test_a_bare_group_prints_its_help(messages, group) -> None:
    result = messages[0][f"bare-{'-'.join(group)}"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: rsbench {' '.join(group)}".rstrip() + " [OPTIONS]")
    assert "Commands:" in result.stdout and "error:" not in result.stderr


def test_follow_up_commands_quote_paths(messages) -> None:
    assert_one_clear_error(messages[0]["rescore"], ("--out 'my runs-rescored'",))


def test_progress_without_a_terminal_prints_lines(cli_workdir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RSBENCH_PROGRESS_SECONDS", "0")
    result = run_many({"run": _args(tmp_path / "out")}, cli_workdir)["run"]
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "images, cert. acc" in line]
    assert lines[-1].startswith("tiny-s0.25") and "4/4 images" in lines[-1], result.stderr
    assert len(lines) >= 2 and "━" not in result.stderr  # no bar drawn into a log


def test_throughput_is_measured_after_the_warm_up() -> None:
    """The first calls of a network are slow (allocation, kernel choice): they must not count."""
    import time

    import torch

    from rsbench.run.certifiers import measure_throughput

    class Expert:
        batch_size = 100
        calls = 0

        def votes(self, images, num, keys):
            Expert.calls += 1
            time.sleep(0.2 if Expert.calls <= 2 else 0.002)
            return torch.zeros(1, 10, dtype=torch.long)

    rate = measure_throughput(Expert(), torch.zeros(1, 28, 28), seconds=0.2)
    assert rate > 100 / 0.02, rate  # the slow first calls would give at most 500 samples/s


# -------------------------------------------------------------------- honest leaderboards

ROOT = Path(__file__).resolve().parents[1]


def test_the_leaderboard_never_ranks_an_unsound_row_and_marks_other_images(cli_workdir) -> None:
    embedded, reference = ROOT / "results" / "embedded", ROOT / "results" / "reference" / "runs"
    jobs = {
        "embedded": ["leaderboard", str(embedded), "--format", "markdown"],
        "imagenet": [
            *("leaderboard", str(reference), "--protocol", "cohen-alpha0.01"),
            *("--dataset", "imagenet", "--format", "markdown"),
        ],
    }
    before = _snapshot(embedded, reference)
    results = run_many(jobs, cli_workdir)
    assert _snapshot(embedded, reference) == before
    for result in results.values():
        assert result.returncode == 0, result.stderr
    rows = [line for line in results["embedded"].stdout.splitlines() if line.startswith("| ")]
    unsound = [r for r in rows if "reference-split" in r]
    assert len(unsound) == 1 and "(unsound, not ranked)" in unsound[0]
    assert unsound[0].startswith("|  |"), "an unsound row carries no rank"
    ranked = [r for r in rows if r[2:3].isdigit()]
    assert rows.index(unsound[0]) > rows.index(ranked[-1]), "listed below every ranked row"
    assert "Rows marked unsound" in results["embedded"].stdout
    imagenet = results["imagenet"].stdout
    marked = [line for line in imagenet.splitlines() if "(other images)" in line]
    assert len(marked) == 1 and "cohen-imagenet-resnet50-s0.25" in marked[0]
    assert "427 (other images)" in marked[0]
    assert "were evaluated on other images than the 500 of the other ranked rows" in imagenet


def test_router_choice_bars_of_a_denoised_dual_carry_their_sigma() -> None:
    from rsbench import report
    from rsbench.results import read_results, run_states

    runs = sorted((ROOT / "results" / "embedded").glob("embedded-fmnist-denoised-dual-*"))
    fig = report.plot_curves(read_results(runs), states=run_states(runs))
    labels = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    expected = [f"embedded-fmnist-denoised (σ={s})" for s in ("0.25", "0.5", "1")]
    assert [label for label in labels if "denoised" in label] == expected, labels


def test_the_curves_mark_the_unsound_cascade_in_their_legend() -> None:
    from rsbench import report
    from rsbench.results import read_results, run_states

    runs = sorted((ROOT / "results" / "embedded").glob("embedded-fmnist-cascade-*"))
    fig = report.plot_curves(read_results(runs), states=run_states(runs), bounds=False)
    labels = sorted(line.get_label() for line in fig.axes[0].get_lines())
    assert labels == [
        "embedded-fmnist-cascade (cascade reference-split) [unsound]",
        "embedded-fmnist-cascade (cascade)",
    ], labels


def test_the_output_guard_knows_the_names_storage_writes(tmp_path) -> None:
    """rsbench/output.py (layer 0) keeps its own copy of the run folder's file names."""
    from rsbench import output
    from rsbench.results import storage

    assert output.RUN_JSON == storage.RUN_JSON
    for name in (storage.part_name("0of1", 0), storage.part_name("3of8", 123456)):
        assert output.PART_PATTERN.match(name) and storage.parse_part_name(name) is not None
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert not output.is_run_folder(run_dir)
    (run_dir / storage.part_name("0", 0)).write_bytes(b"")
    assert output.is_run_folder(run_dir)


def test_only_a_truncated_part_naming_this_run_counts_as_its_own(base) -> None:
    from rsbench.results import declared_run_id, truncated_part_of

    run_dir = _only_run(base["mine"])
    mine = declared_run_id(run_dir)
    part = run_dir / "part-0of1-000001.parquet"
    data = part.read_bytes()
    assert not truncated_part_of(part, mine)  # intact: its footer is there
    cut = base["mine"].parent / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    assert truncated_part_of(cut, mine)
    assert not truncated_part_of(cut, None)  # no run id to compare with
    assert not truncated_part_of(cut, mine + "x") and not truncated_part_of(cut, mine[:-1])
    cut.write_bytes(b"PAR1" + b"\0" * 40)  # Parquet's magic, but no run id
    assert not truncated_part_of(cut, mine)
    cut.unlink()


def test_impossible_router_counts_are_refused() -> None:
    from rsbench.results import SCHEMA, check_counts

    row = {name: None for name in SCHEMA.names}
    row.update(index=7, n=100, nA=60, n0=10, count0=9, counts=[40, 60], router_n=50)
    row.update(router_nA=30, router_n0=10, router_count0=9, router_counts=[20, 30])
    assert check_counts(pa.Table.from_pylist([row], schema=SCHEMA)) is None
    for change, found in (
        ({"router_nA": 51}, "router_nA > router_n at index 7"),
        ({"router_counts": [20, 31]}, "router_counts do not sum to router_n at index 7"),
        ({"router_counts": [-1, 51]}, "a negative entry in router_counts at index 7"),
        ({"expert_nA": 101}, "expert_nA > n at index 7"),
        ({"router_count0": 11}, "router_count0 > router_n0 at index 7"),
    ):
        table = pa.Table.from_pylist([{**row, **change}], schema=SCHEMA)
        assert check_counts(table) == found

"""Bad input and unwritable places through the real command line (issue 12, item 4).

Each case runs the ``rsbench`` console entry point (forked from one driver, see
``helpers.cli.DRIVER``) and must print exactly one ``error:`` line naming the problem and its
fix, exit non-zero, print no traceback, leave earlier results byte for byte as they were, and leave
no directory behind that would block or confuse a retry.

Read-only places need real permission checks. The tests run as root here, and root ignores file
modes; so the read-only cases run the driver under ``setpriv`` with the capabilities that let root
bypass modes (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``) dropped: the kernel then applies the
modes as it would to any user. A non-root user needs no wrapper. Paths whose parent is a regular
file (ENOTDIR) fail for everybody and run without a wrapper.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from helpers.cli import assert_one_clear_error, certify_args, run_many

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(
        not hasattr(os, "fork"), reason="the CLI driver forks one process per command (POSIX only)"
    ),
]

LOG_HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
LOG_ROW = "0\t3\t3\t0.512\t1\t0:00:01.5\n"

BOMB = "models:\n  - &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  - &{chr(98 + k)} [{', '.join([f'*{chr(97 + k)}'] * 10)}]\n" for k in range(8)
)

IMPORT = ("--dataset", "cifar10", "--split", "test", "--model-id", "m", "--out", "{out}")


def _snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file's bytes under ``folders`` (lock files aside: taking a lock writes no result)."""
    return {
        str(p): p.read_bytes()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock") and ".logs" not in p.parts
    }


@pytest.fixture(scope="module")
def good_run(cli_workdir) -> Path:
    """A complete certification run (the parent folder of its run directory)."""
    out = cli_workdir / "ux-good"
    args = [a.replace("{out}", str(out)) for a in certify_args()]
    result = run_many({"make": args}, cli_workdir)["make"]
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def files(cli_workdir) -> Path:
    """Broken inputs: zoo files, logs, and a regular file to put paths under."""
    root = cli_workdir / "ux-files"
    root.mkdir()
    (root / "latin1.yaml").write_bytes("models:\n  - id: caf\xe9\n".encode("latin-1"))
    (root / "loop-a.yaml").symlink_to(root / "loop-b.yaml")
    (root / "loop-b.yaml").symlink_to(root / "loop-a.yaml")
    (root / "bomb.yaml").write_text(BOMB)
    (root / "recursive.yaml").write_text("models: &m\n  - *m\n")
    (root / "big.yaml").write_text("# padding\n" * 120_000)
    (root / "header_sigma_0.25.tsv").write_text(LOG_HEADER)
    (root / "binary_sigma_0.25.tsv").write_bytes(bytes(range(256)) * 4)
    (root / "a-file").write_text("not a folder\n")
    return root


def _cases(good: Path, files: Path) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """name -> (arguments with {out}, words the error line must hold)."""
    f = str(files)
    board = ("leaderboard", str(good))
    return {
        "seed-2**63": (certify_args("--seed", str(2**63)), ("seed=9223372036854775808", "2**63")),
        "seed-negative": (certify_args("--seed", "-1"), ("seed=-1", "2**63")),
        "seed-train-expert": (
            (
                *("train", "expert", "--dataset", "fashion-mnist-embedded", "--arch", "fmnist_cnn"),
                *("--train-sigma", "0.25", "--seed", str(2**63), "--out", "{out}"),
            ),
            ("seed=9223372036854775808", "2**63"),
        ),
        "seed-train-router": (
            ("train", "router", "embedded-fmnist-dual", "--seed", str(2**63), "--out", "{out}"),
            ("seed=9223372036854775808", "2**63"),
        ),
        "sigma-1e39": (certify_args("--sigma", "1e39"), ("sigma=1e+39", "(0, 100]")),
        "radii-abc": ((*board, "--radii", "abc"), ("'abc'", "0:2:0.25")),
        "radii-negative": ((*board, "--radii", "-1:2:0.5"), ("start -1", ">= 0")),
        "radii-too-many": ((*board, "--radii", "0:1000000:0.001"), ("1000", "larger step")),
        "radii-plot": (("plot", str(good), "-o", "{out}/p.png", "--radii", "abc"), ("'abc'",)),
        "zoo-not-utf8": (("zoo", "list", "--zoo", f"{f}/latin1.yaml"), ("not UTF-8", "0xe9")),
        "zoo-not-utf8-certify": (certify_args(zoo=f"{f}/latin1.yaml"), ("latin1.yaml", "UTF-8")),
        "zoo-symlink-loop": (("zoo", "list", "--zoo", f"{f}/loop-a.yaml"), ("symlink loop",)),
        "zoo-alias-bomb": (("zoo", "list", "--zoo", f"{f}/bomb.yaml"), ("alias bomb",)),
        "zoo-alias-bomb-certify": (certify_args(zoo=f"{f}/bomb.yaml"), ("bomb.yaml", "alias")),
        "zoo-recursive-alias": (("zoo", "list", "--zoo", f"{f}/recursive.yaml"), ("recursive",)),
        "zoo-too-large": (("zoo", "list", "--zoo", f"{f}/big.yaml"), ("larger than", "KiB")),
        "import-header-only": (
            ("import-logs", f"{f}/header_sigma_0.25.tsv", *IMPORT),
            ("header but no rows",),
        ),
        "import-binary": (("import-logs", f"{f}/binary_sigma_0.25.tsv", *IMPORT), ("not a text",)),
        "rescore-into-itself": (
            ("rescore", str(good), "--alpha", "0.01", "--out", str(good)),
            ("--out", "rescored"),
        ),
        "certify-out-under-a-file": (
            certify_args()[:4] + ("--out", f"{f}/a-file/out", *certify_args()[6:]),
            ("a-file", "--out"),
        ),
        "rescore-out-under-a-file": (
            ("rescore", str(good), "--alpha", "0.01", "--out", f"{f}/a-file/out"),
            ("a-file", "--out"),
        ),
        "leaderboard-o-under-a-file": ((*board, "-o", f"{f}/a-file/b.md"), ("a-file", "-o")),
        "plot-o-under-a-file": (("plot", str(good), "-o", f"{f}/a-file/p.png"), ("a-file", "-o")),
        "compare-o-under-a-file": (
            ("compare", str(good), "-o", f"{f}/a-file/c.md"),
            ("a-file", "-o"),
        ),
    }


@pytest.fixture(scope="module")
def outcomes(cli_workdir, good_run, files):
    cases = _cases(good_run, files)
    outs = {name: cli_workdir / f"ux-out-{name}" for name in cases}
    before = _snapshot(good_run, files)
    jobs = {
        name: [a.replace("{out}", str(outs[name])) for a in args]
        for name, (args, _) in cases.items()
    }
    results = run_many(jobs, cli_workdir)
    after = _snapshot(good_run, files)
    return {name: (results[name], outs[name], cases[name][1]) for name in cases}, before, after


@pytest.mark.parametrize("name", list(_cases(Path("g"), Path("f"))))
def test_refused_with_one_line_and_nothing_written(outcomes, name: str) -> None:
    by_name, before, after = outcomes
    result, out, words = by_name[name]
    assert_one_clear_error(result, words)
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    assert after == before, "earlier results or inputs changed"


def test_header_only_log_leaves_nothing_that_blocks_the_retry(cli_workdir, files) -> None:
    out = cli_workdir / "ux-import-retry"
    log = files / "retry_sigma_0.25.tsv"
    log.write_text(LOG_HEADER)
    args = ["import-logs", str(log), *(a.replace("{out}", str(out)) for a in IMPORT)]
    first = run_many({"empty": args}, cli_workdir)["empty"]
    assert_one_clear_error(first, ("no rows",))
    log.write_text(LOG_HEADER + LOG_ROW)
    second = run_many({"retry": args}, cli_workdir)["retry"]
    assert second.returncode == 0, second.stderr
    (run_dir,) = out.iterdir()
    assert len(list(run_dir.glob("part-*.parquet"))) == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------- read-only places, for real


def _no_override_prefix() -> list[str]:
    """A command prefix under which file modes apply to this process (or skip the test)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file modes cannot be made to apply")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def _read_only(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture(scope="module")
def read_only(cli_workdir, good_run):
    """Run each command against read-only folders and files with permission checks in force."""
    prefix = _no_override_prefix()
    ro = cli_workdir / "ux-ro"
    shutil.copytree(good_run, ro / "runs")
    (ro / "empty").mkdir()
    (ro / "board.md").write_text("the old leaderboard\n")
    cwd = ro / "cwd"
    cwd.mkdir()
    (cwd / ".logs").mkdir()  # the driver's own log files (it runs there) stay writable
    _read_only(ro)
    (cwd / ".logs").chmod(0o755)
    runs, empty, board = ro / "runs", ro / "empty", ro / "board.md"
    cases = {
        "certify-new-run": (certify_args(), {"out": str(empty)}, ("cannot write", "--out")),
        "certify-rerun-complete": (certify_args(), {"out": str(runs)}, ("lock file", "--out")),
        "rescore-into-read-only": (
            ("rescore", str(good_run), "--alpha", "0.01", "--out", str(empty)),
            {},
            ("cannot write", "--out"),
        ),
        "leaderboard-o-read-only-folder": (
            ("leaderboard", str(runs), "-o", str(empty / "b.md")),
            {},
            ("Permission denied", "-o"),
        ),
        "leaderboard-o-read-only-file": (
            ("leaderboard", str(runs), "-o", str(board)),
            {},
            ("read-only", "-o"),
        ),
        "plot-o-read-only-folder": (
            ("plot", str(runs), "-o", str(empty / "p.png")),
            {},
            ("Permission denied", "-o"),
        ),
    }
    jobs = {
        name: [a.replace("{out}", subs.get("out", "{out}")) for a in args]
        for name, (args, subs, _) in cases.items()
    }
    # the default --out (results/) in a read-only working directory
    jobs["certify-read-only-cwd"] = [
        a for a in certify_args(zoo=str(cli_workdir / "zoo.yaml")) if a not in ("--out", "{out}")
    ]
    words = {name: w for name, (_, _, w) in cases.items()}
    words["certify-read-only-cwd"] = ("results", "--out")
    before = _snapshot(ro)
    results = run_many(
        {k: v for k, v in jobs.items() if k != "certify-read-only-cwd"}, cli_workdir, prefix=prefix
    )
    results.update(
        run_many({"certify-read-only-cwd": jobs["certify-read-only-cwd"]}, cwd, prefix=prefix)
    )
    after = _snapshot(ro)
    extra = sorted(str(p.relative_to(ro)) for p in ro.rglob("*") if ".logs" not in p.parts)
    return results, words, before, after, extra


@pytest.mark.parametrize(
    "name",
    [
        "certify-new-run",
        "certify-rerun-complete",
        "certify-read-only-cwd",
        "rescore-into-read-only",
        "leaderboard-o-read-only-folder",
        "leaderboard-o-read-only-file",
        "plot-o-read-only-folder",
    ],
)
def test_read_only_places_are_one_line_and_change_nothing(read_only, name: str) -> None:
    results, words, before, after, _ = read_only
    assert_one_clear_error(results[name], words[name])
    assert after == before


def test_read_only_places_get_no_new_files(read_only, good_run) -> None:
    *_, extra = read_only
    expected = {"board.md", "cwd", "empty", "runs"}
    expected |= {str(Path("runs") / p.relative_to(good_run)) for p in good_run.rglob("*")}
    assert set(extra) == expected


FIRST_CHUNK_FAILS = """
import errno, pyarrow.parquet as pq
def _write_table(table, where, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
pq.write_table = _write_table
"""


def test_a_run_that_never_wrote_a_row_leaves_no_directory(cli_workdir) -> None:
    out = cli_workdir / "ux-first-chunk"
    args = [a.replace("{out}", str(out)) for a in certify_args()]
    failed = run_many({"full": args}, cli_workdir, prelude=FIRST_CHUNK_FAILS)["full"]
    assert_one_clear_error(failed, ("No space left",))
    assert out.is_dir() and not list(out.iterdir()), sorted(p.name for p in out.rglob("*"))
    retry = run_many({"retry": args}, cli_workdir)["retry"]
    assert retry.returncode == 0, retry.stderr


def test_a_part_of_another_run_is_refused_on_resume(cli_workdir, good_run) -> None:
    out = cli_workdir / "ux-foreign"
    args = [a.replace("{out}", str(out)) for a in certify_args("--seed", "1")]
    made = run_many({"make": args}, cli_workdir)["make"]
    assert made.returncode == 0, made.stderr
    (run_dir,) = out.iterdir()
    (theirs,) = next(good_run.iterdir()).glob("part-*.parquet")
    shutil.copy(theirs, run_dir / "part-0of1-000001.parquet")
    before = _snapshot(out)
    resumed = run_many({"resume": args}, cli_workdir)["resume"]
    assert_one_clear_error(resumed, ("part-0of1-000001.parquet", "holds rows of run"))
    assert _snapshot(out) == before  # refused, and the foreign part is kept, not deleted
    board = run_many({"board": ["leaderboard", str(out)]}, cli_workdir)["board"]
    assert_one_clear_error(board, ("part-0of1-000001.parquet", "holds rows of run"))

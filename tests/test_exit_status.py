"""Exit statuses that tell the truth, and Ctrl-C.

Every command of the CLI (enumerated from the Click group, so that a new command without a
failing case here fails this test) is run in a case where it fails or finds a failure: its status
is non-zero and stderr holds exactly one ``error:`` line and no traceback. Ctrl-C during
``certify`` (a real SIGINT to a real process; likewise SIGTERM) keeps the rows written, says so,
records ``interrupted`` in run.json, and the rerun completes with the rows of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pandas as pd
import pytest
from helpers.tiny_zoo import make_zoo

from rsbench.cli.main import main, main_group
from rsbench.results.storage import list_parts, read_results, read_run_json

TINY = ["--n0", "10", "--n", "100", "--batch", "100", "--device", "cpu"]


def leaf_commands() -> list[str]:
    """Every runnable command path (``zoo check``, ``train expert``, ...) of ``rsbench``."""
    found: list[str] = []

    def walk(group: click.Group, prefix: list[str]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if isinstance(command, click.Group):
                walk(command, [*prefix, name])
            else:
                found.append(" ".join([*prefix, name]))

    walk(main_group, [])
    return sorted(found)


def cli(capsys, *args) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """The tiny zoo, with tiny-s0.50's weights file corrupted."""
    folder = tmp_path_factory.mktemp("broken")
    zoo_file = make_zoo(folder)
    (folder / "tiny-s0.50.safetensors").write_bytes(b"\x00" * 64)
    return zoo_file


def failing_cases(zoo: Path, tmp: Path) -> dict[str, tuple[str, list]]:
    """One failing invocation per command: a failed run, a failed check, nothing to show..."""
    empty = tmp / "empty"
    empty.mkdir()
    log = tmp / "log.tsv"
    log.write_text(
        "idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\tnot-a-number\t0.5\t1\t0:00:01\n"
    )
    sweep = tmp / "sweep.yaml"
    sweep.write_text(
        f"ids: [tiny-s0.25, tiny-s0.50]\noptions: {{n0: 10, n: 100, limit: 2, batch: 100, "
        f"device: cpu, zoo: [{zoo}], out: {tmp / 'sweep-out'}}}\n"
    )
    bad_zoo = tmp / "bad.yaml"
    bad_zoo.write_text("models:\n  - id: [unclosed\n")
    te = ["--dataset", "fashion-mnist-embedded", "--out", tmp / "t"]  # it has no train split
    add = ["--arch", "mlp", "--dataset", "fashion-mnist", "--train-sigma", "0.25",
           "--input-layer", "none", "--zoo-file", tmp / "z.yaml"]  # fmt: skip
    missing = tmp / "missing.pth"
    return {
        # a run whose weights are broken
        "certify": ("not a readable checkpoint",
                    ["certify", "tiny-s0.50", "--zoo", zoo, "--out", tmp / "c", "--limit", "2", *TINY]),
        # the first run completes, the second fails: the sweep fails
        "sweep": ("not a readable checkpoint", ["sweep", sweep, "--no-leaderboard"]),
        # nothing to show
        "leaderboard": ("no result rows", ["leaderboard", empty]),
        "plot": ("no result rows", ["plot", empty, "-o", tmp / "p.png"]),
        "compare": ("no result rows", ["compare", empty]),
        "rescore": ("no run directories", ["rescore", empty, "--alpha", "0.01", "--out", tmp / "rs"]),
        "import-logs": ("malformed field",
                        ["import-logs", log, "--dataset", "fashion-mnist", "--split", "test",
                         "--model-id", "x", "--sigma", "0.25", "--out", tmp / "imp"]),
        "zoo list": ("not valid YAML", ["zoo", "list", "--zoo", bad_zoo]),
        "zoo show": ("unknown model id", ["zoo", "show", "no-such-model", "--zoo", zoo]),
        # a check that finds a broken entry
        "zoo check": ("1 of 2 checked entries failed",
                      ["zoo", "check", "tiny-s0.25", "tiny-s0.50", "--zoo", zoo]),
        "zoo import-archive": ("no member of",
                               ["zoo", "import-archive", empty, "--zoo-file", tmp / "z.yaml"]),
        "zoo hash": ("does not exist", ["zoo", "hash", missing]),
        "zoo add": ("does not exist", ["zoo", "add", "--id", "m-s0.25", "--checkpoint", missing, *add]),
        "train expert": ("no split 'train'",
                         ["train", "expert", *te, "--arch", "mlp", "--train-sigma", "0.25"]),
        "train denoiser": ("no split 'train'", ["train", "denoiser", *te]),
        "train router": ("at least 2 experts", ["train", "router", "no-such-expert", "--out", tmp / "tr"]),
        "train finetune": ("unknown model id", ["train", "finetune", "no-such-dual", "--out", tmp / "tf"]),
    }  # fmt: skip


def test_every_command_fails_with_a_non_zero_status_and_one_error_line(broken, tmp_path, capsys):
    cases = failing_cases(broken, tmp_path)
    assert sorted(cases) == leaf_commands(), "add a failing case for each new command"
    for name, (message, args) in cases.items():
        code, out, err = cli(capsys, *args)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code != 0, (name, out, err)
        assert len(errors) == 1 and "Traceback" not in err + out, (name, err)
        assert message in errors[0], (name, errors[0])
    # the sweep's first run is kept, the failing one left no directory behind
    runs = list((tmp_path / "sweep-out").iterdir())
    assert len(runs) == 1 and read_run_json(runs[0])["status"] == "complete"


def test_zoo_check_passes_with_status_0(broken, capsys):
    code, out, err = cli(capsys, "zoo", "check", "tiny-s0.25", "--zoo", broken)
    assert code == 0 and "1 checked, 0 failed" in out + err, err


# ------------------------------------------------------------------------------ Ctrl-C


def _rows(path: Path) -> pd.DataFrame:
    df = read_results(path).drop(columns=["seconds", "run_id"])
    return df.sort_values(["model_id", "index"]).reset_index(drop=True)


SLOW_ARCH = """
import os
import time

_plain = linear


def linear(num_classes, input_shape=None):  # noqa: F811
    net = _plain(num_classes, input_shape)
    delay = float(os.environ.get("RSBENCH_TEST_FORWARD_SLEEP", "0"))
    if delay:  # a slow network, so that Ctrl-C comes in the middle of the run
        net.register_forward_pre_hook(lambda module, args: time.sleep(delay))
    return net
"""


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "signum, status, said",
    [(signal.SIGINT, 130, "interrupted;"), (signal.SIGTERM, 143, "terminated (SIGTERM);")],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_keeps_rows_records_interrupted_and_the_rerun_resumes(
    tmp_path, capsys, signum, status, said
):
    """Ctrl-C (SIGINT) and SIGTERM (preemption, torchrun stopping workers) mid-run."""
    zoo = make_zoo(tmp_path / "zoo")
    with (tmp_path / "zoo" / "tiny_arch.py").open("a") as handle:
        handle.write(SLOW_ARCH)
    # 3 forward passes of 0.25 s per image: uninterrupted, the child would run for 30 s, so the
    # signal (sent once the first 2-image chunk is written) lands mid-run even on a loaded machine
    args = ["certify", "tiny-s0.25", "--zoo", str(zoo), "--limit", "40", "--chunk-size", "2",
            "--n0", "10", "--n", "200", "--batch", "100", "--device", "cpu", "--no-leaderboard"]  # fmt: skip
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RSBENCH_TEST_FORWARD_SLEEP": "0.25"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rsbench", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and any(list_parts(d) for d in out.iterdir())):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no chunk written in 120 s"
            time.sleep(0.05)
        proc.send_signal(signum)  # SIGINT is what Ctrl-C sends
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, stderr[-2000:]
    assert f"{said} results written so far are kept and rerunning the command resumes" in stderr
    assert "Traceback" not in stderr and "aborted" not in stderr
    (run_dir,) = out.iterdir()
    info = read_run_json(run_dir)
    written = len(read_results(run_dir))
    assert info["status"] == "interrupted" and 0 < written < 40 and info["interrupted"]
    # rerun: resumes where it stopped and completes; equals an uninterrupted run
    code, _, err = cli(capsys, *args, "--out", out)
    assert code == 0 and f"{written} already there" in " ".join(err.split()), err
    assert read_run_json(run_dir)["status"] == "complete"
    code, _, err = cli(capsys, *args, "--out", tmp_path / "whole")
    assert code == 0, err
    pd.testing.assert_frame_equal(_rows(out), _rows(tmp_path / "whole"))

"""Faults not covered elsewhere (issue 9, item 2): full disk, foreign results format, NaN/inf images.

Covered in other files (see ``docs/reliability.md``): SIGKILL then resume, corrupted or truncated
parts, two processes on one run (``test_runner.py``); corrupted cache and cut downloads
(``test_weights.py``).

The full disk is simulated by making the Parquet writer used by :func:`rsbench.results.write_chunk`
write a few bytes and then fail with ``OSError(ENOSPC)`` on a chosen chunk: the thing under test is
what rsbench does with the failure, not the operating system.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers.cli import ARCH, assert_one_clear_error, run_many, write_weights, zoo_text
from torch import nn

from rsbench import results
from rsbench.engine.dual import DualSmoothed
from rsbench.engine.smoothing import SmoothedClassifier
from rsbench.errors import ConfigError, ResultsError, RSBenchError
from rsbench.results import storage
from rsbench.run import runconfig, runner
from rsbench.zoo.registry import load_zoo

SMALL = dict(protocol="cpu", n0=10, n=50, limit=6, chunk_size=2, batch_size=500, device="cpu")
ENOSPC_MESSAGE = os.strerror(errno.ENOSPC)  # "No space left on device"


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("zoo")
    (folder / "tiny_arch.py").write_text(ARCH)
    write_weights(folder / "tiny.safetensors", 784)
    write_weights(folder / "router.safetensors", 784, classes=2)
    (folder / "zoo.yaml").write_text(zoo_text())
    return folder


@pytest.fixture(scope="module")
def zoo(zoo_dir):
    return load_zoo([zoo_dir / "zoo.yaml"])


def _config(zoo, **overrides) -> runconfig.RunConfig:
    return runconfig.resolve_config(zoo.get("tiny-s0.25"), zoo=zoo, **{**SMALL, **overrides})


def _rows(run_dir: Path) -> pd.DataFrame:
    frame = results.read_results(run_dir).drop(columns=["seconds", "run_id"])
    return frame.sort_values("index").reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(zoo, tmp_path_factory) -> pd.DataFrame:
    """The rows of an uninterrupted run (6 samples, chunks of 2)."""
    result = runner.run_certification(_config(zoo), zoo, tmp_path_factory.mktemp("reference"))
    assert result.complete and result.written == 6
    return _rows(result.run_dir)


def _fill_disk_on_chunk(monkeypatch, failing_call: int) -> list[int]:
    """From the ``failing_call``-th Parquet write on, write a few bytes then raise ENOSPC."""
    real = storage.pq.write_table
    calls = [0]

    def write_table(table, where, *args, **kwargs):
        calls[0] += 1
        if calls[0] >= failing_call:
            if hasattr(where, "write"):
                where.write(b"PAR1\x00\x00")  # a torn start of a Parquet file
            raise OSError(errno.ENOSPC, ENOSPC_MESSAGE)
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(storage.pq, "write_table", write_table)
    return calls


def test_full_disk_keeps_earlier_chunks_and_resume_completes(zoo, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = _fill_disk_on_chunk(monkeypatch, failing_call=2)
    with pytest.raises(RSBenchError) as info:
        runner.run_certification(_config(zoo), zoo, out)
    assert calls[0] == 2
    assert ENOSPC_MESSAGE in str(info.value)
    (run_dir,) = out.iterdir()
    # the chunk written before the disk filled up is complete and readable
    parts = results.list_parts(run_dir)
    assert [p.name for p in parts] == [results.part_name("0of1", 0)]
    kept = _rows(run_dir)
    pd.testing.assert_frame_equal(
        kept, reference[reference["index"].isin(kept["index"])].reset_index(drop=True)
    )
    assert len(kept) == 2
    assert results.read_run_json(run_dir)["status"] == "running"
    # space is back: the same command resumes, redoes the lost chunk, and equals the reference
    monkeypatch.undo()
    resumed = runner.run_certification(_config(zoo), zoo, out)
    assert resumed.run_dir == run_dir and resumed.complete and resumed.written == 4
    pd.testing.assert_frame_equal(_rows(run_dir), reference)
    assert not list(run_dir.glob("*.tmp")), "the torn temporary file was not cleaned up"


def test_full_disk_is_one_clear_error(zoo, tmp_path, monkeypatch):
    _fill_disk_on_chunk(monkeypatch, failing_call=2)
    with pytest.raises(RSBenchError) as info:
        runner.run_certification(_config(zoo), zoo, tmp_path / "out")
    message = str(info.value)
    assert ENOSPC_MESSAGE in message and "\n" not in message


FULL_DISK_PRELUDE = f"""
import errno, pyarrow.parquet as pq
_real, _calls = pq.write_table, [0]
def _write_table(table, where, *args, **kwargs):
    _calls[0] += 1
    if _calls[0] >= 2:
        where.write(b"PAR1\\x00\\x00")
        raise OSError(errno.ENOSPC, {ENOSPC_MESSAGE!r})
    return _real(table, where, *args, **kwargs)
pq.write_table = _write_table
"""


@pytest.mark.subprocess
def test_full_disk_through_the_cli(zoo_dir):
    args = ["certify", "tiny-s0.25", "--zoo", "zoo.yaml", "--out", "full", "--device", "cpu"]
    args += ["--limit", "6", "--chunk-size", "2", "--n0", "10", "--n", "50", "--no-leaderboard"]
    result = run_many({"full-disk": args}, zoo_dir, prelude=FULL_DISK_PRELUDE)["full-disk"]
    (run_dir,) = (zoo_dir / "full").iterdir()
    assert len(results.read_results(run_dir)) == 2  # the earlier chunk is intact either way
    assert_one_clear_error(result, (ENOSPC_MESSAGE,))


def test_unwritable_run_json_leaves_no_half_file(zoo, tmp_path, monkeypatch):
    """A failure while writing run.json (atomic temp + rename) leaves the old run.json intact."""
    result = runner.run_certification(_config(zoo, limit=2), zoo, tmp_path)
    path = result.run_dir / results.RUN_JSON
    before = path.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, ENOSPC_MESSAGE)

    monkeypatch.setattr(storage.os, "fsync", no_space)
    with pytest.raises(OSError):
        results.write_json_atomic(path, {"format_version": 1, "status": "broken"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert results.read_run_json(result.run_dir)["status"] == "complete"


# ------------------------------------------------------------------------- foreign results format


def _future_run(zoo, out: Path, version) -> Path:
    result = runner.run_certification(_config(zoo, limit=2), zoo, out)
    path = result.run_dir / results.RUN_JSON
    info = json.loads(path.read_text())
    info["format_version"] = version
    path.write_text(json.dumps(info))
    return result.run_dir


@pytest.mark.parametrize("version", [99, 0, "1", None])
def test_resuming_a_run_of_another_results_format_is_refused(zoo, tmp_path, version):
    run_dir = _future_run(zoo, tmp_path, version)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if not p.name.endswith(".lock")}
    with pytest.raises(ResultsError) as info:
        runner.run_certification(_config(zoo, limit=2), zoo, tmp_path)
    message = str(info.value)
    assert "format" in message and str(version) in message and "\n" not in message
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if not p.name.endswith(".lock")}
    assert after == before


def test_reading_a_run_of_another_results_format_is_refused(zoo, tmp_path):
    run_dir = _future_run(zoo, tmp_path, 99)
    with pytest.raises(ResultsError, match="format"):
        results.read_results(run_dir)


def test_corrupt_run_json_is_one_clear_error(zoo, tmp_path):
    result = runner.run_certification(_config(zoo, limit=2), zoo, tmp_path)
    (result.run_dir / results.RUN_JSON).write_text('{"format_version": 1, "ident')
    with pytest.raises(ResultsError) as info:
        runner.run_certification(_config(zoo, limit=2), zoo, tmp_path)
    assert "run.json" in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------ NaN / inf images


class MustNotRun(nn.Module):
    """A base classifier that fails the test if any forward pass reaches it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a refused image reached the network")


BAD_VALUES = [float("nan"), float("inf"), -float("inf"), 1.5, -0.25]


def _batch_with(value: float) -> torch.Tensor:
    images = torch.rand(4, 1, 6, 6)
    images[2, 0, 3, 4] = value  # one bad pixel in the third image
    return images


@pytest.mark.parametrize("value", BAD_VALUES, ids=str)
def test_bad_pixels_are_refused_before_any_forward_pass(value):
    images = _batch_with(value)
    needle = "NaN or infinite" if not math.isfinite(value) else "outside [0, 1]"
    smoothed = SmoothedClassifier(MustNotRun(), 3, 0.5, input_shape=(1, 6, 6))
    dual = DualSmoothed(MustNotRun(), [MustNotRun()], [0.5], 0.5, 3, input_shape=(1, 6, 6))
    calls = [
        lambda: smoothed.certify_batch(images, 10, 100, 0.001),
        lambda: smoothed.predict_batch(images, 100, 0.001),
        lambda: smoothed.certify(images[2], 10, 100, 0.001),
        lambda: dual.certify_batch(images, 10, 100, 0.001),
        lambda: dual.predict_batch(images, 100, 0.001),
    ]
    for call in calls:
        with pytest.raises(ConfigError) as info:
            call()
        assert needle in str(info.value) and "\n" not in str(info.value)


def test_bad_pixels_in_a_dataset_stop_the_run_with_earlier_chunks_kept(zoo, tmp_path):
    """A dataset whose 5th selected image holds NaN: chunks before it are written, then ConfigError."""
    from rsbench.data.dataset import load_dataset

    config = _config(zoo)
    prepared = runner.prepare(config, zoo, tmp_path)
    clean = load_dataset("fashion-mnist", "embedded")
    poisoned_position = prepared.positions[4]

    class Poisoned:
        """The embedded dataset with NaN pixels at one position."""

        source_indices = clean.source_indices
        labels = clean.labels
        source_name = "fashion-mnist"
        split = "test"

        def images(self, positions):
            batch = clean.images(positions).clone()
            for row, position in enumerate(positions):
                if position == poisoned_position:
                    batch[row, 0, 0, 0] = float("nan")
            return batch

    certifier, _ = runner.build_certifier(prepared, "cpu")
    with pytest.raises(ConfigError, match="NaN"):
        runner.execute(
            config, certifier, Poisoned(), prepared.run_dir, positions=prepared.positions
        )
    kept = results.read_results(prepared.run_dir)
    assert len(kept) == 4 and poisoned_position not in set(kept["index"])

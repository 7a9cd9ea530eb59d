"""Parquet chunks, schema, run.json and read_results."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from rsbench.errors import ResultsError
from rsbench.results.schema import COLUMNS, SCHEMA, rows_to_table
from rsbench.results.storage import (
    list_parts,
    read_results,
    read_run_json,
    write_chunk,
    write_json_atomic,
)


def _row(index: int, **extra):
    row = dict(
        run_id="r1",
        protocol="cpu",
        dataset="fashion-mnist",
        split="test",
        index=index,
        label=index % 10,
        model_id="m",
        kind="expert",
        sigma=0.5,
        n0=10,
        n=100,
        alpha=0.001,
        seed=0,
        precision="fp32",
        batch_size=100,
        prediction=index % 10,
        abstained=False,
        correct=True,
        cA=index % 10,
        count0=9,
        nA=90 + index % 10,
        counts=[0] * 9 + [100],
        pA_lower=0.81234567890123,
        radius=0.4412345678901,
        seconds=0.01,
    )
    row.update(extra)
    return row


def test_schema_matches_the_documented_columns():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    for name in COLUMNS:
        assert f"`{name}`" in doc, name
    assert SCHEMA.field("counts").type.value_type.bit_width == 64
    assert str(SCHEMA.field("radius").type) == "double"


def test_chunks_round_trip_exactly(tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    write_chunk(run, [_row(i) for i in range(3)], "0of1", 0)
    write_chunk(run, [_row(i) for i in range(3, 5)], "0of1", 1)
    dual = _row(
        5,
        kind="dual",
        router_id="router",
        sigma_router=1.0,
        alpha_router=0.0005,
        alpha_expert=0.0005,
        router_choice=1,
        expert_id="e1",
        router_counts=np.array([1, 99, 0]),
        router_radius=1.5,
    )
    write_chunk(run, [dual], "1of2", 0)
    assert [p.name for p in list_parts(run)] == [
        "part-0of1-000000.parquet",
        "part-0of1-000001.parquet",
        "part-1of2-000000.parquet",
    ]
    assert not list(run.glob("*.tmp"))
    df = read_results(run)
    assert list(df.columns) == list(COLUMNS)
    assert list(df["index"]) == [0, 1, 2, 3, 4, 5]
    assert df["radius"][0] == 0.4412345678901  # full precision
    assert list(df["counts"][0]) == [0] * 9 + [100]
    assert df["router_id"].isna().sum() == 5 and df["router_choice"][5] == 1
    assert list(df["router_counts"][5]) == [1, 99, 0]
    # a parent directory and a list read the same rows
    assert len(read_results(tmp_path)) == 6
    assert len(read_results([run, run.parent])) == 6  # the same run is read once


def test_existing_part_is_never_overwritten(tmp_path):
    write_chunk(tmp_path, [_row(0)], "0", 0)
    with pytest.raises(ResultsError, match="already exists"):
        write_chunk(tmp_path, [_row(1)], "0", 0)


def test_unknown_column_is_an_error():
    with pytest.raises(ResultsError, match="unknown result column"):
        rows_to_table([_row(0, bogus=1)])


def test_truncated_or_corrupted_part_is_named(tmp_path):
    path = write_chunk(tmp_path, [_row(i) for i in range(50)], "0", 0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultsError, match="part-0-000000.parquet"):
        read_results(tmp_path)
    path.write_bytes(b"PAR1" + b"\0" * 100)
    with pytest.raises(ResultsError, match="truncated or corrupted"):
        read_results(tmp_path)


def test_foreign_parquet_is_rejected(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"x": [1]}), tmp_path / "part-0-000000.parquet")
    with pytest.raises(ResultsError, match="lacks column"):
        read_results(tmp_path)


def test_missing_path_and_empty_dir(tmp_path):
    with pytest.raises(ResultsError, match="does not exist"):
        read_results(tmp_path / "nope")
    df = read_results(tmp_path)
    assert len(df) == 0 and list(df.columns) == list(COLUMNS)


def test_run_json_is_written_atomically(tmp_path):
    write_json_atomic(tmp_path / "run.json", {"status": "running", "n": np.int64(3)})
    assert read_run_json(tmp_path) == {"status": "running", "n": 3}
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(ResultsError, match="not valid JSON"):
        read_run_json(tmp_path)
    assert json.loads('{"a": 1}') == {"a": 1}


def test_unknown_results_format_is_refused(tmp_path):
    write_chunk(tmp_path, [_row(0)], "0", 0)
    write_json_atomic(tmp_path / "run.json", {"format_version": 99})
    with pytest.raises(ResultsError, match="format 99"):
        read_results(tmp_path)
    write_json_atomic(tmp_path / "run.json", {"format_version": 1})
    assert len(read_results(tmp_path)) == 1

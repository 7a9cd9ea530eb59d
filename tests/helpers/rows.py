"""Small results frames and run folders for the report, leaderboard and plot tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def expert_rows(
    model_id, sigma, outcomes, protocol="cohen", dataset="cifar10", n=100_000, seconds=1.5
):
    """Rows of one expert: ``outcomes`` = (correct, radius) per image; radius 0 & wrong = abstain."""
    records = []
    for index, (correct, radius) in enumerate(outcomes):
        abstained = (not correct) and radius == 0.0
        records.append(
            {
                "run_id": f"{model_id}-{protocol}",
                "protocol": protocol,
                "dataset": dataset,
                "split": "test",
                "index": index,
                "label": index % 10,
                "model_id": model_id,
                "kind": "expert",
                "sigma": sigma,
                "n0": 100,
                "n": n,
                "alpha": 0.001,
                "prediction": -1 if abstained else (index % 10 if correct else (index + 1) % 10),
                "abstained": abstained,
                "correct": correct,
                "radius": radius,
                "seconds": seconds,
            }
        )
    return pd.DataFrame.from_records(records)


def dual_rows(model_id="dual-a", protocol="cohen", dataset="cifar10"):
    """Eight dual rows: router choices 0, 1, 2 and one router abstention."""
    outcomes = [
        (True, 0.3),
        (True, 0.9),
        (True, 0.5),
        (False, 0.0),
        (True, 1.2),
        (True, 0.1),
        (False, 0.4),
        (True, 0.8),
    ]
    df = expert_rows(
        model_id, 0.25, outcomes, protocol=protocol, dataset=dataset, n=10_000, seconds=2.5
    )
    df["kind"] = "dual"
    df["router_choice"] = pd.array([0, 1, 1, -1, 2, 0, 1, 2], dtype="Int64")
    df["expert_id"] = [
        ["e-s0.25", "e-s0.50", "e-s1.00"][c] if c >= 0 else None for c in df["router_choice"]
    ]
    df["sigma"] = [[0.25, 0.5, 1.0][c] if c >= 0 else np.nan for c in df["router_choice"]]
    df["router_radius"] = [0.5, 1.0, 0.6, 0.0, 1.2, 0.2, 0.9, 0.8]
    df["expert_radius"] = [0.3, 0.9, 0.5, np.nan, 1.4, 0.1, 0.4, 1.1]
    return df


E1 = [
    (True, 0.6),
    (True, 0.3),
    (True, 0.25),
    (False, 0.0),
    (True, 0.1),
    (False, 0.7),
    (True, 0.9),
    (True, 0.2),
]
E2 = [
    (True, 1.2),
    (False, 0.0),
    (True, 0.5),
    (True, 1.6),
    (False, 0.0),
    (True, 0.2),
    (False, 0.0),
    (True, 0.75),
]


def write_run(directory: Path, df: pd.DataFrame, **info) -> Path:
    """Write ``df`` as one run directory: a part file with pyarrow per the results schema, and a
    run.json with ``info`` (e.g. status, num_indices) added."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    results = pytest.importorskip("rsbench.results")
    df = df.assign(run_id=directory.name)  # rows carry their run's id, as rsbench writes them
    arrays = []
    for field in results.SCHEMA:
        if field.name in df.columns:
            values = [None if v is None or v is pd.NA or v != v else v for v in df[field.name]]
            arrays.append(pa.array(values, type=field.type))
        else:
            arrays.append(pa.nulls(len(df), type=field.type))
    directory.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_arrays(arrays, schema=results.SCHEMA), directory / "part-0-000000.parquet"
    )
    (directory / "run.json").write_text(
        json.dumps(
            {"run_id": directory.name, "format_version": results.RESULTS_FORMAT_VERSION, **info}
        ),
        encoding="utf-8",
    )
    return directory


def invoke(*args):
    from click.testing import CliRunner

    from rsbench.cli.main import main_group

    return CliRunner().invoke(main_group, list(args), catch_exceptions=True)

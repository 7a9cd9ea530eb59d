"""Head-to-head comparison (rsbench.report.headtohead, ``rsbench compare``) on hand-made result rows."""

from __future__ import annotations

import pandas as pd
import pytest

from rsbench.errors import ResultsError
from rsbench.report import headtohead


def _rows(model, kind, sigma, indices, radius, correct=True, **extra):
    n = len(indices)
    base = {
        "run_id": model,
        "protocol": "p",
        "dataset": "fashion-mnist",
        "split": "test",
        "index": pd.array(indices, dtype="Int64"),
        "label": pd.array([0] * n, dtype="Int64"),
        "model_id": model,
        "kind": kind,
        "sigma": sigma,
        "n0": pd.array([10] * n, dtype="Int64"),
        "n": pd.array([100] * n, dtype="Int64"),
        "alpha": 0.001,
        "prediction": pd.array([0] * n, dtype="Int64"),
        "abstained": pd.array([False] * n, dtype="boolean"),
        "correct": pd.array([correct] * n, dtype="boolean"),
        "radius": radius,
        "seconds": 0.01,
    }
    base.update(extra)
    return pd.DataFrame(base)


def test_models_are_compared_on_common_images_with_their_costs() -> None:
    df = pd.concat(
        [
            _rows("a", "expert", 0.25, [0, 1, 2, 3], [0.3, 0.3, 0.1, 0.1]),
            _rows("b", "expert", 1.0, [0, 1, 2], [1.0, 0.0, 1.0]),
            _rows(
                "c",
                "cascade",
                1.0,
                [0, 1, 2],
                [0.5, 0.5, 0.5],
                samples=pd.array([110, 220, 330], dtype="Int64"),
                stage_sigmas=[[1.0, 0.25, 0.1]] * 3,
            ),
            _rows(
                "d",
                "dual",
                0.25,
                [1, 2],
                [0.2, 0.2],
                router_n0=pd.array([10, 10], dtype="Int64"),
                router_n=pd.array([100, 100], dtype="Int64"),
                expert_nA=pd.array([90, pd.NA], dtype="Int64"),
            ),
        ],
        ignore_index=True,
    )
    table = headtohead.compare(df, [0.0, 0.25, 0.75])
    assert table.attrs["images"] == 2  # images 1 and 2 only: model d lacks 0, b-d lack 3
    by = table.set_index("model")
    assert list(table["kind"]) == ["expert", "expert", "envelope", "oracle", "dual", "cascade"]
    assert by.loc["a", "ca@0.25"] == 0.5 and by.loc["b", "ca@0.75"] == 0.5
    assert by.loc["envelope of the experts", "ca@0.25"] == 0.5
    assert by.loc["oracle of the experts", "ca@0.25"] == 1.0  # b covers 2, a covers 1
    assert by.loc["c", "mean_samples"] == 275 and by.loc["c", "max_samples"] == 330
    assert by.loc["c", "bound_samples"] == 330
    assert by.loc["d", "mean_samples"] == 165 and by.loc["d", "bound_samples"] == 220
    assert by.loc["a", "mean_samples"] == 110
    assert by.loc["c", "largest_shortfall"] == 0.5 and by.loc["c", "shortfall_at"] == 0.75
    text = headtohead.to_markdown(table)
    assert "2 common images" in text and "| c | cascade |" in text
    fig = headtohead.plot(table)
    assert len(fig.axes) == 2


def test_mixed_budgets_and_disjoint_images_are_refused() -> None:
    a = _rows("a", "expert", 0.25, [0, 1], [0.1, 0.1])
    b = _rows("b", "expert", 0.5, [0, 1], [0.1, 0.1])
    b["n"] = pd.array([200, 200], dtype="Int64")
    with pytest.raises(ResultsError, match="one dataset and one"):
        headtohead.compare(pd.concat([a, b], ignore_index=True))
    c = _rows("c", "expert", 0.5, [5, 6], [0.1, 0.1])
    with pytest.raises(ResultsError, match="share no certified image"):
        headtohead.compare(pd.concat([a, c], ignore_index=True))

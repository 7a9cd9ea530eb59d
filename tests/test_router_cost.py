"""The cost column of ``rsbench compare``: a router that runs the experts costs their forwards."""

from __future__ import annotations

import json

import pandas as pd
from test_headtohead import _rows

from rsbench.report import headtohead


def _dual(router_id: str) -> pd.DataFrame:
    return _rows(
        "d-" + router_id,
        "dual",
        0.25,
        [0, 1],
        [0.2, 0.2],
        router_id=[router_id] * 2,
        router_n0=pd.array([10, 10], dtype="Int64"),
        router_n=pd.array([100, 100], dtype="Int64"),
        expert_nA=pd.array([90, pd.NA], dtype="Int64"),
    )


def test_router_over_experts_costs_their_forwards(tmp_path) -> None:
    df = pd.concat(
        [_rows("a", "expert", 0.25, [0, 1], [0.3, 0.3]), _dual("pix"), _dual("over3")],
        ignore_index=True,
    )
    # run.json files record the router entries; compare reads the router input from them
    for name, entry in (
        ("pix", {"id": "pix", "kind": "router"}),
        (
            "over3",
            {
                "id": "over3",
                "kind": "router",
                "router_input": {"type": "experts", "experts": ["x", "y", "z"]},
            },
        ),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"models": [{"entry": entry}]}))
    forwards = headtohead.router_forwards_of([str(tmp_path)])
    assert forwards == {"pix": 1.0, "over3": 3.0}
    table = headtohead.compare(df, [0.0], forwards).set_index("model")
    # expert: 110 forwards = 1.00x; pixel router: 110 + 110 = 2.00x worst; over three experts:
    # 3 x 110 router forwards + 110 expert forwards = 440 = 4.00x (the image it routed)
    assert table.loc["a", "cost_ratio"] == 1.0
    assert table.loc["d-pix", "max_cost"] == 220 and table.loc["d-pix", "cost_ratio"] == 2.0
    assert table.loc["d-over3", "max_cost"] == 440 and table.loc["d-over3", "cost_ratio"] == 4.0
    assert table.loc["d-over3", "mean_cost"] == (440 + 330) / 2  # one image ran no expert
    assert table.loc["d-over3", "max_samples"] == 220  # the samples column is unchanged
    text = headtohead.to_markdown(headtohead.compare(df, [0.0], forwards))
    assert "worst cost (x one expert)" in text and "| 4.00x |" in text

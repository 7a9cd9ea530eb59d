"""Known-answer tests for rsbench.report.metrics (certified accuracy, ACR, envelope, oracle, routers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rsbench.errors import ResultsError
from rsbench.report import metrics


def rows(
    model_id: str,
    sigma: float | None,
    outcomes: list[tuple[int, bool, float]],
    *,
    protocol: str = "cohen",
    dataset: str = "cifar10",
    kind: str = "expert",
    n: int = 100_000,
    alpha: float = 0.001,
    seconds: float = 1.0,
    run_id: str = "run-a",
) -> pd.DataFrame:
    """Rows of one model: ``outcomes`` = (prediction, correct, radius) per image index 0, 1, ..."""
    records = []
    for index, (prediction, correct, radius) in enumerate(outcomes):
        records.append(
            {
                "run_id": run_id,
                "protocol": protocol,
                "dataset": dataset,
                "split": "test",
                "index": index,
                "label": 1,
                "model_id": model_id,
                "kind": kind,
                "sigma": sigma,
                "n0": 100,
                "n": n,
                "alpha": alpha,
                "prediction": prediction,
                "abstained": prediction == -1,
                "correct": correct,
                "radius": radius,
                "seconds": seconds,
            }
        )
    return pd.DataFrame.from_records(records)


# Five images: correct r=0.5, correct r=0.25 (exactly on the grid), wrong with a large radius,
# abstained, correct with radius 0.
HAND = [(1, True, 0.5), (1, True, 0.25), (3, False, 0.9), (-1, False, 0.0), (1, True, 0.0)]


def test_certified_accuracy_known_answer():
    df = rows("m", 0.25, HAND)
    got = metrics.certified_accuracy(df, [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(got, [3 / 5, 2 / 5, 1 / 5, 0.0])


def test_radius_exactly_equal_counts_and_just_above_does_not():
    df = rows("m", 0.25, [(1, True, 0.25)])
    assert metrics.certified_accuracy(df, [0.25])[0] == 1.0
    assert metrics.certified_accuracy(df, [np.nextafter(0.25, 1.0)])[0] == 0.0


def test_abstention_counts_as_wrong_even_if_flagged_correct():
    # A malformed row (abstained but correct=True) must still not count.
    df = rows("m", 0.25, [(-1, False, 0.0), (1, True, 0.3)])
    df.loc[0, "correct"] = True
    assert metrics.clean_accuracy(df) == 0.5


def test_order_of_radii_is_kept():
    df = rows("m", 0.25, HAND)
    np.testing.assert_allclose(metrics.certified_accuracy(df, [0.5, 0.0]), [1 / 5, 3 / 5])


def test_clean_abstain_acr_seconds():
    df = rows("m", 0.25, HAND, seconds=2.0)
    assert metrics.clean_accuracy(df) == pytest.approx(0.6)
    assert metrics.abstain_rate(df) == pytest.approx(0.2)
    assert metrics.acr(df) == pytest.approx((0.5 + 0.25 + 0.0) / 5)
    assert metrics.seconds_per_image(df) == pytest.approx(2.0)
    assert np.isnan(metrics.seconds_per_image(df.drop(columns=["seconds"])))


def test_abstain_rate_without_abstained_column_uses_prediction():
    df = rows("m", 0.25, HAND).drop(columns=["abstained"])
    assert metrics.abstain_rate(df) == pytest.approx(0.2)


def test_nullable_dtypes_as_read_from_parquet():
    df = rows("m", 0.25, HAND)
    df["correct"] = df["correct"].astype("boolean")
    df["abstained"] = df["abstained"].astype("boolean")
    df["n"] = df["n"].astype("Int64")
    df.loc[4, "correct"] = pd.NA
    np.testing.assert_allclose(metrics.certified_accuracy(df, [0.0]), [2 / 5])
    summary = metrics.summarize(df, [0.0])
    assert summary.loc[0, "n"] == 100_000


def test_default_radius_grids():
    np.testing.assert_allclose(metrics.default_radii("cifar10"), np.arange(0, 2.01, 0.25))
    np.testing.assert_allclose(metrics.default_radii("imagenet"), np.arange(0, 3.01, 0.5))
    np.testing.assert_allclose(metrics.default_radii("fashion-mnist"), np.arange(0, 2.01, 0.25))
    assert len(metrics.default_radii("cifar10")) == 9
    assert len(metrics.default_radii("imagenet")) == 7
    np.testing.assert_allclose(metrics.default_radii("something-else"), np.arange(0, 2.01, 0.25))


def test_parse_radii():
    np.testing.assert_allclose(metrics.parse_radii("0,0.25, 0.5"), [0, 0.25, 0.5])
    np.testing.assert_allclose(metrics.parse_radii("0.5,0"), [0, 0.5])
    np.testing.assert_allclose(metrics.parse_radii("0:1:0.25"), [0, 0.25, 0.5, 0.75, 1.0])
    for bad in ("a,b", "-1,0", "0:1", "", "0:1:0"):
        with pytest.raises(ResultsError):
            metrics.parse_radii(bad)


def test_summarize_groups_by_model_sigma_protocol():
    df = pd.concat(
        [
            rows("m", 0.25, HAND),
            rows("m", 0.5, [(1, True, 1.0)] * 5),
            rows("m", 0.25, [(1, True, 1.0)] * 2, protocol="cpu-smoke", n=1000),
        ],
        ignore_index=True,
    )
    summary = metrics.summarize(df, [0.0, 0.5])
    assert len(summary) == 3
    got = {(r.protocol, r.sigma): r.images for r in summary.itertuples()}
    assert got == {("cohen", "0.25"): 5, ("cohen", "0.50"): 5, ("cpu-smoke", "0.25"): 2}
    row = summary[(summary.protocol == "cohen") & (summary.sigma == "0.25")].iloc[0]
    assert row["ca@0"] == pytest.approx(0.6)
    assert row["ca@0.5"] == pytest.approx(0.2)
    assert row["n"] == 100_000 and row["alpha"] == 0.001


def test_dual_rows_group_under_one_sigma_key():
    dual = rows("dual-x", 0.25, [(1, True, 0.3), (1, True, 0.6), (-1, False, 0.0)], kind="dual")
    dual.loc[1, "sigma"] = 0.5
    dual.loc[2, "sigma"] = np.nan  # router abstained
    summary = metrics.summarize(dual, [0.0, 0.5])
    assert len(summary) == 1
    assert summary.loc[0, "sigma"] == "dual 0.25/0.50"
    assert summary.loc[0, "sigma_key"] == "dual"
    assert summary.loc[0, "ca@0.5"] == pytest.approx(1 / 3)


def test_duplicate_images_in_one_group_are_refused():
    df = pd.concat([rows("m", 0.25, HAND, run_id="a"), rows("m", 0.25, HAND, run_id="b")])
    with pytest.raises(ResultsError, match="more than once.*runs: a, b"):
        metrics.summarize(df, [0.0])


def test_missing_columns_are_named():
    with pytest.raises(ResultsError, match="radius"):
        metrics.certified_accuracy(pd.DataFrame({"correct": [True]}), [0.0])


def test_envelope_is_per_radius_max_over_models():
    a = rows("m", 0.25, [(1, True, 0.3), (1, True, 0.3), (1, True, 0.3), (-1, False, 0)])
    b = rows("m", 1.0, [(1, True, 1.5), (1, True, 0.1), (2, False, 0), (-1, False, 0)])
    env = metrics.envelope(pd.concat([a, b]), [0.0, 0.25, 0.5, 1.0])
    # a: 3/4, 3/4, 0, 0 ; b: 2/4, 1/4, 1/4, 1/4
    np.testing.assert_allclose(env, [0.75, 0.75, 0.25, 0.25])


def test_oracle_is_per_image_best_expert_and_bounds_the_envelope():
    a = rows("m", 0.25, [(1, True, 0.3), (1, True, 0.3), (1, True, 0.3), (-1, False, 0)])
    b = rows("m", 1.0, [(1, True, 1.5), (1, True, 0.1), (2, False, 0), (1, True, 0.6)])
    both = pd.concat([a, b])
    radii = [0.0, 0.25, 0.5, 1.0, 2.0]
    orc, images = metrics.oracle(both, radii)
    # per-image best credited radius: 1.5, 0.3, 0.3, 0.6
    np.testing.assert_allclose(orc, [1.0, 1.0, 0.5, 0.25, 0.0])
    assert images == 4
    assert np.all(orc >= metrics.envelope(both, radii) - 1e-12)


def test_oracle_uses_images_common_to_all_models(caplog):
    caplog.set_level("INFO", logger="rsbench.report.metrics")
    a = rows("m", 0.25, [(1, True, 0.3), (1, True, 0.3), (1, True, 0.3)])
    b = rows("m", 1.0, [(2, False, 0.0), (2, False, 0.0)])
    orc, images = metrics.oracle(pd.concat([a, b]), [0.0])
    assert images == 2
    np.testing.assert_allclose(orc, [1.0])
    assert "uses the 2 images" in caplog.text


def test_router_choice_frequencies():
    dual = rows("dual-x", 0.25, [(1, True, 0.3)] * 4 + [(-1, False, 0.0)], kind="dual")
    dual["router_choice"] = [0, 0, 1, 1, -1]
    dual["router_choice"] = dual["router_choice"].astype("Int64")
    dual["expert_id"] = ["e0", "e0", "e1", "e1", None]
    dual["sigma"] = [0.25, 0.25, 0.5, 0.5, np.nan]
    expert = rows("e0", 0.25, [(1, True, 0.3)])
    freq = metrics.router_choice_frequencies(pd.concat([dual, expert], ignore_index=True))
    assert list(freq["router_choice"]) == [-1, 0, 1]
    assert list(freq["expert_id"]) == ["router abstained", "e0", "e1"]
    np.testing.assert_allclose(freq["fraction"], [0.2, 0.4, 0.4])
    assert list(freq["count"]) == [1, 2, 2]
    assert freq["fraction"].sum() == pytest.approx(1.0)
    assert metrics.router_choice_frequencies(expert).empty


def test_sections_are_protocol_dataset_pairs():
    df = pd.concat(
        [rows("a", 0.25, HAND), rows("b", 0.5, HAND, dataset="imagenet", protocol="imported")]
    )
    assert metrics.sections(df) == [("cohen", "cifar10"), ("imported", "imagenet")]

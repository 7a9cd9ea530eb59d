"""The protocol registry (rsbench/protocols.yaml + rsbench.data.protocols): loading, validation, use."""

from __future__ import annotations

import pandas as pd
import pytest

from rsbench.data import protocols
from rsbench.errors import ConfigError


def test_packaged_table_loads_with_the_published_numbers() -> None:
    assert list(protocols.PROTOCOLS) == [
        "cohen",
        "dualrs",
        "cpu",
        "cohen-full",
        "cohen-alpha0.01",
        "cohen-seq",
        "cpu-seq",
    ]
    cohen = protocols.get_protocol("cohen")
    assert (cohen.n0, cohen.n, cohen.alpha) == (100, 100_000, 0.001)
    assert cohen.subset_for("cifar10") == protocols.Subset("test", stride=20)
    assert protocols.get_protocol("cpu").subset_for("svhn") == protocols.Subset("test", stride=40)
    assert protocols.get_protocol("cohen-alpha0.01").alpha == 0.01
    with pytest.raises(ConfigError, match="unknown protocol 'nope'; known: cohen"):
        protocols.get_protocol("nope")


def test_protocol_indices() -> None:
    cpu = protocols.get_protocol("cpu")
    assert cpu.indices("fashion-mnist", size=2000) == list(range(0, 2000, 8))
    assert cpu.indices("mnist") == list(range(0, 10_000, 40))
    assert protocols.get_protocol("cohen-full").indices("cifar10", size=30) == list(range(30))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"n0": 100, "n": 1000}, "missing \\['alpha'\\]"),
        ({"n0": 100, "n": 1000, "alpha": 0.001, "samples": 3}, "unknown \\['samples'\\]"),
        ({"n0": 100, "n": "1000", "alpha": 0.001}, "n='1000' is not an integer"),
        ({"n0": 100, "n": 1000, "alpha": 1.5}, "alpha=1.5"),
        ({"n0": 100, "n": 1000, "alpha": 0.001, "subsets": {"x": {"stride": 0}}}, "stride=0"),
        ({"n0": 100, "n": 1000, "alpha": 0.001, "default_subset": {"every": 2}}, "default_subset"),
    ],
)
def test_a_malformed_table_is_one_error_naming_the_entry(entry, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        protocols.parse_protocols({"mine": entry}, "my.yaml")
    assert str(info.value).startswith("my.yaml: protocol 'mine'")


def test_custom_is_reserved() -> None:
    with pytest.raises(ConfigError, match="other than 'custom'"):
        protocols.parse_protocols({"custom": {"n0": 1, "n": 2, "alpha": 0.1}})


def _rows(protocol: str, n: int, indices) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model_id": "m",
            "protocol": protocol,
            "dataset": "cifar10",
            "split": "test",
            "n0": 100,
            "n": n,
            "alpha": 0.001,
            "index": list(indices),
        }
    )


def test_first_deviation_finds_rows_under_a_name_they_do_not_follow() -> None:
    assert protocols.first_deviation(_rows("cohen", 100_000, [0, 20, 40])) is None
    assert protocols.first_deviation(_rows("custom", 5, [1, 2])) is None
    message = protocols.first_deviation(_rows("cohen", 100_000, [0, 21]))
    assert message is not None and "rows of m recorded under protocol 'cohen'" in message
    assert "sample index 21" in message
    assert "n=1000" in protocols.first_deviation(_rows("cohen", 1000, [0]))


def test_leaderboard_warns_about_rows_under_a_protocol_they_deviate_from(caplog) -> None:
    from rsbench import report

    frame = _rows("cohen", 1000, [0, 20]).assign(
        kind="expert", sigma=0.25, label=1, prediction=1, radius=0.1, correct=True
    )
    with caplog.at_level("WARNING", logger="rsbench.report"):
        report.build_leaderboards(frame, radii=[0.0])
    assert "deviate from it: n0=100, n=1000" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="rsbench.report"):
        report.build_leaderboards(frame.assign(protocol="custom"), radii=[0.0])
    assert "deviate" not in caplog.text


def test_rows_of_the_embedded_subset_fit_the_cpu_protocol() -> None:
    # The embedded default run records its samples as fashion-mnist/test (their source split):
    # the cpu protocol's fashion-mnist/embedded subset is the first 2,000 of those.
    from rsbench.data.catalog import EMBEDDED_SIZE

    def rows(indices: list[int]) -> pd.DataFrame:
        return _rows("cpu", 1000, indices).assign(dataset="fashion-mnist")

    assert protocols.first_deviation(rows([0, 8, EMBEDDED_SIZE - 8])) is None
    message = protocols.first_deviation(rows([0, EMBEDDED_SIZE]))
    assert message is not None and f"sample index {EMBEDDED_SIZE}" in message
    assert "split 'train'" in protocols.first_deviation(rows([0]).assign(split="train"))

"""Import of published Cohen-format logs (real SmoothAdv/Cohen files in ../shared/data)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from rsbench.errors import ResultsError
from rsbench.results import import_cohen_log, parse_log_time, read_results, read_run_json
from rsbench.stats import certified_radius, counts_from_radii

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LOGS = DATA / "reference_logs" / "smoothadv_mit"
needs_logs = pytest.mark.skipif(
    not LOGS.is_dir(), reason=f"reference logs not found at {LOGS} (../shared/data is not present)"
)

RADII = [0.0, 0.25, 0.5, 0.75, 1.0]
# DESIGN.md §3: Cohen's CIFAR-10 ResNet-110 experts, certified accuracy (%) at RADII.
QUOTED = {
    "0.25": [76.6, 61.2, 42.2, 25.1, 0.0],
    "0.50": [65.7, 54.9, 42.8, 32.5, 22.0],
    "1.00": [47.1, 40.9, 33.8, 27.7, 22.1],
}


@functools.cache
def _cifar(sigma: str):
    path = LOGS / "cifar10" / "cohen_resnet110" / f"noise_{sigma}" / f"test_sigma_{sigma}.tsv"
    return import_cohen_log(
        path,
        dataset="cifar10",
        split="test",
        model_id=f"cohen-cifar10-resnet110-s{sigma}",
        sigma=float(sigma),
        n0=100,
        n=100_000,
        alpha=0.001,
        protocol="cohen-full",
    )


@needs_logs
@pytest.mark.parametrize("sigma", sorted(QUOTED))
def test_cifar10_reference_logs_reproduce_quoted_certified_accuracy(sigma):
    df = _cifar(sigma)
    assert len(df) == 10_000
    assert list(df["index"]) == list(range(10_000))
    for radius, quoted in zip(RADII, QUOTED[sigma]):
        value = 100.0 * float(((df["correct"]) & (df["radius"] >= radius)).mean())
        # quoted to one decimal: the exact value lies within half a unit of it
        assert abs(value - quoted) <= 0.05 + 1e-9, (sigma, radius, value, quoted)


@needs_logs
def test_reconstructed_counts_print_the_logged_radius_and_are_the_smallest():
    df = _cifar("0.50")
    answered = df[~df["abstained"]]
    nA = answered["nA"].to_numpy(dtype=np.int64)
    radii = certified_radius(nA, 100_000, 0.001, 0.5)
    printed = np.array([float(f"{r:.3g}") for r in radii])
    np.testing.assert_array_equal(printed, answered["radius"].to_numpy())
    # one count less prints a different (smaller) radius: nA is the smallest consistent count
    smaller = np.array([float(f"{r:.3g}") for r in certified_radius(nA - 1, 100_000, 0.001, 0.5)])
    assert np.all(smaller < answered["radius"].to_numpy())
    lowest, highest = counts_from_radii(answered["radius"].to_numpy(), 0.5, 100_000, 0.001)
    np.testing.assert_array_equal(lowest, nA)
    assert np.all(highest >= lowest)
    # abstentions keep unknown counts null, predictions become cA
    abstained = df[df["abstained"]]
    assert abstained["nA"].isna().all() and abstained["cA"].isna().all()
    assert (abstained["prediction"] == -1).all() and (abstained["radius"] == 0).all()
    assert (answered["cA"] == answered["prediction"]).all()
    assert df["count0"].isna().all() and df["counts"].isna().all()
    assert answered["pA_lower"].min() >= 0.5


@needs_logs
def test_h_mm_ss_times_parse_to_seconds():
    df = _cifar("0.25")
    # first row of the file: 0:00:14.172309
    assert df["seconds"].iloc[0] == pytest.approx(14.172309)
    assert 10 < df["seconds"].mean() < 20


def test_time_formats():
    assert parse_log_time("0:02:31.238689") == pytest.approx(151.238689)
    assert parse_log_time("1:00:00") == 3600.0
    assert parse_log_time("1 day, 0:00:01.5") == pytest.approx(86401.5)
    assert parse_log_time("3.25") == 3.25
    assert parse_log_time("12") == 12.0
    with pytest.raises(ResultsError):
        parse_log_time("soon")


def _write_log(path: Path, rows: list[str]) -> Path:
    path.write_text(
        "idx\tlabel\tpredict\tradius\tcorrect\ttime\n" + "".join(r + "\n" for r in rows)
    )
    return path


def test_plain_seconds_log_and_known_counts(tmp_path):
    # radii produced by known counts, printed like Cohen's code ("{:.3}")
    n, alpha, sigma = 1000, 0.001, 0.5
    counts = [1000, 900, 700]
    radii = [f"{r:.3}" for r in certified_radius(np.array(counts), n, alpha, sigma)]
    log = _write_log(
        tmp_path / "log.tsv",
        [
            f"0\t3\t3\t{radii[0]}\t1\t0.5",
            f"5\t1\t2\t{radii[1]}\t0\t1.25",
            f"10\t4\t4\t{radii[2]}\t1\t2",
            "15\t7\t-1\t0.0\t0\t0.75",
        ],
    )
    df = import_cohen_log(
        log,
        dataset="fashion-mnist",
        split="test",
        model_id="m",
        sigma=sigma,
        n0=10,
        n=n,
        alpha=alpha,
        protocol="x",
    )
    assert list(df["seconds"]) == [0.5, 1.25, 2.0, 0.75]
    assert list(df["correct"]) == [True, False, True, False]
    lowest, highest = counts_from_radii([float(r) for r in radii], sigma, n, alpha)
    assert list(df["nA"][:3]) == list(lowest)
    for count, lo, hi in zip(counts, lowest, highest):
        assert lo <= count <= hi
    assert df["nA"][0] == 1000  # the cap is printed by one count only
    assert bool(df["abstained"][3]) and df["prediction"][3] == -1


def test_malformed_logs_are_clear_errors(tmp_path):
    kwargs = dict(
        dataset="d", split="s", model_id="m", sigma=0.5, n0=10, n=1000, alpha=0.001, protocol="p"
    )
    bad_header = tmp_path / "h.tsv"
    bad_header.write_text("a\tb\n")
    with pytest.raises(ResultsError, match="header"):
        import_cohen_log(bad_header, **kwargs)
    wrong_correct = _write_log(tmp_path / "c.tsv", ["0\t3\t3\t0.5\t0\t1.0"])
    with pytest.raises(ResultsError, match="correct"):
        import_cohen_log(wrong_correct, **kwargs)
    impossible = _write_log(tmp_path / "r.tsv", ["0\t3\t3\t9.99\t1\t1.0"])
    with pytest.raises(ResultsError, match="cannot come from any count"):
        import_cohen_log(impossible, **kwargs)
    with pytest.raises(ResultsError, match="does not exist"):
        import_cohen_log(tmp_path / "missing.tsv", **kwargs)


@needs_logs
def test_import_logs_command_writes_a_readable_run(tmp_path):
    from click.testing import CliRunner

    from rsbench.commands.results import import_logs

    log = LOGS / "cifar10" / "cohen_resnet110" / "noise_0.25" / "test_sigma_0.25.tsv"
    out = tmp_path / "results"
    result = CliRunner().invoke(
        import_logs,
        [
            str(log),
            "--dataset",
            "cifar10",
            "--split",
            "test",
            "--model-id",
            "cohen-cifar10-resnet110-s0.25",
            "--sigma",
            "0.25",
            "--n0",
            "100",
            "--n",
            "100000",
            "--alpha",
            "0.001",
            "--protocol",
            "cohen-full",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    df = read_results(out)
    assert len(df) == 10_000
    run_dirs = sorted({p.parent for p in out.rglob("run.json")})
    info = read_run_json(run_dirs[0])
    assert info["source"]["sha256"] and info["import"]["rows_with_ambiguous_count"] > 0
    assert abs(100 * float(df["correct"].mean()) - 76.6) <= 0.05 + 1e-9


@needs_logs
def test_imagenet_logs_import_with_their_alpha():
    # Cohen's ImageNet logs print radii up to 3.91 sigma, above the 3.81 sigma cap of n = 100,000 at
    # alpha = 0.001: every printed radius fits n = 100,000 at alpha = 0.01, so import them with that.
    path = LOGS / "imagenet" / "cohen_resnet50" / "noise_0.25" / "test_sigma_0.25.tsv"
    kwargs = dict(
        dataset="imagenet",
        split="val",
        model_id="cohen-imagenet-resnet50-s0.25",
        sigma=0.25,
        n0=100,
        n=100_000,
        protocol="cohen",
    )
    with pytest.raises(ResultsError, match="cannot come from any count"):
        import_cohen_log(path, alpha=0.001, **kwargs)
    df = import_cohen_log(path, alpha=0.01, **kwargs)
    assert len(df) == 427 and df["index"].iloc[1] == 100
    assert df["seconds"].iloc[0] == pytest.approx(151.238689)

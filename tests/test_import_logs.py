"""Import of published Cohen-format logs (real SmoothAdv/Cohen files, copies in tests/data)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from rsbench.engine.stats import certified_radius, counts_from_radii
from rsbench.errors import ConfigError, ResultsError
from rsbench.results.importers import import_cohen_log, parse_log_time
from rsbench.results.rescore import rescore_frame
from rsbench.results.storage import read_results, read_run_json

#: the published logs, gzipped copies in tests/data (MIT; tests/data/README.md)
LOGS = Path(__file__).resolve().parent / "data" / "reference_logs" / "smoothadv_mit"

RADII = [0.0, 0.25, 0.5, 0.75, 1.0]
# DESIGN.md §3: Cohen's CIFAR-10 ResNet-110 experts, certified accuracy (%) at RADII.
QUOTED = {
    "0.25": [76.6, 61.2, 42.2, 25.1, 0.0],
    "0.50": [65.7, 54.9, 42.8, 32.5, 22.0],
    "1.00": [47.1, 40.9, 33.8, 27.7, 22.1],
}


@functools.cache
def _cifar(sigma: str, radius_from: str = "count"):
    path = LOGS / "cifar10" / "cohen_resnet110" / f"noise_{sigma}" / f"test_sigma_{sigma}.tsv.gz"
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
        radius_from=radius_from,
    )


@pytest.mark.parametrize("sigma", sorted(QUOTED))
def test_cifar10_reference_logs_reproduce_quoted_certified_accuracy(sigma):
    df = _cifar(sigma, "printed")  # the authors' own numbers come from the printed radii
    assert len(df) == 10_000
    assert list(df["index"]) == list(range(10_000))
    for radius, quoted in zip(RADII, QUOTED[sigma]):
        value = 100.0 * float(((df["correct"]) & (df["radius"] >= radius)).mean())
        # quoted to one decimal: the exact value lies within half a unit of it
        assert abs(value - quoted) <= 0.05 + 1e-9, (sigma, radius, value, quoted)


def test_reconstructed_counts_print_the_logged_radius_and_are_the_smallest():
    df = _cifar("0.50", "printed")
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
        protocol="custom",
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
        dataset="d",
        split="s",
        model_id="m",
        sigma=0.5,
        n0=10,
        n=1000,
        alpha=0.001,
        protocol="custom",
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


def test_import_logs_command_writes_a_readable_run(tmp_path):
    from click.testing import CliRunner

    from rsbench.cli.results import import_logs

    log = LOGS / "cifar10" / "cohen_resnet110" / "noise_0.25" / "test_sigma_0.25.tsv.gz"
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
    assert Path(info["source"]["path"]).resolve() == log  # relative to the working directory


def test_recorded_source_path_is_relative_under_the_working_directory(tmp_path, monkeypatch):
    """A result made from a checkout names its source the same way in every clone."""
    from rsbench.results.provenance import recorded_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").mkdir()
    assert recorded_path(tmp_path / "logs" / "a.tsv") == "logs/a.tsv"
    assert recorded_path("logs/../logs/a.tsv") == "logs/a.tsv"
    (tmp_path / "linked").symlink_to(tmp_path.parent)  # under the working directory by a link
    assert recorded_path(tmp_path / "linked" / "x.tsv") == "linked/x.tsv"
    outside = tmp_path.parent / "elsewhere.tsv"
    assert recorded_path(outside) == str(outside.resolve())


def test_imagenet_logs_import_with_their_alpha():
    # Cohen's ImageNet logs print radii up to 3.91 sigma, above the 3.81 sigma cap of n = 100,000 at
    # alpha = 0.001: every printed radius fits n = 100,000 at alpha = 0.01, so import them with that.
    path = LOGS / "imagenet" / "cohen_resnet50" / "noise_0.25" / "test_sigma_0.25.tsv.gz"
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
    # alpha = 0.01 is not the cohen protocol: that name is refused, the named variant recorded
    with pytest.raises(ConfigError, match="deviate from protocol 'cohen'.*cohen-alpha0.01"):
        import_cohen_log(path, alpha=0.01, **kwargs)
    df = import_cohen_log(path, alpha=0.01, **{**kwargs, "protocol": None})
    assert set(df["protocol"]) == {"cohen-alpha0.01"}
    assert len(df) == 427 and df["index"].iloc[1] == 100
    assert df["seconds"].iloc[0] == pytest.approx(151.238689)


def test_imported_radius_is_recomputed_from_the_count_and_rescoring_reproduces_it():
    counted, printed = _cifar("0.50"), _cifar("0.50", "printed")
    answered = ~counted["abstained"].to_numpy(dtype=bool)
    nA = counted["nA"].to_numpy(dtype="float64")[answered]
    expected = certified_radius(nA.astype(np.int64), 100_000, 0.001, 0.5)
    np.testing.assert_array_equal(counted["radius"].to_numpy()[answered], expected)
    assert counted.attrs["import"]["radius_from"] == "count"
    # conservative: never above the printed radius (which rounds a consistent count's radius)
    half_unit = 0.5 * 10 ** (np.floor(np.log10(np.maximum(expected, 1e-9))) - 2)
    assert np.all(expected <= printed["radius"].to_numpy()[answered] + half_unit)
    assert (counted["radius"] <= printed["radius"] + 0.005).all()
    for radius in (0.25, 0.5, 1.0, 1.75):
        ours = ((counted["correct"]) & (counted["radius"] >= radius)).mean()
        theirs = ((printed["correct"]) & (printed["radius"] >= radius)).mean()
        assert ours <= theirs, radius
    # rescoring an import at its own alpha reproduces it exactly (the default, count-based radius)
    again = rescore_frame(counted, 0.001)
    for column in ("prediction", "abstained", "correct", "nA", "pA_lower", "radius", "protocol"):
        assert again[column].equals(counted[column]), column
    # the printed radii are kept as printed, and rescoring them gives the count-based radii
    assert printed.attrs["import"]["radius_from"] == "printed"
    assert rescore_frame(printed, 0.001)["radius"].equals(counted["radius"])


def test_import_protocol_is_validated_against_the_registry(tmp_path):
    n, alpha, sigma = 1000, 0.001, 0.5
    radius = f"{float(certified_radius(950, n, alpha, sigma)):.3}"
    log = _write_log(tmp_path / "log.tsv", [f"{i}\t3\t3\t{radius}\t1\t0.5" for i in (0, 40, 80)])
    common = dict(dataset="cifar10", split="test", model_id="m", sigma=sigma, n0=100, n=n)
    assert set(import_cohen_log(log, alpha=alpha, **common)["protocol"]) == {"cpu"}
    assert set(import_cohen_log(log, alpha=alpha, protocol="custom", **common)["protocol"]) == {
        "custom"
    }
    radius01 = f"{float(certified_radius(950, n, 0.01, sigma)):.3}"
    log01 = _write_log(tmp_path / "a.tsv", [f"{i}\t3\t3\t{radius01}\t1\t0.5" for i in (0, 40)])
    assert set(import_cohen_log(log01, alpha=0.01, **common)["protocol"]) == {"custom"}
    with pytest.raises(ConfigError, match="deviate from protocol 'cohen': n0=100, n=1000"):
        import_cohen_log(log, alpha=alpha, protocol="cohen", **common)
    with pytest.raises(ConfigError, match="unknown protocol 'imported'"):
        import_cohen_log(log, alpha=alpha, protocol="imported", **common)
    odd = _write_log(tmp_path / "odd.tsv", [f"{i}\t3\t3\t{radius}\t1\t0.5" for i in (0, 41)])
    with pytest.raises(ConfigError, match="sample index 41 .*every 40th image"):
        import_cohen_log(odd, alpha=alpha, protocol="cpu", **common)
    with pytest.raises(ConfigError, match="split 'train'"):
        import_cohen_log(log, alpha=alpha, protocol="cpu", **{**common, "split": "train"})


def test_rescoring_records_the_protocol_the_rows_follow():
    full = _cifar("0.25")
    assert set(full["protocol"]) == {"cohen-full"}
    assert set(rescore_frame(full, 0.001)["protocol"]) == {"cohen-full"}
    assert set(rescore_frame(full, 0.01)["protocol"]) == {
        "custom"
    }  # no full-set alpha=0.01 protocol
    every_20th = full[full["index"] % 20 == 0].reset_index(drop=True)
    assert set(rescore_frame(every_20th, 0.001)["protocol"]) == {"cohen-full"}  # still fits: kept
    assert set(rescore_frame(every_20th, 0.01)["protocol"]) == {"cohen-alpha0.01"}
    imported_as = every_20th.assign(protocol="imported")  # an old import under an unknown name
    assert set(rescore_frame(imported_as, 0.001)["protocol"]) == {"cohen"}

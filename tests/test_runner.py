"""Runner: identity, resume (also after SIGKILL), corrupted parts, shards, concurrency, dual rows."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.tiny_zoo import make_zoo

from rsbench.data import protocols
from rsbench.errors import ConfigError, ResultsError
from rsbench.results.storage import list_parts, read_results, read_run_json
from rsbench.run import distributed, runconfig, runner
from rsbench.zoo.registry import load_zoo

SMALL = dict(protocol="cpu", n0=10, n=100, limit=24, chunk_size=5, batch_size=100)


@pytest.fixture(scope="module")
def zoo(zoo_file):
    return load_zoo([zoo_file])


def _config(zoo, model_id="tiny-s0.25", **overrides):
    kwargs = {**SMALL, **overrides}
    return runconfig.resolve_config(zoo.get(model_id), zoo=zoo, **kwargs)


def _rows(path) -> pd.DataFrame:
    df = read_results(path).drop(columns=["seconds"]).sort_values("index").reset_index(drop=True)
    return df


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b)
    assert a["index"].is_unique and b["index"].is_unique
    pd.testing.assert_frame_equal(a.drop(columns=["run_id"]), b.drop(columns=["run_id"]))


@pytest.fixture(scope="module")
def reference(zoo, tmp_path_factory):
    """An uninterrupted run of each tiny model."""
    out = tmp_path_factory.mktemp("reference")
    frames = {}
    for model_id in ("tiny-s0.25", "tiny-dual"):
        result = runner.run_certification(_config(zoo, model_id), zoo, out)
        assert result.complete and result.written == 24
        frames[model_id] = _rows(result.run_dir)
    return frames


def test_protocols():
    cohen = protocols.PROTOCOLS["cohen"]
    assert (cohen.n0, cohen.n, cohen.alpha) == (100, 100_000, 0.001)
    assert cohen.subset_for("cifar10") == protocols.Subset("test", stride=20)
    assert cohen.subset_for("imagenet") == protocols.Subset("val", stride=100)
    dual = protocols.PROTOCOLS["dualrs"]
    assert (dual.n0, dual.n, dual.alpha) == (100, 10_000, 0.001)
    assert dual.subset_for("cifar10").stride == 1
    assert (
        protocols.PROTOCOLS[runconfig.EMBEDDED_DEFAULT_PROTOCOL].subset_for("fashion-mnist").split
        == "embedded"
    )
    with pytest.raises(ConfigError, match="unknown protocol"):
        protocols.get_protocol("nope")


def test_identity_and_protocol_name(zoo):
    base = _config(zoo)
    assert base.protocol == "custom"  # n0/n/limit differ from the cpu protocol
    named = runconfig.resolve_config(zoo.get("tiny-s0.25"), protocol="cpu")
    assert named.protocol == "cpu" and (named.n0, named.n, named.alpha) == (100, 1000, 0.001)
    assert named.sigma == 0.25 and named.split == "embedded" and named.stride == 8
    # batch size and chunk size do not change results, hence not the run
    assert _config(zoo, batch_size=7, chunk_size=3).run_name() == base.run_name()
    for change in (dict(seed=1), dict(n=101), dict(alpha=0.01), dict(sigma=0.3), dict(limit=23)):
        assert _config(zoo, **change).run_name() != base.run_name(), change
    with pytest.raises(ConfigError, match="either --indices"):
        _config(zoo, indices=[1, 2])
    with pytest.raises(ConfigError, match="dual entry"):
        _config(zoo, "tiny-dual", sigma=0.5)
    with pytest.raises(ConfigError, match="router"):
        runconfig.resolve_config(zoo.get("tiny-router"), zoo=zoo)


def test_rows_carry_the_configuration(zoo, reference):
    df = reference["tiny-s0.25"]
    assert list(df["index"]) == list(range(0, 192, 8))  # embedded subset, stride 8
    assert set(df["dataset"]) == {"fashion-mnist"} and set(df["split"]) == {"test"}
    assert (df["sigma"] == 0.25).all() and (df["n"] == 100).all() and (df["n0"] == 10).all()
    assert (df["protocol"] == "custom").all() and (df["kind"] == "expert").all()
    from rsbench.data.dataset import load_dataset

    labels = load_dataset("fashion-mnist", "embedded").labels
    assert list(df["label"]) == [int(labels[i]) for i in df["index"]]
    assert (df["correct"] == ((df["prediction"] == df["label"]) & ~df["abstained"])).all()
    assert all(int(np.sum(c)) == 100 for c in df["counts"])
    assert (df["nA"] == [c[a] for c, a in zip(df["counts"], df["cA"])]).all()
    assert df["correct"].mean() > 0.5  # the nearest-centroid test model works


def test_dual_rows_follow_the_schema(reference):
    df = reference["tiny-dual"]
    routed = df[df["router_choice"] >= 0]
    abstained_router = df[df["router_choice"] == -1]
    assert len(routed) and (df["kind"] == "dual").all()
    assert (
        routed["expert_id"] == routed["router_choice"].map({0: "tiny-s0.25", 1: "tiny-s0.50"})
    ).all()
    assert (routed["sigma"] == routed["router_choice"].map({0: 0.25, 1: 0.5})).all()
    ok = routed[~routed["abstained"]]
    np.testing.assert_allclose(ok["radius"], np.minimum(ok["router_radius"], ok["expert_radius"]))
    assert (routed["nA"] == routed["expert_nA"]).all()
    assert abstained_router["expert_nA"].isna().all() and abstained_router["abstained"].all()
    assert np.allclose(df["alpha_router"] + df["alpha_expert"], df["alpha"])
    assert (df["router_id"] == "tiny-router").all() and (df["router_n"] == 100).all()


def test_same_config_resumes_and_changed_config_starts_a_new_run(zoo, tmp_path, reference):
    first = runner.run_certification(_config(zoo), zoo, tmp_path)
    again = runner.run_certification(_config(zoo, batch_size=33), zoo, tmp_path)
    assert again.run_dir == first.run_dir and again.written == 0 and again.skipped == 24
    other = runner.run_certification(_config(zoo, seed=5, limit=4), zoo, tmp_path)
    assert other.run_dir != first.run_dir
    assert len(read_results(first.run_dir)) == 24
    info = read_run_json(first.run_dir)
    assert (
        info["status"] == "complete"
        and info["num_rows"] == 24
        and info["identity"].startswith(first.run_dir.name[-12:])
    )
    assert info["zoo_entry"]["id"] == "tiny-s0.25" and len(info["zoo_entry_digest"]) == 64
    assert info["environment"]["versions"]["torch"] and info["started"] and info["finished"]
    assert info["models"][0]["weights_sha256"]


def test_resume_after_lost_and_corrupted_parts_equals_uninterrupted(zoo, tmp_path, reference):
    result = runner.run_certification(_config(zoo), zoo, tmp_path)
    parts = list_parts(result.run_dir)
    assert len(parts) == 5  # 24 samples in chunks of 5
    parts[1].unlink()  # lost chunk
    data = parts[3].read_bytes()
    parts[3].write_bytes(data[: len(data) // 3])  # truncated chunk
    (result.run_dir / ".part-0of1-000009.parquet.123.tmp").write_bytes(b"partial")
    with pytest.raises(ResultsError, match=parts[3].name):
        read_results(result.run_dir)
    resumed = runner.run_certification(_config(zoo), zoo, tmp_path)
    assert resumed.written == 10 and resumed.skipped == 14 and resumed.complete
    assert not list(result.run_dir.glob("*.tmp"))
    assert_same_rows(_rows(result.run_dir), reference["tiny-s0.25"])


def test_shards_together_equal_the_unsharded_run(zoo, tmp_path, reference):
    for model_id in ("tiny-s0.25", "tiny-dual"):
        results = [
            runner.run_certification(_config(zoo, model_id), zoo, tmp_path, shard=(i, 2))
            for i in (0, 1)
        ]
        assert [r.total for r in results] == [12, 12]
        assert not results[0].complete and results[1].complete
        assert {p.name.split("-")[1] for p in list_parts(results[0].run_dir)} == {"0of2", "1of2"}
        assert_same_rows(_rows(results[0].run_dir), reference[model_id])
        assert read_run_json(results[0].run_dir)["status"] == "complete"


def test_shard_parsing_and_torchrun_composition():
    assert distributed.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ConfigError):
            distributed.parse_shard(bad)
    info = distributed.DistInfo(rank=1, world_size=2, local_rank=1)
    assert distributed.combine_shards((0, 1), info) == (1, 2)
    # ranks split shard 1/3 into 1/6 and 4/6: positions p with p % 6 in {1, 4} == p % 3 == 1
    parts = [distributed.combine_shards((1, 3), distributed.DistInfo(r, 2, r)) for r in (0, 1)]
    assert parts == [(1, 6), (4, 6)]
    covered = sorted(p for i, n in parts for p in range(60) if p % n == i)
    assert covered == [p for p in range(60) if p % 3 == 1]
    assert (
        distributed.rank_device("cuda", info) == "cuda:1"
        and distributed.rank_device("cpu", info) == "cpu"
    )
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    assert distributed.dist_info(env) == info and not distributed.dist_info({}).active


_SCRIPT = """
import sys, time
from rsbench.run import runconfig, runner
from rsbench.zoo.registry import load_zoo
zoo = load_zoo([sys.argv[1]])
config = runconfig.resolve_config(zoo.get("tiny-s0.25"), zoo=zoo, protocol="cpu", n0=10, n=100, limit=24,
                               chunk_size=5, batch_size=100)
delay = float(sys.argv[3])
def slow(event):
    print("progress", event.done, flush=True)
    time.sleep(delay)
result = runner.run_certification(config, zoo, sys.argv[2], progress=slow)
print("done", result.written, result.complete, flush=True)
"""


def _spawn(zoo_file, out, delay, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(zoo_file), str(out), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.subprocess
def test_sigkill_then_resume_equals_uninterrupted(zoo, zoo_file, tmp_path, reference):
    out = tmp_path / "out"
    proc = _spawn(zoo_file, out, 0.15, tmp_path)
    deadline = time.time() + 60
    run_dirs: list[Path] = []
    while time.time() < deadline:
        run_dirs = [p.parent for p in out.glob("*/part-*.parquet")] if out.exists() else []
        if len(run_dirs) >= 2:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = run_dirs[0]
    before = len(read_results(run_dir))
    assert 0 < before < 24, before
    assert read_run_json(run_dir)["status"] == "running"
    resumed = runner.run_certification(_config(zoo), zoo, out)
    assert resumed.run_dir == run_dir and resumed.written == 24 - before and resumed.complete
    assert_same_rows(_rows(run_dir), reference["tiny-s0.25"])


@pytest.mark.subprocess
def test_two_processes_on_one_run_do_not_duplicate(zoo_file, tmp_path, reference):
    out = tmp_path / "out"
    procs = [_spawn(zoo_file, out, 0.01, tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_out, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr
    written = sorted(int(stdout.split("done")[1].split()[0]) for stdout, _ in outputs)
    assert sum(written) == 24  # every sample written by exactly one process
    run_dir = next(out.iterdir())
    assert_same_rows(_rows(run_dir), reference["tiny-s0.25"])
    assert read_run_json(run_dir)["status"] == "complete"


def test_changed_weights_of_an_unpinned_entry_refuse_to_resume(tmp_path):
    from helpers.tiny_zoo import write_weights

    zoo_file = make_zoo(tmp_path / "zoo")
    zoo = load_zoo([zoo_file])
    config = _config(zoo, limit=4)
    runner.run_certification(config, zoo, tmp_path / "out")
    write_weights(
        tmp_path / "zoo" / "tiny-s0.25.safetensors", 10, seed=99
    )  # same entry, other bytes
    with pytest.raises(ResultsError, match="weights of tiny-s0.25 changed"):
        runner.run_certification(config, zoo, tmp_path / "out")


def test_a_network_that_cannot_take_the_images_is_one_clear_error(tmp_path):
    folder = tmp_path / "zoo"
    make_zoo(folder)
    (folder / "wide.py").write_text(
        "from torch import nn\n\ndef wide(num_classes, input_shape=None):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))\n"
    )
    import torch
    from safetensors.torch import save_file

    save_file(
        {"1.weight": torch.zeros(10, 100), "1.bias": torch.zeros(10)},
        str(folder / "wide.safetensors"),
    )
    text = (folder / "zoo.yaml").read_text()
    entry = text.split("  - id: tiny-s0.50")[0].split("  - id: tiny-s0.25")[1]
    entry = entry.replace("tiny_arch.py:linear", "wide.py:wide").replace(
        "tiny-s0.25.safetensors", "wide.safetensors"
    )
    (folder / "zoo.yaml").write_text(text + "  - id: wide-s0.25" + entry)
    zoo = load_zoo([folder / "zoo.yaml"])
    with pytest.raises(
        ConfigError, match=r"wide-s0.25: the network fails on a \[1, 28, 28\] image"
    ):
        runner.run_certification(_config(zoo, "wide-s0.25"), zoo, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_identity_records_the_noise_scheme_and_the_device_type(zoo):
    from rsbench.engine.noise import NOISE_SCHEME

    fields = _config(zoo).identity_fields()
    assert fields["noise_scheme"] == NOISE_SCHEME and fields["device_type"] == "cpu"
    assert fields["bounds_version"] == runconfig.BOUNDS_VERSION == 2  # Clopper-Pearson rounded down
    on_cuda = dataclasses.replace(_config(zoo), device="cuda:0")
    assert on_cuda.identity() != _config(zoo).identity()


@pytest.mark.parametrize("old", [None, 1])
def test_a_run_made_under_another_noise_scheme_is_refused(zoo, tmp_path, old):
    config = _config(zoo, limit=4)
    first = runner.run_certification(config, zoo, tmp_path)
    info = read_run_json(first.run_dir)
    if old is None:  # a run.json from before the scheme was recorded
        del info["identity_fields"]["noise_scheme"]
    else:
        info["identity_fields"]["noise_scheme"] = old
    (first.run_dir / "run.json").write_text(json.dumps(info))
    made = "an older noise scheme" if old is None else f"noise scheme {old}"
    with pytest.raises(ResultsError, match=f"made under {made}.*another --out, or delete") as err:
        runner.run_certification(config, zoo, tmp_path)
    assert "\n" not in str(err.value)

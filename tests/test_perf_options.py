"""Speed options of certification: the noise stream is unchanged, precision / layout / compile
options run and are recorded, OOM halving keeps votes, other errors propagate."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from rsbench.engine.noise import NoiseKey, noise_keys
from rsbench.engine.sampling import NOISE_BLOCK, PAD_LEVELS, VoteCounter, pad_size
from rsbench.results.storage import read_results, read_run_json
from rsbench.run import distributed, runconfig, runner
from rsbench.zoo.registry import load_zoo

SMALL = dict(protocol="cpu", n0=10, n=60, limit=3, chunk_size=5, batch_size=50)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 5)).eval()


def _images(count: int = 3) -> torch.Tensor:
    return torch.rand(count, 3, 4, 4, generator=torch.Generator().manual_seed(1))


def _keys(*indices: int) -> list[NoiseKey]:
    return noise_keys("perf", "test", indices, "estimate", 0)


def reference_votes(model, images, sigma: float, num: int, keys) -> torch.Tensor:
    """rsbench's noise stream written plainly: per image, torch.randn blocks of NOISE_BLOCK."""
    votes = torch.zeros(len(keys), 5, dtype=torch.int64)
    with torch.inference_mode():
        for i, key in enumerate(keys):
            generator = key.generator()
            left = num
            while left > 0:
                block = min(left, NOISE_BLOCK)
                left -= block
                noisy = torch.randn((block, *images.shape[1:]), generator=generator)
                noisy.mul_(sigma).add_(images[i])
                votes[i] += torch.bincount(model(noisy).argmax(1), minlength=5)
    return votes


def _noise_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rsbench-noise" and t.is_alive()]


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("batch", [1000, 333, 64, 2500])
def test_votes_equal_the_plain_noise_stream(batch: int, overlap: bool) -> None:
    net, images, seeds = _net(), _images(), _keys(11, 5, 12)
    expected = reference_votes(net, images, 0.5, 2300, seeds)
    counter = VoteCounter(net, 5, batch_size=batch, overlap=overlap)
    assert torch.equal(counter.count(images, 0.5, 2300, seeds), expected)
    assert torch.equal(
        counter.count(images, 0.5, 70, seeds), reference_votes(net, images, 0.5, 70, seeds)
    )
    assert not _noise_threads()


class FailsAbove(nn.Module):
    """Raises ``error`` for batches larger than ``limit`` rows; otherwise runs ``net``."""

    def __init__(self, net: nn.Module, limit: int, error: Exception) -> None:
        super().__init__()
        self.net, self.limit, self.error = net, limit, error
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise self.error
        return self.net(x)


def test_out_of_memory_halves_the_batch_and_keeps_the_votes(caplog) -> None:
    net, images, seeds = _net(), _images(), _keys(3, 4, 5)
    expected = VoteCounter(net, 5, batch_size=400).count(images, 0.25, 1500, seeds)
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    flaky = FailsAbove(net, 96, oom)
    counter = VoteCounter(flaky, 5, batch_size=400)
    with caplog.at_level(logging.WARNING, logger="rsbench.engine.sampling"):
        votes = counter.count(images, 0.25, 1500, seeds)
    assert torch.equal(votes, expected)
    assert counter.forward_batch == 50  # 400 -> 200 -> 100 -> 50, the first size <= 96
    assert max(flaky.sizes[flaky.sizes.index(50) :]) == 50  # the smaller size is kept
    assert "halving to 200" in caplog.text and "halving to 50" in caplog.text
    assert torch.equal(counter.count(images, 0.25, 1500, seeds), expected)


@pytest.mark.parametrize("overlap", [True, False])
def test_other_errors_propagate_without_halving(overlap: bool) -> None:
    error = RuntimeError("CUDA error: an illegal memory access was encountered")
    counter = VoteCounter(FailsAbove(_net(), 96, error), 5, batch_size=400, overlap=overlap)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        counter.count(_images(), 0.25, 1500, _keys(3, 4, 5))
    assert counter.forward_batch == 400
    assert not _noise_threads()


class _BrokenKey(NoiseKey):
    """A key whose generator fails (in the noise thread, where generators are made)."""

    def generator(self, device="cpu") -> torch.Generator:
        raise ValueError("Overflow: no generator for this key")


def test_an_error_in_the_noise_thread_reaches_the_caller() -> None:
    counter = VoteCounter(_net(), 5, batch_size=500, overlap=True)
    keys = [_keys(1)[0], _BrokenKey("perf", "test", 2, "estimate", 0)]
    with pytest.raises(ValueError, match="Overflow"):
        counter.count(_images(2), 0.25, 2000, keys)
    assert not _noise_threads()


def test_pad_sizes() -> None:
    assert [pad_size(r, 100) for r in (100, 99, 51, 50, 26, 25, 14, 13, 8, 7, 1)] == [
        100, 100, 100, 50, 50, 25, 25, 13, 13, 7, 7,
    ]  # fmt: skip
    assert len({pad_size(r, 1000) for r in range(1, 1001)}) == PAD_LEVELS


def test_compiled_model_sees_few_shapes_and_gives_the_eager_votes() -> None:
    shapes: list[tuple[int, ...]] = []

    def backend(graph_module, example_inputs):  # records each compilation, runs the graph
        shapes.append(tuple(example_inputs[0].shape))
        return graph_module.forward

    net, images, seeds = _net(), _images(), _keys(7, 8, 9)
    compiled = VoteCounter(net, 5, batch_size=100, compile=backend)
    eager = VoteCounter(net, 5, batch_size=100)
    assert compiled.compiled and not eager.compiled
    for num in (30, 250, 7, 1, 33, 2):
        assert torch.equal(
            compiled.count(images, 0.5, num, seeds), eager.count(images, 0.5, num, seeds)
        )
    assert len(shapes) <= PAD_LEVELS and {s[0] for s in shapes} <= {100, 50, 25, 13, 7}


def test_inductor_compile_gives_the_eager_votes_in_fp32() -> None:
    net, images, seeds = _net(), _images(), _keys(7, 8, 9)
    compiled = VoteCounter(net, 5, batch_size=200, compile=True)
    eager = VoteCounter(net, 5, batch_size=200)
    for num in (450, 30):
        assert torch.equal(
            compiled.count(images, 0.5, num, seeds), eager.count(images, 0.5, num, seeds)
        )


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_precisions_and_channels_last_run(precision: str) -> None:
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 5)).eval()
    conv = conv.to(memory_format=torch.channels_last)
    counter = VoteCounter(conv, 5, batch_size=64, precision=precision, channels_last=True)
    votes = counter.count(_images(), 0.5, 150, _keys(1, 2, 3))
    assert votes.shape == (3, 5) and votes.sum(1).tolist() == [150, 150, 150]


# ------------------------------------------------------------------ runner and CLI


@pytest.fixture(scope="module")
def zoo(zoo_file):
    return load_zoo([zoo_file])


def _config(zoo, **overrides):
    return runconfig.resolve_config(zoo.get("tiny-s0.25"), zoo=zoo, **{**SMALL, **overrides})


def test_identity_covers_precision_layout_and_compile_only_when_on(zoo) -> None:
    base = _config(zoo)
    assert "channels_last" not in base.identity_fields() and "compile" not in base.identity_fields()
    assert "threads" not in base.identity_fields()
    assert _config(zoo, threads=1, batch_size=7).identity() == base.identity()
    names = {
        _config(zoo, **change).run_name()
        for change in (
            {},
            {"precision": "bf16"},
            {"precision": "fp16"},
            {"channels_last": True},
            {"compile": True},
        )
    }
    assert len(names) == 5


def test_a_changed_precision_starts_a_new_run(zoo, tmp_path) -> None:
    runs = {}
    for precision in ("fp32", "bf16"):
        config = _config(zoo, precision=precision)
        result = runner.run_certification(config, zoo, tmp_path)
        assert result.complete and result.written == 3
        runs[precision] = result.run_dir
        df = read_results(result.run_dir)
        assert set(df["precision"]) == {precision}
        info = read_run_json(result.run_dir)
        assert info["config"]["precision"] == info["precision"] == precision
        assert info["config"]["channels_last"] is False and info["config"]["compile"] is False
        assert info["torch_threads"] >= 1
    assert runs["fp32"] != runs["bf16"]
    again = runner.run_certification(_config(zoo, precision="fp32"), zoo, tmp_path)
    assert again.run_dir == runs["fp32"] and again.written == 0 and again.skipped == 3


def test_compiled_run_equals_the_eager_run(zoo, tmp_path) -> None:
    config = _config(zoo, limit=2, compile=True)
    certifier, _ = runner.build_certifier(runner.prepare(config, zoo, tmp_path), "cpu")
    assert certifier.counter.compiled
    eager = runner.run_certification(_config(zoo, limit=2), zoo, tmp_path)
    compiled = runner.run_certification(config, zoo, tmp_path)
    assert compiled.run_dir != eager.run_dir
    columns = ["index", "prediction", "radius", "cA", "count0", "nA"]
    a = read_results(eager.run_dir).sort_values("index")[columns].reset_index(drop=True)
    b = read_results(compiled.run_dir).sort_values("index")[columns].reset_index(drop=True)
    assert a.equals(b)
    assert read_run_json(compiled.run_dir)["config"]["compile"] is True


def test_images_per_call() -> None:
    make = runconfig.RunConfig
    common = dict(model_id="m", kind="expert", dataset="d", split="s", protocol="p", alpha=0.001)
    assert runner.images_per_call(make(n0=100, n=1000, batch_size=1000, **common)) == 8
    assert runner.images_per_call(make(n0=100, n=100_000, batch_size=1000, **common)) == 1
    assert runner.images_per_call(make(n0=10, n=10, batch_size=1000, **common, chunk_size=64)) == 64


def test_cli_records_precision_and_channels_last(zoo_file, tmp_path) -> None:
    from rsbench.cli.certify import certify

    args = ["tiny-s0.25", "--zoo", str(zoo_file), "--out", str(tmp_path), "--limit", "2"]
    args += ["--n0", "10", "--n", "50", "--precision", "bf16", "--channels-last", "--threads", "1"]
    result = CliRunner().invoke(certify, [*args, "--no-leaderboard", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (run_json,) = tmp_path.glob("*/run.json")
    info = json.loads(run_json.read_text())
    assert info["config"]["precision"] == "bf16" and info["config"]["channels_last"] is True
    assert info["config"]["threads"] == 1 and info["torch_threads"] == 1
    assert info["identity_fields"]["channels_last"] is True
    help_text = CliRunner().invoke(certify, ["--help"]).output
    for option in ("--precision", "--channels-last", "--compile", "--batch", "--threads"):
        assert option in help_text


@pytest.mark.subprocess
def test_gpu_benchmark_script_runs_on_cpu(tmp_path) -> None:
    """bench/gpu_certify.py (what bench/gpu.sh runs on a GPU) works end to end, here on a CPU."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(root / "bench" / "gpu_certify.py"), "--device", "cpu"]
    cmd += ["--arch", "fmnist_cnn", "--images", "2", "--n", "200", "--batch", "100"]
    cmd += ["--options", "fp32,bf16+cl", "--json", str(out)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["option"] for r in rows] == ["fp32", "bf16+cl"]
    assert all(r["samples_per_s"] > 0 and r["ratio_vs_bare"] > 0 for r in rows)


def test_small_networks_default_to_one_thread_on_cpu(zoo) -> None:
    embedded = load_zoo()
    expert = embedded.get("embedded-fmnist-s0.50")  # fmnist_cnn
    assert (
        runconfig.default_threads(expert, embedded, "cpu")
        == runconfig.EMBEDDED_DEFAULT_THREADS
        == 1
    )
    assert runconfig.default_threads(expert, embedded, "cuda:0") is None
    dual = embedded.get("embedded-fmnist-dual")  # pooled_mlp router, fmnist_cnn experts
    assert runconfig.default_threads(dual, embedded, "cpu") == 1
    assert runconfig.default_threads(zoo.get("tiny-dual"), zoo, "cpu") is None  # a user arch
    config = runconfig.resolve_config(expert, zoo=embedded, protocol="cpu", device="cpu")
    assert config.threads == 1 and "threads" not in config.identity_fields()
    before = torch.get_num_threads()
    with distributed.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_noise_dtype_is_in_the_identity_and_the_opt_out_is_recorded(zoo_file, tmp_path) -> None:
    from rsbench.cli.certify import certify
    from rsbench.errors import ConfigError

    zoo = load_zoo([zoo_file])
    names = {_config(zoo, noise_dtype=d).run_name() for d in ("auto", "float64", "float32")}
    assert len(names) == 3
    assert _config(zoo).identity_fields()["noise_dtype"] == "auto"
    with pytest.raises(ConfigError, match="noise dtype 'half' is not allowed"):
        _config(zoo, noise_dtype="half")
    args = ["tiny-s0.25", "--zoo", str(zoo_file), "--out", str(tmp_path), "--limit", "2"]
    args += ["--n0", "10", "--n", "50", "--noise-dtype", "float32", "--threads", "1"]
    result = CliRunner().invoke(certify, [*args, "--no-leaderboard", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (run_json,) = tmp_path.glob("*/run.json")
    info = json.loads(run_json.read_text())
    assert info["noise_dtype"] == info["config"]["noise_dtype"] == "float32"
    assert info["identity_fields"]["noise_dtype"] == "float32"

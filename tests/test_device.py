"""The device path: ``--device`` resolution, and the whole ``rsbench certify`` / ``sweep`` commands
on a faked CUDA (tests/helpers/fake_cuda.py), checking what rsbench asks of torch and that the
certificates equal a CPU run's where the arithmetic is the same."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import fake_cuda as fake

from rsbench.cli.main import main
from rsbench.engine import device as D
from rsbench.errors import ConfigError
from rsbench.results.storage import read_results, read_run_json

ARGS = ["--n0", "10", "--n", "100", "--limit", "4", "--chunk-size", "2", "--batch", "100"]
MODELS = ["tiny-s0.25", "tiny-dual"]
# columns that legitimately differ between two runs of the same certificates
VOLATILE = ["seconds", "run_id"]
FAKE_NAME = fake.FAKE_NAME


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``rsbench ARGS`` in this process; return (exit status, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def rows(path: Path) -> pd.DataFrame:
    df = read_results(path).drop(columns=VOLATILE)
    return df.sort_values(["model_id", "index"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def cpu_runs(zoo_file, tmp_path_factory) -> dict[str, Path]:
    """Reference runs on the CPU (no fake): fp32 and bf16."""
    out = {}
    for precision in ("fp32", "bf16"):
        folder = tmp_path_factory.mktemp(f"cpu-{precision}")
        args = [*MODELS, "--zoo", zoo_file, "--out", folder, *ARGS, "--device", "cpu"]
        main(["certify", *map(str, args), "--precision", precision, "--no-leaderboard"])
        out[precision] = folder
    return out


def certify_fake(capsys, zoo_file, out: Path, *extra: str, models=MODELS) -> str:
    code, _, err = cli(
        capsys, "certify", *models, "--zoo", zoo_file, "--out", out, *ARGS, "--no-leaderboard",
        *extra,
    )  # fmt: skip
    assert code == 0, err
    return err


# ------------------------------------------------------------------------------ resolution


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def test_resolve_without_cuda(no_cuda):
    for text in (None, "", "auto", " AUTO ", "cpu", "CPU"):
        assert D.resolve(text) == D.Device("cpu"), text
    for text in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ConfigError, match=r"needs CUDA.*use --device cpu"):
            D.resolve(text)
    for text in ("mps", "xpu", "gpu", "cuda:x", "cuda:-1", "auto:1", "cpu:1", "cuda:0:1", "tpu"):
        with pytest.raises(
            ConfigError, match="is not supported; use one of auto, cpu, cuda, cuda:N"
        ):
            D.resolve(text)


def test_resolve_with_two_gpus_is_always_indexed(fake_cuda, monkeypatch):
    fake_cuda.device_count = 2
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert str(D.resolve("auto")) == "cuda:0" and str(D.resolve("cuda")) == "cuda:0"
    assert str(D.resolve("cuda:1")) == "cuda:1"
    with pytest.raises(ConfigError, match=r"'cuda:2' does not exist: 2 CUDA device"):
        D.resolve("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this node
    assert str(D.resolve("auto")) == "cuda:1" and str(D.resolve("cuda")) == "cuda:1"
    assert str(D.resolve("cuda:0")) == "cuda:0"  # an explicit index is kept
    assert str(D.resolve("cpu")) == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ConfigError, match=r"LOCAL_RANK=2 needs cuda:2, but 2 CUDA device"):
        D.resolve("cuda")
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ConfigError, match="LOCAL_RANK='x' is not an integer"):
        D.resolve("auto")


def test_set_device_receives_an_indexed_device(fake_cuda, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    # the fake checks like torch: the call that crashed the runner before device.py
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_device(torch.device("cuda"))
    D.activate("cuda")
    D.activate(D.resolve("auto"))
    D.activate("cpu")
    assert [c["index"] for c in fake_cuda.of("set_device")] == [0, 0]
    assert all(c["device"].index == 0 for c in fake_cuda.of("set_device"))
    assert D.backend(D.resolve("cuda")) == "nccl" and D.backend(D.resolve("cpu")) == "gloo"
    assert D.name("cuda:0") == FAKE_NAME and D.peak_memory("cpu") is None


def test_benchmark_helpers_name_the_device(fake_cuda):
    cuda = D.resolve("cuda")
    D.reset_peak_memory(cuda)
    D.synchronize(cuda)
    assert D.peak_memory(cuda) == 1 << 20  # the fake's figure
    D.reset_peak_memory("cpu")
    D.synchronize("cpu")
    for name in ("reset_peak_memory_stats", "synchronize", "max_memory_allocated"):
        assert [str(c["device"]) for c in fake_cuda.of(name)] == ["cuda:0"], name
    D.release_memory(cuda)
    D.release_memory("cpu")
    assert len(fake_cuda.of("empty_cache")) == 1


def test_precision_context_on_cuda(fake_cuda):
    cuda = D.resolve("cuda")
    before = torch.backends.cuda.matmul.allow_tf32
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with D.precision_context(precision, cuda):
            assert torch.is_autocast_enabled("cpu")  # the fake runs CUDA autocast as CPU autocast
        assert fake_cuda.of("autocast")[-1] == {
            "device_type": "cuda",
            "dtype": dtype,
            "enabled": True,
        }
    for precision, allow in (("tf32", True), ("fp32", False)):
        with D.precision_context(precision, cuda):
            assert torch.backends.cuda.matmul.allow_tf32 is allow
            assert torch.backends.cudnn.allow_tf32 is allow
        assert torch.backends.cuda.matmul.allow_tf32 is before  # restored
    assert len(fake_cuda.of("autocast")) == 2  # fp32 / tf32 never autocast
    with pytest.raises(ConfigError, match="precision='fp8'"), D.precision_context("fp8", cuda):
        pass


# ------------------------------------------------------------------------------ whole commands


def _check_cuda_path(fake: fake.FakeCuda, index: int) -> None:
    """What a CUDA run must have asked of torch: an indexed set_device, pinned non-blocking copies
    of the images, noise generators on the GPU, never an index-less device."""
    assert [c["index"] for c in fake.of("set_device")] and {
        c["index"] for c in fake.of("set_device")
    } == {index}
    copies = [c for c in fake.of("to") if c["non_blocking"]]
    assert copies and all(c["device"] == f"cuda:{index}" and c["pinned"] for c in copies)
    assert fake.of("pin_memory")
    generators = {c["device"] for c in fake.of("Generator") if c["device"].startswith("cuda")}
    assert generators == {f"cuda:{index}"}
    # every CUDA device rsbench named is indexed
    named = [c["device"] for c in fake.of("to") + fake.of("alloc")]
    assert named and all(d == f"cuda:{index}" for d in named), set(named)


def test_certify_on_cuda_auto_equals_the_cpu_run(fake_cuda, cpu_runs, zoo_file, tmp_path, capsys):
    certify_fake(capsys, zoo_file, tmp_path, "--device", "auto")
    _check_cuda_path(fake_cuda, 0)
    assert not fake_cuda.of("init_process_group") and not fake_cuda.of("autocast")
    pd.testing.assert_frame_equal(rows(tmp_path), rows(cpu_runs["fp32"]))
    for run_dir in tmp_path.iterdir():
        info = read_run_json(run_dir)
        assert info["status"] == "complete" and info["device"] == "cuda:0"
        assert info["device_name"] == FAKE_NAME and info["identity_fields"]["device_type"] == "cuda"


def test_certify_on_cuda_1_with_bf16(fake_cuda, cpu_runs, zoo_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    fake_cuda.device_count = 2
    certify_fake(capsys, zoo_file, tmp_path, "--device", "cuda:1", "--precision", "bf16")
    _check_cuda_path(fake_cuda, 1)
    assert {(c["device_type"], c["dtype"]) for c in fake_cuda.of("autocast")} == {
        ("cuda", torch.bfloat16)
    }
    pd.testing.assert_frame_equal(rows(tmp_path), rows(cpu_runs["bf16"]))
    assert {read_run_json(r)["device"] for r in tmp_path.iterdir()} == {"cuda:1"}


def test_embedded_expert_on_plain_cuda(fake_cuda, tmp_path, capsys, monkeypatch):
    """The command of the bug report: `rsbench certify embedded-fmnist-s0.50 --device cuda`."""
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    args = ["embedded-fmnist-s0.50", "--limit", "2", "--n", "100", "--n0", "10"]
    code, _, err = cli(capsys, "certify", *args, "--device", "cuda", "--out", tmp_path / "gpu")
    assert code == 0, err
    _check_cuda_path(fake_cuda, 0)
    fake_cuda.uninstall()
    monkeypatch.undo()
    code, _, err = cli(capsys, "certify", *args, "--device", "cpu", "--out", tmp_path / "cpu")
    assert code == 0, err
    gpu, cpu = rows(tmp_path / "gpu"), rows(tmp_path / "cpu")
    assert len(gpu) == 2
    pd.testing.assert_frame_equal(gpu, cpu)


@pytest.fixture
def diffusers_imported() -> None:
    """diffusers (and the torch.compile machinery it imports) loaded before CUDA is faked: the
    fake replaces ``torch.Generator`` with a function, which torch's own modules, imported later,
    use in type annotations."""
    pytest.importorskip("diffusers")
    from diffusers import DDPMScheduler, UNet2DModel  # noqa: F401 — the lazy modules, really imported


@pytest.mark.parametrize(
    "model",
    [
        ["embedded-fmnist-xdual", "--n", "100"],  # a router over the experts (experts-top)
        ["embedded-fmnist-ddpm-ft-dual", "--n", "100"],  # a router over a U-Net denoised expert
        ["embedded-fmnist-cascade", "--estimation", "sequential", "--n-max", "600"],
    ],
    ids=["experts-router", "denoised-dual", "sequential-cascade"],
)
def test_shipped_compositions_on_plain_cuda_equal_the_cpu_run(
    diffusers_imported, fake_cuda, tmp_path, capsys, monkeypatch, model
):
    """Routers that run experts or a diffusion denoiser, and sequential cascades, take the same
    device path as an expert: the CUDA run asks torch for what a GPU needs and gives the CPU rows."""
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    args = [*model, "--limit", "2", "--n0", "10"]
    code, _, err = cli(capsys, "certify", *args, "--device", "cuda", "--out", tmp_path / "gpu")
    assert code == 0, err
    _check_cuda_path(fake_cuda, 0)
    fake_cuda.uninstall()
    monkeypatch.undo()
    code, _, err = cli(capsys, "certify", *args, "--device", "cpu", "--out", tmp_path / "cpu")
    assert code == 0, err
    gpu, cpu = rows(tmp_path / "gpu"), rows(tmp_path / "cpu")
    assert len(gpu) == 2
    pd.testing.assert_frame_equal(gpu, cpu)


def test_certify_under_torchrun_one_process(fake_cuda, cpu_runs, zoo_file, tmp_path, capsys, monkeypatch):  # fmt: skip
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    for key, value in {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29512"}.items():
        monkeypatch.setenv(key, value)
    certify_fake(capsys, zoo_file, tmp_path, "--device", "cuda")
    _check_cuda_path(fake_cuda, 0)
    assert not fake_cuda.of("init_process_group")  # one process: no process group
    pd.testing.assert_frame_equal(rows(tmp_path), rows(cpu_runs["fp32"]))


def test_certify_under_torchrun_two_ranks_uses_nccl_and_local_rank(
    fake_cuda, cpu_runs, zoo_file, tmp_path, capsys, monkeypatch
):
    """Two torchrun ranks on two GPUs, run one after the other (the process group is faked)."""
    fake_cuda.device_count = 2
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29513")
    for rank in (1, 0):
        fake_cuda.clear()
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        certify_fake(capsys, zoo_file, tmp_path, "--device", "auto")
        _check_cuda_path(fake_cuda, rank)
        assert fake_cuda.of("init_process_group") == [{"backend": "nccl"}]
        assert fake_cuda.of("barrier") and fake_cuda.of("destroy_process_group")
    pd.testing.assert_frame_equal(rows(tmp_path), rows(cpu_runs["fp32"]))
    for run_dir in tmp_path.iterdir():
        info = read_run_json(run_dir)
        assert info["status"] == "complete" and info["world_size"] == 2
        shards = {p.name.split("-")[1] for p in run_dir.glob("part-*.parquet")}
        assert shards == {"0of2", "1of2"}


def test_out_of_memory_halves_the_batch_and_keeps_the_votes(
    fake_cuda, cpu_runs, zoo_file, tmp_path, capsys
):
    fake_cuda.oom_above = 60  # the first forward batch of more than 60 rows does not fit
    err = certify_fake(capsys, zoo_file, tmp_path, "--device", "cuda", models=["tiny-s0.25"])
    (oom,) = fake_cuda.of("oom")
    assert oom["rows"] == 100 and fake_cuda.of("empty_cache")
    after = fake_cuda.forward_rows[fake_cuda.forward_rows.index(100) + 1 :]
    assert after and max(after) <= 50  # halved once, and kept
    assert "out of memory" not in err  # a warning in the log, not an error
    expected = rows(cpu_runs["fp32"])
    expected = expected[expected["model_id"] == "tiny-s0.25"]
    pd.testing.assert_frame_equal(rows(tmp_path), expected.reset_index(drop=True))


def test_compile_goes_through_torch_compile_with_static_shapes(
    fake_cuda, cpu_runs, zoo_file, tmp_path, capsys
):
    certify_fake(capsys, zoo_file, tmp_path, "--device", "cuda", "--compile")
    assert fake_cuda.of("compile") and all(c["dynamic"] is False for c in fake_cuda.of("compile"))
    assert len(fake_cuda.of("compile")) == 4  # the expert run; the dual run: router + 2 experts
    pd.testing.assert_frame_equal(rows(tmp_path), rows(cpu_runs["fp32"]))


def test_sweep_runs_on_cuda(fake_cuda, cpu_runs, zoo_file, tmp_path, capsys):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        "ids: [tiny-s0.25, tiny-dual]\nprotocols: [cpu]\n"
        f"options: {{n0: 10, n: 100, limit: 4, chunk_size: 2, batch: 100, zoo: [{zoo_file}], "
        f"out: {tmp_path / 'out'}}}\n"
    )
    code, _, err = cli(capsys, "sweep", spec, "--device", "cuda", "--no-leaderboard")
    assert code == 0, err
    _check_cuda_path(fake_cuda, 0)
    pd.testing.assert_frame_equal(rows(tmp_path / "out"), rows(cpu_runs["fp32"]))


# ------------------------------------------------------------------------------ unsupported


@pytest.mark.parametrize(
    "device, message",
    [
        ("cuda", "needs CUDA"),
        ("cuda:1", "needs CUDA"),
        ("mps", "is not supported"),
        ("xpu", "is not supported"),
        ("gpu0", "is not supported"),
    ],
)
def test_unsupported_device_is_one_line(no_cuda, zoo_file, tmp_path, capsys, device, message):
    for extra in (["--dry-run"], []):
        code, out, err = cli(
            capsys, "certify", "tiny-s0.25", "--zoo", zoo_file, "--out", tmp_path,
            "--device", device, *extra,
        )  # fmt: skip
        assert code == 2 and out == "", (out, err)
        (line,) = err.strip().splitlines()
        assert (
            line.startswith("error: device ")
            and message in line
            and "--device cpu" in line
            or "cuda:N" in line
        ), line
    assert not list(tmp_path.iterdir())  # nothing written


def test_training_and_zoo_check_reject_unsupported_devices(no_cuda, capsys, tmp_path):
    for args in (
        [
            "train",
            "expert",
            "--dataset",
            "fashion-mnist-embedded",
            "--arch",
            "mlp",
            "--train-sigma",
            "0.25",
            "--out",
            tmp_path / "t",
            "--device",
            "mps",
        ],
        ["zoo", "check", "embedded-fmnist-s0.50", "--device", "cuda"],
        ["train", "denoiser", "--dataset", "fashion-mnist-embedded", "--split", "test",
         "--out", tmp_path / "d", "--device", "xpu"],
        ["zoo", "import-archive", tmp_path, "--zoo-file", tmp_path / "z.yaml", "--device", "cuda:1"],
    ):  # fmt: skip
        code, _, err = cli(capsys, *args)
        (line,) = err.strip().splitlines()
        assert code == 2 and line.startswith("error: device "), err
    assert not list(tmp_path.iterdir())

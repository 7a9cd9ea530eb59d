"""The Python API (rsbench.load / rsbench.certify) gives exactly what the CLI gives (issue 16)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import rsbench
from rsbench.errors import ConfigError

IDS = ["embedded-fmnist-s0.25", "embedded-fmnist-dual"]
ARGS = ["--n0", "50", "--n", "200", "--limit", "3", "--threads", "1", "--seed", "7"]
#: wall-clock columns: the only ones two runs of one configuration may differ in
TIMING = ["seconds", "router_seconds", "expert_seconds"]


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in TIMING if c in frame.columns])
    frame = frame.sort_values(["model_id", "index"], kind="mergesort").reset_index(drop=True)
    return frame.map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same runs, once through the CLI and once through rsbench.certify."""
    cli_out = tmp_path_factory.mktemp("cli")
    api_out = tmp_path_factory.mktemp("api")
    command = [sys.executable, "-m", "rsbench", "certify", *IDS, *ARGS, "--out", str(cli_out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    frame = rsbench.certify(IDS, n0=50, n=200, limit=3, threads=1, seed=7, out=str(api_out))
    from rsbench.results.storage import read_results

    return read_results(cli_out), frame


@pytest.mark.subprocess
def test_cli_and_certify_give_identical_rows(both) -> None:
    cli_rows, api_rows = both
    assert len(api_rows) == 6 and set(api_rows["model_id"]) == set(IDS)
    pd.testing.assert_frame_equal(_comparable(cli_rows), _comparable(api_rows))


@pytest.mark.subprocess
def test_load_certifies_the_rows_of_the_run(both) -> None:
    """rsbench.load(id).certify_batch with the run's sample names reproduces its rows."""
    from rsbench.data.dataset import load_dataset

    _, rows = both
    dataset = load_dataset("fashion-mnist", "embedded")
    for model_id in IDS:
        stored = rows[rows["model_id"] == model_id].sort_values("index")
        model = rsbench.load(model_id, device="cpu")
        indices = [int(i) for i in stored["index"]]
        certs = model.certify_batch(
            dataset.images(indices),
            50,
            200,
            0.001,
            seed=7,
            indices=indices,
            dataset="fashion-mnist",
            split="test",
        )
        assert [c.prediction for c in certs] == stored["prediction"].tolist()
        assert [c.radius for c in certs] == stored["radius"].tolist()


def test_load_resolves_like_certify() -> None:
    dual = rsbench.load("embedded-fmnist-dual", device="cpu")
    assert type(dual).__name__ == "DualSmoothed"
    assert dual.sigmas == (0.25, 0.5, 1.0) and dual.alpha_router_fraction == 0.5
    assert (
        rsbench.load("embedded-fmnist-dual", alpha_router_fraction=0.3).alpha_router_fraction == 0.3
    )
    expert = rsbench.load("embedded-fmnist-s0.50")
    assert type(expert).__name__ == "SmoothedClassifier" and expert.sigma == 0.5
    assert rsbench.load("embedded-fmnist-s0.50", sigma=0.3).sigma == 0.3
    cascade = rsbench.load("embedded-fmnist-cascade", p0=0.6)
    assert type(cascade).__name__ == "CascadeSmoothed" and cascade.p0 == 0.6
    assert list(cascade.sigmas) == sorted(cascade.sigmas, reverse=True)  # largest sigma first
    denoised = rsbench.load("embedded-fmnist-denoised", sigma=0.5)
    assert type(denoised).__name__ == "SmoothedClassifier" and denoised.sigma == 0.5
    with pytest.raises(ConfigError, match="pass --sigma"):
        rsbench.load("embedded-fmnist-denoised")
    with pytest.raises(ConfigError, match="alpha_router_fraction=1.5"):
        rsbench.load("embedded-fmnist-dual", alpha_router_fraction=1.5)
    with pytest.raises(ConfigError, match="apply to dual ids"):
        rsbench.load("embedded-fmnist-s0.50", sigma_router=0.5)


def test_certify_gives_back_torch_threads(tmp_path) -> None:
    """``threads=`` sets torch's process-wide pool for the run only (the CLI's process ends)."""
    import torch

    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 3
    torch.set_num_threads(wanted)
    try:
        rsbench.certify("embedded-fmnist-s0.25", n0=10, n=20, limit=1, threads=1, out=str(tmp_path))
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_certify_refuses_an_unknown_option(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown option\\(s\\) num_samples"):
        rsbench.certify(IDS[0], num_samples=10, out=str(tmp_path))
    with pytest.raises(ConfigError, match="only the CLI has"):
        rsbench.certify(IDS[0], dry_run=True, out=str(tmp_path))
    assert not any(tmp_path.iterdir())


def _flag_names(param) -> set[str]:
    """A Click option's flags as keyword names (``--chunk-size`` -> ``chunk_size``)."""
    return {flag.lstrip("-").replace("-", "_") for flag in param.opts}


def test_the_cli_the_api_and_sweep_files_share_one_set_of_option_names_and_defaults() -> None:
    """Every option of `rsbench certify` is a key of run.jobs.DEFAULTS under its flag's name
    (--out is out, --batch is batch), with the same default; a sweep file takes the same names."""
    from rsbench.cli.certify import certify
    from rsbench.run.jobs import DEFAULTS
    from rsbench.run.sweep import _SWEEP_OPTIONS

    params = [p for p in certify.params if p.name not in ("ids", "sigma")]
    assert {p.name for p in params} == set(DEFAULTS)
    for param in params:
        assert param.name in _flag_names(param), (param.name, param.opts)
        default = param.default
        if getattr(param, "multiple", False):  # Click's "unset" sentinel is no sequence
            default = tuple(default) if isinstance(default, (list, tuple)) else ()
        elif getattr(param, "is_flag", False) and not isinstance(default, bool):
            default = False  # Click's "unset" flag
        assert default == DEFAULTS[param.name], (param.name, default)
    assert set(DEFAULTS) - {"protocol", "dry_run", "no_leaderboard"} == _SWEEP_OPTIONS


def test_certify_takes_the_old_keyword_names_with_a_warning(tmp_path) -> None:
    with pytest.warns(DeprecationWarning, match="spelled out= now"):
        rows = rsbench.certify(IDS[0], n0=10, n=20, limit=1, threads=1, out_dir=str(tmp_path))
    assert len(rows) == 1 and any(tmp_path.iterdir())


@pytest.mark.subprocess
def test_import_rsbench_stays_light() -> None:
    code = (
        "import sys, rsbench; assert callable(rsbench.__getattr__); "
        "print(sorted(m for m in ('torch', 'pandas', 'rsbench.api') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

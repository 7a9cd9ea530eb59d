"""Denoised experts: the composed base model, the zoo kind, certification, dual routing, labels.

Known answers: a constant classifier behind any denoiser reaches the maximal radius exactly; an
oracle noise predictor makes the one-step diffusion denoiser return the clean image; coverage of the
composed certificate over seeded trials stays below alpha; a router that always picks k reproduces
the denoised expert's certificate at sigma_k with alpha_expert.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from helpers.toy_models import Constant, Threshold
from helpers.unet_zoo import CLEAN_SHA
from torch import nn

from rsbench.engine import stats
from rsbench.engine.dual import DualSmoothed
from rsbench.engine.smoothing import SmoothedClassifier
from rsbench.errors import ConfigError, ZooError
from rsbench.models.denoised import (
    DenoisedClassifier,
    DenoisedExpert,
    DiffusionDenoiser,
    diffusion_timestep,
    serve,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class Identity(nn.Module):
    """A denoiser that returns its input (``denoiser(z, sigma) = z``)."""

    def forward(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        return z


class Halve(nn.Module):
    """A denoiser with a visible effect: pulls every pixel halfway to 0.5."""

    def forward(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        return 0.5 + (z - 0.5) / 2


# ------------------------------------------------------------------------------------------------
# the composed base model under smoothing


@pytest.mark.parametrize("sigma", [0.25, 0.5, 1.0])
def test_constant_classifier_behind_a_denoiser_reaches_the_maximal_radius(sigma: float) -> None:
    model = DenoisedClassifier(Halve(), Constant(2, 5), sigma)
    cert = SmoothedClassifier(model, 5, sigma).certify(
        torch.rand(1, 4, 4), n0=50, n=5000, alpha=0.001, seed=3
    )
    assert cert.prediction == 2 and cert.nA == 5000
    assert cert.radius == pytest.approx(float(stats.max_radius(sigma, 5000, 0.001)), rel=1e-12)


def test_composed_model_is_classifier_of_clamped_denoised_input() -> None:
    seen = {}

    class Record(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return torch.zeros(x.shape[0], 3)

    z = torch.tensor([[[[-1.0, 0.2], [0.9, 3.0]]]])
    DenoisedClassifier(Halve(), Record(), 0.5)(z)
    expected = (0.5 + (z - 0.5) / 2).clamp(0, 1)
    assert torch.equal(seen["x"], expected)


def test_coverage_of_a_denoised_certificate_over_seeded_trials() -> None:
    # Identity denoiser + a threshold whose top class has probability exactly p under the noise
    # (its cut lies inside [0, 1], so the clamp changes no vote): failure = pA_lower above p.
    sigma, p, alpha, trials = 0.5, 0.8, 0.1, 3000
    model = DenoisedClassifier(Identity(), Threshold(p, sigma), sigma)
    certs = SmoothedClassifier(model, 2, sigma).certify_batch(
        torch.full((trials, 1, 1, 1), 0.5), n0=10, n=100, alpha=alpha, seed=5
    )
    chosen = [c for c in certs if c.cA == 0]
    assert len(chosen) > 0.9 * trials
    failures = np.mean([c.pA_lower > p for c in chosen])
    assert failures <= alpha + 4 * math.sqrt(alpha * (1 - alpha) / len(chosen))


def _toy_denoised(seed: int = 0) -> DenoisedExpert:
    torch.manual_seed(seed)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    return DenoisedExpert(Halve(), classifier, (0.25, 0.5, 1.0)).eval()


@pytest.mark.parametrize("k", [0, 1, 2])
def test_router_picking_k_reproduces_the_denoised_expert_at_sigma_k(k: int) -> None:
    expert, sigmas = _toy_denoised(), [0.25, 0.5, 1.0]
    served = [serve(expert, s) for s in sigmas]
    assert all(m.classifier is expert.classifier for m in served)  # shared, not copied
    dual = DualSmoothed(Constant(k, 3), served, sigmas, sigma_router=1.0, num_classes=4)
    images, indices = torch.rand(5, 2, 2, 2), [1, 7, 19, 40, 77]
    results = dual.certify_batch(images, 20, 500, 0.002, seed=4, indices=indices)
    single = SmoothedClassifier(expert.at_sigma(sigmas[k]), 4, sigmas[k]).certify_batch(
        images, 20, 500, 0.001, seed=4, indices=indices
    )
    for dual_cert, cert in zip(results, single, strict=True):
        assert dual_cert.router_choice == k and dual_cert.expert_sigma == sigmas[k]
        assert dual_cert.expert_counts == cert.counts and dual_cert.expert_radius == cert.radius


def test_a_denoised_expert_serves_only_its_sigmas() -> None:
    expert = _toy_denoised()
    assert expert.at_sigma(0.5).sigma == 0.5
    with pytest.raises(ConfigError, match="serves sigma 0.25, 0.5, 1, not 0.3"):
        expert.at_sigma(0.3)
    plain = nn.Linear(2, 2)
    assert serve(plain, 0.5) is plain  # any other expert is one network for every sigma


# ------------------------------------------------------------------------------------------------
# diffusion one-step denoising


def _linear_alphas_cumprod(steps: int = 1000) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


@pytest.mark.parametrize("sigma", [0.12, 0.25, 0.5, 1.0])
def test_timestep_matches_the_scheduler_noise_level(sigma: float) -> None:
    diffusers = pytest.importorskip("diffusers")
    abar = diffusers.DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.to(torch.float64)
    t = diffusion_timestep(sigma, abar)
    ratio = (1 - abar) / abar
    # the closest timestep: no other t has a noise ratio nearer (2 sigma)^2
    assert abs(ratio[t] - (2 * sigma) ** 2) == pytest.approx(
        float((ratio - (2 * sigma) ** 2).abs().min()), abs=0
    )
    # x_t = sqrt(abar_t) (2 z - 1) carries noise std sqrt(abar_t) * 2 sigma = sqrt(1 - abar_t)
    assert math.sqrt(abar[t]) * 2 * sigma == pytest.approx(math.sqrt(1 - abar[t]), rel=0.02)
    assert torch.allclose(abar, _linear_alphas_cumprod())  # the DDPM paper's linear schedule


class OracleEps(nn.Module):
    """Predicts the true noise of ``x_t`` given the clean image (so x0_hat must be exact)."""

    def __init__(self, clean: torch.Tensor, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.clean, self.abar = clean, alphas_cumprod

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = float(self.abar[int(t[0])])
        return (x_t - math.sqrt(abar) * (2 * self.clean - 1)) / math.sqrt(1 - abar)


@pytest.mark.parametrize("sigma", [0.25, 0.5, 1.0])
def test_one_step_denoiser_with_an_oracle_returns_the_clean_image(sigma: float) -> None:
    abar = _linear_alphas_cumprod()
    clean = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noisy = clean + sigma * torch.randn(clean.shape, dtype=torch.float64)
    denoiser = DiffusionDenoiser(OracleEps(clean, abar), abar)
    assert torch.allclose(denoiser(noisy, sigma), clean, atol=1e-9)
    assert denoiser.timestep(sigma) == diffusion_timestep(sigma, abar)


# ------------------------------------------------------------------------------------------------
# the zoo kind, certification and dual routing through the runner


def _write_components(folder):
    from safetensors.torch import save_file

    from rsbench.models.archs import build_architecture
    from rsbench.weights.cache import sha256_file

    torch.manual_seed(0)
    paths = {}
    for name, arch, classes in (
        ("den", "small_denoiser", 1),
        ("rt", "pooled_mlp", 2),
    ):
        net = build_architecture(arch, classes, (1, 28, 28))
        if name == "den":  # a zero noise estimate: the identity denoiser
            nn.init.zeros_(net.out.weight)
            nn.init.zeros_(net.out.bias)
        path = folder / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        paths[name] = (path.name, sha256_file(path))
    return paths


def _zoo_file(folder, sigmas=(0.25, 0.5), dual_sigmas=(0.25, 0.5), classifier_sha=None):
    paths = _write_components(folder)
    layer = {"type": "normalize", "mean": [0.286], "std": [0.353]}
    models = [
        {
            "id": "toy-denoised",
            "kind": "denoised",
            "dataset": "fashion-mnist",
            "num_classes": 10,
            "input_shape": [1, 28, 28],
            "sigmas": list(sigmas),
            "denoiser": {
                "arch": "small_denoiser",
                "source": {"type": "file", "path": paths["den"][0]},
                "sha256": paths["den"][1],
            },
            "classifier": {  # the shipped noise-free classifier
                "arch": "fmnist_cnn",
                "input_layer": layer,
                "source": {"type": "package", "path": "embedded/embedded-fmnist-clean.safetensors"},
                "sha256": classifier_sha or CLEAN_SHA,
            },
        },
        {
            "id": "toy-router",
            "kind": "router",
            "dataset": "fashion-mnist",
            "num_classes": len(dual_sigmas),
            "input_shape": [1, 28, 28],
            "arch": "pooled_mlp",
            "train_sigma": 1.0,
            "experts": ["toy-denoised"] * len(dual_sigmas),
            "input_layer": layer,
            "source": {"type": "file", "path": paths["rt"][0]},
            "sha256": paths["rt"][1],
        },
        {
            "id": "toy-cascade",
            "kind": "cascade",
            "dataset": "fashion-mnist",
            "experts": ["toy-denoised"] * len(dual_sigmas),
            "sigmas": list(dual_sigmas),
        },
        {
            "id": "toy-dual",
            "kind": "dual",
            "dataset": "fashion-mnist",
            "router": "toy-router",
            "experts": ["toy-denoised"] * len(dual_sigmas),
            "sigmas": list(dual_sigmas),
            "sigma_router": 1.0,
        },
    ]
    path = folder / "zoo.yaml"
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    return path


def test_zoo_entry_round_trips_and_is_pinned(tmp_path) -> None:
    from rsbench.zoo.entry import entry_digest
    from rsbench.zoo.parse import parse_entry
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo([_zoo_file(tmp_path)], include_packaged=False)
    entry = zoo.get("toy-denoised")
    assert entry.kind == "denoised" and entry.sigmas == (0.25, 0.5) and entry.pinned
    again = parse_entry(entry.to_yaml_dict(), file=entry.zoo_file)
    assert entry_digest(again) == entry_digest(entry)
    assert zoo.get("toy-dual").experts == ("toy-denoised", "toy-denoised")


@pytest.mark.parametrize(
    ("dual_sigmas", "message"),
    [((0.25, 0.3), "0.3 is not served by 'toy-denoised'"), ((0.5, 0.5), "at the same sigma")],
)
def test_dual_over_a_denoised_expert_needs_served_distinct_sigmas(
    tmp_path, dual_sigmas, message
) -> None:
    from rsbench.zoo.registry import load_zoo

    with pytest.raises(ZooError, match=message):
        load_zoo([_zoo_file(tmp_path, dual_sigmas=dual_sigmas)], include_packaged=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sigmas": []}, "non-empty list"),
        ({"sigmas": [0.5, 0.5]}, "lists a sigma twice"),
        ({"denoiser": {"hub": "transformers", "repo_id": "a/b"}}, "use 'diffusers'"),
        ({"denoiser": {"hub": "diffusers", "repo_id": "a/b", "revision": "main"}}, "40-hex"),
        ({"classifier": {"hub": "transformers"}}, "either repo_id"),
        ({"classifier": {"arch": "fmnist_cnn", "source": {"type": "ftp"}}}, "source.type"),
        ({"denoiser": {"arch": "small_denoiser", "surce": {}}}, "did you mean 'source'"),
    ],
)
def test_bad_denoised_entries_name_the_field(change, message) -> None:
    from rsbench.zoo.parse import parse_entry

    raw = {
        "id": "d",
        "kind": "denoised",
        "dataset": "cifar10",
        "num_classes": 10,
        "input_shape": [3, 32, 32],
        "sigmas": [0.25],
        "denoiser": {"hub": "diffusers", "repo_id": "google/ddpm-cifar10-32", "revision": None},
        "classifier": {"hub": "transformers", "repo_id": "x/y", "revision": None, "resize": 224},
    }
    assert not parse_entry(raw).pinned  # valid, but no revision pins the hub components
    with pytest.raises(ZooError, match=message):
        parse_entry({**raw, **change})


def test_denoised_expert_certifies_at_each_sigma_with_its_own_identity(tmp_path) -> None:
    from rsbench.results.storage import read_results, read_run_json
    from rsbench.run.runconfig import resolve_config
    from rsbench.run.runner import run_certification
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo([_zoo_file(tmp_path)], include_packaged=False)
    entry = zoo.get("toy-denoised")
    with pytest.raises(ConfigError, match="pass --sigma"):
        resolve_config(entry, zoo=zoo)
    with pytest.raises(ConfigError, match="not 1"):
        resolve_config(entry, zoo=zoo, sigma=1.0)
    common = dict(zoo=zoo, n0=10, n=60, limit=2, stride=1)
    configs = [resolve_config(entry, sigma=s, **common) for s in (0.25, 0.5)]
    assert [c.kind for c in configs] == ["expert", "expert"]
    assert configs[0].identity() != configs[1].identity()
    (tmp_path / "b").mkdir()
    other = load_zoo([_zoo_file(tmp_path / "b", classifier_sha="0" * 64)], include_packaged=False)
    changed = resolve_config(other.get("toy-denoised"), sigma=0.5, **{**common, "zoo": other})
    assert changed.identity() != configs[1].identity()  # the classifier's bytes enter the identity
    result = run_certification(configs[1], zoo, tmp_path / "runs")
    frame = read_results(result.run_dir)
    assert len(frame) == 2 and set(frame["sigma"]) == {0.5} and set(frame["kind"]) == {"expert"}
    assert read_run_json(result.run_dir)["zoo_entry"]["kind"] == "denoised"


def test_dual_over_one_denoised_expert_routes_between_its_sigmas(tmp_path) -> None:
    from rsbench.api import load_dual
    from rsbench.results.storage import read_results
    from rsbench.run.runconfig import resolve_config
    from rsbench.run.runner import run_certification
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo([_zoo_file(tmp_path)], include_packaged=False)
    config = resolve_config(zoo.get("toy-dual"), zoo=zoo, n0=10, n=60, limit=4, stride=1)
    assert config.expert_ids == ("toy-denoised", "toy-denoised") and config.sigmas == (0.25, 0.5)
    frame = read_results(run_certification(config, zoo, tmp_path / "runs").run_dir)
    assert len(frame) == 4
    routed = frame[frame["router_choice"] >= 0]
    assert set(routed["sigma"]) <= {0.25, 0.5}
    assert all(routed["sigma"] == np.array([0.25, 0.5])[routed["router_choice"].to_numpy()])
    dual = load_dual(zoo, "toy-dual")
    assert [e.sigma for e in dual.experts] == [0.25, 0.5]
    assert dual.experts[0].base.classifier is dual.experts[1].base.classifier


def test_router_labels_over_a_denoised_expert_at_two_sigmas(tmp_path) -> None:
    from rsbench.train.router import train_router
    from rsbench.train.router_config import RouterTrainConfig, load_experts
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo([_zoo_file(tmp_path)], include_packaged=False)
    with pytest.raises(ConfigError, match="pass --sigmas"):
        load_experts(zoo, ["toy-denoised", "toy-denoised"])
    config = RouterTrainConfig(
        experts=("toy-denoised", "toy-denoised"),
        sigmas=(0.25, 0.5),
        router_id="toy2-router",
        dual_id="toy2-dual",
        arch="pooled_mlp",
        dataset="fashion-mnist-embedded",
        split="test",
        train_images=40,
        label_n0=5,
        label_n=20,
        epochs=1,
        batch_size=20,
        label_cache=str(tmp_path / "labels"),
    )
    result = train_router(config, tmp_path / "out", zoo_file=tmp_path / "r.yaml", zoo=zoo)
    assert set(result.label_stats["best_share"]) == {"toy-denoised@0.25", "toy-denoised@0.5"}
    assert result.dual_entry.experts == ("toy-denoised", "toy-denoised")
    assert result.dual_entry.sigmas == (0.25, 0.5)
    assert len(list((tmp_path / "labels").glob("*/*"))) == 2  # one label key per sigma


def test_small_denoiser_is_registered_small_and_sigma_conditional() -> None:
    from rsbench.models.archs import DENOISER_ARCHITECTURES, build_architecture

    assert "small_denoiser" in DENOISER_ARCHITECTURES
    torch.manual_seed(0)
    net = build_architecture("small_denoiser", 1, (1, 28, 28)).eval()
    assert sum(p.numel() for p in net.parameters()) == 101_584
    z = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        per_image = net(z, torch.tensor([0.25, 0.5, 1.0]))
        for i, s in enumerate((0.25, 0.5, 1.0)):
            assert torch.allclose(per_image[i], net(z[i : i + 1], s)[0], atol=1e-6)
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_architecture("small_denoiser", 1, (1, 30, 30))


def test_cascade_over_one_denoised_expert_runs_its_stages_at_served_sigmas(tmp_path) -> None:
    from rsbench.api import load_cascade
    from rsbench.results.storage import read_results
    from rsbench.run.runconfig import resolve_config
    from rsbench.run.runner import run_certification
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo([_zoo_file(tmp_path)], include_packaged=False)
    config = resolve_config(zoo.get("toy-cascade"), zoo=zoo, n0=10, n=60, limit=3, stride=1)
    assert config.sigmas == (0.5, 0.25)  # largest sigma first
    frame = read_results(run_certification(config, zoo, tmp_path / "runs").run_dir)
    assert len(frame) == 3 and set(frame["sigma"]) <= {0.25, 0.5}
    cascade = load_cascade(zoo, "toy-cascade")
    bases = [stage.base for stage in cascade.stages]
    assert [b.sigma for b in bases] == [0.5, 0.25]  # largest sigma first
    assert bases[0].classifier is bases[1].classifier


def test_sweep_runs_a_denoised_id_at_every_served_sigma(tmp_path) -> None:
    from click.testing import CliRunner

    from rsbench.cli.main import main_group

    zoo = _zoo_file(tmp_path)
    sweep = tmp_path / "sweep.yaml"
    options = {"zoo": str(zoo), "n0": 10, "n": 20, "limit": 1, "out": str(tmp_path / "r")}
    sweep.write_text(
        yaml.safe_dump({"ids": ["toy-denoised"], "protocols": ["cpu"], "options": options})
    )
    result = CliRunner().invoke(main_group, ["sweep", str(sweep), "--no-leaderboard"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_dir())
    assert len(names) == 2 and "-s0.25-" in names[0] and "-s0.5-" in names[1]


def test_leaderboard_ranks_a_denoised_expert_at_each_sigma_with_its_time(tmp_path) -> None:
    from rsbench.report.leaderboard import build_leaderboard
    from rsbench.results.storage import read_results
    from rsbench.run.runconfig import resolve_config
    from rsbench.run.runner import run_certification
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo([_zoo_file(tmp_path)], include_packaged=False)
    dirs = []
    for sigma in (0.25, 0.5):
        config = resolve_config(
            zoo.get("toy-denoised"), zoo=zoo, sigma=sigma, n0=10, n=40, limit=2, stride=1
        )
        dirs.append(run_certification(config, zoo, tmp_path / "runs").run_dir)
    board = build_leaderboard(read_results(dirs), radii=[0.0, 0.25])
    rows = board.frame[board.frame["model_id"] == "toy-denoised"]
    assert sorted(rows["sigma"].astype(str)) == ["0.25", "0.50"]
    assert (rows["seconds_per_image"] > 0).all()  # the composed model's measured time
    assert len(board.frame) > len(rows)  # envelope / oracle over the two sigmas


def test_dry_run_throughput_runs_the_denoiser_on_every_sample() -> None:
    from rsbench.run.certifiers import measure_throughput

    calls = []

    class Counting(nn.Module):
        def forward(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
            calls.append(z.shape[0])
            return z

    model = DenoisedClassifier(Counting(), Constant(0, 3), 0.5)
    smoothed = SmoothedClassifier(model, 3, 0.5, batch_size=100)
    assert measure_throughput(smoothed, torch.rand(1, 4, 4), seconds=0.01) > 0
    assert sum(calls) >= 200  # warm-up + at least one timed call, each sample denoised

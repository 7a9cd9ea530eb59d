"""The Hub-architecture path of denoised experts, offline, with tiny random-weight configurations.

``diffusers`` ``UNet2DModel`` + ``DDPMScheduler`` and a ``transformers`` ViT classifier are written
with ``save_pretrained`` into a temporary folder and loaded by the zoo through the same
``from_pretrained`` code the published entries use (a ``path`` instead of ``repo_id`` +
``revision``); nothing touches the network. Skipped when the optional extra is not installed.
"""

from __future__ import annotations

import math

import pytest
import torch
import yaml

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from rsbench.engine import stats  # noqa: E402
from rsbench.models.denoised import DenoisedClassifier, DiffusionDenoiser, diffusion_timestep  # noqa: E402


@pytest.fixture(scope="module")
def hub_zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=None,
        add_attention=False,
    )
    unet.save_pretrained(folder / "ddpm")
    diffusers.DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder / "ddpm")
    vit_config = transformers.ViTConfig(
        image_size=16,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=10,
    )
    transformers.ViTForImageClassification(vit_config).save_pretrained(folder / "vit")
    entry = {
        "id": "tiny-cifar10-ddpm-vit",
        "kind": "denoised",
        "dataset": "cifar10",
        "num_classes": 10,
        "input_shape": [3, 32, 32],
        "sigmas": [0.25, 0.5, 1.0],
        "denoiser": {"hub": "diffusers", "path": "ddpm"},
        "classifier": {
            "hub": "transformers",
            "path": "vit",
            "resize": 16,
            "input_layer": {"type": "normalize", "mean": [0.5] * 3, "std": [0.5] * 3},
        },
    }
    path = folder / "zoo.yaml"
    path.write_text(yaml.safe_dump({"models": [entry]}, sort_keys=False))
    return path


def test_hub_denoised_entry_loads_and_certifies_offline(hub_zoo, monkeypatch) -> None:
    from rsbench.engine.smoothing import SmoothedClassifier
    from rsbench.models.loading import load_model
    from rsbench.zoo.registry import load_zoo

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = load_zoo([hub_zoo], include_packaged=False).get("tiny-cifar10-ddpm-vit")
    model = load_model(entry, sigma=0.5)
    assert isinstance(model, DenoisedClassifier) and isinstance(model.denoiser, DiffusionDenoiser)
    scheduler = diffusers.DDPMScheduler.from_pretrained(hub_zoo.parent / "ddpm")
    assert torch.equal(
        model.denoiser.alphas_cumprod, scheduler.alphas_cumprod.to(torch.float64)
    )  # the timestep table is the scheduler's own
    assert model.denoiser.timestep(0.5) == diffusion_timestep(0.5, scheduler.alphas_cumprod)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        denoised = model.denoiser(images + 0.5 * torch.randn_like(images), 0.5)
        logits = model(images)
    assert (
        denoised.shape == images.shape and 0 <= float(denoised.min()) <= float(denoised.max()) <= 1
    )
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    cert = SmoothedClassifier(model, 10, 0.5, batch_size=50).certify(
        images[0], n0=10, n=50, alpha=0.001, seed=1
    )
    assert 0 <= cert.nA <= 50 and cert.radius <= float(stats.max_radius(0.5, 50, 0.001))


def test_one_step_formula_on_the_tiny_unet(hub_zoo) -> None:
    # With the UNet's output as eps: x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar), mapped to [0, 1].
    from rsbench.models.loading import load_model
    from rsbench.zoo.registry import load_zoo

    entry = load_zoo([hub_zoo], include_packaged=False).get("tiny-cifar10-ddpm-vit")
    denoiser = load_model(entry).denoiser
    z = torch.rand(3, 3, 32, 32)
    t = denoiser.timestep(0.25)
    abar = float(denoiser.alphas_cumprod[t])
    x_t = math.sqrt(abar) * (2 * z - 1)
    with torch.no_grad():
        eps = denoiser.eps_model.unet(x_t, torch.full((3,), t)).sample
        expected = (((x_t - math.sqrt(1 - abar) * eps) / math.sqrt(abar) + 1) / 2).clamp(0, 1)
        assert torch.allclose(denoiser(z, 0.25), expected, atol=1e-6)


def test_published_cifar10_entry_is_pinned_and_not_cached_in_an_empty_cache(tmp_path) -> None:
    from rsbench.models import components
    from rsbench.zoo.registry import load_zoo

    entry = load_zoo().get("cifar10-ddpm-vit-denoised")
    assert entry.pinned and entry.sigmas == (0.25, 0.5, 1.0)
    assert all(len(getattr(entry, role)["revision"]) == 40 for role in ("denoiser", "classifier"))
    assert not components.is_cached(entry, tmp_path)  # an empty cache: nothing fetched, no network


def _cifar_root(tmp_path):
    """cifar-10-batches-py/test_batch with the first 10 real test images shipped in tests/data."""
    import pickle
    from pathlib import Path

    import numpy as np

    csv = Path(__file__).parent / "data" / "cifar10_first10" / "cifar10_test_first10.csv.gz"
    rows = np.loadtxt(csv, delimiter=",")  # loadtxt reads .gz itself
    hwc = rows[:, 1:].astype(np.uint8).reshape(-1, 32, 32, 3)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {
        "data": hwc.transpose(0, 3, 1, 2).reshape(-1, 3072),
        "labels": rows[:, 0].astype(int).tolist(),
    }
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    return folder.parent


def test_cli_certifies_the_hub_denoised_entry_on_real_cifar10_images(hub_zoo, tmp_path) -> None:
    from click.testing import CliRunner

    from rsbench.cli.main import main_group
    from rsbench.results.storage import read_results

    out = tmp_path / "runs"
    args = [
        "certify", "tiny-cifar10-ddpm-vit", "--sigma", "1", "--zoo", str(hub_zoo),
        "--data-root", str(_cifar_root(tmp_path)), "--stride", "1", "--limit", "2", "--n0", "8", "--n", "32",
        "--batch", "40", "--out", str(out), "--no-leaderboard", "--threads", "1",
    ]  # fmt: skip
    result = CliRunner().invoke(main_group, args)
    assert result.exit_code == 0, result.output
    frame = read_results(next(out.iterdir()))
    assert len(frame) == 2 and set(frame["sigma"]) == {1.0} and set(frame["dataset"]) == {"cifar10"}

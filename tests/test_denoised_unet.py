"""The embedded diffusion denoiser (``small_ddpm_unet``) end to end, on random weights.

Known answers: the one-step estimate equals what ``diffusers.DDPMScheduler.step`` computes from the
same noise prediction (``pred_original_sample``); feeding the true noise gives back the clean image
through the padded path; the training target is the noise that ``DDPMScheduler.add_noise`` turns
into the model's input; a denoised entry over a random U-Net certifies through the CLI. And a
denoiser ``input_layer`` other than ``none`` is refused with one line.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers.unet_zoo import SIGMAS, unet_denoised_zoo
from torch import nn

diffusers = pytest.importorskip("diffusers")

from rsbench.errors import ZooError  # noqa: E402
from rsbench.models.denoised import DiffusionDenoiser  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def unet() -> DiffusionDenoiser:
    from rsbench.models.archs import build_architecture

    torch.manual_seed(0)
    net = build_architecture("small_ddpm_unet", 1, (1, 28, 28)).eval()
    # random weights with a visible effect: the zero-initialised output conv would predict eps = 0
    conv = net.eps_model.unet.conv_out
    nn.init.normal_(conv.weight, std=0.05)
    return net


def _images(count: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_registered_small_and_padded_inside_the_model(unet) -> None:
    from rsbench.models.archs import DENOISER_ARCHITECTURES

    assert "small_ddpm_unet" in DENOISER_ARCHITECTURES
    assert isinstance(unet, DiffusionDenoiser) and unet.pad == (2, 2)
    assert isinstance(unet.eps_model.unet, diffusers.UNet2DModel)
    params = sum(p.numel() for p in unet.state_dict().values())
    assert params * 4 <= 10 * 2**20  # float32 safetensors stay under 10 MB
    assert torch.equal(unet.alphas_cumprod, diffusers.DDPMScheduler().alphas_cumprod.double())
    z = _images()
    with torch.no_grad():
        out = unet(z, 0.5)
    assert out.shape == z.shape and 0 <= float(out.min()) <= float(out.max()) <= 1
    assert not torch.allclose(out, z.clamp(0, 1), atol=1e-3)  # it does something


@pytest.mark.parametrize("sigma", SIGMAS)
def test_one_step_estimate_is_the_schedulers_pred_original_sample(unet, sigma: float) -> None:
    scheduler = diffusers.DDPMScheduler()  # clip_sample: [-1, 1], i.e. our clamp to [0, 1]
    z = _images() + sigma * torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    t = unet.timestep(sigma)
    padded = nn.functional.pad(z, (2, 2, 2, 2), value=0.0)  # pixel 0 around the noisy image
    x_t = math.sqrt(float(scheduler.alphas_cumprod[t])) * (2 * padded - 1)
    with torch.no_grad():
        eps = unet.eps_model(x_t, torch.full((3,), t))
        x0 = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(0))
        expected = ((x0.pred_original_sample + 1) / 2)[..., 2:30, 2:30]
        assert torch.allclose(unet(z, sigma), expected, atol=1e-5)


def test_one_sigma_per_image_equals_one_call_per_sigma(unet) -> None:
    """Training runs a batch with mixed sigmas; serving runs one sigma: the same function."""
    z = _images(3, seed=4)
    with torch.no_grad():
        mixed = unet(z, torch.tensor(SIGMAS))
        apart = torch.cat([unet(z[i : i + 1], s) for i, s in enumerate(SIGMAS)])
    assert torch.allclose(mixed, apart, atol=1e-5)


class PaddedOracle(nn.Module):
    """The true noise of ``x_t`` for known clean images (28x28, zero-padded like the model)."""

    def __init__(self, clean: torch.Tensor, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.clean = nn.functional.pad(clean, (2, 2, 2, 2), value=0.0)
        self.abar = alphas_cumprod

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t].to(x_t.dtype).view(-1, 1, 1, 1)
        return (x_t - abar.sqrt() * (2 * self.clean - 1)) / (1 - abar).sqrt()


@pytest.mark.parametrize("sigma", SIGMAS)
def test_the_true_noise_gives_back_the_clean_image_through_the_padding(sigma: float) -> None:
    abar = diffusers.DDPMScheduler().alphas_cumprod.double()
    clean = _images(4).double()
    noisy = clean + sigma * torch.randn(clean.shape, dtype=torch.float64)
    denoiser = DiffusionDenoiser(PaddedOracle(clean, abar), abar, pad=(2, 2))
    assert torch.allclose(denoiser(noisy, sigma), clean, atol=1e-9)
    # the training loss of the oracle is 0 (per-image sigmas), of a wrong guess is not
    levels = torch.full((4,), sigma, dtype=torch.float64)
    assert float(denoiser.eps_loss(noisy, levels, clean)) < 1e-18
    assert float(denoiser.eps_loss(noisy, levels, 1 - clean)) > 1e-3


def test_the_training_target_is_the_noise_add_noise_turns_into_x_t(unet) -> None:
    """eps_loss's target ``eps`` satisfies DDPMScheduler.add_noise(x0, eps, t) == x_t."""
    scheduler = diffusers.DDPMScheduler()
    clean = _images(3, seed=5)
    noisy = clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(6))
    t = unet.timestep(0.5)
    abar = float(scheduler.alphas_cumprod[t])
    x0 = 2 * nn.functional.pad(clean, (2, 2, 2, 2)) - 1
    x_t = math.sqrt(abar) * (2 * nn.functional.pad(noisy, (2, 2, 2, 2)) - 1)
    target = (x_t - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
    steps = torch.full((3,), t)
    assert torch.allclose(scheduler.add_noise(x0, target, steps), x_t, atol=1e-6)
    with torch.no_grad():
        eps = unet.eps_model(x_t, steps)[..., 2:30, 2:30]
        loss = unet.eps_loss(noisy, torch.full((3,), 0.5), clean)
    assert float(loss) == pytest.approx(
        float(((eps - target[..., 2:30, 2:30]) ** 2).mean()), rel=1e-4
    )


# ------------------------------------------------------------------------------------------------
# a denoised entry over a random U-Net, through the zoo and the CLI


def test_cli_certifies_a_random_unet_denoised_entry(tmp_path) -> None:
    from click.testing import CliRunner

    from rsbench.cli.main import main_group
    from rsbench.results.storage import read_results

    zoo = unet_denoised_zoo(tmp_path)
    out = tmp_path / "runs"
    args = [
        "certify", "tiny-unet-denoised", "--sigma", "0.5", "--zoo", str(zoo), "--indices", "0,20",
        "--n0", "8", "--n", "32", "--batch", "40", "--out", str(out), "--no-leaderboard",
        "--threads", "1",
    ]  # fmt: skip
    result = CliRunner().invoke(main_group, args)
    assert result.exit_code == 0, result.output
    frame = read_results(next(out.iterdir()))
    assert len(frame) == 2 and set(frame["sigma"]) == {0.5}


def test_a_denoiser_input_layer_is_refused_with_one_line(tmp_path, capsys) -> None:
    from rsbench.cli.main import main
    from rsbench.models.loading import load_model
    from rsbench.zoo.registry import load_zoo

    zoo = unet_denoised_zoo(
        tmp_path, denoiser_layer={"type": "normalize", "mean": [0.5], "std": [0.5]}
    )
    entry = load_zoo([zoo], include_packaged=False).get("tiny-unet-denoised")
    with pytest.raises(ZooError, match="denoiser's input_layer is 'normalize'"):
        load_model(entry, sigma=0.5)
    args = ["certify", "tiny-unet-denoised", "--sigma", "0.5", "--zoo", str(zoo), "--limit", "1"]
    args += ["--n0", "8", "--n", "16", "--out", str(tmp_path / "runs"), "--no-leaderboard"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code not in (0, None)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "input_layer" in errors[0] and "Traceback" not in err
    # an explicit `type: none` is what the denoiser gets anyway: accepted
    ok = unet_denoised_zoo(tmp_path, denoiser_layer={"type": "none"})
    assert load_model(load_zoo([ok], include_packaged=False).get("tiny-unet-denoised"), sigma=0.5)

"""A dual over one denoised expert at three sigmas, routed by ``experts-top`` (issue 25).

The router over the experts' outputs looks at the largest-sigma expert only. When the three
experts are one ``denoised`` entry served at three sigmas, "the largest-sigma expert" is that entry
served at the largest sigma: the router entry must record that sigma (``router_input.sigmas``), and
the loaded router must compute ``softmax(classifier(denoiser(z, sigma_max)))``. Known answers on a
random U-Net (the shipped classifier behind it): the recorded input, the router's features against
the base model at each served sigma (equal at the largest, different at the others), and the dual
certifying through the library.
"""

from __future__ import annotations

import pytest
import torch
from helpers.unet_zoo import SIGMAS, unet_denoised_zoo

pytest.importorskip("diffusers")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize("order", ["0.25,0.5,1", "1,0.5,0.25"])
def test_experts_top_over_one_denoised_expert_serves_its_largest_sigma(tmp_path, order) -> None:
    from click.testing import CliRunner

    from rsbench.api import load_dual
    from rsbench.cli.main import main_group
    from rsbench.data.dataset import load_dataset
    from rsbench.models.loading import load_model
    from rsbench.models.router_input import ExpertsRouter
    from rsbench.zoo.entry import thaw
    from rsbench.zoo.files import read_zoo_file
    from rsbench.zoo.registry import load_zoo

    zoo_in = unet_denoised_zoo(tmp_path, eps_std=0.05, name="denoised.yaml")
    zoo_file = tmp_path / "dual.yaml"
    ids = ["tiny-unet-denoised"] * 3
    args = ["train", "router", *ids, "--sigmas", order, "--id", "d-router", "--dual-id", "d-dual"]
    args += ["--router-input", "experts-top", "--features", "softmax", "--sigma-router", "1"]
    args += ["--dataset", "fashion-mnist-embedded", "--split", "test", "--indices", "0:12"]
    args += ["--label-n0", "2", "--label-n", "8", "--label-alpha", "0.3", "--epochs", "1"]
    args += ["--batch-size", "6"]
    args += ["--label-cache", str(tmp_path / "labels"), "--out", str(tmp_path / "r")]
    args += ["--zoo-file", str(zoo_file), "--zoo", str(zoo_in), "--threads", "1"]
    args += ["--data-root", str(tmp_path / "no-data-needed")]
    result = CliRunner().invoke(main_group, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output

    router_entry, dual_entry = read_zoo_file(zoo_file)
    assert thaw(router_entry.router_input) == {
        "type": "experts-top",
        "experts": ["tiny-unet-denoised"],
        "features": "softmax",
        "sigmas": [1.0],
    }
    assert list(dual_entry.sigmas) == [float(s) for s in order.split(",")]

    zoo = load_zoo([zoo_in, zoo_file])
    router = load_model(router_entry, zoo=zoo)
    assert isinstance(router, ExpertsRouter) and len(router.experts) == 1
    expert = load_model(zoo.get("tiny-unet-denoised"))
    z = load_dataset("fashion-mnist-embedded", "test").images([100, 101, 102])
    z = z + torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        feats = router.expert_features(z)
        served = {s: torch.softmax(expert.at_sigma(s)(z), dim=-1) for s in SIGMAS}
    torch.testing.assert_close(feats, served[1.0], rtol=1e-5, atol=1e-6)
    for s in (0.25, 0.5):  # the denoiser's timestep differs, so its features would too
        assert (feats - served[s]).abs().max() > 1e-4

    smoothed = load_dual(zoo, "d-dual")
    images = load_dataset("fashion-mnist-embedded", "test").images([200, 201])
    assert len(smoothed.certify_batch(images, 4, 16, 0.01)) == 2


def test_the_shipped_ddpm_dual_is_refused_on_its_routers_training_images(capsys) -> None:
    """``embedded-fmnist-ddpm-ft-dual``'s router was labelled and trained on train images 0..599."""
    from rsbench.cli.main import main

    args = ["certify", "embedded-fmnist-ddpm-ft-dual", "--dataset", "fashion-mnist"]
    args += ["--split", "train", "--indices", "5,599", "--n0", "10", "--n", "20"]
    with pytest.raises(SystemExit) as refused:
        main([*args, "--out", "/nonexistent-rsbench-out"])
    assert refused.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was labelled and trained on 2 of the 2 images" in err[0], err


def test_the_shipped_ddpm_router_looks_at_the_denoised_expert_at_sigma_1() -> None:
    from rsbench.zoo.entry import thaw
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo()
    router = zoo.get("embedded-fmnist-ddpm-ft-router")
    assert thaw(router.router_input) == {
        "type": "experts-top",
        "experts": ["embedded-fmnist-ddpm-ft"],
        "sigmas": [1.0],
        "features": "softmax",
    }
    dual = zoo.get("embedded-fmnist-ddpm-ft-dual")
    assert list(dual.experts) == ["embedded-fmnist-ddpm-ft"] * 3
    assert list(dual.sigmas) == [0.25, 0.5, 1.0] and dual.sigma_router == 1.0

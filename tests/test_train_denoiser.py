"""`rsbench train denoiser`: seeded, resumable, safetensors, a denoised zoo entry that certifies."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from rsbench.errors import ConfigError
from rsbench.train.denoiser import DenoiserTrainConfig, train_denoiser

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _tiny(**overrides) -> DenoiserTrainConfig:
    values = dict(
        dataset="fashion-mnist-embedded",
        split="test",
        sigmas=(0.25, 1.0),
        epochs=2,
        batch_size=32,
        limit=96,
        eval_limit=0,
        seed=3,
        model_id="tiny-denoised",
    )
    values.update(overrides)
    return DenoiserTrainConfig(**values)


class _Stop(Exception):
    pass


def test_interrupted_training_resumes_to_the_same_weights(tmp_path) -> None:
    whole = train_denoiser(_tiny(), tmp_path / "a")

    def stop(event) -> None:
        if event.phase == "epoch" and event.epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train_denoiser(_tiny(), tmp_path / "b", progress=stop)
    assert (tmp_path / "b" / "tiny-denoised-denoiser.checkpoint.pt").is_file()
    events = []
    resumed = train_denoiser(_tiny(), tmp_path / "b", progress=events.append)
    assert events[0].resumed_from == 1
    assert resumed.sha256 == whole.sha256  # bit for bit
    assert resumed.entry is None  # no classifier: weights only
    other = train_denoiser(_tiny(seed=4), tmp_path / "c")
    assert other.sha256 != whole.sha256


def test_bad_settings_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="sigma"):
        train_denoiser(_tiny(sigmas=(0.5, -1.0)), tmp_path)
    with pytest.raises(ConfigError, match="repeat"):
        train_denoiser(_tiny(sigmas=(0.5, 0.5)), tmp_path)
    with pytest.raises(ConfigError, match="lr"):
        train_denoiser(_tiny(lr=0.0), tmp_path)


def test_cli_writes_a_denoised_entry_that_certifies(tmp_path) -> None:
    from rsbench.cli.main import main_group as main
    from rsbench.run.runconfig import resolve_config
    from rsbench.run.runner import run_certification
    from rsbench.zoo.registry import load_zoo

    zoo_file = tmp_path / "zoo.yaml"
    args = [
        "train", "denoiser", "--dataset", "fashion-mnist-embedded", "--split", "test",
        "--sigmas", "0.5,1", "--epochs", "1", "--limit", "64", "--eval-limit", "0",
        "--classifier", "embedded-fmnist-clean", "--id", "cli-denoised",
        "--out", str(tmp_path / "out"), "--zoo-file", str(zoo_file), "--threads", "1",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    zoo = load_zoo([zoo_file])
    entry = zoo.get("cli-denoised")
    assert entry.kind == "denoised" and entry.sigmas == (0.5, 1.0) and entry.pinned
    assert entry.classifier["sha256"] == zoo.get("embedded-fmnist-clean").sha256
    assert "rsbench train denoiser" in entry.recipe["command"]
    config = resolve_config(entry, zoo=zoo, sigma=1.0, n0=10, n=40, limit=2)
    run = run_certification(config, zoo, tmp_path / "runs")
    assert run.complete and run.written == 2
    bad = CliRunner().invoke(main, [*args[:8], "--sigmas", "a,b"])
    assert bad.exit_code != 0 and "comma list" in bad.output


def test_cli_sgd_step_recipe_is_recorded_and_its_command_reproduces_the_weights(tmp_path) -> None:
    """The shared optimiser options reach the denoiser: momentum and the step schedule are used,
    recorded in the command, and that command trains the same weights again."""
    import json
    import shlex

    from rsbench.cli.main import main_group as main

    args = [
        "train", "denoiser", "--dataset", "fashion-mnist-embedded", "--split", "test",
        "--sigmas", "0.5", "--epochs", "2", "--batch-size", "16", "--limit", "32",
        "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.8", "--schedule", "step",
        "--step-size", "1", "--gamma", "0.5", "--id", "sgd-dn", "--threads", "1",
        "--out", str(tmp_path / "a"),
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "a" / "sgd-dn-denoiser.train.json").read_text())
    assert record["config"]["momentum"] == 0.8 and record["config"]["gamma"] == 0.5
    assert [h["lr_end"] for h in record["history"]] == pytest.approx([0.005, 0.0025])
    argv = shlex.split(record["command"])
    assert argv[:3] == ["rsbench", "train", "denoiser"]
    assert (
        "--momentum 0.8" in record["command"] and "--step-size 1 --gamma 0.5" in record["command"]
    )
    argv = argv[1 : argv.index("--out")] + ["--out", str(tmp_path / "b")]
    again = CliRunner().invoke(main, argv)
    assert again.exit_code == 0, again.output
    assert (
        json.loads((tmp_path / "b" / "sgd-dn-denoiser.train.json").read_text())["sha256"]
        == (record["sha256"])
    )


# ------------------------------------------------------------------------------------------------
# the diffusion denoiser (small_ddpm_unet) and the trainer's own noise purpose


def test_ddpm_unet_trains_with_the_eps_loss_resumes_and_records_its_timesteps(tmp_path) -> None:
    pytest.importorskip("diffusers")
    import json

    tiny = _tiny(arch="small_ddpm_unet", sigmas=(0.25, 0.5, 1.0), limit=16, batch_size=8)
    whole = train_denoiser(tiny, tmp_path / "a")

    def stop(event) -> None:
        if event.phase == "epoch" and event.epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train_denoiser(tiny, tmp_path / "b", progress=stop)
    assert train_denoiser(tiny, tmp_path / "b").sha256 == whole.sha256  # bit for bit
    record = json.loads((tmp_path / "a" / "tiny-denoised-denoiser.train.json").read_text())
    assert record["objective"] == "ddpm-eps"
    assert record["timesteps"] == {"0.25": 144, "0.5": 258, "1": 396}  # DDPMScheduler's table
    assert record["config"]["noise_purpose"] == "denoiser-training"
    assert whole.history[-1]["loss"] < whole.history[0]["loss"] * 1.5  # finite, not diverging


def test_the_denoiser_trainer_has_its_own_noise_purpose(tmp_path) -> None:
    from rsbench.engine.noise import PURPOSES
    from rsbench.train.denoiser import command_line

    assert "denoiser-training" in PURPOSES
    own = train_denoiser(_tiny(epochs=1), tmp_path / "a")
    shared = train_denoiser(_tiny(epochs=1, noise_purpose="training"), tmp_path / "b")
    assert own.sha256 != shared.sha256  # another stream: the router trainer's is "training"
    assert "--noise-purpose" not in command_line(_tiny())
    assert "--noise-purpose training" in command_line(_tiny(noise_purpose="training"))
    with pytest.raises(ConfigError, match="noise_purpose"):
        train_denoiser(_tiny(noise_purpose="select"), tmp_path / "c")

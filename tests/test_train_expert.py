"""Expert training: determinism, resume after interruption, outputs, zoo entry; the embedded experts."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from rsbench.errors import ConfigError, WeightsError
from rsbench.train.common import paths_for
from rsbench.train.expert import ExpertTrainConfig, TrainEvent, train_expert
from rsbench.weights.cache import sha256_file

EMBEDDED = Path(__file__).resolve().parents[1] / "rsbench" / "embedded"
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _tiny(**overrides) -> ExpertTrainConfig:
    """A few seconds of training on the shipped images (no Debian files needed)."""
    values = dict(
        dataset="fashion-mnist-embedded",
        split="test",
        arch="fmnist_cnn",
        train_sigma=0.5,
        epochs=3,
        batch_size=64,
        limit=256,
        eval_limit=0,
        seed=3,
        model_id="tiny-fmnist-s0.50",
    )
    values.update(overrides)
    return ExpertTrainConfig(**values)


class _Interrupt(Exception):
    pass


def _stop_after(epoch: int):
    def callback(event: TrainEvent) -> None:
        if event.phase == "epoch" and event.epoch == epoch:
            raise _Interrupt

    return callback


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_resume_after_interruption_gives_the_same_weights(tmp_path):
    config = _tiny()
    straight = train_expert(config, tmp_path / "straight")

    out = tmp_path / "interrupted"
    with pytest.raises(_Interrupt):
        train_expert(config, out, progress=_stop_after(2))
    checkpoint = paths_for(out, config.resolved_id())["checkpoint"]
    assert checkpoint.is_file()
    assert not paths_for(out, config.resolved_id())["weights"].exists()
    events: list[TrainEvent] = []
    resumed = train_expert(config, out, progress=events.append)
    assert events[0].phase == "start" and events[0].resumed_from == 2
    assert [e.epoch for e in events if e.phase == "epoch"] == [3]
    assert not checkpoint.exists()  # removed once the run is complete

    a, b = load_file(straight.weights), load_file(resumed.weights)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.sha256 == resumed.sha256 == sha256_file(resumed.weights)
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]


def test_seed_changes_weights_and_training_learns(tmp_path):
    first = train_expert(_tiny(epochs=1), tmp_path / "a")
    other = train_expert(_tiny(epochs=1, seed=4), tmp_path / "b")
    assert first.sha256 != other.sha256
    # a stronger run on the 2,000 shipped images learns far beyond chance (10%)
    learnt = train_expert(
        _tiny(epochs=4, limit=None, batch_size=100, lr=0.05, seed=0, model_id="learn-s0.50"),
        tmp_path / "c",
    )
    assert learnt.history[-1]["train_noisy_accuracy"] > 0.5
    assert learnt.history[-1]["loss"] < learnt.history[0]["loss"]


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    config = _tiny()
    with pytest.raises(_Interrupt):
        train_expert(config, tmp_path, progress=_stop_after(1))
    with pytest.raises(WeightsError, match="another configuration.*--no-resume"):
        train_expert(_tiny(lr=0.01), tmp_path)
    result = train_expert(_tiny(lr=0.01, epochs=1), tmp_path, resume=False)
    assert result.weights.is_file()


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="train_sigma"):
        train_expert(_tiny(train_sigma=-0.5), tmp_path)
    with pytest.raises(ConfigError, match="optimizer"):
        train_expert(_tiny(optimizer="rmsprop"), tmp_path)
    with pytest.raises(ConfigError, match="lr"):
        train_expert(_tiny(lr=-1.0), tmp_path)


def test_outputs_zoo_entry_validates_and_loads(tmp_path):
    from rsbench.models.loading import load_model
    from rsbench.zoo.files import read_zoo_file

    zoo_file = tmp_path / "zoo" / "my_zoo.yaml"
    config = _tiny(epochs=1, optimizer="adam", lr=1e-3, schedule="step", step_size=1)
    result = train_expert(config, tmp_path / "out", zoo_file=zoo_file, keep_checkpoint=True)
    assert paths_for(tmp_path / "out", config.resolved_id())["checkpoint"].is_file()

    tensors = load_file(result.weights)
    assert sorted(tensors) == sorted(f"{i}.{p}" for i in (0, 2, 5, 7) for p in ("weight", "bias"))

    (entry,) = read_zoo_file(zoo_file)
    assert entry.id == "tiny-fmnist-s0.50" and entry.kind == "expert"
    assert entry.dataset == "fashion-mnist" and entry.train_sigma == 0.5
    assert entry.sha256 == result.sha256 == sha256_file(result.weights)
    assert entry.source.type == "file"
    assert (zoo_file.parent / entry.source.path).resolve() == result.weights.resolve()
    assert entry.input_layer.type == "normalize" and entry.input_layer.mean == (0.286,)
    recipe = entry.recipe
    assert recipe["seed"] == 3 and recipe["epochs"] == 1 and recipe["optimizer"] == "adam"
    assert recipe["data"]["dataset"] == "fashion-mnist-embedded" and recipe["data"]["limit"] == 256
    assert recipe["command"].startswith("rsbench train expert --dataset fashion-mnist-embedded")
    assert "--step-size 1 --gamma 0.1 --split test --limit 256" in recipe["command"]

    model = load_model(entry)
    x = torch.rand(4, 1, 28, 28)
    from rsbench.models.network import build_model

    reference = build_model(entry)
    reference[1].load_state_dict(tensors)
    assert torch.equal(model(x), reference.eval()(x))

    record = json.loads(paths_for(tmp_path / "out", entry.id)["record"].read_text())
    assert record["sha256"] == result.sha256 and len(record["history"]) == 1

    # writing the same id again replaces the entry (retraining), not duplicates it
    again = train_expert(_tiny(epochs=1, seed=9), tmp_path / "out", zoo_file=zoo_file, resume=False)
    (entry2,) = read_zoo_file(zoo_file)
    assert entry2.sha256 == again.sha256 != result.sha256


def test_cli_trains_and_writes_entry(tmp_path):
    from rsbench.cli.main import main_group
    from rsbench.zoo.files import read_zoo_file

    runner = CliRunner()
    help_text = runner.invoke(main_group, ["train", "expert", "--help"]).output
    assert "Examples:" in help_text and "--train-sigma" in help_text and "--resume" in help_text
    args = [
        "train",
        "expert",
        "--dataset",
        "fashion-mnist-embedded",
        "--split",
        "test",
        "--arch",
        "mlp",
        "--train-sigma",
        "0.25",
        "--epochs",
        "1",
        "--limit",
        "128",
        "--batch-size",
        "64",
        "--eval-limit",
        "0",
        "--id",
        "cli-mlp-s0.25",
        "--out",
        str(tmp_path / "o"),
    ]
    result = runner.invoke(main_group, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "sha256:" in result.output
    (entry,) = read_zoo_file(tmp_path / "o" / "zoo.yaml")
    assert entry.arch == "mlp" and entry.train_sigma == 0.25
    assert "--split test" in entry.recipe["command"] and "--arch mlp" in entry.recipe["command"]


def test_augment_is_seeded_and_keeps_shapes():
    from rsbench.train.expert import _augment

    images = torch.rand(6, 3, 8, 8)
    a = _augment(images, torch.Generator().manual_seed(1))
    b = _augment(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == images.shape
    # each output is a (possibly flipped) 8x8 window of the zero-padded image
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(6):
        windows = [
            padded[i, :, y : y + 8, x : x + 8].flip(-1) if f else padded[i, :, y : y + 8, x : x + 8]
            for y in range(9)
            for x in range(9)
            for f in (False, True)
        ]
        assert any(torch.equal(a[i], w) for w in windows)


# ------------------------------------------------------------------------------------------------
# the shipped (embedded) experts


def _embedded_entries():
    from rsbench.zoo.registry import load_zoo

    zoo = load_zoo()
    return [
        zoo.get(i)
        for i in ("embedded-fmnist-s0.25", "embedded-fmnist-s0.50", "embedded-fmnist-s1.00")
    ]


def test_embedded_experts_match_their_entries():
    from rsbench.models.loading import load_model

    entries = _embedded_entries()
    assert [e.id for e in entries][:3] == [
        "embedded-fmnist-s0.25",
        "embedded-fmnist-s0.50",
        "embedded-fmnist-s1.00",
    ]
    for entry in entries:
        assert entry.source.type == "package" and entry.source.path.startswith("embedded/")
        weights = EMBEDDED / Path(entry.source.path).name
        assert sha256_file(weights) == entry.sha256
        assert entry.recipe["command"].startswith("rsbench train expert --dataset fashion-mnist ")
        assert f"--train-sigma {entry.train_sigma:g}" in entry.recipe["command"]
        model = load_model(entry)
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


#: the retrained expert's accuracy under noise must be within this of the shipped one's
REPRODUCE_TOLERANCE = 0.015


@pytest.mark.slow
def test_recorded_command_reproduces_an_embedded_expert(tmp_path):
    """Retrain embedded-fmnist-s0.50 with its recorded command (minutes on 2 CPU cores)."""
    from rsbench.cli.main import main_group
    from rsbench.data.dataset import load_dataset
    from rsbench.models.loading import load_model
    from rsbench.train.expert import evaluate
    from rsbench.zoo.files import read_zoo_file

    if not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs Debian's dataset-fashion-mnist (the full training set)")
    entry = next(e for e in _embedded_entries() if e.id == "embedded-fmnist-s0.50")
    argv = shlex.split(entry.recipe["command"])
    assert argv[:3] == ["rsbench", "train", "expert"]
    args = _replace_option(argv[1:], "--out", str(tmp_path / "out"))
    args = _replace_option(args, "--zoo-file", str(tmp_path / "zoo.yaml"))
    result = CliRunner().invoke(main_group, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (retrained,) = read_zoo_file(tmp_path / "zoo.yaml")

    test_set = load_dataset("fashion-mnist", "test", root=DEBIAN_FMNIST)
    shipped_acc = evaluate(load_model(entry), test_set, 0.5, seed=0)
    new_acc = evaluate(load_model(retrained), test_set, 0.5, seed=0)
    assert abs(new_acc[0] - shipped_acc[0]) <= REPRODUCE_TOLERANCE
    assert abs(new_acc[1] - shipped_acc[1]) <= REPRODUCE_TOLERANCE


def _replace_option(args: list[str], option: str, value: str) -> list[str]:
    out = list(args)
    if option in out:
        out[out.index(option) + 1] = value
    else:
        out += [option, value]
    return out


# ------------------------------------------------------------------------------------------------
# --denoiser: the classifier of a denoised expert, fine-tuned on denoised images


def test_denoised_classifier_fine_tunes_from_init_and_writes_both_entries(tmp_path):
    from test_denoised import _zoo_file

    from rsbench.models.loading import load_model
    from rsbench.zoo.registry import load_zoo

    (tmp_path / "zoo").mkdir()
    zoo = load_zoo([_zoo_file(tmp_path / "zoo")])  # toy-denoised: an identity denoiser
    config = _tiny(
        train_sigma=0.0,
        denoiser="toy-denoised",
        init="embedded-fmnist-clean",
        epochs=1,
        limit=64,
        lr=1e-12,
        optimizer="adam",
        model_id="toy-ft-classifier",
        denoised_id="toy-ft",
    )
    result = train_expert(config, tmp_path / "out", zoo_file=tmp_path / "ft.yaml", zoo=zoo)
    start = load_model(zoo.get("embedded-fmnist-clean"))[1].state_dict()
    tuned = load_file(str(result.weights))
    assert all(torch.allclose(tuned[k], start[k], atol=1e-8) for k in start)  # began at init
    made = load_zoo([tmp_path / "ft.yaml", tmp_path / "zoo" / "zoo.yaml"])
    denoised = made.get("toy-ft")
    assert denoised.kind == "denoised" and denoised.sigmas == (0.25, 0.5)
    assert denoised.classifier["sha256"] == result.sha256 == made.get("toy-ft-classifier").sha256
    assert denoised.denoiser["sha256"] == zoo.get("toy-denoised").denoiser["sha256"]
    recipe = made.get("toy-ft-classifier").recipe
    assert "--denoiser toy-denoised --init embedded-fmnist-clean" in recipe["command"]
    assert recipe["denoiser"]["entry"] == "toy-denoised" and list(recipe["sigmas"]) == [0.25, 0.5]
    assert load_model(denoised, sigma=0.5)(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="--train-sigma 0"):
        train_expert(_tiny(denoiser="toy-denoised"), tmp_path / "bad", zoo=zoo)
    with pytest.raises(ConfigError, match="must be an expert of arch"):
        train_expert(_tiny(init="toy-denoised"), tmp_path / "bad", zoo=zoo)

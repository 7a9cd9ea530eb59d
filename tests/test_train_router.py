"""Router training (dual RS): targets, loss, label cache, end-to-end router + dual entries, finetune."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rsbench.errors import ConfigError, WeightsError, ZooError
from rsbench.train.common import paths_for
from rsbench.train.router import router_loss, train_router
from rsbench.train.router_config import RouterTrainConfig, check_experts
from rsbench.train.router_labels import (
    LabelBudget,
    RouterEvent,
    class_weights,
    keep_mask,
    label_dir,
    label_key,
    label_radii,
    read_label_cache,
    soft_targets,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ------------------------------------------------------------------------------------------------
# targets, weights, loss: known answers


def test_soft_targets_are_softmax_of_radii() -> None:
    radii = np.array([[0.0, 1.0, 2.0], [0.5, 0.5, 0.5]])
    e = np.exp([0.0, 1.0, 2.0])
    np.testing.assert_allclose(soft_targets(radii)[0], e / e.sum(), rtol=1e-12)
    np.testing.assert_allclose(soft_targets(radii)[1], [1 / 3] * 3, rtol=1e-12)
    e2 = np.exp([0.0, 2.0, 4.0])  # temperature 0.5 doubles the logits
    np.testing.assert_allclose(soft_targets(radii, 0.5)[0], e2 / e2.sum(), rtol=1e-12)
    with pytest.raises(ConfigError, match="temperature"):
        soft_targets(radii, 0.0)


def test_drop_all_zero_rows_and_class_weights_one_over_q() -> None:
    radii = np.array(
        [
            [0.0, 0.0, 0.0],  # dropped
            [0.3, 0.1, 0.0],  # best 0
            [0.3, 0.2, 0.0],  # best 0
            [0.2, 0.3, 0.4],  # best 2
            [0.0, 0.6, 0.0],  # best 1
            [0.3, 0.0, 0.0],  # best 0
            [0.0, 0.0, 0.0],  # dropped
            [0.1, 0.1, 0.0],  # tie: best 0 (lower index, smaller sigma)
        ]
    )
    keep = keep_mask(radii)
    assert keep.tolist() == [False, True, True, True, True, True, False, True]
    weights, q = class_weights(radii[keep])
    np.testing.assert_allclose(q, [4 / 6, 1 / 6, 1 / 6])
    raw = np.array([6 / 4, 6 / 4, 6, 6, 6 / 4, 6 / 4])  # 1 / q_best per kept row
    np.testing.assert_allclose(weights, raw / raw.mean())
    assert weights.mean() == pytest.approx(1.0)
    # every expert carries the same total weight: the rebalancing
    best = radii[keep].argmax(1)
    totals = [weights[best == k].sum() for k in range(3)]
    np.testing.assert_allclose(totals, [totals[0]] * 3)
    with pytest.raises(ConfigError, match="no training image"):
        class_weights(np.zeros((0, 3)))


def test_router_loss_known_answers() -> None:
    # identical copies with uniform logits: CE = log 2, KL = 0, entropy = log 2
    logits = torch.zeros(2, 1, 2)
    targets = torch.tensor([[0.25, 0.75]])
    loss, parts = router_loss(logits, targets, torch.ones(1), lam=40.0, eta=0.5)
    assert parts["ce"] == pytest.approx(math.log(2))
    assert parts["kl"] == pytest.approx(0.0, abs=1e-7)
    assert parts["entropy"] == pytest.approx(math.log(2))
    assert float(loss) == pytest.approx(1.5 * math.log(2))

    # two disagreeing copies: p1 = (0.8, 0.2), p2 = (0.2, 0.8); pbar = (0.5, 0.5)
    p1, p2 = np.array([0.8, 0.2]), np.array([0.2, 0.8])
    logits = torch.tensor(np.log([[p1], [p2]]), dtype=torch.float64)
    y = np.array([0.9, 0.1])
    w = 2.0
    ce = -0.5 * ((y * np.log(p1)).sum() + (y * np.log(p2)).sum())
    pbar = (p1 + p2) / 2
    kl = 0.5 * ((pbar * np.log(pbar / p1)).sum() + (pbar * np.log(pbar / p2)).sum())
    entropy = -(pbar * np.log(pbar)).sum()
    loss, parts = router_loss(
        logits, torch.tensor(y[None]), torch.tensor([w], dtype=torch.float64), lam=3.0, eta=0.7
    )
    assert parts["ce"] == pytest.approx(w * ce)
    assert parts["kl"] == pytest.approx(kl)
    assert parts["entropy"] == pytest.approx(entropy)
    assert float(loss) == pytest.approx(w * ce + 3.0 * kl + 0.7 * entropy)

    # weights act per image on the CE term only; the mean is over the batch
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ce0, ce1 = math.log(2), -math.log(1 / (1 + math.exp(2)))
    _, parts = router_loss(logits, targets, torch.tensor([0.5, 1.5]), lam=0.0, eta=0.0)
    assert parts["ce"] == pytest.approx((0.5 * ce0 + 1.5 * ce1) / 2)
    with pytest.raises(ConfigError, match="copies, batch, K"):
        router_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2))


# ------------------------------------------------------------------------------------------------
# label cache


def _embedded():
    from rsbench.data.dataset import load_dataset

    return load_dataset("fashion-mnist-embedded", "test")


def _toy_expert(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()


class _Stop(Exception):
    pass


def test_label_cache_reused_and_interrupted_stage_resumes_identically(tmp_path) -> None:
    data, model = _embedded(), _toy_expert()
    budget = LabelBudget(n0=10, n=100, alpha=0.001, seed=5)
    indices = list(range(60))
    args = (model, "toy-s0.50", "ab" * 32, 0.5, 10, data)

    events: list[RouterEvent] = []
    straight = label_radii(
        *args, indices, budget, tmp_path / "a", chunk_size=16, progress=events.append
    )
    assert sum(e.phase == "label" for e in events) == 4  # chunks 0-15, 16-31, 32-47, 48-59
    assert events[-1].phase == "label-done" and events[-1].computed == 60
    # radii are the certified radius where the prediction is right, 0 elsewhere
    key = label_key("toy-s0.50", "ab" * 32, 0.5, budget, data.name, data.split)
    rows = read_label_cache(label_dir(tmp_path / "a", key))
    assert rows.index.tolist() == indices
    right = rows["prediction"] == rows["label"]
    np.testing.assert_array_equal(straight, np.where(right, rows["radius"], 0.0))
    assert (rows.loc[~right, "label_radius"] == 0).all()

    # second run: nothing to compute, same answer
    again: list[RouterEvent] = []
    second = label_radii(
        *args, indices, budget, tmp_path / "a", chunk_size=16, progress=again.append
    )
    assert [e.phase for e in again] == ["label-start", "label-done"] and again[-1].computed == 0
    np.testing.assert_array_equal(second, straight)

    # interrupted after two chunks, then resumed with another chunk size: equal to straight
    def stop_after_two(event: RouterEvent) -> None:
        if event.phase == "label" and event.done >= 32:
            raise _Stop

    with pytest.raises(_Stop):
        label_radii(*args, indices, budget, tmp_path / "b", chunk_size=16, progress=stop_after_two)
    resumed_events: list[RouterEvent] = []
    resumed = label_radii(
        *args, indices, budget, tmp_path / "b", chunk_size=7, progress=resumed_events.append
    )
    assert resumed_events[0].done == 32 and resumed_events[-1].computed == 28
    np.testing.assert_array_equal(resumed, straight)

    # another key (budget) is a separate folder; a subset in another order is read from the cache
    other = label_radii(*args, indices[:8], LabelBudget(10, 100, 0.01, 5), tmp_path / "a")
    assert other.shape == (8,)
    subset: list[RouterEvent] = []
    picked = label_radii(*args, [5, 3, 40], budget, tmp_path / "a", progress=subset.append)
    assert subset[-1].computed == 0
    np.testing.assert_array_equal(picked, straight[[5, 3, 40]])


def test_experts_must_share_a_dataset() -> None:
    from rsbench.zoo.parse import parse_entry

    def entry(entry_id: str, dataset: str):
        return parse_entry(
            {
                "id": entry_id,
                "kind": "expert",
                "dataset": dataset,
                "num_classes": 10,
                "input_shape": [1, 28, 28],
                "arch": "fmnist_cnn",
                "train_sigma": 0.5,
                "input_layer": {"type": "none"},
                "source": {"type": "file", "path": "x.safetensors"},
            }
        )

    with pytest.raises(ConfigError, match="do not share a dataset.*a-s0.5 \\(mnist\\)"):
        check_experts([entry("a-s0.5", "mnist"), entry("b-s0.5", "fashion-mnist")])
    check_experts([entry("a-s0.5", "mnist"), entry("b-s0.5", "mnist")])


# ------------------------------------------------------------------------------------------------
# end to end over two tiny experts


@pytest.fixture(scope="module")
def tiny_experts(tmp_path_factory) -> Path:
    """Two fmnist_cnn experts (sigma 0.25 and 1.0) trained in seconds on shipped images."""
    from rsbench.train.expert import ExpertTrainConfig, train_expert

    folder = tmp_path_factory.mktemp("experts")
    zoo_file = folder / "experts.yaml"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for sigma in (0.25, 1.0):
            config = ExpertTrainConfig(
                dataset="fashion-mnist-embedded",
                split="test",
                arch="fmnist_cnn",
                train_sigma=sigma,
                epochs=2,
                batch_size=64,
                limit=640,
                eval_limit=0,
                optimizer="adam",
                lr=3e-3,
                seed=1,
                model_id=f"tiny-fmnist-s{sigma:.2f}",
            )
            train_expert(config, folder, zoo_file=zoo_file)
    finally:
        torch.set_num_threads(threads)
    return zoo_file


def _router_config(tmp_path: Path, **overrides) -> RouterTrainConfig:
    values = dict(
        experts=("tiny-fmnist-s0.25", "tiny-fmnist-s1.00"),
        dataset="fashion-mnist-embedded",
        split="test",
        train_images=160,
        epochs=2,
        batch_size=32,
        seed=2,
        label_cache=str(tmp_path / "labels"),
    )
    values.update(overrides)
    return RouterTrainConfig(**values)


def test_router_trains_writes_entries_and_dual_certifies(tmp_path, tiny_experts) -> None:
    from rsbench.api import load_dual
    from rsbench.engine.dual import DualSmoothed
    from rsbench.weights.cache import sha256_file
    from rsbench.zoo.files import read_zoo_file
    from rsbench.zoo.registry import load_zoo

    zoo_file = tmp_path / "routers.yaml"
    config = _router_config(tmp_path)
    assert config.resolved_ids() == ("tiny-fmnist-router", "tiny-fmnist-dual")
    events: list[RouterEvent] = []
    result = train_router(
        config,
        tmp_path / "out",
        zoo_file=zoo_file,
        zoo_paths=[tiny_experts],
        progress=events.append,
    )
    phases = [e.phase for e in events]
    assert phases.count("label-start") == 2 and phases.count("epoch") == 2 and phases[-1] == "done"
    assert result.label_stats["images"] == 160 and 0 < result.label_stats["kept"] <= 160
    assert sum(result.label_stats["best_share"].values()) == pytest.approx(1.0)

    router, dual = read_zoo_file(zoo_file)
    assert router.id == "tiny-fmnist-router" and router.kind == "router"
    assert router.experts == ("tiny-fmnist-s0.25", "tiny-fmnist-s1.00")
    assert router.num_classes == 2 and router.arch == "pooled_mlp" and router.train_sigma == 1.0
    assert router.sha256 == result.sha256 == sha256_file(result.weights)
    assert router.input_layer.type == "normalize"
    recipe = router.recipe
    assert recipe["labels"]["n"] == 100 and recipe["labels"]["n0"] == 10
    assert recipe["labels"]["alpha"] == 0.001 and recipe["labels"]["images"] == 160
    assert recipe["lambda"] == 40.0 and recipe["eta"] == 0.5 and recipe["copies"] == 2
    assert recipe["temperature"] == 0.05  # the default: 0.05 x the largest sigma (1.0)
    assert "--arch pooled_mlp" in recipe["command"] and "--temperature 0.05" in recipe["command"]
    assert recipe["command"].startswith("rsbench train router tiny-fmnist-s0.25 tiny-fmnist-s1.00")
    assert dual.kind == "dual" and dual.router == router.id and dual.experts == router.experts
    assert dual.sigmas == (0.25, 1.0) and dual.sigma_router == 1.0
    assert dual.alpha_router_fraction == 0.5
    assert sorted(load_file(result.weights)) == sorted(
        f"{i}.{p}" for i in (2, 4) for p in ("weight", "bias")
    )

    zoo = load_zoo([tiny_experts, zoo_file])
    smoothed = load_dual(zoo, "tiny-fmnist-dual")
    assert isinstance(smoothed, DualSmoothed) and smoothed.sigmas == (0.25, 1.0)
    images = _embedded().images(list(range(4)))
    certs = smoothed.certify_batch(images, n0=10, n=200, alpha=0.001, seed=0)
    assert len(certs) == 4
    for cert in certs:
        assert cert.router_n == 200 and cert.alpha_router == pytest.approx(0.0005)
        if not cert.abstained:
            assert cert.radius == min(cert.router_radius, cert.expert_radius)

    # the ids are taken now: a second run refuses before any work, unless overwriting
    with pytest.raises(ZooError, match="already exists"):
        train_router(config, tmp_path / "out", zoo_file=zoo_file, zoo_paths=[tiny_experts])


def test_router_training_resumes_to_the_same_weights(tmp_path, tiny_experts) -> None:
    config = _router_config(tmp_path, epochs=3, train_images=96)
    straight = train_router(config, tmp_path / "straight", zoo_paths=[tiny_experts])

    def stop(event: RouterEvent) -> None:
        if event.phase == "epoch" and event.epoch == 2:
            raise _Stop

    out = tmp_path / "interrupted"
    with pytest.raises(_Stop):
        train_router(config, out, zoo_paths=[tiny_experts], progress=stop)
    assert paths_for(out, straight.router_id)["checkpoint"].is_file()
    events: list[RouterEvent] = []
    resumed = train_router(config, out, zoo_paths=[tiny_experts], progress=events.append)
    # labels came from the cache: nothing certified again
    assert all(e.computed == 0 for e in events if e.phase == "label-done")
    assert next(e for e in events if e.phase == "train-start").resumed_from == 2
    assert resumed.sha256 == straight.sha256
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    with pytest.raises(_Stop):
        train_router(config, out, zoo_paths=[tiny_experts], progress=stop)
    with pytest.raises(WeightsError, match="another configuration"):
        train_router(
            _router_config(tmp_path, epochs=3, train_images=96, lr=0.01),
            out,
            zoo_paths=[tiny_experts],
        )


def test_bad_router_settings(tmp_path, tiny_experts) -> None:
    with pytest.raises(ConfigError, match="at least 2 experts"):
        train_router(_router_config(tmp_path, experts=("tiny-fmnist-s0.25",)), tmp_path)
    with pytest.raises(ConfigError, match="copies"):
        train_router(_router_config(tmp_path, copies=1), tmp_path)
    with pytest.raises(ConfigError, match="does not match the experts' dataset"):
        train_router(_router_config(tmp_path, dataset="mnist"), tmp_path, zoo_paths=[tiny_experts])


# ------------------------------------------------------------------------------------------------
# CLI and co-training


def test_cli_router_then_finetune_writes_new_entries_only(tmp_path, tiny_experts) -> None:
    from click.testing import CliRunner

    from rsbench.api import load_dual
    from rsbench.cli.main import main_group
    from rsbench.train.finetune import FinetuneConfig, finetune_dual
    from rsbench.zoo.files import read_zoo_file
    from rsbench.zoo.registry import load_zoo

    runner = CliRunner()
    help_text = runner.invoke(main_group, ["train", "router", "--help"]).output
    assert "Examples:" in help_text and "--sigma-router" in help_text and "--lambda" in help_text
    assert "Examples:" in runner.invoke(main_group, ["train", "finetune", "--help"]).output
    zoo_file = tmp_path / "dual.yaml"
    common = ["--dataset", "fashion-mnist-embedded", "--split", "test", "--epochs", "1"]
    common += ["--batch-size", "32", "--label-cache", str(tmp_path / "labels")]
    args = ["train", "router", "tiny-fmnist-s0.25", "tiny-fmnist-s1.00", "--id", "cli-router"]
    args += ["--dual-id", "cli-dual", "--train-images", "96", "--out", str(tmp_path / "r")]
    args += ["--zoo-file", str(zoo_file), "--zoo", str(tiny_experts), *common]
    result = runner.invoke(main_group, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "'cli-router' and 'cli-dual' written" in result.output
    router, dual = read_zoo_file(zoo_file)
    assert router.recipe["command"].startswith(
        "rsbench train router tiny-fmnist-s0.25 tiny-fmnist-s1.00 --id cli-router --dual-id cli-dual"
    )
    assert f"--zoo {tiny_experts}" in router.recipe["command"]

    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(
        "models:\n  - {id: other-s0.5, kind: expert, dataset: mnist, num_classes: 10,"
        " input_shape: [1, 28, 28], arch: fmnist_cnn, train_sigma: 0.5,"
        " input_layer: {type: none}, source: {type: file, path: x.safetensors}}\n"
    )
    bad = runner.invoke(
        main_group,
        ["train", "router", "tiny-fmnist-s0.25", "other-s0.5", "--zoo", str(tiny_experts)]
        + ["--zoo", str(mixed), "--out", str(tmp_path / "bad")],
    )
    assert bad.exit_code != 0 and "do not share a dataset" in str(bad.exception or bad.output)

    # one co-training round: new -ct entries, nothing existing changes
    before = {p: p.read_bytes() for p in (zoo_file, tiny_experts)}
    template = _router_config(tmp_path, experts=(), train_images=96, epochs=1)
    config = FinetuneConfig("cli-dual", router=template, epochs=1, batch_size=32)
    events: list[RouterEvent] = []
    result = finetune_dual(
        config, tmp_path / "ct", zoo_file, zoo_paths=[tiny_experts], progress=events.append
    )
    assert set(result.experts) == {"tiny-fmnist-s0.25", "tiny-fmnist-s1.00"}
    assert sum(result.assignment_share.values()) == pytest.approx(1.0)
    assert any(e.phase == "finetune-epoch" for e in events)
    assert tiny_experts.read_bytes() == before[tiny_experts]
    assert zoo_file.read_text().startswith(before[zoo_file].decode())  # appended only
    ids = [e.id for e in read_zoo_file(zoo_file)]
    assert ids[:2] == ["cli-router", "cli-dual"] and ids[-2:] == ["cli-router-ct", "cli-dual-ct"]
    tuned = [new for old, new in result.experts.items() if new != old]
    assert tuned and all(new.endswith("-ct") and new in ids for new in tuned)
    zoo = load_zoo([tiny_experts, zoo_file])
    for new in tuned:
        entry, old = zoo.get(new), zoo.get(new[: -len("-ct")])
        assert entry.sha256 != old.sha256 and entry.recipe["finetuned_from"] == old.id
        assert entry.train_sigma == old.train_sigma
    dual_ct = zoo.get("cli-dual-ct")
    assert dual_ct.router == "cli-router-ct"
    assert list(dual_ct.experts) == [result.experts[e] for e in dual.experts]
    certs = load_dual(zoo, dual_ct).certify_batch(
        _embedded().images([0, 1]), n0=10, n=100, alpha=0.01
    )
    assert len(certs) == 2
    with pytest.raises(ZooError, match="already exists"):
        finetune_dual(config, tmp_path / "ct", zoo_file, zoo_paths=[tiny_experts])


def test_pooled_mlp_router_is_small_and_loads_by_name() -> None:
    from rsbench.models.archs import build_architecture

    net = build_architecture("pooled_mlp", 3, (1, 28, 28))
    assert sum(p.numel() for p in net.parameters()) == 49 * 128 + 128 + 128 * 3 + 3
    x = torch.rand(5, 1, 28, 28)
    assert net(x).shape == (5, 3)
    # the pooling averages 4x4 blocks: a constant image gives the same features as its 7x7 version
    assert torch.allclose(net[:2](torch.full((1, 1, 28, 28), 0.3)), torch.full((1, 49), 0.3))


# ------------------------------------------------------------------------------------------------
# routers over the experts, the training-image guard, the recorded command, collapse messages


def test_cli_router_over_experts_replays_and_its_dual_is_refused_on_its_training_images(
    tmp_path, tiny_experts
) -> None:
    import shlex
    import shutil

    from click.testing import CliRunner

    from rsbench.api import load_dual
    from rsbench.cli.main import main, main_group
    from rsbench.models.loading import load_model
    from rsbench.models.router_input import ExpertsRouter
    from rsbench.zoo.files import read_zoo_file
    from rsbench.zoo.registry import load_zoo

    runner = CliRunner()
    zoo_file = tmp_path / "dual.yaml"
    args = ["train", "router", "tiny-fmnist-s0.25", "tiny-fmnist-s1.00", "--id", "x-router"]
    args += ["--dual-id", "x-dual", "--router-input", "experts-top", "--features", "softmax"]
    args += ["--dataset", "fashion-mnist-embedded", "--split", "test", "--indices", "0:96"]
    args += ["--epochs", "1", "--batch-size", "32", "--label-cache", str(tmp_path / "labels")]
    args += ["--out", str(tmp_path / "r"), "--zoo-file", str(zoo_file), "--zoo", str(tiny_experts)]
    args += ["--data-root", str(tmp_path / "no-data-needed"), "--threads", "1"]
    result = runner.invoke(main_group, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    router, dual = read_zoo_file(zoo_file)
    from rsbench.zoo.entry import thaw

    assert thaw(router.router_input) == {
        "type": "experts-top",
        "experts": ["tiny-fmnist-s1.00"],
        "features": "softmax",
    }
    assert router.arch == "head_mlp" and router.input_layer.type == "none"
    assert dict(router.trained_on) == {
        "dataset": "fashion-mnist",
        "split": "test",
        "indices": "0:96",
    }
    command = router.recipe["command"]
    assert "--router-input experts-top" in command and "--data-root" in command
    assert f"--label-cache {tmp_path / 'labels'}" in command
    assert router.recipe["training_noise"] == "router-training"
    zoo = load_zoo([tiny_experts, zoo_file])
    model = load_model(router, zoo=zoo)
    assert isinstance(model, ExpertsRouter) and len(model.experts) == 1
    smoothed = load_dual(zoo, "x-dual")
    assert len(smoothed.certify_batch(_embedded().images([200, 201]), 10, 100, 0.01)) == 2

    # the recorded command re-runs as written and gives the same weights (labels from the cache)
    first = router.sha256
    shutil.move(tmp_path / "r", tmp_path / "r-first")
    zoo_file.unlink()
    words = shlex.split(command)
    assert words[:3] == ["rsbench", "train", "router"]
    again = runner.invoke(main_group, words[1:], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert read_zoo_file(zoo_file)[0].sha256 == first

    # certifying the dual on images its router trained on is refused with one line
    certify = ["certify", "x-dual", "--zoo", str(tiny_experts), "--zoo", str(zoo_file)]
    certify += ["--dataset", "fashion-mnist", "--split", "embedded", "--n0", "10", "--n", "50"]
    certify += ["--out", str(tmp_path / "runs"), "--no-leaderboard"]
    with pytest.raises(SystemExit) as refused:
        main([*certify, "--indices", "90:100"])
    assert refused.value.code != 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    main([*certify, "--indices", "96:98"])  # images it did not train on: certified
    assert len(list((tmp_path / "runs").glob("x-dual-*/part-*.parquet"))) == 1


def test_training_image_guard_message_is_one_line(tmp_path, tiny_experts, capsys) -> None:
    from rsbench.cli.main import main

    zoo_file = tmp_path / "z.yaml"
    args = ["train", "router", "tiny-fmnist-s0.25", "tiny-fmnist-s1.00", "--id", "g-router"]
    args += ["--dual-id", "g-dual", "--dataset", "fashion-mnist-embedded", "--split", "test"]
    args += ["--zoo-file", str(zoo_file), "--zoo", str(tiny_experts), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as refused:  # the default --train-images on a test split
        main(args)
    assert refused.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --split test needs --indices"), err
    assert not zoo_file.exists()


def test_label_and_training_collapse_are_told_apart_once_per_run(tmp_path, tiny_experts) -> None:
    from rsbench.train.router_labels import collapse_message

    label = collapse_message([0.95, 0.05], ["a", "b"], "labels")
    training = collapse_message([0.02, 0.98], ["a", "b"], "training")
    assert label is not None and label.startswith("label collapse") and "--label-radius" in label
    assert training is not None and training.startswith("training collapse")
    assert "--router-input experts" in training and "--temperature" in training
    # a router trained at T = 1 on these labels collapses (test_router_options); 5 epochs, one line
    events: list[RouterEvent] = []
    config = _router_config(tmp_path, epochs=5, train_images=96, temperature=1.0, lam=0.0, eta=0.0)
    result = train_router(config, tmp_path / "o", zoo_paths=[tiny_experts], progress=events.append)
    warnings = [e.message for e in events if e.phase == "warning"]
    collapsed = max(result.history[-1]["choice_share"]) > 0.9
    labels_collapsed = bool(result.label_stats.get("collapsed"))
    assert len(warnings) == int(collapsed or labels_collapsed)
    if warnings:
        kind = "label collapse" if labels_collapsed else "training collapse"
        assert warnings[0].startswith(kind)

"""The zoo: packaged entries, strict validation, lookup, provenance digests, writing, and the CLI."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rsbench.errors import ZooError
from rsbench.zoo.entry import entry_digest
from rsbench.zoo.files import dump_entries, read_zoo_file, write_entries
from rsbench.zoo.parse import parse_entry, sigma_in_id
from rsbench.zoo.registry import load_zoo, packaged_zoo_path

REPO = Path(__file__).resolve().parents[1]
COHEN_DRIVE_ID = "1h_TpbXm5haY5f-l4--IKylmdz6tvPoR4"
SMOOTHADV_DRIVE_ID = "1GH7OeKUzOGiouKhendC-501pLYNRvU8c"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RSBENCH_ZOO", raising=False)
    monkeypatch.setenv("RSBENCH_CACHE", str(tmp_path / "cache"))


def expert(**overrides) -> dict:
    """A valid raw expert entry (fashion-mnist, local file source)."""
    raw = {
        "id": "my-fmnist-s0.25",
        "kind": "expert",
        "dataset": "fashion-mnist",
        "num_classes": 10,
        "input_shape": [1, 28, 28],
        "arch": "cifar_resnet20",
        "train_sigma": 0.25,
        "input_layer": {"type": "normalize", "mean": [0.286], "std": [0.353]},
        "source": {"type": "file", "path": "w.safetensors"},
        "sha256": None,
    }
    raw.update(overrides)
    return raw


def write_yaml(path: Path, entries: list[dict]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------------
# the packaged zoo


def test_packaged_zoo_is_the_repo_file_and_every_entry_validates():
    assert packaged_zoo_path().read_text() == (REPO / "model_zoo.yaml").read_text()
    zoo = load_zoo()
    entries = read_zoo_file(REPO / "model_zoo.yaml")
    assert [e.id for e in entries] == zoo.ids()
    for entry in zoo:
        assert parse_entry(entry.to_yaml_dict(), file=entry.zoo_file) == entry
        if entry.kind == "denoised" and not entry.id.startswith("embedded-"):
            # published Hub components: pinned by commit revision (bytes hashed by the Hub's git)
            assert entry.pinned and entry.license and entry.paper
        elif entry.kind not in ("dual", "cascade") and not entry.id.startswith("embedded-"):
            assert not entry.pinned, f"{entry.id}: published experts stay unpinned until hashed"
            assert entry.license and entry.paper and entry.reported


@pytest.mark.parametrize("sigma", ["0.12", "0.25", "0.50", "1.00"])
def test_cohen_cifar_entries(sigma):
    entry = load_zoo().get(f"cohen-cifar10-resnet110-s{sigma}")
    assert entry.arch == "cifar_resnet110" and entry.train_sigma == float(sigma)
    assert entry.input_layer.type == "normalize"
    assert entry.input_layer.mean == (0.4914, 0.4822, 0.4465)
    assert entry.input_layer.std == (0.2023, 0.1994, 0.2010)
    assert entry.checkpoint.state_dict_key == "state_dict" and entry.checkpoint.strip_prefix == "1."
    assert entry.source.type == "archive_url" and COHEN_DRIVE_ID in entry.source.url
    assert entry.source.member == f"models/cifar10/resnet110/noise_{sigma}/checkpoint.pth.tar"


@pytest.mark.parametrize("sigma", ["0.25", "0.50", "1.00"])
def test_cohen_imagenet_entries(sigma):
    entry = load_zoo().get(f"cohen-imagenet-resnet50-s{sigma}")
    assert entry.arch == "resnet50" and entry.num_classes == 1000
    assert entry.checkpoint.strip_prefix == "1.module."
    assert entry.source.member == f"models/imagenet/resnet50/noise_{sigma}/checkpoint.pth.tar"


def test_cohen_reported_numbers_match_design_notes():
    zoo = load_zoo()
    expected = {  # DESIGN.md section 3, r = 0 / 0.25 / 0.5 / 0.75 / 1.0
        "0.25": [0.766, 0.612, 0.422, 0.251, 0.0],
        "0.50": [0.657, 0.549, 0.428, 0.325, 0.220],
        "1.00": [0.471, 0.409, 0.338, 0.277, 0.221],
    }
    for sigma, values in expected.items():
        reported = zoo.get(f"cohen-cifar10-resnet110-s{sigma}").reported["certified_accuracy"]
        assert [reported[r] for r in (0.0, 0.25, 0.5, 0.75, 1.0)] == values


def test_cohen_reported_numbers_match_the_published_logs():
    logs = Path(__file__).resolve().parent / "data" / "reference_logs" / "smoothadv_mit"
    import pandas as pd

    zoo = load_zoo()
    for dataset, arch in (("cifar10", "resnet110"), ("imagenet", "resnet50")):
        for folder in sorted((logs / dataset / f"cohen_{arch}").iterdir()):
            sigma = folder.name.split("_")[1]
            log = pd.read_csv(next(folder.glob("*.tsv.gz")), sep="\t")
            entry = zoo.get(f"cohen-{dataset}-{arch}-s{sigma}")
            assert entry.reported["num_images"] == len(log)
            for radius, accuracy in entry.reported["certified_accuracy"].items():
                measured = ((log["correct"] == 1) & (log["radius"] >= radius)).mean()
                # entries round to 3 decimals and logs print radii with 3 significant digits
                assert abs(measured - accuracy) <= 0.0005 + 1 / len(log), (entry.id, radius)


def test_smoothadv_entries():
    zoo = load_zoo()
    cifar = zoo.select("smoothadv-cifar10")
    imagenet = zoo.select("smoothadv-imagenet")
    assert len(cifar) == 10 and len(imagenet) == 8
    for entry in cifar:
        assert entry.input_layer.type == "center" and entry.input_layer.std is None
        assert entry.arch == "cifar_resnet110"
    for entry in cifar + imagenet:
        assert SMOOTHADV_DRIVE_ID in entry.source.url
        assert f"noise_{entry.train_sigma:.2f}" in entry.source.member
        assert "MIT" in entry.license


def test_layout_for_later_appends():
    text = (REPO / "model_zoo.yaml").read_text()
    assert text.startswith("#") and "\nmodels:\n  - id: " in text
    assert "# --- embedded Fashion-MNIST set ---" in text


# --------------------------------------------------------------------------------------------------
# validation errors name file, entry and field


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"trian_sigma": 0.25}, "trian_sigma", "did you mean 'train_sigma'"),
        ({"arch": None}, "arch", "required"),
        ({"train_sigma": 0.5}, "train_sigma", "disagrees with the id"),
        ({"train_sigma": -1}, "train_sigma", ">= 0"),
        ({"dataset": "fmnist"}, "dataset", "not one of"),
        ({"kind": "teacher"}, "kind", "not one of"),
        ({"input_shape": [28, 28]}, "input_shape", "channels, height, width"),
        (
            {"input_layer": {"type": "center", "mean": [0.5], "std": [0.2]}},
            "input_layer.std",
            "not used",
        ),
        ({"input_layer": {"type": "normalize", "mean": [0.5]}}, "input_layer.std", "required"),
        (
            {"input_layer": {"type": "normalize", "mean": [1, 2, 3], "std": [1, 2, 3]}},
            "input_layer.mean",
            "1 channels",
        ),
        (
            {"input_layer": {"type": "normalize", "mean": [0.5], "std": [0]}},
            "input_layer.std",
            "<= 0",
        ),
        ({"input_layer": {"type": "whiten"}}, "input_layer.type", "not one of"),
        ({"sha256": "abc"}, "sha256", "64 hex"),
        ({"source": {"type": "ftp", "url": "x"}}, "source.type", "not one of"),
        (
            {"source": {"type": "hf", "repo_id": "a/b", "filename": "x"}},
            "source.revision",
            "required",
        ),
        ({"source": {"type": "url", "url": "drive.google.com/x"}}, "source.url", "http"),
        (
            {"source": {"type": "archive_url", "url": "https://h/a.tar", "member": "../x"}},
            "source.member",
            "'..'",
        ),
        (
            {"source": {"type": "archive_url", "url": "https://h/a.tar", "member": "/etc/x"}},
            "source.member",
            "relative",
        ),
        ({"source": {"type": "package", "path": "../x"}}, "source.path", "inside the package"),
        ({"checkpoint": {"prefix": "1."}}, "checkpoint.prefix", "did you mean 'strip_prefix'"),
        (
            {"reported": {"certified_accuracy": {0.25: 1.5}}},
            "reported.certified_accuracy",
            "[0, 1]",
        ),
        ({"num_classes": 0}, "num_classes", ">= 1"),
    ],
)
def test_entry_errors_name_file_entry_and_field(tmp_path, overrides, field, words):
    path = write_yaml(tmp_path / "user.yaml", [expert(**overrides)])
    with pytest.raises(ZooError) as info:
        read_zoo_file(path)
    message = str(info.value)
    assert str(path) in message and "'my-fmnist-s0.25'" in message
    assert f"field {field!r}" in message and words in message
    assert "\n" not in message


def test_sigma_in_id():
    assert sigma_in_id("cohen-cifar10-resnet110-s0.25") == 0.25
    assert sigma_in_id("embedded-fmnist-s1.00") == 1.0
    assert sigma_in_id("x_s0.5_y") == 0.5
    assert sigma_in_id("smoothadv-imagenet-resnet50-pgd1-eps512") is None
    assert sigma_in_id("embedded-fmnist-router") is None


def test_duplicate_ids_and_keys(tmp_path, monkeypatch):
    path = write_yaml(tmp_path / "a.yaml", [expert(), expert()])
    with pytest.raises(ZooError, match="appears twice in this file"):
        read_zoo_file(path)
    dup_key = tmp_path / "k.yaml"
    dup_key.write_text("models:\n  - id: a\n    id: b\n")
    with pytest.raises(ZooError, match=r"duplicate key 'id' at line 3"):
        read_zoo_file(dup_key)
    first = write_yaml(tmp_path / "first.yaml", [expert()])
    second = write_yaml(tmp_path / "second.yaml", [expert()])
    monkeypatch.setenv("RSBENCH_ZOO", str(first))
    with pytest.raises(
        ZooError, match=r"second.yaml: entry 'my-fmnist-s0.25': field 'id'.*first.yaml"
    ):
        load_zoo([second])
    clash = write_yaml(
        tmp_path / "clash.yaml", [expert(id="cohen-cifar10-resnet110-s0.25", train_sigma=0.25)]
    )
    with pytest.raises(ZooError, match="already defined in .*model_zoo.yaml"):
        load_zoo([clash])


def test_file_level_errors(tmp_path):
    with pytest.raises(ZooError, match="does not exist"):
        load_zoo([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ZooError, match="not valid YAML"):
        read_zoo_file(bad)
    bad.write_text("experts: []\n")
    with pytest.raises(ZooError, match="single key 'models:'"):
        read_zoo_file(bad)
    bad.write_text("# nothing yet\n")
    assert read_zoo_file(bad) == []


def test_env_and_extra_paths_add_entries_in_order(tmp_path, monkeypatch):
    a = write_yaml(tmp_path / "a.yaml", [expert(id="a-s0.25")])
    b = write_yaml(tmp_path / "b.yaml", [expert(id="b-s0.25")])
    c = write_yaml(tmp_path / "c.yaml", [expert(id="c-s0.25")])
    monkeypatch.setenv("RSBENCH_ZOO", os.pathsep.join([str(a), "", str(b)]))
    zoo = load_zoo([c])
    assert zoo.ids()[-3:] == ["a-s0.25", "b-s0.25", "c-s0.25"]
    assert zoo.get("b-s0.25").zoo_file == b and zoo.get("b-s0.25").base_dir == tmp_path


def test_get_answers_did_you_mean():
    zoo = load_zoo()
    with pytest.raises(ZooError, match=r"did you mean cohen-cifar10-resnet110-s0.50"):
        zoo.get("cohen-cifar10-resnet110-s0.5")
    with pytest.raises(ZooError, match="unknown model id 'zzz'"):
        zoo.get("zzz")
    assert "cohen-imagenet-resnet50-s1.00" in zoo
    assert [e.id for e in zoo.select("cohen-*-s0.25")] == [
        "cohen-cifar10-resnet110-s0.25",
        "cohen-imagenet-resnet50-s0.25",
    ]
    assert len(zoo.select(dataset="imagenet", kind="expert")) == 11


def _ensemble(tmp_path: Path, dual: dict | None = None, router: dict | None = None) -> Path:
    experts = [expert(id=f"e-s{s}", train_sigma=float(s)) for s in ("0.25", "0.50", "1.00")]
    router_raw = expert(id="r", kind="router", num_classes=3, train_sigma=1.0)
    router_raw["experts"] = ["e-s0.25", "e-s0.50", "e-s1.00"]
    router_raw.update(router or {})
    dual_raw = {
        "id": "d",
        "kind": "dual",
        "dataset": "fashion-mnist",
        "router": "r",
        "experts": ["e-s0.25", "e-s0.50", "e-s1.00"],
        "sigmas": [0.25, 0.5, 1.0],
        "sigma_router": 1.0,
        "alpha_router_fraction": 0.5,
    }
    dual_raw.update(dual or {})
    return write_yaml(tmp_path / "ens.yaml", experts + [router_raw, dual_raw])


def test_router_and_dual_entries(tmp_path):
    zoo = load_zoo([_ensemble(tmp_path)])
    dual = zoo.get("d")
    assert dual.router == "r" and dual.experts == ("e-s0.25", "e-s0.50", "e-s1.00")
    assert dual.sigmas == (0.25, 0.5, 1.0) and dual.alpha_router_fraction == 0.5 and dual.pinned
    assert zoo.get("r").experts == dual.experts and zoo.get("r").train_sigma == 1.0
    assert parse_entry(dual.to_yaml_dict()) == dual


@pytest.mark.parametrize(
    ("dual", "router", "words"),
    [
        ({"router": "rr"}, None, "field 'router': refers to unknown id 'rr'; did you mean r"),
        ({"router": "e-s0.25"}, None, "is a expert, not a router"),
        ({"experts": ["e-s0.50", "e-s0.25", "e-s1.00"]}, None, "differs from router 'r'"),
        ({"sigmas": [0.25, 0.5]}, None, "has 2 values for 3 experts"),
        ({"alpha_router_fraction": 1.0}, None, "strictly in (0, 1)"),
        ({"arch": "mlp"}, None, "field 'arch': unknown field"),
        (None, {"num_classes": 2}, "a router has one output per expert"),
        (None, {"experts": ["e-s0.25", "e-s0.50", "nope"]}, "unknown id 'nope'"),
    ],
)
def test_dual_and_router_errors(tmp_path, dual, router, words):
    with pytest.raises(ZooError) as info:
        load_zoo([_ensemble(tmp_path, dual, router)])
    assert words in str(info.value) and "ens.yaml" in str(info.value)


# --------------------------------------------------------------------------------------------------
# provenance digest and writing


def test_entry_digest_ignores_formatting_but_not_content(tmp_path):
    block = tmp_path / "block.yaml"
    block.write_text(
        textwrap.dedent(
            """\
            models:
              - id: my-fmnist-s0.25
                kind: expert
                dataset: fashion-mnist
                num_classes: 10
                input_shape:
                  - 1
                  - 28
                  - 28
                arch: cifar_resnet20
                train_sigma: 0.250
                input_layer:
                  type: normalize
                  mean: [0.286]
                  std: [0.353]
                source: {type: file, path: w.safetensors}
            """
        )
    )
    flow = write_yaml(tmp_path / "flow.yaml", [dict(reversed(list(expert().items())))])
    (a,), (b,) = read_zoo_file(block), read_zoo_file(flow)
    assert a == b and entry_digest(a) == entry_digest(b)
    assert len(entry_digest(a)) == 64
    (c,) = read_zoo_file(write_yaml(tmp_path / "c.yaml", [expert(arch="cifar_resnet110")]))
    assert entry_digest(c) != entry_digest(a)
    json.dumps(a.to_yaml_dict())  # plain data


def test_write_entries_appends_keeps_comments_and_refuses_duplicates(tmp_path):
    path = tmp_path / "user.yaml"
    path.write_text("# my experts\nmodels:\n  - id: keep-s0.25\n    kind: expert\n")
    with pytest.raises(ZooError):  # the existing entry is incomplete: the file is refused as is
        write_entries(path, [parse_entry(expert())])
    write_yaml(path, [expert(id="keep-s0.25")])
    path.write_text("# my experts\n" + path.read_text() + "# trailing comment\n")
    first = parse_entry(expert(recipe={"epochs": 3, "seed": 0}))
    write_entries(path, [first])
    text = path.read_text()
    assert text.startswith("# my experts\n") and "# trailing comment\n" in text
    assert [e.id for e in read_zoo_file(path)] == ["keep-s0.25", "my-fmnist-s0.25"]
    assert read_zoo_file(path)[1].recipe == {"epochs": 3, "seed": 0}
    with pytest.raises(ZooError, match="already exists; pass overwrite=True"):
        write_entries(path, [first])
    changed = parse_entry(expert(description="retrained"))
    write_entries(path, [changed], overwrite=True)
    entries = read_zoo_file(path)
    assert [e.id for e in entries] == ["keep-s0.25", "my-fmnist-s0.25"]
    assert entries[1].description == "retrained" and entries[1].recipe is None
    assert path.read_text().startswith("# my experts\n")
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_entries_new_file_and_packaged_layout(tmp_path):
    fresh = tmp_path / "sub" / "new.yaml"
    entry = parse_entry(expert())
    write_entries(fresh, [entry])
    assert fresh.read_text().startswith("models:\n  - id: my-fmnist-s0.25\n")
    assert read_zoo_file(fresh)[0].to_yaml_dict() == entry.to_yaml_dict()
    copy = tmp_path / "model_zoo.yaml"
    copy.write_text((REPO / "model_zoo.yaml").read_text())
    before = len(read_zoo_file(copy))
    write_entries(copy, [parse_entry(expert(id="my-appended-fmnist-s0.25"))])
    assert len(read_zoo_file(copy)) == before + 1
    assert copy.read_text().startswith((REPO / "model_zoo.yaml").read_text())


def test_dump_entries_round_trips(tmp_path):
    zoo = load_zoo()
    text = "models:\n" + dump_entries(list(zoo))
    path = tmp_path / "all.yaml"
    path.write_text(text)
    assert [e.to_yaml_dict() for e in read_zoo_file(path)] == [e.to_yaml_dict() for e in zoo]


# --------------------------------------------------------------------------------------------------
# CLI


def _cli(args: list[str], env: dict | None = None):
    from rsbench.cli.main import main_group

    result = CliRunner().invoke(main_group, args, env=env, catch_exceptions=True)
    return result


def test_cli_list_json_and_rich():
    result = _cli(
        ["zoo", "list", "cohen", "--dataset", "cifar10", "--kind", "expert", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["id"] for r in rows] == [
        f"cohen-cifar10-resnet110-s{s}" for s in ("0.12", "0.25", "0.50", "1.00")
    ]
    assert all(r["pinned"] is False and r["cached"] is False for r in rows)
    result = _cli(["zoo", "list"])
    assert result.exit_code == 0 and "unpinned" in result.output
    assert "smoothadv-imagenet-resnet50-pgd1-eps1024-s1.00" in result.output
    cascade = next(line for line in result.output.splitlines() if "embedded-fmnist-cascade" in line)
    assert "3 stages" in cascade and "None" not in cascade  # a cascade has no router


def test_cli_show_hash_and_unknown_id(tmp_path):
    result = _cli(["zoo", "show", "cohen-imagenet-resnet50-s0.50"])
    assert result.exit_code == 0, result.output
    assert "strip_prefix: 1.module." in result.output and "UNPINNED" in result.output
    assert "entry digest:" in result.output
    blob = tmp_path / "x.bin"
    blob.write_bytes(b"abc")
    result = _cli(["zoo", "hash", str(blob)])
    assert result.output.startswith(
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    from rsbench.errors import ZooError as Err

    result = _cli(["zoo", "show", "cohen-cifar10-resnet110-s0.3"])
    assert isinstance(result.exception, Err) and "did you mean" in str(result.exception)


USER_ARCH = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))

    def forward(self, x):
        return self.body(x)


def build(num_classes):
    return Tiny(num_classes)
"""


def test_cli_user_architecture_from_file_loads_through_user_zoo(tmp_path):
    """A net defined in a user's .py file + a user zoo file + `zoo check` is all it takes."""
    from safetensors.torch import save_file

    from rsbench.weights.cache import sha256_file

    (tmp_path / "nets.py").write_text(USER_ARCH)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    save_file({f"body.{k}": v for k, v in net.state_dict().items()}, tmp_path / "tiny.safetensors")
    raw = expert(
        id="user-tiny-s0.50",
        arch="nets.py:build",
        train_sigma=0.5,
        source={"type": "file", "path": "tiny.safetensors"},
        sha256=sha256_file(tmp_path / "tiny.safetensors"),
    )
    zoo_file = write_yaml(tmp_path / "my_zoo.yaml", [raw])
    env = {"RSBENCH_ZOO": str(zoo_file), "RSBENCH_CACHE": str(tmp_path / "cache")}
    result = _cli(["zoo", "check", "user-tiny-s0.50"], env=env)
    assert result.exit_code == 0, result.output
    assert "ok user-tiny-s0.50: strict load + forward (2, 10)" in result.output
    assert "(pinned)" in result.output
    # the same model through the library gives the net's outputs behind the input layer
    from rsbench.models.loading import load_model

    model = load_model(load_zoo([zoo_file]).get("user-tiny-s0.50"))
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(model(x), net((x - 0.286) / 0.353), atol=1e-6)
    # a broken checkpoint makes `check` fail with exit status 1 and one clear line
    (tmp_path / "tiny.safetensors").write_bytes(b"\x00" * 10)
    result = _cli(["zoo", "check", "--zoo", str(zoo_file), "user-tiny-s0.50"])
    assert result.exit_code == 1 and "FAIL user-tiny-s0.50" in result.output


def test_cli_add_writes_a_checked_entry(tmp_path):
    from rsbench.models.archs.cifar_resnet import cifar_resnet20

    net = cifar_resnet20(num_classes=10)
    ck = tmp_path / "ck" / "checkpoint.pth.tar"
    ck.parent.mkdir()
    torch.save({"epoch": 1, "state_dict": {f"1.{k}": v for k, v in net.state_dict().items()}}, ck)
    zoo_file = tmp_path / "my_zoo.yaml"
    args = [
        "zoo", "add", "--id", "mine-s0.25", "--checkpoint", str(ck), "--arch", "cifar_resnet20",
        "--dataset", "cifar10", "--train-sigma", "0.25", "--input-layer", "normalize",
        "--state-dict-key", "state_dict", "--strip-prefix", "1.", "--zoo-file", str(zoo_file),
    ]  # fmt: skip
    result = _cli(args)
    assert result.exit_code == 0, result.output
    (entry,) = read_zoo_file(zoo_file)
    assert entry.source.path == "ck/checkpoint.pth.tar" and entry.pinned
    assert entry.input_layer.mean == (0.4914, 0.4822, 0.4465)
    result = _cli(["zoo", "check", "mine-s0.25", "--zoo", str(zoo_file), "--require-pinned"])
    assert result.exit_code == 0 and "ok mine-s0.25" in result.output
    again = _cli(args)
    assert isinstance(again.exception, ZooError) and "already exists" in str(again.exception)
    assert _cli(args + ["--overwrite"]).exit_code == 0
    wrong = _cli(args[:-2] + ["--strip-prefix", "2.", "--zoo-file", str(tmp_path / "o.yaml")])
    assert "lacks checkpoint.strip_prefix" in str(wrong.exception)
    assert not (tmp_path / "o.yaml").exists()


@pytest.mark.parametrize("p0", [0.3, 1.0, "high", True])
def test_a_cascade_p0_outside_its_range_names_the_field(p0):
    raw = {"id": "c", "kind": "cascade", "dataset": "mnist", "experts": ["a", "b"], "p0": p0}
    with pytest.raises(ZooError, match=r"field 'p0': .* is not a threshold in \[0.5, 1\)"):
        parse_entry(raw, file="z.yaml")
    assert parse_entry({**raw, "p0": 0.75}).p0 == 0.75

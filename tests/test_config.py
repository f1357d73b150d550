"""The master training configuration: examples load, bad documents fail naming the key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jec_coffea.cli import main
from jec_coffea.config import RESUMABLE_KEYS, TrainingConfig
from jec_coffea.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "models").glob("*.yaml"))


def _raw(name: str = "deepsets.yaml") -> dict:
    return yaml.safe_load((REPO / "models" / name).read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_load_and_round_trip(path, tmp_path):
    cfg = TrainingConfig.load(path)
    assert cfg.data.dataset.is_absolute()
    assert cfg.data.dataset.parent == path.parent
    transform = cfg.unfitted_transform()
    assert transform.feature_names()["jet"] == cfg.features.jet
    # saved resolved config reloads to the same hash
    out = tmp_path / "config.yaml"
    cfg.save(out)
    assert out.read_text().startswith(f"# config hash {cfg.config_hash()}")
    again = TrainingConfig.load(out)
    assert again.config_hash() == cfg.config_hash()
    assert again.resolved() == cfg.resolved()


def test_examples_cover_every_architecture():
    archs = {TrainingConfig.load(p).model.architecture for p in EXAMPLES}
    assert {"deepsets", "particlenet", "part"} <= archs
    assert {p.name for p in EXAMPLES} >= {
        "deepsets.yaml",
        "particlenet.yaml",
        "part.yaml",
        "mlp_nanoaod.yaml",
    }


def test_max_constituents_from_data_section():
    cfg = TrainingConfig.from_dict(_raw())
    assert cfg.features.max_constituents == {"charged": 64, "neutral": 32, "sv": 8}


def test_hash_independent_of_key_order_and_sensitive_to_values():
    raw = _raw()
    reordered = dict(reversed(list(raw.items())))
    a = TrainingConfig.from_dict(raw)
    b = TrainingConfig.from_dict(reordered)
    assert a.config_hash() == b.config_hash()
    raw2 = copy.deepcopy(raw)
    raw2["optimizer"]["lr"] = 2e-3
    c = TrainingConfig.from_dict(raw2)
    assert c.config_hash() != a.config_hash()
    raw3 = copy.deepcopy(raw)
    raw3["epochs"] = 99
    d = TrainingConfig.from_dict(raw3)
    assert d.config_hash() != a.config_hash()
    assert d.config_hash(exclude=RESUMABLE_KEYS) == a.config_hash(
        exclude=RESUMABLE_KEYS
    )


def _set(doc: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        doc = doc[p]
    doc[last] = value


BAD = [
    # (mutation key, value, fragments the message must contain)
    ("optimizer.lerning_rate", 1e-3, ["unknown key 'optimizer.lerning_rate'"]),
    ("loss.typ", "mae", ["unknown key 'loss.typ'", "did you mean 'type'"]),
    ("model.poling", "sum", ["unknown key 'model.poling'", "'pooling'"]),
    ("schedule.patiense", 3, ["unknown key 'schedule.patiense'", "'patience'"]),
    ("trainig", {}, ["unknown key 'trainig'"]),
    ("model.architecture", "transformer", ["model", "transformer"]),
    ("loss.type", "l1", ["loss.type", "'l1'"]),
    ("loss.quantiles", [0.1, 0.9], ["loss", "0.5"]),
    ("optimizer.lr", -1.0, ["optimizer.lr", "greater than 0"]),
    ("data.split.train", 0.9, ["data.split", "sum to 1"]),
    ("data.max_constituents", {"photons": 3}, ["photons"]),
    ("reweighting.pt_edges", [30, 20], ["pt_edges", "increasing"]),
    ("reweighting.target", "uniform", ["reweighting.target"]),
    ("features.jet", ["log_pt_raw", "log_ptraw"], ["log_ptraw", "'log_pt_raw'"]),
    (
        "features.constituents.charged",
        ["rel_pt", "d0_significance"],
        ["d0_significance"],
    ),
    ("transform.steps", {"jet": {"pt_gen": [{"type": "log"}]}}, ["pt_gen"]),
    ("transform.scaling", "minmax", ["transform.scaling"]),
    ("epochs", 0, ["epochs"]),
]


@pytest.mark.parametrize(("key", "value", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_documents_name_the_key(key, value, fragments):
    raw = _raw()
    _set(raw, key, value)
    with pytest.raises(ConfigError) as exc:
        TrainingConfig.from_dict(raw, source="bad.yaml")
    text = str(exc.value)
    assert text.startswith("bad.yaml: invalid configuration")
    for frag in fragments:
        assert frag in text


def test_missing_required_sections(tmp_path):
    raw = _raw()
    del raw["model"]
    del raw["data"]["dataset"]
    with pytest.raises(ConfigError, match="missing key 'model'") as exc:
        TrainingConfig.from_dict(raw)
    assert "missing key 'data.dataset'" in str(exc.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        TrainingConfig.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainingConfig.load(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        TrainingConfig.load(bad)


def test_relative_paths_resolve_next_to_the_file(tmp_path):
    raw = _raw()
    raw["data"]["dataset"] = "sub/data.yaml"
    raw["transform"]["path"] = "../t.yaml"
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = TrainingConfig.load(path)
    assert cfg.data.dataset == (tmp_path / "cfg" / "sub" / "data.yaml").resolve()
    assert cfg.transform.path == (tmp_path / "t.yaml").resolve()


def test_cli_reports_bad_config_in_one_line(tmp_path, capsys):
    raw = _raw()
    raw["optimizer"]["lerning_rate"] = 1
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = main(["train", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "optimizer.lerning_rate" in err
    assert str(path) in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_config_module_does_not_import_torch():
    code = "import sys, jec_coffea.config, jec_coffea.training; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"

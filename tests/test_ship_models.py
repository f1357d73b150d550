"""``jec-coffea ship-models`` end to end at tiny size (issue 5, item 7).

The whole chain (derive-standard -> configs -> build-transform -> train -> run -> evaluate ->
closure -> cards -> install) on the session's simulated sample used as both training and test
data, two models and one learning-curve point, then: every output exists, the cards quote the
figures of the evaluation JSON, the install folder holds model and card, and a second run skips
every step.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from jec_coffea.cli import main

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("pythia8mc")
pytest.importorskip("torch")

RUNS = ("deepsets", "mlp_nanoaod", "deepsets_200")


def _argv(sim, work, install) -> list[str]:
    data = str(sim / "data.yaml")
    return [
        "ship-models",
        "-o",
        str(work),
        "--train-data",
        data,
        "--test-data",
        data,
        "--models",
        "deepsets,mlp_nanoaod",
        "--curve",
        "deepsets=200",
        "--epochs",
        "deepsets=2",
        "mlp_nanoaod=2",
        "--set",
        "all.data.batch_size=64",
        "--set",
        "all.num_threads=1",
        "--set",
        "deepsets.model.phi=[16,16]",
        "--executor",
        "iterative",
        "--min-jets",
        "1",
        "--derive-min-jets",
        "100",
        "--install",
        str(install),
    ]


@pytest.fixture(scope="module")
def shipped(sim_sample, tmp_path_factory):
    work = tmp_path_factory.mktemp("ship")
    install = work / "installed"
    code = main(_argv(sim_sample, work / "work", install))
    assert code == 0, "ship-models reported a failed or blocked step"
    return sim_sample, work / "work", install


def _card_rows(card: str) -> dict[tuple[str, str], list[str]]:
    """(method, |η|) -> cells of the performance table of a card."""
    section = card.split("## Performance on the test sample")[1].split("\n## ")[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] not in ("method", "---"):
            rows[cells[0], cells[1]] = cells
    return rows


def _number(cell: str) -> float | None:
    if cell == "-":
        return None
    return float(re.match(r"-?[\d.e+-]+", cell).group(0))


def _close(cell: str, value: float | None) -> bool:
    """True if the card's cell is ``value`` as the card prints it (3 or 4 significant
    digits), or both are missing."""
    got = _number(cell)
    if value is None or got is None:
        return value is None and got is None
    return any(math.isclose(float(f"{value:.{n}g}"), got) for n in (3, 4))


@pytest.mark.slow
def test_every_output_exists(shipped):
    _, work, install = shipped
    assert (work / "standard" / "derivation.json").is_file()
    for run in RUNS:
        assert (work / "configs" / f"{run}.yaml").is_file()
        for name in ("transform.yaml", "model.onnx", "history.csv", "train.log"):
            assert (work / "train" / run / name).is_file(), (run, name)
    config = (work / "configs" / "deepsets_200.yaml").read_text()
    assert "max_jets: 200" in config
    info = json.loads((work / "run-test" / "run.json").read_text())
    assert info["complete"]
    assert len(info["run_options"]["model"]) == len(RUNS)
    assert (work / "evaluate" / "summary.md").is_file()
    assert "closure of" in (work / "closure.txt").read_text()
    for model in ("deepsets", "mlp_nanoaod"):
        card = work / "cards" / f"{model}.md"
        assert (install / f"{model}.md").read_bytes() == card.read_bytes()
        onnx = (work / "train" / model / "model.onnx").read_bytes()
        assert (install / f"{model}.onnx").read_bytes() == onnx
    assert not (install / "particlenet.onnx").exists()


@pytest.mark.slow
def test_cards_quote_the_evaluation(shipped):
    _, work, _ = shipped
    summary = json.loads((work / "evaluate" / "summary.json").read_text())
    for model in ("deepsets", "mlp_nanoaod"):
        card = (work / "cards" / f"{model}.md").read_text()
        rows = _card_rows(card)
        compared = 0
        for method in ("raw", "standard", model):
            for b in summary["methods"][method]["bins"]:
                eta = b["abs_eta"]
                eta = eta if eta == "all" else f"{eta[0]:g}-{eta[1]:g}"
                cells = rows[method, eta]
                assert int(cells[2]) == b["n_bins"]
                keys = ("resolution", "gauss_resolution", "s", "s_floor")
                keys += ("improvement_resolution", "improvement_s")
                for cell, key in zip(cells[3:], keys, strict=True):
                    assert _close(cell, b[key]), (model, method, eta, key, cell, b[key])
                    compared += b[key] is not None
        assert compared > 0, "no figure to compare: the tiny run had no eligible bin"
        assert f"`{model}.onnx`" in card
        assert "jec-coffea ship-models -o" in card
        # the configuration hash of the card is that of the ONNX metadata
        meta_hash = (work / "train" / model / "config.sha256").read_text().strip()
        assert meta_hash in card
        assert "trainable parameters" in card
        # the session's sample has the packaged detector: --config may be dropped
        assert "The samples' detector is the packaged one" in card
    curve = (work / "cards" / "deepsets.md").read_text().split("## Learning curve")[1]
    assert "deepsets_200" in curve.split("## ")[0]
    headline = next(
        b for b in summary["methods"]["deepsets_200"]["bins"] if b["abs_eta"] == "all"
    )
    line = next(x for x in curve.splitlines() if x.startswith("| deepsets_200 "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1].startswith("200")  # training jets capped by data.max_jets
    assert _close(cells[2], headline["resolution"])


@pytest.mark.slow
def test_rerun_skips_every_step(shipped, capsys):
    sim, work, install = shipped
    capsys.readouterr()
    assert main(_argv(sim, work, install)) == 0
    out = capsys.readouterr().out
    assert "skip derive-standard" in out
    assert "skip run-test" in out
    assert "skip install:deepsets" in out
    assert "jec-coffea train" not in out  # nothing was run again
    assert " ok " not in out.replace("│", " ")
    plan = json.loads((work / "ship-models.json").read_text())
    assert [r["name"] for r in plan["runs"]] == list(RUNS)


def test_bad_options_are_refused(tmp_path, capsys):
    base = ["ship-models", "-o", str(tmp_path / "w"), "--dry-run"]
    assert main([*base, "--models", "deepsets,resnet"]) == 2
    assert "option --models" in capsys.readouterr().err
    assert main([*base, "--curve", "deepsets=1e3"]) == 2
    assert "option --curve" in capsys.readouterr().err
    assert main([*base, "--set", "deepsets=3"]) == 2
    assert "option --set" in capsys.readouterr().err
    assert main([*base, "--force", "trian"]) == 2
    assert "no step 'trian'" in capsys.readouterr().err


def test_dry_run_lists_the_default_layout(tmp_path, capsys):
    assert main(["ship-models", "-o", str(tmp_path / "w"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for step in (
        "simulate-train",
        "simulate-test",
        "derive-standard",
        "train:particlenet_25k",
        "train:mlp_nanoaod_100k",
        "run-test",
        "card:particlenet",
    ):
        assert step in out
    assert not (tmp_path / "w" / "ship-models.json").exists()


def test_config_reaches_both_simulations_and_a_bad_one_is_refused(tmp_path, capsys):
    """--config DET.yaml simulates another detector (e.g. the previous one); a file that
    does not load stops ship-models before any step, naming the file and the key."""
    det = REPO / "examples" / "detector_v2.yaml"
    base = ["ship-models", "-o", str(tmp_path / "w"), "--dry-run"]
    assert main([*base, "--config", str(det)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count(f"--config {det}") >= 1
    for kind in ("sim-train", "sim-test"):
        assert kind in out
    bad = tmp_path / "det.yaml"
    bad.write_text(det.read_text().replace("bfield_t: 3.8", "bfield_t: strong"))
    assert main([*base, "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "tracking.bfield_t" in err
    assert main([*base, "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_card_says_when_the_detector_is_not_the_packaged_one(detector_v2):
    """A model of an earlier detector (v2) keeps its --config: the card names both hashes."""
    from jec_coffea.model_card import _detector_note
    from jec_coffea.simulation import default_detector, detector_hash

    old = detector_hash(detector_v2)
    note = _detector_note({"detector_config_hash": old})
    assert "is not the packaged one" in note
    assert old in note
    assert detector_hash(default_detector()) in note
    assert "no detector hash" in _detector_note(
        {}
    )  # a model of real or foreign samples

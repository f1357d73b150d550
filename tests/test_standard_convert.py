"""JEC text -> correctionlib converter against CMS's official JSON and coffea's text evaluation."""

from __future__ import annotations

import argparse
import gzip
import json
import zlib
from pathlib import Path

import correctionlib
import numpy as np
import pytest
from rich.console import Console

from jec_coffea.cli import main
from jec_coffea.errors import ConfigError, InputFileError
from jec_coffea.standard import jec_text_to_correctionlib, write_correction_set

pytestmark = pytest.mark.shared_data

POCKET = "jec/textfiles/pocketcoffea"
STACKS = {
    # tag, jet type -> official JSON
    ("Summer19UL16_V7_MC", "AK4PFchs"): "2016postVFP_UL_jet_jerc.json.gz",
    ("Summer19UL17_V5_MC", "AK4PFchs"): "2017_UL_jet_jerc.json.gz",
    ("Summer19UL18_V5_MC", "AK4PFchs"): "2018_UL_jet_jerc.json.gz",
    ("Summer22_22Sep2023_V2_MC", "AK4PFPuppi"): "2022_Summer22_jet_jerc.json.gz",
    ("Summer23Prompt23_V1_MC", "AK4PFPuppi"): "2023_Summer23_jet_jerc.json.gz",
}
ALL_LEVELS = ("L1FastJet", "L2Relative", "L3Absolute", "L2L3Residual")
N_POINTS = 4000


def _files(shared_data: Path, tag: str, jet: str) -> list[Path]:
    return [shared_data / POCKET / f"{tag}_{lv}_{jet}.jec.txt.gz" for lv in ALL_LEVELS]


def _strip_descriptions(node):
    if isinstance(node, dict):
        return {
            k: _strip_descriptions(v) for k, v in node.items() if k != "description"
        }
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


@pytest.fixture(scope="module")
def converted(shared_data):
    """Our conversion of the five stacks (4 levels each), as JSON dict and evaluator."""
    paths = [p for key in STACKS for p in _files(shared_data, *key)]
    cset = jec_text_to_correctionlib(paths)
    text = cset.model_dump_json(exclude_unset=True)
    return json.loads(text), correctionlib.CorrectionSet.from_string(text)


@pytest.fixture(scope="module")
def official(shared_data):
    out = {}
    for (tag, jet), name in STACKS.items():
        with gzip.open(shared_data / "jec" / "correctionlib" / name, "rt") as fh:
            doc = json.load(fh)
        # evaluate only this stack's levels: building the uncertainty sources is slow
        subset = {
            "schema_version": 2,
            "corrections": [
                c
                for c in doc["corrections"]
                if c["name"].startswith(tag) and c["name"].endswith(jet)
            ],
            "compound_corrections": doc["compound_corrections"],
        }
        subset["corrections"] = [
            c for c in subset["corrections"] if c["name"].split("_")[-2] in ALL_LEVELS
        ]
        subset["compound_corrections"] = [
            c
            for c in doc["compound_corrections"]
            if c["name"] == f"{tag}_L1L2L3Res_{jet}"
        ]
        out[name] = (doc, correctionlib.CorrectionSet.from_string(json.dumps(subset)))
    return out


def _points(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Points inside and beyond every record's range: pT 5-6000 GeV, |eta| <= 5.1, rho 0-60."""
    return {
        "JetPt": np.exp(rng.uniform(np.log(5.0), np.log(6000.0), n)),
        "JetEta": rng.uniform(-5.1, 5.1, n),
        "Rho": rng.uniform(0.0, 60.0, n),
        "JetA": rng.uniform(0.3, 0.7, n),
    }


def test_structure_identical_to_official(converted, official):
    """Every level's binning, formulas, clamps and parameters equal CMS's file, node by node."""
    ours, _ = converted
    by_name = {c["name"]: c for c in ours["corrections"]}
    assert len(by_name) == 4 * len(STACKS)
    for (tag, jet), json_name in STACKS.items():
        theirs = {c["name"]: c for c in official[json_name][0]["corrections"]}
        for level in ALL_LEVELS:
            name = f"{tag}_{level}_{jet}"
            assert [v["name"] for v in by_name[name]["inputs"]] == [
                v["name"] for v in theirs[name]["inputs"]
            ], name
            assert _strip_descriptions(by_name[name]["data"]) == _strip_descriptions(
                theirs[name]["data"]
            ), name


def test_compound_as_official(converted, official):
    ours, _ = converted
    compounds = {c["name"]: c for c in ours["compound_corrections"]}
    for (tag, jet), json_name in STACKS.items():
        name = f"{tag}_L1L2L3Res_{jet}"
        theirs = {c["name"]: c for c in official[json_name][0]["compound_corrections"]}
        keys = ("inputs_update", "input_op", "output_op", "stack")
        assert {k: compounds[name][k] for k in keys} == {
            k: theirs[name][k] for k in keys
        }
        assert [v["name"] for v in compounds[name]["inputs"]] == [
            v["name"] for v in theirs[name]["inputs"]
        ]


@pytest.mark.parametrize(("tag", "jet"), list(STACKS))
def test_values_equal_official_and_coffea(shared_data, converted, official, tag, jet):
    """Numerically equal to the official JSON and to coffea's evaluation of the text file."""
    from coffea.lookup_tools import extractor

    _, ours = converted
    theirs = official[STACKS[(tag, jet)]][1]
    files = _files(shared_data, tag, jet)
    ext = extractor()
    ext.add_weight_sets([f"* * {p}" for p in files])
    ext.finalize()
    coffea_eval = ext.make_evaluator()
    pts = _points(np.random.default_rng(zlib.crc32(tag.encode())), N_POINTS)
    for level in ("L1FastJet", "L2Relative", "L3Absolute"):
        name = f"{tag}_{level}_{jet}"
        args = [pts[v.name] for v in ours[name].inputs]
        mine = ours[name].evaluate(*args)
        cms = theirs[name].evaluate(*[pts[v.name] for v in theirs[name].inputs])
        np.testing.assert_allclose(mine, cms, rtol=1e-5, atol=0, err_msg=name)
        lookup = coffea_eval[name]
        text = lookup(*[pts[v] for v in lookup.signature])
        # coffea multiplies float32 parameters in float32: where L1FastJet = 1 - offset/pT
        # nearly cancels (pT 5 GeV at rho 60), its 6e-8 rounding of the O(1) terms needs an
        # absolute allowance; everywhere else the agreement is relative.
        np.testing.assert_allclose(mine, text, rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.all(np.isfinite(mine))
        assert np.all(mine > 0)
    # the sample does reach beyond the clamps (pT below the L2 ranges and above 3000 GeV)
    assert pts["JetPt"].min() < 8
    assert pts["JetPt"].max() > 5000
    compound = f"{tag}_L1L2L3Res_{jet}"
    args = [pts[v.name] for v in ours.compound[compound].inputs]
    np.testing.assert_allclose(
        ours.compound[compound].evaluate(*args),
        theirs.compound[compound].evaluate(*args),
        rtol=1e-5,
    )


def test_output_validates_and_cli(shared_data, tmp_path, capsys):
    files = [str(p) for p in _files(shared_data, "Summer19UL17_V5_MC", "AK4PFchs")]
    out = tmp_path / "ul17.json.gz"
    assert main(["-q", "jec-to-correctionlib", *files, "-o", str(out)]) == 0
    assert "Summer19UL17_V5_MC_L1L2L3Res_AK4PFchs" in capsys.readouterr().out
    from correctionlib.cli import validate

    ns = argparse.Namespace(
        files=[str(out)], quiet=True, failfast=True, version=2, ignore_float_inf=False
    )
    assert validate(Console(quiet=True), ns) == 0
    cset = correctionlib.CorrectionSet.from_file(str(out))
    assert set(cset) >= {f"Summer19UL17_V5_MC_{lv}_AK4PFchs" for lv in ALL_LEVELS}
    # plain JSON output, no compound
    plain = tmp_path / "ul17.json"
    write_correction_set(jec_text_to_correctionlib(files, compound=False), plain)
    assert "compound_corrections" not in json.loads(plain.read_text())


def test_partial_stack_compound_name(shared_data):
    files = _files(shared_data, "Summer19UL18_V5_MC", "AK4PFchs")[:2]
    cset = jec_text_to_correctionlib(files)
    assert [c.name for c in cset.compound_corrections] == [
        "Summer19UL18_V5_MC_L1L2_AK4PFchs"
    ]


# -- bad input -------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_formula_correctionlib_cannot_parse(tmp_path, capsys):
    path = _write(
        tmp_path,
        "Bad_V1_MC_L2Relative_AK4PFchs.jec.txt",
        "{1 JetEta 1 JetPt [0]*sqr(x) Correction L2Relative}\n-5.191 5.191 3 10 3000 1.0\n",
    )
    with pytest.raises(InputFileError) as exc:
        jec_text_to_correctionlib([path])
    msg = str(exc.value)
    assert str(path) in msg
    assert "correctionlib cannot use formula '[0]*sqr(x)'" in msg
    assert (
        main(["jec-to-correctionlib", str(path), "-o", str(tmp_path / "o.json")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("jec-coffea jec-to-correctionlib: error:")
    assert str(path) in err[0]


def test_malformed_line_cli_one_line(tmp_path, capsys):
    path = _write(
        tmp_path,
        "Bad_V1_MC_L2Relative_AK4PFchs.jec.txt",
        "{1 JetEta 1 JetPt [0]*x Correction L2Relative}\n-5.191 5.191 3 10 3000 abc\n",
    )
    assert (
        main(["jec-to-correctionlib", str(path), "-o", str(tmp_path / "o.json")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "line 2" in err[0]
    assert "'abc'" in err[0]
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize(
    ("name", "text", "error", "match"),
    [
        (
            "Gap_V1_MC_L2Relative_AK4PFchs.jec.txt",
            "{1 JetEta 1 JetPt [0] Correction L2Relative}\n-5 0 3 10 3000 1\n1 5 3 10 3000 1\n",
            InputFileError,
            "not contiguous",
        ),
        (
            "Notalevel_V1_MC_Uncertainty_AK4PFchs.jec.txt",
            "{1 JetEta 1 JetPt [0] Correction L2Relative}\n-5 5 3 10 3000 1\n",
            ConfigError,
            "contains no JEC level",
        ),
    ],
)
def test_bad_tables(tmp_path, name, text, error, match):
    path = _write(tmp_path, name, text)
    with pytest.raises(error, match=match) as exc:
        jec_text_to_correctionlib([path])
    assert str(path) in str(exc.value)


def test_missing_file_and_duplicates(shared_data, tmp_path):
    with pytest.raises(InputFileError, match="no such JEC text file"):
        jec_text_to_correctionlib([tmp_path / "Sim_V1_MC_L2Relative_AK4PFchs.jec.txt"])
    f = _files(shared_data, "Summer19UL18_V5_MC", "AK4PFchs")[0]
    with pytest.raises(ConfigError, match="given twice"):
        jec_text_to_correctionlib([f, f])
    with pytest.raises(ConfigError, match="no JEC text files"):
        jec_text_to_correctionlib([])

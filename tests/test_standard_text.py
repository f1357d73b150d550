"""CMS JEC text files: parsing, writing (round trip), formula rewrite, names, bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from jec_coffea.errors import ConfigError, InputFileError, JecCoffeaError
from jec_coffea.standard import (
    JecTextTable,
    parse_correction_name,
    read_jec_text,
    write_jec_text,
)
from jec_coffea.standard.formula import (
    FormulaSyntaxError,
    clamped_expression,
    formula_parameter_count,
)

pytestmark = pytest.mark.shared_data

POCKET = "jec/textfiles/pocketcoffea"
ROUND_TRIP_FILES = [
    f"{POCKET}/Summer19UL18_V5_MC_L1FastJet_AK4PFchs.jec.txt.gz",
    f"{POCKET}/Summer19UL17_V5_MC_L2Relative_AK4PFchs.jec.txt.gz",  # eta x pT "spline"
    f"{POCKET}/Summer22_22Sep2023_V2_MC_L2Relative_AK4PFPuppi.jec.txt.gz",
    f"{POCKET}/Summer19UL18_V5_MC_L3Absolute_AK4PFchs.jec.txt.gz",
    "jec/textfiles/coffea/Fall17_17Nov2017_V32_MC_L1FastJet_AK4PF.jec.txt",  # plain text
]


def test_read_l1fastjet(shared_data):
    t = read_jec_text(
        shared_data / POCKET / "Summer19UL18_V5_MC_L1FastJet_AK4PFchs.jec.txt.gz"
    )
    assert t.bin_vars == ("JetEta",)
    assert t.par_vars == ("Rho", "JetPt", "JetA")
    assert t.level == "L1FastJet"
    assert t.formula == "max(0.0001,1-(z/y)*([1]*(x-[0])*(1.+[2]*log(y/15.))))"
    assert t.n_records == 82
    assert t.bin_lo[0, 0] == -5.191
    assert t.bin_hi[-1, 0] == 5.191
    np.testing.assert_array_equal(t.var_lo[0], [0, 0, 0])
    np.testing.assert_array_equal(t.var_hi[0], [70, 6500, 10])
    np.testing.assert_array_equal(
        t.params[0], [1.202261123, 0.7897331232, 0.1086882889]
    )


def test_read_spline_form(shared_data):
    t = read_jec_text(
        shared_data / POCKET / "Summer19UL17_V5_MC_L2Relative_AK4PFchs.jec.txt.gz"
    )
    assert t.bin_vars == ("JetEta", "JetPt")
    assert t.par_vars == ("JetPt",)
    assert t.n_records == 2096
    np.testing.assert_array_equal(t.bin_lo[0], [-5.191, 0.0])
    np.testing.assert_array_equal(t.bin_hi[0], [-4.889, 9.14668])
    assert (t.var_lo[0, 0], t.var_hi[0, 0]) == (8.0, 9.1466796)
    assert t.params.shape == (2096, 5)


def test_l2l3residual_header_level_is_kept(shared_data):
    # CMS's L2L3Residual files say "L2Relative" in the header; the file name holds the level.
    t = read_jec_text(
        shared_data / POCKET / "Summer19UL18_V5_MC_L2L3Residual_AK4PFchs.jec.txt.gz"
    )
    assert (t.level, t.formula, t.n_records, t.params.shape) == (
        "L2Relative",
        "1",
        1,
        (1, 0),
    )
    assert (t.var_lo[0, 0], t.var_hi[0, 0]) == (4.0, 5000.0)


@pytest.mark.parametrize("rel", ROUND_TRIP_FILES)
@pytest.mark.parametrize("suffix", [".jec.txt", ".jec.txt.gz"])
def test_round_trip(shared_data, tmp_path, rel, suffix):
    original = read_jec_text(shared_data / rel)
    out = write_jec_text(
        tmp_path / ("Copy_V1_MC_L2Relative_AK4PFchs" + suffix), original
    )
    again = read_jec_text(out)
    assert again == original
    if suffix.endswith(".gz"):
        with gzip.open(out, "rt") as fh:
            raw = fh.read()
    else:
        raw = out.read_text()
    assert raw.splitlines()[0] == original.header
    assert len(raw.splitlines()) == original.n_records + 1


def test_write_derived_table(tmp_path):
    """A table built from arrays (as a derivation does) is written in CMS format."""
    edges = np.array([-5.191, -1.3, 0.0, 1.3, 5.191])
    table = JecTextTable(
        bin_vars=("JetEta",),
        par_vars=("JetPt",),
        formula="[0]+[1]*log10(x)",
        level="L2Relative",
        bin_lo=edges[:-1, None],
        bin_hi=edges[1:, None],
        var_lo=np.full((4, 1), 10.0),
        var_hi=np.full((4, 1), 3000.0),
        params=np.array([[1.1, -0.01], [1.05, -0.005], [1.04, -0.004], [1.12, -0.02]]),
    )
    path = write_jec_text(tmp_path / "Sim_V1_MC_L2Relative_AK4PFchs.jec.txt", table)
    lines = path.read_text().splitlines()
    assert lines[0] == "{1 JetEta 1 JetPt [0]+[1]*log10(x) Correction L2Relative}"
    assert lines[1].split() == ["-5.191", "-1.3", "4", "10.0", "3000.0", "1.1", "-0.01"]
    assert read_jec_text(path) == table


def test_table_equality_sees_values(shared_data):
    t = read_jec_text(
        shared_data / POCKET / "Summer19UL18_V5_MC_L2Relative_AK4PFchs.jec.txt.gz"
    )
    other = read_jec_text(
        shared_data / POCKET / "Summer19UL18_V5_MC_L2Relative_AK4PFchs.jec.txt.gz"
    )
    other.params[3, 2] += 1e-9
    assert t != other


# -- formula ---------------------------------------------------------------------------


def test_clamped_expression_matches_cms_json():
    # The strings below are copied from CMS's 2018_UL_jet_jerc.json.gz.
    l1 = "max(0.0001,1-(z/y)*([1]*(x-[0])*(1.+[2]*log(y/15.))))"
    assert clamped_expression(l1, 3) == (
        "max(0.0001,1-(max(min(z,[5]),[4])/max(min(y,[3]),[2]))*([7]*(max(min(x,[1]),[0])-[6])"
        "*(1.+[8]*log(max(min(y,[3]),[2])/15.))))"
    )
    assert clamped_expression("1", 1) == "1"
    assert clamped_expression("max(0.0001,(x<[10])*([9]))", 1) == (
        "max(0.0001,(max(min(x,[1]),[0])<[12])*([11]))"
    )


def test_formula_helpers():
    assert formula_parameter_count("[0]+[11]*exp(x)") == 12
    assert formula_parameter_count("1") == 0
    assert clamped_expression("TMath::Max(0.0001,[0]*TMath::Log(x))", 1) == (
        "max(0.0001,[2]*log(max(min(x,[1]),[0])))"
    )
    with pytest.raises(FormulaSyntaxError, match="only 1 formula variable"):
        clamped_expression("[0]*y", 1)
    with pytest.raises(FormulaSyntaxError, match="unbalanced"):
        clamped_expression("max(0.0001,[0]*x", 1)
    with pytest.raises(FormulaSyntaxError, match="unexpected character '@'"):
        clamped_expression("[0]@x", 1)
    with pytest.raises(FormulaSyntaxError, match="TMath::Gamma"):
        clamped_expression("TMath::Gamma(x)", 1)


# -- names -----------------------------------------------------------------------------


def test_parse_correction_name():
    n = parse_correction_name(
        "Summer22_22Sep2023_V2_MC_L2Relative_AK4PFPuppi", require_coffea=True
    )
    assert (n.tag, n.level, n.jet_type) == (
        "Summer22_22Sep2023_V2_MC",
        "L2Relative",
        "AK4PFPuppi",
    )
    assert n.name == "Summer22_22Sep2023_V2_MC_L2Relative_AK4PFPuppi"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("Summer19UL18_V5_MC_Uncertainty_AK4PFchs", "contains no JEC level"),
        ("Summer19UL18_V5_MC_L2Relative", "second-to-last"),
        ("Sim_MC_L2Relative_AK4PFchs", "coffea.jetmet_tools needs 5 or 6"),
        ("My_Private_Sim_V1_MC_L2Relative_AK4PFchs", "has 7 '_'-separated tokens"),
    ],
)
def test_bad_names(name, match):
    with pytest.raises(ConfigError, match=match) as exc:
        parse_correction_name(name, source="some/file.jec.txt", require_coffea=True)
    assert "some/file.jec.txt" in str(exc.value)


# -- bad input -------------------------------------------------------------------------

HEADER = "{1 JetEta 1 JetPt max(0.0001,[0]+[1]*log10(x)) Correction L2Relative}"
BAD_FILES = {
    "not_a_number": (
        f"{HEADER}\n-5.191 0 4 10 3000 1.0 0.1\n0 5.191 4 10 3000 1.o 0.1\n",
        "line 3",
        "'1.o'",
    ),
    "wrong_count": (f"{HEADER}\n-5.191 0 5 10 3000 1.0 0.1\n", "line 2", "announces 5"),
    "too_few_params": (
        f"{HEADER}\n-5.191 0 3 10 3000 1.0\n",
        "line 2",
        "formula uses 2",
    ),
    "bad_header": (
        "{1 JetEta x JetPt 1 Correction L2Relative}\n-5 5 2 10 3000\n",
        "line 1",
        "malformed JEC header",
    ),
    "no_braces": (
        "1 JetEta 1 JetPt 1 Correction L2Relative\n",
        "line 1",
        "malformed JEC header",
    ),
    "unbalanced_formula": (
        "{1 JetEta 1 JetPt max(0.0001,[0]*x Correction L2Relative}\n",
        "line 1",
        "unbalanced",
    ),
    "ragged": (
        f"{HEADER}\n-5.191 0 4 10 3000 1.0 0.1\n0 5.191 5 10 3000 1.0 0.1 7\n",
        "line 3",
        "same parameter count",
    ),
    "section": (
        '[AbsoluteStat]\n{1 JetEta 1 JetPt "" Correction Uncertainty}\n',
        "line 1",
        "uncertainty-source",
    ),
    "empty": ("\n\n", "", "no header line"),
    "header_only": (f"{HEADER}\n", "", "no records"),
    "inverted_bin": (
        f"{HEADER}\n0 -5.191 4 10 3000 1.0 0.1\n",
        "record 1",
        "upper bin bound",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_files(tmp_path, case):
    text, where, what = BAD_FILES[case]
    path = tmp_path / f"Bad_V1_MC_L2Relative_{case}.jec.txt"
    path.write_text(text)
    with pytest.raises(InputFileError) as exc:
        read_jec_text(path)
    msg = str(exc.value)
    assert isinstance(exc.value, JecCoffeaError)
    assert str(path) in msg
    assert where in msg
    assert what in msg


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputFileError, match="cannot read JEC text file"):
        read_jec_text(tmp_path / "Nope_V1_MC_L2Relative_AK4PFchs.jec.txt")
    bad_gz = tmp_path / "Bad_V1_MC_L2Relative_AK4PFchs.jec.txt.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(
        InputFileError, match=r"Bad_V1_MC_L2Relative_AK4PFchs\.jec\.txt\.gz"
    ):
        read_jec_text(bad_gz)


def test_table_shape_errors():
    with pytest.raises(ConfigError, match="var_lo of shape"):
        JecTextTable(
            bin_vars=("JetEta",),
            par_vars=("JetPt",),
            formula="[0]",
            level="L2Relative",
            bin_lo=[[-5.0], [0.0]],
            bin_hi=[[0.0], [5.0]],
            var_lo=[10.0, 10.0, 10.0],
            var_hi=[3000.0, 3000.0],
            params=[[1.0], [1.0]],
        )
    with pytest.raises(ConfigError, match="at least one record"):
        JecTextTable(("JetEta",), ("JetPt",), "1", "L3Absolute", [], [], [], [], [])

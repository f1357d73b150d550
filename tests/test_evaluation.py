"""Summary tables (jec_coffea.evaluation) and ``jec-coffea evaluate`` on synthetic and real outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from coffea.util import save

from jec_coffea.cli import main
from jec_coffea.data.jet_table import FLAVOUR_GROUPS
from jec_coffea.errors import InputFileError
from jec_coffea.evaluation import evaluate, load_output
from jec_coffea.histograms import (
    PARTON_FLAVOURS,
    CutFlow,
    response_histogram,
    response_vs_eta_histogram,
    response_vs_rho_histogram,
)

# median response per method and flavour group, and the width relative to "standard"
SCALE = {
    "raw": {"uds": 0.93, "c": 0.92, "b": 0.90, "g": 0.88, "unknown": 0.9},
    "standard": {"uds": 1.005, "c": 0.995, "b": 0.985, "g": 0.975, "unknown": 1.0},
    "deepsets": {"uds": 1.001, "c": 0.999, "b": 0.998, "g": 0.997, "unknown": 1.0},
}
WIDTH = {"raw": 1.0, "standard": 1.0, "deepsets": 0.85}
GROUP_OF = {"u": "uds", "d": "uds", "s": "uds", "c": "c", "b": "b", "g": "g"}


def synthetic_output(
    n_per_flavour: int = 40_000,
    seed: int = 1,
    methods: tuple[str, ...] = ("raw", "standard", "deepsets"),
) -> dict:
    """A ResponseProcessor-like output filled directly with generated responses.

    Jets are log-uniform in pT_gen (20-3000 GeV), uniform in η_gen (|η| < 4.9) and Gamma in
    ρ; each method shifts the median per flavour (SCALE, with a 1/pT_gen rise) and scales a
    common Gaussian smearing (WIDTH), so "deepsets" is 15% narrower than "standard" and has a
    smaller flavour dependence by construction; "raw" depends on ρ.
    """
    rng = np.random.default_rng(seed)
    out = {
        "response": response_histogram(methods),
        "response_flavour6": response_histogram(methods, flavours=PARTON_FLAVOURS),
        "response_vs_rho": response_vs_rho_histogram(methods),
        "response_vs_eta": response_vs_eta_histogram(methods),
    }
    cutflow = CutFlow()
    jobs = [(False, f) for f in FLAVOUR_GROUPS] + [(True, f) for f in PARTON_FLAVOURS]
    for six, fl in jobs:
        group = GROUP_OF[fl] if six else fl
        n = n_per_flavour // (3 if six and fl in ("u", "d", "s") else 1)
        pt_gen = np.exp(rng.uniform(np.log(20), np.log(3000), n))
        eta = rng.uniform(-4.9, 4.9, n)
        rho = rng.gamma(4.0, 5.0, n)
        if not six:
            cutflow.record("matched", np.ones(n, bool))
        sigma = np.sqrt(1.0 / pt_gen + 0.04**2 + (3.0 / pt_gen) ** 2)
        z = rng.standard_normal(n)
        for m in methods:
            shift = SCALE[m][group] - 1 + (0.002 if fl == "u" else 0.0)
            r = 1 + shift * (1 + 30 / pt_gen) + WIDTH[m] * sigma * z
            if m == "raw":
                r = r - 0.002 * rho
            common = {"method": m, "pt_gen": pt_gen, "response": r}
            if six:
                out["response_flavour6"].fill(flavour=fl, abs_eta=np.abs(eta), **common)
                continue
            out["response"].fill(flavour=fl, abs_eta=np.abs(eta), **common)
            out["response_vs_rho"].fill(abs_eta=np.abs(eta), event_rho=rho, **common)
            out["response_vs_eta"].fill(eta_gen=eta, **common)
    out["cutflow"] = cutflow
    out["n_events"] = n_per_flavour
    return out


@pytest.fixture(scope="module")
def synth() -> dict:
    return synthetic_output()


@pytest.fixture(scope="module")
def summary(synth):
    return evaluate(synth, min_jets=100, n_boot=20, n_shuffle=10, source="synthetic")


def test_improvements_follow_the_generated_widths(summary):
    ds = summary.headline("deepsets")
    std = summary.headline("standard")
    raw = summary.headline("raw")
    assert ds.n_bins == std.n_bins == 12  # every summary-grid bin is eligible
    # deepsets is generated 15% narrower than standard: IQR/median follows up to the median shift
    assert 12.0 < ds.improvement_resolution < 18.0
    assert std.improvement_resolution == pytest.approx(0.0)
    assert (
        raw.improvement_resolution < 0
    )  # raw: same width but median ~0.9 -> worse IQR/median
    # flavour dependence: medians spread by 0.004 (deepsets) vs 0.03 (standard)
    assert ds.s < 0.3 * std.s
    assert ds.improvement_s > 70.0
    # S_6 sees the extra u shift; it is reported where the six-flavour view is present
    assert ds.s6 is not None
    assert ds.s6 > 0
    assert summary.closure["method"] == "standard"
    assert summary.closure["n_tested"] > 0
    # per |eta| rows exist for both summary |eta| bins plus the headline
    etas = [r.abs_eta for r in summary.rows if r.method == "deepsets"]
    assert etas == [(0.0, 1.3), (1.3, 2.5), "all"]


def test_summary_json_and_markdown(summary, tmp_path):
    path = tmp_path / "summary.json"
    summary.to_json(path)
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 1
    assert doc["reference"] == "standard"
    assert set(doc["methods"]) == {"raw", "standard", "deepsets"}
    row = doc["methods"]["deepsets"]["bins"][-1]
    assert row["abs_eta"] == "all"
    for key in (
        "n_bins",
        "resolution",
        "resolution_err",
        "gauss_resolution",
        "s",
        "s_floor",
        "s6",
        "improvement_resolution",
        "improvement_s",
    ):
        assert key in row
    assert doc["cutflow"]["steps"][0]["step"] == "matched"
    md = summary.to_markdown()
    assert md.startswith("| method |")
    assert md.count("| deepsets |") == 3


def test_no_eligible_bin_gives_nulls_not_numbers(synth):
    s = evaluate(synth, min_jets=1e9, n_boot=4, n_shuffle=2)
    h = s.headline("deepsets")
    assert h.n_bins == 0
    assert math.isnan(h.resolution)
    assert h.improvement_resolution is None
    assert s.to_dict()["methods"]["deepsets"]["bins"][-1]["resolution"] is None


def test_missing_reference_disables_improvements(synth, caplog):
    s = evaluate(synth, reference="nonexistent", min_jets=100, n_boot=4, n_shuffle=2)
    assert s.reference is None
    assert s.headline("deepsets").improvement_resolution is None
    assert "nonexistent" in caplog.text


def test_cli_evaluate_prints_and_writes(synth, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    save(synth, str(out / "histograms.coffea"))
    code = main(
        [
            "evaluate",
            str(out),
            "--min-jets",
            "100",
            "--n-boot",
            "4",
            "--json",
            str(tmp_path / "s.json"),
            "--markdown",
            str(tmp_path / "s.md"),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "summary" in text
    assert "closure of standard" in text
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["min_jets"] == 100
    assert doc["methods"]["deepsets"]["bins"][-1]["n_bins"] == 12
    assert (tmp_path / "s.md").read_text().startswith("| method |")


def test_bad_inputs_name_the_file(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "histograms.coffea" in err
    assert "jec-coffea run" in err
    bogus = tmp_path / "x.coffea"
    save({"something": 1}, str(bogus))
    with pytest.raises(InputFileError, match="no 'response' histogram"):
        load_output(bogus)
    (tmp_path / "garbage.coffea").write_bytes(b"not a pickle")
    with pytest.raises(InputFileError, match=r"garbage\.coffea"):
        load_output(tmp_path / "garbage.coffea")
    assert main(["evaluate", str(tmp_path / "x.coffea"), "--n-boot", "1"]) == 2


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore:Missing cross-reference index:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Found duplicate branch:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning")
def test_real_file_summary(shared_data):
    from coffea import processor
    from coffea.nanoevents import PFNanoAODSchema

    from jec_coffea.processors import ResponseProcessor
    from jec_coffea.standard import JECStack

    jec = JECStack.from_spec(
        str(shared_data / "jec/correctionlib/2017_UL_jet_jerc.json.gz")
        + ":Summer19UL17_V5_MC:AK4PFchs"
    )
    runner = processor.Runner(
        executor=processor.IterativeExecutor(), schema=PFNanoAODSchema
    )
    out = runner(
        {"qcd": {"files": {str(shared_data / "pfnano/coffea_pfnano.root"): "Events"}}},
        ResponseProcessor(jec=jec),
        treename="Events",
    )
    s = evaluate(out, min_jets=1, n_boot=4, n_shuffle=2)
    assert s.methods == ["raw", "standard", "nanoaod", "pt_full_corr"]
    # QCD light-quark/gluon file: no b jets, so no grid bin has every flavour group
    assert all(r.n_bins == 0 for r in s.rows)
    assert s.cutflow["steps"][0] == {
        "step": "all jets",
        "count": 64,
        "sumw": pytest.approx(s.cutflow["steps"][0]["sumw"]),
        "sumw2": pytest.approx(s.cutflow["steps"][0]["sumw2"]),
    }

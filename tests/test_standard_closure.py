"""Closure on files written by CMS: raw pT x L1L2L3 reproduces NanoAOD's Jet_pt.

Branches are read with plain uproot. The text path goes through coffea.jetmet_tools (our
JECStack and coffea's own CorrectedJetsFactory), the JSON path through correctionlib.
"""

from __future__ import annotations

import gzip
import pickle
import random

import awkward as ak
import numpy as np
import pytest
import uproot

from jec_coffea.errors import (
    ConfigError,
    InputFileError,
    JecCoffeaError,
    MissingBranchError,
)
from jec_coffea.standard import JECStack, event_rho

pytestmark = pytest.mark.shared_data

POCKET = "jec/textfiles/pocketcoffea"
LEVELS = ("L1FastJet", "L2Relative", "L3Absolute", "L2L3Residual")
CASES = {
    "UL17-pfnano": (
        "pfnano/coffea_pfnano.root",
        "Summer19UL17_V5_MC",
        "2017_UL_jet_jerc.json.gz",
    ),
    "UL18-nanoaod": (
        "nanoaod/coffea_missing_luminosityBlock.root",
        "Summer19UL18_V5_MC",
        "2018_UL_jet_jerc.json.gz",
    ),
}
BRANCHES = [
    "Jet_pt",
    "Jet_eta",
    "Jet_phi",
    "Jet_mass",
    "Jet_area",
    "Jet_rawFactor",
    "fixedGridRhoFastjetAll",
]


def _text_files(shared_data, tag, jet="AK4PFchs"):
    files = [shared_data / POCKET / f"{tag}_{lv}_{jet}.jec.txt.gz" for lv in LEVELS]
    random.Random(1).shuffle(files)  # the order given must not matter
    return files


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, shared_data):
    path, tag, json_name = CASES[request.param]
    events = uproot.open(shared_data / path)["Events"].arrays(BRANCHES)
    raw = events.Jet_pt * (1 - events.Jet_rawFactor)
    return {
        "events": events,
        "raw": raw,
        "tag": tag,
        "text": JECStack.from_text(_text_files(shared_data, tag)),
        "json": JECStack.from_correctionlib(
            shared_data / "jec" / "correctionlib" / json_name, tag, "AK4PFchs"
        ),
    }


def _closure(case, factor) -> np.ndarray:
    ratio = ak.flatten(case["raw"] * factor / case["events"].Jet_pt)
    return np.abs(ak.to_numpy(ratio) - 1)


@pytest.mark.parametrize("backend", ["text", "json"])
def test_closure(case, backend):
    stack = case[backend]
    ev = case["events"]
    assert stack.levels == LEVELS
    assert stack.backend == {"text": "coffea", "json": "correctionlib"}[backend]
    factor = stack.factor(
        case["raw"], ev.Jet_eta, ev.Jet_area, ev.fixedGridRhoFastjetAll
    )
    assert ak.all(ak.num(factor) == ak.num(ev.Jet_pt))
    dev = _closure(case, factor)
    assert np.median(dev) < 5e-4
    assert (
        dev.max() < 5e-3
    )  # NanoAOD packs rawFactor, eta and area in reduced precision


def test_closure_corrected_jets_factory(case):
    """coffea's CorrectedJetsFactory, fed with our stack's coffea JECStack, closes as well."""
    from coffea.jetmet_tools import CorrectedJetsFactory

    ev = case["events"]
    jets = ak.zip(
        {
            "pt": ev.Jet_pt,
            "mass": ev.Jet_mass,
            "eta": ev.Jet_eta,
            "area": ev.Jet_area,
            "pt_raw": case["raw"],
            "mass_raw": ev.Jet_mass * (1 - ev.Jet_rawFactor),
            # never call this field "rho": coffea's vector behaviour owns that name
            "event_rho": ak.broadcast_arrays(ev.fixedGridRhoFastjetAll, ev.Jet_pt)[0],
        }
    )
    name_map = {
        "JetPt": "pt",
        "JetMass": "mass",
        "JetEta": "eta",
        "JetA": "area",
        "Rho": "event_rho",
        "ptRaw": "pt_raw",
        "massRaw": "mass_raw",
        "ptGenJet": "pt_raw",  # unused without JER; present to avoid the stochastic warning
    }
    factory = CorrectedJetsFactory(name_map, case["text"].coffea_jec_stack())
    corrected = factory.build(jets)
    dev = np.abs(ak.to_numpy(ak.flatten(corrected.pt / ev.Jet_pt)) - 1)
    assert np.median(dev) < 5e-4
    ours = case["text"].factor(
        case["raw"], ev.Jet_eta, ev.Jet_area, ev.fixedGridRhoFastjetAll
    )
    # the factory computes on the float32 NanoAOD columns, we on float64
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(corrected.jet_energy_correction)),
        ak.to_numpy(ak.flatten(ours)),
        rtol=1e-6,
    )


def test_text_equals_json_per_level(case):
    ev = case["events"]
    args = (case["raw"], ev.Jet_eta, ev.Jet_area, ev.fixedGridRhoFastjetAll)
    text = case["text"].level_factors(*args)
    json_ = case["json"].level_factors(*args)
    assert list(text) == list(json_) == list(LEVELS)
    total = 1.0
    for level in LEVELS:
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(text[level])),
            ak.to_numpy(ak.flatten(json_[level])),
            rtol=1e-5,
            err_msg=level,
        )
        total = total * json_[level]
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(total)),
        ak.to_numpy(ak.flatten(case["json"].factor(*args))),
        rtol=1e-12,
    )


def test_sequential_application(case):
    """L2Relative is evaluated at the L1-corrected pT, not at the raw pT."""
    ev = case["events"]
    raw = ak.to_numpy(ak.flatten(case["raw"]))
    eta = ak.to_numpy(ak.flatten(ev.Jet_eta))
    area = ak.to_numpy(ak.flatten(ev.Jet_area))
    rho = ak.to_numpy(
        ak.flatten(ak.broadcast_arrays(ev.fixedGridRhoFastjetAll, ev.Jet_pt)[0])
    )
    stack = case["json"]
    levels = stack.level_factors(raw, eta, area, rho)
    l2_only = JECStack.from_correctionlib(
        stack.source.split(":")[0], stack.tag, stack.jet_type, levels=["L2Relative"]
    )
    at_l1_pt = l2_only.factor(raw * levels["L1FastJet"], eta)
    np.testing.assert_allclose(levels["L2Relative"], at_l1_pt, rtol=1e-12)
    assert not np.allclose(levels["L2Relative"], l2_only.factor(raw, eta), rtol=1e-6)


@pytest.mark.parametrize("backend", ["text", "json"])
def test_numpy_dask_and_pickle_agree(case, backend):
    import dask_awkward as dak

    stack = case[backend]
    ev = case["events"]
    args = (case["raw"], ev.Jet_eta, ev.Jet_area, ev.fixedGridRhoFastjetAll)
    eager = stack.factor(*args)
    flat = stack.factor(
        ak.to_numpy(ak.flatten(case["raw"])),
        ak.to_numpy(ak.flatten(ev.Jet_eta)),
        ak.to_numpy(ak.flatten(ev.Jet_area)),
        ak.to_numpy(
            ak.flatten(ak.broadcast_arrays(ev.fixedGridRhoFastjetAll, ev.Jet_pt)[0])
        ),
    )
    assert isinstance(flat, np.ndarray)
    np.testing.assert_array_equal(flat, ak.to_numpy(ak.flatten(eager)))
    lazy = stack.factor(*(dak.from_awkward(a, npartitions=2) for a in args))
    assert ak.array_equal(lazy.compute(), eager)
    clone = pickle.loads(pickle.dumps(stack))
    assert ak.array_equal(clone.factor(*args), eager)


# -- from_spec and bad input -----------------------------------------------------------


def test_from_spec_forms(shared_data, tmp_path):
    files = _text_files(shared_data, "Summer19UL18_V5_MC")
    for f in files:  # a directory as derive-standard writes it (links, no copies)
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "notes.txt").write_text("not a JEC table")
    forms = [
        str(tmp_path),
        ",".join(map(str, files)),
        [str(f) for f in files],
        f"{shared_data}/jec/correctionlib/2018_UL_jet_jerc.json.gz:Summer19UL18_V5_MC:AK4PFchs",
    ]
    pt, eta = np.array([15.0, 40.0, 300.0]), np.array([0.3, -2.7, 4.0])
    area, rho = np.array([0.5, 0.45, 0.52]), np.array([12.0, 30.0, 5.0])
    results = []
    for spec in forms:
        stack = JECStack.from_spec(spec)
        assert (stack.tag, stack.jet_type, stack.levels) == (
            "Summer19UL18_V5_MC",
            "AK4PFchs",
            LEVELS,
        )
        results.append(stack.factor(pt, eta, area, rho))
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-5)
    assert np.all(results[0] > 1.0)  # low-response region: the L2 factor is above one


def test_bad_specs(shared_data, tmp_path):
    json_path = shared_data / "jec" / "correctionlib" / "2018_UL_jet_jerc.json.gz"
    with pytest.raises(ConfigError, match="needs the tag and jet type"):
        JECStack.from_spec(str(json_path))
    with pytest.raises(ConfigError, match="Summer19UL18_V6_MC") as exc:
        JECStack.from_spec(f"{json_path}:Summer19UL18_V6_MC:AK4PFchs")
    assert "Summer19UL18_V5_MC" in str(exc.value)
    assert str(json_path) in str(exc.value)
    with pytest.raises(ConfigError, match="AK8PFchs"):
        JECStack.from_correctionlib(json_path, "Summer19UL18_V5_MC", "AK8PFchs")
    with pytest.raises(ConfigError, match=r"level\(s\) \['L5Flavor'\]"):
        JECStack.from_correctionlib(
            json_path, "Summer19UL18_V5_MC", "AK4PFchs", levels=["L5Flavor"]
        )
    with pytest.raises(InputFileError, match="cannot read correctionlib JSON"):
        JECStack.from_spec(f"{tmp_path}/missing.json.gz:Summer19UL18_V5_MC:AK4PFchs")
    with pytest.raises(ConfigError, match=r"no \*\.jec\.txt"):
        JECStack.from_spec(str(tmp_path))
    with pytest.raises(ConfigError, match="none of"):
        JECStack.from_spec(str(tmp_path / "something.root"))


def test_bad_text_stacks(shared_data, tmp_path):
    ul18 = _text_files(shared_data, "Summer19UL18_V5_MC")
    ul17 = _text_files(shared_data, "Summer19UL17_V5_MC")
    with pytest.raises(ConfigError, match="several tags"):
        JECStack.from_text([ul18[0], *(f for f in ul17 if "L2Relative" in f.name)])
    # a name coffea rejects (7 tokens)
    odd = tmp_path / "My_Private_Summer19UL18_V5_MC_L2Relative_AK4PFchs.jec.txt.gz"
    odd.symlink_to(
        shared_data / POCKET / "Summer19UL18_V5_MC_L2Relative_AK4PFchs.jec.txt.gz"
    )
    with pytest.raises(ConfigError, match=r"coffea\.jetmet_tools needs 5 or 6") as exc:
        JECStack.from_text([odd])
    assert str(odd) in str(exc.value)
    twice = tmp_path / "Summer19UL18_V5_MC_L2Relative_AK4PFchs.jec.txt"
    twice.write_text(
        gzip_text(
            shared_data / POCKET / "Summer19UL18_V5_MC_L2Relative_AK4PFchs.jec.txt.gz"
        )
    )
    with pytest.raises(ConfigError, match="level L2Relative given twice"):
        JECStack.from_text(
            [twice, shared_data / POCKET / twice.name.replace(".txt", ".txt.gz")]
        )
    broken = tmp_path / "Sim_V1_MC_L2Relative_AK4PFchs.jec.txt"
    broken.write_text(
        "{1 JetEta 1 JetPt [0]*x Correction L2Relative}\n-5 5 3 10 oops 1\n"
    )
    with pytest.raises(InputFileError, match="line 2") as exc2:
        JECStack.from_text([broken])
    assert isinstance(exc2.value, JecCoffeaError)
    assert str(broken) in str(exc2.value)


def test_missing_inputs_are_named(case):
    with pytest.raises(ConfigError, match="need area"):
        case["json"].factor(np.array([30.0]), np.array([0.1]), None, np.array([10.0]))
    with pytest.raises(ConfigError, match="evaluated by correctionlib"):
        case["json"].coffea_jec_stack()


def test_event_rho_run2_run3():
    run2 = ak.Array({"fixedGridRhoFastjetAll": [10.0, 20.0]})
    run3 = ak.zip(
        {"Rho": ak.zip({"fixedGridRhoFastjetAll": [11.0, 21.0]})}, depth_limit=1
    )
    assert event_rho(run2).tolist() == [10.0, 20.0]
    assert event_rho(run3).tolist() == [11.0, 21.0]
    with pytest.raises(MissingBranchError, match="Rho_fixedGridRhoFastjetAll"):
        event_rho(ak.Array({"fixedGridRhoFastjetCentral": [1.0]}))


def gzip_text(path) -> str:
    with gzip.open(path, "rt") as fh:
        return fh.read()


@pytest.mark.filterwarnings("ignore:Missing cross-reference index:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning")
def test_nanoevents_dask_closure_and_columns(shared_data):
    """Inside coffea's NanoEvents (dask mode) the stack closes and reads only its inputs."""
    import dask_awkward as dak
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    path, tag, json_name = CASES["UL17-pfnano"]
    events = NanoEventsFactory.from_root(
        {str(shared_data / path): "Events"}, schemaclass=NanoAODSchema, mode="dask"
    ).events()
    stack = JECStack.from_spec(
        f"{shared_data}/jec/correctionlib/{json_name}:{tag}:AK4PFchs"
    )
    jets = events.Jet
    raw = jets.pt * (1 - jets.rawFactor)
    factor = stack.factor(raw, jets.eta, jets.area, event_rho(events))
    (columns,) = dak.necessary_columns(factor).values()
    assert set(columns) == {
        "nJet",
        "Jet_pt",
        "Jet_rawFactor",
        "Jet_eta",
        "Jet_area",
        "fixedGridRhoFastjetAll",
    }
    ratio = ak.flatten(raw * factor / jets.pt).compute()
    assert np.median(np.abs(ak.to_numpy(ratio) - 1)) < 5e-4


def test_option_type_inputs_rejected(case):
    padded = ak.pad_none(case["raw"], 3)
    with pytest.raises(ConfigError, match="fill_none"):
        case["json"].factor(padded, padded, padded, 10.0)

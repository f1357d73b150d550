"""ResponseProcessor through coffea's Runner on the real shared files."""

from __future__ import annotations

import pickle

import awkward as ak
import numpy as np
import pytest
from coffea import processor
from coffea.nanoevents import (
    BaseSchema,
    NanoAODSchema,
    NanoEventsFactory,
    PFNanoAODSchema,
)

from jec_coffea.data import read_jet_table
from jec_coffea.errors import ConfigError, MissingBranchError
from jec_coffea.histograms import CutFlow
from jec_coffea.metrics import histogram_quantiles, response_table
from jec_coffea.processors import JetSelection, ResponseProcessor, prompt_lepton_min_dr
from jec_coffea.standard import JECStack

pytestmark = [
    pytest.mark.shared_data,
    # coffea's schemas warn about cross-references these test files lack
    pytest.mark.filterwarnings("ignore:Missing cross-reference index:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Found duplicate branch:RuntimeWarning"),
]

UL17 = "jec/correctionlib/2017_UL_jet_jerc.json.gz:Summer19UL17_V5_MC:AK4PFchs"
PFNANO = "pfnano/coffea_pfnano.root"


@pytest.fixture(scope="module")
def ul17(shared_data) -> JECStack:
    return JECStack.from_spec(str(shared_data / UL17))


def _run(
    path,
    proc,
    *,
    schema=PFNanoAODSchema,
    tree="Events",
    chunksize=100_000,
    executor=None,
):
    runner = processor.Runner(
        executor=executor or processor.IterativeExecutor(),
        schema=schema,
        chunksize=chunksize,
    )
    return runner({"sample": {"files": {str(path): tree}}}, proc, treename=tree)


@pytest.fixture(scope="module")
def pfnano_out(shared_data, ul17):
    return _run(shared_data / PFNANO, ResponseProcessor(jec=ul17), chunksize=4)


def test_standard_closes_with_nanoaod_on_pfnano(shared_data, pfnano_out):
    out = pfnano_out
    assert out["n_events"] == 10
    n_chunks = out["layouts"]["pfnano"]
    assert set(out["layouts"]) == {"pfnano"}
    assert n_chunks >= 2  # 10 events in chunks of at most 4
    assert out["missing_methods"] == {
        "raw": 0,
        "standard": 0,
        "nanoaod": 0,
        "pt_full_corr": n_chunks,
    }
    assert out["not_applied"] == {
        "tight jet ID": 0,
        "no prompt lepton within dR 0.4": 0,
    }
    # cut-flow against the jet table read directly
    jets = read_jet_table(shared_data / PFNANO).jets
    cutflow = out["cutflow"]
    assert isinstance(cutflow, CutFlow)
    assert cutflow.steps == list(JetSelection().steps)
    expected = (
        np.asarray(jets.matched)
        & (np.asarray(jets.pt_gen) >= 20)
        & (np.abs(np.asarray(jets.eta_gen)) < 5)
        & ((np.asarray(jets.jet_id).astype(int) & 2) == 2)
    )
    assert cutflow.counts["all jets"] == len(jets) == 64
    assert cutflow.counts["matched"] == int(np.sum(jets.matched))
    assert cutflow.counts["no prompt lepton within dR 0.4"] == int(expected.sum())
    assert out["n_jets"] == {
        m: int(expected.sum()) for m in ("raw", "standard", "nanoaod")
    } | {"pt_full_corr": 0}
    h = out["response"]
    assert h[{"method": "standard"}].sum().value == pytest.approx(expected.sum())
    table = response_table(
        h,
        flavours=["all"],
        abs_eta_edges=(0, 5),
        pt_edges=(20, 3000),
        errors="analytic",
        fit=False,
    )
    med = {b.method: b.median for b in table.bins}
    # Jet_pt of this file closes with Summer19UL17_V5_MC per jet to 1.6e-4 (PROVENANCE.md):
    # the histogram medians agree to a bin
    assert med["standard"] == pytest.approx(med["nanoaod"], abs=0.0055)
    # and the full distributions agree: at most a few jets change response bin
    view = h.view(flow=True)["value"]
    methods = list(h.axes["method"])
    cdf_std = np.cumsum(view[methods.index("standard")].sum(axis=(0, 1, 2)))
    cdf_nano = np.cumsum(view[methods.index("nanoaod")].sum(axis=(0, 1, 2)))
    assert np.max(np.abs(cdf_std - cdf_nano)) <= 2
    # raw is well below 1 (the JEC raises pT), and equals numpy on the same jets
    r_raw = (np.asarray(jets.pt_raw) / np.asarray(jets.pt_gen))[expected]
    assert med["raw"] == pytest.approx(np.median(r_raw), abs=0.01)
    assert med["raw"] < med["standard"] - 0.02
    q = histogram_quantiles(out["response_vs_eta"], [0.5])
    assert q.shape == (4, 50, 7, 1)
    assert out["response_flavour6"].sum().value == pytest.approx(
        3 * expected.sum(), abs=3 * 5
    )


def test_chunking_and_pickling_do_not_change_the_output(shared_data, ul17, pfnano_out):
    proc = ResponseProcessor(jec=ul17)
    state = pickle.dumps(proc)
    one = _run(shared_data / PFNANO, proc, chunksize=100)
    assert pickle.dumps(proc) == state  # the processor holds no state
    clone = pickle.loads(state)
    assert clone.methods == proc.methods
    for key in ("response", "response_flavour6", "response_vs_rho", "response_vs_eta"):
        np.testing.assert_allclose(
            one[key].values(flow=True), pfnano_out[key].values(flow=True)
        )
        np.testing.assert_allclose(
            one[key].variances(flow=True), pfnano_out[key].variances(flow=True)
        )
    assert one["cutflow"].counts == pfnano_out["cutflow"].counts


def test_mljec_ntuples_fill_pt_full_corr(shared_data):
    shards = sorted((shared_data / "mljec" / "shards").glob("*.root"))
    runner = processor.Runner(executor=processor.IterativeExecutor(), schema=BaseSchema)
    fileset = {"mljec": {"files": {str(p): "Jets" for p in shards}}}
    out = runner(
        fileset,
        ResponseProcessor(methods=["raw", "pt_full_corr", "nanoaod"]),
        treename="Jets",
    )
    assert out["layouts"] == {"mljec": len(shards)}
    # per-jet ntuples: no jet ID and no generator leptons, so those steps are not applied
    assert out["not_applied"] == {
        "tight jet ID": 5,
        "no prompt lepton within dR 0.4": 5,
    }
    assert out["missing_methods"] == {"raw": 0, "pt_full_corr": 0, "nanoaod": 5}
    tables = [read_jet_table(p).jets for p in shards]
    pt_gen = np.concatenate([np.asarray(t.pt_gen) for t in tables])
    eta_gen = np.concatenate([np.asarray(t.eta_gen) for t in tables])
    full = np.concatenate([np.asarray(t.pt_full_corr) for t in tables])
    keep = (pt_gen >= 20) & (np.abs(eta_gen) < 5)
    assert out["n_jets"]["pt_full_corr"] == int(keep.sum())
    h = out["response"][
        {"method": "pt_full_corr", "flavour": sum, "abs_eta": sum, "pt_gen": sum}
    ]
    hist_median = histogram_quantiles(
        out["response"][{"flavour": sum, "abs_eta": sum}][{"pt_gen": sum}], [0.5]
    )
    assert h.sum().value == keep.sum()
    assert hist_median[1, 0] == pytest.approx(
        np.median((full / pt_gen)[keep]), abs=0.02
    )


def test_prompt_lepton_veto_on_ttbar(shared_data):
    path = shared_data / "nanoaod" / "skhep_nanoAOD_2015_CMS_Open_Data_ttbar.root"
    events = NanoEventsFactory.from_root(
        {str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager"
    ).events()
    proc = ResponseProcessor(methods=["raw", "nanoaod"], views=(), layout="nanoaod")
    out = proc.process(events)
    assert set(out) >= {"response", "cutflow", "n_events", "n_jets"}
    assert "response_vs_rho" not in out
    # independent computation with coffea's vector behaviour
    gen = events.GenPart
    flags = gen.statusFlags
    lep = gen[
        ((abs(gen.pdgId) == 11) | (abs(gen.pdgId) == 13))
        & (gen.status == 1)
        & (((flags & 1) != 0) | ((flags & 32) != 0))
        & (gen.pt >= 10)
    ]
    dr = ak.fill_none(ak.min(events.Jet.metric_table(lep), axis=2), np.inf)
    ours = prompt_lepton_min_dr(
        events,
        ak.to_numpy(ak.flatten(events.Jet.eta)),
        ak.to_numpy(ak.flatten(events.Jet.phi)),
    )
    np.testing.assert_allclose(ours, ak.to_numpy(ak.flatten(dr)), rtol=1e-5)
    # ttbar with leptonic W decays: the veto removes exactly the selected jets near a lepton
    jets = read_jet_table(path).jets
    before = (
        np.asarray(jets.matched)
        & (np.asarray(jets.pt_gen) >= 20)
        & (np.abs(np.asarray(jets.eta_gen)) < 5)
        & ((np.asarray(jets.jet_id).astype(int) & 2) == 2)
    )
    counts = out["cutflow"].counts
    assert counts["tight jet ID"] == int(before.sum())
    removed = counts["tight jet ID"] - counts["no prompt lepton within dR 0.4"]
    assert removed == int(np.sum(before & (ours < 0.4))) > 0
    assert out["n_jets"]["raw"] == counts["no prompt lepton within dR 0.4"]


def test_bad_configuration_and_missing_inputs(shared_data, ul17):
    with pytest.raises(ConfigError, match="needs a JEC stack"):
        ResponseProcessor(methods=["raw", "standard"])
    with pytest.raises(ConfigError, match=r"unknown method\(s\) \['dnn'\]"):
        ResponseProcessor(methods=["raw", "dnn"])
    with pytest.raises(ConfigError, match=r"unknown view\(s\) \['phi'\]"):
        ResponseProcessor(views=["phi"])
    with pytest.raises(ValueError, match="extra"):
        JetSelection(min_ptgen=30)
    assert ResponseProcessor().methods == ("raw", "nanoaod", "pt_full_corr")
    # JetClass-II has no jet area and no rho: the L1FastJet stack cannot be evaluated
    path = str(shared_data / "jetclass" / "sophon_JetClassII_example.root")
    events = NanoEventsFactory.from_root(
        {path: "tree"}, schemaclass=BaseSchema, mode="eager", entry_stop=20
    ).events()
    with pytest.raises(
        MissingBranchError, match=r"'area' not found.*needs input JetA"
    ) as info:
        ResponseProcessor(jec=ul17, layout="jetclass2").process(events)
    assert "JetA" in info.value.reason
    # without the stack the other methods run; the per-jet layout has no jet ID nor leptons
    out = ResponseProcessor(layout="jetclass2", views=("eta",)).process(events)
    assert out["n_events"] == 20
    assert out["missing_methods"] == {"raw": 0, "nanoaod": 1, "pt_full_corr": 1}
    assert out["not_applied"] == {
        "tight jet ID": 1,
        "no prompt lepton within dR 0.4": 1,
    }
    # JetClass-II has no flavour: every jet is in the "unknown" group
    flav = out["response"][
        {"method": "raw", "abs_eta": sum, "pt_gen": sum, "response": sum}
    ]
    assert flav.values().tolist()[:4] == [0, 0, 0, 0]
    assert flav["unknown"].value == out["n_jets"]["raw"] > 0
    # plain arrays carry no file name to detect the layout from
    with pytest.raises(ConfigError, match="pass layout="):
        ResponseProcessor().process(ak.Array([{"Jet_pt": [30.0]}]))


@pytest.mark.dask
def test_dask_executor_equals_iterative(shared_data, ul17, pfnano_out, dask_client):
    out = _run(
        shared_data / PFNANO,
        ResponseProcessor(jec=ul17),
        chunksize=4,
        executor=processor.DaskExecutor(client=dask_client, status=False),
    )
    for key in ("response", "response_vs_rho"):
        np.testing.assert_allclose(
            out[key].values(flow=True), pfnano_out[key].values(flow=True)
        )
    assert out["cutflow"].counts == pfnano_out["cutflow"].counts


def test_unit_weights_count_each_jet_once(shared_data, ul17, pfnano_out):
    """weights="unit" fills Σw = number of jets; the counts equal the genWeight run's."""
    unit = _run(shared_data / PFNANO, ResponseProcessor(jec=ul17, weights="unit"))
    h_gen, h_unit = pfnano_out["response"], unit["response"]
    np.testing.assert_array_equal(h_unit.values(flow=True), h_unit.variances(flow=True))
    n_gen = h_gen[{"method": "raw"}].sum(flow=True)
    n_unit = h_unit[{"method": "raw"}].sum(flow=True)
    assert n_unit.value == unit["n_jets"]["raw"]
    # this file's genWeight is 1 for every event: both runs fill the same histogram
    np.testing.assert_allclose(n_gen.value, n_unit.value)
    with pytest.raises(ConfigError, match="weights"):
        ResponseProcessor(jec=ul17, weights="flat")


def test_selected_jets_only_fill_the_same_response(shared_data, ul17, pfnano_out):
    """reco_views=False evaluates the methods on the selected jets only: the gen-based
    histograms and the cut-flow are those of the full run, the reco views stay empty."""
    proc = ResponseProcessor(jec=ul17, reco_views=False)
    assert proc.fingerprint()["reco_views"] is False
    lean = _run(shared_data / PFNANO, proc, chunksize=4)
    for key in ("response", "response_flavour6", "response_vs_rho", "response_vs_eta"):
        np.testing.assert_array_equal(
            lean[key].values(flow=True), pfnano_out[key].values(flow=True)
        )
        np.testing.assert_array_equal(
            lean[key].variances(flow=True), pfnano_out[key].variances(flow=True)
        )
    assert lean["cutflow"].counts == pfnano_out["cutflow"].counts
    assert lean["n_jets"] == pfnano_out["n_jets"]
    assert pfnano_out["corrected_pt"].sum(flow=True).value > 0
    assert lean["corrected_pt"].sum(flow=True).value == 0
    assert lean["correction_factor"].sum(flow=True).value == 0
    assert all(n == 0 for n in lean["n_reco_jets"].values())

"""Readers: every real file of ../shared/data into the jet table, checked against plain uproot.

The expected numbers of jets and constituents are computed here independently of the reader
(awkward local indexing instead of the reader's flat offsets, the ml-jec ``*_size`` branches,
the JetClass-II PID flags), so a bookkeeping error in the reader shows up as a mismatch.
"""

from __future__ import annotations

import functools
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from jec_coffea.data import (
    FLAVOUR_GROUPS,
    JET_FIELDS,
    JetTable,
    detect_layout,
    flavour_group,
    jet_table_from_events,
    layout_branches,
    read_jet_table,
)
from jec_coffea.data._match import delta_r, greedy_match
from jec_coffea.errors import ConfigError, UnsupportedLayoutError

pytestmark = pytest.mark.shared_data

EXPECTED_LAYOUT: dict[str, str | None] = {
    "nanoaod/coffea_missing_luminosityBlock.root": "nanoaod",
    "nanoaod/coffea_nano_dimuon.root": "nanoaod",
    "nanoaod/coffea_nano_dy.root": "nanoaod",
    "nanoaod/coffea_nano_tree.root": "nanoaod",
    "nanoaod/coffea_nano_tt_v12.root": "nanoaod",
    "nanoaod/skhep_nanoAOD_2015_CMS_Open_Data_ttbar.root": "nanoaod",
    "pfnano/coffea_pfnano.root": "pfnano",
    "pfnano/cmsjet_nano106X_on_mini106X_2017_mc_NANO.root": "pfnano_old",
    "jetclass/sophon_JetClassII_example.root": "jetclass2",
    "jetclass/sophon_events_delphes_example.root": None,
    **{f"mljec/shards/{i}.root": "mljec" for i in range(1, 6)},
}
"""Every ROOT file of the shared data and its layout (None: unsupported)."""

READABLE = [name for name, layout in EXPECTED_LAYOUT.items() if layout]
PFNANO = "pfnano/coffea_pfnano.root"
PFNANO_OLD = "pfnano/cmsjet_nano106X_on_mini106X_2017_mc_NANO.root"
JETCLASS = "jetclass/sophon_JetClassII_example.root"
NANO_DY = "nanoaod/coffea_nano_dy.root"


@functools.cache
def _table(path: Path) -> JetTable:
    """Read each file once per test session (tables are immutable awkward arrays)."""
    return read_jet_table(path)


def _read(shared_data: Path, name: str, **kwargs):
    if name == "nanoaod/coffea_missing_luminosityBlock.root":
        with pytest.warns(UserWarning, match="luminosityBlock"):
            return read_jet_table(shared_data / name, **kwargs)
    return (
        _table(shared_data / name)
        if not kwargs
        else read_jet_table(shared_data / name, **kwargs)
    )


def _uproot_counts(path: Path, layout: str) -> dict[str, int]:
    """Jets and constituents by type, computed with plain uproot + awkward."""
    if layout == "mljec":
        a = uproot.open(path)["Jets"].arrays(["ch_size", "ne_size", "sv_size"])
        return {
            "jets": len(a),
            "charged": int(ak.sum(a.ch_size)),
            "neutral": int(ak.sum(a.ne_size)),
            "sv": int(ak.sum(a.sv_size)),
        }
    if layout == "jetclass2":
        a = uproot.open(path)["tree"].arrays(filter_name="part_is*")
        charged = a.part_isChargedHadron | a.part_isElectron | a.part_isMuon
        neutral = a.part_isPhoton | a.part_isNeutralHadron
        return {
            "jets": len(a),
            "charged": int(ak.sum(charged)),
            "neutral": int(ak.sum(neutral)),
        }
    tree = uproot.open(path)["Events"]
    out = {"jets": int(ak.sum(ak.num(tree["Jet_pt"].array())))}
    if layout == "pfnano":
        a = tree.arrays(
            ["JetPFCands_pFCandsIdx", "PFCands_charge", "JetSVs_sVIdx", "SV_pt"]
        )
        charge = a.PFCands_charge[a.JetPFCands_pFCandsIdx]  # local (jagged) indexing
        out["charged"] = int(ak.sum(charge != 0))
        out["neutral"] = int(ak.sum(charge == 0))
        out["sv"] = int(ak.sum(a.JetSVs_sVIdx >= 0))
    elif layout == "pfnano_old":
        a = tree.arrays(["JetPFCands_charge"])
        out["charged"] = int(ak.sum(a.JetPFCands_charge != 0))
        out["neutral"] = int(ak.sum(a.JetPFCands_charge == 0))
    return out


def test_every_shared_file_is_listed(shared_data: Path) -> None:
    found = {str(p.relative_to(shared_data)) for p in shared_data.rglob("*.root")}
    assert found == set(EXPECTED_LAYOUT)


@pytest.mark.parametrize("name", list(EXPECTED_LAYOUT))
def test_detect_layout(shared_data: Path, name: str) -> None:
    expected = EXPECTED_LAYOUT[name]
    if expected is None:
        with pytest.raises(UnsupportedLayoutError, match="trees found: Delphes"):
            detect_layout(shared_data / name)
    else:
        assert detect_layout(shared_data / name) == expected


@pytest.mark.parametrize("name", READABLE)
def test_counts_match_uproot(shared_data: Path, name: str) -> None:
    layout = EXPECTED_LAYOUT[name]
    table = _read(shared_data, name)
    expected = _uproot_counts(shared_data / name, layout)
    assert table.layout == layout
    assert len(table) == expected.pop("jets")
    for ctype in ("charged", "neutral", "sv"):
        if ctype in expected:
            assert int(ak.sum(ak.num(table.jets[ctype], axis=1))) == expected[ctype]
        else:
            assert ctype not in table.jets.fields
            assert ctype in table.missing
    # constituents are sorted by decreasing pT within each jet
    for ctype in ("charged", "neutral", "sv"):
        if ctype in table.jets.fields:
            pt = table.jets[ctype].pt
            assert ak.all(pt[:, :-1] >= pt[:, 1:])
    # only contract fields or declared extras; no field is both present and missing
    assert not set(table.missing) & set(table.jets.fields)
    extras = set(table.jets.fields) - set(JET_FIELDS) - {"charged", "neutral", "sv"}
    assert extras <= {
        "pnet_reg_corr",
        "pnet_reg_corr_neutrino",
        "upart_reg_corr",
        "pt_full_corr",
        "pt_l1corr",
        "exp_pileup",
        "jetclass_label",
        "sdmass",
    }


def _constituent_sum_pt(jets: ak.Array) -> np.ndarray:
    cands = ak.concatenate([jets.charged, jets.neutral], axis=1)
    px = ak.sum(cands.pt * np.cos(cands.phi), axis=1)
    py = ak.sum(cands.pt * np.sin(cands.phi), axis=1)
    return np.hypot(ak.to_numpy(px), ak.to_numpy(py))


@pytest.mark.parametrize("name", [PFNANO, JETCLASS])
def test_constituent_sum_equals_raw_pt(shared_data: Path, name: str) -> None:
    jets = _table(shared_data / name).jets
    ratio = _constituent_sum_pt(jets) / ak.to_numpy(jets.pt_raw)
    assert len(ratio) > 0
    assert np.all(np.abs(ratio - 1) < 0.005), np.abs(ratio - 1).max()
    # complete layouts: every constituent of the jet is stored
    n_stored = ak.num(jets.charged) + ak.num(jets.neutral)
    np.testing.assert_array_equal(
        ak.to_numpy(n_stored), ak.to_numpy(jets.n_constituents)
    )


def test_old_layout_is_incomplete(shared_data: Path) -> None:
    table = _table(shared_data / PFNANO_OLD)
    jets = table.jets
    assert not np.any(ak.to_numpy(jets.constituents_complete))
    assert "sv" in table.missing
    stored = ak.to_numpy(ak.num(jets.charged) + ak.num(jets.neutral))
    # only puppiWeight > 0 candidates are stored: many jets have none, none has more
    assert np.count_nonzero(stored == 0) == 297
    assert np.all(stored <= ak.to_numpy(jets.n_constituents))
    ratio = _constituent_sum_pt(jets) / ak.to_numpy(jets.pt_raw)
    assert np.median(ratio[stored > 0]) == pytest.approx(0.91, abs=0.03)
    complete = _table(shared_data / PFNANO).jets
    assert np.all(ak.to_numpy(complete.constituents_complete))


def test_raw_kinematics_and_event_fields(shared_data: Path) -> None:
    path = shared_data / PFNANO
    jets = _table(path).jets
    a = uproot.open(path)["Events"].arrays(
        ["Jet_pt", "Jet_mass", "Jet_rawFactor", "fixedGridRhoFastjetAll", "PV_npvsGood"]
    )
    raw = ak.flatten(a.Jet_pt * (1 - a.Jet_rawFactor))
    np.testing.assert_allclose(ak.to_numpy(jets.pt_raw), ak.to_numpy(raw), rtol=1e-6)
    np.testing.assert_array_equal(
        ak.to_numpy(jets.pt_nano), ak.to_numpy(ak.flatten(a.Jet_pt))
    )
    rho, _ = ak.broadcast_arrays(a.fixedGridRhoFastjetAll, a.Jet_pt)
    np.testing.assert_array_equal(
        ak.to_numpy(jets.event_rho), ak.to_numpy(ak.flatten(rho))
    )
    npv, _ = ak.broadcast_arrays(a.PV_npvsGood, a.Jet_pt)
    np.testing.assert_array_equal(ak.to_numpy(jets.npv), ak.to_numpy(ak.flatten(npv)))
    local = ak.local_index(a.Jet_pt)
    np.testing.assert_array_equal(
        ak.to_numpy(jets.jet_index), ak.to_numpy(ak.flatten(local))
    )


def test_run3_names_and_regressions(shared_data: Path) -> None:
    path = shared_data / "nanoaod/coffea_nano_tt_v12.root"
    table = _table(path)
    a = uproot.open(path)["Events"].arrays(
        ["Rho_fixedGridRhoFastjetAll", "Jet_PNetRegPtRawCorr", "Jet_pt"]
    )
    rho, _ = ak.broadcast_arrays(a.Rho_fixedGridRhoFastjetAll, a.Jet_pt)
    np.testing.assert_array_equal(
        ak.to_numpy(table.jets.event_rho), ak.to_numpy(ak.flatten(rho))
    )
    np.testing.assert_array_equal(
        ak.to_numpy(table.jets.pnet_reg_corr),
        ak.to_numpy(ak.flatten(a.Jet_PNetRegPtRawCorr)),
    )
    assert "upart_reg_corr" in table.missing
    assert int(np.sum(ak.to_numpy(table.jets.matched))) <= 1336


def test_gen_match_rule(shared_data: Path) -> None:
    """matched = valid Jet_genJetIdx AND recomputed dR < 0.2; gen fields NaN otherwise."""
    path = shared_data / "nanoaod/skhep_nanoAOD_2015_CMS_Open_Data_ttbar.root"
    jets = _table(path).jets
    a = uproot.open(path)["Events"].arrays(
        ["Jet_eta", "Jet_phi", "Jet_genJetIdx", "GenJet_pt", "GenJet_eta", "GenJet_phi"]
    )
    idx = a.Jet_genJetIdx
    valid = (idx >= 0) & (idx < ak.num(a.GenJet_pt))
    safe = ak.where(valid, idx, 0)
    gen = ak.mask(a.GenJet_pt[ak.mask(safe, valid)], valid)
    geta = ak.fill_none(a.GenJet_eta[ak.mask(safe, valid)], np.nan)
    gphi = ak.fill_none(a.GenJet_phi[ak.mask(safe, valid)], np.nan)
    dr = delta_r(
        ak.to_numpy(ak.flatten(a.Jet_eta)),
        ak.to_numpy(ak.flatten(a.Jet_phi)),
        ak.to_numpy(ak.flatten(geta)),
        ak.to_numpy(ak.flatten(gphi)),
    )
    indexed = ak.to_numpy(ak.flatten(valid))
    expected = indexed & (dr < 0.2)
    matched = ak.to_numpy(jets.matched)
    np.testing.assert_array_equal(matched, expected)
    assert (
        np.count_nonzero(indexed & ~expected) > 0
    )  # the dR cut removes some index matches
    pt_gen = ak.to_numpy(jets.pt_gen)
    assert np.all(np.isnan(pt_gen[~matched]))
    np.testing.assert_array_equal(
        pt_gen[matched], ak.to_numpy(ak.flatten(ak.fill_none(gen, np.nan)))[matched]
    )


def test_greedy_match_without_index(shared_data: Path, tmp_path: Path) -> None:
    """A file without Jet_genJetIdx: closest GenJet, each used once, dR < R/2."""
    src = shared_data / NANO_DY
    branches = [
        "run",
        "luminosityBlock",
        "event",
        "Jet_pt",
        "Jet_eta",
        "Jet_phi",
        "Jet_mass",
        "Jet_rawFactor",
        "GenJet_pt",
        "GenJet_eta",
        "GenJet_phi",
        "GenJet_mass",
    ]
    a = uproot.open(src)["Events"].arrays(branches)
    out = tmp_path / "no_genjetidx.root"
    content = {
        "run": a.run,
        "luminosityBlock": a.luminosityBlock,
        "event": a.event,
        "Jet": ak.zip({k[4:]: a[k] for k in branches if k.startswith("Jet_")}),
        "GenJet": ak.zip({k[7:]: a[k] for k in branches if k.startswith("GenJet_")}),
    }
    with uproot.recreate(out) as f:
        f.mktree("Events", {k: v.type for k, v in content.items()})
        f["Events"].extend(content)
    greedy = read_jet_table(out).jets
    indexed = _table(src).jets
    matched = ak.to_numpy(greedy.matched)
    assert matched.sum() > 0.9 * ak.to_numpy(indexed.matched).sum()
    dr = delta_r(
        ak.to_numpy(greedy.eta[matched]),
        ak.to_numpy(greedy.phi[matched]),
        ak.to_numpy(greedy.eta_gen[matched]),
        ak.to_numpy(greedy.phi_gen[matched]),
    )
    assert np.all(dr < 0.2)
    # each GenJet used at most once per event
    key = np.stack(
        [ak.to_numpy(greedy.entry[matched]), ak.to_numpy(greedy.pt_gen[matched])]
    )
    assert np.unique(key, axis=1).shape[1] == key.shape[1]


def test_greedy_kernel_takes_closest_pair_first() -> None:
    # one event: two jets both near GenJet 0; jet 1 is closer, so jet 0 gets GenJet 1
    out = greedy_match(
        np.array([2]),
        np.array([0.0, 0.05]),
        np.array([0.0, 0.0]),
        np.array([2]),
        np.array([0.06, 0.1]),
        np.array([0.0, 0.0]),
        0.2,
    )
    np.testing.assert_array_equal(out, [1, 0])


def test_flavour_groups(shared_data: Path) -> None:
    jets = _table(shared_data / "mljec/shards/1.root").jets
    expected = flavour_group(
        ak.to_numpy(jets.hadron_flavour), ak.to_numpy(jets.parton_flavour)
    )
    np.testing.assert_array_equal(ak.to_numpy(jets.flavour_group), expected)
    table = _table(shared_data / JETCLASS)
    assert np.all(
        ak.to_numpy(table.jets.flavour_group) == FLAVOUR_GROUPS.index("unknown")
    )
    assert {
        "hadron_flavour",
        "parton_flavour",
        "sv",
        "area",
        "event_rho",
        "npv",
        "run",
    } <= set(table.missing)
    assert table.jet_radius == 0.8


def test_mljec_fields(shared_data: Path) -> None:
    path = shared_data / "mljec/shards/3.root"
    jets = _table(path).jets
    a = uproot.open(path)["Jets"].arrays(["pt", "pt_full_corr", "rho", "num_pv"])
    np.testing.assert_array_equal(ak.to_numpy(jets.pt_raw), ak.to_numpy(a.pt))
    np.testing.assert_array_equal(
        ak.to_numpy(jets.pt_full_corr), ak.to_numpy(a.pt_full_corr)
    )
    np.testing.assert_array_equal(ak.to_numpy(jets.event_rho), ak.to_numpy(a.rho))
    np.testing.assert_array_equal(ak.to_numpy(jets.npv), ak.to_numpy(a.num_pv))
    charge = ak.to_numpy(ak.flatten(jets.charged.charge))
    pdg = ak.to_numpy(ak.flatten(jets.charged.pdgId))
    assert set(np.unique(charge)) <= {-1, 1}
    assert np.all(charge[pdg == 211] == 1)
    assert np.all(charge[pdg == 11] == -1)


def test_jetclass_pdgid_from_flags(shared_data: Path) -> None:
    jets = _table(shared_data / JETCLASS).jets
    assert set(np.unique(ak.to_numpy(ak.flatten(jets.neutral.pdgId)))) <= {22, 130}
    charged = jets.charged
    pdg = ak.to_numpy(ak.flatten(charged.pdgId))
    charge = ak.to_numpy(ak.flatten(charged.charge))
    assert set(np.unique(np.abs(pdg))) <= {11, 13, 211}
    assert np.all(charge != 0)
    np.testing.assert_array_equal(
        np.sign(pdg[np.abs(pdg) == 211]), charge[np.abs(pdg) == 211]
    )


def test_reads_only_declared_branches(shared_data: Path, monkeypatch) -> None:
    path = shared_data / NANO_DY
    declared = layout_branches(path)
    assert declared == {
        "run",
        "luminosityBlock",
        "event",
        "fixedGridRhoFastjetAll",
        "PV_npvsGood",
        "genWeight",
        *(
            f"Jet_{f}"
            for f in (
                "pt",
                "eta",
                "phi",
                "mass",
                "rawFactor",
                "area",
                "chHEF",
                "neHEF",
                "chEmEF",
                "neEmEF",
                "muEF",
                "nConstituents",
                "nElectrons",
                "nMuons",
                "jetId",
                "hadronFlavour",
                "partonFlavour",
                "genJetIdx",
            )
        ),
        "GenJet_pt",
        "GenJet_eta",
        "GenJet_phi",
        "GenJet_mass",
    }
    requested: list[set[str]] = []
    original = uproot.TTree.arrays

    def spy(self, expressions=None, *args, **kwargs):
        requested.append(set(expressions))
        return original(self, expressions, *args, **kwargs)

    monkeypatch.setattr(uproot.TTree, "arrays", spy)
    read_jet_table(path)
    assert requested == [declared]
    requested.clear()
    read_jet_table(shared_data / PFNANO)
    assert requested == [layout_branches(shared_data / PFNANO)]
    assert {
        "JetPFCands_pFCandsIdx",
        "PFCands_charge",
        "JetSVs_sVIdx",
        "SV_dlenSig",
    } <= (requested[0])


def test_entry_range_and_zero_events(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / PFNANO
    full = _table(path).jets
    part = read_jet_table(path, entry_start=3, entry_stop=7).jets
    sel = (ak.to_numpy(full.entry) >= 3) & (ak.to_numpy(full.entry) < 7)
    np.testing.assert_array_equal(
        ak.to_numpy(part.pt_raw), ak.to_numpy(full.pt_raw[sel])
    )
    assert ak.to_list(part.charged) == ak.to_list(full.charged[sel])
    empty = read_jet_table(path, entry_start=0, entry_stop=0)
    assert len(empty) == 0
    # a NanoAOD file with zero events is valid
    out = tmp_path / "zero_events.root"
    with uproot.recreate(out) as f:
        f.mktree(
            "Events",
            {
                "run": "uint32",
                "luminosityBlock": "uint32",
                "event": "uint64",
                **{
                    f"Jet_{k}": "var * float32"
                    for k in ("pt", "eta", "phi", "mass", "rawFactor")
                },
            },
        )
    table = read_jet_table(out)
    assert table.layout == "nanoaod"
    assert len(table) == 0
    assert {"pt_raw", "eta", "run"} <= set(table.jets.fields)


def test_missing_luminosity_block_warns(shared_data: Path) -> None:
    path = shared_data / "nanoaod/coffea_missing_luminosityBlock.root"
    with pytest.warns(
        UserWarning, match=r"coffea_missing_luminosityBlock\.root.*luminosityBlock"
    ):
        jets = read_jet_table(path).jets
    assert len(jets) == 6
    assert np.all(ak.to_numpy(jets.luminosityBlock) == 0)


def test_puppi_weighting(shared_data: Path) -> None:
    path = shared_data / PFNANO
    chs = _table(path).jets
    puppi = read_jet_table(path, puppi_weighted=True).jets
    for ctype in ("charged", "neutral"):
        c = chs[ctype]
        weighted = ak.sum(c.pt * c.puppiWeight, axis=1)
        np.testing.assert_allclose(
            ak.to_numpy(ak.sum(puppi[ctype].pt, axis=1)),
            ak.to_numpy(weighted),
            rtol=1e-5,
        )
        assert ak.all(puppi[ctype].puppiWeight > 0)
        assert ak.all(puppi[ctype].pt[:, :-1] >= puppi[ctype].pt[:, 1:])
    with pytest.raises(ConfigError, match="puppi_weighted"):
        read_jet_table(shared_data / "mljec/shards/1.root", puppi_weighted=True)


def _assert_tables_equal(a, b) -> None:
    assert a.layout == b.layout
    assert a.missing == b.missing
    assert a.jets.fields == b.jets.fields
    for name in b.jets.fields:
        x, y = a.jets[name], b.jets[name]
        subs = x.fields or [None]
        assert subs == (y.fields or [None]), name
        for sub in subs:
            xs = ak.flatten(x[sub] if sub else x, axis=None)
            ys = ak.flatten(y[sub] if sub else y, axis=None)
            np.testing.assert_array_equal(
                ak.to_numpy(xs), ak.to_numpy(ys), err_msg=name
            )
        if x.ndim > 1:
            np.testing.assert_array_equal(
                ak.to_numpy(ak.num(x)), ak.to_numpy(ak.num(y))
            )


@pytest.mark.filterwarnings("ignore:Missing cross-reference:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning")
@pytest.mark.parametrize(
    ("name", "schema", "layout"),
    [
        (PFNANO, "PFNanoAODSchema", "pfnano"),
        (NANO_DY, "NanoAODSchema", "nanoaod"),
        ("nanoaod/coffea_nano_tt_v12.root", "NanoAODSchema", "nanoaod"),
        (PFNANO_OLD, "OldPFNanoAODSchema", "pfnano_old"),
        (JETCLASS, "BaseSchema", "jetclass2"),
        ("mljec/shards/2.root", "BaseSchema", "mljec"),
    ],
)
def test_events_equal_reader(
    shared_data: Path, name: str, schema: str, layout: str
) -> None:
    from coffea import nanoevents

    from jec_coffea.data import OldPFNanoAODSchema

    schemaclass = (
        OldPFNanoAODSchema
        if schema == "OldPFNanoAODSchema"
        else getattr(nanoevents, schema)
    )
    tree = {"jetclass2": "tree", "mljec": "Jets"}.get(layout, "Events")
    path = str(shared_data / name)
    events = nanoevents.NanoEventsFactory.from_root(
        {path: tree}, schemaclass=schemaclass, mode="virtual"
    ).events()
    from_events = jet_table_from_events(events, layout=layout, source=path)
    _assert_tables_equal(from_events, _table(Path(path)))
    assert from_events.source == path


def test_forced_layout_mismatch(shared_data: Path) -> None:
    path = shared_data / "mljec/shards/1.root"
    with pytest.raises(UnsupportedLayoutError, match=r"1\.root.*trees found: Jets"):
        read_jet_table(path, layout="nanoaod")
    with pytest.raises(ConfigError, match="unknown layout 'nano'"):
        read_jet_table(path, layout="nano")


def test_dtypes_are_uniform(shared_data: Path) -> None:
    """Every layout gives the same dtypes, whatever the file stores (uint8, int16, float)."""
    tt = _table(shared_data / "nanoaod/coffea_nano_tt_v12.root").jets
    pf = _table(shared_data / PFNANO).jets
    for jets in (tt, pf):
        assert jets.entry.type.content.primitive == "int64"
        assert jets.jet_index.type.content.primitive == "int32"
        assert jets.npv.type.content.primitive == "int32"
        assert jets.hadron_flavour.type.content.primitive == "int32"
        assert jets.pt_raw.type.content.primitive == "float64"
        assert jets.matched.type.content.primitive == "bool"
        assert jets.flavour_group.type.content.primitive == "int8"
    assert pf.sv.ntracks.type.content.content.primitive == "int32"
    assert pf.charged.pt.type.content.content.primitive == "float32"


@pytest.mark.filterwarnings("ignore:Missing cross-reference:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning")
def test_events_entry_range_from_metadata(shared_data: Path) -> None:
    """A processor chunk (entries 3-7, metadata as processor.Runner sets it) = reader range."""
    from coffea.nanoevents import NanoEventsFactory, PFNanoAODSchema

    path = str(shared_data / PFNANO)
    events = NanoEventsFactory.from_root(
        {path: "Events"},
        schemaclass=PFNanoAODSchema,
        mode="virtual",
        entry_start=3,
        entry_stop=7,
        metadata={"filename": path, "entrystart": 3},
    ).events()
    chunk = jet_table_from_events(events, layout="pfnano")
    assert chunk.source == path
    _assert_tables_equal(chunk, read_jet_table(path, entry_start=3, entry_stop=7))


@pytest.mark.filterwarnings("ignore:Missing cross-reference:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning")
@pytest.mark.parametrize(
    ("name", "schema"), [(PFNANO, "PFNanoAODSchema"), (NANO_DY, "NanoAODSchema")]
)
def test_events_read_only_declared_branches(
    shared_data: Path, name: str, schema: str
) -> None:
    """Virtual NanoEvents load exactly the layout's branches (plus their counters)."""
    from coffea import nanoevents

    path = str(shared_data / name)
    log: list = []
    events = nanoevents.NanoEventsFactory.from_root(
        {path: "Events"},
        schemaclass=getattr(nanoevents, schema),
        mode="virtual",
        access_log=log,
    ).events()
    table = jet_table_from_events(events)  # layout detected from the branch names
    assert table.layout == detect_layout(path)
    loaded = {access.branch for access in log}
    declared = layout_branches(path)
    assert {b for b in loaded if not b.startswith("n")} == declared
    assert {b for b in loaded if b.startswith("n")} == {
        "n" + b.split("_")[0]
        for b in declared
        if "_" in b and b.split("_")[0] not in ("PV",)
    }


@pytest.mark.filterwarnings("ignore:Missing cross-reference:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning")
@pytest.mark.parametrize(
    ("name", "schema"),
    [(PFNANO, "PFNanoAODSchema"), (NANO_DY, "NanoAODSchema"), (JETCLASS, "BaseSchema")],
)
def test_dask_events_equal_eager(shared_data: Path, name: str, schema: str) -> None:
    """dask-awkward NanoEvents: same table per partition, only declared columns read."""
    import dask_awkward as dak
    from coffea import nanoevents

    path = str(shared_data / name)
    tree = "tree" if name == JETCLASS else "Events"
    events = nanoevents.NanoEventsFactory.from_root(
        {path: tree}, schemaclass=getattr(nanoevents, schema), mode="dask"
    ).events()
    lazy = jet_table_from_events(events)
    eager = _table(shared_data / name)
    assert isinstance(lazy.jets, dak.Array)
    assert lazy.missing == eager.missing
    (columns,) = dak.necessary_columns(lazy.jets).values()
    counters = {c for c in columns if c.startswith("n") and c[1:2].isupper()}
    assert set(columns) - counters == layout_branches(path)
    computed = JetTable(
        jets=lazy.jets.compute(),
        layout=lazy.layout,
        source=lazy.source,
        jet_radius=lazy.jet_radius,
        missing=lazy.missing,
    )
    _assert_tables_equal(computed, eager)

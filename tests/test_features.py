"""Feature registry, defaults and counters, tensors; hand computations on an ml-jec shard."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
from pydantic import ValidationError

from jec_coffea.data.jet_table import (
    CONSTITUENT_FIELDS,
    CONSTITUENT_TYPES,
    JET_FIELDS,
    JetTable,
)
from jec_coffea.errors import ConfigError, ModelMismatchError
from jec_coffea.features import (
    CONSTITUENT_FEATURES,
    FEATURE_VERSION,
    JET_FEATURES,
    FeatureSpec,
    ReplacementCounts,
    constituent_features,
    jet_features,
    to_tensors,
    wrap_phi,
)

REQUIRED_JET = [
    "log_pt_raw", "eta", "abs_eta", "phi", "log_mass_raw", "area", "rho", "npv", "chHEF",
    "neHEF", "chEmEF", "neEmEF", "muEF", "n_constituents", "n_electrons", "n_muons",
    "n_charged", "n_neutral", "n_sv", "pt_d", "axis2",
]  # fmt: skip
REQUIRED_CONSTITUENT = {
    "charged": ["rel_pt", "log_pt", "deta", "dphi", "dr", "charge", "is_electron", "is_muon",
                "d0", "d0_sig", "dz", "dz_sig", "puppi_weight", "pv_assoc_quality",
                "lost_inner_hits", "trk_chi2"],
    "neutral": ["rel_pt", "log_pt", "deta", "dphi", "dr", "is_photon", "is_neutral_hadron",
                "puppi_weight"],
    "sv": ["rel_pt", "log_pt", "deta", "dphi", "dr", "mass", "ntracks", "dxy", "dxy_sig",
           "dlen", "dlen_sig", "pangle", "chi2_ndof"],
}  # fmt: skip


def _jets() -> ak.Array:
    """Three hand-made jets: a normal one, one without charged constituents, one broken."""
    return ak.Array(
        {
            "pt_raw": [100.0, 50.0, 40.0],
            "eta": [1.0, -2.0, 0.0],
            "phi": [3.0, -3.0, 0.0],
            "mass_raw": [10.0, 0.0, 5.0],
            "event_rho": [20.0, 21.0, np.inf],
            "area": [0.5, 0.45, 0.5],
            "charged": [
                [
                    {
                        "pt": 30.0,
                        "eta": 1.1,
                        "phi": -3.1,
                        "pdgId": 211,
                        "d0": 0.01,
                        "d0Err": 0.0,
                    },
                    {
                        "pt": 50.0,
                        "eta": 0.9,
                        "phi": 3.1,
                        "pdgId": -11,
                        "d0": 0.02,
                        "d0Err": 0.01,
                    },
                ],
                [],
                [
                    {
                        "pt": 1.0,
                        "eta": 0.1,
                        "phi": 0.2,
                        "pdgId": -13,
                        "d0": np.nan,
                        "d0Err": 1.0,
                    }
                ],
            ],
            "neutral": [
                [{"pt": 20.0, "eta": 1.0, "phi": 3.0, "pdgId": 22}],
                [{"pt": 5.0, "eta": -2.1, "phi": -2.9, "pdgId": 130}],
                [],
            ],
        }
    )


def test_registry_is_complete_and_consistent():
    assert set(REQUIRED_JET) <= set(JET_FEATURES)
    for ctype, names in REQUIRED_CONSTITUENT.items():
        assert set(names) <= set(CONSTITUENT_FEATURES[ctype]), ctype
    assert set(CONSTITUENT_FEATURES) == set(CONSTITUENT_TYPES)
    for d in JET_FEATURES.values():
        assert d.level == "jet"
        assert d.description
        assert math.isfinite(d.default)
        assert set(d.jet_fields) <= set(JET_FIELDS) | set(CONSTITUENT_TYPES), d.name
    for ctype, registry in CONSTITUENT_FEATURES.items():
        for d in registry.values():
            assert d.level == "constituent"
            assert d.description
            assert math.isfinite(d.default)
            assert set(d.constituent_fields) <= set(CONSTITUENT_FIELDS[ctype]), d.name
    assert isinstance(FEATURE_VERSION, str)
    assert FEATURE_VERSION


def test_wrap_phi_range():
    x = np.array(
        [np.pi, -np.pi, 3 * np.pi, -3 * np.pi, 0.1, -0.1, 6.0, -6.0, 2 * np.pi]
    )
    w = wrap_phi(x)
    assert np.all(w > -np.pi)
    assert np.all(w <= np.pi)
    np.testing.assert_allclose(w[:4], np.pi)
    np.testing.assert_allclose(
        w[4:], [0.1, -0.1, 6.0 - 2 * np.pi, 2 * np.pi - 6.0, 0.0], atol=1e-12
    )


def test_constituent_kinematics_by_hand():
    jets = _jets()
    f = constituent_features(
        jets, "charged", ["rel_pt", "deta", "dphi", "dr", "log_pt"]
    )
    assert f["rel_pt"].tolist() == [[0.3, 0.5], [], [0.025]]
    # deta is signed by eta_jet: jet 1 at eta=+1, jet 3 at eta=0 counts as positive
    np.testing.assert_allclose(ak.flatten(f["deta"]), [0.1, -0.1, 0.1], atol=1e-12)
    # phi -3.1 against the jet at +3.0 wraps to 2 pi - 6.1
    np.testing.assert_allclose(
        ak.flatten(f["dphi"]), [2 * np.pi - 6.1, 0.1, 0.2], atol=1e-12
    )
    np.testing.assert_allclose(
        ak.flatten(f["dr"]),
        np.hypot([0.1, -0.1, 0.1], [2 * np.pi - 6.1, 0.1, 0.2]),
        atol=1e-12,
    )
    neutral = constituent_features(jets, "neutral", ["deta"])
    # jet 2 at eta=-2: a neutral at -2.1 is further forward, so deta is +0.1
    np.testing.assert_allclose(neutral["deta"][1], [0.1], atol=1e-12)


def _pt_d_axis2_by_hand(pt, eta, phi, jet_eta, jet_phi):
    pt, eta, phi = map(np.asarray, (pt, eta, phi))
    deta = eta - jet_eta
    dphi = np.array([math.remainder(p - jet_phi, 2 * math.pi) for p in phi])
    w = pt**2
    cov = np.cov(np.vstack([deta, dphi]), aweights=w, bias=True)
    axis2 = math.sqrt(max(np.linalg.eigvalsh(cov)[0], 0.0)) if len(pt) > 1 else 0.0
    return math.sqrt(np.sum(pt**2)) / np.sum(pt), axis2


def test_jet_features_by_hand():
    jets = _jets()
    f = jet_features(
        jets, ["log_pt_raw", "abs_eta", "n_charged", "n_neutral", "pt_d", "axis2"]
    )
    np.testing.assert_allclose(f["log_pt_raw"], np.log([100.0, 50.0, 40.0]))
    np.testing.assert_array_equal(f["abs_eta"], [1.0, 2.0, 0.0])
    np.testing.assert_array_equal(f["n_charged"], [2, 0, 1])
    np.testing.assert_array_equal(f["n_neutral"], [1, 1, 0])
    pt_d, axis2 = _pt_d_axis2_by_hand(
        [30, 50, 20], [1.1, 0.9, 1.0], [-3.1, 3.1, 3.0], 1.0, 3.0
    )
    assert f["pt_d"][0] == pytest.approx(pt_d, rel=1e-12)
    assert f["axis2"][0] == pytest.approx(axis2, rel=1e-9)
    assert axis2 > 0
    assert f["pt_d"][1] == 1.0
    assert f["axis2"][1] == 0.0


def test_nan_inf_missing_get_defaults_and_are_counted():
    jets = _jets()
    counts = ReplacementCounts()
    f = jet_features(jets, ["rho", "npv", "log_mass_raw", "area"], counts=counts)
    assert f["rho"].tolist() == [20.0, 21.0, JET_FEATURES["rho"].default]
    assert counts.nonfinite["jet.rho"] == 1
    assert counts.missing["jet.rho"] == 0
    assert f["npv"].tolist() == [0.0, 0.0, 0.0]  # absent from the table
    assert counts.missing["jet.npv"] == 3
    assert counts.total["jet.npv"] == 3
    assert f["log_mass_raw"][1] == 0.0
    assert counts.nonfinite["jet.log_mass_raw"] == 1
    assert counts.replaced("jet.area") == 0

    c = constituent_features(
        jets, "charged", ["d0", "d0_sig", "trk_chi2", "puppi_weight"], counts=counts
    )
    assert c["d0"].tolist() == [[0.01, 0.02], [], [0.0]]  # NaN d0 -> 0
    assert c["d0_sig"].tolist() == [[0.0, 2.0], [], [0.0]]  # d0Err = 0 and NaN d0
    assert counts.nonfinite["charged.d0"] == 1
    assert counts.nonfinite["charged.d0_sig"] == 2
    assert counts.missing["charged.trk_chi2"] == 3  # field absent: every constituent
    assert c["puppi_weight"].tolist() == [[1.0, 1.0], [], [1.0]]  # documented default 1
    # None values (option type) count as missing
    optional = ak.Array({"area": [0.5, None, 0.4]})
    counts2 = ReplacementCounts()
    assert jet_features(optional, ["area"], counts=counts2)["area"].tolist() == [
        0.5,
        0.0,
        0.4,
    ]
    assert counts2.missing["jet.area"] == 1
    assert counts2.nonfinite["jet.area"] == 0
    total = counts + counts2
    assert total.missing["jet.area"] == 1
    assert total.missing["jet.npv"] == 3
    assert total.as_dict()["jet.npv"] == {"missing": 3, "nonfinite": 0, "total": 3}
    assert "jet.npv: 3 missing, 0 non-finite of 3 set to the default" in total.summary()
    assert not any(line.startswith("jet.area:") for line in counts.summary())


def test_alternative_spellings():
    jets = ak.Array(
        {
            "pt_raw": [10.0],
            "eta": [0.0],
            "phi": [0.0],
            "charged": [[{"pt": 1.0, "pdgId": -211, "d0Sig": 3.0, "isElectron": False},
                         {"pt": 2.0, "pdgId": 11, "d0Sig": 1.0, "isElectron": True}]],
        }
    )  # fmt: skip
    f = constituent_features(jets, "charged", ["charge", "d0_sig"])
    assert f["charge"].tolist() == [[-1.0, -1.0]]  # pi- and e- (pdgId +11)
    assert f["d0_sig"].tolist() == [[3.0, 1.0]]
    no_pdg = ak.Array(
        {"pt_raw": [10.0], "charged": [[{"pt": 1.0, "isElectron": True}]]}
    )
    assert constituent_features(no_pdg, "charged", ["is_electron"])[
        "is_electron"
    ].tolist() == [[1.0]]


def test_to_tensors_sorts_truncates_pads_and_masks():
    jets = _jets()
    spec = FeatureSpec(
        jet=["log_pt_raw", "eta"],
        constituents={
            "charged": ["rel_pt", "is_electron"],
            "neutral": ["rel_pt"],
            "sv": ["mass"],
        },
        max_constituents={"charged": 3, "neutral": 1, "sv": 4},
    )
    counts = ReplacementCounts()
    t = to_tensors(JetTable(jets, layout="test", source="hand"), spec, counts=counts)
    assert set(t) == {"jet", "charged", "charged_mask", "neutral", "neutral_mask"}
    assert spec.missing_types(jets) == ["sv"]
    assert t["jet"].shape == (3, 2)
    assert t["jet"].dtype == np.float32
    assert t["charged"].shape == (3, 3, 2)
    assert t["charged"].dtype == np.float32
    # pT-ordered: the 50 GeV electron comes first
    np.testing.assert_allclose(t["charged"][0], [[0.5, 1.0], [0.3, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(t["charged_mask"], [[1, 1, 0], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(t["neutral_mask"], [[1], [1], [0]])
    assert np.all(t["charged"][t["charged_mask"] == 0] == 0)
    for v in t.values():
        assert np.all(np.isfinite(v))
    # truncation keeps the leading constituent only, and counts refer to the kept ones
    spec1 = spec.model_copy(
        update={"max_constituents": {"charged": 1, "neutral": 1, "sv": 4}}
    )
    t1 = to_tensors(jets, spec1)
    np.testing.assert_allclose(t1["charged"][:, 0, 0], [0.5, 0.0, 0.025])
    assert counts.total["charged.rel_pt"] == 3
    empty = to_tensors(jets[:0], spec)
    assert empty["charged"].shape == (0, 3, 2)
    assert empty["jet"].shape == (0, 2)
    assert spec.input_names() == [
        "jet",
        "charged",
        "charged_mask",
        "neutral",
        "neutral_mask",
        "sv",
        "sv_mask",
    ]
    need = spec.required_fields()
    assert need["jet"] == ["eta", "pt_raw"]
    assert "pdgId" in need["charged"]


def test_feature_spec_validation():
    with pytest.raises(ValidationError, match="did you mean 'log_pt_raw'"):
        FeatureSpec(jet=["log_ptraw"])
    with pytest.raises(ValidationError, match="max_constituents has no entry"):
        FeatureSpec(constituents={"charged": ["rel_pt"]})
    with pytest.raises(ValidationError, match="must be >= 1"):
        FeatureSpec(
            constituents={"charged": ["rel_pt"]}, max_constituents={"charged": 0}
        )
    with pytest.raises(ValidationError, match="listed twice"):
        FeatureSpec(jet=["eta", "eta"])
    with pytest.raises(ValidationError, match="Extra inputs"):
        FeatureSpec(jets=["eta"])
    with pytest.raises(ValidationError, match="unknown sv feature 'charge'"):
        FeatureSpec(constituents={"sv": ["charge"]}, max_constituents={"sv": 2})
    with pytest.raises(ConfigError, match="unknown jet-level feature 'rhoo'"):
        jet_features(_jets(), ["rhoo"])
    with pytest.raises(ConfigError, match="unknown constituent type 'photons'"):
        constituent_features(_jets(), "photons", ["rel_pt"])
    old = FeatureSpec(jet=["eta"], feature_version="0")
    with pytest.raises(ModelMismatchError, match="retrain"):
        to_tensors(_jets(), old)
    meta = FeatureSpec(jet=["eta"]).metadata()
    assert meta["feature_version"] == FEATURE_VERSION
    assert meta["jet"][0]["name"] == "eta"


# ------------------------------------------------------------------------- real files


@pytest.mark.shared_data
def test_mljec_shard_features_match_hand_computation(shared_data):
    uproot = pytest.importorskip("uproot")
    from jec_coffea.data.reader import read_jet_table

    path = shared_data / "mljec" / "shards" / "1.root"
    table = read_jet_table(str(path))
    raw = uproot.open(path)["Jets"].arrays(library="np")
    counts = ReplacementCounts()
    jf = jet_features(
        table,
        [
            "log_pt_raw",
            "rho",
            "npv",
            "area",
            "n_charged",
            "n_neutral",
            "n_sv",
            "pt_d",
            "axis2",
        ],
        counts=counts,
    )
    names = ["rel_pt", "deta", "dphi", "dr", "log_pt"]
    ch = constituent_features(table, "charged", [*names, "d0", "d0_sig"], counts=counts)
    ne = constituent_features(table, "neutral", names, counts=counts)
    sv = constituent_features(
        table, "sv", ["rel_pt", "deta", "mass", "dlen"], counts=counts
    )
    for i in range(4):
        pt, eta, phi = float(raw["pt"][i]), float(raw["eta"][i]), float(raw["phi"][i])
        assert jf["log_pt_raw"][i] == pytest.approx(math.log(pt), rel=1e-6)
        assert jf["rho"][i] == pytest.approx(raw["rho"][i], rel=1e-6)
        assert jf["npv"][i] == raw["num_pv"][i]
        assert jf["area"][i] == pytest.approx(raw["area"][i], rel=1e-6)
        assert jf["n_charged"][i] == raw["ch_size"][i]
        assert jf["n_sv"][i] == raw["sv_size"][i]
        for prefix, feats in (("ch", ch), ("ne", ne)):
            order = np.argsort(-raw[f"{prefix}_pt"][i], kind="stable")
            for k, j in enumerate(order):
                cpt = float(raw[f"{prefix}_pt"][i][j])
                ceta = float(raw[f"{prefix}_eta"][i][j])
                cphi = float(raw[f"{prefix}_phi"][i][j])
                sign = 1.0 if eta >= 0 else -1.0
                dphi = cphi - phi
                while dphi > math.pi:
                    dphi -= 2 * math.pi
                while dphi <= -math.pi:
                    dphi += 2 * math.pi
                assert feats["rel_pt"][i][k] == pytest.approx(cpt / pt, rel=1e-6)
                assert feats["log_pt"][i][k] == pytest.approx(math.log(cpt), rel=1e-6)
                assert feats["deta"][i][k] == pytest.approx(
                    (ceta - eta) * sign, abs=1e-6
                )
                assert feats["dphi"][i][k] == pytest.approx(dphi, abs=1e-6)
                assert feats["dr"][i][k] == pytest.approx(
                    math.hypot(ceta - eta, dphi), abs=1e-6
                )
                if prefix == "ch":
                    assert feats["d0"][i][k] == pytest.approx(
                        raw["ch_dxy"][i][j], rel=1e-6
                    )
                    assert feats["d0_sig"][i][k] == pytest.approx(
                        raw["ch_dxy_significance"][i][j], rel=1e-6
                    )
        pf_pt = np.concatenate([raw["ch_pt"][i], raw["ne_pt"][i]]).astype(float)
        pf_eta = np.concatenate([raw["ch_eta"][i], raw["ne_eta"][i]]).astype(float)
        pf_phi = np.concatenate([raw["ch_phi"][i], raw["ne_phi"][i]]).astype(float)
        pt_d, axis2 = _pt_d_axis2_by_hand(pf_pt, pf_eta, pf_phi, eta, phi)
        assert jf["pt_d"][i] == pytest.approx(pt_d, rel=1e-5)
        assert jf["axis2"][i] == pytest.approx(axis2, rel=1e-4, abs=1e-7)
        sv_order = np.argsort(-raw["sv_pt"][i], kind="stable")
        np.testing.assert_allclose(
            sv["mass"][i], raw["sv_mass"][i][sv_order], rtol=1e-6
        )
        np.testing.assert_allclose(
            sv["dlen"][i], raw["sv_distance"][i][sv_order], rtol=1e-6
        )
    # ml-jec stores no SV direction: deta is defaulted for every SV and counted as missing
    n_sv = int(raw["sv_size"].sum())
    assert counts.missing["sv.deta"] == n_sv
    assert ak.all(ak.flatten(sv["deta"]) == 0)
    assert counts.replaced("sv.rel_pt") == 0
    assert counts.replaced("jet.log_pt_raw") == 0


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "relpath",
    [
        "pfnano/coffea_pfnano.root",
        "pfnano/cmsjet_nano106X_on_mini106X_2017_mc_NANO.root",
        "jetclass/sophon_JetClassII_example.root",
        "nanoaod/coffea_nano_dy.root",
    ],
)
def test_tensors_of_real_files_are_finite(shared_data, relpath):
    from jec_coffea.data.reader import read_jet_table

    table = read_jet_table(str(shared_data / relpath))
    spec = FeatureSpec(
        jet=REQUIRED_JET,
        constituents=REQUIRED_CONSTITUENT,
        max_constituents={"charged": 32, "neutral": 16, "sv": 4},
    )
    counts = ReplacementCounts()
    t = to_tensors(table, spec, counts=counts)
    n = len(table)
    assert t["jet"].shape == (n, len(REQUIRED_JET))
    for ctype in CONSTITUENT_TYPES:
        if ctype in table.jets.fields:
            assert t[ctype].shape == (
                n,
                spec.max_constituents[ctype],
                len(REQUIRED_CONSTITUENT[ctype]),
            )
            num = np.minimum(
                ak.to_numpy(ak.num(table.jets[ctype])), spec.max_constituents[ctype]
            )
            np.testing.assert_array_equal(t[f"{ctype}_mask"].sum(axis=1), num)
        else:
            assert ctype not in t
            assert ctype in spec.missing_types(table)
    for v in t.values():
        assert np.all(np.isfinite(v))
    pf_only = FeatureSpec(
        constituents={"charged": ["rel_pt"]}, max_constituents={"charged": 4}
    )
    reason = pf_only.not_applicable(table)
    if relpath.startswith("pfnano/cmsjet"):
        assert (
            "constituents_complete" in reason
        )  # old layout: only puppiWeight > 0 stored
    elif relpath.startswith("nanoaod"):
        assert "absent" in reason  # no constituents at all
    else:
        assert reason is None
    assert FeatureSpec(jet=["log_pt_raw"]).not_applicable(table) is None
    assert counts.total["jet.log_pt_raw"] == n
    assert counts.replaced("jet.log_pt_raw") == 0


def test_padding_slots_equal_awkward_pad_none():
    from jec_coffea.features import _slots

    num = np.random.default_rng(3).poisson(3, 500)
    num[:5] = [0, 1, 7, 12, 0]
    for m in (1, 4, 16):
        kept = np.minimum(num, m)  # after truncation to M
        rows = ak.unflatten(np.arange(kept.sum()), kept)
        expected = ak.fill_none(ak.pad_none(rows, m, axis=1, clip=True), -1)
        np.testing.assert_array_equal(_slots(kept, m), ak.to_numpy(expected))


FINGERPRINTS = {"1": "afc9313db0d09a95"}
"""registry_fingerprint() per FEATURE_VERSION: update both together when a definition changes."""


def test_changed_definitions_need_a_version_bump():
    from jec_coffea.features import registry_fingerprint

    assert FEATURE_VERSION in FINGERPRINTS, (
        "new FEATURE_VERSION: pin its fingerprint here"
    )
    assert registry_fingerprint() == FINGERPRINTS[FEATURE_VERSION], (
        "a feature definition changed: bump FEATURE_VERSION and pin the new fingerprint"
    )

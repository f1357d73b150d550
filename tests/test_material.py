"""The tracker material (jec_coffea.simulation.material): nuclear interactions of hadrons,
conversions of photons."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jec_coffea.simulation import default_detector, detector_hash
from jec_coffea.simulation.config import (
    DetectorConfig,
    NuclearInteractions,
    PhotonConversions,
)
from jec_coffea.simulation.material import (
    bethe_heitler_fraction,
    conversion_probability,
    interaction_probability,
    nuclear_interactions,
    photon_conversions,
)

NI = NuclearInteractions(
    material_eta=[0.0, 0.8, 1.3, 1.6, 2.0, 2.5],
    material_lambda=[0.12, 0.18, 0.32, 0.55, 0.40, 0.30],
    tracker_radius_m=1.1,
    tracker_half_length_m=2.8,
    em_fraction=0.3,
    multiplicity_log_slope=1.0,
    pt_rel_mean_gev=0.35,
    invisible_gev=0.2,
    track_loss_fraction=0.3,
)
CONV = PhotonConversions(tracker_radius_m=1.1, tracker_half_length_m=2.8)
X0 = ([0.0, 0.8, 1.3, 1.6, 2.0, 2.5], [0.4, 0.6, 1.1, 1.8, 1.3, 1.0])


def _pions(n: int, energy: float, eta: float, rng) -> tuple:
    phi = rng.uniform(-np.pi, np.pi, n)
    p = np.sqrt(energy**2 - 0.13957**2)
    pt = p / np.cosh(eta)
    pz = np.full(n, pt * np.sinh(eta))
    momentum = (pt * np.cos(phi), pt * np.sin(phi), pz, np.full(n, energy))
    vertex = (np.zeros(n), np.zeros(n), rng.normal(0.0, 4.0, n))
    return momentum, vertex


def test_interaction_probability_follows_the_material():
    aeta = np.array([0.0, 1.6, 1.6, 1.6, 2.4])
    r0 = np.array([0.0, 0.0, 0.55, 2.0, 0.0])
    prob, r_exit = interaction_probability(NI, aeta, r0)
    assert r_exit[0] == pytest.approx(1.1)
    # at |eta| 2.4 the particle leaves through the tracker end before the barrel radius
    assert r_exit[4] == pytest.approx(2.8 / np.sinh(2.4))
    assert prob[0] == pytest.approx(1 - np.exp(-0.12))
    assert prob[1] == pytest.approx(1 - np.exp(-0.55))
    assert prob[2] == pytest.approx(
        1 - np.exp(-0.55 * 0.5)
    )  # half of the material left
    assert prob[3] == 0.0  # produced outside the tracker


def test_secondaries_carry_the_hadron_energy_from_the_interaction_point():
    rng = np.random.default_rng(3)
    n, energy, eta = 40_000, 10.0, 1.6
    momentum, vertex = _pions(n, energy, eta, rng)
    hadron = np.ones(n, bool)
    hadron[::2] = False  # e.g. photons: never interact
    sec = nuclear_interactions(NI, np.random.default_rng(5), momentum, vertex, hadron)

    assert np.all(sec.interacted % 2 == 1)
    expected = (1 - np.exp(-0.55)) * n / 2
    assert abs(len(sec.interacted) - expected) < 4 * np.sqrt(expected)
    # energy: the nucleus keeps a little (mean invisible_gev), the secondaries the rest
    e_sum = np.bincount(sec.parent, sec.e, minlength=n)[sec.interacted]
    assert np.all(e_sum <= energy + 1e-9)
    assert np.all(e_sum >= 0.5 * energy - 0.2)
    assert energy - e_sum.mean() == pytest.approx(0.2 + 0.05, abs=0.06)
    # about em_fraction of the energy goes to pi0 photons
    em = sec.e[sec.pdg == 22].sum() / sec.e.sum()
    assert em == pytest.approx(0.3, abs=0.02)
    # secondaries start on the parent's line, inside the tracker, at the interaction radius
    r = np.hypot(sec.vx, sec.vy) / 100.0
    np.testing.assert_allclose(r, sec.r_m, rtol=1e-9)
    assert r.min() >= 0
    assert r.max() <= 1.1 + 1e-9
    px, py, pz, _ = momentum
    par = sec.parent
    cos_pos = (
        sec.vx * px[par] + sec.vy * py[par] + (sec.vz - vertex[2][par]) * pz[par]
    ) / (
        np.sqrt(sec.vx**2 + sec.vy**2 + (sec.vz - vertex[2][par]) ** 2)
        * np.sqrt(px[par] ** 2 + py[par] ** 2 + pz[par] ** 2)
    )
    assert np.all(cos_pos > 1 - 1e-9)
    # the spray keeps the parent's direction: its sum leaves it by ~ pt_rel sqrt(n) / E = 0.07
    tot = np.stack(
        [np.bincount(par, w, minlength=n) for w in (sec.px, sec.py, sec.pz)], axis=1
    )[sec.interacted]
    d = np.stack([a[sec.interacted] for a in momentum[:3]], axis=1)
    cos_tot = (tot * d).sum(1) / np.linalg.norm(tot, axis=1) / np.linalg.norm(d, axis=1)
    assert np.median(np.arccos(np.minimum(cos_tot, 1.0))) < 0.1
    # early interactions (inner track_loss_fraction of the path) are flagged
    assert sec.early.mean() == pytest.approx(0.3, abs=0.02)


def test_conversion_probability_follows_the_radiation_lengths():
    aeta = np.array([0.0, 1.6, 1.6, 3.0])
    r0 = np.array([0.0, 0.0, 0.55, 0.0])
    prob, _ = conversion_probability(X0, CONV, aeta, r0)
    assert prob[0] == pytest.approx(1 - np.exp(-7 / 9 * 0.4))
    assert prob[1] == pytest.approx(
        1 - np.exp(-7 / 9 * 1.8)
    )  # ~75% where it is thickest
    assert prob[2] == pytest.approx(
        1 - np.exp(-7 / 9 * 0.9)
    )  # half of the material left
    assert prob[3] == 0.0  # beyond the tracker


def test_bethe_heitler_sharing():
    x = bethe_heitler_fraction(np.random.default_rng(4), 400_000)
    assert x.min() >= 0.0
    assert x.max() <= 1.0
    # density (1 - 4/3 x (1 - x)) / (7/9): 9/7 at the ends, 6/7 in the middle, symmetric
    dens, _ = np.histogram(x, bins=10, range=(0, 1), density=True)
    centre = np.linspace(0.05, 0.95, 10)
    expected = (1 - 4 / 3 * (centre * (1 - centre) - 0.1**2 / 12)) / (
        7 / 9
    )  # bin means
    np.testing.assert_allclose(dens, expected, rtol=0.03)
    assert abs(x.mean() - 0.5) < 0.002


def test_conversion_legs_carry_the_photon_from_the_conversion_point():
    rng = np.random.default_rng(6)
    n, eta = 50_000, 1.6
    (px, py, pz, _), vertex = _pions(n, 8.0, eta, rng)
    e = np.sqrt(px**2 + py**2 + pz**2)  # photons: massless
    photon = np.ones(n, bool)
    photon[::2] = False  # e.g. hadrons: never convert
    legs = photon_conversions(
        CONV, X0, np.random.default_rng(2), (px, py, pz, e), vertex, photon
    )
    assert not np.isin(legs.interacted, np.flatnonzero(~photon)).any()
    assert len(legs.interacted) / photon.sum() == pytest.approx(
        1 - np.exp(-7 / 9 * 1.8), abs=0.01
    )
    assert len(legs.pdg) == 2 * len(legs.interacted)
    assert sorted(np.unique(legs.pdg)) == [-11, 11]
    # energy and momentum of each photon shared by its two legs, same direction
    for got, want in ((legs.e, e), (legs.px, px), (legs.pz, pz)):
        np.testing.assert_allclose(
            np.bincount(legs.parent, got, minlength=n)[legs.interacted],
            want[legs.interacted],
            rtol=1e-12,
        )
    leg_eta = np.arcsinh(legs.pz / np.hypot(legs.px, legs.py))
    np.testing.assert_allclose(leg_eta, eta, atol=1e-9)
    # the conversion point lies on the photon's line, spread over the tracker
    exit_r = min(1.1, 2.8 / np.sinh(eta))
    assert legs.r_m.min() >= 0
    assert legs.r_m.max() <= exit_r + 1e-9
    assert np.median(legs.r_m) == pytest.approx(exit_r / 2, rel=0.03)
    dz = legs.vz - vertex[2][legs.parent]
    np.testing.assert_allclose(dz, 100 * legs.r_m * np.sinh(eta), rtol=1e-9)


def test_conversions_in_the_detector_lose_soft_legs_and_bend_the_others(detector_v1):
    """One 2 GeV photon per event at eta 0: v1 (soft converted photons lost, pT < 1.5 GeV)
    sees all of it where it points; with pair conversions, 27% convert, the softer legs
    curl up and the others reach the ECAL displaced in phi."""
    from jec_coffea.simulation.detector import simulate_detector
    from jec_coffea.simulation.generator import Particles

    raw = detector_v1.model_dump()
    base = DetectorConfig.model_validate(raw)
    conv = DetectorConfig.model_validate(
        {**raw, "photon_conversions": CONV.model_dump()}
    )
    n = 3_000
    rng = np.random.default_rng(8)
    phi = rng.uniform(-np.pi, np.pi, n)
    zeros = np.zeros(n)
    hard = Particles(
        px=2.0 * np.cos(phi), py=2.0 * np.sin(phi), pz=zeros, e=np.full(n, 2.0),
        pdg=np.full(n, 22, np.int64), vx=zeros, vy=zeros, vz=zeros,
        offsets=np.arange(n + 1, dtype=np.int64),
    )  # fmt: skip
    seen, displaced = {}, {}
    for name, det in (("base", base), ("conv", conv)):
        out = simulate_detector(
            hard, None, None, None, np.zeros(n, np.int64), det,
            np.random.default_rng(1), sigma_z_cm=4.0,
        )  # fmt: skip
        c, ev = out.candidates.data, out.candidates.event
        assert not (c["charge"] != 0).any()  # legs are never tracks
        e = c["pt"] * np.cosh(c["eta"])
        dphi = np.abs((c["phi"] - phi[ev] + np.pi) % (2 * np.pi) - np.pi)
        seen[name] = e.sum() / (2.0 * n)
        displaced[name] = e[dphi > 0.05].sum() / (2.0 * n)
    assert seen["base"] == pytest.approx(1.0, abs=0.02)
    assert displaced["base"] < 0.002
    assert 0.9 < seen["conv"] < seen["base"] - 0.01
    # what converts is either lost or displaced: together the conversion probability
    lost_or_moved = displaced["conv"] + (1.0 - seen["conv"])
    assert lost_or_moved == pytest.approx(1 - np.exp(-7 / 9 * 0.4), abs=0.025)


def test_same_seed_same_secondaries():
    rng = np.random.default_rng(1)
    momentum, vertex = _pions(2_000, 5.0, 0.3, rng)
    hadron = np.ones(2_000, bool)
    a = nuclear_interactions(NI, np.random.default_rng(9), momentum, vertex, hadron)
    b = nuclear_interactions(NI, np.random.default_rng(9), momentum, vertex, hadron)
    np.testing.assert_array_equal(a.parent, b.parent)
    np.testing.assert_array_equal(a.pz, b.pz)


def test_detector_without_the_section_keeps_its_hash(detector_v1):
    det = detector_v1
    assert det.nuclear_interactions is None
    raw = det.model_dump()
    with_ni = DetectorConfig.model_validate(
        {**raw, "nuclear_interactions": NI.model_dump()}
    )
    assert detector_hash(with_ni) != detector_hash(det)
    same = DetectorConfig.model_validate({**raw, "nuclear_interactions": None})
    assert detector_hash(same) == detector_hash(det)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"material_lambda": [0.1, 0.2]}, "same length"),
        ({"material_eta": [0.0, 1.0, 1.0, 1.6, 2.0, 2.5]}, "must increase"),
        ({"track_loss_fraction": 1.5}, "less than or equal to 1"),
    ],
)
def test_bad_material_table_names_the_key(tmp_path, change, message, detector_v1):
    import yaml

    from jec_coffea.errors import ConfigError
    from jec_coffea.simulation import load_detector

    raw = detector_v1.model_dump()
    raw["nuclear_interactions"] = {**NI.model_dump(), **change}
    path = tmp_path / "det.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="nuclear_interactions") as err:
        load_detector(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_material_sections_must_share_the_tracker_volume(tmp_path, detector_v1):
    import yaml

    from jec_coffea.errors import ConfigError
    from jec_coffea.simulation import load_detector

    raw = detector_v1.model_dump()
    raw["nuclear_interactions"] = NI.model_dump()
    raw["photon_conversions"] = {**CONV.model_dump(), "tracker_radius_m": 1.2}
    path = tmp_path / "det.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        ConfigError, match=r"photon_conversions\.tracker_radius_m"
    ) as err:
        load_detector(path)
    assert "nuclear_interactions.tracker_radius_m" in str(err.value)
    assert str(path) in str(err.value)


def test_v1_keeps_its_hash(detector_v1):
    """Samples and models made before v2 carry this hash; the example reproduces them."""
    assert detector_v1.name == "cms-like-run2-v1"
    assert detector_hash(detector_v1) == (
        "913f165b0828b60bd6fff075441d31fcf9eaa9482d417ea85c4760126773a0f3"
    )


def test_v2_keeps_its_hash(detector_v2):
    """Samples and models made before v3 carry this hash; the example reproduces them."""
    assert detector_v2.name == "cms-like-run2-v2"
    assert detector_hash(detector_v2) == (
        "f5ae130f738cac5dd13b1106b13fbfd300610c25b54246c8e9e38cc586fb4a33"
    )


def test_v2_is_v1_plus_material_insitu_hadrons_endcap_noise_photon_blocks(
    detector_v1, detector_v2
):
    v1, ni = detector_v1.model_dump(), detector_v2.model_dump()
    assert (v1["name"], ni["name"]) == ("cms-like-run2-v1", "cms-like-run2-v2")
    assert ni["nuclear_interactions"] == NI.model_dump()
    assert ni["photon_conversions"] == CONV.model_dump()
    # in-situ hadron resolution instead of the test beam's 84.7%/sqrt(E) (+) 7.4%
    assert (v1["hcal"].pop("stochastic"), v1["hcal"].pop("constant")) == (0.847, 0.074)
    assert (ni["hcal"].pop("stochastic"), ni["hcal"].pop("constant")) == (1.5, 0.05)
    # the track-finding plateau no longer includes the interactions
    assert ni["tracking"].pop("efficiency_barrel") == 0.96
    assert ni["tracking"].pop("efficiency_endcap") == 0.95
    for key in ("efficiency_barrel", "efficiency_endcap"):
        v1["tracking"].pop(key)
    # the ECAL endcap is noisier than the barrel (150 MeV per crystal, ~2 per cell)
    ee = ni["ecal"]["regions"][1]
    assert (ee.pop("noise_gev"), ee.pop("threshold_gev")) == (0.2, 0.6)
    for region in v1["ecal"]["regions"] + ni["ecal"]["regions"]:
        for key in ("noise_gev", "threshold_gev"):
            assert region.pop(key, None) is None
    # photons join the PF blocks of charged hadrons
    assert ni["particle_flow"].pop("photons_in_hadron_blocks") is True
    assert v1["particle_flow"].pop("photons_in_hadron_blocks") is None
    for raw in (v1, ni):
        raw.pop("name")
        raw.pop("nuclear_interactions")
        raw.pop("photon_conversions")
    assert ni == v1


def test_simulation_with_nuclear_interactions_runs_and_keeps_the_contract(detector_v1):
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    import awkward as ak

    from jec_coffea.simulation import SimulationConfig, parse_pileup
    from jec_coffea.simulation.generator import MinBiasLibrary
    from jec_coffea.simulation.pipeline import EventSimulator

    pileup = parse_pileup("fixed:5", library_size=100)
    runs = {}
    for name, det in (("v1", detector_v1), ("ni", default_detector())):
        cfg = SimulationConfig(detector=det, pileup=pileup)
        lib = MinBiasLibrary.load_or_generate(cfg.generator, cfg.pileup, 11)
        runs[name], _ = EventSimulator(cfg, 11, 0, lib).run(12)
    v1, ni = runs["v1"], runs["ni"]
    # same generated events, a different detector response
    assert ak.to_list(v1["GenJet"].pt) == ak.to_list(ni["GenJet"].pt)
    assert ak.to_list(v1["PFCands"].pt) != ak.to_list(ni["PFCands"].pt)
    pdg = set(np.abs(ak.to_numpy(ak.flatten(ni["PFCands"].pdgId))).tolist())
    assert pdg <= {211, 130, 22, 11, 13, 1, 2}
    # material vertices never become b-tagging SVs
    assert ak.sum(ak.num(ni["SV"])) <= ak.sum(ak.num(v1["SV"])) + 2


def test_packaged_detector_is_the_one_the_shipped_models_were_trained_on():
    """The packaged detector stays frozen: its hash is the one in every shipped model."""
    onnx = pytest.importorskip("onnx")
    from importlib import resources

    want = detector_hash(default_detector())
    folder = resources.files("jec_coffea") / "shipped_models"
    for name in ("deepsets", "particlenet", "mlp_nanoaod"):
        model = onnx.load(str(folder / f"{name}.onnx"), load_external_data=False)
        meta = json.loads(
            next(p.value for p in model.metadata_props if p.key == "jec_coffea")
        )
        assert meta["detector_config_hash"] == want, name


def test_packaged_detector_is_v2_plus_cms_hadron_constant_terms_in_hb_and_he(
    detector_v2,
):
    """v3: only the HCAL changes, and only by the HB/HE split at |eta| 1.305 on the same
    0.087 towers and the constant terms of [PAPAS] per band; its hash differs from v2's."""
    from jec_coffea.simulation.calorimeter import CellGrid, resolution_terms

    v2, v3 = detector_v2, default_detector()
    assert (v2.name, v3.name) == ("cms-like-run2-v2", "cms-like-run2-v3")
    assert detector_hash(v3) != detector_hash(v2)
    eta = np.array([0.0, 1.0, 1.30, 1.31, 1.7, 2.4, 2.99])
    _, const2 = resolution_terms(v2.hcal, eta)
    stoch3, const3 = resolution_terms(v3.hcal, eta)
    assert np.allclose(const2, 0.05)
    assert np.allclose(const3, [0.15, 0.15, 0.15, 0.172, 0.172, 0.172, 0.172])
    assert np.allclose(stoch3, v2.hcal.stochastic)
    # the split keeps every tower: same cells at the same places
    g2, g3 = CellGrid.from_config(v2.hcal), CellGrid.from_config(v3.hcal)
    rng = np.random.default_rng(3)
    e, p = rng.uniform(-3, 3, 5000), rng.uniform(-np.pi, np.pi, 5000)
    assert g2.n_cells == g3.n_cells
    assert np.allclose(g2.centre(g2.cell(e, p)), g3.centre(g3.cell(e, p)))
    a, b = v2.model_dump(), v3.model_dump()
    for raw in (a, b):
        raw.pop("name")
        raw["hcal"].pop("regions")
        raw["hcal"].pop("constant")
    assert a == b

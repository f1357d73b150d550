"""Nuclear interactions of hadrons in the tracker material (jec_coffea.simulation.material)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jec_coffea.simulation import default_detector, detector_hash
from jec_coffea.simulation.config import DetectorConfig, NuclearInteractions
from jec_coffea.simulation.material import interaction_probability, nuclear_interactions

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


def test_same_seed_same_secondaries():
    rng = np.random.default_rng(1)
    momentum, vertex = _pions(2_000, 5.0, 0.3, rng)
    hadron = np.ones(2_000, bool)
    a = nuclear_interactions(NI, np.random.default_rng(9), momentum, vertex, hadron)
    b = nuclear_interactions(NI, np.random.default_rng(9), momentum, vertex, hadron)
    np.testing.assert_array_equal(a.parent, b.parent)
    np.testing.assert_array_equal(a.pz, b.pz)


def test_detector_without_the_section_keeps_its_hash():
    det = default_detector()
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
def test_bad_material_table_names_the_key(tmp_path, change, message):
    import yaml

    from jec_coffea.errors import ConfigError
    from jec_coffea.simulation import load_detector

    raw = default_detector().model_dump()
    raw["nuclear_interactions"] = {**NI.model_dump(), **change}
    path = tmp_path / "det.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="nuclear_interactions") as err:
        load_detector(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


EXAMPLE = (
    Path(__file__).resolve().parents[1] / "examples/detector_nuclear_interactions.yaml"
)


def test_example_detector_is_v1_plus_interactions_endcap_noise_and_photon_blocks():
    from jec_coffea.simulation import load_detector

    v1, ni = default_detector().model_dump(), load_detector(EXAMPLE).model_dump()
    assert ni["nuclear_interactions"] == NI.model_dump()
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
    assert ni == v1


def test_simulation_with_nuclear_interactions_runs_and_keeps_the_contract():
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    import awkward as ak

    from jec_coffea.simulation import SimulationConfig, load_detector, parse_pileup
    from jec_coffea.simulation.generator import MinBiasLibrary
    from jec_coffea.simulation.pipeline import EventSimulator

    pileup = parse_pileup("fixed:5", library_size=100)
    runs = {}
    for name, det in (("v1", default_detector()), ("ni", load_detector(EXAMPLE))):
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

"""The simulated PFNano sample: file contract, coffea reading, reproducibility, physics pieces."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

from jec_coffea.cli import main
from jec_coffea.errors import ConfigError, InputFileError

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from jec_coffea.simulation import (
    SimulationConfig,
    default_detector,
    detector_hash,
    load_detector,
    parse_pileup,
    read_metadata,
)
from jec_coffea.simulation.calorimeter import (
    CellGrid,
    hadron_response,
    invert_hadron_response,
)
from jec_coffea.simulation.config import Jets
from jec_coffea.simulation.generator import MinBiasLibrary
from jec_coffea.simulation.pipeline import EventSimulator
from jec_coffea.simulation.reconstruction import (
    flavour_from_ghosts,
    ghost_grid,
    greedy_match,
    grid_rho,
)
from jec_coffea.simulation.writer import PFNanoWriter

ALLOWED_PDG = {211, 130, 22, 11, 13, 1, 2}
COFFEA_XREF = "ignore:Missing cross-reference index:RuntimeWarning"


def _files(folder):
    return sorted(str(p) for p in folder.glob("*.root"))


def _events(folder):
    return ak.concatenate([uproot.open(p)["Events"].arrays() for p in _files(folder)])


# ---------------------------------------------------------------- the file contract


def test_sample_counts_and_data_yaml(sim_sample):
    desc = yaml.safe_load((sim_sample / "data.yaml").read_text())
    assert len(desc["files"]) == 2
    ev = _events(sim_sample)
    for entry in desc["files"]:
        assert entry["layout"] == "pfnano"
        assert entry["tree"] == "Events"
        assert len(entry["sha256"]) == 64
    assert sum(e["n_events"] for e in desc["files"]) == len(ev)
    assert sum(e["n_jets"] for e in desc["files"]) == ak.sum(ak.num(ev.Jet_pt))
    # --jets counts gen-matched (index and dR < 0.2) jets with pT_gen >= 20 GeV
    idx = ev.Jet_genJetIdx
    has = idx >= 0
    g = (
        ev.GenJet_pt[ak.where(has, idx, 0)]
        if ak.all(ak.num(ev.GenJet_pt) > 0)
        else None
    )
    assert g is not None
    geta = ev.GenJet_eta[ak.where(has, idx, 0)]
    gphi = ev.GenJet_phi[ak.where(has, idx, 0)]
    dr = np.hypot(ev.Jet_eta - geta, (ev.Jet_phi - gphi + np.pi) % (2 * np.pi) - np.pi)
    n_target = ak.sum(has & (dr < 0.2) & (g >= 20))
    assert 1000 <= n_target <= 1010


def test_pfcands_contract(sim_sample):
    ev = _events(sim_sample)
    assert set(np.unique(np.abs(ak.flatten(ev.PFCands_pdgId)))) <= ALLOWED_PDG
    # JetPFCands rows contiguous in jet order; nConstituents = candidates per jet
    jidx = ev.JetPFCands_jetIdx
    assert ak.all(jidx[:, 1:] >= jidx[:, :-1])
    assert ak.all(ak.sum(ev.Jet_nConstituents, axis=1) == ak.num(jidx))
    counts = ak.run_lengths(jidx)
    nonempty = ev.Jet_nConstituents[ev.Jet_nConstituents > 0]
    assert ak.all(ak.flatten(counts) == ak.flatten(nonempty))
    # PFCands hold exactly the constituents of stored jets, each once
    assert ak.all(ak.num(ev.PFCands_pt) == ak.num(jidx))
    assert ak.all(ak.sort(ev.JetPFCands_pFCandsIdx) == ak.local_index(ev.PFCands_pt))
    # the four-vector sum of a jet's candidates is its raw pT (DESIGN.md: within 0.1%)
    pf = ev.PFCands_pt[ev.JetPFCands_pFCandsIdx]
    phi = ev.PFCands_phi[ev.JetPFCands_pFCandsIdx]
    lens = ak.flatten(ev.Jet_nConstituents)
    px = ak.sum(ak.unflatten(ak.flatten(pf * np.cos(phi)), lens), axis=1)
    py = ak.sum(ak.unflatten(ak.flatten(pf * np.sin(phi)), lens), axis=1)
    jpt = ak.flatten(ev.Jet_pt)
    assert np.max(np.abs(np.hypot(px, py) / jpt - 1)) < 1e-3
    assert ak.all(ev.Jet_rawFactor == 0)
    assert ak.min(ev.Jet_pt) >= 8.0
    assert ak.all(ev.JetSVs_sVIdx < ak.num(ev.SV_pt)[:, None])


def test_event_ids_unique_and_event_branches(sim_sample):
    ev = _events(sim_sample)
    ids = np.stack(
        [
            ak.to_numpy(ev[k]).astype(np.uint64)
            for k in ("run", "luminosityBlock", "event")
        ],
        axis=1,
    )
    assert len(np.unique(ids, axis=0)) == len(ev)
    assert np.all(ev.Pileup_nTrueInt == 10)
    assert np.all(ev.PV_npvs >= 1)
    assert np.all(ev.fixedGridRhoFastjetAll >= 0)
    assert np.all(ev.genWeight > 0)
    # hadron flavour only 0, 4, 5; b and c jets present
    had = np.asarray(ak.flatten(ev.Jet_hadronFlavour))
    assert set(np.unique(had)) <= {0, 4, 5}
    assert (had == 5).sum() > 20
    assert (had == 4).sum() > 20
    # areas of AK4 jets near pi R^2
    area = np.asarray(ak.flatten(ev.Jet_area[ev.Jet_pt > 30]))
    assert 0.45 < np.median(area) < 0.55


def test_metadata_has_config_and_hash(sim_sample):
    meta = read_metadata(_files(sim_sample)[0])
    assert meta["detector_sha256"] == detector_hash(default_detector())
    assert meta["seed"] == 7
    assert meta["config"]["pileup"]["profile"] == "fixed"
    assert meta["config"]["detector"]["jets"]["radius"] == 0.4


def test_read_metadata_of_foreign_file(shared_data):
    with pytest.raises(InputFileError, match="jec_coffea_metadata"):
        read_metadata(shared_data / "pfnano" / "coffea_pfnano.root")


@pytest.mark.filterwarnings(COFFEA_XREF)
def test_coffea_pfnano_schema_reads_sample(sim_sample):
    from coffea.nanoevents import NanoEventsFactory, PFNanoAODSchema

    path = _files(sim_sample)[0]
    events = NanoEventsFactory.from_root(
        {path: "Events"}, schemaclass=PFNanoAODSchema, mode="eager"
    ).events()
    jets = events.Jet
    pf = jets.constituents.pf
    assert ak.all(ak.num(pf, axis=2) == jets.nConstituents)
    gen = jets.matched_gen
    ok = ~ak.is_none(gen, axis=1)
    assert ak.sum(ok) > 100
    assert ak.all((jets.genJetIdx >= 0) == ok)
    sv = events.JetSVs.sv
    assert ak.sum(ak.num(sv)) > 0
    assert ak.all(sv.pt > 0)


def test_reader_reads_sample_as_pfnano(sim_sample):
    from jec_coffea.data import reader

    table = reader.read_jet_table(_files(sim_sample)[0])
    assert table.layout == "pfnano"
    j = table.jets
    assert ak.sum(j.matched) > 100
    assert "charged" in j.fields
    assert "sv" in j.fields


# ---------------------------------------------------------------- reproducibility


@pytest.fixture(scope="module")
def tiny_config():
    return SimulationConfig(
        detector=default_detector(), pileup=parse_pileup("fixed:5", library_size=100)
    )


@pytest.fixture(scope="module")
def tiny_library(tiny_config):
    return MinBiasLibrary.load_or_generate(
        tiny_config.generator, tiny_config.pileup, 11
    )


def _run(config, library, seed, n=15):
    arrays, _ = EventSimulator(config, seed, 0, library).run(n)
    return arrays


def test_same_seed_same_arrays_different_seed_differs(tiny_config, tiny_library):
    a = _run(tiny_config, tiny_library, 11)
    b = _run(tiny_config, tiny_library, 11)
    c = _run(tiny_config, tiny_library, 12)
    for key in ("Jet", "PFCands", "GenJet", "SV"):
        assert ak.to_list(a[key]) == ak.to_list(b[key]), key
    assert np.array_equal(a["fixedGridRhoFastjetAll"], b["fixedGridRhoFastjetAll"])
    assert ak.to_list(a["GenJet"].pt) != ak.to_list(c["GenJet"].pt)
    assert not np.array_equal(a["event"], c["event"])


def test_detector_sections_timed_without_changing_output(
    tiny_config, tiny_library, monkeypatch
):
    """The detector's sections add up to (no more than) its stage; timing them changes no
    array (the laps draw no random number)."""
    from jec_coffea.simulation import pipeline
    from jec_coffea.simulation.detector import DETECTOR_STAGES

    sim = EventSimulator(tiny_config, 11, 0, tiny_library)
    timed, _ = sim.run(15)
    assert set(DETECTOR_STAGES) <= set(sim.timing)
    sections = sum(sim.timing[s] for s in DETECTOR_STAGES)
    assert 0 < sections <= sim.timing["detector"] + 1e-9
    assert all(sim.timing[s] >= 0 for s in DETECTOR_STAGES)

    untimed_detector = pipeline.simulate_detector

    def untimed(*args, timing=None, **kwargs):
        return untimed_detector(*args, **kwargs)

    monkeypatch.setattr(pipeline, "simulate_detector", untimed)
    sim = EventSimulator(tiny_config, 11, 0, tiny_library)
    plain, _ = sim.run(15)
    assert not set(DETECTOR_STAGES) & set(sim.timing)
    for key in ("Jet", "PFCands", "SV"):
        assert ak.to_list(timed[key]) == ak.to_list(plain[key]), key


def test_laps_book_time_between_laps():
    from jec_coffea.simulation.timing import Laps

    table: dict[str, float] = {"a": 1.0}
    lap = Laps(table)
    sum(i * i for i in range(200_000))
    lap("a")
    lap("b")
    lap("a")
    assert set(table) == {"a", "b"}
    assert table["a"] > 1.0
    assert table["b"] >= 0.0
    Laps(None)("a")  # no table: nothing to book, no error


# ---------------------------------------------------------------- physics pieces


def test_grid_rho_is_median_over_cells():
    cfg = default_detector().jets
    n_eta, n_phi = round(10 / cfg.rho_cell), round(2 * np.pi / cfg.rho_cell)
    area = (10 / n_eta) * (2 * np.pi / n_phi)
    # event 0: one particle of 2 GeV in every cell -> rho = 2/area; event 1: 3 hot cells -> 0
    eta = -5 + (np.arange(n_eta) + 0.5) * 10 / n_eta
    phi = -np.pi + (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    ee, pp = np.meshgrid(eta, phi, indexing="ij")
    ev = np.r_[np.zeros(ee.size, int), np.ones(3, int)]
    pt = np.r_[np.full(ee.size, 2.0), [50.0, 40.0, 30.0]]
    rho = grid_rho(
        ev, pt, np.r_[ee.ravel(), [0, 1, 2]], np.r_[pp.ravel(), [0, 1, 2]], 2, cfg
    )
    assert rho[0] == pytest.approx(2.0 / area)
    assert rho[1] == 0.0


def test_greedy_match_resolves_ambiguity():
    # two reco jets near one gen jet: the closer one takes it; the other takes the second
    r_off, g_off = np.array([0, 2]), np.array([0, 2])
    idx = greedy_match(
        r_off, np.array([0.0, 0.05]), np.array([0.0, 0.0]),
        g_off, np.array([0.04, 0.35]), np.array([0.0, 0.0]),
    )  # fmt: skip
    assert idx.tolist() == [-1, 0] or idx.tolist() == [1, 0]
    assert idx[1] == 0
    far = greedy_match(
        r_off,
        np.array([0.0, 3.0]),
        np.zeros(2),
        g_off,
        np.array([1.0, 1.1]),
        np.zeros(2),
    )
    assert far.tolist() == [-1, -1]


def test_flavour_priority_rule():
    # jet 0: gluon harder than a c quark -> parton flavour c (b > c > hardest); hadron: b wins
    # jet 1: only light partons -> hardest; jet 2: nothing -> 0
    c_jet = np.array([0, 0, 0, 1, 1])
    kind = np.array([0, 0, 5, 0, 0])
    pdg = np.array([21, -4, 521, 2, 21])
    pt = np.array([50.0, 5.0, 20.0, 10.0, 30.0])
    had, par = flavour_from_ghosts(c_jet, kind, pdg, pt, 3)
    assert had.tolist() == [5, 0, 0]
    assert par.tolist() == [-4, 21, 0]


def test_cell_grid_round_trip():
    grid = CellGrid.from_config(default_detector().hcal)
    rng = np.random.default_rng(1)
    eta = rng.uniform(-2.99, 2.99, 1000)
    phi = rng.uniform(-np.pi, np.pi, 1000)
    cells = grid.cell(eta, phi)
    assert np.all(cells >= 0)
    assert np.all(cells < grid.n_cells)
    ceta, cphi = grid.centre(cells)
    assert np.all(grid.cell(ceta, cphi) == cells)
    assert np.all(np.abs(ceta - eta) <= 0.18 / 2 + 1e-9)
    assert np.all(grid.cell(np.array([3.5, -6.0]), np.zeros(2)) == -1)


def test_hadron_response_rises_and_inverts():
    resp = default_detector().hadron_response
    e = np.array([1.0, 5.0, 20.0, 100.0, 1000.0])
    r = hadron_response(resp, e)
    assert np.all(np.diff(r) > 0)
    assert r[0] == pytest.approx(resp.h_over_e)
    assert np.all(r < 1)
    assert invert_hadron_response(resp, e[1:] * r[1:]) == pytest.approx(e[1:], rel=1e-3)


def test_ghost_grid_covers_rapidity_range():
    cfg = Jets(
        radius=0.4, pt_min_gev=8, genjet_pt_min_gev=8, ghost_area=0.01,
        ghost_maxrap=5.0, rho_cell=0.55, rho_eta_max=5.0,
    )  # fmt: skip
    y, _phi, area = ghost_grid(2, cfg, np.random.default_rng(0))
    assert y.shape[1] * area == pytest.approx(10 * 2 * np.pi)
    assert area == pytest.approx(0.01, rel=0.1)
    assert np.all(np.abs(y) <= 5.0)


# ---------------------------------------------------------------- bad input


def test_detector_yaml_typo_names_key(tmp_path):
    text = default_detector().model_dump(mode="json")
    text["jets"]["radiuss"] = 0.4
    bad = tmp_path / "det.yaml"
    bad.write_text(yaml.safe_dump(text))
    with pytest.raises(ConfigError, match=r"jets\.radiuss"):
        load_detector(bad)


def test_missing_detector_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_detector(tmp_path / "nope.yaml")


@pytest.mark.parametrize("spec", ["flat:70-0", "poisson:3", "fixed:x"])
def test_bad_pileup_spec(spec):
    with pytest.raises(ConfigError, match="--pileup"):
        parse_pileup(spec)


def test_cli_rejects_bad_options(tmp_path, capsys):
    assert main(["simulate", "-o", str(tmp_path), "--jets", "0"]) == 2
    assert "--jets" in capsys.readouterr().err
    assert (
        main(["simulate", "-o", str(tmp_path), "--jets", "5", "--pileup", "gauss"]) == 2
    )
    assert "--pileup" in capsys.readouterr().err
    assert main(["validate-sim", str(tmp_path / "empty")]) == 2
    assert "no .root files" in capsys.readouterr().err
    for bad in ("brotli", "lz4:0", "zlib:x"):
        out = tmp_path / "bad-compression"
        code = main(["simulate", "-o", str(out), "--jets", "5", "--compression", bad])
        assert code == 2
        assert "--compression" in capsys.readouterr().err
        assert not out.exists() or not any(out.iterdir()), "nothing may be written"


def test_files_are_lz4_by_default_and_compression_is_selectable(
    sim_sample, tiny_config, tiny_library, tmp_path
):
    """Default LZ4 (fastest to read back); another algorithm writes the same arrays."""
    assert uproot.open(_files(sim_sample)[0]).file.fCompress == 401  # LZ4, level 1
    arrays = _run(tiny_config, tiny_library, 11, n=5)
    written = {}
    for comp, code in (("lz4:1", 401), ("lzma:9", 209), ("zlib:4", 104)):
        path = tmp_path / f"{comp.replace(':', '_')}.root"
        with closing(PFNanoWriter(path, {"seed": 11}, comp)) as writer:
            writer.write(arrays)
        with uproot.open(path) as f:
            assert f.file.fCompress == code
            written[comp] = f["Events"].arrays(["Jet_pt", "PFCands_pt"])
    for comp in ("lzma:9", "zlib:4"):
        assert ak.to_list(written[comp]) == ak.to_list(written["lz4:1"])


def test_ghost_pruning_keeps_areas_exact(tiny_config, tiny_library):
    full = EventSimulator(tiny_config, 21, 0, tiny_library)
    full.prune_ghosts = False
    pruned = EventSimulator(tiny_config, 21, 0, tiny_library)
    a, _ = full.run(10)
    b, _ = pruned.run(10)
    assert ak.to_list(a["Jet"].pt) == ak.to_list(b["Jet"].pt)
    assert np.allclose(
        ak.to_numpy(ak.flatten(a["Jet"].area)), ak.to_numpy(ak.flatten(b["Jet"].area))
    )
    assert ak.to_list(a["Jet"].hadronFlavour) == ak.to_list(b["Jet"].hadronFlavour)


# ---------------------------------------------------------------- pile-up offset truth, PV


def _flat(x):
    return ak.to_numpy(ak.flatten(x)).astype(np.float64)


def _matched_offsets(arrays):
    """Offset truth, rho x area and raw pT of jets matched to GenJets above 20 GeV."""
    jets = arrays["Jet"]
    gen = arrays["GenJet"].pt[ak.where(jets.genJetIdx >= 0, jets.genJetIdx, 0)]
    sel = _flat((jets.genJetIdx >= 0) & (gen > 20)) > 0
    rho_a = _flat(jets.area * arrays["fixedGridRhoFastjetAll"][:, None])
    return _flat(jets.ptOffsetTruth)[sel], rho_a[sel], _flat(jets.pt)[sel]


def test_offset_truth_is_zero_without_pileup(tiny_config):
    config = SimulationConfig(detector=default_detector(), pileup=parse_pileup("none"))
    arrays, _ = EventSimulator(config, 3, 0, None).run(10)
    assert ak.sum(ak.num(arrays["Jet"])) > 20
    assert np.all(_flat(arrays["Jet"].ptOffsetTruth) == 0.0)


def test_offset_truth_scales_with_rho_area_and_mu(sim_sample, tiny_library):
    ev = _events(sim_sample)
    arrays = {
        "Jet": ak.zip(
            {k: ev[f"Jet_{k}"] for k in ("pt", "area", "genJetIdx", "ptOffsetTruth")}
        ),
        "GenJet": ak.zip({"pt": ev.GenJet_pt}),
        "fixedGridRhoFastjetAll": ev.fixedGridRhoFastjetAll,
    }
    off, rho_a, pt = _matched_offsets(arrays)
    assert len(off) > 500
    ratio = off.mean() / rho_a.mean()
    assert 0.3 < ratio < 1.2, ratio
    assert np.all(off >= 0)
    assert np.all(off <= pt)
    assert _flat(ev.Jet_ptOffsetTruth).sum() < _flat(ev.Jet_pt).sum()
    means = []
    for spec in ("fixed:5", "fixed:30"):
        config = SimulationConfig(
            detector=default_detector(), pileup=parse_pileup(spec, library_size=100)
        )
        off_mu, _, _ = _matched_offsets(_run(config, tiny_library, 5, n=12))
        means.append(off_mu.mean())
    assert means[1] > 2.0 * means[0] > 0, means


def test_offset_truth_is_no_model_feature():
    from jec_coffea.errors import JecCoffeaError
    from jec_coffea.features import JET_FEATURES, jet_features

    assert not any("offset" in name for name in JET_FEATURES)
    with pytest.raises(JecCoffeaError, match="pt_offset_truth"):
        jet_features(ak.Array([{"pt": 1.0}]), ["pt_offset_truth"])


def test_reader_maps_offset_truth(sim_sample):
    from jec_coffea.data import reader

    table = reader.read_jet_table(_files(sim_sample)[0])
    raw = uproot.open(_files(sim_sample)[0])["Events"]["Jet_ptOffsetTruth"].array()
    mapped = ak.to_numpy(table.jets.pt_offset_truth).astype(np.float64)
    assert np.allclose(mapped, _flat(raw))
    assert mapped.max() > 0


@pytest.mark.filterwarnings(COFFEA_XREF)
def test_coffea_pv_vertex_mixin(sim_sample):
    from coffea.nanoevents import NanoEventsFactory, PFNanoAODSchema

    events = NanoEventsFactory.from_root(
        {_files(sim_sample)[0]: "Events"}, schemaclass=PFNanoAODSchema, mode="eager"
    ).events()
    pv = events.PV
    assert "Vertex" in type(pv).__name__ or "Vertex" in str(pv.layout.parameters)
    z, x, y = (ak.to_numpy(v) for v in (pv.z, pv.x, pv.y))
    assert 1.0 < np.std(z) < 10.0  # luminous region sigma_z = 3.5 cm
    assert 0 < np.std(x) < 0.02  # ~10 um beam spot (+) vertex resolution
    assert 0 < np.std(y) < 0.02
    assert np.all(ak.to_numpy(pv.npvs) >= 1)
    assert np.all(ak.to_numpy(pv.npvsGood) == ak.to_numpy(pv.npvs))
    pos = pv.pos
    assert np.allclose(ak.to_numpy(pos.z), z)


def _stat(pid) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...); [] if gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().split(")")[-1].split()
    except OSError:
        return []


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if len(fields) > 1 and int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_killing_simulate_terminates_workers(tmp_path):
    """SIGTERM to a parallel ``simulate`` leaves no shard worker behind."""
    code = "import sys; from jec_coffea.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["simulate", "-o", str(tmp_path / "out"), "--jets", "1000000"]
    args += ["--shards", "2", "--workers", "2", "--pileup", "none", "--seed", "3"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        children: set[int] = set()
        deadline = time.monotonic() + 60
        while len(children) < 3 and time.monotonic() < deadline:  # manager + 2 workers
            time.sleep(0.2)
            children |= _children(proc.pid)
        assert len(children) >= 3, children
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(c) for c in children)
    finally:
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------- particle-flow clustering


def test_lateral_split_conserves_energy_and_spreads():
    from jec_coffea.simulation.pflow import lateral_sigma, lateral_split

    grid = CellGrid.from_config(default_detector().hcal)
    rng = np.random.default_rng(4)
    eta = rng.uniform(-2.9, 2.9, 500)
    phi = rng.uniform(-np.pi, np.pi, 500)
    parent, frac, cell = lateral_split(grid, eta, phi, 0.04)
    assert np.allclose(np.bincount(parent, frac, minlength=500), 1.0)
    assert np.all(frac >= 0)
    impact = grid.cell(eta, phi)
    own = np.bincount(
        parent, np.where(cell == impact[parent], frac, 0.0), minlength=500
    )
    assert 0.3 < own.mean() < 0.9  # a shower shares energy with neighbouring towers
    narrow = lateral_split(grid, eta, phi, 1e-4)
    assert len(narrow[0]) < 1.2 * 500  # a pencil-like shower stays in its tower
    calo = default_detector().hcal
    sig = lateral_sigma(calo, np.array([0.0, 1.0, 2.0, 2.8]))
    assert sig[0] == pytest.approx(sig[1])  # barrel: rho = shower radius at all eta
    assert (
        sig[3] > sig[2] > 1.2 * sig[1]
    )  # endcap: closer to the beam, wider in eta-phi


def test_pf_clusters_group_around_local_maxima():
    from jec_coffea.simulation.pflow import pf_clusters

    grid = CellGrid.from_config(default_detector().hcal)
    nphi = int(grid.nphi[0])
    # event 0: one shower across the phi wrap (cells iphi = 71, 0, 1) and a separate maximum
    # two cells away; a second event with the same cells has clusters of its own
    base = (
        int(grid.first[0]) + (int(grid.n_eta[0]) + 3) * nphi
    )  # positive side, ieta = 3
    cells = np.array([base + nphi - 1, base, base + 1, base + 3, base + 4])
    event = np.array([0, 0, 0, 0, 0])
    energy = np.array([2.0, 10.0, 3.0, 1.0, 8.0])
    lab = pf_clusters(grid, event, cells, energy)
    assert lab[0] == lab[1] == lab[2]
    assert lab[3] == lab[4] != lab[0]
    lab2 = pf_clusters(
        grid, np.r_[event, event + 1], np.r_[cells, cells], np.r_[energy, energy]
    )
    assert len(np.unique(lab2)) == 4  # clusters never span events


def test_gaussian_core_ignores_tails():
    from jec_coffea.simulation.validation import gaussian_core

    rng = np.random.default_rng(8)
    core = rng.normal(1.0, 0.05, 900)
    tail = rng.normal(0.8, 0.2, 100)  # low-response tail (neutrinos, out-of-cone)
    mu, sig = gaussian_core(np.concatenate([core, tail]))
    assert mu == pytest.approx(1.0, abs=0.01)
    assert sig == pytest.approx(0.05, rel=0.12)
    assert np.isnan(gaussian_core(np.ones(5))[1])


def test_core_resolution_error_is_the_sampling_spread():
    """The bootstrap error of the core sigma/mean matches its spread over independent
    samples (what decides whether a (b) cell at 0.68 misses 0.7 by more than statistics)."""
    from jec_coffea.simulation.validation import _bootstrap_core_error, gaussian_core

    rng = np.random.default_rng(3)

    def sample():  # 1,000 jets: a Gaussian core of 8% and a 10% low tail
        core = rng.normal(1.0, 0.08, 900)
        return np.concatenate([core, rng.normal(0.85, 0.25, 100)])

    spread = np.std([np.divide(*gaussian_core(sample())[::-1]) for _ in range(300)])
    errors = [_bootstrap_core_error(sample()) for _ in range(10)]
    assert np.median(errors) == pytest.approx(spread, rel=0.25)
    assert all(0.4 * spread < e < 4 * spread for e in errors)
    assert 0.001 < spread < 0.005  # ~ 0.08 / sqrt(2 x 900) x the truncation's loss
    assert np.isnan(_bootstrap_core_error(np.ones(5)))


def test_validate_measures_cms_offset_slope_on_the_same_jets(sim_sample, shared_data):
    """(d) is printed beside the slope CMS's own L1FastJet gives for the same jets."""
    from jec_coffea.simulation.validation import validate

    rep = validate(
        _files(sim_sample), shared_data / "jec" / "textfiles" / "pocketcoffea"
    )
    checks = {c.name: c for c in rep.checks}
    ours = checks["(d) offset / (rho A) slope"].value
    ref = checks["(d) slope / CMS L1FastJet slope"]
    cms = float(ref.detail.split()[1].rstrip(";"))
    # Summer19UL18 AK4PFchs: offset = A p1 (rho - p0)(1 + p2 ln(pT/15)), p1 ~0.43, p2 < 0
    assert 0.2 < cms < 0.45
    assert ref.value == pytest.approx(ours / cms, rel=2e-3)
    assert "|eta| 1.3-2.5" in ref.detail
    assert "bootstrap" in checks["(c) median R(g) - R(uds), 30-50 GeV"].detail
    assert "median g - uds" in checks["(c) neHEF(g) - neHEF(uds)"].detail
    # (b)'s extremes name their cell, with the cell's statistical error
    for what, pick in (("min", min), ("max", max)):
        chk = checks[f"(b) core resolution / JER, {what}"]
        cell = pick(rep.response_table, key=lambda r: r["res_ratio"])
        assert chk.value == cell["res_ratio"]
        assert (
            f"|eta| {cell['eta']}, pT_gen {cell['pt']} GeV, {cell['n']} jets"
            in chk.detail
        )
        assert 0 < cell["res_ratio_err"] < 0.5 * cell["res_ratio"]


def test_validate_sim_writes_the_report_as_json(
    sim_sample, shared_data, capsys, tmp_path
):
    """--json writes what the tables print, the checks with pass/fail and errors, and the
    sample's detector hash and seed; strict JSON (NaN as null). An unwritable path is a bad
    input naming the file, after the tables are printed (nothing computed is lost)."""
    import json

    from jec_coffea.cli import main
    from jec_coffea.simulation import detector_hash

    jec = str(shared_data / "jec" / "textfiles" / "pocketcoffea")
    out = tmp_path / "realism.json"
    argv = [
        "validate-sim",
        str(sim_sample),
        "--jec-dir",
        jec,
        "--no-derive",
        "--fine-eta",
    ]
    status = main([*argv, "--json", str(out)])
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed

    def no_nan(token):
        msg = f"{token} in the JSON"
        raise AssertionError(msg)

    doc = json.loads(out.read_text(), parse_constant=no_nan)
    assert doc["format_version"] == 1
    assert doc["sample"]["detectors"] == [
        {"name": "cms-like-run2-v3", "sha256": detector_hash(default_detector())}
    ]
    assert doc["sample"]["seeds"] == [7]
    assert doc["references"]["jer"] == "Summer19UL17_JRV3_MC_PtResolution_AK4PFchs"
    assert doc["derived_l1l2"] is False
    assert status == (0 if doc["passed"] else 1)
    names = [c["name"] for c in doc["checks"]]
    assert "(b) core resolution / JER, min" in names
    for c in doc["checks"]:
        low, high = c["low"], c["high"]  # null: no bound (neHEF's upper one)
        assert c["passed"] == (
            c["value"] is not None
            and (low is None or low <= c["value"])
            and (high is None or c["value"] <= high)
        )
        assert (f"{c['value']:.4f}" if c["value"] is not None else "nan") in printed
    assert 0 < len(doc["response_table"]) <= 10  # cells of >= 50 jets
    assert all("res_ratio_err" in r for r in doc["response_table"])
    assert len(doc["fine_eta_table"]) == 24
    comp = doc["composition"]  # against the CMS files of the shared folder (default)
    assert len(comp["rows"]) == 20
    assert comp["puppi_files"] == []
    assert "(c) neHEF(g) - neHEF(uds) vs CMS full simulation" in names
    assert not list(tmp_path.glob(".*.tmp"))

    bad = tmp_path / "no-such-folder" / "realism.json"
    assert main([*argv, "--json", str(bad)]) == 2
    captured = capsys.readouterr()
    assert str(bad) in captured.err
    assert "cannot write the report" in captured.err
    assert "realism checks" in captured.out  # the tables came first


def test_validate_sim_derives_the_l1l2_of_the_sample(sim_sample, shared_data, capsys):
    """(a) compares the L1L2 derived on the sample with CMS's and (b) is after it; with
    --no-derive both fall back (median-response table, CMS's L1FastJet), and a standard
    given by --standard is used as it is."""
    import re

    from jec_coffea.cli import main

    jec = str(shared_data / "jec" / "textfiles" / "pocketcoffea")

    def checks(*extra):
        main(["validate-sim", str(sim_sample), "--jec-dir", jec, "--no-cms-mc", *extra])
        out = capsys.readouterr().out
        return out, dict(re.findall(r"│ (\(a\) [^│]*?) +│ ([-\d.na]+) ", out))

    out, derived = checks()
    assert "L1L2 derived on the sample" in out
    assert set(derived) == {
        "(a) derived L1L2 / CMS L1L2, min",
        "(a) derived L1L2 / CMS L1L2, max",
    }
    assert 0.7 < float(derived["(a) derived L1L2 / CMS L1L2, min"]) <= 1.3
    out, fallback = checks("--no-derive")
    assert "no L1L2 derived" in out
    assert set(fallback) == {
        "(a) (1/median R) / L1L2, min",
        "(a) (1/median R) / L1L2, max",
    }
    # CMS's own L1L2 as the "derived" one: (a) is 1 in every bin
    cms = ",".join(
        f"{jec}/Summer19UL18_V5_MC_{level}_AK4PFchs.jec.txt.gz"
        for level in ("L1FastJet", "L2Relative")
    )
    _, same = checks("--standard", cms)
    assert float(same["(a) derived L1L2 / CMS L1L2, min"]) == pytest.approx(1.0)
    assert float(same["(a) derived L1L2 / CMS L1L2, max"]) == pytest.approx(1.0)


def test_offset_slope_needs_pileup():
    """(d) on a sample without pile-up is 'not measured' (NaN), not a crash or a number
    fitted to noise; with pile-up it recovers the slope of the offset in rho*A."""
    from jec_coffea.simulation.validation import _offset_slope

    rng = np.random.default_rng(4)
    n = 5_000
    pt_gen = rng.uniform(30, 100, n)
    area = rng.normal(0.5, 0.02, n)
    aeta = rng.uniform(0, 2.4, n)
    for rho, expect_nan in ((rng.normal(1.0, 0.2, n), True), (np.full(n, 0.0), True)):
        jets = {"rho": rho, "area": area, "pt_gen": pt_gen, "pt_raw": pt_gen * 0.95}
        assert np.isnan(_offset_slope(jets, aeta)) == expect_nan
    rho = rng.uniform(5, 60, n)
    pt_raw = pt_gen + 0.45 * rho * area + rng.normal(0, 1.0, n)
    jets = {"rho": rho, "area": area, "pt_gen": pt_gen, "pt_raw": pt_raw}
    assert _offset_slope(jets, aeta) == pytest.approx(0.45, abs=0.03)


def test_band_noise_and_threshold_override_the_calorimeter(detector_v1):
    """A band may carry its own noise and threshold (EE is noisier than EB); unset, the
    calorimeter's apply and the detector hashes as before."""
    from jec_coffea.simulation.calorimeter import cell_noise

    det = detector_v1  # no band overrides; v2 sets EE's
    raw = det.model_dump()
    raw["ecal"]["regions"][1].update(noise_gev=0.2, threshold_gev=0.6)
    ee = load_detector_from(raw)
    grid = CellGrid.from_config(ee.ecal)
    cells = grid.cell(np.array([0.5, -1.2, 1.8, -2.7]), np.array([0.1, 2.0, -3.0, 0.4]))
    noise, threshold = cell_noise(ee.ecal, grid, cells)
    np.testing.assert_allclose(noise, [0.04, 0.04, 0.2, 0.2])
    np.testing.assert_allclose(threshold, [0.12, 0.12, 0.6, 0.6])
    assert detector_hash(ee) != detector_hash(det)
    raw["ecal"]["regions"][1].update(noise_gev=None, threshold_gev=None)
    assert detector_hash(load_detector_from(raw)) == detector_hash(det)
    # the packaged detector (v2 on) carries EE's override
    ee_v2 = default_detector().ecal.regions[1]
    assert (ee_v2.noise_gev, ee_v2.threshold_gev) == (0.2, 0.6)


def test_band_resolution_terms_override_the_calorimeter(detector_v2):
    """A band may carry its own stochastic and constant terms (HE against HB); unset, the
    calorimeter's apply as scalars and the detector hashes as before."""
    from jec_coffea.simulation.calorimeter import resolution, resolution_terms

    det = detector_v2  # no band terms; v3 sets HB's and HE's
    assert resolution_terms(det.hcal, np.array([0.3, 2.2])) == (1.5, 0.05)
    raw = det.model_dump()
    raw["hcal"]["regions"][1].update(stochastic=1.8, constant=0.07)
    he = load_detector_from(raw)
    a, b = resolution_terms(he.hcal, np.array([0.3, -1.73, 1.75, -2.9, 3.5]))
    np.testing.assert_allclose(a, [1.5, 1.5, 1.8, 1.8, 1.8])
    np.testing.assert_allclose(b, [0.05, 0.05, 0.07, 0.07, 0.07])
    e = np.array([100.0, 100.0])
    np.testing.assert_allclose(
        resolution(he.hcal, e, np.array([0.5, 2.0])),
        np.sqrt([1.5**2 * 100 + 5**2 + 0.2**2, 1.8**2 * 100 + 7**2 + 0.2**2]),
    )
    assert detector_hash(he) != detector_hash(det)
    raw["hcal"]["regions"][1].update(stochastic=None, constant=None)
    assert detector_hash(load_detector_from(raw)) == detector_hash(det)


def test_full_hadron_calibration_calibrates_clusters_not_cells():
    """``hadron_calibration: full`` inverts pi/e(E) for each PF cluster's energy, as CMS PF
    does: isolated 50 GeV neutral hadrons come out at ~0.97 of their energy (thresholds and
    the non-linear inversion of a fluctuating energy); calibrating each cell for its own
    share of the shower gave 1.09. ``linear`` keeps pi/e(50)/pi/e(100) = 0.96."""
    from jec_coffea.simulation.pflow import pf_layer

    det0 = default_detector()
    grid = CellGrid.from_config(det0.hcal)
    n, energy = 2000, 50.0
    measured = {}
    for mode in ("linear", "full"):
        pf = det0.particle_flow.model_copy(update={"hadron_calibration": mode})
        det = det0.model_copy(update={"particle_flow": pf})
        rng = np.random.default_rng(1)
        eta, phi = rng.uniform(-1, 1, n), rng.uniform(-3, 3, n)
        no = np.zeros(n, bool)
        deposits = (np.arange(n), np.full(n, energy), eta, phi, no, no)
        tracks = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
        out = pf_layer(det, "hcal", grid, rng, deposits, tracks)
        measured[mode] = (
            np.bincount(out["event"], out["e"], minlength=n).mean() / energy
        )
    assert 0.95 < measured["full"] < 1.0
    assert measured["linear"] == pytest.approx(0.93, abs=0.02)
    assert measured["full"] - measured["linear"] == pytest.approx(0.04, abs=0.015)


def test_neutral_excess_needs_more_sigmas_at_low_track_momentum(tmp_path):
    """CMS PF's PFAlgo::nSigmaHCAL: an HCAL excess over the tracks becomes a neutral hadron
    above n x (1 + exp(-p/E0)) sigma (E0 = 100 GeV for |eta| < 1.48, 200 GeV beyond), so
    upward fluctuations of soft charged hadrons' showers rarely do; unset, n everywhere."""
    from jec_coffea.simulation.pflow import _nsigma, pf_layer

    det0 = default_detector()
    pf = det0.particle_flow.model_copy(
        update={"neutral_excess_nsigma_scale_gev": (100.0, 200.0)}
    )
    p, eta = np.array([0.0, 10.0, 100.0, 100.0, 1e4]), np.array([0, 1, 1.4, 1.6, 2])
    np.testing.assert_allclose(
        _nsigma(pf, "hcal", p, eta),
        [2.0, 1 + np.exp(-0.1), 1 + np.exp(-1), 1 + np.exp(-0.5), 1.0],
    )
    assert _nsigma(pf, "ecal", p, eta) == pf.neutral_excess_nsigma
    assert _nsigma(det0.particle_flow, "hcal", p, eta) == pf.neutral_excess_nsigma
    # isolated 10 GeV charged pions: their showers' upward fluctuations
    grid = CellGrid.from_config(det0.hcal)
    n, energy = 4000, 10.0
    neutral = {}
    for scales in (None, (100.0, 200.0)):
        pf = det0.particle_flow.model_copy(
            update={"neutral_excess_nsigma_scale_gev": scales}
        )
        det = det0.model_copy(update={"particle_flow": pf})
        rng = np.random.default_rng(5)
        ev = np.arange(n)
        eta, phi = rng.uniform(-1, 1, n), rng.uniform(-3, 3, n)
        no, yes = np.zeros(n, bool), np.ones(n, bool)
        deposits = (ev, np.full(n, energy), eta, phi, no, yes)
        tracks = (ev, np.full(n, energy), eta, phi)
        out = pf_layer(det, "hcal", grid, rng, deposits, tracks)
        neutral[scales] = out["e"].sum() / (n * energy)
    assert neutral[None] > 0.01
    assert neutral[(100.0, 200.0)] < neutral[None] / 2.5
    raw = det0.model_dump(mode="json")
    raw["particle_flow"]["neutral_excess_nsigma_scale_gev"] = [100.0, -1.0]
    path = tmp_path / "det.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="neutral_excess_nsigma_scale_gev") as err:
        load_detector(path)
    assert str(path) in str(err.value)


def load_detector_from(raw):
    from jec_coffea.simulation.config import DetectorConfig

    return DetectorConfig.model_validate(raw)


def test_photons_join_the_pf_blocks_of_charged_hadrons():
    """CMS PF: in a block with tracks the calorimeter excess goes to photons first, then to
    a neutral hadron; photons within the tracks' calorimeter resolution are absorbed."""
    from jec_coffea.simulation.pflow import _photons_in_blocks

    det = default_detector()
    pf = det.particle_flow.model_copy(update={"neutral_excess_nsigma": 1.0})
    grid = CellGrid.from_config(det.hcal)
    cells = np.sort(grid.cell(np.array([0.1, 0.5, 0.9, 1.2]), np.zeros(4)))
    tev, tcl = np.zeros(4, np.int64), cells
    unit = np.arange(4)  # one cluster per cell
    u_trk = np.array([10.0, 10.0, 10.0, 0.0])  # the last block has no track
    excess = np.array([-2.0, 3.0, -1.0, 4.0])  # HCAL (calibrated) minus tracks
    sig = np.array([2.7, 2.7, 2.7, 0.0])
    eta, phi = grid.centre(cells)
    lost_eta, lost_phi = grid.centre(grid.cell(np.array([2.0]), np.array([1.0])))
    photons = {
        "event": np.zeros(5, np.int64),
        "e": np.array([1.5, 4.0, 6.0, 2.0, 3.0]),
        "eta": np.concatenate([eta, lost_eta]),
        "phi": np.concatenate([phi, lost_phi]),
    }
    # the layer's own rule, as pf_layer applies it before the photons join
    layer_keep = (excess > pf.neutral_excess_nsigma * sig) & (
        excess > pf.neutral_hadron_min_gev
    )
    keep, hadron, left = _photons_in_blocks(
        photons, grid, (tev, tcl, unit, 4), (u_trk, excess, sig, layer_keep), pf
    )
    # block 0: -2 + 1.5 < 2.7: the photon is absorbed; block 1: 7 > 2.7, the photon keeps
    # its 4 GeV and a 3 GeV neutral hadron takes the rest; block 2: 5 GeV of excess all go
    # to the photon (scaled from 6); block 3 has no track and a photon outside any cluster
    # stays as it was
    np.testing.assert_allclose(left["e"], [4.0, 5.0, 2.0, 3.0])
    assert keep.tolist() == [False, True, False, True]
    np.testing.assert_allclose(hadron[[1, 3]], [3.0, 4.0])


def test_charge_lookup_learns_new_ids_and_agrees_with_pythia():
    """The dense-table fast path and the learning path give Pythia's charges."""
    from jec_coffea.simulation.detector import charge_of

    first = np.array([211, -211, 22, 2212, -2112, 130, 11, -13, 321])
    np.testing.assert_array_equal(charge_of(first), [1, -1, 0, 1, 0, 0, -1, 1, 1])
    # ids met for the first time (Omega-, anti-Xi+, a deuteron beyond the dense table)
    mixed = np.array([3334, 211, -3312, 1000010020, 22])
    np.testing.assert_array_equal(charge_of(mixed), [-1, 1, 1, 1, 0])
    np.testing.assert_array_equal(charge_of(mixed[[0, 2, 4]]), [-1, 1, 0])


def test_validate_sim_fine_eta_map(sim_sample, shared_data, capsys, monkeypatch):
    """--fine-eta adds the (b) ratio in 8 |eta| x 3 pT bins; sparse cells stay empty."""
    from jec_coffea.simulation import validation
    from jec_coffea.simulation.validation import (
        FINE_ETA_EDGES,
        FINE_ETA_PT_BINS,
        validate,
    )

    # the 1,000-jet test sample is thin in these bins: accept cells of 10 jets here
    monkeypatch.setattr(validation, "MIN_FINE_JETS", 10)
    MIN_FINE_JETS = 10
    jec = shared_data / "jec" / "textfiles" / "pocketcoffea"
    rep = validate(_files(sim_sample), jec, fine_eta=True)
    rows = rep.fine_eta_table
    assert len(rows) == (len(FINE_ETA_EDGES) - 1) * len(FINE_ETA_PT_BINS)
    filled = [r for r in rows if r["n"] >= MIN_FINE_JETS and np.isfinite(r["res"])]
    assert filled
    for r in filled:
        assert r["ratio"] == pytest.approx(r["res"] / r["jer"])
        assert 0.02 < r["res"] < 0.5
    assert all(np.isnan(r["ratio"]) for r in rows if r["n"] < MIN_FINE_JETS)
    assert not validate(_files(sim_sample), jec).fine_eta_table
    main(
        [
            "validate-sim",
            str(sim_sample),
            "--fine-eta",
            "--no-derive",
            "--no-cms-mc",
            "--jec-dir",
            str(jec),
        ]
    )
    assert "core resolution / JER in fine |eta| bins" in capsys.readouterr().out


def test_simulation_runs_without_hugepage_advice_and_restores_numpy():
    from jec_coffea.simulation.pipeline import no_hugepage_advice

    toggle = getattr(np._core.multiarray, "_set_madvise_hugepage", None)
    if toggle is None:
        pytest.skip("this NumPy has no huge-page switch")
    for before in (True, False):
        toggle(before)
        with no_hugepage_advice():
            assert toggle(False) is False  # off inside (and left off)
        assert toggle(before) is before  # restored on exit
    toggle(True)
    with pytest.raises(RuntimeError), no_hugepage_advice():
        raise RuntimeError
    assert toggle(True) is True  # restored after an error too


_FAULTS = """
import resource, sys
import numpy as np
from contextlib import nullcontext
from jec_coffea.simulation.pipeline import _glibc, heap_reuse, no_hugepage_advice

if _glibc() is None:
    print(-1)
    sys.exit()
reuse = heap_reuse() if sys.argv[1] == "reuse" else nullcontext()
with no_hugepage_advice(), reuse:  # as EventSimulator runs: 4 kB pages
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for mb in range(1, 31):  # a batch's temporaries: allocated, written, freed
        a = np.ones(mb * 131072)
        del a
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_heap_reuse_saves_the_page_faults_of_temporary_arrays():
    """In a fresh process, 1-30 MB arrays allocated and freed one after the other are each
    faulted in anew by glibc's default policy; inside heap_reuse the heap serves them."""
    faults = {}
    for mode in ("default", "reuse"):
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        faults[mode] = int(out.stdout.split()[-1])
    if faults["reuse"] < 0:
        pytest.skip("not glibc: heap_reuse does nothing")
    assert faults["default"] > 80_000  # ~465 MB in 4 kB pages
    assert faults["reuse"] < faults["default"] / 5


def test_heap_reuse_without_glibc_does_nothing(monkeypatch):
    from jec_coffea.simulation import pipeline

    monkeypatch.setattr(pipeline, "_glibc", lambda: None)
    with pipeline.heap_reuse():
        assert np.ones(10).sum() == 10


@pytest.mark.parametrize("n_cells", [50, 100_000])
def test_tower_sums_count_or_sort_give_the_same_towers(n_cells):
    """Dense (event, cell) spaces are summed by counting, sparse ones by sorting: both give
    the towers sorted by event then cell, and each tower's sum in deposit order."""
    from jec_coffea.simulation.calorimeter import tower_sums

    rng = np.random.default_rng(3)
    n = 5_000
    event = rng.integers(0, 20, n)
    cell = rng.integers(0, n_cells, n)
    values = [rng.random(n), rng.exponential(size=n)]
    tev, tcl, sums = tower_sums(event, cell, values, n_cells)
    key = event * n_cells + cell
    uniq, inv = np.unique(key, return_inverse=True)
    np.testing.assert_array_equal(tev, uniq // n_cells)
    np.testing.assert_array_equal(tcl, uniq % n_cells)
    for got, v in zip(sums, values, strict=True):
        np.testing.assert_array_equal(got, np.bincount(inv, weights=v))
    assert tower_sums(event[:0], cell[:0], [values[0][:0]], n_cells)[0].size == 0


def test_cli_simulate_reports_counts_and_cpu_by_stage(tmp_path, capsys):
    """A small run through the command line: the files, data.yaml, and where the CPU went."""
    from jec_coffea.simulation.detector import DETECTOR_STAGES
    from jec_coffea.simulation.pipeline import STAGES

    out = tmp_path / "sim"
    args = [
        "simulate",
        "-o",
        str(out),
        "--jets",
        "20",
        "--pileup",
        "none",
        "--seed",
        "3",
    ]
    assert main(args) == 0
    text = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert (out / "data.yaml").is_file()
    assert len(list(out.glob("*.root"))) == 1
    assert "wrote 1 file to" in text
    assert "gen-matched jets/s/core" in text
    per_event = text[text.index("ms/event:") :]
    for stage in (*STAGES, *DETECTOR_STAGES):
        assert f" {stage} " in per_event, stage

"""The parametrised detector: tracking, vertexing, calorimeter towers, particle flow, CHS.

Input are the generator particles of a batch of events (hard scatter plus pile-up); output
are PF candidates and secondary vertices with no generator truth attached. All steps run on
flat numpy arrays for the whole batch:

1. tracking: charged particles within the tracker acceptance are found with an efficiency,
   their pT smeared, impact parameters computed from the production vertex and smeared;
2. vertexing: the hard-scatter vertex is always found; a pile-up vertex is found with an
   efficiency if it has enough tracks; each track is associated to the nearest vertex in dz
   significance; charged-hadron subtraction (CHS) drops tracks associated to a pile-up vertex;
3. calorimeters: every particle of the event (pile-up included) except neutrinos, muons and
   looping tracks deposits energy at its (bent) impact point: EM particles with response 1,
   hadrons with the non-compensating response pi/e(E); towers sum deposits per cell, then get
   noise and thresholds;
4. particle flow (:mod:`.pflow`): hadron showers spread laterally over neighbouring HCAL
   towers; the calibrated energy of each PF cluster (HCAL: towers around a local maximum;
   ECAL and HF: single cells) minus the expected deposit of the tracks linked to it gives a
   neutral candidate (photon in ECAL, neutral hadron in HCAL, pdgId 2/1 in HF) when the
   excess is significant; neutral-hadron energies are calibrated by the inverse mean
   response as PF does;
5. secondary vertices: displaced reconstructed tracks sharing a decay vertex form an SV with
   an efficiency, its position smeared.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass

import numpy as np

from .calorimeter import CellGrid
from .config import DetectorConfig
from .generator import NEUTRINOS, Particles, _offsets
from .material import nuclear_interactions, photon_conversions
from .pflow import pf_layer
from .puppi import PUPPI_UL, puppi_weights
from .timing import Laps
from .vertices import Collection, secondary_vertices

__all__ = [
    "DETECTOR_STAGES",
    "Collection",
    "DetectorOutput",
    "charge_of",
    "simulate_detector",
]

DETECTOR_STAGES = (
    "tracking",
    "material",
    "vertexing",
    "towers",
    "particle flow",
    "puppi",
    "secondary vertices",
)
"""Sections of :func:`simulate_detector` timed when it is given a ``timing`` table: track
finding, parameters and lepton ID; nuclear interactions and conversions in the tracker
material; vertices and the CHS association; calorimeter deposits, shower sharing, cell sums,
noise and thresholds; PF clusters, track-cluster linking, neutral candidates and their
assembly; PUPPI weights; secondary vertices."""

MASS = {211: 0.13957, 11: 0.000511, 13: 0.10566}
_CHARGE_CACHE: dict[int, float] = {}


@dataclass
class DetectorOutput:
    """Detector-level objects of a batch of events."""

    candidates: (
        Collection  # all PF candidates, field "chs" = kept by CHS, "pu_frac" truth
    )
    svs: Collection
    pv_x: np.ndarray  # reconstructed primary vertex [cm], per event
    pv_y: np.ndarray
    pv_z: np.ndarray
    npvs: np.ndarray


def charge_of(pdg: np.ndarray) -> np.ndarray:
    """Electric charge of PDG ids, from Pythia's particle data (cached per id)."""
    pdg = np.asarray(pdg)
    if len(pdg) == 0:
        return np.zeros(0)
    # hot path (a batch holds millions of particles of a few dozen species): one gather
    # from a dense table of the ids met so far
    if np.abs(pdg).max() < _DENSE_MAX:
        q = _dense_charges()[pdg + _DENSE_MAX]
        if not np.isnan(q).any():
            return q
    ids, charges = _charge_table()
    pos = np.clip(np.searchsorted(ids, pdg), 0, len(ids) - 1)
    known = ids[pos] == pdg if len(ids) else np.zeros(len(pdg), bool)
    if not known.all():
        from .. import extras

        pd = extras.pythia8().Pythia("", False).particleData
        for u in np.unique(pdg[~known]):
            _CHARGE_CACHE[int(u)] = float(pd.charge(int(u)))
        ids, charges = _charge_table()
        pos = np.searchsorted(ids, pdg)
    return charges[pos]


_DENSE_MAX = 10_000
_DENSE: dict[int, np.ndarray] = {}


def _dense_charges() -> np.ndarray:
    """Charges of the cached ids below ``_DENSE_MAX`` in |id|, indexed by id + _DENSE_MAX."""
    n = len(_CHARGE_CACHE)
    if n not in _DENSE:
        table = np.full(2 * _DENSE_MAX + 1, np.nan)
        for i, c in _CHARGE_CACHE.items():
            if abs(i) < _DENSE_MAX:
                table[i + _DENSE_MAX] = c
        _DENSE.clear()
        _DENSE[n] = table
    return _DENSE[n]


def _charge_table() -> tuple[np.ndarray, np.ndarray]:
    ids = np.array(sorted(_CHARGE_CACHE), dtype=np.int64)
    return ids, np.array([_CHARGE_CACHE[int(i)] for i in ids], dtype=np.float64)


def _kinematics(px, py, pz, e):
    pt = np.hypot(px, py)
    p = np.sqrt(pt**2 + pz**2)
    eta = np.arcsinh(np.divide(pz, pt, out=np.full_like(pz, 1e4 * 1.0), where=pt > 0))
    eta = np.where(pt > 0, eta, np.sign(pz) * 20.0)
    phi = np.arctan2(py, px)
    return pt, p, eta, phi


def _wrap(phi):
    return (phi + np.pi) % (2 * np.pi) - np.pi


def simulate_detector(
    hard: Particles,
    pileup: Particles | None,
    pu_interaction: np.ndarray | None,
    pu_vertex_z: np.ndarray | None,
    n_pu: np.ndarray,
    det: DetectorConfig,
    rng: np.random.Generator,
    sigma_z_cm: float,
    beamspot: tuple[float, float, float] = (0.0, 0.0, 0.0),
    timing: MutableMapping[str, float] | None = None,
) -> DetectorOutput:
    """Run the detector on hard-scatter plus pile-up particles of a batch of events.

    Parameters
    ----------
    hard, pileup
        Stable generator particles (positions in cm); pile-up positions already include the
        vertex z of their interaction.
    pu_interaction, pu_vertex_z
        Per pile-up particle the index of its interaction; per interaction its z [cm].
    n_pu
        Pile-up interactions per event (to index interactions per event).
    beamspot
        Beam-spot centre x, y and transverse width [cm]: every interaction (hard scatter and
        pile-up) gets its transverse position from it.
    timing
        If given, CPU seconds per section are added to it (:data:`DETECTOR_STAGES`).

    Notes
    -----
    Every candidate carries the simulation truth ``pu_frac``: the pile-up share of its pT
    (1 for a track of a pile-up particle, 0 for a hard-scatter track, and for a neutral the
    pile-up fraction of the true energy deposited in its tower before response and PF
    subtraction). It is never written as a PFCands branch; only the per-jet sum is
    (``Jet_ptOffsetTruth``).
    """
    lap = Laps(timing)
    n_ev = hard.n_events
    z_hs = rng.normal(0.0, sigma_z_cm, n_ev)
    bs_x, bs_y, bs_sxy = beamspot
    x_hs = bs_x + bs_sxy * rng.standard_normal(n_ev)
    y_hs = bs_y + bs_sxy * rng.standard_normal(n_ev)
    # ---- merge hard scatter and pile-up ----------------------------------------------------
    ev_h = hard.event
    vx_h, vy_h, vz_h = hard.vx + x_hs[ev_h], hard.vy + y_hs[ev_h], hard.vz + z_hs[ev_h]
    n_int = int(n_pu.sum())
    int_event = np.repeat(np.arange(n_ev), n_pu)
    if pileup is None or len(pileup.px) == 0:
        cols = [hard.px, hard.py, hard.pz, hard.e, hard.pdg, vx_h, vy_h, vz_h]
        ev = ev_h
        vtx = np.full(len(ev_h), -1, np.int64)
    else:
        ev_p = pileup.event
        x_int = bs_x + bs_sxy * rng.standard_normal(n_int)
        y_int = bs_y + bs_sxy * rng.standard_normal(n_int)
        cols = [
            np.concatenate([a, b])
            for a, b in zip(
                [hard.px, hard.py, hard.pz, hard.e, hard.pdg, vx_h, vy_h, vz_h],
                [
                    pileup.px,
                    pileup.py,
                    pileup.pz,
                    pileup.e,
                    pileup.pdg,
                    pileup.vx + x_int[pu_interaction],
                    pileup.vy + y_int[pu_interaction],
                    pileup.vz,
                ],
                strict=True,
            )
        ]
        ev = np.concatenate([ev_h, ev_p])
        vtx = np.concatenate([np.full(len(ev_h), -1, np.int64), pu_interaction])
    # particles need not be grouped by event: every later step keys on ``ev``
    px, py, pz, e, pdg, vx, vy, vz = cols
    is_pu = vtx >= 0
    apdg = np.abs(pdg)
    visible = ~np.isin(apdg, NEUTRINOS)
    pt, p, eta, phi = _kinematics(px, py, pz, e)
    visible &= np.abs(eta) < 5.0
    q = charge_of(pdg)

    # ---- tracking -------------------------------------------------------------------------
    trk = det.tracking
    aeta = np.abs(eta)
    eff = _efficiency(trk, pt, aeta)
    charged = visible & (q != 0)
    in_volume = np.hypot(vx - bs_x, vy - bs_y) < trk.max_prod_radius_cm
    tracked = (
        charged
        & in_volume
        & (aeta < trk.eta_max)
        & (pt > trk.pt_min_gev)
        & (rng.random(len(pt)) < eff)
    )
    tracked &= ~_merged_in_core(ev, eta, phi, pt, tracked, trk, rng)
    lap("tracking")

    # ---- the tracker material: nuclear interactions, photon conversions ----------------------
    # secondaries are new particles starting where their parent interacted or converted; the
    # parent deposits nothing ("interacted"). All of them are appended in one go.
    parts = {
        "px": px, "py": py, "pz": pz, "e": e, "vx": vx, "vy": vy, "vz": vz, "pdg": pdg,
        "ev": ev, "vtx": vtx, "pt": pt, "p": p, "eta": eta, "phi": phi, "q": q,
        "visible": visible, "charged": charged, "tracked": tracked,
        "r_prod_m": np.zeros(len(pt)), "interacted": np.zeros(len(pt), bool),
        "sv_veto": np.zeros(len(pt), bool), "parent_tracked": np.zeros(len(pt), bool),
    }  # fmt: skip
    added = []
    if det.nuclear_interactions is not None:
        hadron = visible & ~np.isin(apdg, (11, 13, 22))
        sec = nuclear_interactions(
            det.nuclear_interactions, rng, (px, py, pz, e), (vx, vy, vz), hadron,
            (bs_x, bs_y),
        )  # fmt: skip
        parts["interacted"][sec.interacted] = True
        # too few hits before an early interaction: the hadron's own track is not found
        tracked[sec.interacted[sec.early]] = False
        s_pt, s_p, s_eta, s_phi = _kinematics(sec.px, sec.py, sec.pz, sec.e)
        s_q = charge_of(sec.pdg)
        s_aeta = np.abs(s_eta)
        s_visible = s_aeta < 5.0
        # secondaries of a found track belong to it (PF's nuclear-interaction blocks); those
        # of a lost one are displaced tracks, found less often the farther out they start:
        # the efficiency falls linearly to zero at max_prod_radius_cm [TRK]
        s_tracked = (
            s_visible
            & (s_q != 0)
            & ~tracked[sec.parent]
            & (100.0 * sec.r_m < trk.max_prod_radius_cm)
            & (s_aeta < trk.eta_max)
            & (s_pt > trk.pt_min_gev)
            & (
                rng.random(len(s_pt))
                < _efficiency(trk, s_pt, s_aeta)
                * (1.0 - 100.0 * sec.r_m / trk.max_prod_radius_cm)
            )
        )
        added.append(
            _secondary_columns(
                sec,
                parts,
                (s_pt, s_p, s_eta, s_phi),
                s_q,
                s_tracked,
                tracked[sec.parent],
            )
        )
    if det.photon_conversions is not None:
        # photons of the event and of the interactions convert; the legs are not tracked
        # (CMS PF measures converted photons in the ECAL): they bend from the conversion
        # point, soft ones curl up, and they deposit where they arrive
        for src in [parts, *added]:
            conv = photon_conversions(
                det.photon_conversions, (trk.material_eta, trk.material_x0), rng,
                (src["px"], src["py"], src["pz"], src["e"]),
                (src["vx"], src["vy"], src["vz"]),
                src["visible"] & (np.abs(src["pdg"]) == 22), (bs_x, bs_y),
            )  # fmt: skip
            src["interacted"][conv.interacted] = True
            kin = _kinematics(conv.px, conv.py, conv.pz, conv.e)
            no = np.zeros(len(conv.px), bool)
            q_leg = -np.sign(conv.pdg).astype(np.float64)
            added.append(_secondary_columns(conv, src, kin, q_leg, no, no))
    if added:
        parts = {
            k: np.concatenate([v] + [a[k] for a in added]) for k, v in parts.items()
        }
    px, py, pz, e, vx, vy, vz, pdg = (
        parts[k] for k in ("px", "py", "pz", "e", "vx", "vy", "vz", "pdg")
    )
    ev, vtx, pt, p, eta, phi, q = (
        parts[k] for k in ("ev", "vtx", "pt", "p", "eta", "phi", "q")
    )
    visible, charged, tracked = parts["visible"], parts["charged"], parts["tracked"]
    r_prod_m, interacted = parts["r_prod_m"], parts["interacted"]
    sv_veto, parent_tracked = parts["sv_veto"], parts["parent_tracked"]
    is_pu = vtx >= 0
    apdg = np.abs(pdg)
    aeta = np.abs(eta)
    lap("material")
    it = np.flatnonzero(tracked)
    t_pt, t_eta, t_phi, t_q, t_ev = pt[it], eta[it], phi[it], q[it], ev[it]
    scale = np.where(np.abs(t_eta) < trk.barrel_eta, 1.0, trk.endcap_res_scale)
    rel = scale * np.hypot(trk.pt_res_a, trk.pt_res_b_per_gev * t_pt)
    t_ptm = t_pt * np.abs(1.0 + rel * rng.standard_normal(len(it)))
    d0_err = np.hypot(trk.d0_res_a_cm, trk.d0_res_b_cm_gev / t_pt)
    dz_err = np.hypot(trk.dz_res_a_cm, trk.dz_res_b_cm_gev / t_pt)
    vtxc = det.vertexing
    pv_x = x_hs + vtxc.xy_resolution_cm * rng.standard_normal(n_ev)
    pv_y = y_hs + vtxc.xy_resolution_cm * rng.standard_normal(n_ev)
    tx, ty, tz = vx[it], vy[it], vz[it]
    # transverse impact parameter w.r.t. the reconstructed PV (as PFNano's d0), z at the
    # transverse point of closest approach to the beam line
    rx, ry = tx - pv_x[t_ev], ty - pv_y[t_ev]
    d0_true = (rx * py[it] - ry * px[it]) / t_pt
    z_ca = tz - ((tx - bs_x) * px[it] + (ty - bs_y) * py[it]) / t_pt * pz[it] / t_pt
    d0 = d0_true + d0_err * rng.standard_normal(len(it))
    z_meas = z_ca + dz_err * rng.standard_normal(len(it))
    r_prod = np.hypot(tx - bs_x, ty - bs_y)
    lost = (r_prod > 2.9).astype(np.int32) + (r_prod > 6.8).astype(np.int32)
    chi2 = rng.chisquare(12, len(it)) / 12.0
    lap("tracking")

    # ---- vertices and CHS -----------------------------------------------------------------
    t_vtx = vtx[it]
    if n_int:
        ntrk_int = np.bincount(t_vtx[t_vtx >= 0], minlength=n_int)
        found = (ntrk_int >= vtxc.min_tracks) & (
            rng.random(n_int) < vtxc.pu_vertex_efficiency
        )
    else:
        found = np.zeros(0, bool)
    pv_z = z_hs + vtxc.z_resolution_cm * rng.standard_normal(n_ev)
    fi = np.flatnonzero(found)
    v_ev = np.concatenate([np.arange(n_ev), int_event[fi]])
    v_z = (
        np.concatenate(
            [
                pv_z,
                pu_vertex_z[fi] + vtxc.z_resolution_cm * rng.standard_normal(len(fi)),
            ]
        )
        if len(fi)
        else pv_z
    )
    v_is_pv = np.concatenate([np.ones(n_ev, bool), np.zeros(len(fi), bool)])
    npvs = np.bincount(v_ev, minlength=n_ev).astype(np.int32)
    span = 1e4  # cm; separates events on one sorted axis
    vkey = v_ev * span + v_z
    vord = np.argsort(vkey)
    vkey_s, v_is_pv_s = vkey[vord], v_is_pv[vord]
    tkey = t_ev * span + z_meas
    pos = np.searchsorted(vkey_s, tkey)
    left = np.clip(pos - 1, 0, len(vkey_s) - 1)
    right = np.clip(pos, 0, len(vkey_s) - 1)
    dl, dr = np.abs(tkey - vkey_s[left]), np.abs(tkey - vkey_s[right])
    nearest = np.where(dl < dr, left, right)
    dist = np.minimum(dl, dr)
    sig = dist / np.hypot(dz_err, vtxc.z_resolution_cm)
    assoc = sig < vtxc.assoc_nsigma
    to_pu = assoc & ~v_is_pv_s[nearest]
    dz_pv = z_meas - pv_z[t_ev]
    quality = np.where(
        assoc & ~to_pu, 7, np.where(to_pu, 7, np.where(np.abs(dz_pv) < 0.3, 5, 0))
    )
    from_pv_track = ~to_pu
    lap("vertexing")

    # ---- lepton identification -------------------------------------------------------------
    lep = det.leptons
    t_apdg = apdg[it]
    is_mu = (
        (t_apdg == 13)
        & (np.abs(t_eta) < lep.muon_eta_max)
        & (p[it] > lep.muon_p_min_gev)
        & (rng.random(len(it)) < lep.muon_efficiency)
    )
    is_ele = (
        (t_apdg == 11)
        & (t_pt > lep.electron_pt_min_gev)
        & (rng.random(len(it)) < lep.electron_efficiency)
    )
    t_id = np.where(is_mu, 13, np.where(is_ele, 11, 211))
    t_mass = np.select([is_mu, is_ele], [MASS[13], MASS[11]], MASS[211])
    lap("tracking")

    # ---- calorimeter deposits ---------------------------------------------------------------
    reach_r = np.minimum(
        trk.calo_radius_m, 3.15 / np.maximum(np.abs(np.sinh(eta)), 1e-6)
    )
    # a secondary of a nuclear interaction starts its helix at the interaction radius
    reach_r = np.where(r_prod_m > 0, np.maximum(reach_r - r_prod_m, 0.01), reach_r)
    curl = 0.3 * trk.bfield_t * reach_r / (2.0 * np.maximum(pt, 1e-6))
    loops = charged & (curl >= 1.0)
    is_muon_like = apdg == 13
    reaches = visible & ~loops & ~is_muon_like
    deposits = reaches & ~interacted
    if det.photon_conversions is None:
        # v1's rule instead of pair conversions: converted soft photons are lost
        deposits &= ~_lost_conversions(apdg, pt, aeta, curl, trk, rng)
    phi_calo = phi.copy()  # charged particles bend on their way to the calorimeters
    ic = np.flatnonzero(charged)
    phi_calo[ic] = _wrap(phi[ic] - q[ic] * np.arcsin(np.minimum(curl[ic], 1.0)))
    is_em = (apdg == 11) | (apdg == 22)
    in_hf = aeta >= det.hf_em.eta_min
    grids = {
        "ecal": CellGrid.from_config(det.ecal),
        "hcal": CellGrid.from_config(det.hcal),
        "hf_em": CellGrid.from_config(det.hf_em),
        "hf_had": CellGrid.from_config(det.hf_had),
    }

    def layers(mask, sub=slice(None)):
        em, hf = is_em[sub], in_hf[sub]
        return {
            "ecal": mask & em & ~hf,
            "hcal": mask & ~em & ~hf,
            "hf_em": mask & em & hf,
            "hf_had": mask & ~em & hf,
        }

    layer_of = layers(deposits)
    # tracks linked to the calorimeters (muons excluded): PF subtracts their expected energy;
    # the track of a hadron that interacted in the tracker is linked where it points
    t_linked = (deposits | (reaches & interacted))[it] & ~is_mu
    track_layer_of = layers(t_linked, it)
    t_e_meas = np.sqrt((t_ptm * np.cosh(t_eta)) ** 2 + t_mass**2)
    has_track = parent_tracked.copy()
    has_track[it[t_linked]] = True
    neutral_cols = []
    ecal_cols = None  # the ECAL's photons join the HCAL's PF blocks when configured
    for name, grid in grids.items():
        sel = np.flatnonzero(layer_of[name])
        tsel = np.flatnonzero(track_layer_of[name])
        join = (
            name == "hcal"
            and det.particle_flow.photons_in_hadron_blocks
            and ecal_cols is not None
        )
        cols = pf_layer(
            det,
            name,
            grid,
            rng,
            (ev[sel], e[sel], eta[sel], phi_calo[sel], is_pu[sel], has_track[sel]),
            (t_ev[tsel], t_e_meas[tsel], t_eta[tsel], phi_calo[it[tsel]]),
            photons=ecal_cols if join else None,
            laps=lap,
        )
        if name == "ecal":
            ecal_cols = cols
            continue
        if join and cols is not None:
            ecal_cols = cols.pop("photons")
        if cols is not None:
            neutral_cols.append(cols)
    if ecal_cols is not None:
        neutral_cols.insert(0, ecal_cols)

    # ---- assemble PF candidates -------------------------------------------------------------
    n_e = (
        np.concatenate([c["e"] for c in neutral_cols]) if neutral_cols else np.zeros(0)
    )
    n_eta = (
        np.concatenate([c["eta"] for c in neutral_cols])
        if neutral_cols
        else np.zeros(0)
    )
    n_phi = (
        np.concatenate([c["phi"] for c in neutral_cols])
        if neutral_cols
        else np.zeros(0)
    )
    n_ev_idx = (
        np.concatenate([c["event"] for c in neutral_cols]).astype(np.int64)
        if neutral_cols
        else np.zeros(0, np.int64)
    )
    n_pid = (
        np.concatenate([c["pdgId"] for c in neutral_cols])
        if neutral_cols
        else np.zeros(0, np.int32)
    )
    n_pu_frac = (
        np.concatenate([c["pu_frac"] for c in neutral_cols])
        if neutral_cols
        else np.zeros(0)
    )
    n_n = len(n_e)
    neg1 = np.full(n_n, -1.0)
    data = {
        "pt": np.concatenate([t_ptm, n_e / np.cosh(n_eta)]),
        "eta": np.concatenate([t_eta, n_eta]),
        "phi": np.concatenate([t_phi, n_phi]),
        "mass": np.concatenate([t_mass, np.zeros(n_n)]),
        "charge": np.concatenate([t_q.astype(np.int32), np.zeros(n_n, np.int32)]),
        "pdgId": np.concatenate(
            [
                (t_id * np.sign(-t_q) * np.where(t_id == 211, -1, 1)).astype(np.int32),
                n_pid,
            ]
        ),
        "d0": np.concatenate([d0, neg1]),
        "d0Err": np.concatenate([d0_err, neg1]),
        "dz": np.concatenate([dz_pv, neg1]),
        "dzErr": np.concatenate([dz_err, neg1]),
        "pvAssocQuality": np.concatenate([quality, np.full(n_n, 7)]).astype(np.int32),
        "lostInnerHits": np.concatenate([lost, np.full(n_n, -1)]).astype(np.int32),
        "trkChi2": np.concatenate([chi2, neg1]),
        "chs": np.concatenate([from_pv_track, np.ones(n_n, bool)]),
        "pu_frac": np.concatenate([is_pu[it].astype(np.float64), n_pu_frac]),
    }
    cand_ev = np.concatenate([t_ev, n_ev_idx])
    # PUPPI counts a charged candidate from the PV if it is associated to it, or to no
    # vertex and within DeltaZCut of it
    puppi_pv = (assoc & ~to_pu) | (~assoc & (np.abs(dz_pv) < PUPPI_UL.delta_z_cut_cm))
    puppi_pv = np.concatenate([puppi_pv, np.ones(n_n, bool)])
    order = np.argsort(cand_ev, kind="stable")
    data = {k: v[order] for k, v in data.items()}
    offsets = _offsets(np.bincount(cand_ev, minlength=n_ev))
    lap("particle flow")
    data["puppiWeight"] = puppi_weights(
        offsets,
        (data["pt"], data["eta"], data["phi"]),
        data["charge"] != 0,
        puppi_pv[order],
        npvs,
    )
    cands = Collection(data, offsets)
    lap("puppi")

    # ---- secondary vertices -----------------------------------------------------------------
    svs = secondary_vertices(
        det, rng, n_ev, t_ev, t_ptm, t_eta, t_phi, tx - x_hs[t_ev], ty - y_hs[t_ev], tz,
        t_vtx, (pv_x - x_hs, pv_y - y_hs, pv_z), (x_hs, y_hs), veto=sv_veto[it],
    )  # fmt: skip
    lap("secondary vertices")
    return DetectorOutput(cands, svs, pv_x, pv_y, pv_z, npvs)


def _secondary_columns(
    sec, parents: dict, kin: tuple, q, tracked, parent_tracked
) -> dict:
    """Per-particle columns of secondaries (``sec``, a :class:`~.material.Secondaries`) of the
    particles ``parents``: kinematics ``kin`` = (pT, p, eta, phi), charge ``q``, whether
    they and their parent were tracked; visible within |eta| < 5, never SV material."""
    pt, p, eta, phi = kin
    visible = np.abs(eta) < 5.0
    n = len(pt)
    return {
        "px": sec.px, "py": sec.py, "pz": sec.pz, "e": sec.e,
        "vx": sec.vx, "vy": sec.vy, "vz": sec.vz, "pdg": sec.pdg,
        "ev": parents["ev"][sec.parent], "vtx": parents["vtx"][sec.parent],
        "pt": pt, "p": p, "eta": eta, "phi": phi, "q": q, "visible": visible,
        "charged": visible & (q != 0), "tracked": tracked, "r_prod_m": sec.r_m,
        "interacted": np.zeros(n, bool), "sv_veto": np.ones(n, bool),
        "parent_tracked": parent_tracked,
    }  # fmt: skip


def _efficiency(trk, pt: np.ndarray, aeta: np.ndarray) -> np.ndarray:
    """Track-finding efficiency of charged pions: barrel/endcap plateau, low-pT turn-on."""
    eff = np.where(aeta < trk.barrel_eta, trk.efficiency_barrel, trk.efficiency_endcap)
    if trk.low_pt_turn_on_gev > 0:
        eff = eff * (
            1.0
            - 0.5
            * np.exp(-np.maximum(pt - trk.pt_min_gev, 0.0) / trk.low_pt_turn_on_gev)
        )
    return eff


def _lost_conversions(apdg, pt, aeta, curl, trk, rng) -> np.ndarray:
    """Photons converting in the tracker whose e+e- legs curl up before the calorimeter.

    The conversion probability is 1 - exp(-7/9 x/X0) with the tracker material x/X0(|eta|);
    the pair shares the photon pT, so a converted photon whose half-pT would loop (the
    ``curl`` of a charged particle of twice its pT) deposits nothing.
    """
    lost = np.zeros(len(pt), bool)
    cand = np.flatnonzero((apdg == 22) & (2.0 * curl >= 1.0))
    x0 = np.interp(aeta[cand], trk.material_eta, trk.material_x0, right=0.0)
    p_conv = 1.0 - np.exp(-7.0 / 9.0 * x0)
    lost[cand[rng.random(len(cand)) < p_conv]] = True
    return lost


def _merged_in_core(ev, eta, phi, pt, tracked, trk, rng) -> np.ndarray:
    """Tracks lost because they share pixel hits with another track in a dense jet core.

    Tracks above ``core_pt_min_gev`` are binned in (eta, phi) cells of ``core_cell``; each
    track in a cell holding two or more is lost with probability ``core_merge_loss`` (hit
    merging makes the tracking efficiency fall in TeV jet cores, CMS-TRK-11-001 Fig. 13).
    """
    cand = np.flatnonzero(tracked & (pt > trk.core_pt_min_gev))
    lost = np.zeros(len(pt), bool)
    if len(cand) == 0 or trk.core_merge_loss == 0:
        return lost
    ie = np.floor(eta[cand] / trk.core_cell).astype(np.int64)
    ip = np.floor((phi[cand] + np.pi) / trk.core_cell).astype(np.int64)
    key = (ev[cand].astype(np.int64) * 4096 + (ie + 2048)) * 4096 + ip
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    shared = counts[inv.ravel()] >= 2
    lost[cand[shared & (rng.random(len(cand)) < trk.core_merge_loss)]] = True
    return lost

"""Particle flow in one calorimeter: shower sharing, topological clusters, neutral candidates.

Per calorimeter layer of a batch of events, columnar:

1. every particle deposits ``E * response`` with a Gamma-distributed fluctuation of the
   calorimeter resolution (non-negative, mean preserved);
2. hadron showers spread laterally (``lateral_sigma_cm``): the deposit is shared between the
   impact cell and its 8 neighbours with the fractions of a 2D Gaussian profile integrated
   over the cells (exact in eta and phi separately), its eta-phi width set by the distance of
   the shower maximum from the beam (:func:`lateral_sigma`);
3. cells sum their deposits, get noise and the zero-suppression threshold;
4. PF compares calibrated calorimeter energy with the energy of the tracks pointing at it,
   per cell or per *PF cluster* (active cells grouped around local maxima, phi wrapping):
   a cluster and the tracks linked to it form a PF block, and the neutral candidate is the
   block's significant excess, placed at the energy-weighted centre of the cells' excesses.
   In dense jets one block holds the showers of several charged and neutral hadrons, so the
   calorimeter fluctuations of the charged hadrons move energy into or out of the neutral
   candidate: the PF "confusion" term that dominates the jet resolution at high pT
   (CMS PF paper, JINST 12 (2017) P10003, sec. 6 and Fig. 38).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from .calorimeter import (
    CellGrid,
    cell_noise,
    hadron_response,
    invert_hadron_response,
    resolution,
    resolution_terms,
    tower_sums,
)
from .config import Calorimeter, DetectorConfig, ParticleFlow
from .timing import Laps

__all__ = ["PF_ID", "lateral_sigma", "lateral_split", "pf_clusters", "pf_layer"]

PF_ID = {"ecal": 22, "hcal": 130, "hf_em": 2, "hf_had": 1}
MIN_SHARE = 1e-3  # neighbour shares below this stay in the impact cell
SHARE_NOISE_FRACTION = 0.1  # ... and so do shares below this fraction of the cell noise


def lateral_sigma(calo: Calorimeter, eta: np.ndarray) -> np.ndarray:
    """Lateral shower width in eta-phi units at each impact point.

    A displacement d perpendicular to the particle direction moves eta and phi by d / rho,
    with rho the transverse distance of the shower maximum from the beam: the barrel radius,
    or |z| / sinh|eta| on the endcap face, whichever is smaller. The same shower therefore
    covers more eta-phi (and more towers) in the endcap than in the barrel.
    """
    rho = np.minimum(
        calo.shower_radius_m, calo.shower_z_m / np.maximum(np.sinh(np.abs(eta)), 1e-6)
    )
    return calo.lateral_sigma_cm / 100.0 / rho


def lateral_split(
    grid: CellGrid,
    eta: np.ndarray,
    phi: np.ndarray,
    sigma: np.ndarray | float,
    energy: np.ndarray | None = None,
    min_energy: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Share of each deposit in its impact cell and its 8 neighbours.

    Parameters
    ----------
    grid
        Cell geometry.
    eta, phi
        Impact points of N deposits.
    sigma
        Gaussian lateral shower width in eta and phi units (scalar or per deposit).
    energy, min_energy
        Deposited energies [GeV]; shares carrying less than ``min_energy`` stay in the impact
        cell (far below the cell noise they change nothing but cost time).

    Returns
    -------
    parent, fraction, cell
        Flat arrays over the kept (deposit, neighbour) pairs: index of the deposit, its energy
        fraction (summing to 1 per deposit; shares below ``MIN_SHARE`` and shares leaving the
        calorimeter go to the impact cell) and the cell (-1 outside the calorimeter).
    """
    n = len(eta)
    aeta = np.abs(eta)
    b = np.clip(
        np.searchsorted(grid.eta_hi, aeta, side="right"), 0, len(grid.eta_hi) - 1
    )
    deta = grid.deta[b]
    dphi = 2 * np.pi / grid.nphi[b]
    lo_eta = grid.eta_lo[b] + np.floor((aeta - grid.eta_lo[b]) / deta) * deta
    lo_phi = -np.pi + np.floor((phi + np.pi) / dphi) * dphi
    # fraction below / inside / above the impact cell, per axis (|eta| and phi)
    fe = _three_way(aeta, lo_eta, deta, sigma)
    fp = _three_way(phi, lo_phi, dphi, sigma)
    sign = np.where(eta >= 0, 1.0, -1.0)
    parents, fracs, cells = [], [], []
    small = np.ones(n) if energy is None else energy
    for i, de in enumerate((-1, 0, 1)):
        for j, dp in enumerate((-1, 0, 1)):
            if de == 0 and dp == 0:
                continue
            f = fe[i] * fp[j]
            cand = np.flatnonzero((f >= MIN_SHARE) & (f * small >= min_energy))
            cell = grid.cell(
                sign[cand] * (aeta[cand] + de * deta[cand]), phi[cand] + dp * dphi[cand]
            )
            ok = cell >= 0
            parents.append(cand[ok])
            fracs.append(f[cand[ok]])
            cells.append(cell[ok])
    moved = np.bincount(np.concatenate(parents), np.concatenate(fracs), minlength=n)
    parents.append(np.arange(n))
    fracs.append(1.0 - moved)
    cells.append(grid.cell(eta, phi))
    return np.concatenate(parents), np.concatenate(fracs), np.concatenate(cells)


def _three_way(x, lo, width, sigma) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    below = ndtr((lo - x) / sigma)
    above = ndtr((x - lo - width) / sigma)
    return below, 1.0 - below - above, above


def pf_clusters(
    grid: CellGrid, event: np.ndarray, cell: np.ndarray, energy: np.ndarray
) -> np.ndarray:
    """PF clusters: active cells grouped around local energy maxima (seeds).

    Each active cell points to the most energetic of its 8 neighbours and itself; following
    the pointers (pointer jumping, a few vectorised steps) leads every cell of a topological
    cluster to one local maximum, which seeds its PF cluster. This splits a topological
    cluster between its seeds as CMS PF clustering does (which shares cells by a Gaussian
    mixture), and keeps the showers of particles closer than about a cell together.

    Parameters
    ----------
    grid
        Cell geometry (cells connect within an |eta| band; phi wraps around).
    event, cell, energy
        Event, cell index and energy [GeV] of every active cell (above threshold), unique
        (event, cell) pairs.

    Returns
    -------
    np.ndarray
        Cluster label of every active cell (0 .. n_clusters-1), unique over the batch.
    """
    labels = np.full(len(cell), -1, np.int64)
    band = np.searchsorted(grid.first, cell, side="right") - 1
    next_label = 0
    for b in range(len(grid.first)):
        sel = np.flatnonzero(band == b)
        if len(sel) == 0:
            continue
        n_eta, nphi = int(grid.n_eta[b]), int(grid.nphi[b])
        local = cell[sel] - grid.first[b]
        iphi = local % nphi
        side, ieta = np.divmod(local // nphi, n_eta)
        # rows ordered in eta; the two sides touch only across eta = 0 (first band)
        gap = 0 if grid.eta_lo[b] == 0 else 1
        row = np.where(side == 0, n_eta - 1 - ieta, n_eta + gap + ieta)
        ev_u, ev_i = np.unique(event[sel], return_inverse=True)
        ev_i = ev_i.ravel()
        shape = (len(ev_u), 2 * n_eta + gap + 2, nphi)  # one empty row above and below
        img = np.full(shape, -np.inf)
        # ties between equal energies are broken by the cell index (deterministic)
        flat = np.ravel_multi_index((ev_i, row + 1, iphi), shape)
        img.flat[flat] = energy[sel] * (1.0 + 1e-12 * (flat / flat.size))
        best = img.copy()
        ptr = np.arange(img.size).reshape(shape)
        idx = ptr.copy()
        for dr in (-1, 0, 1):
            for dp in (-1, 0, 1):
                if dr == 0 and dp == 0:
                    continue
                nb = np.roll(np.roll(img, -dr, axis=1), -dp, axis=2)
                nb_idx = np.roll(np.roll(idx, -dr, axis=1), -dp, axis=2)
                better = nb > best
                best = np.where(better, nb, best)
                ptr = np.where(better, nb_idx, ptr)
        ptr = ptr.ravel()
        root = ptr[flat]
        for _ in range(64):
            nxt = ptr[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
        _, dense = np.unique(root, return_inverse=True)
        labels[sel] = next_label + dense.ravel()
        next_label += int(dense.max()) + 1
    return labels


def pf_layer(
    det: DetectorConfig,
    name: str,
    grid: CellGrid,
    rng,
    deposits,
    tracks,
    photons: dict | None = None,
    laps: Laps | None = None,
):
    """Cells (or clusters) of one calorimeter and the neutral PF candidates they leave.

    Parameters
    ----------
    deposits
        ``(event, energy [GeV], eta, phi, is_pileup, has_track)`` of the particles reaching
        the layer (``has_track``: the particle's own track is linked to this layer).
    tracks
        ``(event, expected energy [GeV], eta, phi)`` of the tracks linked to the layer.

    photons
        Photon candidates of the ECAL (the dict this function returns for it) to join the
        PF blocks of this (hadron) layer: each is assigned to the cluster of the cell it
        points at. In a block with tracks the excess of the calibrated calorimeter energy
        (HCAL plus the photons') over the tracks goes to the photons first, scaled down to
        it, and the rest to a neutral hadron; below ``neutral_excess_nsigma`` of the
        tracks' calorimeter resolution the photons are absorbed by the charged hadrons, as
        CMS PF does [PF]. They come back, updated, as ``result["photons"]``.
    laps
        The caller's :class:`~.timing.Laps`: the cells are booked to ``towers``, the PF step
        to ``particle flow``.

    Returns
    -------
    dict or None
        Neutral candidates: ``event``, ``e`` [GeV], ``eta``, ``phi``, ``pdgId`` and the truth
        ``pu_frac``; ``None`` if nothing reaches the layer. ``pu_frac`` is the pile-up fraction
        of the true energy (before response, noise and track subtraction) deposited in the
        cells the candidate comes from by particles without a linked track, i.e. of the
        energy the neutral candidate measures; where all that energy belongs to tracked
        particles (the excess is a fluctuation of their showers) it is the pile-up fraction
        of all the deposited energy.
    """
    lap = laps if laps is not None else Laps(None)
    calo = getattr(det, name)
    pf = det.particle_flow
    em_layer = name in ("ecal", "hf_em")
    resp_cfg = det.hf_hadron_response if name == "hf_had" else det.hadron_response
    d_ev, d_e, d_eta, d_phi, d_pu, d_trk = deposits
    t_ev, t_e, t_eta, t_phi = tracks
    resp = (
        np.full(len(d_e), det.em_response)
        if em_layer
        else hadron_response(resp_cfg, d_e)
    )
    mean = np.maximum(d_e * resp, 1e-9)
    stochastic, constant = resolution_terms(calo, d_eta)
    sigma = resp * np.sqrt(stochastic**2 * d_e + (constant * d_e) ** 2)
    shape = (mean / np.maximum(sigma, 1e-12)) ** 2
    measured = rng.gamma(shape, mean / shape)
    if calo.lateral_sigma_cm > 0:
        sig = lateral_sigma(calo, d_eta)
        parent, frac, cell = lateral_split(
            grid, d_eta, d_phi, sig, measured, SHARE_NOISE_FRACTION * calo.noise_gev
        )
        d_ev, measured, d_e = d_ev[parent], measured[parent] * frac, d_e[parent] * frac
        d_pu, d_trk = d_pu[parent], d_trk[parent]
    else:
        cell = grid.cell(d_eta, d_phi)
    tcell = grid.cell(t_eta, t_phi)
    ok, tok = cell >= 0, tcell >= 0
    if not ok.any() and not tok.any():
        lap("towers")
        return None
    n_tok = int(tok.sum())
    all_ev = np.concatenate([d_ev[ok], t_ev[tok]])
    all_cell = np.concatenate([cell[ok], tcell[tok]])
    zeros = np.zeros(n_tok)
    # true deposited energy (before response) in total and from pile-up, of all particles and
    # of those without a linked track: the pile-up offset truth of the neutral candidates
    d_e_ok, d_pu_ok, d_neu = d_e[ok], d_pu[ok], ~d_trk[ok]
    tev, tcl, (e_meas, e_trk, e_true, e_pu, n_true, n_pu) = tower_sums(
        all_ev,
        all_cell,
        [
            np.concatenate([measured[ok], zeros]),
            np.concatenate([np.zeros(ok.sum()), t_e[tok]]),
            np.concatenate([d_e_ok, zeros]),
            np.concatenate([np.where(d_pu_ok, d_e_ok, 0.0), zeros]),
            np.concatenate([np.where(d_neu, d_e_ok, 0.0), zeros]),
            np.concatenate([np.where(d_neu & d_pu_ok, d_e_ok, 0.0), zeros]),
        ],
        grid.n_cells,
    )
    noise, threshold = cell_noise(calo, grid, tcl)
    e_meas = e_meas + noise * rng.standard_normal(len(e_meas))
    e_meas = np.where(e_meas > threshold, e_meas, 0.0)
    lap("towers")
    # cells carry the linear calibration (clustering, positions); "full" calibrates each PF
    # cluster for the energy it measures, below, as CMS PF does [PF sec. 6.2.2]: a cell holds
    # a share of a shower and pile-up, and calibrating it for its own energy would inflate both
    full = pf.hadron_calibration == "full" and not em_layer
    if em_layer:
        e_cal = e_meas / det.em_response
    elif pf.hadron_calibration in ("full", "linear"):
        e_cal = e_meas / hadron_response(resp_cfg, np.asarray(pf.calibration_ref_gev))
    else:  # uncalibrated: compare with the tracks' expected (non-compensated) deposit
        e_cal = e_meas
        e_trk = e_trk * hadron_response(resp_cfg, e_trk)
    ceta, cphi = grid.centre(tcl)
    if calo.clustering == "local_maximum":
        active = np.flatnonzero(e_cal > 0)
        lab = pf_clusters(grid, tev[active], tcl[active], e_cal[active])
        # tracks pointing at a cell below threshold are linked to no cluster
        unit = np.full(len(tev), -1, np.int64)
        unit[active] = lab
        n_units = int(lab.max()) + 1 if len(lab) else 0
    else:
        unit = np.arange(len(tev))
        n_units = len(tev)
    linked = unit >= 0
    u = unit[linked]

    def per_unit(values):
        return np.bincount(u, weights=values[linked], minlength=n_units)

    u_cal, u_trk, u_true, u_pu, u_ntrue, u_npu = (
        per_unit(v) for v in (e_cal, e_trk, e_true, e_pu, n_true, n_pu)
    )
    if full:
        u_cal = invert_hadron_response(resp_cfg, per_unit(e_meas))
    pu_frac = np.where(
        u_ntrue > 0,
        u_npu / np.maximum(u_ntrue, 1e-300),
        np.where(u_true > 0, u_pu / np.maximum(u_true, 1e-300), 0.0),
    )
    # position: energy-weighted centre of the cells' excesses over their tracks
    w = np.maximum(e_cal - e_trk, 0.0)
    w_sum = per_unit(w)
    w = np.where((w_sum > 0)[np.maximum(unit, 0)], w, e_cal)
    w_sum = per_unit(w)
    u_eta = per_unit(w * ceta) / np.maximum(w_sum, 1e-300)
    u_phi = np.arctan2(per_unit(w * np.sin(cphi)), per_unit(w * np.cos(cphi)))
    u_ev = np.zeros(n_units, np.int64)
    u_ev[u] = tev[linked]
    sig_exp = np.where(u_trk > 0, resolution(calo, u_trk, u_eta), 0.0)
    needed = _nsigma(pf, name, u_trk, u_eta) * sig_exp
    excess = u_cal - u_trk
    min_e = pf.photon_min_gev if em_layer else pf.neutral_hadron_min_gev
    keep = (excess > needed) & (excess > min_e)
    updated = None
    if photons is not None:
        keep, excess, updated = _photons_in_blocks(
            photons, grid, (tev, tcl, unit, n_units), (u_trk, excess, needed, keep), pf
        )
    out = {
        "event": u_ev[keep],
        "e": excess[keep],
        "eta": u_eta[keep],
        "phi": u_phi[keep],
        "pdgId": np.full(int(keep.sum()), PF_ID[name], np.int32),
        "pu_frac": pu_frac[keep],
    }
    if updated is not None:
        out["photons"] = updated
    lap("particle flow")
    return out


NSIGMA_BARREL_ETA = 1.48
"""CMS PF's barrel/endcap boundary of the n-sigma rule (PFAlgo::nSigmaHCAL)."""


def _nsigma(
    pf: ParticleFlow, name: str, p_tracks: np.ndarray, eta: np.ndarray
) -> np.ndarray | float:
    """How many sigmas of the tracks' expected deposit an HCAL excess must exceed.

    CMS PF (CMSSW RecoParticleFlow/PFProducer PFAlgo::nSigmaHCAL) asks for
    ``nsigma x (1 + exp(-p / E0))`` with p the momentum of the cluster's tracks, E0 = 100 GeV
    for |eta| < 1.48 and 200 GeV beyond: twice the nominal n at low p, where shower
    fluctuations of charged hadrons would otherwise become neutral hadrons.
    """
    scales = pf.neutral_excess_nsigma_scale_gev
    if scales is None or name != "hcal":
        return pf.neutral_excess_nsigma
    e0 = np.where(np.abs(eta) < NSIGMA_BARREL_ETA, scales[0], scales[1])
    return pf.neutral_excess_nsigma * (1.0 + np.exp(-p_tracks / e0))


def _photons_in_blocks(photons, grid, cells, blocks, pf):
    """Photons joining the hadron PF blocks (see :func:`pf_layer`).

    ``cells`` are the layer's (event, cell, cluster label, number of clusters) and
    ``blocks`` its per-cluster track energy, excess, the excess a neutral needs and the
    neutral-hadron selection. Returns the selection and energies of the neutral hadrons and
    the photons left; blocks without tracks or photons keep the layer's own rule.
    """
    tev, tcl, unit, n_units = cells
    u_trk, excess, needed, keep = blocks
    if len(tcl) == 0:
        return keep, excess, photons
    p_cell = grid.cell(photons["eta"], photons["phi"])
    key = tev.astype(np.int64) * grid.n_cells + tcl
    p_key = photons["event"].astype(np.int64) * grid.n_cells + p_cell
    pos = np.minimum(np.searchsorted(key, p_key), len(key) - 1)
    p_unit = np.where((p_cell >= 0) & (key[pos] == p_key), unit[pos], -1)
    in_block = p_unit >= 0
    in_block[in_block] = u_trk[p_unit[in_block]] > 0
    u_ecal = np.bincount(p_unit[in_block], photons["e"][in_block], minlength=n_units)
    total = excess + u_ecal
    blocked = (u_trk > 0) & (u_ecal > 0)
    significant = total > needed
    # photons take the excess first (scaled down to it), the neutral hadron the rest
    scale = np.where(
        blocked & significant, np.clip(total / np.maximum(u_ecal, 1e-12), 0.0, 1.0), 0.0
    )
    p_scale = np.ones(len(p_unit))
    p_scale[in_block] = scale[p_unit[in_block]]
    e_new = photons["e"] * p_scale
    kept = e_new > pf.photon_min_gev
    updated = {k: v[kept] for k, v in photons.items()}
    updated["e"] = e_new[kept]
    hadron = np.where(blocked, total - u_ecal, excess)
    keep = np.where(blocked, significant & (hadron > pf.neutral_hadron_min_gev), keep)
    return keep, hadron, updated

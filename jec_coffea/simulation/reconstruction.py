"""Jets as CMS defines them: anti-kT R = 0.4 with active areas, gen jets, rho, flavour, matching.

* Reco jets: FastJet anti-kT on the CHS candidates of each event (one C++ call per batch,
  :mod:`.fastjet_native`; fastjet's many-event interface without a compiler), with *explicit
  ghosts*: a jittered grid of ghosts (pT 1e-100 GeV, area ``ghost_area``, to |y| =
  ``ghost_maxrap``) joins every event, and a jet's active area is its number of ghosts times
  the ghost area (FastJet's ``ActiveAreaExplicitGhosts`` definition).
* Flavour (CMS ``JetFlavourClustering``): weakly decaying b/c hadrons and end-of-shower partons
  join the clustering with momenta scaled by 1e-18. hadronFlavour = 5 if a b hadron is
  clustered, else 4 if a c hadron, else 0. partonFlavour = the (signed) id of the hardest
  clustered b quark if any, else of the hardest c quark, else of the hardest parton (light
  quark or gluon), else 0.
* GenJets: anti-kT on the stable hard-scatter particles without neutrinos; neutrinos are
  clustered as ghosts so the neutrino pT inside each GenJet is known.
* ``fixedGridRhoFastjetAll``: median over a 0.55 x 0.55 (eta, phi) grid to |eta| = 5 of the
  candidates' pT sum per cell over the cell area, all candidates before CHS; numpy only.
* ``Jet_genJetIdx``: CMS's matcher: pairs with dR < 0.4 taken in increasing dR, each jet and
  each GenJet used once.
"""

from __future__ import annotations

import os
import sys

import awkward as ak
import numba
import numpy as np

from .. import extras
from ..matching import greedy_match_offsets
from . import fastjet_native
from .config import Jets
from .generator import NEUTRINOS, Particles, _offsets

__all__ = [
    "cluster",
    "flavour_from_ghosts",
    "ghost_grid",
    "ghosts_near_jets",
    "greedy_match",
    "grid_rho",
]

GHOST_PT = 1e-100  # FastJet's GhostedAreaSpec default; below 1e-50, its ghost limit
_BANNER_SILENCED = False
FLAVOUR_SCALE = 1e-18
P4 = ("px", "py", "pz", "E")


def ghost_grid(
    n_events: int, cfg: Jets, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float]:
    """Jittered ghost grid for every event.

    Returns
    -------
    y, phi, area
        Rapidity and azimuth of each ghost, shape (n_events, n_ghosts), and the area per ghost.
    """
    step = np.sqrt(cfg.ghost_area)
    ny = round(2 * cfg.ghost_maxrap / step)
    nphi = round(2 * np.pi / step)
    dy, dphi = 2 * cfg.ghost_maxrap / ny, 2 * np.pi / nphi
    iy, iphi = np.meshgrid(np.arange(ny), np.arange(nphi), indexing="ij")
    iy, iphi = iy.ravel(), iphi.ravel()
    jit = rng.random((n_events, 2, len(iy)))
    y = (iy + jit[:, 0]) * dy - cfg.ghost_maxrap
    phi = (iphi + jit[:, 1]) * dphi - np.pi
    return y, phi, dy * dphi


def _p4(pt, eta, phi, mass):
    px, py = pt * np.cos(phi), pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    return px, py, pz, e


def cluster(
    sources: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    n_events: int,
    radius: float,
    pt_min: float,
    explicit_ghosts: bool = False,
) -> dict[str, np.ndarray]:
    """Cluster several sources of four-vectors per event with anti-kT.

    Parameters
    ----------
    sources
        Per source a tuple (event, px, py, pz, e) of flat arrays. An event's particles are
        clustered source after source (in each source's order).
    n_events, radius, pt_min
        Batch size, jet radius, minimum jet pT [GeV].
    explicit_ghosts
        The sources hold area ghosts (pT ``GHOST_PT``): the C++ path clusters with FastJet's
        strategy that never pairs two ghosts (the jets above ``pt_min`` > 0 and the ghosts in
        them are those of the Best strategy, which fastjet's Python interface uses).

    Returns
    -------
    dict
        ``jet_event``, ``jet_px/py/pz/e`` (jets sorted by decreasing pT within each event),
        ``jet_counts`` per event, and per constituent: ``c_jet`` (flat jet index), ``c_source``
        and ``c_index`` (index into that source's flat arrays).
    """
    events, p4, order = [], [], []
    for source in sources:
        ev = np.asarray(source[0])
        if np.any(ev[1:] < ev[:-1]):  # grouped by event, kept in order within an event
            o = np.argsort(ev, kind="stable")
            ev, comps = ev[o], tuple(np.asarray(c)[o] for c in source[1:])
        else:
            o, comps = None, tuple(source[1:])
        events.append(ev)
        p4.append(comps)
        order.append(o)
    offsets = [_offsets(np.bincount(ev, minlength=n_events)) for ev in events]
    lib = fastjet_native.library()
    if lib is not None:
        jets, jet_counts, particle_jet = fastjet_native.cluster_batch(
            lib, offsets, p4, radius, pt_min, explicit_ghosts
        )
    else:
        jets, jet_counts, particle_jet = _cluster_python(
            offsets, p4, n_events, radius, pt_min
        )
    # jets by decreasing pT within each event (FastJet's order among equal pT)
    jet_event = np.repeat(np.arange(n_events), jet_counts)
    by_pt = np.lexsort((-np.hypot(jets[:, 0], jets[:, 1]), jet_event))
    rank = np.empty(len(by_pt), np.int64)
    rank[by_pt] = np.arange(len(by_pt))
    jet_offsets = _offsets(jet_counts)
    # constituents jet by jet, in the order FastJet saw them (source, then index)
    part_jet, c_source, c_index = [], [], []
    for s, (ev, pj, o) in enumerate(zip(events, particle_jet, order, strict=True)):
        inside = np.flatnonzero(pj >= 0)
        part_jet.append(rank[pj[inside] + jet_offsets[ev[inside]]])
        c_source.append(np.full(len(inside), s, np.int8))
        c_index.append(inside if o is None else o[inside])
    part_jet = np.concatenate(part_jet)
    by_jet = np.argsort(part_jet, kind="stable")
    jets = jets[by_pt]
    out = {f"jet_{k}": np.ascontiguousarray(jets[:, i]) for i, k in enumerate(P4)}
    out.update(
        jet_event=jet_event,
        jet_counts=jet_counts,
        c_jet=part_jet[by_jet],
        c_source=np.concatenate(c_source)[by_jet],
        c_index=np.concatenate(c_index)[by_jet],
    )
    return out


def _cluster_python(
    offsets: list[np.ndarray],
    p4: list[tuple[np.ndarray, ...]],
    n_events: int,
    radius: float,
    pt_min: float,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """:func:`fastjet_native.cluster_batch` through fastjet's Python many-event interface."""
    # one flat array, event after event and source after source within an event
    ev = np.concatenate([np.repeat(np.arange(n_events), np.diff(o)) for o in offsets])
    src = np.concatenate([np.full(o[-1], s) for s, o in enumerate(offsets)])
    merge = np.argsort(ev, kind="stable")
    comps = [np.concatenate([c[k] for c in p4])[merge] for k in range(4)]
    counts = np.bincount(ev, minlength=n_events)
    fastjet = extras.fastjet()
    _silence_banner()
    arr = ak.unflatten(ak.zip(dict(zip(P4, comps, strict=True))), counts)
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, radius)
    cs = fastjet.ClusterSequence(arr, jetdef)
    jets = cs.inclusive_jets(min_pt=pt_min)
    cidx = cs.constituent_index(min_pt=pt_min)
    jet_counts = ak.to_numpy(ak.num(jets)).astype(np.int64)
    flat = np.stack(
        [ak.to_numpy(ak.flatten(jets[k])).astype(np.float64) for k in P4], axis=1
    ).reshape(-1, 4)
    jet_event = np.repeat(np.arange(len(counts)), jet_counts)
    c_jet = np.repeat(
        np.arange(len(flat)), ak.to_numpy(ak.flatten(ak.num(cidx, axis=2)))
    )
    c_local = ak.to_numpy(ak.flatten(cidx, axis=None)).astype(np.int64)
    merged_jet = np.full(int(counts.sum()), -1, np.int64)
    merged_jet[c_local + _offsets(counts)[jet_event[c_jet]]] = (
        c_jet - _offsets(jet_counts)[jet_event[c_jet]]
    )
    particle_jet = np.empty_like(merged_jet)
    particle_jet[merge] = merged_jet
    return flat, jet_counts, [particle_jet[src == s] for s in range(len(offsets))]


def _silence_banner() -> None:
    """Print FastJet's banner once into /dev/null (it writes to the C++ stdout otherwise).

    ``ClusterSequence::print_banner`` prints only the first time it is called in a process,
    so calling it with file descriptor 1 redirected keeps it off the user's terminal.
    """
    global _BANNER_SILENCED
    if _BANNER_SILENCED:
        return
    _BANNER_SILENCED = True
    try:
        from fastjet import _swig
    except ImportError:  # pragma: no cover - depends on the fastjet build
        return
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        _swig.ClusterSequence.print_banner()
    finally:
        os.dup2(saved, 1)
        os.close(null)
        os.close(saved)


@numba.njit(cache=True)
def _near_jets_kernel(g_off, g_y, g_phi, j_off, j_y, j_phi, max_dr2):
    keep = np.zeros(len(g_y), np.bool_)
    for ev in range(len(g_off) - 1):
        for g in range(g_off[ev], g_off[ev + 1]):
            for j in range(j_off[ev], j_off[ev + 1]):
                dphi = abs(g_phi[g] - j_phi[j])
                if dphi > np.pi:
                    dphi = 2 * np.pi - dphi
                dy = g_y[g] - j_y[j]
                if dy * dy + dphi * dphi < max_dr2:
                    keep[g] = True
                    break
    return keep


def ghosts_near_jets(
    g_off: np.ndarray, g_y: np.ndarray, g_phi: np.ndarray,
    j_off: np.ndarray, j_y: np.ndarray, j_phi: np.ndarray, max_dr: float,
) -> np.ndarray:  # fmt: skip
    """Mask of ghosts within ``max_dr`` (in y, phi) of a jet of their event.

    Ghosts far from every hard jet can only end up in pure-ghost jets or soft jets below the
    threshold: anti-kT merges a ghost with a hard jet only within R of it, and pairs involving
    real particles always come before ghost-ghost pairs. Dropping the others leaves the areas
    of the hard jets unchanged (tests compare with the full ghost set) at a fraction of the cost.
    """
    return _near_jets_kernel(
        np.asarray(g_off, np.int64),
        g_y,
        g_phi,
        np.asarray(j_off, np.int64),
        j_y,
        j_phi,
        max_dr**2,
    )


@numba.njit(cache=True)
def _group_argmax(group: np.ndarray, score: np.ndarray, n_groups: int) -> np.ndarray:
    best = np.full(n_groups, -1, np.int64)
    for i in range(len(group)):
        g = group[i]
        if best[g] < 0 or score[i] > score[best[g]]:
            best[g] = i
    return best


def flavour_from_ghosts(
    c_jet: np.ndarray, kind: np.ndarray, pdg: np.ndarray, pt: np.ndarray, n_jets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hadron and parton flavour of jets from their clustered flavour ghosts.

    Parameters
    ----------
    c_jet
        Jet index of each clustered flavour ghost.
    kind, pdg, pt
        Per ghost: 5 b hadron, 4 c hadron, 0 parton; PDG id; unscaled pT [GeV].
    """
    had = np.zeros(n_jets, np.int32)
    np.maximum.at(
        had, c_jet, np.where(kind == 5, 5, np.where(kind == 4, 4, 0)).astype(np.int32)
    )
    parton = kind == 0
    apdg = np.abs(pdg)
    rank = np.where(apdg == 5, 3.0, np.where(apdg == 4, 2.0, 1.0))
    score = np.where(parton, rank * 1e6 + pt, -1.0)
    best = _group_argmax(c_jet[parton], score[parton], n_jets)
    par = np.where(best >= 0, pdg[parton][np.maximum(best, 0)], 0).astype(np.int32)
    return had, par


def greedy_match(
    r_off, r_eta, r_phi, g_off, g_eta, g_phi, max_dr: float = 0.4
) -> np.ndarray:
    """Per reco jet the index (within its event) of the matched GenJet, -1 if none.

    The rule is :func:`jec_coffea.matching.greedy_match_offsets` (the readers' rule: increasing
    ΔR, each jet and GenJet used once, ΔR < ``max_dr``); offsets have shape (n_events + 1,).
    Returns int32, shape (n_reco,).
    """
    r_off = np.asarray(r_off, np.int64)
    g_off = np.asarray(g_off, np.int64)
    flat = greedy_match_offsets(r_off, r_eta, r_phi, g_off, g_eta, g_phi, max_dr)
    event = np.repeat(np.arange(len(r_off) - 1), np.diff(r_off))
    return np.where(flat >= 0, flat - g_off[event], -1).astype(np.int32)


def grid_rho(
    event: np.ndarray,
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    n_events: int,
    cfg: Jets,
) -> np.ndarray:
    """fixedGridRhoFastjetAll: median over grid cells of (sum pT in cell)/(cell area) [GeV]."""
    n_eta = round(2 * cfg.rho_eta_max / cfg.rho_cell)
    n_phi = round(2 * np.pi / cfg.rho_cell)
    deta, dphi = 2 * cfg.rho_eta_max / n_eta, 2 * np.pi / n_phi
    ok = np.abs(eta) < cfg.rho_eta_max
    ie = ((eta[ok] + cfg.rho_eta_max) / deta).astype(np.int64).clip(0, n_eta - 1)
    ip = ((phi[ok] + np.pi) / dphi).astype(np.int64) % n_phi
    key = event[ok] * (n_eta * n_phi) + ie * n_phi + ip
    grid = np.bincount(key, weights=pt[ok], minlength=n_events * n_eta * n_phi)
    return np.median(grid.reshape(n_events, n_eta * n_phi), axis=1) / (deta * dphi)


def gen_sources(
    stable: Particles, ghosts: Particles
) -> tuple[list, dict[str, np.ndarray]]:
    """Clustering sources of GenJets: visible stable particles, flavour ghosts, neutrino ghosts."""
    ev = stable.event
    nu = np.isin(np.abs(stable.pdg), NEUTRINOS)
    vis = ~nu
    gev = ghosts.event
    s = FLAVOUR_SCALE
    sources = [
        (ev[vis], stable.px[vis], stable.py[vis], stable.pz[vis], stable.e[vis]),
        (gev, ghosts.px * s, ghosts.py * s, ghosts.pz * s, ghosts.e * s),
        (
            ev[nu],
            stable.px[nu] * s,
            stable.py[nu] * s,
            stable.pz[nu] * s,
            stable.e[nu] * s,
        ),
    ]
    nu_arrays = {"px": stable.px[nu], "py": stable.py[nu]}
    return sources, nu_arrays


def p4_sources(event, pt, eta, phi, mass):
    """(event, px, py, pz, e) tuple of a candidate collection."""
    return (event, *_p4(pt, eta, phi, mass))

"""Gen matching of reco jets to GenJets, one rule everywhere (DESIGN.md, "Data contract").

A jet is matched if ``Jet_genJetIdx`` points to a GenJet of its event AND the recomputed
dR(jet, GenJet) < R/2. Files without the index use the closest GenJet, each GenJet used at most
once (greedy in increasing dR over all jet-GenJet pairs of the event), with the same dR cut.
CMS's own index allows dR up to 0.4 for AK4; the recomputed cut keeps the target clean.

Everything works on flat per-jet numpy arrays plus per-event counts; the greedy matching is a
``numba.njit`` kernel over flat arrays (the only loop, as the pairing is sequential by nature).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["delta_phi", "delta_r", "greedy_match", "index_match"]


def delta_phi(phi1: np.ndarray, phi2: np.ndarray) -> np.ndarray:
    """phi1 - phi2 wrapped to (-pi, pi] [rad]."""
    d = np.mod(np.asarray(phi1, np.float64) - phi2 + np.pi, 2 * np.pi) - np.pi
    return np.where(d == -np.pi, np.pi, d)


def delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    """sqrt(deta^2 + dphi^2), elementwise."""
    return np.hypot(np.asarray(eta1, np.float64) - eta2, delta_phi(phi1, phi2))


def index_match(
    jet_event: np.ndarray,
    gen_idx: np.ndarray,
    gen_counts: np.ndarray,
) -> np.ndarray:
    """Global (flat) GenJet index of each jet from the per-event local ``Jet_genJetIdx``.

    Parameters
    ----------
    jet_event
        Event number (0-based within the read) of each jet, shape (n_jets,).
    gen_idx
        Local GenJet index of each jet (-1 if none), shape (n_jets,).
    gen_counts
        Number of GenJets per event, shape (n_events,).

    Returns
    -------
    numpy.ndarray
        Flat GenJet index (int64) or -1 where the index does not point to a GenJet.
    """
    gen_counts = np.asarray(gen_counts, np.int64)
    offsets = np.concatenate(([0], np.cumsum(gen_counts)))
    idx = np.asarray(gen_idx, np.int64)
    valid = (idx >= 0) & (idx < gen_counts[jet_event])
    return np.where(valid, offsets[jet_event] + idx, -1)


@numba.njit(cache=True)
def _greedy_kernel(
    jet_offsets, jet_eta, jet_phi, gen_offsets, gen_eta, gen_phi, max_dr
):
    out = np.full(jet_eta.shape[0], -1, np.int64)
    n_events = jet_offsets.shape[0] - 1
    for ev in range(n_events):
        j0, j1 = jet_offsets[ev], jet_offsets[ev + 1]
        g0, g1 = gen_offsets[ev], gen_offsets[ev + 1]
        nj, ng = j1 - j0, g1 - g0
        if nj == 0 or ng == 0:
            continue
        dr = np.empty(nj * ng)
        for a in range(nj):
            for b in range(ng):
                dphi = jet_phi[j0 + a] - gen_phi[g0 + b]
                dphi = (dphi + np.pi) % (2 * np.pi) - np.pi
                deta = jet_eta[j0 + a] - gen_eta[g0 + b]
                dr[a * ng + b] = np.sqrt(deta * deta + dphi * dphi)
        order = np.argsort(dr, kind="mergesort")
        jet_used = np.zeros(nj, np.bool_)
        gen_used = np.zeros(ng, np.bool_)
        for k in order:
            if dr[k] >= max_dr:
                break
            a, b = k // ng, k % ng
            if jet_used[a] or gen_used[b]:
                continue
            jet_used[a] = True
            gen_used[b] = True
            out[j0 + a] = g0 + b
    return out


def greedy_match(
    jet_counts: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    gen_counts: np.ndarray,
    gen_eta: np.ndarray,
    gen_phi: np.ndarray,
    max_dr: float,
) -> np.ndarray:
    """Closest-GenJet matching without an index, each GenJet used at most once.

    Pairs are taken in increasing dR over the whole event (so a GenJet goes to its nearest jet)
    while dR < ``max_dr``.

    Parameters
    ----------
    jet_counts, gen_counts
        Jets and GenJets per event, shape (n_events,).
    jet_eta, jet_phi
        Flat jet coordinates, shape (n_jets,).
    gen_eta, gen_phi
        Flat GenJet coordinates, shape (n_gen,).
    max_dr
        Matching cone (R/2).

    Returns
    -------
    numpy.ndarray
        Flat GenJet index (int64) of each jet, -1 if unmatched.
    """
    jet_offsets = np.concatenate(([0], np.cumsum(jet_counts))).astype(np.int64)
    gen_offsets = np.concatenate(([0], np.cumsum(gen_counts))).astype(np.int64)
    return _greedy_kernel(
        jet_offsets,
        np.asarray(jet_eta, np.float64),
        np.asarray(jet_phi, np.float64),
        gen_offsets,
        np.asarray(gen_eta, np.float64),
        np.asarray(gen_phi, np.float64),
        float(max_dr),
    )

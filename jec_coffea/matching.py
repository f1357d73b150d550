"""Greedy ΔR matching of jets to GenJets, shared by the readers and the simulation.

One rule, CMS's ``Jet_genJetIdx`` matcher: over all (jet, GenJet) pairs of an event, taken in
increasing ΔR, a pair is matched while ΔR < ``max_dr`` (strict) if neither its jet nor its
GenJet is matched yet. Exact ΔR ties are taken in (jet, GenJet) index order (stable sort), so
the result is deterministic. This module depends on numpy and numba only, so
:mod:`jec_coffea.data` and :mod:`jec_coffea.simulation` both import it without depending on
each other.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["greedy_match_offsets"]


@numba.njit(cache=True)
def _greedy_kernel(
    jet_offsets, jet_eta, jet_phi, gen_offsets, gen_eta, gen_phi, max_dr
):
    # the pairing is sequential by nature: the only loop, over flat arrays
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


def greedy_match_offsets(
    jet_offsets: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    gen_offsets: np.ndarray,
    gen_eta: np.ndarray,
    gen_phi: np.ndarray,
    max_dr: float,
) -> np.ndarray:
    """Flat GenJet index of each jet by greedy ΔR matching, -1 if unmatched.

    Parameters
    ----------
    jet_offsets, gen_offsets
        Event boundaries in the flat jet and GenJet arrays, shape (n_events + 1,), starting
        at 0.
    jet_eta, jet_phi
        Flat jet coordinates (φ in rad), shape (n_jets,).
    gen_eta, gen_phi
        Flat GenJet coordinates (φ in rad), shape (n_gen,).
    max_dr
        Matching cone; pairs need ΔR < ``max_dr``.

    Returns
    -------
    numpy.ndarray
        int64, shape (n_jets,): index into the flat GenJet arrays (not the per-event index),
        -1 for unmatched jets.
    """
    return _greedy_kernel(
        np.asarray(jet_offsets, np.int64),
        np.asarray(jet_eta, np.float64),
        np.asarray(jet_phi, np.float64),
        np.asarray(gen_offsets, np.int64),
        np.asarray(gen_eta, np.float64),
        np.asarray(gen_phi, np.float64),
        float(max_dr),
    )

"""Gen matching of reco jets to GenJets, one rule everywhere (DESIGN.md, "Data contract").

A jet is matched if ``Jet_genJetIdx`` points to a GenJet of its event AND the recomputed
dR(jet, GenJet) < R/2. Files without the index use the closest GenJet, each GenJet used at most
once (greedy in increasing dR over all jet-GenJet pairs of the event), with the same dR cut.
CMS's own index allows dR up to 0.4 for AK4; the recomputed cut keeps the target clean.

Everything works on flat per-jet numpy arrays plus per-event counts; the greedy matching is the
``numba.njit`` kernel of :mod:`jec_coffea.matching`, shared with the simulation.
"""

from __future__ import annotations

import numpy as np

from ..matching import greedy_match_offsets

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
    return greedy_match_offsets(
        jet_offsets, jet_eta, jet_phi, gen_offsets, gen_eta, gen_phi, max_dr
    )

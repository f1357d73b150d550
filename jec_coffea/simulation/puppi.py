"""PUPPI weights of the PF candidates: CMS's algorithm with its Run-2 UL tune.

PUPPI [PUPPI] weighs each neutral candidate by how much it looks like it comes from the
primary vertex: its local metric

    alpha_i = log sum_j pT_j^2 / deltaR_ij^2,   1e-4 <= deltaR_ij^2 < 0.4^2,

summed over the charged candidates from the PV (central algorithm, |eta| < 3.5) or over all
candidates (forward algorithm, |eta| >= 3.5), is compared with the same metric of the charged
pile-up candidates of the event (|eta| < 2, the only ones known to be pile-up): their median
and the RMS of the values below it, lowered by the low-pile-up correction, give
chi2 = (alpha - median) |alpha - median| / RMS^2 and the weight is the chi2 (1 dof) CDF.
Neutrals with weight x pT below 0.2 GeV + 0.015 GeV x N_PV (|eta| < 2.5; larger slopes
farther out) get 0, then every neutral at least pT / 200 GeV (1 above 200 GeV), and weights
below 0.01 are 0.
Charged candidates get 1 from the PV and 0 from pile-up (CHS). The numbers and each rule
follow CMSSW's ``CommonTools/PileupAlgos`` (``PuppiContainer``, ``PuppiAlgo``, the UL
``Puppi_cff``); alpha uses eta where CMS preselects neighbours in rapidity.

The neighbour sums run in C++ (``native/antikt.cpp``, beside the clustering, ~0.3 ms per
event of ~2,400 candidates) or, without the compiled library, in numpy (same values to
rounding, several times slower).

[PUPPI] D. Bertolini, P. Harris, M. Low, N. Tran, JHEP 10 (2014) 059; CMS, "Pileup
mitigation at CMS in 13 TeV data", JINST 15 (2020) P09018.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.special import erf
from scipy.stats import chi2 as _chi2

__all__ = [
    "PUPPI_UL",
    "PuppiAlgo",
    "PuppiRegion",
    "PuppiTune",
    "alpha",
    "puppi_weights",
]


@dataclass(frozen=True)
class PuppiRegion:
    """An |eta| range of an algorithm with its neutral pT cut and median/RMS scale factors."""

    eta_min: float
    eta_max: float
    min_neutral_pt: float
    """GeV: neutrals with weight x pT below min_neutral_pt + slope x N_PV get weight 0."""
    min_neutral_pt_slope: float
    rms_eta_sf: float = 1.0
    med_eta_sf: float = 1.0


@dataclass(frozen=True)
class PuppiAlgo:
    """One PUPPI algorithm: which neighbours enter alpha and the candidates it weighs."""

    charged_only: bool
    """alpha from the charged PV candidates (central) or from all candidates (forward)."""
    rms_pt_min: float
    """GeV: charged candidates below it do not enter the median and RMS."""
    regions: tuple[PuppiRegion, ...]


@dataclass(frozen=True)
class PuppiTune:
    """Parameters of PUPPI (CMSSW ``PuppiProducer``)."""

    algos: tuple[PuppiAlgo, ...]
    cone: float = 0.4
    eta_max_extrap: float = 2.0
    """Only charged candidates within it give the median and RMS of every algorithm."""
    min_weight: float = 0.01
    pt_max_neutrals: float = 200.0
    pt_max_neutrals_start_slope: float = 0.0
    """GeV: a neutral's weight is at least (pT - start) / (pt_max_neutrals - start), at
    most 1: hard neutrals are protected (applied after the neutral pT cut, as CMS does)."""
    delta_z_cut_cm: float = 0.3
    """A charged candidate of no vertex counts as from the PV within this |dz| of it."""


PUPPI_UL = PuppiTune(
    algos=(
        PuppiAlgo(
            charged_only=True,
            rms_pt_min=0.1,
            regions=(
                PuppiRegion(0.0, 2.5, 0.2, 0.015),
                PuppiRegion(2.5, 3.5, 0.2, 0.030),
            ),
        ),
        PuppiAlgo(
            charged_only=False,
            rms_pt_min=0.5,
            regions=(PuppiRegion(3.5, 10.0, 2.0, 0.08, med_eta_sf=0.75),),
        ),
    )
)
"""CMS's Run-2 ultra-legacy tune (CMSSW 10_6 ``Puppi_cff``, PUPPI v15)."""


def alpha(
    targets: tuple[np.ndarray, np.ndarray, np.ndarray],
    sources: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cone: float,
) -> np.ndarray:
    """PUPPI's metric of each target: log sum pT_j^2 / deltaR^2 over the sources j of its
    event with 1e-4 <= deltaR^2 < cone^2 (0 where nothing is near).

    ``targets`` = (offsets, eta, phi) and ``sources`` = (offsets, eta, phi, pT), each grouped
    by event with offsets over the same events.
    """
    from .fastjet_native import library, puppi_alpha_batch

    lib = library()
    if lib is not None:
        return puppi_alpha_batch(lib, targets, sources, cone)
    return _alpha_numpy(targets, sources, cone)


def _alpha_numpy(
    targets, sources, cone: float, max_pairs: int = 4_000_000
) -> np.ndarray:
    """:func:`alpha` in numpy: the sources sorted by (event, eta), each target's candidates
    within +-cone in eta found by binary search, pairs formed in chunks."""
    t_off, t_eta, t_phi = (np.asarray(a) for a in targets)
    s_off, s_eta, s_phi, s_pt = (np.asarray(a) for a in sources)
    t_ev = np.repeat(np.arange(len(t_off) - 1), np.diff(t_off))
    s_ev = np.repeat(np.arange(len(s_off) - 1), np.diff(s_off))
    order = np.lexsort((s_eta, s_ev))
    span = (
        2.0 * (max(np.abs(s_eta).max(initial=0), np.abs(t_eta).max(initial=0)) + cone)
        + 1
    )
    key = s_ev[order] * span + s_eta[order]
    t_key = t_ev * span + t_eta
    lo = np.searchsorted(key, t_key - cone)
    hi = np.searchsorted(key, t_key + cone)
    total = np.zeros(len(t_eta))
    n_pairs = hi - lo
    csum = np.cumsum(n_pairs)
    ends = np.searchsorted(
        csum, np.arange(max_pairs, csum[-1] if len(csum) else 0, max_pairs)
    )
    splits = np.unique(
        np.concatenate([[0], ends + 1, [len(t_eta)]]).clip(0, len(t_eta))
    )
    for first, last in itertools.pairwise(splits):
        counts = n_pairs[first:last]
        t_pair = np.repeat(np.arange(first, last), counts)
        start = np.repeat(lo[first:last] - np.cumsum(counts) + counts, counts)
        s_pair = order[start + np.arange(len(t_pair))]
        deta = s_eta[s_pair] - t_eta[t_pair]
        dphi = np.abs(s_phi[s_pair] - t_phi[t_pair])
        dphi = np.where(dphi > np.pi, 2 * np.pi - dphi, dphi)
        dr2 = deta * deta + dphi * dphi
        near = (dr2 < cone * cone) & (dr2 >= 1e-4)
        w = np.where(near, s_pt[s_pair] ** 2 / np.where(near, dr2, 1.0), 0.0)
        total += np.bincount(t_pair, weights=w, minlength=len(t_eta))
    with np.errstate(divide="ignore"):
        return np.where(total > 0, np.log(np.where(total > 0, total, 1.0)), 0.0)


def _subset(offsets: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``mask`` (candidates grouped by event) and their per-event offsets."""
    idx = np.flatnonzero(mask)
    return idx, np.searchsorted(idx, offsets)


def _median_rms(
    event: np.ndarray,
    values: np.ndarray,
    pv_event: np.ndarray,
    pv_values: np.ndarray,
    n_events: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: median and RMS of the pile-up values as CMS's PuppiAlgo::computeMedRMS
    (with the low-pile-up correction), and the number of pile-up values."""
    n = np.bincount(event, minlength=n_events)
    median = np.zeros(n_events)
    rms = np.zeros(n_events)
    if len(values):
        order = np.lexsort((values, event))
        ev, v = event[order], values[order]
        first = np.concatenate([[0], np.cumsum(n)])[:-1]
        pos = np.arange(len(v)) - first[ev]
        # the position of the last zero (0 if none), then the middle of what follows it
        last0 = np.zeros(n_events, np.int64)
        np.maximum.at(last0, ev[v == 0], pos[v == 0])
        has = n > 0
        half = last0 + ((n - last0) * 0.5).astype(np.int64)
        median[has] = v[(first + half)[has]]
        below = (v != 0) & (v <= median[ev])
        n_rms = np.bincount(ev[below], minlength=n_events)
        sum2 = np.bincount(
            ev[below], weights=(v[below] - median[ev[below]]) ** 2, minlength=n_events
        )
        rms2 = np.where(n_rms > 0, sum2 / np.maximum(n_rms, 1), 0.0)
        rms = np.sqrt(np.where(rms2 == 0, 1e-5, rms2))
    # low-pile-up correction: shift median and RMS by the share of PV values below the median
    n_le = np.bincount(pv_event[pv_values <= median[pv_event]], minlength=n_events)
    adjust = np.where(n > 0, n_le / np.maximum(n_le + 0.5 * n, 1e-300), 0.0)
    shift = np.where(adjust > 0, np.sqrt(_chi2.ppf(adjust, 1) * rms), 0.0)
    return median - shift, rms - shift, n


def puppi_weights(
    offsets: np.ndarray,
    kinematics: tuple[np.ndarray, np.ndarray, np.ndarray],
    charged: np.ndarray,
    from_pv: np.ndarray,
    n_pv: np.ndarray,
    tune: PuppiTune = PUPPI_UL,
) -> np.ndarray:
    """PUPPI weight of every PF candidate of a batch of events.

    Parameters
    ----------
    offsets
        The candidates of event i are ``[offsets[i], offsets[i + 1])``.
    kinematics
        (pT [GeV], eta, phi) of each candidate.
    charged, from_pv
        Charged candidates, and those PUPPI counts as from the PV (associated to it, or to
        no vertex and within ``delta_z_cut_cm``); those get weight 1, the other charged 0.
    n_pv
        Reconstructed vertices per event (PUPPI's pile-up proxy for the neutral pT cut).
    """
    offsets = np.asarray(offsets, np.int64)
    n_events = len(offsets) - 1
    pt, eta, phi = (np.asarray(a, np.float64) for a in kinematics)
    event = np.repeat(np.arange(n_events), np.diff(offsets))
    aeta = np.abs(eta)
    weight = np.where(charged & from_pv, 1.0, 0.0)
    neutral = ~charged
    start = tune.pt_max_neutrals_start_slope
    ramp = (pt - start) / (tune.pt_max_neutrals - start)
    for algo in tune.algos:
        # each neutral's region and pT cut; a neutral below its cut whose hard-neutral
        # floor is below min_weight gets 0 whatever its alpha, and is not computed
        region_of = np.full(len(pt), -1)
        cut = np.zeros(len(pt))
        for k, region in enumerate(algo.regions):
            inside = neutral & (aeta >= region.eta_min) & (aeta < region.eta_max)
            region_of[inside] = k
            cut[inside] = (
                region.min_neutral_pt
                + region.min_neutral_pt_slope * n_pv[event[inside]]
            )
        mine = (region_of >= 0) & ~((pt < cut) & (ramp < tune.min_weight))
        if not mine.any():
            continue
        ref = charged & (aeta < tune.eta_max_extrap) & (pt >= algo.rms_pt_min)
        t_idx, t_off = _subset(offsets, mine | ref)
        s_idx, s_off = _subset(
            offsets, charged & from_pv if algo.charged_only else np.ones(len(pt), bool)
        )
        values = np.zeros(len(pt))
        values[t_idx] = alpha(
            (t_off, eta[t_idx], phi[t_idx]),
            (s_off, eta[s_idx], phi[s_idx], pt[s_idx]),
            tune.cone,
        )
        pu = ref & ~from_pv
        pvs = ref & from_pv
        median, rms, n_pu = _median_rms(
            event[pu], values[pu], event[pvs], values[pvs], n_events
        )
        sel = np.flatnonzero(mine)
        ev = event[sel]
        k = region_of[sel]
        med = median[ev] * np.array([r.med_eta_sf for r in algo.regions])[k]
        sig = rms[ev] * np.array([r.rms_eta_sf for r in algo.regions])[k]
        v = np.where(values[sel] == 0, med, values[sel])
        chi2 = (v - med) * np.abs(v - med) / np.maximum(sig * sig, 1e-300)
        # chi2 CDF with 1 dof = erf(sqrt(chi2 / 2)); 0 below the median
        w = np.zeros(len(sel))
        above = chi2 > 0
        w[above] = erf(np.sqrt(chi2[above] / 2))
        w = np.where(n_pu[ev] > 0, w, 1.0)  # no pile-up to compare with: weight 1
        w = np.where(w * pt[sel] < cut[sel], 0.0, w)
        w = np.minimum(np.maximum(ramp[sel], w), 1.0)
        weight[sel] = np.where(w < tune.min_weight, 0.0, w)
    return weight

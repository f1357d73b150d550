"""Reconstruction-level histograms, filled on simulation and on collision data alike.

Collision data has no GenJets, so no response can be formed. What can be compared between data
and simulation is what each method does to reconstructed jets: the corrected pT spectrum, the
correction factor pT_corr / pT_raw versus pT_raw, and the distributions of the jet-level inputs
(a model fed inputs outside what it was trained on shows up here first). The same histograms are
filled on simulation, weighted by genWeight, so the two overlay directly.

Histograms (category axes fixed, Weight storage, so they merge exactly across workers):

``corrected_pt``
    axes ``method, abs_eta`` (jet |η|, :data:`~jec_coffea.histograms.ABS_ETA_EDGES`), ``pt``
    (corrected pT, :data:`RECO_PT_EDGES`).
``correction_factor``
    axes ``method, abs_eta, pt_raw`` (:data:`RECO_PT_EDGES`), ``factor`` (0 to 3 in 0.01).
``inputs``
    dict feature -> 1D histogram of that jet-table field (:data:`INPUT_BINS`), one entry per
    jet (method-independent).
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import hist
import numpy as np

from ..histograms import ABS_ETA_EDGES, PT_GEN_EDGES

__all__ = [
    "FACTOR_BINS",
    "INPUT_BINS",
    "RECO_PT_EDGES",
    "corrected_pt_histogram",
    "correction_factor_histogram",
    "fill_inputs",
    "fill_reco",
    "input_histograms",
]

RECO_PT_EDGES: tuple[float, ...] = (10.0, 15.0, *PT_GEN_EDGES)
"""Reconstructed-pT edges [GeV]: the GenJet binning extended down to NanoAOD's 10-15 GeV."""

FACTOR_BINS: tuple[int, float, float] = (300, 0.0, 3.0)
"""Correction factor pT_corr / pT_raw axis (with flow bins)."""

INPUT_BINS: dict[str, tuple[int, float, float, str]] = {
    "eta": (100, -5.0, 5.0, "jet η"),
    "phi": (64, -np.pi, np.pi, "jet φ [rad]"),
    "mass_raw": (100, 0.0, 200.0, "raw jet mass [GeV]"),
    "area": (60, 0.0, 1.2, "jet area"),
    "event_rho": (80, 0.0, 80.0, "ρ [GeV]"),
    "npv": (100, 0.0, 100.0, "good primary vertices"),
    "chHEF": (50, 0.0, 1.0, "charged hadron energy fraction"),
    "neHEF": (50, 0.0, 1.0, "neutral hadron energy fraction"),
    "chEmEF": (50, 0.0, 1.0, "charged EM energy fraction"),
    "neEmEF": (50, 0.0, 1.0, "neutral EM energy fraction"),
    "muEF": (50, 0.0, 1.0, "muon energy fraction"),
    "n_constituents": (100, 0.0, 100.0, "constituents"),
}
"""Jet-table field -> (bins, low, high, label) of its input histogram; ``pt_raw`` uses
:data:`RECO_PT_EDGES`."""


def _method_axis(methods: Sequence[str]) -> hist.axis.StrCategory:
    return hist.axis.StrCategory(
        list(methods), name="method", label="pT estimate (method)", growth=False
    )


def _abs_eta_axis() -> hist.axis.Variable:
    return hist.axis.Variable(ABS_ETA_EDGES, name="abs_eta", label="jet |η|")


def corrected_pt_histogram(methods: Sequence[str]) -> hist.Hist:
    """Corrected-pT spectrum per method and jet |η| (axes method, abs_eta, pt)."""
    return hist.Hist(
        _method_axis(methods),
        _abs_eta_axis(),
        hist.axis.Variable(RECO_PT_EDGES, name="pt", label="corrected jet pT [GeV]"),
        storage=hist.storage.Weight(),
    )


def correction_factor_histogram(methods: Sequence[str]) -> hist.Hist:
    """Correction factor pT_corr / pT_raw versus pT_raw (axes method, abs_eta, pt_raw, factor)."""
    n, lo, hi = FACTOR_BINS
    return hist.Hist(
        _method_axis(methods),
        _abs_eta_axis(),
        hist.axis.Variable(RECO_PT_EDGES, name="pt_raw", label="raw jet pT [GeV]"),
        hist.axis.Regular(n, lo, hi, name="factor", label="pT_corr / pT_raw"),
        storage=hist.storage.Weight(),
    )


def input_histograms() -> dict[str, hist.Hist]:
    """Empty 1D histograms of the jet-level inputs (``pt_raw`` and :data:`INPUT_BINS`)."""
    out = {
        "pt_raw": hist.Hist(
            hist.axis.Variable(RECO_PT_EDGES, name="pt_raw", label="raw jet pT [GeV]"),
            storage=hist.storage.Weight(),
        )
    }
    for name, (n, lo, hi, label) in INPUT_BINS.items():
        out[name] = hist.Hist(
            hist.axis.Regular(n, lo, hi, name=name, label=label),
            storage=hist.storage.Weight(),
        )
    return out


def fill_reco(
    corrected: hist.Hist,
    factor: hist.Hist,
    method: str,
    *,
    pt: np.ndarray,
    pt_raw: np.ndarray,
    eta: np.ndarray,
    weight: np.ndarray,
) -> None:
    """Fill the corrected pT and the correction factor of one method (flat arrays per jet).

    Jets whose pT is NaN (method not computed for them) are left out.
    """
    keep = np.isfinite(pt) & np.isfinite(pt_raw) & (pt_raw > 0) & np.isfinite(weight)
    abs_eta = np.abs(eta[keep])
    corrected.fill(method=method, abs_eta=abs_eta, pt=pt[keep], weight=weight[keep])
    factor.fill(
        method=method,
        abs_eta=abs_eta,
        pt_raw=pt_raw[keep],
        factor=pt[keep] / pt_raw[keep],
        weight=weight[keep],
    )


def fill_inputs(
    histograms: dict[str, hist.Hist], jets: ak.Array, weight: np.ndarray
) -> None:
    """Fill every input histogram whose field the jet table has (non-finite values skipped)."""
    for name, h in histograms.items():
        if name not in jets.fields:
            continue
        values = np.asarray(ak.to_numpy(jets[name]), dtype=np.float64)
        keep = np.isfinite(values) & np.isfinite(weight)
        h.fill(values[keep], weight=weight[keep])

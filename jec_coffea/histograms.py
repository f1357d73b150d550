"""Response histograms, their binning, the fill helper and the cut-flow container.

Every performance figure of jec-coffea (scale, resolution, flavour dependence, closure) is computed
from these histograms by :mod:`jec_coffea.metrics`, never from unbinned arrays, so a result can be
reproduced from the saved histogram alone and histograms from many dask workers add up exactly.

The main histogram has the axes ``method, flavour, abs_eta, pt_gen, response`` in this order
(DESIGN.md, "Metrics"): the category axes are fixed at construction (no growth, no overflow bin),
so two histograms built with the same methods have identical binning whatever chunks they saw.
Axis names are what ``correctionlib.convert.from_histogram`` reads as input names; labels carry
the units.

Two extra views use the same fill helper: response versus the pile-up density ρ (axes
``method, abs_eta, pt_gen, event_rho, response``) and versus the fine signed η of the GenJet
(``method, eta_gen, pt_gen, response``); their ``pt_gen`` axis is the coarse summary binning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import hist
import numpy as np

from .data.jet_table import FLAVOUR_GROUPS
from .errors import ConfigError

__all__ = [
    "ABS_ETA_EDGES",
    "ETA_FINE_EDGES",
    "PARTON_FLAVOURS",
    "PT_GEN_EDGES",
    "PT_GEN_SUMMARY_EDGES",
    "RESPONSE_BINS",
    "RHO_EDGES",
    "CutFlow",
    "fill_response",
    "parton_flavour_label",
    "response_histogram",
    "response_vs_eta_histogram",
    "response_vs_rho_histogram",
]

logger = logging.getLogger(__name__)

PT_GEN_EDGES: tuple[float, ...] = (
    20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300, 400, 500, 650, 800,
    1000, 1300, 1600, 2000, 3000,
)  # fmt: skip
"""Edges of the GenJet pT binning [GeV] (DESIGN.md)."""

PT_GEN_SUMMARY_EDGES: tuple[float, ...] = (20, 30, 50, 100, 200, 500, 1000, 3000)
"""Coarse GenJet pT edges [GeV]: the summary grid (30-3000 GeV) plus the 20-30 GeV closure bin.
Every edge is also an edge of :data:`PT_GEN_EDGES`, so the fine histogram merges onto it."""

ABS_ETA_EDGES: tuple[float, ...] = (0.0, 1.3, 2.5, 3.0, 5.0)
"""Edges of the |η_gen| binning: barrel, endcap within tracker, endcap outside, forward."""

ETA_FINE_EDGES: tuple[float, ...] = tuple(np.round(np.linspace(-5.0, 5.0, 51), 6))
"""Signed η_gen edges of the fine-η view (0.2 wide, -5 to 5)."""

RHO_EDGES: tuple[float, ...] = (0, 5, 10, 15, 20, 25, 30, 40, 50, 70)
"""Edges of the pile-up energy-density axis ρ [GeV] of the ρ view."""

RESPONSE_BINS: tuple[int, float, float] = (600, 0.0, 3.0)
"""Response axis: 600 bins of width 0.005 from 0 to 3, with under- and overflow (counted in
every quantile)."""

PARTON_FLAVOURS: tuple[str, ...] = ("u", "d", "s", "c", "b", "g")
"""Flavours of the separate histogram behind S_6 (u, d, s by |partonFlavour|; c, b by hadron
flavour as in :func:`~jec_coffea.data.jet_table.flavour_group`; g by partonFlavour 21)."""


def _method_axis(methods: Sequence[str]) -> hist.axis.StrCategory:
    methods = list(methods)
    if not methods or len(set(methods)) != len(methods):
        msg = f"response histogram: methods must be a non-empty list of distinct names, got {methods!r}"
        raise ConfigError(msg)
    return hist.axis.StrCategory(
        methods,
        name="method",
        label="pT estimate (method)",
        growth=False,
        overflow=False,
    )


def _flavour_axis(flavours: Sequence[str]) -> hist.axis.StrCategory:
    return hist.axis.StrCategory(
        list(flavours),
        name="flavour",
        label="jet flavour group",
        growth=False,
        overflow=False,
    )


def _abs_eta_axis() -> hist.axis.Variable:
    return hist.axis.Variable(ABS_ETA_EDGES, name="abs_eta", label="GenJet |η|")


def _pt_gen_axis(edges: Sequence[float]) -> hist.axis.Variable:
    return hist.axis.Variable(edges, name="pt_gen", label="GenJet pT [GeV]")


def _response_axis() -> hist.axis.Regular:
    n, lo, hi = RESPONSE_BINS
    return hist.axis.Regular(
        n, lo, hi, name="response", label="response pT / pT_gen", flow=True
    )


def response_histogram(
    methods: Sequence[str], *, flavours: Sequence[str] = FLAVOUR_GROUPS
) -> hist.Hist:
    """Build the empty response histogram of DESIGN.md.

    Parameters
    ----------
    methods
        Names of the pT estimates to compare (e.g. ``["raw", "standard", "nanoaod"]``); fixed
        at construction so histograms merge exactly across workers.
    flavours
        Flavour categories: :data:`~jec_coffea.data.jet_table.FLAVOUR_GROUPS` (default, for S)
        or :data:`PARTON_FLAVOURS` (the separate histogram for S_6).

    Returns
    -------
    hist.Hist
        Axes ``method, flavour, abs_eta, pt_gen, response`` with Weight storage (sum of
        genWeight and of its square per bin).
    """
    return hist.Hist(
        _method_axis(methods),
        _flavour_axis(flavours),
        _abs_eta_axis(),
        _pt_gen_axis(PT_GEN_EDGES),
        _response_axis(),
        storage=hist.storage.Weight(),
    )


def response_vs_rho_histogram(methods: Sequence[str]) -> hist.Hist:
    """Response versus the pile-up density ρ, for the L1 (offset) part of a calibration.

    Axes ``method, abs_eta, pt_gen`` (coarse :data:`PT_GEN_SUMMARY_EDGES`), ``event_rho``
    (:data:`RHO_EDGES`, GeV) and ``response``; Weight storage.
    """
    return hist.Hist(
        _method_axis(methods),
        _abs_eta_axis(),
        _pt_gen_axis(PT_GEN_SUMMARY_EDGES),
        hist.axis.Variable(RHO_EDGES, name="event_rho", label="ρ [GeV]"),
        _response_axis(),
        storage=hist.storage.Weight(),
    )


def response_vs_eta_histogram(methods: Sequence[str]) -> hist.Hist:
    """Response versus the signed GenJet η in 0.2 bins, to see detector structure (L2 part).

    Axes ``method, eta_gen`` (:data:`ETA_FINE_EDGES`), ``pt_gen`` (coarse
    :data:`PT_GEN_SUMMARY_EDGES`) and ``response``; Weight storage.
    """
    return hist.Hist(
        _method_axis(methods),
        hist.axis.Variable(ETA_FINE_EDGES, name="eta_gen", label="GenJet η"),
        _pt_gen_axis(PT_GEN_SUMMARY_EDGES),
        _response_axis(),
        storage=hist.storage.Weight(),
    )


def parton_flavour_label(hadron_flavour: Any, parton_flavour: Any) -> np.ndarray:
    """Index into :data:`PARTON_FLAVOURS` per jet, -1 where the jet is none of them.

    b if hadronFlavour = 5, c if 4 (as for the groups), else u/d/s from |partonFlavour| 2/1/3
    (PDG: d = 1, u = 2, s = 3) and g from 21. Flat numpy or awkward input, flat int8 output.
    """
    had = np.asarray(
        ak.to_numpy(hadron_flavour)
        if isinstance(hadron_flavour, ak.Array)
        else hadron_flavour
    )
    par = np.abs(
        np.asarray(
            ak.to_numpy(parton_flavour)
            if isinstance(parton_flavour, ak.Array)
            else parton_flavour
        )
    )
    out = np.full(np.broadcast(had, par).shape, -1, dtype=np.int8)
    out[par == 2] = 0
    out[par == 1] = 1
    out[par == 3] = 2
    out[par == 21] = 5
    out[had == 4] = 3
    out[had == 5] = 4
    return out


def _flat(values: Any, name: str) -> np.ndarray:
    if isinstance(values, ak.Array):
        if values.ndim != 1:
            msg = f"fill_response: {name} must be flat (one entry per jet), got ndim={values.ndim}; flatten first"
            raise ValueError(msg)
        values = ak.to_numpy(values)
    return np.asarray(values)


def fill_response(
    h: hist.Hist,
    method: str,
    *,
    pt: Any,
    pt_gen: Any,
    eta_gen: Any,
    flavour: Any = None,
    event_rho: Any = None,
    weight: Any = None,
) -> hist.Hist:
    """Fill one method into any of the response histograms of this module.

    The response is ``pt / pt_gen``; the axes present in ``h`` decide which inputs are used,
    so the main histogram and the extra views are filled by the same code. Jets with a
    non-finite pT or pT_gen are skipped (and counted in the log); so are jets whose flavour is
    not a category of ``h`` (the six-flavour histogram has no "unknown").

    Parameters
    ----------
    h
        Histogram from :func:`response_histogram`, :func:`response_vs_rho_histogram` or
        :func:`response_vs_eta_histogram`.
    method
        One of the categories of the ``method`` axis.
    pt, pt_gen, eta_gen
        Flat arrays, one entry per jet: the estimated pT [GeV], the GenJet pT [GeV] and η.
    flavour
        Flat array of category names, or of integer indices into the ``flavour`` axis (e.g.
        ``flavour_group`` into FLAVOUR_GROUPS); negative indices are skipped. Needed if ``h``
        has a ``flavour`` axis.
    event_rho
        Flat array of ρ [GeV]; needed if ``h`` has an ``event_rho`` axis.
    weight
        Flat array of weights (genWeight); default 1.

    Returns
    -------
    hist.Hist
        ``h``, filled in place.
    """
    names = h.axes.name
    if method not in h.axes["method"]:
        msg = f"fill_response: method {method!r} is not a category of this histogram; it has {list(h.axes['method'])}"
        raise ConfigError(msg)
    pt = _flat(pt, "pt").astype(np.float64)
    pt_gen = _flat(pt_gen, "pt_gen").astype(np.float64)
    eta_gen = _flat(eta_gen, "eta_gen").astype(np.float64)
    weight = (
        np.ones_like(pt)
        if weight is None
        else _flat(weight, "weight").astype(np.float64)
    )
    keep = np.isfinite(pt) & np.isfinite(pt_gen) & (pt_gen > 0) & np.isfinite(eta_gen)
    keep &= np.isfinite(weight)
    axes: dict[str, np.ndarray] = {}
    if "flavour" in names:
        if flavour is None:
            msg = "fill_response: this histogram has a flavour axis; pass flavour="
            raise ValueError(msg)
        flavour = _flat(flavour, "flavour")
        categories = list(h.axes["flavour"])
        if np.issubdtype(flavour.dtype, np.integer):
            keep &= (flavour >= 0) & (flavour < len(categories))
            labels = np.asarray(categories, dtype=object)[
                np.clip(flavour, 0, len(categories) - 1)
            ]
        else:
            labels = flavour.astype(object)
            keep &= np.isin(labels, categories)
        axes["flavour"] = labels
    if "event_rho" in names:
        if event_rho is None:
            msg = "fill_response: this histogram has an event_rho axis; pass event_rho="
            raise ValueError(msg)
        event_rho = _flat(event_rho, "event_rho").astype(np.float64)
        keep &= np.isfinite(event_rho)
        axes["event_rho"] = event_rho
    if "abs_eta" in names:
        axes["abs_eta"] = np.abs(eta_gen)
    if "eta_gen" in names:
        axes["eta_gen"] = eta_gen
    axes["pt_gen"] = pt_gen
    with np.errstate(divide="ignore", invalid="ignore"):
        axes["response"] = pt / pt_gen
    n_skip = int(keep.size - np.count_nonzero(keep))
    if n_skip:
        logger.debug(
            "fill_response(%s): skipped %d of %d jets", method, n_skip, keep.size
        )
    h.fill(
        method=method,
        **{k: v[keep] for k, v in axes.items()},
        weight=weight[keep],
    )
    return h


@dataclass
class CutFlow:
    """Ordered jet counts and weighted sums after each selection step; adds like a histogram.

    ``steps`` keeps the order in which steps were first recorded; adding two cut-flows sums
    the entries step by step (steps only one side has are appended), so per-chunk cut-flows
    from dask workers merge through ``coffea.processor.accumulate``.

    Attributes
    ----------
    counts
        Number of jets surviving each step.
    sumw
        Sum of weights (genWeight) of the surviving jets.
    sumw2
        Sum of squared weights (for the statistical uncertainty of ``sumw``).
    """

    counts: dict[str, int] = field(default_factory=dict)
    sumw: dict[str, float] = field(default_factory=dict)
    sumw2: dict[str, float] = field(default_factory=dict)

    @property
    def steps(self) -> list[str]:
        """Step names in order."""
        return list(self.counts)

    def record(self, step: str, mask: Any, weight: Any = None) -> None:
        """Add the jets passing ``mask`` (flat boolean, one per jet) to ``step``."""
        mask = _flat(mask, "mask").astype(bool)
        w = (
            np.ones(mask.shape)
            if weight is None
            else _flat(weight, "weight").astype(np.float64)
        )
        w = w[mask]
        self.counts[step] = self.counts.get(step, 0) + int(mask.sum())
        self.sumw[step] = self.sumw.get(step, 0.0) + float(w.sum())
        self.sumw2[step] = self.sumw2.get(step, 0.0) + float((w * w).sum())

    def __add__(self, other: CutFlow) -> CutFlow:
        out = CutFlow(dict(self.counts), dict(self.sumw), dict(self.sumw2))
        out += other
        return out

    def __iadd__(self, other: CutFlow) -> CutFlow:  # noqa: PYI034
        if not isinstance(other, CutFlow):
            return NotImplemented
        for step in other.counts:
            self.counts[step] = self.counts.get(step, 0) + other.counts[step]
            self.sumw[step] = self.sumw.get(step, 0.0) + other.sumw[step]
            self.sumw2[step] = self.sumw2.get(step, 0.0) + other.sumw2[step]
        return self

    def efficiencies(self) -> dict[str, float]:
        """Weighted fraction of the first step's jets that survive each step."""
        if not self.sumw:
            return {}
        first = next(iter(self.sumw.values()))
        return {k: (v / first if first else float("nan")) for k, v in self.sumw.items()}

    def to_dict(self) -> dict[str, list[dict[str, float | int | str]]]:
        """JSON-ready ordered list of steps."""
        return {
            "steps": [
                {
                    "step": k,
                    "count": self.counts[k],
                    "sumw": self.sumw[k],
                    "sumw2": self.sumw2[k],
                }
                for k in self.counts
            ]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Iterable[Mapping[str, Any]]]) -> CutFlow:
        """Inverse of :meth:`to_dict`."""
        out = cls()
        for row in data["steps"]:
            out.counts[row["step"]] = int(row["count"])
            out.sumw[row["step"]] = float(row["sumw"])
            out.sumw2[row["step"]] = float(row["sumw2"])
        return out

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title="cut-flow (jets)")
        for col in ("step", "jets", "Σw", "fraction"):
            table.add_column(col, justify="left" if col == "step" else "right")
        eff = self.efficiencies()
        for k in self.counts:
            table.add_row(
                k, str(self.counts[k]), f"{self.sumw[k]:.6g}", f"{eff[k]:.4f}"
            )
        return table

"""Scale and resolution per bin, and the closure test of a calibration."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import hist
import numpy as np

from ._binned import (
    ALL,
    Errors,
    effective_entries,
    method_index,
    quantiles,
    read_binned,
    scale_resolution,
    select_flavours,
)
from ._records import _Record
from .gaussian import _FAILED, GaussianFit, gaussian_core_fit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResponseBin:
    """Scale and resolution of one (method, flavour, |η|, pT_gen) bin. pT in GeV."""

    method: str
    flavour: str
    abs_eta: tuple[float, float]
    pt_gen: tuple[float, float]
    n_eff: float
    sumw: float
    median: float
    median_err: float
    resolution: float
    resolution_err: float
    gauss: GaussianFit

    @property
    def gauss_resolution(self) -> float:
        """σ/μ of the Gaussian core fit (NaN if the fit failed or was not run)."""
        return self.gauss.resolution


@dataclass
class ResponseTable(_Record):
    """Scale and resolution per bin (see :func:`response_table`)."""

    bins: list[ResponseBin] = field(default_factory=list)
    errors: str = "bootstrap"
    title = "response"
    _columns = (
        "method",
        "flavour",
        "abs_eta",
        "pt_gen",
        "n_eff",
        "median",
        "median_err",
        "resolution",
        "resolution_err",
        "gauss_resolution",
    )

    def get(
        self,
        method: str,
        flavour: str,
        abs_eta: tuple[float, float],
        pt_gen: tuple[float, float],
    ) -> ResponseBin:
        """The bin with these labels (edges compared to 1e-9)."""
        for b in self.bins:
            if (
                b.method == method
                and b.flavour == flavour
                and np.allclose(b.abs_eta, abs_eta)
                and np.allclose(b.pt_gen, pt_gen)
            ):
                return b
        msg = f"no bin {method}/{flavour}/|eta| {abs_eta}/pT {pt_gen} in the table"
        raise KeyError(msg)


def response_table(
    h: hist.Hist,
    *,
    methods: Sequence[str] | None = None,
    flavours: Sequence[str] | None = None,
    abs_eta_edges: Sequence[float] | None = None,
    pt_edges: Sequence[float] | None = None,
    errors: Errors = "bootstrap",
    n_boot: int = 200,
    seed: int = 0,
    fit: bool = True,
    min_fit_jets: float = 50.0,
) -> ResponseTable:
    """Median, IQR/median and the Gaussian-core σ/μ for every bin of a response histogram.

    Parameters
    ----------
    h
        Response histogram (:func:`jec_coffea.histograms.response_histogram`).
    methods, flavours
        Subsets to report (default all; flavour ``"all"`` sums every category; default is every
        category plus ``"all"``).
    abs_eta_edges, pt_edges
        Coarser edges (a subset of the histogram's) to merge bins onto; default the histogram's.
    errors, n_boot, seed
        Uncertainty method of median and IQR/median (module docstring).
    fit, min_fit_jets
        Run the Gaussian-core fit where N_eff >= ``min_fit_jets``.
    """
    b = read_binned(h, abs_eta_edges=abs_eta_edges, pt_edges=pt_edges)
    methods = list(b.methods if methods is None else methods)
    flavours = list([*b.flavours, ALL] if flavours is None else flavours)
    mi = [method_index(b, m, "response_table") for m in methods]
    values, variances = select_flavours(b, flavours, "response_table")
    values, variances = values[mi], variances[mi]
    med, med_err, res, res_err = scale_resolution(
        values, variances, b.lo, b.hi, errors, n_boot, seed
    )
    n_eff = effective_entries(values, variances)
    sumw = values.sum(axis=-1)
    r_edges = np.concatenate([b.lo[1:-1], b.hi[-2:-1]])
    q = quantiles(values, b.lo, b.hi, (0.25, 0.75))
    out = ResponseTable(errors=errors)
    for idx in np.ndindex(*values.shape[:-1]):
        im, jf, ie, ip = idx
        g = _FAILED
        if fit and n_eff[idx] >= min_fit_jets:
            g = gaussian_core_fit(
                values[idx][1:-1],
                variances[idx][1:-1],
                r_edges,
                mu0=float(med[idx]),
                sigma0=float((q[idx][1] - q[idx][0]) / 1.349),
            )
        out.bins.append(
            ResponseBin(
                methods[im],
                flavours[jf],
                (float(b.eta_edges[ie]), float(b.eta_edges[ie + 1])),
                (float(b.pt_edges[ip]), float(b.pt_edges[ip + 1])),
                float(n_eff[idx]),
                float(sumw[idx]),
                float(med[idx]),
                float(med_err[idx]),
                float(res[idx]),
                float(res_err[idx]),
                g,
            )
        )
    return out


@dataclass(frozen=True)
class ClosureBin:
    """Median response of the calibrated jets in one (|η|, pT_gen) bin against the tolerance."""

    abs_eta: tuple[float, float]
    pt_gen: tuple[float, float]
    n_eff: float
    median: float
    median_err: float
    tolerance: float
    tested: bool
    passed: bool


@dataclass
class ClosureTable(_Record):
    """Closure of one method; ``failing`` lists the tested bins outside the tolerance."""

    method: str = "standard"
    flavour: str = ALL
    bins: list[ClosureBin] = field(default_factory=list)
    title = "closure"
    _columns = (
        "abs_eta",
        "pt_gen",
        "n_eff",
        "median",
        "median_err",
        "tolerance",
        "tested",
        "passed",
    )

    @property
    def failing(self) -> list[ClosureBin]:
        return [b for b in self.bins if b.tested and not b.passed]

    @property
    def passed(self) -> bool:
        """True if every tested bin closes."""
        return not self.failing


def closure_table(
    h: hist.Hist,
    method: str = "standard",
    *,
    flavour: str = ALL,
    min_jets: float = 500.0,
    tolerance: float = 0.01,
    low_pt_tolerance: float = 0.02,
    low_pt_below: float = 30.0,
    abs_eta_edges: Sequence[float] | None = None,
    pt_edges: Sequence[float] | None = None,
    errors: Errors = "bootstrap",
    n_boot: int = 200,
    seed: int = 0,
) -> ClosureTable:
    """Closure test: |median - 1| <= 1% (2% for pT_gen < 30 GeV) in bins with N_eff >= min_jets.

    Bins with fewer jets are listed with ``tested=False``. The statistical uncertainty of each
    median is reported alongside (it does not enter the pass/fail decision).
    """
    table = response_table(
        h,
        methods=[method],
        flavours=[flavour],
        abs_eta_edges=abs_eta_edges,
        pt_edges=pt_edges,
        errors=errors,
        n_boot=n_boot,
        seed=seed,
        fit=False,
    )
    out = ClosureTable(method=method, flavour=flavour)
    for r in table.bins:
        tol = low_pt_tolerance if r.pt_gen[0] < low_pt_below else tolerance
        tested = bool(r.n_eff >= min_jets and math.isfinite(r.median))
        out.bins.append(
            ClosureBin(
                r.abs_eta,
                r.pt_gen,
                r.n_eff,
                r.median,
                r.median_err,
                tol,
                tested,
                bool(tested and abs(r.median - 1.0) <= tol),
            )
        )
    logger.info(
        "closure of %s: %d bins tested, %d failing",
        method,
        sum(b.tested for b in out.bins),
        len(out.failing),
    )
    return out

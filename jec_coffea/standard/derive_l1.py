"""MC-truth L1FastJet: the pile-up offset per unit area, fitted against rho and pT.

What is fitted
--------------
The offset of a jet is the detector-level pT that pile-up adds to it. CMS measures it by
matching the same jets in samples simulated with and without pile-up. Our simulation knows it
per jet directly: it is the pile-up share of the jet's tower/candidate energy, stored in the
jet table as ``pt_offset_truth`` (GeV, NaN where unknown). The offset density
``offset / area`` is fitted in each (merged) |eta| bin with the form of CMS's
Summer19UL18_V5 AK4PFchs L1FastJet::

    offset / A = p1 * (rho - p0) * (1 + p2 * ln(pT_raw / 15 GeV))

and written with the header formula :data:`L1_FORMULA` (``x`` = Rho, ``y`` = JetPt = raw pT,
``z`` = JetA), so that the L1 factor is ``max(0.0001, 1 - offset / pT_raw)``.

The fit is binned: jets are grouped into cells of rho x pT_raw; in each cell the weighted mean
offset density and its standard error are formed, together with the cell means of rho,
``L = ln(pT_raw / 15)`` and ``rho * L``. Because the model is linear in (1, rho, L, rho L),
its cell average is exact in those means, so the chi2 fit on cells is unbiased however wide a
cell is. A bin gets as many cells (at most ``rho_bins x pt_bins``) as it fills with about
twice ``min_cell_jets`` each. Where the three-parameter fit fails the fit falls back to
``p2 = 0`` and then to ``p0 = p2 = 0``; with too few jets for any cell fit, ``p1`` is the
ratio of the bin's mean offset density to its mean rho (all logged, recorded as ``stage``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from .textfile import JecTextTable

__all__ = [
    "CMS_ABS_ETA_EDGES",
    "L1_FORMULA",
    "L1_VAR_RANGES",
    "L1BinFit",
    "L1Result",
    "constant_l1_table",
    "fit_l1",
    "l1_offset_density",
    "merge_abs_eta_bins",
    "mirrored_edges",
]

log = logging.getLogger(__name__)

L1_FORMULA = "max(0.0001,1-(z/y)*([1]*(x-[0])*(1.+[2]*log(y/15.))))"
"""Header formula of Summer19UL18_V5_MC_L1FastJet_AK4PFchs (x = Rho, y = JetPt, z = JetA)."""

L1_VAR_RANGES: tuple[tuple[float, float], ...] = (
    (0.0, 70.0),
    (0.0, 6500.0),
    (0.0, 10.0),
)
"""Validity ranges of Rho [GeV], JetPt [GeV] and JetA written in every record, as in UL18."""

CMS_ABS_ETA_EDGES: tuple[float, ...] = (
    0.0, 0.087, 0.174, 0.261, 0.348, 0.435, 0.522, 0.609, 0.696, 0.783, 0.879, 0.957,
    1.044, 1.131, 1.218, 1.305, 1.392, 1.479, 1.566, 1.653, 1.74, 1.83, 1.93, 2.043,
    2.172, 2.322, 2.5, 2.65, 2.853, 2.964, 3.139, 3.314, 3.489, 3.664, 3.839, 4.013,
    4.191, 4.363, 4.538, 4.716, 4.889, 5.191,
)  # fmt: skip
"""Positive half of the 82 CMS eta bins of the Summer19UL18 L1FastJet and L2Relative files."""

_STAGES: tuple[tuple[str, tuple[bool, bool, bool]], ...] = (
    ("rho0_slope_pt", (True, True, True)),
    ("rho0_slope", (True, True, False)),
    ("slope", (False, True, False)),
)
"""Fit stages, most to least flexible: which of (p0, p1, p2) are free (fixed ones are 0)."""


def merge_abs_eta_bins(
    abs_eta: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    min_jets: float = 500.0,
    edges: tuple[float, ...] = CMS_ABS_ETA_EDGES,
) -> np.ndarray:
    """Merge adjacent |eta| bins, from the centre outwards, until each holds ``min_jets``.

    Parameters
    ----------
    abs_eta
        (N,) |eta| of the jets used in the fit.
    weights
        (N,) weights; the threshold compares the effective count (sum w)^2 / sum w^2.
    min_jets
        Minimum effective number of jets per merged bin. A remainder at high |eta| that stays
        below it is merged into the last complete bin.
    edges
        Fine edges to merge (CMS's by default).

    Returns
    -------
    numpy.ndarray
        Merged edges, a subset of ``edges`` that keeps the first and the last.
    """
    e = np.asarray(edges, dtype=np.float64)
    w = np.ones_like(abs_eta) if weights is None else np.asarray(weights, np.float64)
    sw = np.histogram(abs_eta, e, weights=w)[0]
    sw2 = np.histogram(abs_eta, e, weights=w * w)[0]
    kept = [0]
    acc, acc2 = 0.0, 0.0
    for i in range(len(sw)):  # loop over the ~41 bins, not over jets
        acc, acc2 = acc + sw[i], acc2 + sw2[i]
        if acc2 > 0 and acc * acc / acc2 >= min_jets:
            kept.append(i + 1)
            acc, acc2 = 0.0, 0.0
    if kept[-1] != len(sw):
        if len(kept) > 1:
            kept[-1] = len(sw)
        else:
            kept.append(len(sw))
    return e[kept]


def mirrored_edges(abs_edges: np.ndarray) -> np.ndarray:
    """Signed edges ``[-e_n, ..., -e_1, 0, e_1, ..., e_n]`` of |eta| edges starting at 0."""
    a = np.asarray(abs_edges, dtype=np.float64)
    return np.concatenate([-a[:0:-1], a])


def l1_offset_density(params: np.ndarray, rho, pt_raw) -> np.ndarray:
    """Offset per unit area [GeV] of the UL18 form, ``p1 (rho - p0) (1 + p2 ln(pT/15))``."""
    p0, p1, p2 = np.asarray(params, dtype=np.float64)
    return p1 * (np.asarray(rho) - p0) * (1.0 + p2 * np.log(np.asarray(pt_raw) / 15.0))


@dataclass
class L1BinFit:
    """Fit of the offset density in one |eta| bin (applies to both signs of eta)."""

    abs_eta: tuple[float, float]
    n_jets: int
    n_cells: int
    stage: str
    """Which parameters were free (see module doc); ``"ratio"``: too few jets for cells,
    p1 = <offset/A> / <rho> with p0 = p2 = 0; ``"none"``: no jets (offset 0)."""
    params: list[float]
    """(p0, p1, p2): rho offset [GeV], slope [1], pT dependence [1]."""
    errors: list[float]
    chi2: float
    ndf: int
    rho_mean_offset: list[float] = field(default_factory=list)
    """Measured weighted mean offset / A [GeV] per rho bin of :attr:`L1Result.rho_edges`."""
    rho_mean_offset_err: list[float] = field(default_factory=list)
    rho_fit_offset: list[float] = field(default_factory=list)
    """Fitted offset / A averaged over the same jets, per rho bin."""


@dataclass
class L1Result:
    """The derived L1FastJet: one fit per merged |eta| bin and the text table."""

    abs_eta_edges: list[float]
    rho_edges: list[float]
    fits: list[L1BinFit]
    table: JecTextTable


def _cell_fit(R, L, RL, y, err, free):
    """chi2 fit of the cell means; returns params, errors, chi2 or None on failure."""
    from scipy.optimize import curve_fit

    # linear start: y = a + b rho + c L + d rho L, with b = p1, a = -p1 p0, d = p1 p2
    design = np.stack([np.ones_like(R), R, L, RL], axis=1) / err[:, None]
    coef = np.linalg.lstsq(design, y / err, rcond=None)[0]
    b = coef[1] if abs(coef[1]) > 1e-6 else 0.5
    start = np.array([-coef[0] / b, b, coef[3] / b])
    lo = np.array([-30.0, -5.0, -0.2])
    hi = np.array([60.0, 10.0, 1.0])
    mask = np.asarray(free)
    start = np.where(mask, np.clip(start, lo + 1e-3, hi - 1e-3), 0.0)

    def model(_x, *p):
        full = np.zeros(3)
        full[mask] = p
        p0, p1, p2 = full
        return p1 * (R + p2 * RL - p0 - p0 * p2 * L)

    try:
        popt, pcov = curve_fit(
            model,
            R,
            y,
            p0=start[mask],
            sigma=err,
            absolute_sigma=True,
            bounds=(lo[mask], hi[mask]),
            maxfev=20000,
        )
    except (RuntimeError, ValueError) as exc:
        log.debug("L1 fit stage failed: %s", exc)
        return None
    perr = np.sqrt(np.clip(np.diag(pcov), 0, None))
    if not (np.all(np.isfinite(popt)) and np.all(np.isfinite(perr))):
        return None
    params, errors = np.zeros(3), np.zeros(3)
    params[mask], errors[mask] = popt, perr
    chi2 = float(np.sum(((model(R, *popt) - y) / err) ** 2))
    return params, errors, chi2


def _cells(rho, pt, y, w, rho_edges, pt_edges, min_cell_jets):
    """Weighted cell means of rho, L, rho L and y, and the standard error of y."""
    nr, npt = len(rho_edges) - 1, len(pt_edges) - 1
    ir = np.clip(np.searchsorted(rho_edges, rho, side="right") - 1, 0, nr - 1)
    ip = np.clip(np.searchsorted(pt_edges, pt, side="right") - 1, 0, npt - 1)
    cell = ir * npt + ip
    n = nr * npt
    sw = np.bincount(cell, w, n)
    sw2 = np.bincount(cell, w * w, n)
    L = np.log(pt / 15.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = {
            k: np.bincount(cell, w * v, n) / sw
            for k, v in (("R", rho), ("L", L), ("RL", rho * L), ("y", y))
        }
        dev2 = np.bincount(cell, w * w * (y - mean["y"][cell]) ** 2, n)
        err = np.sqrt(dev2) / sw
        n_eff = sw * sw / sw2
    ok = (n_eff >= min_cell_jets) & (err > 0) & np.isfinite(err)
    return mean["R"][ok], mean["L"][ok], mean["RL"][ok], mean["y"][ok], err[ok]


def _quantile_edges(x: np.ndarray, n: int) -> np.ndarray:
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n + 1)))
    if len(edges) < 2:
        edges = np.array([x.min(), x.min() + 1.0])
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return edges


def fit_l1(
    eta: np.ndarray,
    pt_raw: np.ndarray,
    area: np.ndarray,
    rho: np.ndarray,
    offset: np.ndarray,
    weight: np.ndarray,
    *,
    min_jets: float = 500.0,
    rho_bins: int = 8,
    pt_bins: int = 6,
    min_cell_jets: float = 10.0,
) -> L1Result:
    """Fit the offset density per merged |eta| bin and build the L1FastJet table.

    Parameters
    ----------
    eta, pt_raw, area, rho
        (N,) jet eta, raw pT [GeV], area and event rho [GeV] of the jets used (selected,
        finite offset, area > 0).
    offset
        (N,) pile-up offset per jet [GeV] (``pt_offset_truth``).
    weight
        (N,) event weights (genWeight).
    min_jets
        Minimum effective jets per merged |eta| bin.
    rho_bins, pt_bins
        Number of rho and pT_raw cells (quantiles of the whole sample, common to all bins, so
        the offset-vs-rho summary has the same columns in every |eta| bin).
    min_cell_jets
        Cells with fewer effective jets are not used in the fit.

    Returns
    -------
    L1Result
        Fits, summary and the table (mirrored signed |eta| records, UL18 header and ranges).
    """
    abs_eta = np.abs(eta)
    y = offset / area
    abs_edges = merge_abs_eta_bins(abs_eta, weight, min_jets=min_jets)
    rho_edges = _quantile_edges(rho, rho_bins)
    pt_edges = _quantile_edges(pt_raw, pt_bins)
    which = np.clip(np.searchsorted(abs_edges, abs_eta, side="right") - 1, 0, None)
    fits: list[L1BinFit] = []
    for b in range(len(abs_edges) - 1):  # loop over merged |eta| bins
        sel = which == b
        rng = (float(abs_edges[b]), float(abs_edges[b + 1]))
        w_b = weight[sel]
        n_eff = float(w_b.sum() ** 2 / max((w_b * w_b).sum(), 1e-300))
        # as many cells as the bin fills with ~2 x min_cell_jets each, at most rho x pT bins
        k_r = int(min(rho_bins, max(1, np.sqrt(n_eff / (2 * min_cell_jets)))))
        k_p = int(min(pt_bins, max(1, n_eff / (2 * min_cell_jets) // k_r)))
        cells = _cells(
            rho[sel],
            pt_raw[sel],
            y[sel],
            w_b,
            rho_edges if k_r == rho_bins else _quantile_edges(rho[sel], k_r),
            pt_edges if k_p == pt_bins else _quantile_edges(pt_raw[sel], k_p),
            min_cell_jets,
        )
        result, stage = None, "none"
        for name, free in _STAGES:
            if len(cells[0]) <= sum(free):
                continue
            result = _cell_fit(*cells, free)
            if result is not None:
                stage = name
                break
            log.warning(
                "L1 fit |eta| %.3f-%.3f: stage %s failed, fewer free parameters next",
                *rng,
                name,
            )
        if result is None and w_b.sum() > 0 and np.any(rho[sel] > 0):
            # too few jets for cells: offset / A = p1 rho, p1 = <offset/A> / <rho>
            stage = "ratio"
            log.warning(
                "L1 fit |eta| %.3f-%.3f: no cell fit possible (%d cells); offset/A = p1 rho "
                "from the weighted means of the bin's %d jets",
                *rng,
                len(cells[0]),
                int(np.count_nonzero(sel)),
            )
            y_b, r_b = y[sel], rho[sel]
            p1 = float(np.sum(w_b * y_b) / np.sum(w_b * r_b))
            resid = y_b - p1 * r_b
            p1_err = float(np.sqrt(np.sum(w_b**2 * resid**2)) / np.sum(w_b * r_b))
            params, errors, chi2 = (
                np.array([0.0, p1, 0.0]),
                np.array([0, p1_err, 0]),
                math.nan,
            )
        elif result is None:
            log.warning("L1 fit |eta| %.3f-%.3f: no jets; offset set to 0", *rng)
            params, errors, chi2 = np.zeros(3), np.zeros(3), math.nan
        else:
            params, errors, chi2 = result
        n_free = int(np.count_nonzero(dict(_STAGES).get(stage, ())))
        ndf = len(cells[0]) - n_free if n_free else 0
        fit = L1BinFit(
            abs_eta=rng,
            n_jets=int(np.count_nonzero(sel)),
            n_cells=len(cells[0]),
            stage=stage,
            params=[float(v) for v in params],
            errors=[float(v) for v in errors],
            chi2=float(chi2),
            ndf=int(ndf),
        )
        _rho_summary(fit, rho[sel], pt_raw[sel], y[sel], weight[sel], rho_edges)
        fits.append(fit)
        log.info(
            "L1 |eta| %.3f-%.3f: %d jets, p0=%.3f p1=%.4f p2=%.4f chi2/ndf=%.1f/%d (%s)",
            *rng,
            fit.n_jets,
            *fit.params,
            fit.chi2,
            fit.ndf,
            stage,
        )
    table = _table(abs_edges, np.array([f.params for f in fits]))
    return L1Result(
        abs_eta_edges=[float(e) for e in abs_edges],
        rho_edges=[float(e) for e in rho_edges],
        fits=fits,
        table=table,
    )


def _rho_summary(fit, rho, pt, y, w, rho_edges) -> None:
    """Fill the measured and fitted mean offset density per rho bin (for the printed table)."""
    n = len(rho_edges) - 1
    ir = np.clip(np.searchsorted(rho_edges, rho, side="right") - 1, 0, n - 1)
    pred = l1_offset_density(np.array(fit.params), rho, pt)
    sw = np.bincount(ir, w, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(ir, w * y, n) / sw
        err = np.sqrt(np.bincount(ir, w * w * (y - mean[ir]) ** 2, n)) / sw
        fitted = np.bincount(ir, w * pred, n) / sw
    fit.rho_mean_offset = mean.tolist()
    fit.rho_mean_offset_err = err.tolist()
    fit.rho_fit_offset = fitted.tolist()


def _f32(x: np.ndarray) -> np.ndarray:
    """Round to float32 precision (CMSSW holds parameters as float), shortest repr kept."""
    return np.asarray(x, dtype=np.float32).astype(str).astype(np.float64)


def _records(abs_edges: np.ndarray, per_bin: np.ndarray) -> tuple[np.ndarray, ...]:
    """Signed records (lo, hi, row of ``per_bin``) mirrored around eta = 0, in eta order."""
    n = len(abs_edges) - 1
    signed = mirrored_edges(abs_edges)
    rows = np.concatenate([np.arange(n)[::-1], np.arange(n)])
    return signed[:-1], signed[1:], per_bin[rows]


def _table(abs_edges: np.ndarray, params: np.ndarray) -> JecTextTable:
    lo, hi, p = _records(abs_edges, _f32(params))
    ranges = np.array(L1_VAR_RANGES)
    return JecTextTable(
        bin_vars=("JetEta",),
        par_vars=("Rho", "JetPt", "JetA"),
        formula=L1_FORMULA,
        level="L1FastJet",
        bin_lo=lo[:, None],
        bin_hi=hi[:, None],
        var_lo=np.broadcast_to(ranges[:, 0], (len(lo), 3)),
        var_hi=np.broadcast_to(ranges[:, 1], (len(lo), 3)),
        params=p,
    )


def constant_l1_table() -> JecTextTable:
    """An L1FastJet that is 1 everywhere, as CMS writes it for PUPPI jets (formula ``1``).

    Used when no per-jet offset truth exists: L2Relative then absorbs the mean offset.
    """
    edge = CMS_ABS_ETA_EDGES[-1]
    ranges = np.array(L1_VAR_RANGES)
    return JecTextTable(
        bin_vars=("JetEta",),
        par_vars=("Rho", "JetPt", "JetA"),
        formula="1",
        level="L1FastJet",
        bin_lo=np.array([[-edge]]),
        bin_hi=np.array([[edge]]),
        var_lo=ranges[None, :, 0],
        var_hi=ranges[None, :, 1],
        params=np.zeros((1, 0)),
    )

"""MC-truth L2Relative: inverse median response per |eta| bin, fitted in pT with CMS's form.

For jets already corrected by L1FastJet (pT_L1), in each merged |eta| bin (CMS edges, merged
where fewer than ``min_jets`` jets, see :func:`~.derive_l1.merge_abs_eta_bins`) and each
pT_gen bin (the DESIGN.md edges), the weighted median of R = pT_L1 / pT_gen and the weighted
median of pT_L1 form one point (x = median pT_L1, y = 1 / median R). The points are fitted
with the "standard + Gaussian" formula of CMS's analytic L2Relative files, in the syntax of the
shipped Summer19UL18 file (:data:`L2_FORMULA`)::

    f(x) = p0 + p1 / (log10(x)^2 + p2) + p3 exp(-p4 (log10(x) - p5)^2)

with x the JetPt that CMS files take, i.e. the pT after L1. Because corrected pT = x f(x) is
monotonic in x, the median of the corrected response in a pT_gen bin is f(median x) times the
median L1 response, so the fit of medians closes the median response by construction.

The fit is a chi2 fit (scipy ``curve_fit``) with the uncertainty of each median,
1.2533 sigma / sqrt(N_eff) with sigma = IQR / 1.349. Starts and bounds keep the pole of
``1 / (log10(x)^2 + p2)`` outside the fitted range. The standard form (p3 = 0) is fitted
first and seeds the full fit, which is kept if it lowers chi2 by more than the 95% quantile of
chi2 with three degrees of freedom. Where fits fail (or there are too few points for them) the
fit falls back to fewer free parameters (p0 + p1 / log10(x)^2, then a constant), logged and
recorded as the fit's ``stage``. An |eta| bin without any populated pT_gen bin gets one point
from all its jets. Each record's JetPt range is the fitted range; CMS's corrector clamps pT to
it, so the correction is constant outside.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from .derive_l1 import _f32, _records, merge_abs_eta_bins
from .textfile import JecTextTable

__all__ = [
    "L2_FORMULA",
    "L2BinFit",
    "L2Point",
    "L2Result",
    "fit_l2",
    "grouped_quantiles",
    "l2_function",
]

log = logging.getLogger(__name__)

L2_FORMULA = (
    "max(0.0001,pow(x,0)*([0]+([1]/(pow(log10(x),2)+[2]))"
    "+([3]*exp(-([4]*((log10(x)-[5])*(log10(x)-[5])))))))"
)
"""CMS's analytic L2Relative formula (standard + Gaussian) in the Summer19UL18 syntax."""

_STAGES: tuple[tuple[str, tuple[bool, ...], int], ...] = (
    ("full", (True, True, True, True, True, True), 8),
    ("no_gauss", (True, True, True, False, False, False), 5),
    ("log_only", (True, True, False, False, False, False), 4),
    ("constant", (True, False, False, False, False, False), 1),
)
"""Fit stages, most to least flexible: (name, free parameters, minimum number of points).
Fixed parameters keep their neutral value (p2 = 0, p3 = p4 = p5 = 0; p1 = 0 for a constant)."""


def l2_function(params, pt) -> np.ndarray:
    """Evaluate :data:`L2_FORMULA` on pT after L1 [GeV] (no clamping; vectorised)."""
    p = np.asarray(params, dtype=np.float64)
    lx = np.log10(np.asarray(pt, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        val = p[0] + p[1] / (lx * lx + p[2]) + p[3] * np.exp(-p[4] * (lx - p[5]) ** 2)
    return np.maximum(0.0001, val)


def grouped_quantiles(
    group: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    n_groups: int,
    qs: tuple[float, ...],
) -> np.ndarray:
    """Weighted quantiles of ``values`` within each group, columnar (one sort, no loop).

    The quantile q of a group is the smallest value whose cumulative weight within the group
    reaches q times the group's total weight.

    Parameters
    ----------
    group
        (N,) int group index in [0, n_groups).
    values, weights
        (N,) values and non-negative weights.
    n_groups
        Number of groups.
    qs
        Quantiles in (0, 1).

    Returns
    -------
    numpy.ndarray
        (len(qs), n_groups); NaN for empty groups.
    """
    out = np.full((len(qs), n_groups), np.nan)
    if len(values) == 0:
        return out
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    cw = np.cumsum(weights[order])
    totals = np.bincount(g, weights[order], n_groups)
    before = np.concatenate([[0.0], np.cumsum(totals)[:-1]])
    first = np.searchsorted(g, np.arange(n_groups), side="left")
    last = np.searchsorted(g, np.arange(n_groups), side="right") - 1
    ok = (last >= first) & (totals > 0)
    for i, q in enumerate(qs):  # loop over the few quantiles only
        idx = np.searchsorted(cw, before + q * totals, side="left")
        idx = np.clip(idx, first, np.maximum(last, first))
        out[i, ok] = v[idx[ok]]
    return out


@dataclass
class L2Point:
    """One (|eta|, pT_gen) bin entering the fit."""

    pt_gen: tuple[float, float]
    n_eff: float
    median_response: float
    median_response_err: float
    median_pt_l1: float


@dataclass
class L2BinFit:
    """Fit of 1 / median response against median pT_L1 in one |eta| bin (both signs)."""

    abs_eta: tuple[float, float]
    n_jets: int
    stage: str
    """Which parameters were free (see module doc)."""
    params: list[float]
    errors: list[float]
    chi2: float
    ndf: int
    pt_range: tuple[float, float]
    """Fitted JetPt range [GeV] = the record's JetPt validity range."""
    points: list[L2Point] = field(default_factory=list)
    failed_stages: list[str] = field(default_factory=list)


@dataclass
class L2Result:
    """The derived L2Relative: one fit per merged |eta| bin and the text table."""

    abs_eta_edges: list[float]
    pt_gen_edges: list[float]
    fits: list[L2BinFit]
    table: JecTextTable


def _start_and_bounds(x: np.ndarray, y: np.ndarray):
    lx = np.log10(x)
    lmin = float(lx.min())
    p0 = float(y[-1])
    p2 = 1.0
    p1 = float((y[0] - p0) * (lmin * lmin + p2))
    start = np.array([p0, p1, p2, 0.01, 1.0, float(lx.mean())])
    lo = np.array([0.05, -200.0, -0.9 * lmin * lmin, -3.0, 0.0, lmin - 1.0])
    hi = np.array([20.0, 200.0, 100.0, 3.0, 100.0, float(lx.max()) + 1.0])
    return np.clip(start, lo + 1e-6, hi - 1e-6), lo, hi


def _jacobian(params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(len(x), 6) derivatives of :func:`l2_function` (inside the max) by p0..p5."""
    _, p1, p2, p3, p4, p5 = params
    lx = np.log10(x)
    den = lx * lx + p2
    gauss = np.exp(-p4 * (lx - p5) ** 2)
    return np.stack(
        [
            np.ones_like(lx),
            1.0 / den,
            -p1 / den**2,
            gauss,
            -p3 * (lx - p5) ** 2 * gauss,
            2.0 * p3 * p4 * (lx - p5) * gauss,
        ],
        axis=1,
    )


def _fit_stage(x, y, err, free, start, lo, hi):
    """chi2 fit with the parameters ``free``; ((params, errors, chi2), "") or (None, reason)."""
    from scipy.optimize import curve_fit

    mask = np.asarray(free)

    def full(p):
        out = start.copy()
        out[~mask] = 0.0
        out[mask] = p
        return out

    def model(xx, *p):
        return l2_function(full(np.asarray(p)), xx)

    def jac(xx, *p):
        return _jacobian(full(np.asarray(p)), xx)[:, mask]

    try:
        popt, pcov = curve_fit(
            model,
            x,
            y,
            p0=start[mask],
            sigma=err,
            absolute_sigma=True,
            bounds=(lo[mask], hi[mask]),
            jac=jac,
            max_nfev=5000,
        )
    except (RuntimeError, ValueError) as exc:
        return None, str(exc).splitlines()[0]
    perr = np.sqrt(np.clip(np.diag(pcov), 0, None))
    params = full(popt)
    grid = np.geomspace(x.min(), x.max(), 64)
    curve = l2_function(params, grid)
    if not (np.all(np.isfinite(popt)) and np.all(np.isfinite(perr))):
        return None, "non-finite parameters or covariance"
    if not (np.all(np.isfinite(curve)) and curve.min() > 0.05 and curve.max() < 20):
        return None, (
            f"curve leaves (0.05, 20) in the fitted range: {curve.min():.3g}-{curve.max():.3g}"
        )
    errors = np.zeros(6)
    errors[mask] = perr
    chi2 = float(np.sum(((model(x, *popt) - y) / err) ** 2))
    return (params, errors, chi2), ""


_GAUSS_DCHI2 = 7.81
"""chi2 decrease (95% quantile of chi2 with 3 degrees of freedom) that the Gaussian term's three
extra parameters must bring to be kept over the plain standard form."""


def _fit_points(x, y, err, rng):
    """Fit one bin through the stages; returns (stage, params, errors, chi2, ndf, failed).

    The standard form (no Gaussian) is fitted first and seeds the full fit; the full fit is
    kept if it converges and lowers chi2 by more than :data:`_GAUSS_DCHI2`. Otherwise, and
    where fits fail, fewer parameters are freed, down to a constant.
    """
    order = np.argsort(x)
    x, y, err = x[order], y[order], err[order]
    start, lo, hi = _start_and_bounds(x, y)
    stages = {name: (np.asarray(free), n_min) for name, free, n_min in _STAGES}
    failed: list[str] = []
    fits: dict[str, tuple] = {}

    def attempt(name: str, seed: np.ndarray) -> None:
        free, n_min = stages[name]
        if len(x) < n_min:
            return
        result, why = _fit_stage(x, y, err, free, seed, lo, hi)
        if result is None:
            failed.append(name)
            log.warning(
                "L2 fit |eta| %.3f-%.3f: stage %s failed (%s); fewer free parameters next",
                *rng,
                name,
                why,
            )
        else:
            fits[name] = result

    attempt("no_gauss", start)
    seed = start.copy()
    if "no_gauss" in fits:
        seed[:3] = np.clip(fits["no_gauss"][0][:3], lo[:3] + 1e-6, hi[:3] - 1e-6)
    attempt("full", seed)
    chosen = None
    if "full" in fits and (
        "no_gauss" not in fits or fits["no_gauss"][2] - fits["full"][2] > _GAUSS_DCHI2
    ):
        chosen = "full"
    elif "no_gauss" in fits:
        chosen = "no_gauss"
    else:
        attempt("log_only", start)
        if "log_only" in fits:
            chosen = "log_only"
    if chosen is not None:
        params, errors, chi2 = fits[chosen]
        return (
            chosen,
            params,
            errors,
            chi2,
            len(x) - int(stages[chosen][0].sum()),
            failed,
        )
    w = 1.0 / err**2
    p0 = float(np.sum(w * y) / np.sum(w))
    params = np.array([p0, 0, 0, 0, 0, 0], dtype=np.float64)
    errors = np.array([1.0 / math.sqrt(np.sum(w)), 0, 0, 0, 0, 0])
    chi2 = float(np.sum(w * (y - p0) ** 2))
    log.warning("L2 fit |eta| %.3f-%.3f: constant correction %.4f", *rng, p0)
    return "constant", params, errors, chi2, len(x) - 1, failed


def fit_l2(
    eta: np.ndarray,
    pt_gen: np.ndarray,
    pt_l1: np.ndarray,
    weight: np.ndarray,
    *,
    pt_gen_edges: tuple[float, ...],
    min_jets: float = 500.0,
    min_point_jets: float = 30.0,
) -> L2Result:
    """Derive L2Relative from L1-corrected matched jets.

    Parameters
    ----------
    eta
        (N,) reconstructed jet eta (the JetEta binning variable of the correction).
    pt_gen
        (N,) matched GenJet pT [GeV].
    pt_l1
        (N,) jet pT after the derived L1FastJet [GeV].
    weight
        (N,) event weights (genWeight).
    pt_gen_edges
        pT_gen bin edges [GeV] of the points.
    min_jets
        Minimum effective jets per merged |eta| bin.
    min_point_jets
        Minimum effective jets for a (|eta|, pT_gen) bin to become a point.

    Returns
    -------
    L2Result
        Fits and the table (mirrored signed records, JetPt range = fitted range).
    """
    abs_eta = np.abs(eta)
    abs_edges = merge_abs_eta_bins(abs_eta, weight, min_jets=min_jets)
    pt_edges = np.asarray(pt_gen_edges, dtype=np.float64)
    nb, npt = len(abs_edges) - 1, len(pt_edges) - 1
    ie = np.clip(np.searchsorted(abs_edges, abs_eta, side="right") - 1, 0, nb - 1)
    ip = np.searchsorted(pt_edges, pt_gen, side="right") - 1
    inside = (ip >= 0) & (ip < npt) & (abs_eta < abs_edges[-1])
    cell = (ie * npt + ip)[inside]
    w = weight[inside]
    n = nb * npt
    response = (pt_l1 / pt_gen)[inside]
    q_r = grouped_quantiles(cell, response, w, n, (0.25, 0.5, 0.75))
    med_pt = grouped_quantiles(cell, pt_l1[inside], w, n, (0.5,))[0]
    sw, sw2 = np.bincount(cell, w, n), np.bincount(cell, w * w, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        n_eff = sw * sw / sw2
        sigma = (q_r[2] - q_r[0]) / 1.349
        med_err = 1.2533 * sigma / np.sqrt(n_eff)
    usable = (n_eff >= min_point_jets) & (med_err > 0) & np.isfinite(q_r[1])
    usable = usable.reshape(nb, npt)
    # fallback statistics over whole |eta| bins: (response, pT_L1) x (Q25, Q50, Q75) x bins
    group = ie[inside]
    whole = np.stack(
        [
            grouped_quantiles(group, response, w, nb, (0.25, 0.5, 0.75)),
            grouped_quantiles(group, pt_l1[inside], w, nb, (0.25, 0.5, 0.75)),
        ]
    )
    gw, gw2 = np.bincount(group, w, nb), np.bincount(group, w * w, nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        whole_n_eff = gw * gw / gw2
        whole_err = 1.2533 * (whole[0, 2] - whole[0, 0]) / 1.349 / np.sqrt(whole_n_eff)
    whole = np.nan_to_num(whole, nan=0.0)
    fits: list[L2BinFit] = []
    for b in range(nb):  # loop over merged |eta| bins
        rng = (float(abs_edges[b]), float(abs_edges[b + 1]))
        cells = b * npt + np.flatnonzero(usable[b])
        points = [
            L2Point(
                pt_gen=(float(pt_edges[c % npt]), float(pt_edges[c % npt + 1])),
                n_eff=float(n_eff[c]),
                median_response=float(q_r[1, c]),
                median_response_err=float(med_err[c]),
                median_pt_l1=float(med_pt[c]),
            )
            for c in cells
        ]
        n_jets = int(np.count_nonzero(ie[inside] == b))
        if not points and whole[0, 1, b] > 0:
            # no pT_gen bin is populated enough: one point from all jets of the |eta| bin
            log.warning(
                "L2 fit |eta| %.3f-%.3f: no pT_gen bin with %g jets; one point from all "
                "%d jets of the bin",
                *rng,
                min_point_jets,
                n_jets,
            )
            x, r, rerr = (
                whole[1, 0, b : b + 1],
                whole[0, 1, b : b + 1],
                whole_err[b : b + 1],
            )
            points = [
                L2Point(
                    pt_gen=(float(pt_edges[0]), float(pt_edges[-1])),
                    n_eff=float(whole_n_eff[b]),
                    median_response=float(r[0]),
                    median_response_err=float(rerr[0]),
                    median_pt_l1=float(x[0]),
                )
            ]
        elif points:
            x, r, rerr = med_pt[cells], q_r[1, cells], med_err[cells]
        else:
            log.warning("L2 fit |eta| %.3f-%.3f: no jets; correction set to 1", *rng)
            fits.append(
                L2BinFit(
                    abs_eta=rng,
                    n_jets=n_jets,
                    stage="none",
                    params=[1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                    errors=[0.0] * 6,
                    chi2=math.nan,
                    ndf=0,
                    pt_range=(10.0, 6500.0),
                )
            )
            continue
        if not np.all(rerr > 0):  # a single jet, or identical responses
            rerr = np.where(rerr > 0, rerr, 0.01 * r)
        y, err = 1.0 / r, rerr / r**2
        stage, params, errors, chi2, ndf, failed = _fit_points(x, y, err, rng)
        fit = L2BinFit(
            abs_eta=rng,
            n_jets=n_jets,
            stage=stage,
            params=[float(v) for v in params],
            errors=[float(v) for v in errors],
            chi2=chi2,
            ndf=int(ndf),
            pt_range=(float(x.min()), float(x.max())),
            points=points,
            failed_stages=failed,
        )
        fits.append(fit)
        log.info(
            "L2 |eta| %.3f-%.3f: %d points, pT_L1 %.1f-%.1f GeV, chi2/ndf=%.1f/%d (%s)",
            *rng,
            len(points),
            *fit.pt_range,
            fit.chi2,
            fit.ndf,
            stage,
        )
    return L2Result(
        abs_eta_edges=[float(e) for e in abs_edges],
        pt_gen_edges=[float(e) for e in pt_edges],
        fits=fits,
        table=_table(abs_edges, fits),
    )


def _table(abs_edges: np.ndarray, fits: list[L2BinFit]) -> JecTextTable:
    per_bin = np.array([[*f.pt_range, *f.params] for f in fits])
    lo, hi, rows = _records(abs_edges, _f32(per_bin))
    return JecTextTable(
        bin_vars=("JetEta",),
        par_vars=("JetPt",),
        formula=L2_FORMULA,
        level="L2Relative",
        bin_lo=lo[:, None],
        bin_hi=hi[:, None],
        var_lo=rows[:, 0:1],
        var_hi=rows[:, 1:2],
        params=rows[:, 2:],
    )

"""Iterative Gaussian fit of the response core (CMS JEC/JER convention)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GaussianFit:
    """Result of the iterative Gaussian core fit (NaN fields and ``ok=False`` if it failed)."""

    mu: float
    mu_err: float
    sigma: float
    sigma_err: float
    resolution: float
    resolution_err: float
    ok: bool


_FAILED = GaussianFit(*(math.nan,) * 6, ok=False)


def _gauss(x, a, mu, sigma):
    return a * np.exp(-0.5 * ((x - mu) / sigma) ** 2)


def gaussian_core_fit(
    values: np.ndarray,
    variances: np.ndarray,
    edges: np.ndarray,
    *,
    mu0: float,
    sigma0: float,
    n_sigma: float = 1.5,
    n_iter: int = 3,
    min_bins: int = 4,
) -> GaussianFit:
    """Iterative χ² Gaussian fit of the response core, as in CMS JEC/JER derivations.

    Parameters
    ----------
    values, variances
        Bin contents and their variances (sum of w²), shape (n,), without flow bins.
    edges
        Bin edges, shape (n + 1,).
    mu0, sigma0
        Starting centre and width (median and IQR/1.349).
    n_sigma, n_iter
        Fit range μ ± n_sigma·σ; ``n_iter`` fits, each in the range of the previous result.
    min_bins
        Minimum of non-empty bins in the range, else the fit fails (``ok=False``).
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    if not (np.isfinite(mu0) and np.isfinite(sigma0) and sigma0 > 0):
        return _FAILED
    centres = 0.5 * (edges[:-1] + edges[1:])
    mu, sigma, popt, pcov = mu0, sigma0, None, None
    for _ in range(n_iter):
        sel = (
            (np.abs(centres - mu) <= n_sigma * sigma) & (values != 0) & (variances > 0)
        )
        if np.count_nonzero(sel) < min_bins:
            return _FAILED
        y, err = values[sel], np.sqrt(variances[sel])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, pcov = curve_fit(
                    _gauss,
                    centres[sel],
                    y,
                    p0=(y.max(), mu, sigma),
                    sigma=err,
                    absolute_sigma=True,
                    maxfev=5000,
                )
        except (RuntimeError, ValueError):
            return _FAILED
        mu, sigma = float(popt[1]), abs(float(popt[2]))
        if not (np.all(np.isfinite(pcov)) and sigma > 0 and edges[0] < mu < edges[-1]):
            return _FAILED
    mu_err, sigma_err = math.sqrt(pcov[1, 1]), math.sqrt(pcov[2, 2])
    r = sigma / mu
    cov_ms = pcov[1, 2] * np.sign(popt[2])
    r_err = abs(r) * math.sqrt(
        max(
            (sigma_err / sigma) ** 2 + (mu_err / mu) ** 2 - 2 * cov_ms / (mu * sigma),
            0.0,
        )
    )
    return GaussianFit(mu, mu_err, sigma, sigma_err, r, r_err, ok=True)

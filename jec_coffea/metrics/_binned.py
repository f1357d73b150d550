"""Histogram access and binned quantile statistics: quantiles, bootstrap, analytic errors."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import hist
import numpy as np

from ..errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_FLAVOURS: tuple[str, ...] = ("uds", "c", "b", "g")
"""Groups entering S (the S_6 histogram uses u, d, s, c, b, g)."""

ALL = "all"
"""Flavour name meaning the sum over every flavour category of the histogram."""

Errors = Literal["bootstrap", "analytic"]
"""Uncertainty methods of quantile-based figures (see the package docstring)."""

_AXES = ("method", "flavour", "abs_eta", "pt_gen", "response")


@dataclass
class Binned:
    """Contents of a response histogram as arrays, ready for the vectorised statistics.

    ``values``/``variances`` have shape (method, flavour, abs_eta, pt_gen, response + 2): no
    flow bins on the binning axes, both flow bins on the response axis. ``lo``/``hi`` are the
    response limits of each of those bins; the underflow is the point 0 and the overflow the
    point 3 (upper axis edge), so a quantile falling in a flow bin is reported at that edge.
    """

    values: np.ndarray
    variances: np.ndarray
    methods: list[str]
    flavours: list[str]
    eta_edges: np.ndarray
    pt_edges: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def edges_index(fine: np.ndarray, coarse: Sequence[float], axis: str) -> np.ndarray:
    """Positions of ``coarse`` edges among ``fine`` ones; ConfigError naming the axis if absent."""
    idx = [int(np.argmin(np.abs(fine - e))) for e in coarse]
    bad = [
        e
        for e, i in zip(coarse, idx, strict=True)
        if not math.isclose(fine[i], e, abs_tol=1e-9)
    ]
    if bad or len(coarse) < 2 or np.any(np.diff(idx) <= 0):
        msg = f"cannot merge axis {axis!r} onto edges {list(coarse)}: every edge must be one of {fine.tolist()} (increasing)"
        raise ConfigError(msg)
    return np.asarray(idx)


def merge(
    arr: np.ndarray,
    ax: int,
    fine: np.ndarray,
    coarse: Sequence[float] | None,
    name: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum the bins of axis ``ax`` onto ``coarse`` edges (a subset of ``fine``); (array, edges)."""
    if coarse is None:
        return arr, fine
    idx = edges_index(fine, coarse, name)
    part = np.take(arr, np.arange(idx[0], idx[-1]), axis=ax)
    return np.add.reduceat(part, idx[:-1] - idx[0], axis=ax), np.asarray(coarse, float)


def read_binned(
    h: hist.Hist,
    *,
    abs_eta_edges: Sequence[float] | None = None,
    pt_edges: Sequence[float] | None = None,
) -> Binned:
    """Read the histogram (without flow on the binning axes) and merge onto coarser edges."""
    if tuple(h.axes.name) != _AXES:
        msg = f"expected a response histogram with axes {_AXES}, got {tuple(h.axes.name)}; build it with jec_coffea.histograms.response_histogram"
        raise ConfigError(msg)
    view = h.view(flow=True)
    if view.dtype.names is None or "variance" not in view.dtype.names:
        msg = "response histogram must have Weight storage (value and variance per bin)"
        raise ConfigError(msg)
    sl = []
    for ax in h.axes[:-1]:
        traits = ax.traits
        sl.append(slice(1 if traits.underflow else 0, -1 if traits.overflow else None))
    sl.append(slice(None))
    values = np.asarray(view["value"][tuple(sl)], dtype=np.float64)
    variances = np.asarray(view["variance"][tuple(sl)], dtype=np.float64)
    eta = np.asarray(h.axes["abs_eta"].edges)
    pt = np.asarray(h.axes["pt_gen"].edges)
    values, _ = merge(values, 2, eta, abs_eta_edges, "abs_eta")
    variances, eta = merge(variances, 2, eta, abs_eta_edges, "abs_eta")
    values, _ = merge(values, 3, pt, pt_edges, "pt_gen")
    variances, pt = merge(variances, 3, pt, pt_edges, "pt_gen")
    r = np.asarray(h.axes["response"].edges)
    lo = np.concatenate([[r[0]], r[:-1], [r[-1]]])
    hi = np.concatenate([[r[0]], r[1:], [r[-1]]])
    return Binned(
        values,
        variances,
        list(h.axes["method"]),
        list(h.axes["flavour"]),
        eta,
        pt,
        lo,
        hi,
    )


def select_flavours(
    b: Binned, flavours: Sequence[str], what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Stack the requested flavours (``"all"`` = sum over categories) on axis 1."""
    out_v, out_w = [], []
    for f in flavours:
        if f == ALL:
            out_v.append(b.values.sum(axis=1))
            out_w.append(b.variances.sum(axis=1))
        elif f in b.flavours:
            out_v.append(b.values[:, b.flavours.index(f)])
            out_w.append(b.variances[:, b.flavours.index(f)])
        else:
            msg = f"{what}: flavour {f!r} is not a category of the histogram {b.flavours} (or {ALL!r})"
            raise ConfigError(msg)
    return np.stack(out_v, axis=1), np.stack(out_w, axis=1)


def method_index(b: Binned, method: str, what: str) -> int:
    """Index of ``method`` on the method axis; ConfigError listing the methods if absent."""
    if method not in b.methods:
        msg = f"{what}: method {method!r} not in the histogram; it has {b.methods}"
        raise ConfigError(msg)
    return b.methods.index(method)


def quantiles(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray, qs: Sequence[float]
) -> np.ndarray:
    """Quantiles along the last axis, linear within the bin; shape (..., nq), NaN if empty.

    ``qs`` has shape (nq,) or broadcasts against (..., nq) (one set of probabilities per row).
    """
    qs = np.asarray(qs, dtype=np.float64)
    cum = np.cumsum(values, axis=-1)
    total = cum[..., -1]
    target = total[..., None] * qs  # (..., nq)
    idx = np.argmax(
        cum[..., None, :]
        >= target[..., :, None] - 1e-12 * np.abs(total[..., None, None]),
        axis=-1,
    )
    prev = np.where(
        idx > 0, np.take_along_axis(cum, np.maximum(idx - 1, 0), axis=-1), 0.0
    )
    content = np.take_along_axis(values, idx, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(content > 0, (target - prev) / content, 0.5)
    frac = np.clip(frac, 0.0, 1.0)
    x = lo[idx] + frac * (hi[idx] - lo[idx])
    return np.where(total[..., None] > 0, x, np.nan)


def histogram_quantiles(h: hist.Hist, qs: Sequence[float]) -> np.ndarray:
    """Quantiles of the last (``response``) axis of any histogram, flow bins counted.

    Works for the main histogram and the ρ / fine-η views alike. Returns an array of shape
    (non-flow bins of the other axes..., len(qs)); NaN where a bin is empty.
    """
    if h.axes[-1].name != "response":
        msg = f"histogram_quantiles: the last axis must be 'response', got {h.axes[-1].name!r}"
        raise ConfigError(msg)
    view = h.view(flow=True)
    values = view["value"] if view.dtype.names else view
    sl = tuple(
        slice(1 if a.traits.underflow else 0, -1 if a.traits.overflow else None)
        for a in h.axes[:-1]
    )
    r = np.asarray(h.axes[-1].edges)
    lo = np.concatenate([[r[0]], r[:-1], [r[-1]]])
    hi = np.concatenate([[r[0]], r[1:], [r[-1]]])
    return quantiles(np.asarray(values[(*sl, slice(None))], float), lo, hi, qs)


def effective_entries(values: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """N_eff = (Σw)² / Σw² over the last axis (the jet count for unit weights)."""
    sw = values.sum(axis=-1)
    sw2 = variances.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sw2 > 0, sw * sw / sw2, 0.0)


class PoissonReplicas:
    """Poisson-bootstrap replicas of fixed bin contents (see module docstring).

    The effective counts and weights are computed once, and only the bins that hold entries
    are drawn: a response histogram is mostly empty (2.8M bins for ~10^5 jets). numpy's
    ``Generator.poisson`` consumes no random numbers for a zero mean, so the replicas are
    the same numbers as drawing every bin with the same generator.
    """

    def __init__(self, values: np.ndarray, variances: np.ndarray) -> None:
        values = np.asarray(values, dtype=float)
        variances = np.asarray(variances, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            n = np.where(variances > 0, values * values / variances, 0.0)
            w = np.where(values != 0, variances / values, 0.0)
        self.shape = n.shape
        self._filled = np.flatnonzero(n)
        self._n = n.reshape(-1)[self._filled]
        self._w = w.reshape(-1)[self._filled]

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One replica, shaped like the bin contents."""
        out = np.zeros(self.shape)
        out.reshape(-1)[self._filled] = self._w * rng.poisson(self._n)
        return out


def bootstrap(values, variances, stat, n_boot: int, seed: int) -> np.ndarray:
    """Standard deviation over ``n_boot`` replicas of ``stat(values)`` (ignoring NaN)."""
    rng = np.random.default_rng(seed)
    replicas = PoissonReplicas(values, variances)
    reps = np.stack([stat(replicas.draw(rng)) for _ in range(n_boot)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(reps, axis=0, ddof=1)


def analytic_quantile_cov(values, variances, lo, hi, qs: Sequence[float]) -> np.ndarray:
    """Asymptotic covariance matrix of the quantiles ``qs`` (ascending); shape (..., nq, nq)."""
    from scipy.stats import norm

    qs = np.asarray(qs, float)
    n = effective_entries(values, variances)
    z = norm.ppf(qs)
    with np.errstate(divide="ignore", invalid="ignore"):
        bw = (
            n[..., None] ** (-1 / 3)
            * 1.959964 ** (2 / 3)
            * (1.5 * norm.pdf(z) ** 2 / (2 * z * z + 1)) ** (1 / 3)
        )
    bw = np.clip(np.nan_to_num(bw, nan=0.25), 1e-4, np.minimum(qs, 1 - qs) * 0.999)
    # 1/f(Q_q) = dQ/dq by a symmetric difference of the interpolated quantile function
    upper = quantiles(values, lo, hi, qs + bw)
    lower = quantiles(values, lo, hi, qs - bw)
    dqdp = (upper - lower) / (2 * bw)
    p = np.minimum.outer(qs, qs)
    q = np.maximum.outer(qs, qs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (
            p * (1 - q) * dqdp[..., :, None] * dqdp[..., None, :] / n[..., None, None]
        )


def iqr_over_median(qv: np.ndarray) -> np.ndarray:
    """(Q75 - Q25) / Q50 from quantiles (..., 3) at 0.25, 0.5, 0.75."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (qv[..., 2] - qv[..., 0]) / qv[..., 1]


def _median_and_resolution(qv: np.ndarray) -> np.ndarray:
    return np.stack([qv[..., 1], iqr_over_median(qv)])


def scale_resolution(values, variances, lo, hi, errors: Errors, n_boot: int, seed: int):
    """Median, IQR/median and their uncertainties for every row (last axis = response)."""
    if errors not in ("bootstrap", "analytic"):
        msg = f"errors must be 'bootstrap' or 'analytic', got {errors!r}"
        raise ConfigError(msg)
    qs = (0.25, 0.5, 0.75)
    qv = quantiles(values, lo, hi, qs)
    med, res = qv[..., 1], iqr_over_median(qv)
    if errors == "bootstrap":
        err = bootstrap(
            values,
            variances,
            lambda v: _median_and_resolution(quantiles(v, lo, hi, qs)),
            n_boot,
            seed,
        )
        return med, err[0], res, err[1]
    cov = analytic_quantile_cov(values, variances, lo, hi, qs)
    med_err = np.sqrt(cov[..., 1, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = np.stack(
            [
                -1 / qv[..., 1],
                -(qv[..., 2] - qv[..., 0]) / qv[..., 1] ** 2,
                1 / qv[..., 1],
            ],
            axis=-1,
        )
    res_err = np.sqrt(np.einsum("...i,...ij,...j->...", grad, cov, grad))
    return med, med_err, res, res_err

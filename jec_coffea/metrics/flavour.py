"""Flavour dependence S, its bootstrap uncertainty and noise floor, and residuals."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import hist
import numpy as np

from ..errors import ConfigError
from ._binned import (
    DEFAULT_FLAVOURS,
    PoissonReplicas,
    effective_entries,
    quantiles,
    read_binned,
    select_flavours,
)
from ._records import _Record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlavourBin:
    """Flavour dependence of one (method, |η|, pT_gen) bin.

    ``medians``/``n_eff`` per flavour; ``s`` with bootstrap ``s_err``; ``floor`` is the mean S
    with shuffled flavour labels (``floor_spread`` its standard deviation); ``significant`` is
    S > 3 x floor; ``residuals`` are m_f1 - m_f2 with bootstrap errors for the requested pairs.
    """

    method: str
    abs_eta: tuple[float, float]
    pt_gen: tuple[float, float]
    flavours: tuple[str, ...]
    n_eff: tuple[float, ...]
    medians: tuple[float, ...]
    s: float
    s_err: float
    floor: float
    floor_spread: float
    significant: bool
    residuals: dict[str, tuple[float, float]]


@dataclass
class FlavourDependence(_Record):
    """S per bin (see :func:`flavour_dependence`)."""

    bins: list[FlavourBin] = field(default_factory=list)
    title = "flavour dependence S"
    _columns = ("method", "abs_eta", "pt_gen", "s", "s_err", "floor", "significant")


def _s_of(values: np.ndarray, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """(medians (..., F, ...), S) with the flavour axis at position 1."""
    m = quantiles(values, lo, hi, (0.5,))[..., 0]
    return m, np.abs(m - m.mean(axis=1, keepdims=True)).sum(axis=1)


def flavour_dependence(
    h: hist.Hist,
    *,
    flavours: Sequence[str] = DEFAULT_FLAVOURS,
    abs_eta_edges: Sequence[float] | None = None,
    pt_edges: Sequence[float] | None = None,
    residuals: Sequence[tuple[str, str]] = (),
    n_boot: int = 200,
    n_shuffle: int = 100,
    seed: int = 0,
) -> FlavourDependence:
    """Flavour dependence S per (method, |η|, pT_gen) bin with bootstrap error and noise floor.

    Parameters
    ----------
    h
        Response histogram; for S_6 the six-flavour histogram with ``flavours=PARTON_FLAVOURS``.
    flavours
        Flavours whose medians enter S (default uds, c, b, g).
    residuals
        Pairs (f1, f2) for which m_f1 - m_f2 is reported.
    n_boot, n_shuffle, seed
        Replicas of the Poisson bootstrap and of the label shuffle (both seeded).
    """
    b = read_binned(h, abs_eta_edges=abs_eta_edges, pt_edges=pt_edges)
    flavours = list(flavours)
    values, variances = select_flavours(b, flavours, "flavour_dependence")
    for f1, f2 in residuals:
        for f in (f1, f2):
            if f not in flavours:
                msg = f"flavour_dependence: residual flavour {f!r} not among {flavours}"
                raise ConfigError(msg)
    med, s = _s_of(values, b.lo, b.hi)
    rng = np.random.default_rng(seed)
    boot_s, boot_m = [], []
    replicas = PoissonReplicas(values, variances)
    for _ in range(n_boot):
        m_b, s_b = _s_of(replicas.draw(rng), b.lo, b.hi)
        boot_s.append(s_b)
        boot_m.append(m_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s_err = (
            np.nanstd(np.stack(boot_s), axis=0, ddof=1)
            if n_boot > 1
            else np.full(s.shape, np.nan)
        )
        boot_m_arr = np.stack(boot_m) if boot_m else np.full((1, *med.shape), np.nan)
    n_eff = effective_entries(values, variances)
    # noise floor: pool the flavours, redraw each flavour with its own effective size
    pooled = np.clip(values.sum(axis=1), 0.0, None)
    tot = pooled.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(tot > 0, pooled / tot, 1.0 / pooled.shape[-1])
    p = np.broadcast_to(p[:, None], values.shape)
    n_draw = np.rint(n_eff).astype(np.int64)
    shuffled = np.stack(
        [
            _s_of(rng.multinomial(n_draw, p).astype(float), b.lo, b.hi)[1]
            for _ in range(n_shuffle)
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        floor = np.nanmean(shuffled, axis=0)
        floor_spread = (
            np.nanstd(shuffled, axis=0, ddof=1)
            if n_shuffle > 1
            else np.full(s.shape, np.nan)
        )
    out = FlavourDependence()
    for idx in np.ndindex(*s.shape):
        im, ie, ip = idx
        sel = (im, slice(None), ie, ip)
        res = {}
        for f1, f2 in residuals:
            i1, i2 = flavours.index(f1), flavours.index(f2)
            d = boot_m_arr[:, im, i1, ie, ip] - boot_m_arr[:, im, i2, ie, ip]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                err = float(np.nanstd(d, ddof=1)) if len(d) > 1 else math.nan
            res[f"{f1}-{f2}"] = (float(med[im, i1, ie, ip] - med[im, i2, ie, ip]), err)
        out.bins.append(
            FlavourBin(
                b.methods[im],
                (float(b.eta_edges[ie]), float(b.eta_edges[ie + 1])),
                (float(b.pt_edges[ip]), float(b.pt_edges[ip + 1])),
                tuple(flavours),
                tuple(float(x) for x in n_eff[sel]),
                tuple(float(x) for x in med[sel]),
                float(s[idx]),
                float(s_err[idx]),
                float(floor[idx]),
                float(floor_spread[idx]),
                bool(s[idx] > 3 * floor[idx]),
                res,
            )
        )
    return out

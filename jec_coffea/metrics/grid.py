"""Summary grid, headline figures and the improvement over the standard calibration."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hist
import numpy as np

from ..errors import ConfigError
from ..histograms import PT_GEN_SUMMARY_EDGES
from ._binned import (
    ALL,
    DEFAULT_FLAVOURS,
    Errors,
)
from ._records import _Record
from .flavour import flavour_dependence
from .response import response_table

logger = logging.getLogger(__name__)


SUMMARY_ABS_ETA_EDGES: tuple[float, ...] = (0.0, 1.3, 2.5)
"""|η_gen| edges of the summary grid."""

SUMMARY_PT_EDGES: tuple[float, ...] = PT_GEN_SUMMARY_EDGES[1:]
"""pT_gen edges of the summary grid [GeV]: 30, 50, 100, 200, 500, 1000, 3000."""


@dataclass(frozen=True)
class GridBin:
    """One summary-grid bin of one method: resolution of all jets, S, and eligibility."""

    method: str
    abs_eta: tuple[float, float]
    pt_gen: tuple[float, float]
    eligible: bool
    min_flavour_jets: float
    resolution: float
    resolution_err: float
    gauss_resolution: float
    s: float
    s_err: float
    floor: float
    significant: bool


@dataclass
class SummaryGrid(_Record):
    """Summary grid and headline figures: unweighted means over the eligible bins per method."""

    bins: list[GridBin] = field(default_factory=list)
    headline: dict[str, dict[str, float]] = field(default_factory=dict)
    min_jets: float = 1000.0
    title = "summary grid"
    _columns = (
        "method",
        "abs_eta",
        "pt_gen",
        "eligible",
        "min_flavour_jets",
        "resolution",
        "resolution_err",
        "s",
        "s_err",
        "floor",
        "significant",
    )


def summary_grid(
    h: hist.Hist,
    *,
    min_jets: float = 1000.0,
    flavours: Sequence[str] = DEFAULT_FLAVOURS,
    abs_eta_edges: Sequence[float] = SUMMARY_ABS_ETA_EDGES,
    pt_edges: Sequence[float] = SUMMARY_PT_EDGES,
    errors: Errors = "bootstrap",
    n_boot: int = 200,
    n_shuffle: int = 100,
    seed: int = 0,
) -> SummaryGrid:
    """Resolution (all flavours) and S on the summary grid, and the headline means.

    A bin is eligible when every group of ``flavours`` has N_eff >= ``min_jets``; the headline
    of a method is the unweighted mean over its eligible bins of ``resolution`` (IQR/median),
    ``gauss_resolution`` and ``s`` (``n_bins`` counts them).
    """
    table = response_table(
        h,
        flavours=[ALL],
        abs_eta_edges=abs_eta_edges,
        pt_edges=pt_edges,
        errors=errors,
        n_boot=n_boot,
        seed=seed,
    )
    fd = flavour_dependence(
        h,
        flavours=flavours,
        abs_eta_edges=abs_eta_edges,
        pt_edges=pt_edges,
        n_boot=n_boot,
        n_shuffle=n_shuffle,
        seed=seed,
    )
    grid = SummaryGrid(min_jets=min_jets)
    for r, f in zip(table.bins, fd.bins, strict=True):
        n_min = min(f.n_eff)
        grid.bins.append(
            GridBin(
                r.method,
                r.abs_eta,
                r.pt_gen,
                bool(n_min >= min_jets),
                n_min,
                r.resolution,
                r.resolution_err,
                r.gauss.resolution,
                f.s,
                f.s_err,
                f.floor,
                f.significant,
            )
        )
    for m in dict.fromkeys(b.method for b in grid.bins):
        sel = [b for b in grid.bins if b.method == m and b.eligible]
        grid.headline[m] = {
            "resolution": _mean([b.resolution for b in sel]),
            "gauss_resolution": _mean([b.gauss_resolution for b in sel]),
            "s": _mean([b.s for b in sel]),
            "n_bins": float(len(sel)),
        }
    return grid


def _mean(x: Sequence[float]) -> float:
    return float(np.mean(x)) if len(x) else math.nan


@dataclass
class Improvement(_Record):
    """100 (1 - X_method / X_reference) per grid bin and for the headline, X = resolution, S."""

    method: str = ""
    reference: str = "standard"
    bins: list[dict[str, Any]] = field(default_factory=list)
    headline: dict[str, float] = field(default_factory=dict)
    title = "improvement over the reference [%]"

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=f"{self.title}: {self.method} vs {self.reference}")
        for c in ("abs_eta", "pt_gen", "resolution", "s"):
            table.add_column(c, justify="right")
        for b in self.bins:
            table.add_row(
                str(b["abs_eta"]),
                str(b["pt_gen"]),
                f"{b['resolution']:.3g}",
                f"{b['s']:.3g}",
            )
        table.add_row(
            "headline",
            "",
            f"{self.headline['resolution']:.3g}",
            f"{self.headline['s']:.3g}",
        )
        return table


def improvement(
    grid: SummaryGrid, method: str, reference: str = "standard"
) -> Improvement:
    """Improvement of ``method`` over ``reference`` on the bins eligible for both."""
    by = {(b.method, b.abs_eta, b.pt_gen): b for b in grid.bins}
    known = {b.method for b in grid.bins}
    for m in (method, reference):
        if m not in known:
            msg = f"improvement: method {m!r} not in the summary grid ({sorted(known)})"
            raise ConfigError(msg)
    out = Improvement(method=method, reference=reference)
    xm: dict[str, list[float]] = {"resolution": [], "s": []}
    xr: dict[str, list[float]] = {"resolution": [], "s": []}
    for (m, eta, pt), b in by.items():
        ref = by[(reference, eta, pt)]
        if m != method or not (b.eligible and ref.eligible):
            continue
        row: dict[str, Any] = {"abs_eta": eta, "pt_gen": pt}
        for k in ("resolution", "s"):
            row[k] = (
                100.0 * (1.0 - getattr(b, k) / getattr(ref, k))
                if getattr(ref, k)
                else math.nan
            )
            xm[k].append(getattr(b, k))
            xr[k].append(getattr(ref, k))
        out.bins.append(row)
    for k in ("resolution", "s"):
        mr = _mean(xr[k])
        out.headline[k] = 100.0 * (1.0 - _mean(xm[k]) / mr) if mr else math.nan
    return out

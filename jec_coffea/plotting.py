"""CMS-style figures of the calibration performance and of the dataset (matplotlib + mplhep).

The dataset views (occupancy, flavour composition, target, multiplicity, constituents) are in
:mod:`jec_coffea.plotting_dataset`. Every function draws on the ``ax`` it is given and returns the artists it made, as hist's
``plot`` functions do, so the report and an analyst's notebook compose them freely. Numbers
come from :mod:`jec_coffea.metrics` (histogram-based); dataset views take a jet table
(:data:`~jec_coffea.data.jet_table.JET_FIELDS`). matplotlib and mplhep are imported through
:mod:`jec_coffea.extras` at the point of use; the base install does not import them.

Axis labels carry units (GeV); :func:`cms_label` writes "CMS Simulation" on simulated data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import hist
import numpy as np

from . import extras
from .metrics import FlavourDependence, ResponseTable, histogram_quantiles

__all__ = [
    "FLAVOUR_COLOURS",
    "cms_label",
    "plot_closure_map",
    "plot_data_mc",
    "plot_flavour_residuals",
    "plot_loss_curves",
    "plot_median_vs_pt",
    "plot_resolution_vs_pt",
    "plot_response_distributions",
    "plot_response_vs_rho",
]

logger = logging.getLogger(__name__)

FLAVOUR_COLOURS: dict[str, str] = {
    "uds": "#3f90da",
    "c": "#ffa90e",
    "b": "#bd1f01",
    "g": "#94a4a2",
    "unknown": "#832db6",
    "all": "black",
    "u": "#5790fc",
    "d": "#7a21dd",
    "s": "#e42536",
}
"""Colour per flavour (CMS's recommended 6/10-colour palette)."""

_PT_LABEL = r"$p_{T}^{gen}$ [GeV]"
_RESPONSE_LABEL = r"Response $p_{T}/p_{T}^{gen}$"


def _eta_text(abs_eta: Sequence[float]) -> str:
    return rf"${abs_eta[0]:g} \leq |\eta^{{gen}}| < {abs_eta[1]:g}$"


def cms_label(
    ax: Any, *, simulation: bool = True, rlabel: str | None = None
) -> tuple[Any, ...]:
    """CMS label on ``ax``: "CMS Simulation" for simulated data, "CMS" otherwise.

    ``rlabel`` replaces the default right-hand text (centre-of-mass energy), e.g. the sample.
    """
    hep = extras.mplhep()
    kwargs: dict[str, Any] = {"ax": ax, "data": not simulation, "loc": 0}
    if rlabel is not None:
        kwargs["rlabel"] = rlabel
    return hep.cms.label(**kwargs)


_PT_TICKS = (20, 50, 100, 200, 500, 1000, 2000)


def _pt_axis(
    ax: Any, axis: str = "x", lim: tuple[float, float] = (20.0, 3000.0)
) -> None:
    """Log pT axis over the full binning with plain-number ticks (no 10^n minor labels)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xlim if axis == "x" else ax.set_ylim)(*lim)
    target.set_major_locator(
        FixedLocator([t for t in _PT_TICKS if lim[0] <= t <= lim[1]])
    )
    target.set_major_formatter(ScalarFormatter())
    target.set_minor_formatter(NullFormatter())


def _dodge(i: int, n: int) -> float:
    """Multiplicative x offset of series ``i`` of ``n`` on a log axis (3% steps)."""
    return 1.0 + 0.03 * (i - (n - 1) / 2)


def _legend(ax: Any, **kwargs: Any) -> Any:
    """Legend if anything is labelled; otherwise a note that the selection is empty."""
    if ax.get_legend_handles_labels()[0]:
        return ax.legend(**kwargs)
    title = kwargs.get("title")
    return ax.text(
        0.5,
        0.5,
        (f"{title}\n" if title else "") + "no bin with enough jets",
        transform=ax.transAxes,
        ha="center",
        va="center",
    )


def _colour(i: int) -> str:
    cycle = [
        "#3f90da",
        "#ffa90e",
        "#bd1f01",
        "#94a4a2",
        "#832db6",
        "#a96b59",
        "#e76300",
    ]
    return cycle[i % len(cycle)]


def _select(h: hist.Hist, **ranges: tuple[float, float]) -> hist.Hist:
    """Sum ``h`` over the given axis ranges (edges must be bin edges) with hist's slicing."""
    loc = hist.loc
    idx: dict[str, Any] = {}
    for name, (lo, hi) in ranges.items():
        idx[name] = slice(loc(lo + 1e-9), loc(hi - 1e-9) + 1, sum)
    return h[idx]


def plot_response_distributions(
    ax: Any,
    h: hist.Hist,
    *,
    methods: Sequence[str] | None = None,
    flavour: str = "all",
    abs_eta: tuple[float, float] = (0.0, 1.3),
    pt_gen: tuple[float, float] = (100.0, 200.0),
    density: bool = True,
    rebin: int = 4,
) -> list[Any]:
    """Response distribution of each method in one (|η|, pT_gen) range, normalised to unit area.

    ``flavour="all"`` sums every flavour category; ``rebin`` merges response bins (0.005 wide)
    for display. Returns the step artists.
    """
    methods = list(h.axes["method"] if methods is None else methods)
    sub = _select(h, abs_eta=abs_eta, pt_gen=pt_gen)
    sub = sub[{"flavour": sum}] if flavour == "all" else sub[{"flavour": flavour}]
    sub = sub[{"response": hist.rebin(rebin)}] if rebin > 1 else sub
    edges = sub.axes["response"].edges
    artists = []
    for i, m in enumerate(methods):
        values = sub[{"method": m}].values()
        total = values.sum()
        y = values / (total * np.diff(edges)) if density and total > 0 else values
        artists.append(
            ax.stairs(
                y,
                edges,
                color=_colour(i),
                label=m,
                linewidth=1.5,
                # coinciding methods (standard = NanoAOD's own JEC) stay visible
                linestyle=("-", "--", ":", "-.")[i % 4],
            )
        )
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0.3, 1.7)
    ax.set_xlabel(_RESPONSE_LABEL)
    ax.set_ylabel(
        "Probability density" if density else f"Weighted jets / {0.005 * rebin:g}"
    )
    _legend(
        ax,
        title=f"{_eta_text(abs_eta)}\n${pt_gen[0]:g} \\leq p_T^{{gen}} < {pt_gen[1]:g}$ GeV"
        + ("\nall flavours" if flavour == "all" else f"\n{flavour} jets"),
        fontsize="small",
        title_fontsize="small",
    )
    return artists


def _rows(table: ResponseTable, **match: Any) -> list[Any]:
    out = []
    for b in table.bins:
        if all(
            (
                np.allclose(getattr(b, k), v)
                if isinstance(v, tuple)
                else getattr(b, k) == v
            )
            for k, v in match.items()
        ):
            out.append(b)
    return sorted(out, key=lambda b: b.pt_gen[0])


def _pt_centres(rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([b.pt_gen[0] for b in rows])
    hi = np.array([b.pt_gen[1] for b in rows])
    x = np.sqrt(lo * hi)
    return x, np.vstack([x - lo, hi - x])


def plot_median_vs_pt(
    ax: Any,
    table: ResponseTable,
    *,
    method: str,
    flavours: Sequence[str] = ("uds", "c", "b", "g"),
    abs_eta: tuple[float, float] = (0.0, 1.3),
    min_jets: float = 20.0,
) -> list[Any]:
    """Median response versus pT_gen per flavour (log x), with ±1% band; bins with N_eff < min_jets hidden."""
    artists = [ax.axhspan(0.99, 1.01, color="grey", alpha=0.2, label=r"$\pm 1\%$")]
    for i, f in enumerate(flavours):
        rows = [
            b
            for b in _rows(table, method=method, flavour=f, abs_eta=abs_eta)
            if b.n_eff >= min_jets
        ]
        if not rows:
            continue
        x, xerr = _pt_centres(rows)
        shift = _dodge(i, len(flavours))
        x, xerr = x * shift, xerr * np.array([[shift], [shift]])
        artists.append(
            ax.errorbar(
                x,
                [b.median for b in rows],
                yerr=[b.median_err for b in rows],
                xerr=xerr,
                fmt="o",
                markersize=4,
                color=FLAVOUR_COLOURS.get(f, "black"),
                label=f,
            )
        )
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    _pt_axis(ax)
    ax.set_xlabel(_PT_LABEL)
    ax.set_ylabel(r"Median response $p_{T}/p_{T}^{gen}$")
    _legend(ax, title=f"{method}, {_eta_text(abs_eta)}", fontsize="small", ncol=2)
    return artists


def plot_resolution_vs_pt(
    ax: Any,
    rax: Any,
    table: ResponseTable,
    *,
    methods: Sequence[str],
    reference: str | None = "standard",
    abs_eta: tuple[float, float] = (0.0, 1.3),
    flavour: str = "all",
    min_jets: float = 20.0,
) -> list[Any]:
    """Resolution (IQR/median) versus pT_gen per method, and the ratio to ``reference`` on ``rax``."""
    artists = []
    ref_rows = (
        {
            b.pt_gen: b
            for b in _rows(table, method=reference, flavour=flavour, abs_eta=abs_eta)
        }
        if reference
        else {}
    )
    for i, m in enumerate(methods):
        rows = [
            b
            for b in _rows(table, method=m, flavour=flavour, abs_eta=abs_eta)
            if b.n_eff >= min_jets
        ]
        if not rows:
            continue
        x, xerr = _pt_centres(rows)
        shift = _dodge(i, len(methods))  # methods side by side where they coincide
        x, xerr = x * shift, xerr * np.array([[shift], [shift]])
        y = np.array([b.resolution for b in rows])
        yerr = np.array([b.resolution_err for b in rows])
        artists.append(
            ax.errorbar(
                x,
                y,
                yerr=yerr,
                xerr=xerr,
                fmt="o",
                markersize=4,
                color=_colour(i),
                label=m,
            )
        )
        if rax is not None and ref_rows:
            ref = np.array(
                [
                    ref_rows[b.pt_gen].resolution if b.pt_gen in ref_rows else np.nan
                    for b in rows
                ]
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                artists.append(
                    rax.errorbar(
                        x,
                        y / ref,
                        yerr=yerr / ref,
                        xerr=xerr,
                        fmt="o",
                        markersize=3,
                        color=_colour(i),
                    )
                )
    _pt_axis(ax)
    ax.set_ylabel("Resolution IQR / median")
    ax.set_ylim(bottom=0)
    _legend(ax, title=_eta_text(abs_eta), fontsize="small")
    if rax is not None:
        rax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        _pt_axis(rax)
        rax.set_xlabel(_PT_LABEL)
        rax.set_ylabel(f"Ratio to {reference}")
        ax.set_xlabel("")
    else:
        ax.set_xlabel(_PT_LABEL)
    return artists


def plot_flavour_residuals(
    ax: Any,
    fd: FlavourDependence,
    *,
    method: str,
    abs_eta: tuple[float, float] = (0.0, 1.3),
    pairs: Sequence[str] | None = None,
) -> list[Any]:
    """Median-response residuals m_f1 - m_f2 versus pT_gen (bootstrap errors) for one method."""
    rows = sorted(
        (b for b in fd.bins if b.method == method and np.allclose(b.abs_eta, abs_eta)),
        key=lambda b: b.pt_gen[0],
    )
    artists = [ax.axhspan(-0.01, 0.01, color="grey", alpha=0.2, label=r"$\pm 1\%$")]
    if not rows:
        return artists
    pairs = list(rows[0].residuals if pairs is None else pairs)
    x, _ = _pt_centres(rows)
    for i, p in enumerate(pairs):
        y = np.array([b.residuals[p][0] for b in rows])
        e = np.array([b.residuals[p][1] for b in rows])
        ok = np.isfinite(y)
        if not ok.any():
            continue
        shift = _dodge(i, len(pairs))
        artists.append(
            ax.errorbar(
                x[ok] * shift,
                y[ok],
                yerr=e[ok],
                fmt="o",
                markersize=4,
                color=_colour(i),
                label=p.replace("-", " − "),
            )
        )
    ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
    _pt_axis(ax)
    ax.set_xlabel(_PT_LABEL)
    ax.set_ylabel(r"$R_{f_1} - R_{f_2}$ (median response)")
    _legend(ax, title=f"{method}, {_eta_text(abs_eta)}", fontsize="small", ncol=2)
    return artists


def plot_closure_map(
    fig: Any,
    ax: Any,
    h_eta: hist.Hist,
    *,
    method: str,
    limit: float = 0.05,
    min_jets: float = 20.0,
) -> list[Any]:
    """Map of median response - 1 in (signed η_gen, pT_gen) from the fine-η view; colour bar on ``fig``."""
    sub = h_eta[{"method": method}]
    med = histogram_quantiles(sub, (0.5,))[..., 0]
    view = sub.view(flow=False)
    sumw = view["value"].sum(axis=-1)
    sumw2 = view["variance"].sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(sumw2 > 0, sumw * sumw / sumw2, 0.0)
    z = np.where(n_eff >= min_jets, med - 1.0, np.nan)
    eta = sub.axes["eta_gen"].edges
    pt = sub.axes["pt_gen"].edges
    mesh = ax.pcolormesh(eta, pt, z.T, cmap="RdBu_r", vmin=-limit, vmax=limit)
    cbar = fig.colorbar(mesh, ax=ax, pad=0.01)
    cbar.set_label("Median response − 1")
    _pt_axis(ax, "y", (float(pt[0]), float(pt[-1])))
    ax.set_xlabel(r"$\eta^{gen}$")
    ax.set_ylabel(_PT_LABEL)
    ax.text(
        0.02,
        0.97,
        f"{method} (white: N < {min_jets:g})",
        transform=ax.transAxes,
        va="top",
        fontsize="small",
    )
    return [mesh, cbar]


def plot_response_vs_rho(
    ax: Any,
    h_rho: hist.Hist,
    *,
    methods: Sequence[str] | None = None,
    abs_eta: tuple[float, float] = (0.0, 1.3),
    pt_gen: tuple[float, float] = (30.0, 50.0),
    min_jets: float = 20.0,
) -> list[Any]:
    """Median response versus ρ per method in one (|η|, pT_gen) range (pile-up dependence)."""
    methods = list(h_rho.axes["method"] if methods is None else methods)
    sub = _select(h_rho, abs_eta=abs_eta, pt_gen=pt_gen)
    edges = sub.axes["event_rho"].edges
    x = 0.5 * (edges[1:] + edges[:-1])
    artists = []
    for i, m in enumerate(methods):
        hm = sub[{"method": m}]
        q = histogram_quantiles(hm, (0.25, 0.5, 0.75))
        n = hm.values(flow=True)[1:-1].sum(axis=-1)
        ok = n >= min_jets
        if not ok.any():
            continue
        # half-IQR / sqrt(N) x 1.25 (median error of a Gaussian) as the error bar
        err = 1.2533 * (q[:, 2] - q[:, 0]) / 1.349 / np.sqrt(np.maximum(n, 1))
        artists.append(
            ax.errorbar(
                x[ok],
                q[ok, 1],
                yerr=err[ok],
                xerr=0.5 * np.diff(edges)[ok],
                fmt="o",
                markersize=4,
                color=_colour(i),
                label=m,
            )
        )
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(r"$\rho$ [GeV]")
    ax.set_ylabel(r"Median response $p_{T}/p_{T}^{gen}$")
    _legend(
        ax,
        title=f"{_eta_text(abs_eta)}, ${pt_gen[0]:g} \\leq p_T^{{gen}} < {pt_gen[1]:g}$ GeV",
        fontsize="small",
        title_fontsize="small",
    )
    return artists


def plot_loss_curves(
    ax: Any, history: Mapping[str, Sequence[float]], *, label: str = ""
) -> list[Any]:
    """Training and validation loss versus epoch (log y); learning rate on a twin axis if given."""
    epoch = np.asarray(history["epoch"], dtype=float)
    artists = []
    for key, style, name in (
        ("train_loss", "-", "training"),
        ("val_loss", "--", "validation"),
    ):
        if key in history:
            (line,) = ax.plot(
                epoch, np.asarray(history[key], dtype=float), style, label=name
            )
            artists.append(line)
    ax.set_yscale("log")
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss")
    if "lr" in history:
        tax = ax.twinx()
        (line,) = tax.plot(
            epoch,
            np.asarray(history["lr"], dtype=float),
            ":",
            color="grey",
            label="learning rate (right)",
        )
        tax.set_yscale("log")
        tax.set_ylabel("Learning rate", color="grey")
        artists.append(line)
    handles = [a for a in artists if a.get_label()]
    ax.legend(
        handles=handles, labels=[a.get_label() for a in handles], title=label or None
    )
    return artists


def plot_data_mc(ax: Any, rax: Any, h_data: hist.Hist, h_sim: hist.Hist) -> list[Any]:
    """Normalised data (points) and simulation (filled) shapes with the data/simulation ratio."""
    edges = h_sim.axes[0].edges
    x = 0.5 * (edges[1:] + edges[:-1])
    nd, ns = h_data.values().sum(), h_sim.values().sum()
    d = h_data.values() / nd if nd > 0 else h_data.values()
    de = np.sqrt(h_data.variances()) / nd if nd > 0 else np.zeros_like(d)
    s = h_sim.values() / ns if ns > 0 else h_sim.values()
    artists = [
        ax.stairs(s, edges, fill=True, alpha=0.4, color="#3f90da", label="simulation"),
        ax.errorbar(x, d, yerr=de, fmt="o", color="black", label="data", markersize=4),
    ]
    with np.errstate(divide="ignore", invalid="ignore"):
        artists.append(
            rax.errorbar(x, d / s, yerr=de / s, fmt="o", color="black", markersize=3)
        )
    if edges[0] > 0 and edges[-1] / edges[0] > 50:
        ax.set_xscale("log")
    rax.axhline(1.0, color="grey", linestyle=":")
    rax.set_ylim(0.5, 1.5)
    rax.set_ylabel("Data / sim.")
    rax.set_xlabel(h_sim.axes[0].label)
    ax.set_xlabel("")
    ax.set_ylabel("Fraction of jets")
    ax.legend()
    return artists

"""CMS-style views of a jet table: occupancy, flavour composition, target, multiplicity, one jet.

These show what a sample holds before any calibration (the dataset views of jec-gnn). Each
function takes an ``ax`` and the awkward jet array of a :class:`~jec_coffea.data.JetTable`
(fields of :data:`~jec_coffea.data.jet_table.JET_FIELDS`, constituents per type) and returns
its artists; matplotlib is loaded through :mod:`jec_coffea.extras`.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from . import extras
from .data.jet_table import CONSTITUENT_TYPES, FLAVOUR_GROUPS
from .plotting import _PT_LABEL, FLAVOUR_COLOURS, _colour, _legend, _pt_axis

__all__ = [
    "plot_flavour_composition",
    "plot_jet_constituents",
    "plot_multiplicity",
    "plot_occupancy",
    "plot_target",
]


def _np(jets: ak.Array, name: str) -> np.ndarray:
    return np.asarray(ak.to_numpy(jets[name]), dtype=np.float64)


def plot_occupancy(ax: Any, jets: ak.Array) -> list[Any]:
    """2D occupancy of the jets in (η, raw pT) (log pT, log colour)."""
    extras.matplotlib_pyplot()
    from matplotlib.colors import LogNorm

    pt, eta = _np(jets, "pt_raw"), _np(jets, "eta")
    ok = np.isfinite(pt) & np.isfinite(eta) & (pt > 0)
    pt_edges = np.geomspace(max(pt[ok].min(), 5.0) if ok.any() else 5.0, 5000.0, 41)
    counts, xe, ye = np.histogram2d(
        eta[ok], pt[ok], bins=[np.linspace(-5, 5, 51), pt_edges]
    )
    counts = np.where(counts > 0, counts, np.nan)
    mesh = ax.pcolormesh(xe, ye, counts.T, norm=LogNorm(), cmap="viridis")
    cbar = ax.figure.colorbar(mesh, ax=ax, pad=0.01)
    cbar.set_label("Jets")
    ax.set_yscale("log")
    ax.set_xlabel(r"Jet $\eta$")
    ax.set_ylabel(r"Raw jet $p_{T}$ [GeV]")
    return [mesh, cbar]


def plot_flavour_composition(ax: Any, jets: ak.Array) -> list[Any]:
    """Fraction of each flavour group versus GenJet pT (matched jets), stacked."""
    matched = np.asarray(ak.to_numpy(jets["matched"]), dtype=bool)
    pt = _np(jets, "pt_gen")[matched]
    fl = np.asarray(ak.to_numpy(jets["flavour_group"]))[matched]
    edges = np.array([20, 30, 50, 100, 200, 500, 1000, 3000], float)
    idx = np.digitize(pt, edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    counts = np.zeros((len(FLAVOUR_GROUPS), len(edges) - 1))
    np.add.at(counts, (fl[ok].astype(int), idx[ok]), 1.0)
    total = counts.sum(axis=0)
    frac = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    bottom = np.zeros(len(edges) - 1)
    artists = []
    for i, f in enumerate(FLAVOUR_GROUPS):
        artists.append(
            ax.bar(
                edges[:-1],
                frac[i],
                width=np.diff(edges),
                bottom=bottom,
                align="edge",
                color=FLAVOUR_COLOURS[f],
                label=f,
                edgecolor="white",
                linewidth=0.5,
            )
        )
        bottom += frac[i]
    for lo, w, n in zip(edges[:-1], np.diff(edges), total, strict=True):
        if n > 0:
            artists.append(
                ax.text(
                    lo * (1 + w / lo) ** 0.5,
                    1.02,
                    f"{n:.0f}",
                    ha="center",
                    fontsize="x-small",
                )
            )
    _pt_axis(ax)
    ax.set_ylim(0, 1.45)
    ax.set_xlabel(_PT_LABEL)
    ax.set_ylabel("Fraction of matched jets")
    _legend(
        ax,
        ncol=3,
        fontsize="small",
        loc="upper right",
        title="numbers: jets per bin",
        title_fontsize="x-small",
    )
    return artists


def plot_target(ax: Any, jets: ak.Array) -> list[Any]:
    """Distribution of the regression target ln(pT_gen / pT_raw) per flavour group (normalised)."""
    matched = np.asarray(ak.to_numpy(jets["matched"]), dtype=bool)
    y = np.log(_np(jets, "pt_gen")[matched] / _np(jets, "pt_raw")[matched])
    fl = np.asarray(ak.to_numpy(jets["flavour_group"]))[matched]
    edges = np.linspace(-1.0, 1.0, 81)
    artists = []
    for i, f in enumerate(FLAVOUR_GROUPS):
        sel = y[(fl == i) & np.isfinite(y)]
        if sel.size == 0:
            continue
        counts, _ = np.histogram(np.clip(sel, edges[0], edges[-1]), bins=edges)
        dens = counts / (sel.size * np.diff(edges))
        artists.append(
            ax.stairs(dens, edges, color=FLAVOUR_COLOURS[f], label=f"{f} ({sel.size})")
        )
    ax.axvline(0.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(r"Target $\ln(p_{T}^{gen}/p_{T}^{raw})$")
    ax.set_ylabel("Probability density")
    _legend(ax, fontsize="small", title="flavour (matched jets)")
    return artists


def plot_multiplicity(ax: Any, jets: ak.Array) -> list[Any]:
    """Number of constituents per jet for each constituent type the table has."""
    artists = []
    edges = np.arange(-0.5, 80.5, 1.0)
    for i, t in enumerate(CONSTITUENT_TYPES):
        if t not in jets.fields:
            continue
        n = np.asarray(ak.to_numpy(ak.num(jets[t], axis=1)))
        counts, _ = np.histogram(np.clip(n, 0, 79), bins=edges)
        (line,) = ax.step(
            edges[:-1] + 0.5,
            counts,
            where="mid",
            color=_colour(i),
            label=f"{t} (mean {n.mean():.1f})" if n.size else t,
        )
        artists.append(line)
    ax.set_xlabel("Constituents per jet")
    ax.set_ylabel("Jets")
    _legend(ax, fontsize="small")
    return artists


def plot_jet_constituents(
    ax: Any, jets: ak.Array, index: int | None = None
) -> list[Any]:
    """One jet's constituents in the (Δη, Δφ) plane, marker area ∝ pT, colour by type.

    ``index`` defaults to the jet with the most constituents; the jet axis and the cone
    R = 0.4 are drawn for orientation.
    """
    types = [t for t in CONSTITUENT_TYPES if t in jets.fields]
    if index is None:
        total = sum(np.asarray(ak.to_numpy(ak.num(jets[t], axis=1))) for t in types)
        index = int(np.argmax(total)) if len(jets) else 0
    jet = jets[index]
    artists = []
    pt_max = max([float(ak.max(jet[t].pt)) for t in types if len(jet[t])] or [1.0])
    markers = {"charged": "o", "neutral": "s", "sv": "*"}
    for i, t in enumerate(types):
        c = jet[t]
        if not len(c):
            continue
        deta = np.asarray(c.eta, float) - float(jet.eta)
        dphi = (np.asarray(c.phi, float) - float(jet.phi) + np.pi) % (2 * np.pi) - np.pi
        size = 300.0 * np.asarray(c.pt, float) / pt_max
        artists.append(
            ax.scatter(
                deta,
                dphi,
                s=np.maximum(size, 4.0),
                marker=markers.get(t, "o"),
                color=_colour(i),
                alpha=0.7,
                label=f"{t} ({len(c)})",
            )
        )
    extras.matplotlib_pyplot()
    from matplotlib.patches import Circle

    circle = Circle((0.0, 0.0), 0.4, fill=False, linestyle="--", color="grey")
    ax.add_patch(circle)
    artists.append(circle)
    ax.set_xlim(-0.8, 0.8)
    ax.set_ylim(-0.8, 0.8)
    ax.set_aspect("equal")
    ax.set_xlabel(r"$\Delta\eta$ to the jet axis")
    ax.set_ylabel(r"$\Delta\phi$ to the jet axis [rad]")
    _legend(
        ax,
        title=f"jet {index}: raw $p_T$ = {float(jet.pt_raw):.0f} GeV",
        fontsize="small",
        title_fontsize="small",
        loc="upper right",
    )
    return artists

"""Calorimeter towers, columnar: cell indices, energy sums per (event, cell), noise, response.

Every deposit of a batch of events is binned at once: a deposit's key is
``event * n_cells + cell`` and sums per key come from ``np.unique`` + ``np.bincount``, so the
cost is linear in the number of deposits and independent of the (large) number of empty
cells. Noise is added to every cell with a deposit or an expected track deposit; empty cells
fluctuating above a ~3 sigma threshold are neglected (their rate times the threshold is a
few MeV per jet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Calorimeter, HadronResponse

__all__ = ["CellGrid", "hadron_response", "invert_hadron_response", "resolution"]


@dataclass(frozen=True)
class CellGrid:
    """Cell geometry of one calorimeter: |eta| bands, each with uniform eta x phi cells.

    Cells are numbered band by band, for negative then positive eta, ieta then iphi.
    """

    eta_lo: np.ndarray  # lower |eta| edge of each band
    eta_hi: np.ndarray
    deta: np.ndarray
    nphi: np.ndarray
    n_eta: np.ndarray  # eta cells per side per band
    first: np.ndarray  # first cell index of each band (negative side; positive follows)
    n_cells: int

    @classmethod
    def from_config(cls, calo: Calorimeter) -> CellGrid:
        """Build the grid of a calorimeter configuration."""
        lo, hi, deta, nphi = [], [], [], []
        edge = calo.eta_min
        for r in calo.regions:
            lo.append(edge)
            hi.append(r.eta_max)
            deta.append(r.deta)
            nphi.append(r.nphi)
            edge = r.eta_max
        lo_a, hi_a = np.array(lo), np.array(hi)
        deta_a = np.array(deta)
        n_eta = np.ceil((hi_a - lo_a) / deta_a - 1e-9).astype(np.int64)
        deta_a = (hi_a - lo_a) / n_eta
        nphi_a = np.array(nphi, dtype=np.int64)
        size = 2 * n_eta * nphi_a
        first = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
        return cls(lo_a, hi_a, deta_a, nphi_a, n_eta, first, int(size.sum()))

    @property
    def eta_min(self) -> float:
        """Lower |eta| edge of the calorimeter."""
        return float(self.eta_lo[0])

    @property
    def eta_max(self) -> float:
        """Upper |eta| edge of the calorimeter."""
        return float(self.eta_hi[-1])

    def cell(self, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Cell index of each (eta, phi); -1 outside the calorimeter."""
        aeta = np.abs(eta)
        band = np.searchsorted(self.eta_hi, aeta, side="right")
        inside = (aeta >= self.eta_min) & (band < len(self.eta_hi))
        b = np.minimum(band, len(self.eta_hi) - 1)
        ieta = np.minimum(
            ((aeta - self.eta_lo[b]) / self.deta[b]).astype(np.int64), self.n_eta[b] - 1
        )
        nphi = self.nphi[b]
        iphi = np.floor((phi + np.pi) / (2 * np.pi) * nphi).astype(np.int64) % nphi
        side = (eta > 0).astype(np.int64)
        idx = self.first[b] + (side * self.n_eta[b] + ieta) * nphi + iphi
        return np.where(inside, idx, -1)

    def centre(self, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(eta, phi) of the centres of cells."""
        b = np.searchsorted(self.first, cell, side="right") - 1
        local = cell - self.first[b]
        nphi = self.nphi[b]
        iphi = local % nphi
        rest = local // nphi
        side = rest // self.n_eta[b]
        ieta = rest % self.n_eta[b]
        aeta = self.eta_lo[b] + (ieta + 0.5) * self.deta[b]
        eta = np.where(side == 1, aeta, -aeta)
        phi = -np.pi + (iphi + 0.5) * 2 * np.pi / nphi
        return eta, phi


def _per_band(calo: Calorimeter, field: str) -> np.ndarray:
    """A setting of every |eta| band: the band's own, else the calorimeter's."""
    default = getattr(calo, field)
    return np.array(
        [
            default if getattr(r, field) is None else getattr(r, field)
            for r in calo.regions
        ]
    )


def cell_noise(
    calo: Calorimeter, grid: CellGrid, cell: np.ndarray
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Noise and threshold [GeV] of each cell: its band's, else the calorimeter's (scalars
    when no band sets its own)."""
    if all(r.noise_gev is None and r.threshold_gev is None for r in calo.regions):
        return calo.noise_gev, calo.threshold_gev
    band = np.clip(np.searchsorted(grid.first, cell, side="right") - 1, 0, None)
    return _per_band(calo, "noise_gev")[band], _per_band(calo, "threshold_gev")[band]


def resolution_terms(
    calo: Calorimeter, eta: np.ndarray
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Stochastic and constant terms at each |eta|: its band's, else the calorimeter's
    (scalars when no band sets its own)."""
    if all(r.stochastic is None and r.constant is None for r in calo.regions):
        return calo.stochastic, calo.constant
    edges = np.array([r.eta_max for r in calo.regions[:-1]])
    band = np.searchsorted(edges, np.abs(eta), side="right")
    return _per_band(calo, "stochastic")[band], _per_band(calo, "constant")[band]


def resolution(calo: Calorimeter, energy: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Absolute energy resolution sigma(E) [GeV] (stochastic, constant and noise terms)
    with the terms of the band at ``eta``."""
    e = np.maximum(energy, 1e-6)
    a, b = resolution_terms(calo, eta)
    return np.sqrt(a**2 * e + (b * e) ** 2 + calo.noise_gev**2)


def hadron_response(resp: HadronResponse, energy: np.ndarray) -> np.ndarray:
    """Mean hadron response pi/e(E) = 1 - (1 - h/e) (E/E0)^(m-1), capped to [h/e, 1]."""
    e = np.maximum(energy, resp.e0_gev)
    r = 1.0 - (1.0 - resp.h_over_e) * (e / resp.e0_gev) ** (resp.m - 1.0)
    return np.clip(r, resp.h_over_e, 1.0)


def invert_hadron_response(resp: HadronResponse, measured: np.ndarray) -> np.ndarray:
    """True energy E with E * pi/e(E) = measured (fixed-point iteration, converges fast)."""
    e = measured / resp.h_over_e
    for _ in range(6):
        e = measured / hadron_response(resp, e)
    return e


def tower_sums(
    event: np.ndarray,
    cell: np.ndarray,
    values: list[np.ndarray],
    n_cells: int,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Sum several per-deposit quantities per (event, cell).

    Returns
    -------
    tower_event, tower_cell, sums
        Event and cell of each non-empty tower (sorted by event, then cell) and one array
        of sums per input in ``values``.
    """
    key = event.astype(np.int64) * n_cells + cell
    n_keys = (int(key.max()) + 1) if len(key) else 0
    if n_keys <= 2 * len(key):
        # dense (event, cell) space no larger than the deposits (HCAL, HF): counting
        # instead of sorting; the same towers, order and sums as np.unique
        occupied = np.bincount(key, minlength=n_keys) > 0
        uniq = np.flatnonzero(occupied)
        rank = np.cumsum(occupied) - 1
        inv = rank[key]
    else:
        uniq, inv = np.unique(key, return_inverse=True)
    sums = [np.bincount(inv, weights=v, minlength=len(uniq)) for v in values]
    return uniq // n_cells, uniq % n_cells, sums

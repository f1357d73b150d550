"""Training weights: (pT, η) reweighting per flavour and class balancing.

Why: a QCD sample is steeply falling in pT and dominated by light quarks and gluons, so an
unweighted loss learns the low-pT, central, uds/g jets and under-trains heavy flavour and
the tails, which are exactly where the flavour dependence S lives. As in the Stein
framework, jets are reweighted in bins of (pT_gen, |η_gen|) separately per flavour group to
a target distribution, then optionally each flavour is scaled to the same total weight, and
the weights are normalised to mean 1.

Target distributions (``reweighting.target``):

* ``none``   — keep the generator weights;
* ``flat``   — every populated (pT, |η|) bin of a flavour gets the same total weight
  (flat in the bin index: with log-spaced pT bins this is flat in ln pT);
* ``reference`` — each flavour's (pT, |η|) distribution becomes that of
  ``reference_flavour`` (jets in bins the reference does not populate get weight 0);
* ``average`` — each flavour's distribution becomes the average of the normalised
  distributions of all populated flavours.

Each flavour keeps its total weight (the target is renormalised over the bins the flavour
populates) until ``class_balance`` equalises the totals. Jets outside the bin edges are
counted in the first/last bin. Everything is columnar:
one ``np.add.at`` histogram and one gather.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ..data.jet_table import FLAVOUR_GROUPS
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import ReweightingConfig

__all__ = ["flavour_bin_counts", "training_weights"]

log = logging.getLogger(__name__)


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value, out-of-range values clipped into the first/last bin."""
    idx = np.searchsorted(edges, values, side="right") - 1
    return np.clip(idx, 0, len(edges) - 2)


def flavour_bin_counts(
    pt: np.ndarray,
    abs_eta: np.ndarray,
    flavour: np.ndarray,
    base: np.ndarray,
    pt_edges: np.ndarray,
    eta_edges: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of ``base`` weights per (flavour, pT bin, |η| bin).

    Returns
    -------
    hist
        Array (n_flavour_groups, n_pt_bins, n_eta_bins) of summed weights.
    flat_index
        Per-jet flat index into ``hist`` (shape (N,)), for gathering.
    """
    ip = _bin_index(pt, pt_edges)
    ie = _bin_index(abs_eta, eta_edges)
    shape = (len(FLAVOUR_GROUPS), len(pt_edges) - 1, len(eta_edges) - 1)
    flat = np.ravel_multi_index((flavour.astype(np.int64), ip, ie), shape)
    hist = np.zeros(int(np.prod(shape)), dtype=np.float64)
    np.add.at(hist, flat, base)
    return hist.reshape(shape), flat


def training_weights(
    pt_gen: np.ndarray,
    eta_gen: np.ndarray,
    flavour: np.ndarray,
    config: ReweightingConfig,
    gen_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Per-jet training weights, normalised to mean 1.

    Parameters
    ----------
    pt_gen
        Gen-jet pT [GeV], shape (N,).
    eta_gen
        Gen-jet η, shape (N,).
    flavour
        Flavour group index into :data:`~jec_coffea.data.jet_table.FLAVOUR_GROUPS`, (N,).
    config
        The ``reweighting`` section of the master configuration.
    gen_weight
        Generator event weights (N,), used as base weights if ``config.use_gen_weight``.

    Returns
    -------
    numpy.ndarray
        float32 weights (N,) with mean 1 (all ones for an empty input).
    """
    n = len(pt_gen)
    if n == 0:
        return np.ones(0, dtype=np.float32)
    base = np.ones(n, dtype=np.float64)
    if config.use_gen_weight and gen_weight is not None:
        base = np.asarray(gen_weight, dtype=np.float64).copy()
        base[~np.isfinite(base)] = 0.0
    flavour = np.asarray(flavour, dtype=np.int64)
    pt_edges = np.asarray(config.pt_edges, dtype=np.float64)
    eta_edges = np.asarray(config.abs_eta_edges, dtype=np.float64)
    hist, flat = flavour_bin_counts(
        np.asarray(pt_gen, dtype=np.float64),
        np.abs(np.asarray(eta_gen, dtype=np.float64)),
        flavour,
        base,
        pt_edges,
        eta_edges,
    )
    totals = hist.sum(axis=(1, 2))  # per flavour
    present = totals > 0
    target = _target_histogram(hist, totals, present, config)
    # a flavour keeps its total weight: the target is renormalised over the bins the
    # flavour populates (b jets do not exist beyond the tracker, say)
    reachable = np.where(hist > 0, target, 0.0).sum(axis=(1, 2))
    target = (
        target
        * np.divide(totals, reachable, out=np.zeros_like(totals), where=reachable > 0)[
            :, None, None
        ]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(hist > 0, target / hist, 0.0).ravel()
    weights = base * ratio[flat]
    n_zero = int(np.count_nonzero((weights == 0) & (base != 0)))
    if n_zero:
        log.info(
            "reweighting to %r: %d of %d jets lie in bins the target does not populate "
            "and get weight 0",
            config.target,
            n_zero,
            n,
        )
    if config.class_balance:
        # the physics groups get the same total; "unknown" (no flavour definition, a few
        # per mille of the matched jets) keeps its share: balancing it too would give its
        # handful of jets weights of ~50 and cut the effective statistics tenfold
        per_flavour = np.zeros(len(FLAVOUR_GROUPS))
        np.add.at(per_flavour, flavour, weights)
        balanced = np.array([g != "unknown" for g in FLAVOUR_GROUPS]) & (
            per_flavour > 0
        )
        n_groups = int(np.count_nonzero(balanced))
        scale = np.ones_like(per_flavour)
        if n_groups:
            scale[balanced] = (
                per_flavour[balanced].sum() / n_groups / per_flavour[balanced]
            )
        weights = weights * scale[flavour]
    mean = weights.mean()
    if mean <= 0 or not np.isfinite(mean):
        msg = (
            "reweighting gave no positive weight (all jets in unpopulated bins or zero "
            "generator weights); check reweighting.target and the bin edges"
        )
        raise ConfigError(msg)
    weights = weights / mean
    if config.max_weight is not None:
        clipped = int(np.count_nonzero(weights > config.max_weight))
        if clipped:
            log.info(
                "reweighting: %d jets clipped at weight %g", clipped, config.max_weight
            )
        weights = np.minimum(weights, config.max_weight)
        weights = weights / weights.mean()
    log.info(
        "training weights (%s%s): min %.3g, max %.3g, effective N %.0f of %d",
        config.target,
        ", class-balanced" if config.class_balance else "",
        weights.min(),
        weights.max(),
        weights.sum() ** 2 / np.sum(weights**2),
        n,
    )
    return weights.astype(np.float32)


def _target_histogram(
    hist: np.ndarray,
    totals: np.ndarray,
    present: np.ndarray,
    config: ReweightingConfig,
) -> np.ndarray:
    """Target (flavour, pT, |η|) histogram with the same per-flavour totals as ``hist``."""
    if config.target == "none":
        return hist
    if config.target == "flat":
        populated = hist > 0
        n_bins = populated.sum(axis=(1, 2))
        per_bin = np.divide(totals, n_bins, out=np.zeros_like(totals), where=n_bins > 0)
        return np.where(populated, per_bin[:, None, None], 0.0)
    shapes = np.divide(
        hist,
        totals[:, None, None],
        out=np.zeros_like(hist),
        where=totals[:, None, None] > 0,
    )
    if config.target == "reference":
        ref = FLAVOUR_GROUPS.index(config.reference_flavour)
        if not present[ref]:
            msg = (
                f"reweighting.reference_flavour is {config.reference_flavour!r} but no "
                f"training jet has that flavour; choose one of "
                f"{[g for g, p in zip(FLAVOUR_GROUPS, present, strict=True) if p]}"
            )
            raise ConfigError(msg)
        shape = shapes[ref]
    else:  # average
        shape = shapes[present].mean(axis=0)
    return shape[None, :, :] * totals[:, None, None]

"""Columnar evaluation of registry features on a jet table, with counted replacements.

:func:`jet_features` gives one float64 value per jet, :func:`constituent_features` one per
stored constituent (jagged, stored order). Replacements are never silent: every function takes
an optional :class:`ReplacementCounts` that accumulates, per feature, how many values were
missing (field or collection absent from the layout, or ``None``) and how many were NaN/inf,
and each replacement is logged at debug level with its count.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from ..data.jet_table import CONSTITUENT_TYPES, JetTable
from ..errors import ConfigError, closest
from .registry import CONSTITUENT_FEATURES, JET_FEATURES, FeatureDefinition

__all__ = ["ReplacementCounts", "constituent_features", "jet_features"]

log = logging.getLogger(__name__)


@dataclass
class ReplacementCounts:
    """How many values of each feature were replaced by the feature's default.

    Keys are ``"jet.<name>"`` or ``"<type>.<name>"``. ``missing`` counts values whose field or
    collection is absent (or ``None``), ``nonfinite`` those that were NaN or ±inf, ``total`` all
    values computed. Instances add (``a + b``), so coffea accumulators can merge them.
    """

    missing: Counter[str] = field(default_factory=Counter)
    nonfinite: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: ReplacementCounts) -> ReplacementCounts:
        return ReplacementCounts(
            self.missing + other.missing,
            self.nonfinite + other.nonfinite,
            self.total + other.total,
        )

    def replaced(self, key: str) -> int:
        """Number of values of ``key`` replaced by the default (missing + non-finite)."""
        return self.missing[key] + self.nonfinite[key]

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Per feature ``{"missing", "nonfinite", "total"}``, for logs and reports."""
        return {
            key: {
                "missing": self.missing[key],
                "nonfinite": self.nonfinite[key],
                "total": self.total[key],
            }
            for key in sorted(self.total)
        }

    def summary(self) -> list[str]:
        """One line per feature that had replacements, e.g. for the training log."""
        return [
            f"{key}: {self.missing[key]} missing, {self.nonfinite[key]} non-finite "
            f"of {self.total[key]} set to the default"
            for key in sorted(self.total)
            if self.replaced(key)
        ]


# --------------------------------------------------------------------------- evaluation


def _as_array(jets: JetTable | ak.Array) -> ak.Array:
    return jets.jets if isinstance(jets, JetTable) else jets


def _unknown(name: str, registry: Mapping[str, FeatureDefinition], what: str) -> str:
    """Message for an unknown feature name, with the nearest names and the known ones."""
    hint = closest(name, registry)
    msg = f"unknown {what} feature {name!r}"
    msg += f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
    return msg + f" (known: {', '.join(registry)})"


def _lookup(
    registry: Mapping[str, FeatureDefinition], name: str, what: str
) -> FeatureDefinition:
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(_unknown(name, registry, what)) from None


def _replace(
    flat: np.ndarray,
    none: np.ndarray | None,
    key: str,
    default: float,
    counts: ReplacementCounts | None,
) -> np.ndarray:
    """Replace None (``none`` mask) and NaN/inf in a flat float64 array, counting both."""
    bad = ~np.isfinite(flat)
    n_none = int(none.sum()) if none is not None else 0
    n_bad = int(bad.sum()) - n_none
    if n_none or n_bad:
        flat = np.where(bad, default, flat)
        log.debug(
            "feature %s: %d missing and %d non-finite values set to %g",
            key,
            n_none,
            n_bad,
            default,
        )
    if counts is not None:
        counts.missing[key] += n_none
        counts.nonfinite[key] += n_bad
        counts.total[key] += len(flat)
    return flat


def _flat_values(raw) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 numpy values of a flat (N,) result, with the mask of None entries (or None)."""
    raw = raw if isinstance(raw, ak.Array) else ak.Array(np.asarray(raw))
    none = None
    if raw.layout.is_option:
        none = ak.to_numpy(ak.is_none(raw, axis=0))
        none = none if none.any() else None
    values = ak.fill_none(ak.values_astype(raw, np.float64), np.nan, axis=0)
    return ak.to_numpy(values), none


def _missing_fields(array: ak.Array, fields: tuple[str, ...]) -> list[str]:
    return [f for f in fields if f not in array.fields]


def _compute_jet(
    jets: ak.Array, d: FeatureDefinition, counts: ReplacementCounts | None
) -> np.ndarray:
    key = f"jet.{d.name}"
    absent = _missing_fields(jets, d.jet_fields)
    if absent:
        log.debug(
            "feature %s: jet-table fields %s absent; default %g", key, absent, d.default
        )
        if counts is not None:
            counts.missing[key] += len(jets)
            counts.total[key] += len(jets)
        return np.full(len(jets), d.default, dtype=np.float64)
    with np.errstate(all="ignore"):
        values, none = _flat_values(d.compute(jets))
    return _replace(values, none, key, d.default, counts)


def _constituent_flat(
    jets: ak.Array,
    cands: ak.Array,
    ctype: str,
    d: FeatureDefinition,
    counts: ReplacementCounts | None,
) -> np.ndarray:
    """Flat float64 values (all constituents of all jets, in order) of one feature."""
    key = f"{ctype}.{d.name}"
    compute, absent = d.resolve(jets.fields, cands.fields)
    if compute is None:
        n = int(ak.sum(ak.num(cands, axis=1)))
        log.debug(
            "feature %s: fields %s absent; default %g for %d values",
            key,
            absent,
            d.default,
            n,
        )
        if counts is not None:
            counts.missing[key] += n
            counts.total[key] += n
        return np.full(n, d.default, dtype=np.float64)
    with np.errstate(all="ignore"):
        raw = ak.flatten(compute(jets, cands), axis=1)
    values, none = _flat_values(raw)
    return _replace(values, none, key, d.default, counts)


def jet_features(
    jets: JetTable | ak.Array,
    names: list[str],
    *,
    counts: ReplacementCounts | None = None,
) -> dict[str, np.ndarray]:
    """Compute jet-level features by name.

    Parameters
    ----------
    jets
        Jet table (or its awkward array), N jets.
    names
        Names in :data:`JET_FEATURES`.
    counts
        Accumulates how many values of each feature were replaced by its default.

    Returns
    -------
    dict
        ``name -> float64 array of shape (N,)``, finite everywhere.
    """
    array = _as_array(jets)
    return {
        name: _compute_jet(array, _lookup(JET_FEATURES, name, "jet-level"), counts)
        for name in names
    }


def constituent_features(
    jets: JetTable | ak.Array,
    ctype: str,
    names: list[str],
    *,
    counts: ReplacementCounts | None = None,
) -> dict[str, ak.Array]:
    """Compute constituent-level features of one type, in the stored constituent order.

    Parameters
    ----------
    jets
        Jet table (or its awkward array), N jets.
    ctype
        One of :data:`~jec_coffea.data.jet_table.CONSTITUENT_TYPES`.
    names
        Names in ``CONSTITUENT_FEATURES[ctype]``.
    counts
        Accumulates replaced values per feature.

    Returns
    -------
    dict
        ``name -> jagged float64 array (N × var)``. If the type is absent from the table every
        jet gets an empty list.
    """
    array = _as_array(jets)
    registry = CONSTITUENT_FEATURES[_check_type(ctype)]
    defs = [_lookup(registry, name, ctype) for name in names]
    if ctype not in array.fields:
        # the whole collection is absent: one empty list per jet
        empty = ak.unflatten(np.zeros(0), np.zeros(len(array), dtype=np.int64))
        return dict.fromkeys(names, empty)
    cands = array[ctype]
    num = ak.to_numpy(ak.num(cands, axis=1))
    return {
        d.name: ak.unflatten(_constituent_flat(array, cands, ctype, d, counts), num)
        for d in defs
    }


def _check_type(ctype: str) -> str:
    if ctype not in CONSTITUENT_FEATURES:
        msg = f"unknown constituent type {ctype!r}; expected one of {', '.join(CONSTITUENT_TYPES)}"
        raise ConfigError(msg)
    return ctype

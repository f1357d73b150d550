"""Columnar evaluation of registry features on a jet table, with counted replacements.

:func:`jet_features` gives one float64 value per jet, :func:`constituent_features` one per
stored constituent (jagged, stored order). Replacements are never silent: every function takes
an optional :class:`ReplacementCounts` that accumulates, per feature, how many values were
missing (field or collection absent from the layout, or ``None``) and how many were NaN/inf,
and each replacement is logged at debug level with its count.

Evaluation runs on flat numpy columns (:mod:`._columns`): the registry's elementwise compute
functions are called on numpy arrays read once from the layout, with jet values broadcast to
constituents by one gather, which gives the values of the awkward evaluation without its
per-call overhead. Layouts that are not plain numpy columns take the awkward path.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from ..data.jet_table import CONSTITUENT_TYPES, JetTable
from ..errors import ConfigError, closest
from ._columns import JET_KERNELS, FlatTable, NotFlat, flat_table
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
    n_none = int(np.count_nonzero(none)) if none is not None else 0
    n_bad = int(np.count_nonzero(bad)) - n_none
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
    if isinstance(raw, ak.Array) and isinstance(raw.layout, ak.contents.NumpyArray):
        raw = raw.layout.data  # e.g. ak.where on numpy input: no None possible
    if isinstance(raw, np.ndarray):
        return raw.astype(np.float64, copy=False), None
    raw = raw if isinstance(raw, ak.Array) else ak.Array(np.asarray(raw))
    none = None
    if raw.layout.is_option:
        none = ak.to_numpy(ak.is_none(raw, axis=0))
        none = none if none.any() else None
    values = ak.fill_none(ak.values_astype(raw, np.float64), np.nan, axis=0)
    return ak.to_numpy(values), none


def _missing_fields(fields: list[str], wanted: tuple[str, ...]) -> list[str]:
    return [f for f in wanted if f not in fields]


def _jet_raw(table: FlatTable | None, jets: ak.Array, d: FeatureDefinition):
    """Unreplaced values of a jet feature: flat kernel, flat columns, else awkward."""
    if table is not None:
        try:
            kernel = JET_KERNELS.get(d.name)
            if kernel is not None:
                return kernel(table)
            if not set(d.jet_fields) & set(CONSTITUENT_TYPES):
                table.record.prefetch(d.jet_fields)
                return d.compute(table.record)
        except NotFlat as err:
            log.debug("feature jet.%s: awkward evaluation (%s)", d.name, err)
    return d.compute(jets)


def _compute_jet(
    table: FlatTable | None,
    jets: ak.Array,
    d: FeatureDefinition,
    counts: ReplacementCounts | None,
) -> np.ndarray:
    key = f"jet.{d.name}"
    absent = _missing_fields(jets.fields, d.jet_fields)
    if absent:
        log.debug(
            "feature %s: jet-table fields %s absent; default %g", key, absent, d.default
        )
        if counts is not None:
            counts.missing[key] += len(jets)
            counts.total[key] += len(jets)
        return np.full(len(jets), d.default, dtype=np.float64)
    with np.errstate(all="ignore"):
        values, none = _flat_values(_jet_raw(table, jets, d))
    return _replace(values, none, key, d.default, counts)


def _constituent_values(
    jets,
    cands,
    jet_fields: list[str],
    cand_fields: list[str],
    n: int,
    ctype: str,
    d: FeatureDefinition,
    counts: ReplacementCounts | None,
    flatten: bool = False,
) -> np.ndarray:
    """Flat float64 values of one feature for ``n`` constituents, defaults counted.

    ``jets`` and ``cands`` are the flat views (jet columns broadcast to the constituents,
    constituent columns), or the awkward jets and jagged constituents with ``flatten``.
    """
    key = f"{ctype}.{d.name}"
    compute, absent = d.resolve(jet_fields, cand_fields)
    if compute is None:
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
        raw = compute(jets, cands)
        raw = ak.flatten(raw, axis=1) if flatten else raw
    values, none = _flat_values(raw)
    return _replace(values, none, key, d.default, counts)


def _needed_fields(
    defs: Iterable[FeatureDefinition],
) -> tuple[set[str], set[str]]:
    """Jet and constituent fields any of ``defs`` may read (with alternatives)."""
    jet: set[str] = set()
    cand: set[str] = {"pt"}
    for d in defs:
        jet.update(d.jet_fields)
        cand.update(d.constituent_fields)
        for fields, _ in d.alternatives:
            cand.update(fields)
    return jet, cand


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
    return _jet_features(flat_table(array), array, names, counts)


def _jet_features(
    table: FlatTable | None,
    array: ak.Array,
    names: list[str],
    counts: ReplacementCounts | None,
) -> dict[str, np.ndarray]:
    defs = [_lookup(JET_FEATURES, name, "jet-level") for name in names]
    return {d.name: _compute_jet(table, array, d, counts) for d in defs}


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
    table = flat_table(array)
    try:
        if table is None:
            msg = "jet record"
            raise NotFlat(msg)
        cons = table.constituents(ctype)
        jet_need, cand_need = _needed_fields(defs)
        cons.record.prefetch(cand_need)
        table.record.prefetch(jet_need)
    except NotFlat as err:
        log.debug("%s constituents: awkward evaluation (%s)", ctype, err)
        cands = array[ctype]
        num = ak.to_numpy(ak.num(cands, axis=1))
        n, jets_in, cands_in, flatten = int(num.sum()), array, cands, True
    else:
        num = cons.counts
        n, jets_in, cands_in = (
            len(cons.jet_of),
            table.record.take(cons.jet_of),
            cons.record,
        )
        flatten = False
    args = (array.fields, cands_in.fields, n, ctype)
    return {
        d.name: ak.unflatten(
            _constituent_values(jets_in, cands_in, *args, d, counts, flatten), num
        )
        for d in defs
    }


def _check_type(ctype: str) -> str:
    if ctype not in CONSTITUENT_FEATURES:
        msg = f"unknown constituent type {ctype!r}; expected one of {', '.join(CONSTITUENT_TYPES)}"
        raise ConfigError(msg)
    return ctype

"""Flat numpy columns of a jet table: the fast path of feature evaluation and tensors.

A jet table is an awkward record array; its numeric fields are numpy buffers and its
constituent types lists of records over flat buffers. :class:`FlatTable` reads them once as
(offsets, flat content) numpy arrays, looking through the lazy selections (``IndexedArray``)
that ``jets[mask]`` leaves, and hands out columns as numpy arrays: the registry's compute
functions, which are elementwise numpy ufunc expressions, then run on them directly, with jet
values broadcast to constituents by one integer gather. The results are those of the awkward
evaluation (the same ufuncs on the same numbers in the same dtypes) without awkward's per-call
dispatch and broadcasting, which dominated the cost of feature building (issue 8).

The jet-level features that reduce over constituents (``pt_d``, ``axis2``, ``n_<type>``) have
flat twins in :data:`JET_KERNELS`; their per-jet sums run sequentially in the input dtype, as
``ak.sum`` does, so they are bit-identical (``tests/test_tensors_flat.py`` checks every feature
against the awkward evaluation). Anything that is not plain numpy columns (option types,
unions, typetracers, GPU buffers) raises :class:`NotFlat`, and the caller takes the awkward
path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import awkward as ak
import numba
import numpy as np

from ..data.jet_table import CONSTITUENT_TYPES
from .registry import wrap_phi

__all__ = [
    "JET_KERNELS",
    "Constituents",
    "FlatRecord",
    "FlatTable",
    "NotFlat",
    "flat_table",
]

log = logging.getLogger(__name__)


class NotFlat(Exception):
    """The layout is not plain numpy columns; the caller takes the awkward path."""


Rows = np.ndarray | slice | None
"""Rows of a layout: all (None), a contiguous range (slice, step 1) or an integer gather."""


def _buffer(data: object) -> np.ndarray:
    """The numpy array behind a layout buffer, materialising a virtual one."""
    if not isinstance(data, np.ndarray):
        materialize = getattr(data, "materialize", None)
        data = materialize() if materialize is not None else data
    if not isinstance(data, np.ndarray):  # typetracer, GPU buffers
        raise NotFlat(type(data).__name__)
    return data


def _compose(rows: Rows, index: np.ndarray | slice) -> Rows:
    """Rows ``index`` of a selection ``rows`` (``rows[index]``)."""
    if rows is None:
        return index
    if isinstance(rows, slice):
        if isinstance(index, slice):
            return slice(rows.start + index.start, rows.start + index.stop)
        return index + rows.start
    return rows[index]


def _peel(layout: ak.contents.Content, rows: Rows) -> tuple[ak.contents.Content, Rows]:
    """Strip IndexedArray wrappers (lazy selections), composing their index into ``rows``."""
    while isinstance(layout, ak.contents.IndexedArray):
        index = _buffer(layout.index.data)
        rows = index if rows is None else index[rows]
        layout = layout.content
    return layout, rows


def _column(layout: ak.contents.Content, rows: Rows) -> np.ndarray:
    """One numeric column of a record field at ``rows``, as a flat numpy array."""
    layout, rows = _peel(layout, rows)
    if (
        not isinstance(layout, ak.contents.NumpyArray)
        or layout.parameter("__array__") is not None  # char/byte: strings
    ):
        raise NotFlat(type(layout).__name__)
    data = _buffer(layout.data)
    if data.ndim != 1:
        msg = f"{data.ndim}-d NumpyArray"
        raise NotFlat(msg)
    return data if rows is None else data[rows]


class FlatRecord:
    """Fields of a record layout at given rows as flat numpy arrays, read once and cached.

    Registry compute functions take it where they take an awkward record (``c.pt``,
    ``c["pt"]``, ``c.fields``) and get numpy arrays back.
    """

    def __init__(
        self,
        layout: ak.contents.RecordArray,
        rows: Rows,
        parent: tuple[FlatRecord, np.ndarray | slice] | None = None,
    ) -> None:
        self._layout = layout
        self._rows = rows
        self._parent = parent
        self._cache: dict[str, np.ndarray] = {}
        self.fields: list[str] = layout.fields

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            if name not in self.fields:
                raise KeyError(name)
            if self._parent is not None and name in self._parent[0]._cache:
                record, index = self._parent
                self._cache[name] = record._cache[name][index]
            else:
                self._cache[name] = _column(self._layout.content(name), self._rows)
        return self._cache[name]

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def prefetch(self, names: Iterable[str]) -> None:
        """Read the present ``names`` now (raises :class:`NotFlat` before any evaluation)."""
        for name in names:
            if name in self.fields:
                self[name]

    def take(self, index: np.ndarray | slice) -> FlatRecord:
        """The record at rows ``index`` of this one (columns gathered when first used)."""
        return FlatRecord(self._layout, _compose(self._rows, index), (self, index))


@dataclass
class Constituents:
    """One constituent type of N jets as flat columns in stored order.

    ``counts`` (N,) and 0-based ``offsets`` (N+1,) per jet, ``jet_of`` (total,) the jet of each
    constituent, ``record`` the constituent fields.
    """

    counts: np.ndarray
    offsets: np.ndarray
    jet_of: np.ndarray
    record: FlatRecord


class FlatTable:
    """A jet table as flat numpy columns: the jet record and per-type constituent lists.

    Raises :class:`NotFlat` if the array is not a record of plain columns.
    """

    def __init__(self, array: ak.Array) -> None:
        layout, rows = _peel(array.layout, None)
        if not isinstance(layout, ak.contents.RecordArray) or layout.is_tuple:
            raise NotFlat(type(layout).__name__)
        self.n = len(array)
        self.record = FlatRecord(layout, rows)
        self.fields = layout.fields
        self._types: dict[str, Constituents] = {}
        self.derived: dict[str, object] = {}
        """Intermediate results shared by several features (e.g. the PF candidates' Δη, Δφ)."""

    def constituents(self, ctype: str) -> Constituents:
        """The lists of field ``ctype``, read once (stored order, no copy when contiguous)."""
        if ctype not in self._types:
            self._types[ctype] = self._read_lists(ctype)
        return self._types[ctype]

    def _read_lists(self, ctype: str) -> Constituents:
        rec = self.record
        layout, rows = _peel(rec._layout.content(ctype), rec._rows)
        if isinstance(layout, ak.contents.ListOffsetArray):
            offsets = _buffer(layout.offsets.data).astype(np.int64, copy=False)
            starts, stops = offsets[:-1], offsets[1:]
        elif isinstance(layout, ak.contents.ListArray):
            starts = _buffer(layout.starts.data).astype(np.int64, copy=False)
            stops = _buffer(layout.stops.data).astype(np.int64, copy=False)
        else:
            raise NotFlat(type(layout).__name__)
        if rows is not None:
            starts, stops = starts[rows], stops[rows]
        counts = stops - starts
        flat_offsets = np.zeros(self.n + 1, np.int64)
        np.cumsum(counts, out=flat_offsets[1:])
        total = int(flat_offsets[-1])
        if total == 0:
            content_rows: Rows = slice(0, 0)
        elif np.array_equal(starts[1:], stops[:-1]):
            content_rows = slice(int(starts[0]), int(stops[-1]))
        else:
            content_rows = np.repeat(starts - flat_offsets[:-1], counts) + np.arange(
                total
            )
        content, content_rows = _peel(layout.content, content_rows)
        if not isinstance(content, ak.contents.RecordArray) or content.is_tuple:
            raise NotFlat(type(content).__name__)
        jet_of = np.repeat(np.arange(self.n, dtype=np.int64), counts)
        return Constituents(
            counts, flat_offsets, jet_of, FlatRecord(content, content_rows)
        )


def flat_table(array: ak.Array) -> FlatTable | None:
    try:
        return FlatTable(array)
    except NotFlat as err:
        log.debug("jet table is not plain columns (%s): awkward evaluation", err)
        return None


# --------------------------------------------------------------------------- jet-level kernels


@numba.njit(cache=True)
def _segment_sums(a, a_offsets, b, b_offsets, out):  # pragma: no cover - compiled
    # per jet: a's constituents then b's, in order, accumulated in out's dtype: the order and
    # precision of ak.sum over ak.concatenate([a, b], axis=1)
    for i in range(out.shape[0]):
        acc = out[i]
        for k in range(a_offsets[i], a_offsets[i + 1]):
            acc += a[k]
        for k in range(b_offsets[i], b_offsets[i + 1]):
            acc += b[k]
        out[i] = acc


def _pf_sum(parts: tuple[np.ndarray, np.ndarray], pf: tuple[Constituents, ...]):
    """Per-jet sum over charged then neutral candidates (as the registry's concatenation)."""
    a, b = parts
    dtype = np.result_type(a, b)
    out = np.zeros(len(pf[0].counts), dtype)
    _segment_sums(
        a.astype(dtype, copy=False),
        pf[0].offsets,
        b.astype(dtype, copy=False),
        pf[1].offsets,
        out,
    )
    return out


def _pf(table: FlatTable) -> tuple[tuple[Constituents, ...], dict[str, tuple]]:
    """Charged and neutral lists, with pT, Δη, Δφ per type (the registry's _pf_candidates).

    Computed once per table: ``pt_d`` and ``axis2`` share it.
    """
    if "pf" not in table.derived:
        table.derived["pf"] = _pf_columns(table)
    return table.derived["pf"]


def _pf_columns(table: FlatTable) -> tuple[tuple[Constituents, ...], dict[str, tuple]]:
    pf = tuple(table.constituents(t) for t in ("charged", "neutral"))
    jet_eta, jet_phi = table.record["eta"], table.record["phi"]
    dtype = {
        k: np.result_type(*(c.record[k] for c in pf)) for k in ("pt", "eta", "phi")
    }
    cols: dict[str, list[np.ndarray]] = {"pt": [], "deta": [], "dphi": []}
    for c in pf:
        eta = c.record["eta"].astype(dtype["eta"], copy=False)
        phi = c.record["phi"].astype(dtype["phi"], copy=False)
        cols["pt"].append(c.record["pt"].astype(dtype["pt"], copy=False))
        cols["deta"].append(eta - jet_eta[c.jet_of])
        cols["dphi"].append(wrap_phi(phi - jet_phi[c.jet_of]))
    return pf, {k: tuple(v) for k, v in cols.items()}


def _flat_pt_d(table: FlatTable) -> np.ndarray:
    pf, c = _pf(table)
    pt = c["pt"]
    return np.sqrt(_pf_sum(tuple(p**2 for p in pt), pf)) / _pf_sum(pt, pf)


def _flat_axis2(table: FlatTable) -> np.ndarray:
    pf, c = _pf(table)
    w = tuple(p**2 for p in c["pt"])
    deta, dphi = c["deta"], c["dphi"]

    def total(f: Callable[[int], np.ndarray]) -> np.ndarray:
        return _pf_sum((f(0), f(1)), pf)

    sw = total(lambda i: w[i])
    mean_e = total(lambda i: w[i] * deta[i]) / sw
    mean_p = total(lambda i: w[i] * dphi[i]) / sw
    m11 = total(lambda i: w[i] * deta[i] ** 2) / sw - mean_e**2
    m22 = total(lambda i: w[i] * dphi[i] ** 2) / sw - mean_p**2
    m12 = total(lambda i: w[i] * deta[i] * dphi[i]) / sw - mean_e * mean_p
    half_trace = 0.5 * (m11 + m22)
    root = np.sqrt(0.25 * (m11 - m22) ** 2 + m12**2)
    return np.sqrt(np.maximum(half_trace - root, 0.0))


JET_KERNELS: dict[str, Callable[[FlatTable], np.ndarray]] = {
    "pt_d": _flat_pt_d,
    "axis2": _flat_axis2,
    **{
        f"n_{t}": (lambda table, t=t: table.constituents(t).counts)
        for t in CONSTITUENT_TYPES
    },
}
"""Flat twins of the registry's jet features that reduce over constituents (the others are
elementwise and run on the flat columns as written); tests check them against the registry."""

"""Constituents by type (charged, neutral, sv) as jagged per-jet lists, sorted by decreasing pT.

Every layout reduces to the same flat form before assembly: one row per constituent with the
global (flat) index of its jet and flat numpy columns (:class:`_Columns`, which composes row
selections into one index per branch, so every branch is gathered once). The rows are put in
(jet, -pT) order with one stable ``np.lexsort`` (skipped when a vectorised check finds them in
that order already, as PFNano and the simulation store them), split by type, and each type
becomes per-jet lists built directly as an awkward layout (offsets from ``np.bincount`` counts),
so jets without constituents of a present type get an empty list and no Python loop runs over
jets or candidates.

* PFNano current layout: ``JetPFCands_{jetIdx,pFCandsIdx}`` -> ``PFCands_*`` (offset arithmetic
  from per-event local to flat indices, as coffea's ``local2global``);
* PFNano old layout: the rows of ``JetPFCands_*`` are the candidates, grouped by ``jetIdx``;
* per-jet trees (ml-jec, JetClass-II): jagged per-jet branches, flattened.

Charged = charge != 0, neutral = charge == 0. With ``puppi_weighted`` the candidate four-vector
is scaled by ``puppiWeight`` (pT and mass; direction unchanged) and zero-weight candidates,
which are not part of a PUPPI jet, are dropped.
"""

from __future__ import annotations

import logging

import awkward as ak
import numpy as np

from ..errors import ConfigError
from ._layouts import ConstituentSource
from ._source import BranchSource
from .jet_table import CONSTITUENT_FIELDS

__all__ = [
    "assemble",
    "build_constituents",
    "charge_from_pdgid",
    "entry_values",
    "flat_values",
    "list_counts",
]

log = logging.getLogger(__name__)

_POSITIVE_HADRONS = (211, 321, 2212)
"""|pdgId| whose positive code has positive charge (leptons have the opposite convention)."""


def charge_from_pdgid(pdgid: np.ndarray) -> np.ndarray:
    """Electric charge (int32) of charged PF candidates from their signed PDG id."""
    pdgid = np.asarray(pdgid, np.int64)
    hadron = np.isin(np.abs(pdgid), _POSITIVE_HADRONS)
    return (np.sign(pdgid) * np.where(hadron, 1, -1)).astype(np.int32)


def _materialized(buffer: object) -> np.ndarray | None:
    """The numpy array behind a layout buffer (virtual ones materialised), else None."""
    if not isinstance(buffer, np.ndarray) and hasattr(buffer, "materialize"):
        buffer = buffer.materialize()
    return buffer if isinstance(buffer, np.ndarray) else None


def _list_parts(array: ak.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """(offsets, flat numeric content) of a jagged branch, or None if it is not that simple."""
    layout = array.layout
    if not isinstance(layout, ak.contents.ListOffsetArray):
        return None
    content = layout.content
    if (
        not isinstance(content, ak.contents.NumpyArray)
        or content.parameter("__array__") is not None
    ):
        return None
    offsets = _materialized(layout.offsets.data)
    data = _materialized(content.data)
    if offsets is None or data is None or data.ndim != 1:
        return None
    return offsets, data


def flat_values(array: ak.Array) -> np.ndarray:
    """Flat numpy content of a jagged (entries x var) numeric branch.

    Read from the layout's offsets and buffer (a view, no awkward operation); anything else
    goes through ``ak.flatten``.
    """
    parts = _list_parts(array)
    if parts is None:
        return ak.to_numpy(ak.flatten(array, axis=1))
    offsets, data = parts
    return data[int(offsets[0]) : int(offsets[-1])] if len(offsets) else data[:0]


def list_counts(array: ak.Array) -> np.ndarray:
    """Entries per list (int64) of a jagged branch, from its offsets where possible."""
    parts = _list_parts(array)
    if parts is None:
        return ak.to_numpy(ak.num(array, axis=1)).astype(np.int64)
    return np.diff(parts[0]).astype(np.int64, copy=False)


def entry_values(array: ak.Array) -> np.ndarray:
    """numpy values of a flat (entries,) branch, from its buffer where possible."""
    layout = array.layout
    if isinstance(layout, ak.contents.NumpyArray):
        data = _materialized(layout.data)
        if data is not None:
            return data
    return ak.to_numpy(array)


def _normalise(values: np.ndarray) -> np.ndarray:
    """float32 for real and int32 for integer constituent fields, whatever the file stores."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return values.astype(np.float32, copy=False)
    if values.dtype.kind in "iu":
        return values.astype(np.int32, copy=False)
    return values


class _Columns:
    """Constituent columns, one row per constituent: branches gathered once, on first use.

    ``index`` maps the rows to the flat branch arrays (None: the rows are the branches' own),
    so selections and reorderings compose integer indices, and each branch is gathered once,
    at the rows finally kept (issue 8: the build gathered every branch three times). Columns
    computed here (charge from pdgId, PUPPI-weighted pT, ...) are stored.
    """

    def __init__(
        self,
        source: BranchSource | None,
        branches: dict[str, str],
        index: np.ndarray | None,
        stored: dict[str, np.ndarray] | None = None,
        names: list[str] | None = None,
    ) -> None:
        self._source = source
        self._branches = branches
        self._index = index
        self._stored = stored if stored is not None else {}
        self.names = names if names is not None else list(branches)

    @classmethod
    def of(cls, columns: dict[str, np.ndarray]) -> _Columns:
        """Columns that are all already in memory."""
        return cls(None, {}, None, dict(columns), list(columns))

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._stored:
            if name not in self._branches:
                raise KeyError(name)
            flat = flat_values(self._source[self._branches[name]])
            self._stored[name] = flat if self._index is None else flat[self._index]
        return self._stored[name]

    def __setitem__(self, name: str, values: np.ndarray) -> None:
        self._stored[name] = values
        if name not in self.names:
            self.names.append(name)

    def pop(self, name: str, default: np.ndarray | None = None) -> np.ndarray | None:
        """Remove ``name`` and return its values (``default`` if absent)."""
        if name not in self.names:
            return default
        values = self[name]
        self.names.remove(name)
        self._stored.pop(name)
        self._branches.pop(name, None)
        return values

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: self[k] for k in self.names}

    def take(self, rows: np.ndarray) -> _Columns:
        """The columns at ``rows`` (stored ones gathered now, branches when used)."""
        index = rows if self._index is None else self._index[rows]
        stored = {k: v[rows] for k, v in self._stored.items()}
        return _Columns(
            self._source, dict(self._branches), index, stored, list(self.names)
        )


def _pt_order(pt: np.ndarray, jet_of_row: np.ndarray) -> np.ndarray | None:
    """Stable (jet, decreasing pT) order of the rows, or None if they are in that order.

    The check is one vectorised pass; files written by PFNano and the simulation already
    store candidates per jet by decreasing pT, so the ``np.lexsort`` runs only when needed.
    """
    if len(pt) < 2:
        return None
    step = jet_of_row[1:] - jet_of_row[:-1]
    if np.all(step >= 0) and not np.any((step == 0) & ~(pt[1:] <= pt[:-1])):
        return None
    return np.lexsort((-np.asarray(pt, np.float64), jet_of_row))


def _records(
    columns: _Columns,
    jet_of_row: np.ndarray,
    n_jets: int,
    fields: tuple[str, ...] | None = None,
) -> ak.Array:
    """Per-jet lists of records from rows already ordered by (jet, decreasing pT)."""
    keep = [k for k in (fields or columns.names) if k in columns]
    counts = np.bincount(jet_of_row, minlength=n_jets)
    offsets = np.zeros(n_jets + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    record = ak.contents.RecordArray(
        [ak.contents.NumpyArray(_normalise(columns[k])) for k in keep],
        keep,
        length=len(jet_of_row),
    )
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


def assemble(
    columns: dict[str, np.ndarray],
    jet_of_row: np.ndarray,
    n_jets: int,
    fields: tuple[str, ...] | None = None,
) -> ak.Array:
    """Per-jet lists of constituent records sorted by decreasing pT.

    Parameters
    ----------
    columns
        Flat columns, one row per constituent; must contain ``"pt"`` [GeV].
    jet_of_row
        Flat jet index (0..n_jets-1) of each row, shape (n_rows,).
    n_jets
        Number of jets of the table (jets without rows get empty lists).
    fields
        Columns to keep (default: all).

    Returns
    -------
    awkward.Array
        Shape (n_jets, var) of records.
    """
    jet_of_row = np.asarray(jet_of_row, np.int64)
    cols = _Columns.of(columns)
    order = _pt_order(np.asarray(columns["pt"]), jet_of_row)
    if order is not None:
        cols, jet_of_row = cols.take(order), jet_of_row[order]
    return _records(cols, jet_of_row, n_jets, fields)


def _rows_per_event(
    source: BranchSource,
    spec: ConstituentSource,
    fields: dict[str, str],
    jet_counts: np.ndarray,
) -> tuple[_Columns, np.ndarray]:
    """Columns and flat jet index of the valid link rows of a per-event layout."""
    jet_counts = np.asarray(jet_counts, np.int64)
    jet_offsets = np.concatenate(([0], np.cumsum(jet_counts)))
    link_jet = source[spec.jet_index]
    n_link = list_counts(link_jet)
    event = np.repeat(np.arange(len(n_link)), n_link)
    local_jet = flat_values(link_jet).astype(np.int64)
    bad = (local_jet < 0) | (local_jet >= jet_counts[event])
    link = spec.jet_index.split("_")[0]
    unlinked = np.zeros(local_jet.size, np.bool_)
    if spec.kind == "indexed":
        t_counts = list_counts(source[fields["pt"]])
        t_offsets = np.concatenate(([0], np.cumsum(t_counts)))
        local_t = flat_values(source[spec.target_index]).astype(np.int64)
        # -1: the linked object is not in the target collection (e.g. a JetSVs vertex that
        # failed the SV collection's selection); anything else out of range is corrupt
        unlinked = local_t == -1
        bad |= ~unlinked & ((local_t < 0) | (local_t >= t_counts[event]))
        if unlinked.any():
            log.info(
                "%s: %d of %d %s rows have %s = -1 (not in %s); not used",
                source.path,
                int(np.count_nonzero(unlinked)),
                unlinked.size,
                link,
                spec.target_index,
                spec.prefix.rstrip("_"),
            )
    if bad.any():
        log.warning(
            "%s: %d of %d %s rows point outside their event's collections; ignored",
            source.path,
            int(np.count_nonzero(bad)),
            bad.size,
            link,
        )
    valid = ~bad & ~unlinked
    if spec.kind == "indexed":
        rows = (t_offsets[event] + local_t)[valid]
    else:
        rows = np.flatnonzero(valid)
    return _Columns(source, fields, rows), (jet_offsets[event] + local_jet)[valid]


def _rows_per_jet(
    source: BranchSource, fields: dict[str, str]
) -> tuple[_Columns, np.ndarray]:
    """Columns and jet index of jagged per-jet branches (one tree entry per jet)."""
    counts = list_counts(source[next(iter(fields.values()))])
    return _Columns(source, fields, None), np.repeat(np.arange(len(counts)), counts)


def _derive_jetclass(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """pT, eta, phi, mass and pdgId of JetClass-II particles from (px, py, pz, E) and flags."""
    px, py, pz, energy = (
        np.asarray(columns[k], np.float64) for k in ("px", "py", "pz", "energy")
    )
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(np.where(pt > 0, pz / pt, 0.0))
    p2 = px * px + py * py + pz * pz
    charge = np.asarray(columns["charge"], np.int32)
    pdgid = np.select(
        [
            columns["isChargedHadron"],
            columns["isElectron"],
            columns["isMuon"],
            columns["isPhoton"],
            columns["isNeutralHadron"],
        ],
        [211 * charge, -11 * charge, -13 * charge, 22, 130],
        default=0,
    ).astype(np.int32)
    out = {
        "pt": pt.astype(np.float32),
        "eta": eta.astype(np.float32),
        "phi": np.arctan2(py, px).astype(np.float32),
        "mass": np.sqrt(np.maximum(energy * energy - p2, 0.0)).astype(np.float32),
        "pdgId": pdgid,
        "charge": charge,
    }
    skip = {"px", "py", "pz", "energy", "charge"}
    out.update(
        (k, v) for k, v in columns.items() if k not in skip and not k.startswith("is")
    )
    charged = columns["isChargedHadron"] | columns["isElectron"] | columns["isMuon"]
    neutral = columns["isPhoton"] | columns["isNeutralHadron"]
    # the flags define the type here; charge agrees with them in the files seen
    out["_type"] = np.where(charged, 0, np.where(neutral, 1, -1)).astype(np.int8)
    return out


def build_constituents(
    source: BranchSource,
    specs: dict[str, ConstituentSource],
    *,
    n_jets: int,
    jet_counts: np.ndarray | None,
    puppi_weighted: bool = False,
) -> tuple[dict[str, ak.Array], dict[str, str]]:
    """Build every constituent type of a layout.

    Parameters
    ----------
    source
        Branch source of the file or events.
    specs
        The layout's constituent sources.
    n_jets
        Number of jets in the table.
    jet_counts
        Jets per event for per-event layouts (None for per-jet layouts).
    puppi_weighted
        Scale candidates by ``puppiWeight`` (PUPPI jets); CHS jets use False.

    Returns
    -------
    types : dict
        Constituent type -> (n_jets, var) records sorted by decreasing pT.
    missing : dict
        Constituent type -> reason, for types the file does not provide.
    """
    have = source.available
    types: dict[str, ak.Array] = {}
    missing: dict[str, str] = {}
    for name, spec in specs.items():
        if not spec.present(have):
            wanted = ", ".join(
                (*spec.link_branches(), spec.prefix + next(iter(spec.fields.values())))
            )
            for ctype in spec.types:
                missing[ctype] = f"{name} collection absent (needs {wanted})"
            continue
        fields = spec.field_branches(have)
        if spec.kind == "per_jet":
            columns, jet_of_row = _rows_per_jet(source, fields)
        else:
            columns, jet_of_row = _rows_per_event(source, spec, fields, jet_counts)
        if "isChargedHadron" in columns:
            columns = _Columns.of(_derive_jetclass(columns.as_dict()))
        elif "pdgId" in columns and "charge" not in columns and "charged" in spec.types:
            columns["charge"] = charge_from_pdgid(columns["pdgId"])
        if puppi_weighted and spec.types != ("sv",):
            if "puppiWeight" not in columns:
                msg = (
                    f"{source.path}: option puppi_weighted=True needs a puppiWeight for the "
                    f"{name} constituents, which this layout does not store; use "
                    "puppi_weighted=False (CHS jets)"
                )
                raise ConfigError(msg)
            weight = np.asarray(columns["puppiWeight"], np.float32)
            for k in ("pt", "mass"):
                if k in columns:
                    columns[k] = columns[k] * weight
            keep = np.flatnonzero(weight > 0)
            columns, jet_of_row = columns.take(keep), jet_of_row[keep]
        # one (jet, -pT) order for all rows; the type selections below keep it
        order = _pt_order(columns["pt"], jet_of_row)
        if order is not None:
            columns, jet_of_row = columns.take(order), jet_of_row[order]
        if len(spec.types) == 1:
            (ctype,) = spec.types
            types[ctype] = _records(columns, jet_of_row, n_jets)
            continue
        kind = columns.pop("_type", None)
        if kind is None:
            kind = np.where(np.asarray(columns["charge"]) != 0, 0, 1)
        neutral_fields = tuple(CONSTITUENT_FIELDS["neutral"])
        for code, ctype in enumerate(spec.types):
            sel = np.flatnonzero(kind == code)
            types[ctype] = _records(
                columns.take(sel),
                jet_of_row[sel],
                n_jets,
                fields=neutral_fields if ctype == "neutral" else None,
            )
    return types, missing

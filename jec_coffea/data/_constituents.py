"""Constituents by type (charged, neutral, sv) as jagged per-jet lists, sorted by decreasing pT.

Every layout reduces to the same flat form before assembly: one row per constituent with the
global (flat) index of its jet and flat numpy columns. :func:`assemble` then splits rows by type,
sorts them by (jet, -pT) with one ``np.lexsort`` and rebuilds per-jet lists with
``ak.unflatten`` by ``np.bincount`` counts, so jets without constituents of a present type get an
empty list and no Python loop runs over jets or candidates.

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

__all__ = ["assemble", "build_constituents", "charge_from_pdgid"]

log = logging.getLogger(__name__)

_POSITIVE_HADRONS = (211, 321, 2212)
"""|pdgId| whose positive code has positive charge (leptons have the opposite convention)."""


def charge_from_pdgid(pdgid: np.ndarray) -> np.ndarray:
    """Electric charge (int32) of charged PF candidates from their signed PDG id."""
    pdgid = np.asarray(pdgid, np.int64)
    hadron = np.isin(np.abs(pdgid), _POSITIVE_HADRONS)
    return (np.sign(pdgid) * np.where(hadron, 1, -1)).astype(np.int32)


def _flat(array: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(array, axis=1))


def _normalise(values: np.ndarray) -> np.ndarray:
    """float32 for real and int32 for integer constituent fields, whatever the file stores."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return values.astype(np.float32, copy=False)
    if values.dtype.kind in "iu":
        return values.astype(np.int32, copy=False)
    return values


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
    order = np.lexsort((-np.asarray(columns["pt"], np.float64), jet_of_row))
    keep = [k for k in (fields or tuple(columns)) if k in columns]
    records = ak.zip({k: _normalise(columns[k])[order] for k in keep}, depth_limit=1)
    counts = np.bincount(jet_of_row, minlength=n_jets)
    return ak.unflatten(records, counts)


def _rows_per_event(
    source: BranchSource,
    spec: ConstituentSource,
    fields: dict[str, str],
    jet_counts: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Flat columns and flat jet index of the link rows of a per-event layout."""
    jet_counts = np.asarray(jet_counts, np.int64)
    jet_offsets = np.concatenate(([0], np.cumsum(jet_counts)))
    link_jet = source[spec.jet_index]
    n_link = ak.to_numpy(ak.num(link_jet, axis=1)).astype(np.int64)
    event = np.repeat(np.arange(len(n_link)), n_link)
    local_jet = _flat(link_jet).astype(np.int64)
    bad = (local_jet < 0) | (local_jet >= jet_counts[event])
    link = spec.jet_index.split("_")[0]
    unlinked = np.zeros(local_jet.size, np.bool_)
    if spec.kind == "indexed":
        target = source[fields["pt"]]
        t_counts = ak.to_numpy(ak.num(target, axis=1)).astype(np.int64)
        t_offsets = np.concatenate(([0], np.cumsum(t_counts)))
        local_t = _flat(source[spec.target_index]).astype(np.int64)
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
    columns = {name: _flat(source[branch])[rows] for name, branch in fields.items()}
    return columns, (jet_offsets[event] + local_jet)[valid]


def _rows_per_jet(
    source: BranchSource, fields: dict[str, str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Flat columns and jet index of jagged per-jet branches (one tree entry per jet)."""
    first = source[next(iter(fields.values()))]
    counts = ak.to_numpy(ak.num(first, axis=1)).astype(np.int64)
    columns = {name: _flat(source[branch]) for name, branch in fields.items()}
    return columns, np.repeat(np.arange(len(counts)), counts)


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
            columns = _derive_jetclass(columns)
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
            keep = weight > 0
            for k in ("pt", "mass"):
                if k in columns:
                    columns[k] = columns[k] * weight
            columns = {k: v[keep] for k, v in columns.items()}
            jet_of_row = jet_of_row[keep]
        if len(spec.types) == 1:
            (ctype,) = spec.types
            types[ctype] = assemble(columns, jet_of_row, n_jets)
            continue
        kind = columns.pop("_type", None)
        if kind is None:
            kind = np.where(np.asarray(columns["charge"]) != 0, 0, 1)
        neutral_fields = tuple(CONSTITUENT_FIELDS["neutral"])
        for code, ctype in enumerate(spec.types):
            sel = kind == code
            types[ctype] = assemble(
                {k: v[sel] for k, v in columns.items()},
                jet_of_row[sel],
                n_jets,
                fields=neutral_fields if ctype == "neutral" else None,
            )
    return types, missing

"""Build a jet table from a :class:`~._source.BranchSource` by walking a layout's tables.

This is the single builder behind ``read_jet_table`` (uproot) and ``jet_table_from_events``
(coffea NanoEvents). It flattens per-event collections to one row per jet with numpy offsets,
broadcasts event quantities with ``np.repeat``, derives the raw kinematics
(``pt_raw = Jet_pt * (1 - Jet_rawFactor)``, likewise mass), gen-matches by the one rule of
:mod:`._match`, assigns flavour groups with :func:`~.jet_table.flavour_group` and attaches the
constituents of :mod:`._constituents`. Fields a file lacks are left out and listed in
``JetTable.missing`` with the branches that were looked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from ..errors import MissingBranchError
from ._constituents import build_constituents, entry_values, flat_values, list_counts
from ._layouts import Layout, resolve_fields
from ._match import delta_r, greedy_match, index_match
from ._source import BranchSource
from .jet_table import JET_FIELDS, JetTable, flavour_group

__all__ = ["BuildReport", "build_jet_table"]

log = logging.getLogger(__name__)

_DTYPES: dict[str, type] = {
    "run": np.uint32,
    "luminosityBlock": np.uint32,
    "event": np.uint64,
    "npv": np.int32,
    "n_constituents": np.int32,
    "n_electrons": np.int32,
    "n_muons": np.int32,
    "jet_id": np.int32,
    "hadron_flavour": np.int32,
    "parton_flavour": np.int32,
    "gen_jet_idx": np.int64,
    "jetclass_label": np.int32,
    "entry": np.int64,
    "jet_index": np.int32,
    "flavour_group": np.int8,
}
"""Integer fields and their dtype in the jet table; floating-point fields are float64,
booleans stay boolean."""

_INPUT_ONLY = ("raw_factor", "mass_nano", "gen_jet_idx", "energy", "energy_gen")
"""Logical fields read only to derive others; not stored in the table."""


@dataclass
class BuildReport:
    """Facts about a build the public functions turn into warnings (with their stacklevel)."""

    defaulted: dict[str, str] = field(default_factory=dict)


def _as_dtype(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if name in _DTYPES:
        return values.astype(_DTYPES[name], copy=False)
    if values.dtype.kind == "f":
        return values.astype(np.float64, copy=False)
    return values


def _require(layout: Layout, found: dict[str, str], source: BranchSource) -> None:
    for name in sorted(layout.required):
        if name not in found:
            branch = layout.fields[name][0]
            raise MissingBranchError(
                branch,
                path=source.path,
                tree=source.tree,
                available=source.available,
                reason=f"needed for {name!r} of layout {layout.name!r}",
            )


def build_jet_table(
    source: BranchSource,
    layout: Layout,
    *,
    puppi_weighted: bool = False,
) -> tuple[JetTable, BuildReport]:
    """Build the jet table of ``source`` read as ``layout``.

    Parameters
    ----------
    source
        Per-entry arrays by branch name (uproot or NanoEvents).
    layout
        The layout tables (see :data:`._layouts.LAYOUTS`).
    puppi_weighted
        Weight PF candidates by puppiWeight (PUPPI jets).

    Returns
    -------
    table : JetTable
        One entry per jet.
    report : BuildReport
        Event-level defaults applied (the caller warns).

    Raises
    ------
    MissingBranchError
        A required branch (raw kinematics) is absent.
    """
    found, absent = resolve_fields(layout, source.available)
    _require(layout, found, source)
    report = BuildReport()
    missing: dict[str, str] = {}
    n_entries = len(source)
    if layout.per_jet:
        cols = {name: entry_values(source[b]) for name, b in found.items()}
        n_jets = n_entries
        jet_counts = None
        cols["entry"] = np.arange(n_jets, dtype=np.int64) + source.entry_start
        cols["jet_index"] = np.zeros(n_jets, np.int32)
    else:
        jet_counts = list_counts(source[found["pt_nano"]])
        n_jets = int(jet_counts.sum())
        event_of_jet = np.repeat(np.arange(n_entries), jet_counts)
        starts = np.concatenate(([0], np.cumsum(jet_counts)[:-1])).astype(np.int64)
        cols = {}
        for name, branch in found.items():
            array = source[branch]
            if branch.startswith("Jet_"):
                cols[name] = flat_values(array)
            else:
                cols[name] = entry_values(array)[event_of_jet]
        cols["entry"] = event_of_jet.astype(np.int64) + source.entry_start
        cols["jet_index"] = (np.arange(n_jets) - starts[event_of_jet]).astype(np.int32)
        _derive_nano(cols, absent, report, n_jets)
    _derive_per_jet(cols, layout)
    _gen_match(cols, source, layout, found, jet_counts, absent, missing)
    if "hadron_flavour" in cols and "parton_flavour" in cols:
        cols["flavour_group"] = flavour_group(
            cols["hadron_flavour"].astype(np.int32),
            cols["parton_flavour"].astype(np.int32),
        )
    elif "pt_gen" in cols:
        # simulation without parton/hadron flavour (e.g. JetClass-II): flavour unknown
        cols["flavour_group"] = np.full(n_jets, 4, np.int8)
        missing["hadron_flavour"] = absent.pop(
            "hadron_flavour", "the layout has no hadron flavour"
        )
        missing["parton_flavour"] = absent.pop(
            "parton_flavour", "the layout has no parton flavour"
        )
    else:
        missing["flavour_group"] = "no flavour information (data?)"
    for name in _INPUT_ONLY:
        cols.pop(name, None)
        absent.pop(name, None)
    constituents, missing_types = build_constituents(
        source,
        dict(layout.constituents),
        n_jets=n_jets,
        jet_counts=jet_counts,
        puppi_weighted=puppi_weighted,
    )
    if layout.constituents:
        cols["constituents_complete"] = np.full(
            n_jets, layout.constituents_complete, np.bool_
        )
    else:
        missing["constituents_complete"] = "the layout stores no constituents"
    for ctype in ("charged", "neutral", "sv"):
        if ctype not in constituents:
            missing[ctype] = missing_types.get(
                ctype, "the layout stores no constituents"
            )
    missing.update({k: v for k, v in absent.items() if k not in cols})
    for name in JET_FIELDS:
        if name not in cols and name not in missing:
            missing[name] = f"not stored in the {layout.name} layout"
    data = {k: _as_dtype(k, v) for k, v in cols.items()}
    # the record layout is built directly (ak.Array(dict) re-inspects every column)
    order = _ordered(data)
    contents = [ak.contents.NumpyArray(data[k]) for k in order]
    contents += [c.layout for c in constituents.values()]
    lengths = {len(c) for c in contents}
    if lengths - {n_jets}:  # pragma: no cover - internal consistency
        msg = f"internal error: columns of {sorted(lengths)} rows for {n_jets} jets"
        raise AssertionError(msg)
    jets = ak.Array(
        ak.contents.RecordArray(contents, [*order, *constituents], length=n_jets)
    )
    log.debug(
        "%s: %d entries -> %d jets (%s)", source.path, n_entries, n_jets, layout.name
    )
    table = JetTable(
        jets=jets,
        layout=layout.name,
        source=source.path,
        jet_radius=layout.jet_radius,
        missing=dict(sorted(missing.items())),
    )
    return table, report


def _ordered(cols: dict[str, np.ndarray]) -> list[str]:
    """Jet-table field order: the contract's order first, then layout extras alphabetically."""
    known = [k for k in JET_FIELDS if k in cols]
    return known + sorted(k for k in cols if k not in JET_FIELDS)


def _derive_nano(
    cols: dict[str, np.ndarray],
    absent: dict[str, str],
    report: BuildReport,
    n_jets: int,
) -> None:
    """Raw kinematics and event-level defaults of NanoAOD-like files."""
    scale = 1.0 - cols["raw_factor"].astype(np.float64)
    cols["pt_raw"] = cols["pt_nano"].astype(np.float64) * scale
    cols["mass_raw"] = cols["mass_nano"].astype(np.float64) * scale
    if "luminosityBlock" not in cols and "run" in cols:
        cols["luminosityBlock"] = np.zeros(n_jets, np.uint32)
        absent.pop("luminosityBlock", None)
        report.defaulted["luminosityBlock"] = "no luminosityBlock branch; using 0"
    if "gen_weight" not in cols:
        cols["gen_weight"] = np.ones(n_jets, np.float64)
        absent.pop("gen_weight", None)
        log.info("no genWeight branch: gen_weight = 1 for every jet")


def _derive_per_jet(cols: dict[str, np.ndarray], layout: Layout) -> None:
    """Masses from energies (JetClass-II) and defaults of per-jet layouts."""
    for e_name, pt, eta, out in (
        ("energy", "pt_raw", "eta", "mass_raw"),
        ("energy_gen", "pt_gen", "eta_gen", "mass_gen"),
    ):
        if e_name in cols and pt in cols and eta in cols:
            p = cols[pt].astype(np.float64) * np.cosh(cols[eta].astype(np.float64))
            energy = cols[e_name].astype(np.float64)
            cols[out] = np.sqrt(np.maximum(energy * energy - p * p, 0.0))
    if layout.per_jet and "gen_weight" not in cols:
        cols["gen_weight"] = np.ones(len(cols["entry"]), np.float64)


def _gen_match(
    cols: dict[str, np.ndarray],
    source: BranchSource,
    layout: Layout,
    found: dict[str, str],
    jet_counts: np.ndarray | None,
    absent: dict[str, str],
    missing: dict[str, str],
) -> None:
    """Fill matched, pt_gen, eta_gen, phi_gen, mass_gen by the one matching rule."""
    max_dr = layout.jet_radius / 2
    gen_names = ("pt_gen", "eta_gen", "phi_gen", "mass_gen")
    if layout.per_jet:
        if "pt_gen" not in cols:
            for name in ("matched", *gen_names):
                missing[name] = "the layout has no gen jets"
            return
        # the gen jet is already paired with the jet; apply the same dR cut
        dr = delta_r(cols["eta"], cols["phi"], cols["eta_gen"], cols["phi_gen"])
        matched = np.isfinite(dr) & (dr < max_dr) & (cols["pt_gen"] > 0)
        for name in gen_names:
            if name in cols:
                cols[name] = np.where(matched, cols[name].astype(np.float64), np.nan)
        cols["matched"] = matched
        return
    have = source.available
    if not all(b in have for b in layout.gen_jets.values()):
        reason = "no GenJet collection (" + ", ".join(layout.gen_jets.values()) + ")"
        for name in ("matched", *gen_names):
            missing[name] = reason
        return
    gen = {k: flat_values(source[b]) for k, b in layout.gen_jets.items()}
    gen_counts = list_counts(source[layout.gen_jets["pt"]])
    if "gen_jet_idx" in cols:
        event_of_jet = np.repeat(np.arange(len(jet_counts)), jet_counts)
        gidx = index_match(event_of_jet, cols["gen_jet_idx"], gen_counts)
    else:
        log.info(
            "%s: no %s; matching to the closest GenJet (each used once)",
            source.path,
            layout.fields["gen_jet_idx"][0],
        )
        gidx = greedy_match(
            jet_counts,
            cols["eta"],
            cols["phi"],
            gen_counts,
            gen["eta"],
            gen["phi"],
            max_dr,
        )
    has = gidx >= 0
    safe = np.where(has, gidx, 0)
    values = {
        k: np.where(has, v[safe].astype(np.float64), np.nan)
        if v.size
        else np.full(len(gidx), np.nan)
        for k, v in gen.items()
    }
    dr = delta_r(cols["eta"], cols["phi"], values["eta"], values["phi"])
    matched = has & (dr < max_dr)
    for k, v in values.items():
        cols[f"{k}_gen"] = np.where(matched, v, np.nan)
    cols["matched"] = matched
    absent.pop("gen_jet_idx", None)

"""coffea NanoEvents schema for the old PFNano layout.

In the old PFNano layout (e.g. cms-jet/PFNano's 106X test output) ``JetPFCands_*`` carries the
candidate kinematics itself and there is no global ``PFCands`` table; only candidates with
puppiWeight > 0 are stored, so the rows per jet do not add up to ``Jet_nConstituents``. coffea's
``PFNanoAODSchema`` nests ``JetPFCands`` into ``Jet`` by ``Jet_nConstituents`` and cross-references
``JetPFCands_pFCandsIdx``, which fails on these files ("counts do not fit"). This schema keeps
everything else of ``PFNanoAODSchema`` and treats ``JetPFCands`` as a plain candidate collection,
linked to its jet by ``jetIdx`` only; the jet table groups it by that index.
"""

from __future__ import annotations

from typing import ClassVar

from coffea.nanoevents.schemas import PFNanoAODSchema

__all__ = ["OldPFNanoAODSchema"]

_OLD_LAYOUT_COLLECTIONS = (
    "JetPFCands",
    "FatJetPFCands",
    "GenJetCands",
    "GenFatJetCands",
)


class OldPFNanoAODSchema(PFNanoAODSchema):
    """PFNanoAODSchema for the old layout: ``JetPFCands`` holds kinematics, grouped by jetIdx."""

    warn_missing_crossrefs = False
    """The PFNano cross references of collections the old layout lacks (JetSVs, GenJetSVs,
    GenJetCands_jetIdx) are expected to be absent; do not warn about each."""

    mixins: ClassVar[dict[str, str]] = {
        **PFNanoAODSchema.mixins,
        **dict.fromkeys(_OLD_LAYOUT_COLLECTIONS, "PFCand"),
    }
    """Old-layout candidate tables carry their own four-vectors (``PFCand`` behaviour)."""

    all_cross_references: ClassVar[dict[str, str]] = {
        key: target
        for key, target in PFNanoAODSchema.all_cross_references.items()
        if not key.endswith("_pFCandsIdx")
    }
    """No ``pFCandsIdx`` cross references: the old layout has no global candidate table."""

    nested_index_items: ClassVar[dict[str, tuple[str, str]]] = {
        key: value
        for key, value in PFNanoAODSchema.nested_index_items.items()
        if value[1] not in _OLD_LAYOUT_COLLECTIONS
    }
    """No nesting of candidates into jets by ``nConstituents`` (the counts do not fit)."""

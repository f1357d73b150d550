"""Readers of every supported layout into the jet table, and dataset descriptions."""

from __future__ import annotations

from .jet_table import (
    CONSTITUENT_FIELDS,
    CONSTITUENT_TYPES,
    FLAVOUR_GROUPS,
    JET_FIELDS,
    JetTable,
    flavour_group,
)
from .reader import (
    LAYOUT_NAMES,
    detect_layout,
    jet_table_from_events,
    layout_branches,
    read_jet_table,
)

__all__ = [
    "CONSTITUENT_FIELDS",
    "CONSTITUENT_TYPES",
    "FLAVOUR_GROUPS",
    "JET_FIELDS",
    "LAYOUT_NAMES",
    "JetTable",
    "OldPFNanoAODSchema",
    "detect_layout",
    "flavour_group",
    "jet_table_from_events",
    "layout_branches",
    "read_jet_table",
]


def __getattr__(name: str):
    # the NanoEvents schema imports coffea.nanoevents; load it only when asked for
    if name == "OldPFNanoAODSchema":
        from .schema import OldPFNanoAODSchema

        return OldPFNanoAODSchema
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return list(__all__)

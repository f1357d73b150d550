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

__all__ = [
    "CONSTITUENT_FIELDS",
    "CONSTITUENT_TYPES",
    "FLAVOUR_GROUPS",
    "JET_FIELDS",
    "JetTable",
    "flavour_group",
]

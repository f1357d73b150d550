"""The jet-table builder on dask-awkward NanoEvents (``coffea.dataset_tools.apply_to_fileset``).

The builder is eager (numpy offsets, numba); under dask it runs once per partition through
``dask_awkward.map_partitions``, as correctionlib's ``_wrap_dask_awkward`` does. Only the
branches the layout declares are zipped into the mapped array, so dask-awkward's column
optimisation reads exactly those. On typetracers (graph construction and column optimisation)
the partition function runs the builder on a length-zero concrete array, which touches exactly
the zipped columns, and returns its typetracer as ``meta``.

Under dask the ``entry`` field counts from the start of each partition (dask-awkward does not
pass the partition's entry offset); event ids (run, luminosityBlock, event) are unaffected.
"""

from __future__ import annotations

import awkward as ak

from ._build import BuildReport, build_jet_table
from ._layouts import Layout, needed_branches
from ._source import NanoEventsSource
from .jet_table import JetTable

__all__ = ["is_dask", "jet_table_from_dask_events"]


def is_dask(events: object) -> bool:
    """True for a dask-awkward array (without importing dask_awkward otherwise)."""
    return type(events).__module__.startswith("dask_awkward")


class _RecordSource:
    """A :class:`~._source.BranchSource` over one record array whose fields are branch names."""

    def __init__(self, array: ak.Array, path: str, tree: str) -> None:
        self._array = array
        self.available = frozenset(array.fields)
        self.path, self.tree, self.entry_start = path, tree, 0

    def __getitem__(self, branch: str) -> ak.Array:
        return self._array[branch]

    def __len__(self) -> int:
        return len(self._array)


class _PartitionBuilder:
    """Picklable partition function: zipped branches of one partition -> jets."""

    def __init__(self, layout: Layout, path: str, tree: str, puppi: bool) -> None:
        self.layout, self.path, self.tree, self.puppi = layout, path, tree, puppi

    def build(self, array: ak.Array) -> tuple[JetTable, BuildReport]:
        source = _RecordSource(array, self.path, self.tree)
        return build_jet_table(source, self.layout, puppi_weighted=self.puppi)

    def __call__(self, array: ak.Array) -> ak.Array:
        if ak.backend(array) == "typetracer":
            zero = ak.typetracer.length_zero_if_typetracer(array)
            jets = self.build(zero)[0].jets
            return ak.Array(jets.layout.to_typetracer(forget_length=True))
        return self.build(array)[0].jets


def jet_table_from_dask_events(
    events, layout: Layout, *, source: str, puppi_weighted: bool
) -> tuple[JetTable, BuildReport]:
    """Jet table whose ``jets`` is a dask-awkward array (one partition per events partition).

    ``missing`` and the report come from the layout and the branches of the events' form, so
    they are known without computing anything.
    """
    import dask_awkward as dak

    branches = NanoEventsSource(events, source)
    needed = sorted(needed_branches(layout, branches.available))
    zipped = dak.zip({b: branches[b] for b in needed}, depth_limit=1)
    builder = _PartitionBuilder(layout, branches.path, branches.tree, puppi_weighted)
    empty = ak.typetracer.length_zero_if_typetracer(zipped._meta)
    template, report = builder.build(empty)
    jets = dak.map_partitions(
        builder,
        zipped,
        label="jec-coffea-jet-table",
        meta=ak.Array(template.jets.layout.to_typetracer(forget_length=True)),
    )
    table = JetTable(
        jets=jets,
        layout=template.layout,
        source=branches.path,
        jet_radius=template.jet_radius,
        missing=template.missing,
    )
    return table, report

"""The dask-awkward path of a processor: same per-chunk code, lazily, on exactly the needed columns.

``coffea.dataset_tools.apply_to_fileset`` hands a processor dask-awkward NanoEvents. The
response processor's work per chunk (jet table, numba matching, onnxruntime, histogram fills)
is eager code, so instead of re-expressing it with dask-awkward operations, each partition is
materialised and passed to the very same :meth:`ResponseProcessor.process` as under
``processor.Runner``; the outputs are merged by a tree of ``coffea.processor.accumulate``. This
is what makes the two paths give identical histograms.

Only the columns the jet-table builder reads are loaded: the branches are derived from the
layout tables (:func:`jec_coffea.data._layouts.needed_branches`, plus the generator leptons of
the lepton veto and the jet counts), their buffers are found with
``dask_awkward.report_necessary_columns`` and the input layer is projected onto them with
``dask_awkward.manual.optimize_columns`` before the partitions are turned into delayed objects.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from coffea.processor.accumulator import accumulate

from ..data._layouts import LAYOUTS, needed_branches
from ..data._source import NanoEventsSource
from ..errors import ConfigError

if TYPE_CHECKING:
    from .response import ResponseProcessor

__all__ = ["is_dask_awkward", "process_dask"]

logger = logging.getLogger(__name__)

_LEPTON_FIELDS = ("pdgId", "statusFlags", "status", "pt", "eta", "phi")
_TREE_FAN_IN = 16


def is_dask_awkward(events: Any) -> bool:
    """True for a dask-awkward array (without importing dask_awkward)."""
    return type(events).__module__.startswith("dask_awkward")


def _needed(events: Any, layout: str | None) -> tuple[str, list[Any]]:
    """Layout name and the dask-awkward arrays of every branch the processor reads."""
    source = NanoEventsSource(events)
    if layout is None:
        for lay in LAYOUTS.values():
            if lay.matches(source.available):
                layout = lay.name
                break
        else:
            msg = "dask-awkward events match no supported layout; pass layout= to the processor"
            raise ConfigError(msg)
    touched = []
    for branch in sorted(needed_branches(LAYOUTS[layout], source.available)):
        coll, field = source._where[branch]
        touched.append(events[coll] if field is None else events[coll][field])
    fields = set(events.fields)
    if "Jet" in fields:
        touched.append(events.Jet.eta)
        touched.append(events.Jet.phi)
    if "GenPart" in fields:
        have = set(events.GenPart.fields)
        touched.extend(events.GenPart[f] for f in _LEPTON_FIELDS if f in have)
    return layout, touched


class _Partition:
    """Picklable call of the processor on one materialised partition."""

    def __init__(self, proc: ResponseProcessor) -> None:
        self.proc = proc

    def __call__(self, events: Any) -> dict[str, Any]:
        return self.proc.process(events)


def _merge(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return accumulate(outputs)


def process_dask(proc: ResponseProcessor, events: Any) -> Any:
    """Lazy output of ``proc`` over dask-awkward ``events`` (a ``dask.delayed`` object).

    ``dask.compute`` of the result gives the same dict as ``processor.Runner``.
    """
    import copy

    import dask
    import dask_awkward as dak
    from dask_awkward.manual import optimize_columns

    layout, touched = _needed(events, proc.layout)
    if LAYOUTS[layout].per_jet and proc.split != "all":
        msg = (
            f"the dask-awkward path does not know the file of each partition, which the "
            f"split of per-jet layouts ({layout}) needs; use split='all' or processor.Runner"
        )
        raise ConfigError(msg)
    columns = dak.report_necessary_columns(*touched)
    logger.debug(
        "dask-awkward path: layout %s, columns %s",
        layout,
        {k: len(v) for k, v in columns.items()},
    )
    slim = optimize_columns(events, {k: frozenset(v) for k, v in columns.items()})
    fixed = copy.copy(proc)
    fixed.layout = layout
    call = _Partition(fixed)
    parts = [dask.delayed(call)(p) for p in slim.to_delayed(optimize_graph=False)]
    while len(parts) > 1:
        parts = [
            dask.delayed(_merge)(parts[i : i + _TREE_FAN_IN])
            for i in range(0, len(parts), _TREE_FAN_IN)
        ]
    return parts[0]

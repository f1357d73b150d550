"""Abstract source of per-entry arrays keyed by branch name, fed by uproot or coffea NanoEvents.

The jet-table builder only ever asks a :class:`BranchSource` two things: which branch names
exist (``available``) and the array of one branch (``source["Jet_pt"]``, jagged per entry for
collections). Training reads files with :class:`UprootSource` (one ``tree.arrays`` call with the
branches the layout declares); processors hand their NanoEvents to :class:`NanoEventsSource`,
which maps ``"Coll_field"`` to ``events.Coll.field`` (NanoAODSchema, PFNanoAODSchema, the
old-layout schema) or ``events["Coll_field"]`` (BaseSchema). One builder serves both, so what a
network saw in training is what it sees in a processor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

import awkward as ak

from ._open import reading

__all__ = ["BranchSource", "NanoEventsSource", "UprootSource"]

log = logging.getLogger(__name__)


class BranchSource(Protocol):
    """Per-entry arrays keyed by branch name.

    Attributes
    ----------
    available
        Every branch name the source can provide.
    path
        File path or URL, for messages.
    tree
        Tree name, for messages.
    entry_start
        Tree entry of the first array element (for the ``entry`` field).
    """

    available: frozenset[str]
    path: str
    tree: str
    entry_start: int

    def __getitem__(self, branch: str) -> ak.Array:
        """The array of ``branch``: one element per tree entry."""
        ...

    def __len__(self) -> int:
        """Number of tree entries covered."""
        ...


class UprootSource:
    """Branches of an uproot TTree, read in one ``tree.arrays`` call.

    Parameters
    ----------
    tree
        An open ``uproot.TTree``.
    path
        File path (for messages).
    entry_start, entry_stop
        Entry range as in ``uproot.TTree.arrays``.
    """

    def __init__(
        self,
        tree: Any,
        path: str,
        entry_start: int | None = None,
        entry_stop: int | None = None,
    ) -> None:
        self._tree = tree
        self.path = str(path)
        self.tree = tree.name
        n = int(tree.num_entries)
        start = 0 if entry_start is None else int(entry_start)
        stop = n if entry_stop is None else int(entry_stop)
        start = min(max(start + n if start < 0 else start, 0), n)
        stop = min(max(stop + n if stop < 0 else stop, start), n)
        self.entry_start, self.entry_stop = start, stop
        self.available = frozenset(tree.keys(recursive=False))
        self._arrays: dict[str, ak.Array] = {}

    def load(self, branches: Iterable[str]) -> None:
        """Read ``branches`` (all at once; only these are read from the file)."""
        todo = sorted(set(branches) - set(self._arrays))
        if not todo:
            return
        what = (
            f"branches {', '.join(todo[:4])}{', ...' if len(todo) > 4 else ''} of tree "
            f"{self.tree!r}, entries {self.entry_start}-{self.entry_stop}"
        )
        with reading(self.path, what):
            arrays = self._tree.arrays(
                todo,
                entry_start=self.entry_start,
                entry_stop=self.entry_stop,
                library="ak",
                how=dict,
            )
        log.debug(
            "read %d branches, %d entries from %s",
            len(todo),
            self.entry_stop - self.entry_start,
            self.path,
        )
        self._arrays.update(arrays)

    @property
    def branches_read(self) -> frozenset[str]:
        """Branches read so far (for tests asserting that only declared branches are read)."""
        return frozenset(self._arrays)

    def __getitem__(self, branch: str) -> ak.Array:
        if branch not in self._arrays:
            self.load([branch])
        return self._arrays[branch]

    def __len__(self) -> int:
        return self.entry_stop - self.entry_start


class NanoEventsSource:
    """Branches of coffea NanoEvents, addressed by their flat NanoAOD branch names.

    Parameters
    ----------
    events
        NanoEvents (eager or virtual) from any schema: ``"Coll_field"`` is looked up as
        ``events["Coll_field"]`` (BaseSchema, flat event-level names) or ``events.Coll.field``.
    path
        File path (for messages); defaults to the events' metadata ``filename`` if present.
    """

    def __init__(self, events: ak.Array, path: str = "") -> None:
        self._events = events
        metadata = _metadata(events)
        self.path = str(path or metadata.get("filename", "") or "<events>")
        self.tree = str(metadata.get("treename", "Events"))
        self.entry_start = int(metadata.get("entrystart", 0) or 0)
        names: set[str] = set()
        self._where: dict[str, tuple[str, str | None]] = {}
        for name in events.fields:
            sub = events[name].fields
            if sub:
                for f in sub:
                    names.add(f"{name}_{f}")
                    self._where[f"{name}_{f}"] = (name, f)
            else:
                names.add(name)
                self._where[name] = (name, None)
        self.available = frozenset(names)
        self.branches_read: set[str] = set()

    def __getitem__(self, branch: str) -> ak.Array:
        coll, field = self._where[branch]
        self.branches_read.add(branch)
        array = self._events[coll] if field is None else self._events[coll][field]
        if isinstance(array, ak.Array):
            # drop coffea behaviours: the builder works on plain numbers
            return ak.Array(array, behavior=None, attrs=None)
        return array  # dask-awkward: zipped and mapped by ._dask

    def __len__(self) -> int:
        return len(self._events)


def _metadata(events: ak.Array) -> dict:
    """The NanoEvents metadata dict (filename, treename, entrystart), or {}."""
    try:
        meta = events.metadata
    except AttributeError:
        return {}
    return dict(meta) if isinstance(meta, dict) else {}

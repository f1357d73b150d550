"""One reader interface: any supported file (or coffea NanoEvents) -> jet table.

``read_jet_table`` opens a file with uproot, detects its layout (or takes the one given), reads
exactly the branches the layout declares and builds the jet table;
``jet_table_from_events`` builds the same table from NanoEvents inside a coffea processor. Both
go through one builder (:mod:`._build`) fed by an abstract per-entry branch source, so training
and inference see identical fields. Supported layouts (:data:`LAYOUT_NAMES`):

``nanoaod``
    NanoAOD, Run-2 and Run-3 branch names; jet-level fields only.
``pfnano``
    PFNano current layout (``JetPFCands`` -> ``PFCands``, ``JetSVs`` -> ``SV``).
``pfnano_old``
    PFNano old layout (kinematics on ``JetPFCands``; constituents flagged incomplete).
``jetclass2``
    JetClass-II (tree ``tree``, AK8, one entry per jet; flavour unknown).
``mljec``
    ml-jec ntuples (tree ``Jets``, one entry per jet; ``pt_full_corr`` kept).

Anything else raises :class:`~jec_coffea.errors.UnsupportedLayoutError` naming the trees found.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path

import awkward as ak

from ..errors import ConfigError, MissingBranchError, UnsupportedLayoutError
from ._build import build_jet_table
from ._dask import is_dask, jet_table_from_dask_events
from ._layouts import LAYOUTS, Layout, needed_branches
from ._open import contents, open_root, reading, tree_names
from ._source import NanoEventsSource, UprootSource
from .jet_table import JetTable

__all__ = [
    "LAYOUT_NAMES",
    "detect_layout",
    "jet_table_from_events",
    "layout_branches",
    "read_jet_table",
]

log = logging.getLogger(__name__)

LAYOUT_NAMES: tuple[str, ...] = tuple(LAYOUTS)
"""Names accepted by ``layout=`` and returned by :func:`detect_layout`."""


def _layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        msg = f"unknown layout {name!r}; expected one of {', '.join(LAYOUT_NAMES)}"
        raise ConfigError(msg) from None


def _detect(path: str, directory, tree: str | None) -> tuple[Layout, object]:
    """Find (layout, TTree) in an open file; ``tree`` restricts the search to one tree."""
    with reading(path, "the list of trees"):
        trees = tree_names(directory)
    candidates = [tree] if tree else sorted({lay.tree for lay in LAYOUTS.values()})
    if tree and tree not in trees:
        raise MissingBranchError(
            tree,
            path=path,
            available=trees,
            reason=f"no such tree; trees in the file: {', '.join(trees) or 'none'}",
        )
    for name in candidates:
        if name not in trees:
            continue
        with reading(path, f"the branches of tree {name!r}"):
            ttree = directory[name]
            keys = set(ttree.keys(recursive=False))
        for layout in LAYOUTS.values():
            if (tree or layout.tree == name) and layout.matches(keys):
                return layout, ttree
        if name == "Events":
            key = "Jet_pt"
            raise MissingBranchError(
                key,
                path=path,
                tree=name,
                available=keys,
                reason="every NanoAOD/PFNano layout needs the Jet collection",
            )
    msg = (
        f"{path}: unsupported layout: no tree matches a supported layout "
        f"({', '.join(f'{lay.name} in {lay.tree!r}' for lay in LAYOUTS.values())}); "
        f"trees found: {contents(directory) or 'none'}"
    )
    raise UnsupportedLayoutError(msg)


def detect_layout(path: str | os.PathLike) -> str:
    """Name of the layout of a ROOT file (one of :data:`LAYOUT_NAMES`).

    Raises
    ------
    InputFileError
        The file is missing, empty, truncated or not ROOT.
    UnsupportedLayoutError
        No tree of the file matches a supported layout (the message lists the trees).
    MissingBranchError
        An ``Events`` tree without ``Jet_pt``.
    """
    path = os.fspath(path)
    local = Path(path.removeprefix("file://"))
    if "://" not in path.removeprefix("file://") and local.is_file():
        stat = local.stat()
        # processors call this once per chunk: remember the answer per file version
        return _detect_cached(path, stat.st_size, stat.st_mtime_ns)
    return _detect_uncached(path)


def _detect_uncached(path: str) -> str:
    with open_root(path) as directory:
        layout, _ = _detect(path, directory, None)
    return layout.name


@functools.lru_cache(maxsize=256)
def _detect_cached(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only
    return _detect_uncached(path)


def layout_branches(path: str | os.PathLike, *, layout: str | None = None) -> set[str]:
    """The exact set of branches :func:`read_jet_table` reads from ``path``."""
    path = os.fspath(path)
    with open_root(path) as directory:
        found, ttree = _detect(path, directory, None)
        lay = _layout(layout) if layout else found
        return needed_branches(lay, ttree.keys(recursive=False))


def _warn_defaults(report, path: str) -> None:
    for name, what in report.defaulted.items():
        warnings.warn(f"{path}: {what} ({name})", UserWarning, stacklevel=3)


def read_jet_table(
    path: str | os.PathLike,
    *,
    layout: str | None = None,
    tree: str | None = None,
    entry_start: int | None = None,
    entry_stop: int | None = None,
    puppi_weighted: bool = False,
) -> JetTable:
    """Read a file into the jet table (one entry per jet).

    Parameters
    ----------
    path
        ROOT file (local path or URL).
    layout
        Layout name (:data:`LAYOUT_NAMES`); detected from the branches when None.
    tree
        Tree name; default the layout's (``Events``, ``tree``, ``Jets``).
    entry_start, entry_stop
        Entry range of the tree (events for NanoAOD-like files, jets for per-jet trees).
    puppi_weighted
        Scale PF candidates by ``puppiWeight`` and drop zero-weight ones, for PUPPI jets.
        Default False (CHS jets).

    Returns
    -------
    JetTable
        ``jets`` holds the fields of :data:`~jec_coffea.data.jet_table.JET_FIELDS` the file
        provides plus layout extras (``pt_full_corr``, ``pnet_reg_corr``, ...) and the constituent
        types as (n_jets, var) records; ``missing`` names what the file lacks and why.

    Raises
    ------
    InputFileError
        Missing, empty, truncated, non-ROOT or corrupt file.
    UnsupportedLayoutError
        The file matches no supported layout.
    MissingBranchError
        A branch the layout requires (raw kinematics) is absent; lists the nearest names.
    ConfigError
        Unknown layout name or an option the file cannot honour.

    Warns
    -----
    UserWarning
        The file has no ``luminosityBlock`` (read as 0).
    """
    path = os.fspath(path)
    with open_root(path) as directory:
        if layout is not None:
            lay = _layout(layout)
            name = tree or lay.tree
            with reading(path, "the list of trees"):
                trees = tree_names(directory)
            if name not in trees:
                msg = (
                    f"{path}: unsupported layout: no tree {name!r} for layout {lay.name!r}; "
                    f"trees found: {contents(directory) or 'none'}"
                )
                raise UnsupportedLayoutError(msg)
            with reading(path, f"tree {name!r}"):
                ttree = directory[name]
        else:
            lay, ttree = _detect(path, directory, tree)
        source = UprootSource(ttree, path, entry_start, entry_stop)
        source.load(needed_branches(lay, source.available))
        table, report = build_jet_table(source, lay, puppi_weighted=puppi_weighted)
    _warn_defaults(report, path)
    log.info(
        "%s: layout %s, %d entries, %d jets", path, lay.name, len(source), len(table)
    )
    return table


def _layout_of_source(branches: NanoEventsSource) -> Layout:
    for layout in LAYOUTS.values():
        if layout.matches(branches.available):
            return layout
    collections = sorted({name.split("_")[0] for name in branches.available})
    shown = ", ".join(collections[:12]) + (", ..." if len(collections) > 12 else "")
    msg = (
        f"{branches.path}: unsupported layout: the events match none of "
        f"{', '.join(LAYOUT_NAMES)} (collections/branches found: {shown})"
    )
    raise UnsupportedLayoutError(msg)


def jet_table_from_events(
    events: ak.Array,
    *,
    layout: str | None = None,
    source: str = "",
    entry_start: int | None = None,
    puppi_weighted: bool = False,
) -> JetTable:
    """Build the jet table from coffea NanoEvents (inside a processor).

    Shares every step after branch access with :func:`read_jet_table`, so both give the same
    table for the same file and entry range. Eager and virtual NanoEvents give an eager table;
    dask-awkward NanoEvents (``mode="dask"``, ``apply_to_fileset``) give a table whose ``jets``
    is a dask-awkward array built per partition by the same code (``entry`` then counts from
    each partition's start).

    Parameters
    ----------
    events
        NanoEvents of any schema (``NanoAODSchema``, ``PFNanoAODSchema``,
        :class:`~jec_coffea.data.schema.OldPFNanoAODSchema` for ``pfnano_old``, ``BaseSchema``).
    layout
        Layout name (:data:`LAYOUT_NAMES`); per-jet layouts work with ``BaseSchema`` events.
        None detects it from the branch names of the events (the same signatures as
        :func:`detect_layout`, without reopening the file).
    source
        File name for messages and ``JetTable.source`` (default: the events' metadata
        ``filename``).
    entry_start
        Tree entry of the first event, for the ``entry`` field (default: the events' metadata
        ``entrystart``, as set by ``processor.Runner``, else 0).
    puppi_weighted
        As in :func:`read_jet_table`.
    """
    branches = NanoEventsSource(events, source)
    lay = _layout(layout) if layout is not None else _layout_of_source(branches)
    if is_dask(events):
        table, report = jet_table_from_dask_events(
            events, lay, source=source, puppi_weighted=puppi_weighted
        )
        _warn_defaults(report, branches.path)
        return table
    if entry_start is not None:
        branches.entry_start = int(entry_start)
    table, report = build_jet_table(branches, lay, puppi_weighted=puppi_weighted)
    _warn_defaults(report, branches.path)
    return table

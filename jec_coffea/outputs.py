"""What ``jec-coffea run`` writes, under stable names, in its output directory.

``OUT/histograms.coffea``
    The whole processor output (:class:`~jec_coffea.processors.ResponseProcessor`), written
    with ``coffea.util.save``; read back with ``coffea.util.load``. This is the input of the
    metrics, plots and reports.
``OUT/histograms.root``
    The same response histograms for ROOT users, written with uproot: one TH2D
    (x = pT_gen [GeV], y = response) per method, flavour group and |η_gen| bin under
    ``response/<method>/<flavour>/abs_eta_<i>`` (``i`` indexes
    :data:`~jec_coffea.histograms.ABS_ETA_EDGES`: 0 = 0-1.3, 1 = 1.3-2.5, 2 = 2.5-3.0,
    3 = 3.0-5.0); the reco views as ``corrected_pt/<method>/abs_eta_<i>`` (TH1D) and
    ``correction_factor/<method>/abs_eta_<i>`` (TH2D, x = pT_raw, y = factor). Sums of
    weights and of squared weights are kept (Weight storage); flow bins are written.
``OUT/run.json``
    Provenance of the run: command options, files processed (with their layout, chunks and
    events), methods skipped per file with the reasons, failures with their errors, cut-flow,
    timings and versions.
``OUT/columns/<dataset>/<file stem>_<uuid8>_<start>-<stop>.parquet``
    With ``--save-columns``: per chunk, the fill columns of the selected jets (event IDs, raw
    and gen kinematics, flavour, weight and the pT of every method), for unbinned studies.
``OUT/checkpoints/``
    One file per finished chunk (:class:`~jec_coffea.runner.ResumableCheckpointer`), used by
    ``--resume``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from .histograms import ABS_ETA_EDGES

__all__ = [
    "COFFEA_NAME",
    "COLUMNS_DIR",
    "ROOT_NAME",
    "RUN_JSON_NAME",
    "save_coffea",
    "save_root",
    "write_chunk_columns",
    "write_run_json",
]

logger = logging.getLogger(__name__)

COFFEA_NAME = "histograms.coffea"
ROOT_NAME = "histograms.root"
RUN_JSON_NAME = "run.json"
COLUMNS_DIR = "columns"


def save_coffea(output: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the processor output with ``coffea.util.save`` (lz4-compressed cloudpickle)."""
    from coffea.util import save

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save(dict(output), str(tmp))
    tmp.replace(path)
    logger.info("wrote %s", path)
    return path


def _root_key(*parts: str) -> str:
    return "/".join(str(p).replace("/", "_") for p in parts)


def save_root(output: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the response histograms as TH2D (and the reco views) with uproot.

    Parameters
    ----------
    output
        Processor output with ``response`` (axes method, flavour, abs_eta, pt_gen, response)
        and optionally ``corrected_pt`` and ``correction_factor``.
    path
        ROOT file to (re)create.
    """
    import uproot

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n_written = 0
    with uproot.recreate(tmp) as fout:
        h = output["response"]
        for method in h.axes["method"]:
            for flavour in h.axes["flavour"]:
                for i in range(len(ABS_ETA_EDGES) - 1):
                    sub = h[{"method": method, "flavour": flavour, "abs_eta": i}]
                    fout[_root_key("response", method, flavour, f"abs_eta_{i}")] = sub
                    n_written += 1
        for name in ("corrected_pt", "correction_factor"):
            view = output.get(name)
            if view is None:
                continue
            for method in view.axes["method"]:
                for i in range(len(ABS_ETA_EDGES) - 1):
                    sub = view[{"method": method, "abs_eta": i}]
                    fout[_root_key(name, method, f"abs_eta_{i}")] = sub
                    n_written += 1
    tmp.replace(path)
    logger.info("wrote %s: %d histograms", path, n_written)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def write_run_json(info: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the run provenance (any JSON-able mapping; numpy scalars and sets converted)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    logger.info("wrote %s", path)
    return path


def write_chunk_columns(
    directory: str,
    metadata: Mapping[str, Any],
    jets: ak.Array,
    mask: np.ndarray,
    estimates: Mapping[str, np.ndarray],
    layout: str,
) -> str | None:
    """Write the fill columns of one chunk's selected jets as a parquet file.

    Called by the processor on the worker. The name is derived from the chunk's dataset, file
    and entry range, so a retried or resumed chunk overwrites its own file and never
    duplicates jets.

    Parameters
    ----------
    directory
        Output directory (local path or fsspec URL reachable from the workers).
    metadata
        The NanoEvents metadata of the chunk (dataset, filename, fileuuid, entrystart,
        entrystop).
    jets
        Jet table of the chunk (after the split).
    mask
        (n_jets,) jets passing the selection (all False on collision data: the reco-level
        columns are then written for every jet instead).
    estimates
        Method -> (n_jets,) pT [GeV], NaN where not computed.
    layout
        Layout name, stored as a column.

    Returns
    -------
    str or None
        Path written, or None when the chunk has no jet to write.
    """
    import fsspec

    mask = np.asarray(mask, dtype=bool)
    if not mask.any() and "pt_gen" not in jets.fields:
        mask = np.ones(len(jets), dtype=bool)
    if not mask.any():
        return None
    keep = (
        "run",
        "luminosityBlock",
        "event",
        "entry",
        "jet_index",
        "pt_raw",
        "eta",
        "phi",
        "area",
        "event_rho",
        "npv",
        "gen_weight",
        "pt_gen",
        "eta_gen",
        "phi_gen",
        "flavour_group",
        "hadron_flavour",
        "parton_flavour",
    )
    columns: dict[str, Any] = {
        name: ak.to_numpy(jets[name][mask]) for name in keep if name in jets.fields
    }
    for method, pt in estimates.items():
        columns[f"pt_{method}"] = np.asarray(pt)[mask]
    columns["layout"] = np.full(int(mask.sum()), layout)
    dataset = str(metadata.get("dataset", "dataset")).replace("/", "_")
    stem = Path(str(metadata.get("filename", "events"))).name.split(".")[0]
    uuid8 = str(metadata.get("fileuuid", ""))[:8] or "nouuid"
    name = f"{stem}_{uuid8}_{metadata.get('entrystart', 0)}-{metadata.get('entrystop', len(jets))}.parquet"
    fs, root = fsspec.url_to_fs(str(directory))
    folder = f"{root.rstrip('/')}/{dataset}"
    fs.makedirs(folder, exist_ok=True)
    target = f"{str(directory).rstrip('/')}/{dataset}/{name}"
    ak.to_parquet(ak.Array(columns), target)
    return target

"""The jets a derivation or closure runs on: one split, the default selection, the lepton veto.

:func:`load_jets` reads every file of a dataset description (``data.yaml``) into the jet table,
keeps one split (:mod:`jec_coffea.data.split`: training for the derivation, test for the
closure) and applies the default jet selection of DESIGN.md through the processors' own
:class:`~jec_coffea.processors.selection.JetSelection` (matched, pT_gen >= 20 GeV,
|eta_gen| < 5, tight ID, no prompt generator lepton within ΔR 0.4), recording a cut-flow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import awkward as ak
import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..histograms import CutFlow

__all__ = ["DERIVATION_FIELDS", "load_jets", "prompt_lepton_dr", "select_jets"]

log = logging.getLogger(__name__)

DERIVATION_FIELDS: tuple[str, ...] = (
    "eta",
    "pt_raw",
    "area",
    "event_rho",
    "pt_gen",
    "eta_gen",
    "gen_weight",
    "flavour_group",
    "pt_offset_truth",
)
"""Jet-table fields kept for the derivation and the closure (present ones)."""


def select_jets(
    jets: ak.Array,
    *,
    split: str | None = None,
    file_sha256: str | None = None,
    lepton_dr: np.ndarray | None = None,
) -> tuple[ak.Array, CutFlow]:
    """Jets of one split passing the default selection, and the selection's cut-flow.

    Parameters
    ----------
    jets
        Flat jet table (one entry per jet).
    split
        "train", "val", "test" or None (all jets).
    file_sha256
        sha256 of the source file, for tables without event IDs (split hash).
    lepton_dr
        (N,) ΔR of each jet to the nearest prompt generator lepton (see
        :func:`prompt_lepton_dr`); None: the lepton veto is not applied (counted as such).

    Returns
    -------
    (awkward.Array, CutFlow)
        The selected jets with the :data:`DERIVATION_FIELDS` present; the weighted cut-flow.
    """
    from ..data.split import split_of
    from ..histograms import CutFlow
    from ..processors.selection import JetSelection

    cutflow = CutFlow()
    mask, not_applied = JetSelection().apply(jets, lepton_dr=lepton_dr, cutflow=cutflow)
    skipped = [step for step, flag in not_applied.items() if flag]
    if skipped:
        log.info("selection steps not applicable to these jets: %s", ", ".join(skipped))
    if split is not None:
        mask &= split_of(jets, file_sha256=file_sha256) == split
        cutflow.record(f"split {split}", mask, _column_or(jets, "gen_weight", 1.0))
    kept = [f for f in DERIVATION_FIELDS if f in jets.fields]
    return jets[mask][kept], cutflow


def _column_or(jets: ak.Array, name: str, default: float) -> np.ndarray:
    if name in jets.fields:
        return np.asarray(ak.to_numpy(jets[name]), dtype=np.float64)
    return np.full(len(jets), default)


_LEPTON_BRANCHES = ("pdgId", "statusFlags", "status", "pt", "eta", "phi")
"""``GenPart_*`` branches the prompt-lepton veto reads."""


def prompt_lepton_dr(path: str, tree: str, jets: ak.Array) -> np.ndarray | None:
    """ΔR of every jet of a file to the nearest prompt generator lepton, or None.

    The jet table carries no leptons, so the ``GenPart_*`` branches are read here and passed,
    as a plain awkward record, to the processors' own
    :func:`~jec_coffea.processors.selection.prompt_lepton_min_dr` (one veto definition).

    Parameters
    ----------
    path, tree
        The file and tree the (complete, unselected) jet table was read from.
    jets
        The file's jet table in event order (``entry`` per jet).

    Returns
    -------
    numpy.ndarray or None
        (N,) ΔR (inf without a lepton); None for per-jet ntuples or files without
        ``GenPart``, and the veto is then reported as not applied.
    """
    import uproot

    from ..processors.selection import JetSelection, prompt_lepton_min_dr

    if "entry" not in jets.fields or "eta" not in jets.fields or not len(jets):
        return None
    names = [f"GenPart_{b}" for b in _LEPTON_BRANCHES]
    with uproot.open(path) as f:
        t = f[tree]
        if not set(names) <= set(t.keys()):
            return None
        entry = np.asarray(ak.to_numpy(jets["entry"]), dtype=np.int64)
        start, stop = int(entry.min()), int(entry.max()) + 1
        gen = t.arrays(names, entry_start=start, entry_stop=stop)
    counts = np.bincount(entry - start, minlength=stop - start)
    if np.any(np.diff(entry) < 0):
        log.warning("%s: jets not in event order; prompt-lepton veto not applied", path)
        return None
    events = ak.zip(
        {
            "GenPart": ak.zip({b: gen[f"GenPart_{b}"] for b in _LEPTON_BRANCHES}),
            "Jet": ak.unflatten(np.zeros(len(jets)), counts),
        },
        depth_limit=1,
    )
    return prompt_lepton_min_dr(
        events,
        np.asarray(ak.to_numpy(jets["eta"]), dtype=np.float64),
        np.asarray(ak.to_numpy(jets["phi"]), dtype=np.float64),
        min_pt=JetSelection().lepton_min_pt,
    )


def load_jets(dataset: str | Path, split: str | None) -> tuple[ak.Array, CutFlow]:
    """Read every file of a dataset description and keep the selected jets of one split.

    Parameters
    ----------
    dataset
        ``data.yaml`` (:class:`~jec_coffea.data.dataset.DatasetDescription`).
    split
        "train", "val", "test" or None.

    Returns
    -------
    (awkward.Array, CutFlow)
        Selected jets of all files (:data:`DERIVATION_FIELDS` present) and the summed
        cut-flow.
    """
    from ..data import read_jet_table
    from ..data.dataset import DatasetDescription, file_sha256

    desc = DatasetDescription.load(dataset)
    parts, total = [], None
    for entry in desc.files:
        path = desc.resolve(entry)
        table = read_jet_table(path, layout=entry.layout, tree=entry.tree)
        sha = entry.sha256
        if split is not None and sha is None and "event" not in table.jets.fields:
            sha = file_sha256(path)  # per-jet ntuples: the split hashes (file, entry)
        lepton_dr = prompt_lepton_dr(path, entry.tree or "Events", table.jets)
        sel, flow = select_jets(
            table.jets, split=split, file_sha256=sha, lepton_dr=lepton_dr
        )
        log.info(
            "%s: %d of %d jets selected (split %s)", path, len(sel), len(table), split
        )
        parts.append(sel)
        total = flow if total is None else total + flow
    if not parts:
        msg = f"{dataset}: the dataset lists no files"
        raise ConfigError(msg)
    return ak.concatenate(parts), total

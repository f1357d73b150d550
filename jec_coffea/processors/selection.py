"""The default jet selection of the response studies, recorded step by step in a cut-flow.

DESIGN.md, "Metrics": matched (the jet-table ``matched`` flag, i.e. GenJet index AND ΔR < R/2);
pT_gen >= 20 GeV; |η_gen| < 5; tight jet ID where the file has ``Jet_jetId``; jets within
ΔR < 0.4 of a prompt lepton removed where leptons exist. The steps are cumulative and their
names are fixed (a step that cannot be applied to a file lets every jet pass and is counted in
``not_applied``), so cut-flows of different files and chunks add up step by step.

Prompt leptons are generator-level: final-state (status 1) electrons and muons flagged
``isPrompt`` or ``isDirectPromptTauDecayProduct`` in ``GenPart_statusFlags`` (bits 0 and 5),
above ``lepton_min_pt``. Reconstructed leptons are not used: this is a truth-level response
study, and a generator lepton is what a fake jet is made of.
"""

from __future__ import annotations

import logging
from typing import Any

import awkward as ak
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..histograms import CutFlow

__all__ = ["JetSelection", "prompt_lepton_min_dr"]

logger = logging.getLogger(__name__)

_PROMPT_BITS = (1 << 0) | (1 << 5)  # isPrompt | isDirectPromptTauDecayProduct


class JetSelection(BaseModel):
    """Cuts of the default jet selection; every one configurable, names of steps fixed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_pt_gen: float = Field(20.0, ge=0, description="minimum GenJet pT [GeV]")
    max_abs_eta_gen: float = Field(
        5.0, gt=0, description="maximum GenJet |eta| (exclusive)"
    )
    jet_id_mask: int = Field(
        2,
        ge=0,
        description="Jet_jetId bits that must be set (2 = tight, bit 1); 0 disables the cut",
    )
    lepton_veto_dr: float = Field(
        0.4,
        ge=0,
        description="jets closer than this ΔR to a prompt lepton are removed; 0 disables",
    )
    lepton_min_pt: float = Field(
        10.0, ge=0, description="minimum pT of a prompt lepton [GeV]"
    )

    @property
    def steps(self) -> tuple[str, ...]:
        """Cut-flow step names, in order."""
        return (
            "all jets",
            "matched",
            f"pt_gen >= {self.min_pt_gen:g} GeV",
            f"|eta_gen| < {self.max_abs_eta_gen:g}",
            "tight jet ID",
            f"no prompt lepton within dR {self.lepton_veto_dr:g}",
        )

    def apply(
        self,
        jets: ak.Array,
        *,
        lepton_dr: np.ndarray | None,
        cutflow: CutFlow,
    ) -> tuple[np.ndarray, dict[str, int]]:
        """Select jets of a flat jet table and record each step in ``cutflow``.

        Parameters
        ----------
        jets
            Flat jet table (one entry per jet) with ``matched``, ``pt_gen``, ``eta_gen``,
            ``gen_weight`` and, where the layout has it, ``jet_id``.
        lepton_dr
            ΔR of each jet to the nearest prompt lepton (inf if none in the event), or None if
            the events carry no generator leptons.
        cutflow
            Filled in place, weighted by ``gen_weight``.

        Returns
        -------
        mask, not_applied
            Boolean mask (n_jets,) of the selected jets, and ``{step: 1}`` for the steps that
            could not be applied to these jets (0 otherwise), mergeable across chunks.
        """
        fields = set(jets.fields)
        n = len(jets)
        weight = _column(jets, "gen_weight", 1.0, n)
        pt_gen = _column(jets, "pt_gen", np.nan, n)
        eta_gen = _column(jets, "eta_gen", np.nan, n)
        names = self.steps
        not_applied = dict.fromkeys(names[4:], 0)
        mask = np.ones(n, dtype=bool)
        cutflow.record(names[0], mask, weight)
        mask &= _column(jets, "matched", False, n).astype(bool)
        cutflow.record(names[1], mask, weight)
        with np.errstate(invalid="ignore"):
            mask &= pt_gen >= self.min_pt_gen
            cutflow.record(names[2], mask, weight)
            mask &= np.abs(eta_gen) < self.max_abs_eta_gen
        cutflow.record(names[3], mask, weight)
        if "jet_id" in fields and self.jet_id_mask:
            jet_id = _column(jets, "jet_id", 0, n).astype(np.int64)
            mask &= (jet_id & self.jet_id_mask) == self.jet_id_mask
        else:
            not_applied[names[4]] = 1
        cutflow.record(names[4], mask, weight)
        if lepton_dr is not None and self.lepton_veto_dr > 0:
            mask &= ~(np.asarray(lepton_dr) < self.lepton_veto_dr)
        else:
            not_applied[names[5]] = 1
        cutflow.record(names[5], mask, weight)
        return mask, not_applied


def _column(jets: ak.Array, name: str, default: Any, n: int) -> np.ndarray:
    if name not in jets.fields:
        return np.full(n, default)
    return np.asarray(ak.to_numpy(jets[name]))


def prompt_lepton_min_dr(
    events: ak.Array, jet_eta: np.ndarray, jet_phi: np.ndarray, *, min_pt: float = 10.0
) -> np.ndarray | None:
    """ΔR of every jet to the nearest generator-level prompt electron or muon of its event.

    Parameters
    ----------
    events
        NanoEvents with ``Jet`` and ``GenPart`` collections.
    jet_eta, jet_phi
        Flat arrays of the jet table, in the events' jet order (events x jets flattened).
    min_pt
        Minimum lepton pT [GeV].

    Returns
    -------
    numpy.ndarray or None
        Shape (n_jets,), ``inf`` for jets in events without prompt lepton; None if the events
        have no ``GenPart`` (or no ``Jet``) collection, so the veto cannot be applied.
    """
    fields = set(events.fields)
    if "GenPart" not in fields or "Jet" not in fields:
        return None
    gen = events.GenPart
    counts = ak.to_numpy(ak.num(events.Jet, axis=1))
    if counts.sum() != len(jet_eta):
        msg = f"prompt_lepton_min_dr: {len(jet_eta)} jets given but the events hold {counts.sum()}"
        raise ValueError(msg)
    is_lepton = (abs(gen.pdgId) == 11) | (abs(gen.pdgId) == 13)
    prompt = (gen.statusFlags & _PROMPT_BITS) != 0
    leptons = gen[is_lepton & prompt & (gen.status == 1) & (gen.pt >= min_pt)]
    jets = ak.zip(
        {
            "eta": ak.unflatten(np.asarray(jet_eta, np.float64), counts),
            "phi": ak.unflatten(np.asarray(jet_phi, np.float64), counts),
        }
    )
    pairs = ak.cartesian({"j": jets, "l": leptons[["eta", "phi"]]}, axis=1, nested=True)
    dphi = (pairs.j.phi - pairs.l.phi + np.pi) % (2 * np.pi) - np.pi
    dr = np.sqrt((pairs.j.eta - pairs.l.eta) ** 2 + dphi**2)
    nearest = ak.fill_none(ak.min(dr, axis=2), np.inf)
    return np.asarray(ak.to_numpy(ak.flatten(nearest, axis=1)), dtype=np.float64)

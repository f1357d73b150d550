"""The jet table: the one data contract between readers, features, training and processors.

A jet table is an awkward record array with one entry per jet (events flattened; event-level
quantities broadcast to each jet). Every reader (NanoAOD, PFNano current and old layout,
JetClass-II, ml-jec ntuples, simulated PFNano) produces these fields with these names and
units; a field a layout cannot provide is absent from the array and listed in
``JetTable.missing``. Nothing downstream reads a branch name.

Conventions (DESIGN.md, "Data contract"):

* kinematics are *raw* (before any JEC): ``pt_raw = Jet_pt * (1 - Jet_rawFactor)``, likewise mass;
* gen quantities are NaN for unmatched jets and ``matched`` is False;
* ``flavour_group`` indexes :data:`FLAVOUR_GROUPS` (uds, c, b, g, unknown);
* constituents are jagged lists of records per type (:data:`CONSTITUENT_TYPES`), sorted by
  decreasing pT; a type absent from the file is absent from the array (and in ``missing``);
* the event-level ρ is called ``event_rho``, never ``rho`` (clashes with coffea's vector alias).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import awkward as ak
import numpy as np

__all__ = [
    "CONSTITUENT_FIELDS",
    "CONSTITUENT_TYPES",
    "FLAVOUR_GROUPS",
    "JET_FIELDS",
    "JetTable",
    "flavour_group",
]

FLAVOUR_GROUPS: tuple[str, ...] = ("uds", "c", "b", "g", "unknown")
"""Flavour groups in their fixed order; ``flavour_group`` holds the index into this tuple."""

CONSTITUENT_TYPES: tuple[str, ...] = ("charged", "neutral", "sv")
"""Constituent collections per jet: charged PF candidates, neutral PF candidates, secondary vertices."""

JET_FIELDS: dict[str, str] = {
    # event identity and event-level quantities (broadcast per jet)
    "run": "run number (uint32)",
    "luminosityBlock": "luminosity block (uint32); 0 where the file has none",
    "event": "event number (uint64)",
    "entry": "entry of the event in its tree (int64)",
    "jet_index": "index of the jet in its event's Jet collection (int32)",
    "event_rho": "pile-up energy density rho, fixedGridRhoFastjetAll [GeV]",
    "npv": "number of good primary vertices (PV_npvsGood, else PV_npvs)",
    "gen_weight": "generator event weight (1 where absent)",
    # jet kinematics, raw
    "pt_raw": "raw jet pT, Jet_pt * (1 - Jet_rawFactor) [GeV]",
    "eta": "jet pseudorapidity",
    "phi": "jet azimuth [rad]",
    "mass_raw": "raw jet mass [GeV]",
    "area": "jet catchment area (active area)",
    "pt_nano": "Jet_pt as stored in NanoAOD (with the JEC of the production) [GeV]",
    # NanoAOD jet-level inputs
    "chHEF": "charged hadron energy fraction (of raw jet energy)",
    "neHEF": "neutral hadron energy fraction",
    "chEmEF": "charged electromagnetic energy fraction",
    "neEmEF": "neutral electromagnetic energy fraction",
    "muEF": "muon energy fraction",
    "n_constituents": "Jet_nConstituents",
    "n_electrons": "Jet_nElectrons",
    "n_muons": "Jet_nMuons",
    "jet_id": "Jet_jetId bit mask (bit 1 tight)",
    # truth
    "matched": "gen-matched by the DESIGN.md rule (index AND dR < R/2)",
    "pt_gen": "matched GenJet pT [GeV], NaN if unmatched",
    "eta_gen": "matched GenJet eta, NaN if unmatched",
    "phi_gen": "matched GenJet phi, NaN if unmatched",
    "mass_gen": "matched GenJet mass [GeV], NaN if unmatched",
    "hadron_flavour": "Jet_hadronFlavour",
    "parton_flavour": "Jet_partonFlavour",
    "flavour_group": "index into FLAVOUR_GROUPS",
    "pt_offset_truth": (
        "detector-level jet pT added by pile-up (simulation truth, from the pile-up share of "
        "the jet's tower/candidate energy) [GeV], NaN where unknown"
    ),
    # bookkeeping
    "constituents_complete": "True if the stored constituents are all of the jet's constituents",
}
"""Logical jet-level fields and their meaning/units. Layout-specific extras (e.g. ml-jec's
``pt_full_corr``, NanoAOD's ``PNetRegPtRawCorr``) are listed per layout by the reader."""

CONSTITUENT_FIELDS: dict[str, dict[str, str]] = {
    "charged": {
        "pt": "[GeV]",
        "eta": "",
        "phi": "[rad]",
        "mass": "[GeV]",
        "pdgId": "signed PDG id",
        "charge": "",
        "d0": "transverse impact parameter [cm]",
        "d0Err": "[cm]",
        "dz": "longitudinal impact parameter [cm]",
        "dzErr": "[cm]",
        "puppiWeight": "",
        "pvAssocQuality": "",
        "lostInnerHits": "",
        "trkChi2": "normalised track chi2",
    },
    "neutral": {
        "pt": "[GeV]",
        "eta": "",
        "phi": "[rad]",
        "mass": "[GeV]",
        "pdgId": "PDG id (130, 22, 1, 2)",
        "puppiWeight": "",
    },
    "sv": {
        "pt": "[GeV]",
        "eta": "",
        "phi": "[rad]",
        "mass": "[GeV]",
        "ntracks": "",
        "chi2": "",
        "ndof": "",
        "dxy": "[cm]",
        "dxySig": "",
        "dlen": "[cm]",
        "dlenSig": "",
        "pAngle": "[rad]",
    },
}
"""Fields of each constituent type where the layout provides them (subsets are allowed)."""


@dataclass
class JetTable:
    """A jet table with the facts a reader knows about where it came from.

    Attributes
    ----------
    jets
        Awkward record array, one entry per jet (see :data:`JET_FIELDS`).
    layout
        Name of the detected layout (e.g. ``"pfnano"``, ``"pfnano_old"``, ``"nanoaod"``).
    source
        Path or URL of the file.
    jet_radius
        Jet distance parameter R (0.4 for AK4, 0.8 for AK8).
    missing
        Logical fields (jet-level or constituent types) the layout lacks, with the reason.
    """

    jets: ak.Array
    layout: str
    source: str
    jet_radius: float = 0.4
    missing: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.jets)


def flavour_group(hadron_flavour, parton_flavour):
    """Flavour group index (into :data:`FLAVOUR_GROUPS`) by the fixed DESIGN.md rule.

    b if hadronFlavour = 5; c if 4; else uds if |partonFlavour| in {1, 2, 3}; g if 21;
    otherwise unknown. Works on numpy and (flat or jagged) awkward arrays.
    """
    had = hadron_flavour
    par = abs(parton_flavour)
    light = (par >= 1) & (par <= 3)
    if isinstance(had, ak.Array) or isinstance(par, ak.Array):
        return ak.values_astype(
            ak.where(
                had == 5,
                2,
                ak.where(had == 4, 1, ak.where(light, 0, ak.where(par == 21, 3, 4))),
            ),
            np.int8,
        )
    had = np.asarray(had)
    par = np.asarray(par)
    out = np.full(np.broadcast(had, par).shape, 4, dtype=np.int8)
    out[par == 21] = 3
    out[light] = 0
    out[had == 4] = 1
    out[had == 5] = 2
    return out

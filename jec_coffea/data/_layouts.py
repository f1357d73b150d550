"""Declarative layout tables: which branch feeds which jet-table field, per file layout.

Every supported layout is one :class:`Layout` instance in :data:`LAYOUTS`. A layout says which
tree it lives in, how to recognise it (``signature``: branches that must all be present and
``anti_signature``: branches that must not be), which branches feed each logical field of the
jet table (:data:`~jec_coffea.data.jet_table.JET_FIELDS`; alternatives are tried in order, so the
Run-3 ``Rho_fixedGridRhoFastjetAll`` and the Run-2 ``fixedGridRhoFastjetAll`` are one entry), and
how the constituents are stored. The builder (:mod:`._build`) walks these tables; nothing else
in the package names a branch. The set of branches a read needs is *derived* from the table
(:func:`needed_branches`), so a test can assert exactly what is read.

Two families exist:

* per-event layouts (``nanoaod``, ``pfnano``, ``pfnano_old``): branches ``Coll_field`` are jagged
  per event, the jet collection is ``Jet`` and event quantities are broadcast to the jets;
* per-jet layouts (``jetclass2``, ``mljec``): one tree entry per jet; constituent branches are
  jagged per jet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = [
    "LAYOUTS",
    "ConstituentSource",
    "Layout",
    "needed_branches",
    "resolve_fields",
]


@dataclass(frozen=True)
class ConstituentSource:
    """Where one constituent collection of a layout lives.

    Attributes
    ----------
    kind
        ``"indexed"``: a link table ``<link>_jetIdx`` / ``<link>_<target index>`` points into a
        per-event table ``<target>_*`` (current PFNano); ``"direct"``: the link table carries the
        kinematics itself and ``<link>_jetIdx`` groups it (old PFNano); ``"per_jet"``: jagged
        per-jet branches in a per-jet tree (ml-jec, JetClass-II).
    types
        Jet-table constituent types filled from this source: ``("charged", "neutral")`` splits PF
        candidates by charge (charge != 0 is charged); ``("sv",)`` takes every row.
    jet_index
        Branch with the index of the jet (in its event's ``Jet`` collection) of each link row.
    target_index
        Branch with the index into the target table (``"indexed"`` only).
    prefix
        Prefix of the branches holding the constituent fields (``"PFCands_"``, ``"ch_"``).
    fields
        Logical constituent field -> branch suffix (after ``prefix``). Fields whose branch is
        absent are left out of the records (subsets are allowed by the contract).
    """

    kind: Literal["indexed", "direct", "per_jet"]
    types: tuple[str, ...]
    prefix: str
    fields: Mapping[str, str]
    jet_index: str | None = None
    target_index: str | None = None

    def link_branches(self) -> tuple[str, ...]:
        """Branches of the link table (empty for per-jet sources)."""
        return tuple(b for b in (self.jet_index, self.target_index) if b)

    def present(self, available: Iterable[str]) -> bool:
        """True if the link branches and the leading kinematic field (pt or px) exist."""
        have = set(available)
        key = self.prefix + next(iter(self.fields.values()))
        return key in have and all(b in have for b in self.link_branches())

    def field_branches(self, available: Iterable[str]) -> dict[str, str]:
        """Logical field -> branch for the fields present in ``available``."""
        have = set(available)
        return {
            name: self.prefix + suffix
            for name, suffix in self.fields.items()
            if self.prefix + suffix in have
        }


@dataclass(frozen=True)
class Layout:
    """One file layout: its tree, how to recognise it and its branch tables.

    Attributes
    ----------
    name
        Layout name as used by ``read_jet_table(layout=...)`` and reported by ``detect_layout``.
    tree
        Default tree name.
    per_jet
        True if every tree entry is one jet (no event structure).
    jet_radius
        Jet distance parameter R; the gen-match cut is dR < R/2.
    signature, anti_signature
        Branches that must all be present / must all be absent for the layout to match.
    required
        Logical fields that must be present; a missing one raises ``MissingBranchError``.
    fields
        Logical field -> candidate branches, first present wins.
    gen_jets
        Logical GenJet field (pt, eta, phi, mass) -> branch, for per-event layouts whose jets
        are matched to a GenJet collection (by index, else greedily by dR).
    constituents
        Source name -> :class:`ConstituentSource`.
    constituents_complete
        False if the file stores only a subset of each jet's constituents.
    description
        One line for ``jec-coffea inspect`` and error messages.
    """

    name: str
    tree: str
    per_jet: bool
    jet_radius: float
    signature: frozenset[str]
    fields: Mapping[str, tuple[str, ...]]
    required: frozenset[str] = frozenset()
    anti_signature: frozenset[str] = frozenset()
    gen_jets: Mapping[str, str] = field(default_factory=dict)
    constituents: Mapping[str, ConstituentSource] = field(default_factory=dict)
    constituents_complete: bool = True
    description: str = ""

    def matches(self, available: Iterable[str]) -> bool:
        """True if the branches ``available`` in the tree identify this layout."""
        have = set(available)
        return self.signature <= have and not (self.anti_signature & have)


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)


# --- per-event (NanoAOD family) tables -------------------------------------------------------

_NANO_EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "run": ("run",),
    "luminosityBlock": ("luminosityBlock",),
    "event": ("event",),
    # Run-3 NanoAOD moved rho into the Rho collection; Run-2 has the flat branch.
    "event_rho": ("Rho_fixedGridRhoFastjetAll", "fixedGridRhoFastjetAll"),
    "npv": ("PV_npvsGood", "PV_npvs"),
    "gen_weight": ("genWeight",),
}
"""Event-level logical fields of NanoAOD-like files (broadcast to every jet)."""

_NANO_JET_FIELDS: dict[str, tuple[str, ...]] = {
    "pt_nano": ("Jet_pt",),
    "eta": ("Jet_eta",),
    "phi": ("Jet_phi",),
    "mass_nano": ("Jet_mass",),
    "raw_factor": ("Jet_rawFactor",),
    "area": ("Jet_area",),
    "chHEF": ("Jet_chHEF",),
    "neHEF": ("Jet_neHEF",),
    "chEmEF": ("Jet_chEmEF",),
    "neEmEF": ("Jet_neEmEF",),
    "muEF": ("Jet_muEF",),
    "n_constituents": ("Jet_nConstituents",),
    "n_electrons": ("Jet_nElectrons",),
    "n_muons": ("Jet_nMuons",),
    "jet_id": ("Jet_jetId",),
    "hadron_flavour": ("Jet_hadronFlavour",),
    "parton_flavour": ("Jet_partonFlavour",),
    "gen_jet_idx": ("Jet_genJetIdx",),
    # simulation truth of jec-coffea's own PFNano files (pile-up pT inside the jet)
    "pt_offset_truth": ("Jet_ptOffsetTruth",),
    # Run-3 regressions of CMS, multiplicative on raw pT (extra fields)
    "pnet_reg_corr": ("Jet_PNetRegPtRawCorr",),
    "pnet_reg_corr_neutrino": ("Jet_PNetRegPtRawCorrNeutrino",),
    "upart_reg_corr": ("Jet_UParTAK4RegPtRawCorr",),
}
"""Jet-level logical fields of NanoAOD-like files (``raw_factor``, ``mass_nano`` and
``gen_jet_idx`` are inputs of derived fields and do not appear in the jet table)."""

_NANO_REQUIRED = frozenset({"pt_nano", "eta", "phi", "mass_nano", "raw_factor"})

_GEN_JETS: dict[str, str] = {
    "pt": "GenJet_pt",
    "eta": "GenJet_eta",
    "phi": "GenJet_phi",
    "mass": "GenJet_mass",
}

_PF_FIELDS: dict[str, str] = {
    name: name
    for name in (
        "pt",
        "eta",
        "phi",
        "mass",
        "pdgId",
        "charge",
        "d0",
        "d0Err",
        "dz",
        "dzErr",
        "puppiWeight",
        "pvAssocQuality",
        "lostInnerHits",
        "trkChi2",
    )
}
"""PF-candidate fields of PFNano (same suffix in ``PFCands_*`` and old ``JetPFCands_*``)."""

_SV_FIELDS: dict[str, str] = {
    name: name
    for name in (
        "pt",
        "eta",
        "phi",
        "mass",
        "ntracks",
        "chi2",
        "ndof",
        "dxy",
        "dxySig",
        "dlen",
        "dlenSig",
        "pAngle",
    )
}

_PFNANO_CONSTITUENTS = {
    "pf": ConstituentSource(
        kind="indexed",
        types=("charged", "neutral"),
        prefix="PFCands_",
        fields=_frozen(_PF_FIELDS),
        jet_index="JetPFCands_jetIdx",
        target_index="JetPFCands_pFCandsIdx",
    ),
    "sv": ConstituentSource(
        kind="indexed",
        types=("sv",),
        prefix="SV_",
        fields=_frozen(_SV_FIELDS),
        jet_index="JetSVs_jetIdx",
        target_index="JetSVs_sVIdx",
    ),
}

_PFNANO_OLD_CONSTITUENTS = {
    "pf": ConstituentSource(
        kind="direct",
        types=("charged", "neutral"),
        prefix="JetPFCands_",
        fields=_frozen(_PF_FIELDS),
        jet_index="JetPFCands_jetIdx",
    ),
}

_NANO_FIELDS = _frozen({**_NANO_EVENT_FIELDS, **_NANO_JET_FIELDS})

# --- per-jet tables ---------------------------------------------------------------------------

_MLJEC_FIELDS: dict[str, tuple[str, ...]] = {
    "pt_raw": ("pt",),
    "eta": ("eta",),
    "phi": ("phi",),
    "mass_raw": ("mass",),
    "area": ("area",),
    "event_rho": ("rho",),
    "npv": ("num_pv",),
    "pt_gen": ("pt_gen",),
    "eta_gen": ("eta_gen",),
    "phi_gen": ("phi_gen",),
    "mass_gen": ("mass_gen",),
    "hadron_flavour": ("hadron_flavor",),
    "parton_flavour": ("parton_flavor",),
    # CMS standard corrections of the same jet, kept so they can serve as methods
    "pt_full_corr": ("pt_full_corr",),
    "pt_l1corr": ("pt_l1corr",),
    "exp_pileup": ("exp_pileup",),
}

_MLJEC_CONSTITUENTS = {
    "charged": ConstituentSource(
        kind="per_jet",
        types=("charged",),
        prefix="ch_",
        fields=_frozen(
            {
                "pt": "pt",
                "eta": "eta",
                "phi": "phi",
                "pdgId": "id",
                "d0": "dxy",
                "dz": "dz",
                "trkChi2": "norm_chi2",
                "d0Sig": "dxy_significance",
                "pvAssociation": "pv_ass",
                "numHits": "num_hits",
                "numPixelHits": "num_pixel_hits",
                "lostHits": "lost_hits",
            }
        ),
    ),
    "neutral": ConstituentSource(
        kind="per_jet",
        types=("neutral",),
        prefix="ne_",
        fields=_frozen(
            {
                "pt": "pt",
                "eta": "eta",
                "phi": "phi",
                "pdgId": "id",
                "hcalFrac": "hcal_frac",
            }
        ),
    ),
    "sv": ConstituentSource(
        kind="per_jet",
        types=("sv",),
        prefix="sv_",
        fields=_frozen(
            {
                "pt": "pt",
                "mass": "mass",
                "ntracks": "num_tracks",
                "dlen": "distance",
                "dlenSig": "significance",
            }
        ),
    ),
}

_JETCLASS_FIELDS: dict[str, tuple[str, ...]] = {
    "pt_raw": ("jet_pt",),
    "eta": ("jet_eta",),
    "phi": ("jet_phi",),
    "energy": ("jet_energy",),
    "n_constituents": ("jet_nparticles",),
    "pt_gen": ("genjet_pt",),
    "eta_gen": ("genjet_eta",),
    "phi_gen": ("genjet_phi",),
    "energy_gen": ("genjet_energy",),
    # JetClass-II's class label is not a flavour; kept under its own name
    "jetclass_label": ("jet_label",),
    "sdmass": ("jet_sdmass",),
}
"""``energy`` and ``energy_gen`` are inputs of the masses and are not kept themselves."""

_JETCLASS_CONSTITUENTS = {
    "part": ConstituentSource(
        kind="per_jet",
        types=("charged", "neutral"),
        prefix="part_",
        fields=_frozen(
            {
                "px": "px",
                "py": "py",
                "pz": "pz",
                "energy": "energy",
                "charge": "charge",
                "d0": "d0val",
                "d0Err": "d0err",
                "dz": "dzval",
                "dzErr": "dzerr",
                "isElectron": "isElectron",
                "isMuon": "isMuon",
                "isPhoton": "isPhoton",
                "isChargedHadron": "isChargedHadron",
                "isNeutralHadron": "isNeutralHadron",
            }
        ),
    ),
}

LAYOUTS: Mapping[str, Layout] = _frozen(
    {
        "pfnano": Layout(
            name="pfnano",
            tree="Events",
            per_jet=False,
            jet_radius=0.4,
            signature=frozenset(
                {"Jet_pt", "PFCands_pt", "JetPFCands_jetIdx", "JetPFCands_pFCandsIdx"}
            ),
            fields=_NANO_FIELDS,
            required=_NANO_REQUIRED,
            gen_jets=_frozen(_GEN_JETS),
            constituents=_frozen(_PFNANO_CONSTITUENTS),
            description="PFNano, current layout (JetPFCands -> PFCands, JetSVs -> SV)",
        ),
        "pfnano_old": Layout(
            name="pfnano_old",
            tree="Events",
            per_jet=False,
            jet_radius=0.4,
            signature=frozenset({"Jet_pt", "JetPFCands_pt", "JetPFCands_jetIdx"}),
            anti_signature=frozenset({"JetPFCands_pFCandsIdx"}),
            fields=_NANO_FIELDS,
            required=_NANO_REQUIRED,
            gen_jets=_frozen(_GEN_JETS),
            constituents=_frozen(_PFNANO_OLD_CONSTITUENTS),
            constituents_complete=False,
            description="PFNano, old layout (kinematics on JetPFCands, puppiWeight > 0 only)",
        ),
        "nanoaod": Layout(
            name="nanoaod",
            tree="Events",
            per_jet=False,
            jet_radius=0.4,
            signature=frozenset({"Jet_pt"}),
            fields=_NANO_FIELDS,
            required=_NANO_REQUIRED,
            gen_jets=_frozen(_GEN_JETS),
            description="NanoAOD (jet-level fields only, no constituents)",
        ),
        "jetclass2": Layout(
            name="jetclass2",
            tree="tree",
            per_jet=True,
            jet_radius=0.8,
            signature=frozenset({"part_px", "jet_pt", "genjet_pt"}),
            fields=_frozen(_JETCLASS_FIELDS),
            required=frozenset({"pt_raw", "eta", "phi", "energy"}),
            constituents=_frozen(_JETCLASS_CONSTITUENTS),
            description="JetClass-II (AK8, Delphes; one entry per jet, matched genjet)",
        ),
        "mljec": Layout(
            name="mljec",
            tree="Jets",
            per_jet=True,
            jet_radius=0.4,
            signature=frozenset({"pt", "pt_gen", "ch_size", "ne_size"}),
            fields=_frozen(_MLJEC_FIELDS),
            required=frozenset({"pt_raw", "eta", "phi"}),
            constituents=_frozen(_MLJEC_CONSTITUENTS),
            description="ml-jec ntuple (tree Jets, one entry per jet, raw pt)",
        ),
    }
)
"""Every supported layout, in detection order (more specific layouts first)."""


def resolve_fields(
    layout: Layout, available: Iterable[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Map the layout's logical fields to branches present in ``available``.

    Returns
    -------
    found : dict
        Logical field -> the first candidate branch that is present.
    absent : dict
        Logical field -> reason naming the candidate branches that were looked for.
    """
    have = set(available)
    found: dict[str, str] = {}
    absent: dict[str, str] = {}
    for name, candidates in layout.fields.items():
        branch = next((c for c in candidates if c in have), None)
        if branch is None:
            absent[name] = "no branch " + " or ".join(repr(c) for c in candidates)
        else:
            found[name] = branch
    return found, absent


def needed_branches(layout: Layout, available: Iterable[str]) -> set[str]:
    """Every branch a read of ``layout`` touches, given the branches ``available``.

    Derived from the tables only, so the set is exactly what the uproot source reads and what a
    test can assert.
    """
    have = set(available)
    found, _ = resolve_fields(layout, have)
    needed = set(found.values())
    if layout.gen_jets and all(b in have for b in layout.gen_jets.values()):
        needed |= set(layout.gen_jets.values())
    for source in layout.constituents.values():
        if source.present(have):
            needed |= set(source.link_branches())
            needed |= set(source.field_branches(have).values())
    return needed

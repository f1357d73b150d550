"""The feature registry: every jet-level and constituent-level feature, by name.

The features are declarative, as weaver-core declares its ``new_variables``: each entry
(:class:`FeatureDefinition`) holds the name, a description, the unit, the default that replaces
a missing, NaN or infinite value, the level (jet or constituent), the jet-table fields it needs
and the columnar function that computes it. Training configurations, ONNX metadata and the
processors all refer to features by these names, so what a network saw in training is, by
construction, what it sees in an analysis. :data:`FEATURE_VERSION` is bumped whenever a
definition changes, and :func:`registry_fingerprint` (pinned by a test) catches a change
without a bump.

Conventions (DESIGN.md, "Data contract"): every jet-level input and every ``rel_pt`` uses the
*raw* jet pT and mass; Δη is signed by the jet η (positive towards larger |η|); Δφ is wrapped to
(-π, π]. Constituent pT is used as the reader stores it (for PUPPI jets the reader applies
``puppiWeight``). Evaluation lives in :mod:`.compute`, tensors in :mod:`.tensors`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import awkward as ak
import numpy as np

from ..data.jet_table import CONSTITUENT_TYPES

__all__ = [
    "CONSTITUENT_FEATURES",
    "FEATURE_VERSION",
    "JET_FEATURES",
    "ConstituentType",
    "FeatureDefinition",
    "registry_fingerprint",
    "wrap_phi",
]

FEATURE_VERSION = "1"
"""Version of the feature definitions; bump it whenever a definition below changes."""

ConstituentType = Literal["charged", "neutral", "sv"]


@dataclass(frozen=True)
class FeatureDefinition:
    """One named feature: what it means, its unit, its default and how it is computed.

    Attributes
    ----------
    name
        Name used in configurations, ONNX metadata and tensors.
    level
        ``"jet"`` (one value per jet) or ``"constituent"`` (one value per constituent).
    description
        What the feature is and why it is there.
    unit
        Unit of the value (``""`` if dimensionless).
    default
        Value that replaces a missing, NaN or infinite input; chosen to be a value the feature
        takes for "nothing there" (0 fractions, no displacement) or a clearly unphysical one.
    jet_fields
        Jet-table fields the definition reads (for constituent features: jet-level fields).
    constituent_fields
        Fields of the constituent record the definition reads (constituent features only).
    alternatives
        Other ``(constituent_fields, compute)`` pairs giving the same quantity, tried in order
        when the primary fields are absent.
    compute
        ``compute(jets)`` for jet features, ``compute(jets, cands)`` for constituent features,
        where ``cands`` is the (possibly sorted and truncated) jagged record of one type.
    """

    name: str
    level: Literal["jet", "constituent"]
    description: str
    unit: str
    default: float
    jet_fields: tuple[str, ...]
    compute: Callable[..., ak.Array]
    constituent_fields: tuple[str, ...] = ()
    alternatives: tuple[tuple[tuple[str, ...], Callable[..., ak.Array]], ...] = ()

    def resolve(
        self, jet_available: list[str], constituent_available: list[str] = ()
    ) -> tuple[Callable[..., ak.Array] | None, list[str]]:
        """The compute function whose inputs are all available, else None and the absent fields.

        The primary definition is tried first, then ``alternatives`` (constituent fields and
        compute function) in order; layouts name a quantity differently (ml-jec stores the d0
        significance itself, JetClass-II stores particle-type flags instead of pdgId).
        """
        absent = [f for f in self.jet_fields if f not in jet_available]
        if absent:
            return None, absent
        options = ((self.constituent_fields, self.compute), *self.alternatives)
        for fields, compute in options:
            if all(f in constituent_available for f in fields):
                return compute, []
        return None, [
            f for f in self.constituent_fields if f not in constituent_available
        ]

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable description (for ONNX metadata and model cards)."""
        return {
            "name": self.name,
            "level": self.level,
            "description": self.description,
            "unit": self.unit,
            "default": self.default,
            "jet_fields": list(self.jet_fields),
            "constituent_fields": list(self.constituent_fields),
            "alternative_fields": [list(f) for f, _ in self.alternatives],
        }


# --------------------------------------------------------------------------- helpers


def wrap_phi(dphi):
    """Wrap an azimuthal difference [rad] into (-π, π] (numpy or awkward, any shape)."""
    return np.pi - np.mod(np.pi - dphi, 2.0 * np.pi)


def _eta_sign(eta):
    """+1 for η ≥ 0, -1 for η < 0 (so that Δη points away from the beam line at η = 0)."""
    return 1.0 - 2.0 * (eta < 0)


def _pf_candidates(jets: ak.Array) -> dict[str, ak.Array]:
    """Δη, Δφ and pT [GeV] of all PF candidates (charged + neutral) of each jet."""
    parts = [jets[t] for t in ("charged", "neutral")]
    pt = ak.concatenate([p.pt for p in parts], axis=1)
    eta = ak.concatenate([p.eta for p in parts], axis=1)
    phi = ak.concatenate([p.phi for p in parts], axis=1)
    return {"pt": pt, "deta": eta - jets.eta, "dphi": wrap_phi(phi - jets.phi)}


def _pt_d(jets: ak.Array):
    pt = _pf_candidates(jets)["pt"]
    return np.sqrt(ak.sum(pt**2, axis=1)) / ak.sum(pt, axis=1)


def _axis2(jets: ak.Array):
    """Minor axis of the pT²-weighted (Δη, Δφ) covariance, as CMS's quark-gluon likelihood."""
    c = _pf_candidates(jets)
    w = c["pt"] ** 2
    sw = ak.sum(w, axis=1)
    mean_e = ak.sum(w * c["deta"], axis=1) / sw
    mean_p = ak.sum(w * c["dphi"], axis=1) / sw
    m11 = ak.sum(w * c["deta"] ** 2, axis=1) / sw - mean_e**2
    m22 = ak.sum(w * c["dphi"] ** 2, axis=1) / sw - mean_p**2
    m12 = ak.sum(w * c["deta"] * c["dphi"], axis=1) / sw - mean_e * mean_p
    half_trace = 0.5 * (m11 + m22)
    root = np.sqrt(0.25 * (m11 - m22) ** 2 + m12**2)
    return np.sqrt(np.maximum(half_trace - root, 0.0))


def _field(name: str):
    return lambda jets: jets[name]


def _multiplicity(ctype: str):
    return lambda jets: ak.num(jets[ctype], axis=1)


def _pdg_is(*codes: int):
    def compute(jets, c):
        apdg = np.abs(c.pdgId)
        return _isin(apdg, codes)

    return compute


def _isin(values, codes):
    out = values == codes[0]
    for code in codes[1:]:
        out = out | (values == code)
    return ak.values_astype(out, np.float64)


# --------------------------------------------------------------------------- jet level

_PF = ("charged", "neutral")
_FRACTION = "energy fraction of the raw jet energy"

# name: (jet-table fields, unit, default, description, compute; None = copy of the field)
_JET_TABLE: dict[str, tuple] = {
    "pt_raw": (("pt_raw",), "GeV", 0.0, "raw jet pT", None),
    "log_pt_raw": (
        ("pt_raw",),
        "ln(GeV)",
        0.0,
        "ln of raw jet pT",
        lambda j: np.log(j.pt_raw),
    ),
    "eta": (("eta",), "", 0.0, "jet pseudorapidity", None),
    "abs_eta": (("eta",), "", 0.0, "|jet eta|", lambda j: np.abs(j.eta)),
    "phi": (("phi",), "rad", 0.0, "jet azimuth", None),
    "log_mass_raw": (
        ("mass_raw",),
        "ln(GeV)",
        0.0,
        "ln of raw jet mass (massless: default)",
        lambda j: np.log(j.mass_raw),
    ),
    "area": (("area",), "", 0.0, "jet catchment area", None),
    "rho": (("event_rho",), "GeV", 0.0, "event pile-up pT density", None),
    "npv": (("npv",), "", 0.0, "number of good primary vertices", None),
    "chHEF": (("chHEF",), "", 0.0, f"charged hadron (211) {_FRACTION}", None),
    "neHEF": (("neHEF",), "", 0.0, f"neutral hadron (130, HF 1) {_FRACTION}", None),
    "chEmEF": (("chEmEF",), "", 0.0, f"charged EM (11) {_FRACTION}", None),
    "neEmEF": (("neEmEF",), "", 0.0, f"neutral EM (22, HF 2) {_FRACTION}", None),
    "muEF": (("muEF",), "", 0.0, f"muon (13) {_FRACTION}", None),
    "n_constituents": (("n_constituents",), "", 0.0, "Jet_nConstituents", None),
    "n_electrons": (("n_electrons",), "", 0.0, "electrons in the jet", None),
    "n_muons": (("n_muons",), "", 0.0, "muons in the jet", None),
    **{
        f"n_{t}": ((t,), "", 0.0, f"stored {t} constituents", _multiplicity(t))
        for t in CONSTITUENT_TYPES
    },
    "pt_d": (_PF, "", 0.0, "sqrt(sum pT^2)/sum pT of the PF candidates", _pt_d),
    "axis2": (_PF, "", 0.0, "minor axis of pT^2-weighted PF candidates", _axis2),
}

JET_FEATURES: dict[str, FeatureDefinition] = {
    name: FeatureDefinition(
        name, "jet", desc, unit, default, fields, fn or _field(fields[0])
    )
    for name, (fields, unit, default, desc, fn) in _JET_TABLE.items()
}
"""Jet-level features by name. Jets without PF candidates get the default pt_d and axis2
(counted as non-finite); a layout without a field gets the default (counted as missing)."""


# --------------------------------------------------------------------------- constituent level

# name: (constituent fields, jet fields, unit, default, description, compute; None = copy)
_COMMON: dict[str, tuple] = {
    "rel_pt": (
        ("pt",),
        ("pt_raw",),
        "",
        0.0,
        "pT / raw jet pT",
        lambda j, c: c.pt / j.pt_raw,
    ),
    "log_pt": (("pt",), (), "ln(GeV)", 0.0, "ln pT", lambda j, c: np.log(c.pt)),
    "log_rel_pt": (
        ("pt",),
        ("pt_raw",),
        "",
        0.0,
        "ln(pT / raw jet pT)",
        lambda j, c: np.log(c.pt / j.pt_raw),
    ),
    "deta": (
        ("eta",),
        ("eta",),
        "",
        0.0,
        "(eta - eta_jet) * sign(eta_jet)",
        lambda j, c: (c.eta - j.eta) * _eta_sign(j.eta),
    ),
    "dphi": (
        ("phi",),
        ("phi",),
        "rad",
        0.0,
        "phi - phi_jet wrapped to (-pi, pi]",
        lambda j, c: wrap_phi(c.phi - j.phi),
    ),
    "dr": (
        ("eta", "phi"),
        ("eta", "phi"),
        "",
        0.0,
        "distance to the jet axis in (eta, phi)",
        lambda j, c: np.hypot(c.eta - j.eta, wrap_phi(c.phi - j.phi)),
    ),
}

_PUPPI = (("puppiWeight",), (), "", 1.0, "PUPPI weight (missing: 1)", None)

_TYPE_TABLES: dict[str, dict[str, tuple]] = {
    "charged": {
        "charge": (("charge",), (), "e", 0.0, "electric charge", None),
        "is_electron": (("pdgId",), (), "", 0.0, "|pdgId| = 11", _pdg_is(11)),
        "is_muon": (("pdgId",), (), "", 0.0, "|pdgId| = 13", _pdg_is(13)),
        "is_charged_hadron": (("pdgId",), (), "", 0.0, "|pdgId| = 211", _pdg_is(211)),
        "d0": (("d0",), (), "cm", 0.0, "transverse impact parameter", None),
        "d0_sig": (
            ("d0", "d0Err"),
            (),
            "",
            0.0,
            "d0 / d0Err (zero error: default)",
            lambda j, c: c.d0 / c.d0Err,
        ),
        "dz": (("dz",), (), "cm", 0.0, "longitudinal impact parameter", None),
        "dz_sig": (
            ("dz", "dzErr"),
            (),
            "",
            0.0,
            "dz / dzErr (zero error: default)",
            lambda j, c: c.dz / c.dzErr,
        ),
        "puppi_weight": _PUPPI,
        "pv_assoc_quality": (("pvAssocQuality",), (), "", 0.0, "PV association", None),
        "lost_inner_hits": (("lostInnerHits",), (), "", 0.0, "lost inner hits", None),
        "trk_chi2": (("trkChi2",), (), "", 0.0, "normalised track chi2", None),
    },
    "neutral": {
        "is_photon": (("pdgId",), (), "", 0.0, "pdgId = 22", _pdg_is(22)),
        "is_neutral_hadron": (("pdgId",), (), "", 0.0, "pdgId = 130", _pdg_is(130)),
        "is_hf_em": (("pdgId",), (), "", 0.0, "pdgId = 2 (HF EM)", _pdg_is(2)),
        "is_hf_hadron": (("pdgId",), (), "", 0.0, "pdgId = 1 (HF hadron)", _pdg_is(1)),
        "puppi_weight": _PUPPI,
    },
    "sv": {
        "mass": (("mass",), (), "GeV", 0.0, "vertex mass", None),
        "ntracks": (("ntracks",), (), "", 0.0, "number of tracks", None),
        "dxy": (("dxy",), (), "cm", 0.0, "transverse flight distance", None),
        "dxy_sig": (("dxySig",), (), "", 0.0, "dxy significance", None),
        "dlen": (("dlen",), (), "cm", 0.0, "3D flight distance", None),
        "dlen_sig": (("dlenSig",), (), "", 0.0, "dlen significance", None),
        "pangle": (("pAngle",), (), "rad", 0.0, "flight vs momentum angle", None),
        "chi2_ndof": (
            ("chi2", "ndof"),
            (),
            "",
            0.0,
            "vertex chi2/ndof (ndof 0: default)",
            lambda j, c: c.chi2 / c.ndof,
        ),
    },
}


def _cfield(name: str):
    return lambda jets, c: c[name]


def _charge_from_pdg(jets, c):
    """Charge from the signed pdgId: +1 for 211, -1 for 11 and 13 (leptons), and opposite."""
    sign = np.sign(c.pdgId)
    lepton = (np.abs(c.pdgId) == 11) | (np.abs(c.pdgId) == 13)
    return ak.where(lepton, -sign, sign)


def _flag(name: str):
    return (name,), lambda jets, c: ak.values_astype(c[name], np.float64)


_ALTERNATIVES: dict[tuple[str, str], tuple] = {
    ("charged", "charge"): ((("pdgId",), _charge_from_pdg),),
    ("charged", "d0_sig"): ((("d0Sig",), _cfield("d0Sig")),),
    ("charged", "pv_assoc_quality"): ((("pvAssociation",), _cfield("pvAssociation")),),
    ("charged", "lost_inner_hits"): ((("lostHits",), _cfield("lostHits")),),
    ("charged", "is_electron"): (_flag("isElectron"),),
    ("charged", "is_muon"): (_flag("isMuon"),),
    ("charged", "is_charged_hadron"): (_flag("isChargedHadron"),),
    ("neutral", "is_photon"): (_flag("isPhoton"),),
    ("neutral", "is_neutral_hadron"): (_flag("isNeutralHadron"),),
}
"""Other spellings of the same quantity in some layouts (ml-jec, JetClass-II)."""

CONSTITUENT_FEATURES: dict[str, dict[str, FeatureDefinition]] = {
    ctype: {
        name: FeatureDefinition(
            name,
            "constituent",
            desc,
            unit,
            default,
            jf,
            fn or _cfield(cf[0]),
            cf,
            _ALTERNATIVES.get((ctype, name), ()),
        )
        for name, (cf, jf, unit, default, desc, fn) in {**_COMMON, **table}.items()
    }
    for ctype, table in _TYPE_TABLES.items()
}
"""Constituent-level features by type and name: the common kinematics (rel_pt, log_pt,
log_rel_pt, deta, dphi, dr) for every type, then the type-specific ones."""


def registry_fingerprint() -> str:
    """sha256 of every definition's name, level, unit, default and fields (first 16 hex).

    A test pins this value per :data:`FEATURE_VERSION`, so a changed definition that is not
    accompanied by a version bump fails the test suite.
    """
    import hashlib
    import json

    def entry(d: FeatureDefinition) -> dict[str, object]:
        return {k: v for k, v in d.as_dict().items() if k != "description"}

    doc = {
        "jet": [entry(d) for d in JET_FEATURES.values()],
        **{t: [entry(d) for d in r.values()] for t, r in CONSTITUENT_FEATURES.items()},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

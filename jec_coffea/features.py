"""Every jet-level and constituent-level feature, used by training AND by the processors.

The features are a declarative registry, as weaver-core declares its ``new_variables``: each
entry (:class:`FeatureDefinition`) holds the name, a description, the unit, the default that
replaces a missing, NaN or infinite value, the level (jet or constituent), the jet-table fields
it needs and the columnar function that computes it. Training configurations, ONNX metadata
and the processors all refer to features by these names, so what a network saw in training is,
by construction, what it sees in an analysis. :data:`FEATURE_VERSION` is bumped whenever a
definition changes; a :class:`FeatureSpec` written with another version is refused by
:func:`to_tensors`.

Conventions (DESIGN.md, "Data contract"): every jet-level input and every ``rel_pt`` uses the
*raw* jet pT and mass; Δη is signed by the jet η (positive towards larger |η|); Δφ is wrapped to
(-π, π]; constituents are ordered by decreasing pT before truncation. Constituent pT is used as
the reader stores it (for PUPPI jets the reader applies ``puppiWeight``).

Replacements are never silent: every function takes an optional :class:`ReplacementCounts`
that accumulates, per feature, how many values were missing (field or collection absent from
the layout, or ``None``) and how many were NaN/inf, and each replacement is logged at debug
level with its count.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import awkward as ak
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .data.jet_table import CONSTITUENT_TYPES, JetTable
from .errors import ConfigError, ModelMismatchError, closest

__all__ = [
    "CONSTITUENT_FEATURES",
    "FEATURE_VERSION",
    "JET_FEATURES",
    "FeatureDefinition",
    "FeatureSpec",
    "ReplacementCounts",
    "constituent_features",
    "jet_features",
    "registry_fingerprint",
    "to_tensors",
    "wrap_phi",
]

log = logging.getLogger(__name__)

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


@dataclass
class ReplacementCounts:
    """How many values of each feature were replaced by the feature's default.

    Keys are ``"jet.<name>"`` or ``"<type>.<name>"``. ``missing`` counts values whose field or
    collection is absent (or ``None``), ``nonfinite`` those that were NaN or ±inf, ``total`` all
    values computed. Instances add (``a + b``), so coffea accumulators can merge them.
    """

    missing: Counter[str] = field(default_factory=Counter)
    nonfinite: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: ReplacementCounts) -> ReplacementCounts:
        return ReplacementCounts(
            self.missing + other.missing,
            self.nonfinite + other.nonfinite,
            self.total + other.total,
        )

    def replaced(self, key: str) -> int:
        """Number of values of ``key`` replaced by the default (missing + non-finite)."""
        return self.missing[key] + self.nonfinite[key]

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Per feature ``{"missing", "nonfinite", "total"}``, for logs and reports."""
        return {
            key: {
                "missing": self.missing[key],
                "nonfinite": self.nonfinite[key],
                "total": self.total[key],
            }
            for key in sorted(self.total)
        }

    def summary(self) -> list[str]:
        """One line per feature that had replacements, e.g. for the training log."""
        return [
            f"{key}: {self.missing[key]} missing, {self.nonfinite[key]} non-finite "
            f"of {self.total[key]} set to the default"
            for key in sorted(self.total)
            if self.replaced(key)
        ]


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


# --------------------------------------------------------------------------- evaluation


def _as_array(jets: JetTable | ak.Array) -> ak.Array:
    return jets.jets if isinstance(jets, JetTable) else jets


def _unknown(name: str, registry: Mapping[str, FeatureDefinition], what: str) -> str:
    """Message for an unknown feature name, with the nearest names and the known ones."""
    hint = closest(name, registry)
    msg = f"unknown {what} feature {name!r}"
    msg += f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
    return msg + f" (known: {', '.join(registry)})"


def _lookup(
    registry: Mapping[str, FeatureDefinition], name: str, what: str
) -> FeatureDefinition:
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(_unknown(name, registry, what)) from None


def _replace(
    flat: np.ndarray,
    none: np.ndarray | None,
    key: str,
    default: float,
    counts: ReplacementCounts | None,
) -> np.ndarray:
    """Replace None (``none`` mask) and NaN/inf in a flat float64 array, counting both."""
    bad = ~np.isfinite(flat)
    n_none = int(none.sum()) if none is not None else 0
    n_bad = int(bad.sum()) - n_none
    if n_none or n_bad:
        flat = np.where(bad, default, flat)
        log.debug(
            "feature %s: %d missing and %d non-finite values set to %g",
            key,
            n_none,
            n_bad,
            default,
        )
    if counts is not None:
        counts.missing[key] += n_none
        counts.nonfinite[key] += n_bad
        counts.total[key] += len(flat)
    return flat


def _flat_values(raw) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 numpy values of a flat (N,) result, with the mask of None entries (or None)."""
    raw = raw if isinstance(raw, ak.Array) else ak.Array(np.asarray(raw))
    none = None
    if raw.layout.is_option:
        none = ak.to_numpy(ak.is_none(raw, axis=0))
        none = none if none.any() else None
    values = ak.fill_none(ak.values_astype(raw, np.float64), np.nan, axis=0)
    return ak.to_numpy(values), none


def _missing_fields(array: ak.Array, fields: tuple[str, ...]) -> list[str]:
    return [f for f in fields if f not in array.fields]


def _compute_jet(
    jets: ak.Array, d: FeatureDefinition, counts: ReplacementCounts | None
) -> np.ndarray:
    key = f"jet.{d.name}"
    absent = _missing_fields(jets, d.jet_fields)
    if absent:
        log.debug(
            "feature %s: jet-table fields %s absent; default %g", key, absent, d.default
        )
        if counts is not None:
            counts.missing[key] += len(jets)
            counts.total[key] += len(jets)
        return np.full(len(jets), d.default, dtype=np.float64)
    with np.errstate(all="ignore"):
        values, none = _flat_values(d.compute(jets))
    return _replace(values, none, key, d.default, counts)


def _constituent_flat(
    jets: ak.Array,
    cands: ak.Array,
    ctype: str,
    d: FeatureDefinition,
    counts: ReplacementCounts | None,
) -> np.ndarray:
    """Flat float64 values (all constituents of all jets, in order) of one feature."""
    key = f"{ctype}.{d.name}"
    compute, absent = d.resolve(jets.fields, cands.fields)
    if compute is None:
        n = int(ak.sum(ak.num(cands, axis=1)))
        log.debug(
            "feature %s: fields %s absent; default %g for %d values",
            key,
            absent,
            d.default,
            n,
        )
        if counts is not None:
            counts.missing[key] += n
            counts.total[key] += n
        return np.full(n, d.default, dtype=np.float64)
    with np.errstate(all="ignore"):
        raw = ak.flatten(compute(jets, cands), axis=1)
    values, none = _flat_values(raw)
    return _replace(values, none, key, d.default, counts)


def jet_features(
    jets: JetTable | ak.Array,
    names: list[str],
    *,
    counts: ReplacementCounts | None = None,
) -> dict[str, np.ndarray]:
    """Compute jet-level features by name.

    Parameters
    ----------
    jets
        Jet table (or its awkward array), N jets.
    names
        Names in :data:`JET_FEATURES`.
    counts
        Accumulates how many values of each feature were replaced by its default.

    Returns
    -------
    dict
        ``name -> float64 array of shape (N,)``, finite everywhere.
    """
    array = _as_array(jets)
    return {
        name: _compute_jet(array, _lookup(JET_FEATURES, name, "jet-level"), counts)
        for name in names
    }


def constituent_features(
    jets: JetTable | ak.Array,
    ctype: str,
    names: list[str],
    *,
    counts: ReplacementCounts | None = None,
) -> dict[str, ak.Array]:
    """Compute constituent-level features of one type, in the stored constituent order.

    Parameters
    ----------
    jets
        Jet table (or its awkward array), N jets.
    ctype
        One of :data:`~jec_coffea.data.jet_table.CONSTITUENT_TYPES`.
    names
        Names in ``CONSTITUENT_FEATURES[ctype]``.
    counts
        Accumulates replaced values per feature.

    Returns
    -------
    dict
        ``name -> jagged float64 array (N × var)``. If the type is absent from the table every
        jet gets an empty list.
    """
    array = _as_array(jets)
    registry = CONSTITUENT_FEATURES[_check_type(ctype)]
    defs = [_lookup(registry, name, ctype) for name in names]
    if ctype not in array.fields:
        # the whole collection is absent: one empty list per jet
        empty = ak.unflatten(np.zeros(0), np.zeros(len(array), dtype=np.int64))
        return dict.fromkeys(names, empty)
    cands = array[ctype]
    num = ak.to_numpy(ak.num(cands, axis=1))
    return {
        d.name: ak.unflatten(_constituent_flat(array, cands, ctype, d, counts), num)
        for d in defs
    }


def _check_type(ctype: str) -> str:
    if ctype not in CONSTITUENT_FEATURES:
        msg = f"unknown constituent type {ctype!r}; expected one of {', '.join(CONSTITUENT_TYPES)}"
        raise ConfigError(msg)
    return ctype


# --------------------------------------------------------------------------- spec and tensors


class FeatureSpec(BaseModel):
    """Which features a model uses, in tensor order, and how many constituents per type.

    The spec is part of every training configuration and is written into the ONNX metadata
    (:meth:`metadata`); the names are keys of :data:`JET_FEATURES` and
    :data:`CONSTITUENT_FEATURES`.
    """

    model_config = ConfigDict(extra="forbid")

    jet: list[str] = Field(
        default_factory=list, description="jet-level features, in column order"
    )
    constituents: dict[ConstituentType, list[str]] = Field(
        default_factory=dict,
        description="constituent-level features per type, in column order",
    )
    max_constituents: dict[ConstituentType, int] = Field(
        default_factory=dict,
        description="constituents kept per type (highest pT first); one entry per type used",
    )
    feature_version: str = Field(
        FEATURE_VERSION,
        description="FEATURE_VERSION of the definitions the spec was made with",
    )

    @field_validator("jet")
    @classmethod
    def _known_jet(cls, names: list[str]) -> list[str]:
        _check_names(names, JET_FEATURES, "jet-level")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        for ctype, names in self.constituents.items():
            _check_names(names, CONSTITUENT_FEATURES[ctype], ctype)
            if ctype not in self.max_constituents:
                msg = f"max_constituents has no entry for constituent type {ctype!r}"
                raise ValueError(msg)
        for ctype, n in self.max_constituents.items():
            if ctype not in self.constituents:
                msg = f"max_constituents[{ctype!r}] given but constituents has no {ctype!r} features"
                raise ValueError(msg)
            if n < 1:
                msg = f"max_constituents[{ctype!r}] must be >= 1, got {n}"
                raise ValueError(msg)
        return self

    def check_version(self) -> None:
        """Raise :class:`ModelMismatchError` if the spec was made with other definitions."""
        if self.feature_version != FEATURE_VERSION:
            msg = (
                f"feature definitions version {self.feature_version!r} of the model differ from "
                f"this jec-coffea's FEATURE_VERSION {FEATURE_VERSION!r}; retrain the model or "
                "install the jec-coffea version it was trained with"
            )
            raise ModelMismatchError(msg)

    def input_names(self) -> list[str]:
        """Tensor names produced by :func:`to_tensors` when every type is present."""
        names = ["jet"] if self.jet else []
        for ctype in self.constituents:
            names += [ctype, f"{ctype}_mask"]
        return names

    def required_fields(self) -> dict[str, list[str]]:
        """Jet-table fields the spec reads: ``{"jet": [...], "<type>": [...]}`` (sorted)."""
        need: dict[str, set[str]] = {"jet": set()}
        for name in self.jet:
            need["jet"].update(JET_FEATURES[name].jet_fields)
        for ctype, names in self.constituents.items():
            need.setdefault(ctype, {"pt"})
            for name in names:
                d = CONSTITUENT_FEATURES[ctype][name]
                need["jet"].update(d.jet_fields)
                need[ctype].update(d.constituent_fields)
                for fields, _ in d.alternatives:
                    need[ctype].update(fields)
        return {k: sorted(v) for k, v in need.items()}

    def missing_types(self, jets: JetTable | ak.Array) -> list[str]:
        """Constituent types the spec needs that the jet table lacks (model not applicable)."""
        fields = _as_array(jets).fields
        return [t for t in self.constituents if t not in fields]

    def not_applicable(self, jets: JetTable | ak.Array) -> str | None:
        """Why a model with this spec must not be applied to these jets, or None if it may.

        A constituent model needs every constituent type it uses, and complete constituents
        (the old PFNano layout stores only candidates with puppiWeight > 0 and sets
        ``constituents_complete`` false). Jet-level models apply everywhere; absent jet
        fields are defaulted and counted.
        """
        array = _as_array(jets)
        missing = self.missing_types(array)
        if missing:
            return f"constituent collection(s) {missing} absent from the jet table"
        if (
            self.constituents
            and "constituents_complete" in array.fields
            and len(array)
            and not bool(ak.all(array.constituents_complete))
        ):
            return "the file stores only part of each jet's constituents (constituents_complete is false)"
        return None

    def metadata(self) -> dict[str, object]:
        """JSON-serialisable description: version, names, units, defaults, shapes."""
        return {
            "feature_version": self.feature_version,
            "jet": [JET_FEATURES[n].as_dict() for n in self.jet],
            "constituents": {
                t: [CONSTITUENT_FEATURES[t][n].as_dict() for n in names]
                for t, names in self.constituents.items()
            },
            "max_constituents": dict(self.max_constituents),
            "inputs": self.input_names(),
        }


def _check_names(
    names: list[str], registry: Mapping[str, FeatureDefinition], what: str
) -> None:
    for name in names:
        if name not in registry:
            raise ValueError(_unknown(name, registry, what))
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        msg = f"{what} features listed twice: {dup}"
        raise ValueError(msg)


def to_tensors(
    jets: JetTable | ak.Array,
    spec: FeatureSpec,
    *,
    counts: ReplacementCounts | None = None,
) -> dict[str, np.ndarray]:
    """Build the network inputs of ``spec`` for N jets; the one place where padding happens.

    Constituents of each type are ordered by decreasing pT, truncated to
    ``spec.max_constituents[type]`` (M), their features computed on the flat constituents and
    gathered into zero-padded (N, M, F) tensors (see ``_slots``; no per-jet Python). Replacement counts of
    constituent features refer to the kept constituents.

    Returns
    -------
    dict
        ``"jet"``: float32 (N, F_jet) if ``spec.jet`` is not empty; per constituent type
        present in the table ``"<type>"``: float32 (N, M, F_type) and ``"<type>_mask"``:
        float32 (N, M), 1 for a real constituent and 0 for padding. A type absent from the
        table (e.g. no JetSVs) gives no keys: see :meth:`FeatureSpec.missing_types`.

    Raises
    ------
    ModelMismatchError
        If ``spec.feature_version`` differs from :data:`FEATURE_VERSION`.
    """
    spec.check_version()
    array = _as_array(jets)
    out: dict[str, np.ndarray] = {}
    if spec.jet:
        feats = jet_features(array, spec.jet, counts=counts)
        out["jet"] = np.stack([feats[n] for n in spec.jet], axis=1).astype(np.float32)
    for ctype, names in spec.constituents.items():
        if ctype not in array.fields:
            log.info(
                "constituent type %r absent from the jet table: no %r tensor",
                ctype,
                ctype,
            )
            continue
        m = spec.max_constituents[ctype]
        cands = array[ctype]
        if "pt" in cands.fields:
            cands = cands[ak.argsort(cands.pt, axis=1, ascending=False, stable=True)]
        cands = cands[:, :m]
        num = ak.to_numpy(ak.num(cands, axis=1))
        flat = np.empty((int(num.sum()), len(names)), dtype=np.float32)
        for k, name in enumerate(names):
            d = CONSTITUENT_FEATURES[ctype][name]
            flat[:, k] = _constituent_flat(array, cands, ctype, d, counts)
        slot = _slots(num, m)
        valid = slot >= 0
        tensor = np.zeros((len(array), m, len(names)), dtype=np.float32)
        tensor[valid] = flat[slot[valid]]
        out[ctype] = tensor
        out[f"{ctype}_mask"] = valid.astype(np.float32)
    return out


def _slots(num: np.ndarray, m: int) -> np.ndarray:
    """(N, M) row of each padded slot in the flat constituent arrays, -1 for padding.

    The one place where padding happens. It is the offsets arithmetic of coffea's
    ``local2global`` and gives exactly ``ak.fill_none(ak.pad_none(rows, M, clip=True), -1)``
    of the per-jet row numbers (coffea ml_tools' pattern; a test checks the equality), ~20x
    faster. Every feature column is then gathered with one numpy fancy index.
    """
    num = np.asarray(num, dtype=np.int64)
    starts = np.cumsum(num) - num
    cols = np.arange(m, dtype=np.int64)
    slot = starts[:, None] + cols[None, :]
    slot[cols[None, :] >= num[:, None]] = -1
    return slot

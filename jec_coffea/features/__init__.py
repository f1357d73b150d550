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

The package is split by concern: :mod:`.registry` (definitions, :data:`FEATURE_VERSION`,
fingerprint), :mod:`.compute` (evaluation, :class:`ReplacementCounts`) and :mod:`.tensors`
(:class:`FeatureSpec`, :func:`to_tensors`); every public name is re-exported here.
"""

from __future__ import annotations

from .compute import ReplacementCounts, constituent_features, jet_features
from .registry import (
    CONSTITUENT_FEATURES,
    FEATURE_VERSION,
    JET_FEATURES,
    FeatureDefinition,
    registry_fingerprint,
    wrap_phi,
)
from .tensors import FeatureSpec, to_tensors
from .tensors import _slots as _slots  # private, imported by the padding test

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

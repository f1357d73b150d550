"""Feature specification of a model and the padded network input tensors built from it.

:class:`FeatureSpec` names the features a model uses, in tensor order, and how many
constituents per type it keeps; :func:`to_tensors` orders constituents by decreasing pT,
truncates, and scatters the zero-padded tensors (the one place where padding happens), on
flat numpy columns. A spec
written with another :data:`~.registry.FEATURE_VERSION` is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import awkward as ak
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..data.jet_table import JetTable
from ..errors import ModelMismatchError
from ._columns import FlatTable, NotFlat, flat_table
from .compute import (
    ReplacementCounts,
    _as_array,
    _constituent_values,
    _jet_features,
    _needed_fields,
    _unknown,
)
from .registry import (
    CONSTITUENT_FEATURES,
    FEATURE_VERSION,
    JET_FEATURES,
    ConstituentType,
    FeatureDefinition,
)

__all__ = ["FeatureSpec", "to_tensors"]

log = logging.getLogger(__name__)


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

    Constituents of each type are ordered by decreasing pT (stable), truncated to
    ``spec.max_constituents[type]`` (M), their features computed on the flat kept constituents
    and scattered into zero-padded (N, M, F) tensors. Replacement counts of constituent
    features refer to the kept constituents.

    The work runs on flat numpy columns (:mod:`._columns`): per type, one read of the
    (offsets, content) arrays, one stable ``np.lexsort`` on (jet, -pT) if the stored order is
    not already by decreasing pT, the features of the kept constituents as numpy expressions
    and one fancy-index assignment into the tensor. Layouts that are not plain columns
    (option types, typetracers) take the awkward path, with identical results.

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
    table = flat_table(array)
    out: dict[str, np.ndarray] = {}
    if spec.jet:
        feats = _jet_features(table, array, spec.jet, counts)
        out["jet"] = np.empty((len(array), len(spec.jet)), dtype=np.float32)
        for k, name in enumerate(spec.jet):
            out["jet"][:, k] = feats[name]
    for ctype, names in spec.constituents.items():
        if ctype not in array.fields:
            log.info(
                "constituent type %r absent from the jet table: no %r tensor",
                ctype,
                ctype,
            )
            continue
        defs = [CONSTITUENT_FEATURES[ctype][name] for name in names]
        m = spec.max_constituents[ctype]
        try:
            if table is None:
                msg = "jet record"
                raise NotFlat(msg)
            tensor, mask = _flat_tensor(table, ctype, defs, m, counts)
        except NotFlat as err:
            log.debug("%s tensor: awkward path (%s)", ctype, err)
            tensor, mask = _awkward_tensor(array, ctype, defs, m, counts)
        out[ctype] = tensor
        out[f"{ctype}_mask"] = mask
    return out


def _flat_tensor(
    table: FlatTable,
    ctype: str,
    defs: list[FeatureDefinition],
    m: int,
    counts: ReplacementCounts | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, M, F) tensor and (N, M) mask of one type from the flat columns.

    Every column the features may read is fetched first, so a layout that is not plain
    columns raises :class:`NotFlat` before anything is counted.
    """
    cons = table.constituents(ctype)
    rec = cons.record
    jet_need, cand_need = _needed_fields(defs)
    rec.prefetch(cand_need)
    table.record.prefetch(jet_need)
    total = len(cons.jet_of)
    # position within the jet; a within-jet reordering keeps it valid for the sorted rows
    rank = np.arange(total, dtype=np.int64) - np.repeat(cons.offsets[:-1], cons.counts)
    order: np.ndarray | None = None
    if "pt" in rec.fields and total > 1:
        pt = rec["pt"]
        if np.isnan(pt).any():
            # ak.argsort places NaN differently from np.lexsort: keep its order exactly
            msg = "NaN constituent pT"
            raise NotFlat(msg)
        same_jet = cons.jet_of[1:] == cons.jet_of[:-1]
        if np.any(same_jet & (pt[1:] > pt[:-1])):
            order = np.lexsort((-pt, cons.jet_of))
    keep = rank < m
    if keep.all():
        index = order if order is not None else slice(0, total)
        jet_k, rank_k = cons.jet_of, rank
    else:
        index = order[keep] if order is not None else np.flatnonzero(keep)
        jet_k, rank_k = cons.jet_of[keep], rank[keep]
    cands = rec.take(index)
    jets_b = table.record.take(jet_k)
    values = np.empty((len(jet_k), len(defs)), dtype=np.float32)
    args = (table.fields, rec.fields, len(jet_k), ctype)
    for k, d in enumerate(defs):
        values[:, k] = _constituent_values(jets_b, cands, *args, d, counts)
    slot = jet_k * m + rank_k  # one flat index per kept constituent
    tensor = np.zeros((table.n * m, len(defs)), dtype=np.float32)
    tensor[slot] = values
    mask = np.zeros(table.n * m, dtype=np.float32)
    mask[slot] = 1.0
    return tensor.reshape(table.n, m, len(defs)), mask.reshape(table.n, m)


def _awkward_tensor(
    array: ak.Array,
    ctype: str,
    defs: list[FeatureDefinition],
    m: int,
    counts: ReplacementCounts | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The same tensor and mask through awkward operations, for layouts that are not flat."""
    cands = array[ctype]
    if "pt" in cands.fields:
        cands = cands[ak.argsort(cands.pt, axis=1, ascending=False, stable=True)]
    cands = cands[:, :m]
    num = ak.to_numpy(ak.num(cands, axis=1))
    flat = np.empty((int(num.sum()), len(defs)), dtype=np.float32)
    args = (array.fields, cands.fields, len(flat), ctype)
    for k, d in enumerate(defs):
        flat[:, k] = _constituent_values(array, cands, *args, d, counts, flatten=True)
    slot = _slots(num, m)
    valid = slot >= 0
    tensor = np.zeros((len(array), m, len(defs)), dtype=np.float32)
    tensor[valid] = flat[slot[valid]]
    return tensor, valid.astype(np.float32)


def _slots(num: np.ndarray, m: int) -> np.ndarray:
    """(N, M) row of each padded slot in the flat constituent arrays, -1 for padding.

    The padding of the awkward path. It is the offsets arithmetic of coffea's
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

"""Preprocessing of network inputs: a manual non-linear chain, then a fitted linear scaling.

Every input feature passes through the same two stages in training and in the exported ONNX
graph (the torch module of :meth:`Transform.to_torch` is placed in front of the network by
:func:`jec_coffea.export.export_onnx`):

1. a manual chain of steps chosen by the physicist for heavy-tailed or signed quantities
   (``log``, ``log1p``, ``arcsinh(x / s)``, ``abs``, ``clip``, ``linear`` = ``(x - loc) / scale``);
2. a linear scaling ``(y - centre) * scale`` fitted on the training sample with robust
   estimators: ``centre`` is the median and ``scale`` the inverse of half the 16-84% quantile
   width (``"quantile68"``, weaver's choice) or of the inter-quartile range (``"iqr"``).
   A feature with one value over the whole training sample gets ``scale`` 0: the network
   cannot learn from it, and any sample then gives it the value it had in training (0).

Padded constituent slots (mask 0) are excluded from the fit and are exactly 0 after the
transform (the output is multiplied by the mask), so that sum pooling ignores them. Values
that become non-finite in the chain (``log`` of 0) are replaced by the feature's
``default`` and the result is clipped to ``bounds`` (weaver clips to ±5 as well).

Categorical features (PDG id, PV association) are mapped to the index of their value in
``categories`` (``len(categories)`` for a value not in the list); the models embed them.

The file format (``transform.yaml``) is the YAML dump of :class:`Transform`;
:meth:`Transform.from_mljec` reads ml-jec's ``transform.yaml`` (``numerical`` chains of
abs/arcsinh/log/linear and ``categorical`` value lists, flat names with ``ch_``/``ne_``/``sv_``
prefixes). This module imports without torch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jec_coffea.errors import ConfigError, InputFileError, ModelMismatchError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "AbsStep",
    "ArcsinhStep",
    "ClipStep",
    "FeatureTransform",
    "LinearStep",
    "Log1pStep",
    "LogStep",
    "Transform",
]

logger = logging.getLogger(__name__)

MLJEC_PREFIXES: dict[str, str] = {"ch_": "charged", "ne_": "neutral", "sv_": "sv"}
"""ml-jec's flat feature-name prefixes and the constituent type (input group) each denotes;
names without a prefix are jet-level (group ``"jet"``)."""


MAX_CATEGORIES = 64
"""Most categories :meth:`Transform.fit` accepts when it finds them from the data (more
means a numerical feature was declared categorical)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogStep(_Model):
    """Natural logarithm; non-positive inputs become the feature default."""

    type: Literal["log"] = "log"


class Log1pStep(_Model):
    """ln(1 + x), for counts and non-negative quantities that reach 0."""

    type: Literal["log1p"] = "log1p"


class AbsStep(_Model):
    """Absolute value (impact parameters whose sign carries no calibration information)."""

    type: Literal["abs"] = "abs"


class ArcsinhStep(_Model):
    """arcsinh(x / scale): logarithmic tails, linear near 0, defined for any sign."""

    type: Literal["arcsinh"] = "arcsinh"
    scale: float = Field(
        gt=0, description="Scale s in arcsinh(x / s), in the unit of x."
    )


class ClipStep(_Model):
    """Clip to [min, max] (either bound may be omitted)."""

    type: Literal["clip"] = "clip"
    min: float | None = Field(None, description="Lower bound (None: unbounded).")
    max: float | None = Field(None, description="Upper bound (None: unbounded).")

    @model_validator(mode="after")
    def _check_order(self) -> ClipStep:
        if self.min is not None and self.max is not None and self.min > self.max:
            msg = f"clip step: min={self.min} is above max={self.max}"
            raise ValueError(msg)
        return self


class LinearStep(_Model):
    """(x - loc) / scale with fixed parameters (ml-jec's ``linear`` step)."""

    type: Literal["linear"] = "linear"
    loc: float = Field(0.0, description="Subtracted offset, in the unit of x.")
    scale: float = Field(1.0, description="Divisor, in the unit of x; must not be 0.")

    @model_validator(mode="after")
    def _check_scale(self) -> LinearStep:
        if self.scale == 0:
            msg = "linear step: scale must not be 0"
            raise ValueError(msg)
        return self


Step = Annotated[
    LogStep | Log1pStep | AbsStep | ArcsinhStep | ClipStep | LinearStep,
    Field(discriminator="type"),
]


class FeatureTransform(_Model):
    """Preprocessing of one feature: the manual chain, then the fitted linear scaling."""

    kind: Literal["numerical", "categorical"] = Field(
        "numerical",
        description="Numerical features are scaled, categorical ones indexed.",
    )
    steps: list[Step] = Field(
        default_factory=list, description="Manual non-linear chain, applied in order."
    )
    scaling: Literal["quantile68", "iqr", "none"] = Field(
        "quantile68",
        description="Fitted scaling: centre = median and scale = 1/(half the 16-84% width) "
        "('quantile68') or 1/IQR ('iqr'); 'none' keeps the chain's output.",
    )
    centre: float | None = Field(None, description="Fitted centre (after the chain).")
    scale: float | None = Field(None, description="Fitted multiplicative scale.")
    default: float = Field(
        0.0,
        description="Output used where the chain gives NaN or infinity (before scaling).",
    )
    bounds: tuple[float, float] | None = Field(
        (-5.0, 5.0),
        description="Final clip of the output, in units of the fitted width (None: no "
        "clip; from_spec sets None for scaling 'none').",
    )
    categories: list[float] | None = Field(
        None,
        description="Categorical: the allowed values; index = position, unknown = len.",
    )

    @model_validator(mode="after")
    def _check(self) -> FeatureTransform:
        if self.kind == "categorical" and self.steps:
            msg = "a categorical feature takes no manual steps"
            raise ValueError(msg)
        if self.scale is not None and not np.isfinite(self.scale):
            msg = f"scale must be finite, got {self.scale}"
            raise ValueError(msg)
        return self

    @property
    def fitted(self) -> bool:
        """True if nothing remains to be fitted."""
        if self.kind == "categorical":
            return self.categories is not None
        return self.scaling == "none" or (
            self.centre is not None and self.scale is not None
        )

    def chain_numpy(self, x: np.ndarray) -> np.ndarray:
        """Apply the manual chain to a float64 array (any shape); non-finite -> default."""
        y = np.asarray(x, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for step in self.steps:
                y = _step_numpy(step, y)
        return np.where(np.isfinite(y), y, self.default)

    def apply_numpy(self, x: np.ndarray) -> np.ndarray:
        """Full transform of one feature column (float64 in, float64 out)."""
        if self.kind == "categorical":
            cats = np.asarray(self.categories or [], dtype=np.float64)
            hit = np.asarray(x, dtype=np.float64)[..., None] == cats
            return np.where(hit.any(-1), hit.argmax(-1), len(cats)).astype(np.float64)
        y = self.chain_numpy(x)
        if self.scaling != "none":
            y = (y - self.centre) * self.scale
        if self.bounds is not None:
            y = np.clip(y, *self.bounds)
        return y


def _step_numpy(step: Any, y: np.ndarray) -> np.ndarray:
    if step.type == "log":
        return np.log(y)
    if step.type == "log1p":
        return np.log1p(y)
    if step.type == "abs":
        return np.abs(y)
    if step.type == "arcsinh":
        return np.arcsinh(y / step.scale)
    if step.type == "clip":
        return np.clip(y, step.min, step.max)
    return (y - step.loc) / step.scale


def _robust_scale(values: np.ndarray, method: str, where: str) -> tuple[float, float]:
    """Median and inverse robust width of ``values`` (1-d, finite); scale 0 for a constant,
    1 for a zero width that is not one."""
    if values.size == 0:
        logger.warning(
            "transform fit: no valid entries for %s; using centre 0, scale 1", where
        )
        return 0.0, 1.0
    if values.min() == values.max():
        # a network learns nothing from a feature that never varies, and a weight it never
        # trained would meet the first sample where it does (puppiWeight was 1 for every
        # simulated candidate, not in CMS PFNano): scale 0 gives it its training value, 0
        logger.warning(
            "transform fit: %s is %.6g for all %d entries; scale 0: the network sees 0 "
            "for it on any sample",
            where,
            values[0],
            values.size,
        )
        return float(values[0]), 0.0
    lo_q, hi_q = (0.16, 0.84) if method == "quantile68" else (0.25, 0.75)
    lo, median, hi = np.quantile(values, [lo_q, 0.5, hi_q])
    width = (hi - lo) / 2.0 if method == "quantile68" else hi - lo
    if not width > 0:
        logger.warning(
            "transform fit: %s has zero %s width over %d entries; using scale 1",
            where,
            method,
            values.size,
        )
        return float(median), 1.0
    return float(median), float(1.0 / width)


class Transform(_Model):
    """Preprocessing of every network input, grouped like the tensors of ``to_tensors``.

    ``groups`` maps an input name (``"jet"`` or a constituent type) to its features *in
    tensor order*; the last axis of the array of that input must follow this order.
    """

    version: Literal[1] = Field(1, description="Format version of transform.yaml.")
    groups: dict[str, dict[str, FeatureTransform]] = Field(
        description="Input name -> ordered mapping feature name -> its preprocessing."
    )

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_spec(
        cls,
        spec: Any,
        *,
        steps: Mapping[str, Mapping[str, list[Any]]] | None = None,
        categorical: Mapping[str, Mapping[str, list[float] | None]] | None = None,
        scaling: Literal["quantile68", "iqr", "none"] = "quantile68",
    ) -> Transform:
        """Unfitted transform for a feature spec (``FeatureSpec``: ``jet``, ``constituents``).

        Parameters
        ----------
        spec
            Feature specification; ``spec.jet`` and ``spec.constituents[type]`` give the
            ordered feature names of each input.
        steps
            ``{group: {feature: [step, ...]}}`` manual chains (dicts or step models).
        categorical
            ``{group: {feature: values or None}}``: categorical features; ``None`` values are
            found in :meth:`fit` from the distinct values of the training sample.
        scaling
            Fitted scaling of every numerical feature.
        """
        steps = steps or {}
        categorical = categorical or {}
        names = _spec_groups(spec)
        for where, table in (("steps", steps), ("categorical", categorical)):
            for group, feats in table.items():
                unknown = sorted(set(feats) - set(names.get(group, [])))
                if group not in names or unknown:
                    msg = (
                        f"transform {where}: {group!r}/{unknown or ''} not in the feature spec "
                        f"(inputs: {dict(names.items())})"
                    )
                    raise ConfigError(msg)
        groups: dict[str, dict[str, FeatureTransform]] = {}
        for group, feats in names.items():
            groups[group] = {}
            for name in feats:
                if name in categorical.get(group, {}):
                    cats = categorical[group][name]
                    ft = FeatureTransform(
                        kind="categorical",
                        scaling="none",
                        bounds=None,
                        categories=None if cats is None else [float(c) for c in cats],
                    )
                else:
                    ft = FeatureTransform.model_validate(
                        {
                            "steps": list(steps.get(group, {}).get(name, [])),
                            "scaling": scaling,
                            # unscaled values are not in units of their width: no clip
                            "bounds": None if scaling == "none" else (-5.0, 5.0),
                        }
                    )
                groups[group][name] = ft
        return cls(groups=groups)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Transform:
        """Read a ``transform.yaml`` written by :meth:`to_yaml`."""
        data = _load_yaml(path)
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            msg = f"{path}: not a jec-coffea transform.yaml: {err}"
            raise ConfigError(msg) from err

    def to_yaml(self, path: str | Path) -> Path:
        """Write the transform (fitted values included) as YAML; returns the path."""
        path = Path(path)
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
        return path

    @classmethod
    def from_mljec(cls, path: str | Path) -> Transform:
        """Read ml-jec's ``transform.yaml`` (``numerical`` chains, ``categorical`` values).

        ml-jec's chains already end with their fitted ``linear`` step, so every feature is
        taken as fitted (``scaling="none"``, no final clip), which reproduces ml-jec's
        preprocessing exactly. Flat names map to groups by prefix (:data:`MLJEC_PREFIXES`):
        ``ch_pt`` becomes feature ``pt`` of group ``charged``; ``pt`` stays in ``jet``.
        Categorical features map unknown values to ``len(values)`` (ml-jec used -1).
        """
        data = _load_yaml(path)
        if not isinstance(data, dict) or not set(data) <= {"numerical", "categorical"}:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            msg = f"{path}: not an ml-jec transform.yaml (expected keys numerical, categorical; got {keys})"
            raise ConfigError(msg)
        groups: dict[str, dict[str, FeatureTransform]] = {}
        try:
            for name, chain in (data.get("numerical") or {}).items():
                steps = [
                    {"type": s["type"], **(s.get("params") or {})} for s in chain or []
                ]
                group, short = _mljec_group(name)
                groups.setdefault(group, {})[short] = FeatureTransform.model_validate(
                    {"steps": steps, "scaling": "none", "bounds": None}
                )
            for name, values in (data.get("categorical") or {}).items():
                group, short = _mljec_group(name)
                groups.setdefault(group, {})[short] = FeatureTransform(
                    kind="categorical",
                    scaling="none",
                    bounds=None,
                    categories=[float(v) for v in values],
                )
        except (ValidationError, KeyError, TypeError) as err:
            msg = f"{path}: invalid ml-jec transform entry: {err}"
            raise ConfigError(msg) from err
        return cls(groups=groups)

    # ---------------------------------------------------------------------- queries
    def feature_names(self) -> dict[str, list[str]]:
        """Ordered feature names per input group."""
        return {g: list(f) for g, f in self.groups.items()}

    def cardinalities(self) -> dict[str, dict[str, int]]:
        """Embedding sizes of categorical features: ``len(categories) + 1`` (unknown)."""
        out: dict[str, dict[str, int]] = {}
        for group, feats in self.groups.items():
            for name, ft in feats.items():
                if ft.kind == "categorical" and ft.categories is not None:
                    out.setdefault(group, {})[name] = len(ft.categories) + 1
        return out

    @property
    def fitted(self) -> bool:
        """True if every feature has its fitted values."""
        return all(ft.fitted for feats in self.groups.values() for ft in feats.values())

    def check_spec(self, spec: Any) -> None:
        """Raise :class:`ModelMismatchError` unless the groups and feature order match ``spec``."""
        want = _spec_groups(spec)
        have = self.feature_names()
        if want != have:
            diff = {
                g: {"spec": want.get(g), "transform": have.get(g)}
                for g in sorted(set(want) | set(have))
                if want.get(g) != have.get(g)
            }
            msg = f"transform features differ from the feature spec: {diff}"
            raise ModelMismatchError(msg)

    # ------------------------------------------------------------------ fit / apply
    def fit(
        self,
        arrays: Mapping[str, np.ndarray],
        masks: Mapping[str, np.ndarray] | None = None,
    ) -> Transform:
        """Return a copy with the linear scaling (and missing categories) fitted.

        Parameters
        ----------
        arrays
            ``{"jet": (N, F_jet), "<type>": (N, M, F_type), ...}`` untransformed inputs, as
            built by ``jec_coffea.features.to_tensors`` (``"<type>_mask"`` keys are used as
            masks when ``masks`` is None, other extra keys are ignored).
        masks
            ``{"<type>": (N, M)}`` 1 for a real constituent, 0 for padding; padding is
            excluded from the fit.
        """
        groups: dict[str, dict[str, FeatureTransform]] = {}
        for group, feats in self.groups.items():
            x, mask = self._group_array(arrays, masks, group)
            valid = mask.reshape(-1) > 0
            flat = x.reshape(-1, x.shape[-1])[valid]
            groups[group] = {}
            for j, (name, ft) in enumerate(feats.items()):
                col = flat[:, j].astype(np.float64)
                where = f"{group}/{name}"
                if ft.kind == "categorical":
                    cats = ft.categories
                    if cats is None:
                        cats = [float(v) for v in np.unique(col[np.isfinite(col)])]
                        if len(cats) > MAX_CATEGORIES:
                            msg = (
                                f"transform fit: categorical feature {where} takes "
                                f"{len(cats)} distinct values (> {MAX_CATEGORIES}); list "
                                "its categories explicitly or declare it numerical"
                            )
                            raise ConfigError(msg)
                        logger.info(
                            "transform fit: %s has %d categories", where, len(cats)
                        )
                    groups[group][name] = ft.model_copy(update={"categories": cats})
                    continue
                if ft.scaling == "none":
                    groups[group][name] = ft
                    continue
                y = ft.chain_numpy(col)
                centre, scale = _robust_scale(y, ft.scaling, where)
                logger.info(
                    "transform fit: %s over %d entries: centre %.6g, scale %.6g",
                    where,
                    y.size,
                    centre,
                    scale,
                )
                groups[group][name] = ft.model_copy(
                    update={"centre": centre, "scale": scale}
                )
        return Transform(groups=groups)

    def apply_numpy(
        self,
        arrays: Mapping[str, np.ndarray],
        masks: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Transform the inputs with numpy (float32 out); padded entries are exactly 0.

        Returns a dict with the transformed group arrays and the masks of the constituent
        groups unchanged (``"<type>_mask"``), i.e. the layout of the model inputs.
        """
        if not self.fitted:
            unfitted = [
                f"{g}/{n}"
                for g, fs in self.groups.items()
                for n, ft in fs.items()
                if not ft.fitted
            ]
            msg = f"transform is not fitted (call fit first); unfitted features: {unfitted}"
            raise ConfigError(msg)
        out: dict[str, np.ndarray] = {}
        for group, feats in self.groups.items():
            x, mask = self._group_array(arrays, masks, group)
            cols = [ft.apply_numpy(x[..., j]) for j, ft in enumerate(feats.values())]
            y = np.stack(cols, axis=-1) if cols else np.zeros((*x.shape[:-1], 0))
            if group != "jet":
                y = y * mask[..., None]
                out[f"{group}_mask"] = np.asarray(mask, dtype=np.float32)
            out[group] = y.astype(np.float32)
        return out

    def _group_array(
        self,
        arrays: Mapping[str, np.ndarray],
        masks: Mapping[str, np.ndarray] | None,
        group: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        if group not in arrays:
            msg = f"transform input {group!r} missing; got inputs {sorted(arrays)}"
            raise ModelMismatchError(msg)
        x = np.asarray(arrays[group])
        n_feat = len(self.groups[group])
        if x.shape[-1] != n_feat or x.ndim != (2 if group == "jet" else 3):
            msg = (
                f"transform input {group!r} has shape {x.shape}; expected "
                f"({'N' if group == 'jet' else 'N, M'}, {n_feat}) for features "
                f"{list(self.groups[group])}"
            )
            raise ModelMismatchError(msg)
        if group == "jet":
            return x, np.ones(x.shape[0], dtype=np.float32)
        key = f"{group}_mask"
        if masks is not None:
            mask = masks.get(group, masks.get(key))
        else:
            mask = arrays.get(key)
        mask = np.ones(x.shape[:2], np.float32) if mask is None else np.asarray(mask)
        if mask.shape != x.shape[:2]:
            msg = f"mask of {group!r} has shape {mask.shape}; expected {x.shape[:2]}"
            raise ModelMismatchError(msg)
        return x, mask

    # ------------------------------------------------------------------------ torch
    def to_torch(self, groups: list[str] | None = None) -> nn.Module:
        """The same transform as a torch module (needs torch; used inside the ONNX graph).

        ``groups`` restricts it to some inputs (default: all groups).
        """
        if not self.fitted:
            msg = "transform is not fitted (call fit first) before building its torch module"
            raise ConfigError(msg)
        from jec_coffea.models.preprocess import TransformModule

        return TransformModule(self, groups)


def _spec_groups(spec: Any) -> dict[str, list[str]]:
    """Ordered feature names per input of a feature spec (no ``"jet"`` if it has none)."""
    groups = {"jet": list(spec.jet)} if spec.jet else {}
    groups.update({t: list(v) for t, v in spec.constituents.items()})
    return groups


def _mljec_group(name: str) -> tuple[str, str]:
    for prefix, group in MLJEC_PREFIXES.items():
        if name.startswith(prefix):
            return group, name[len(prefix) :]
    return "jet", name


def _load_yaml(path: str | Path) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise InputFileError(str(path), f"cannot read transform file: {err}") from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        msg = f"{path}: invalid YAML: {err}"
        raise ConfigError(msg) from err

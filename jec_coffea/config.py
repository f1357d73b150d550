"""The master training configuration: one YAML file, validated on load.

A configuration says which data to train on (``data``: the ``data.yaml`` dataset
description, split fractions, batch size, jet selection, constituents per type), which
features the network sees (``features``: a :class:`jec_coffea.features.FeatureSpec`), the
preprocessing (``transform``: a ``transform.yaml`` or fitted on the training split), the
network (``model``: one of the architectures of :mod:`jec_coffea.models`, chosen by
``architecture``), the ``loss``, the ``reweighting`` of the training jets, the
``optimizer``, the learning-rate ``schedule``, ``early_stopping``, optional ``adversarial``
(FGSM) training, the number of ``epochs``, the ``seed`` and the ``device``.

Every section forbids unknown keys (a misspelt key is an error naming it and the nearest
valid keys), every field is described (``Field(description=...)``; ``jec-coffea train CONFIG
--check`` validates a configuration against its data without training), and relative paths
resolve against the YAML file's directory. :meth:`TrainingConfig.resolved`
gives the configuration with every default filled and absolute paths; it is saved next to
each trained model together with its hash (:meth:`TrainingConfig.config_hash`).

This module imports neither torch nor the models' torch code: the model section is the
pydantic union published by :mod:`jec_coffea.models`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .data.jet_table import CONSTITUENT_TYPES, FLAVOUR_GROUPS
from .errors import ConfigError, closest
from .features import FeatureSpec
from .models.config import ModelConfig
from .transform import Transform

__all__ = [
    "RESUMABLE_KEYS",
    "AdversarialConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "LossConfig",
    "OptimizerConfig",
    "ReweightingConfig",
    "ScheduleConfig",
    "SelectionConfig",
    "SplitConfig",
    "TrainingConfig",
    "TransformConfig",
    "load_config",
]

log = logging.getLogger(__name__)

RESUMABLE_KEYS: tuple[str, ...] = ("epochs", "max_steps", "device", "num_threads")
"""Top-level keys that may change when a training is resumed (e.g. to train longer). The
cosine and one-cycle schedules span the run's total steps, so changing ``epochs`` or
``max_steps`` on resume reshapes their remaining part; the other schedules are unaffected."""

_PT_EDGES = [20, 30, 50, 80, 120, 200, 300, 500, 800, 1300, 2000, 3000, 7000]
_ETA_EDGES = [0.0, 1.3, 2.5, 3.0, 5.0]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SelectionConfig(_Model):
    """Jets that get a target (DESIGN.md, "Default jet selection")."""

    pt_gen_min: float = Field(
        20.0, ge=0, description="minimum gen-jet pT [GeV] (default 20)"
    )
    abs_eta_gen_max: float = Field(
        5.0, gt=0, description="maximum gen-jet |η| (5.0; 2.5 restricts to the tracker)"
    )
    tight_jet_id: bool = Field(
        True,
        description="require tight jet ID (bit 1 of Jet_jetId) where the file has it",
    )
    pt_raw_min: float = Field(
        0.0, ge=0, description="minimum raw jet pT [GeV] (0: no cut beyond the file's)"
    )


class SplitConfig(_Model):
    """Fractions of the deterministic hash split (jec_coffea.data.split)."""

    train: float = Field(0.6, gt=0, lt=1, description="fraction of events for training")
    val: float = Field(0.2, gt=0, lt=1, description="fraction for validation")
    test: float = Field(0.2, ge=0, lt=1, description="fraction kept for evaluation")
    seed: int = Field(
        0, ge=0, description="hash seed of the split (evaluation must use the same)"
    )

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            msg = f"split fractions train+val+test must sum to 1, got {total:g}"
            raise ValueError(msg)
        return self


class DataConfig(_Model):
    """Where the jets come from and how they are batched."""

    dataset: Path = Field(
        description="data.yaml dataset description (relative to this config file)"
    )
    split: SplitConfig = Field(
        default_factory=SplitConfig, description="train/val/test fractions"
    )
    batch_size: int = Field(256, ge=1, description="jets per step (per rank under DDP)")
    val_batch_size: int | None = Field(
        None, ge=1, description="jets per validation batch (default 4 x batch_size)"
    )
    max_constituents: dict[str, int] | None = Field(
        None,
        description="constituents kept per type after pT ordering, e.g. {charged: 64}; "
        "overrides features.max_constituents",
    )
    max_jets: int | None = Field(
        None, ge=1, description="use at most this many jets per split (None: all)"
    )
    selection: SelectionConfig = Field(
        default_factory=SelectionConfig, description="jets that get a target"
    )

    @model_validator(mode="after")
    def _known_types(self) -> DataConfig:
        for ctype in self.max_constituents or {}:
            if ctype not in CONSTITUENT_TYPES:
                msg = f"max_constituents: unknown constituent type {ctype!r}; known: {list(CONSTITUENT_TYPES)}"
                raise ValueError(msg)
        return self


class LossConfig(_Model):
    """Loss on y = ln(pT_gen / pT_raw) (see jec_coffea.training.losses)."""

    type: Literal["mae", "mse", "huber", "logcosh", "quantile", "gaussian_nll"] = Field(
        "huber", description="loss function"
    )
    delta: float = Field(0.1, gt=0, description="Huber transition point in ln pT")
    quantiles: list[float] = Field(
        [0.25, 0.5, 0.75],
        description="quantiles of the pinball loss (must contain 0.5, the prediction)",
    )
    min_log_sigma: float = Field(
        -7.0, description="lower clamp on the predicted ln σ of gaussian_nll"
    )
    flavour_penalty: float = Field(
        0.0,
        ge=0,
        description="weight of the flavour term: in each pT_gen bin of flavour_pt_edges, the "
        "squared spread over uds, c, b, g of the weighted mean of tanh((ŷ - y) / "
        "flavour_scale), a smooth per-flavour median offset (0 = off)",
    )
    flavour_pt_edges: list[float] = Field(
        [20.0, 50.0, 150.0],
        description="pT_gen bin edges [GeV] of the flavour term (last bin open-ended)",
    )
    flavour_scale: float = Field(
        0.05, gt=0, description="residual scale in ln pT of the flavour term's tanh"
    )

    @model_validator(mode="after")
    def _quantiles_valid(self) -> LossConfig:
        q = self.quantiles
        if sorted(q) != q or len(set(q)) != len(q) or not all(0 < x < 1 for x in q):
            msg = f"quantiles must be strictly increasing in (0, 1), got {q}"
            raise ValueError(msg)
        if 0.5 not in q:
            msg = f"quantiles must contain 0.5 (the median is the prediction), got {q}"
            raise ValueError(msg)
        e = self.flavour_pt_edges
        if not e or any(b <= a for a, b in itertools.pairwise(e)):
            msg = f"flavour_pt_edges must be non-empty and strictly increasing, got {e}"
            raise ValueError(msg)
        return self


class ReweightingConfig(_Model):
    """Per-flavour (pT_gen, |η_gen|) reweighting and class balancing (Stein framework)."""

    target: Literal["none", "flat", "reference", "average"] = Field(
        "flat", description="target (pT, |η|) distribution of every flavour group"
    )
    reference_flavour: Literal["uds", "c", "b", "g", "unknown"] = Field(
        "g",
        description="flavour whose distribution is the target when target=reference",
    )
    class_balance: bool = Field(
        True, description="scale each flavour group to the same total weight"
    )
    pt_edges: list[float] = Field(
        _PT_EDGES, description="pT_gen bin edges [GeV], increasing"
    )
    abs_eta_edges: list[float] = Field(
        _ETA_EDGES, description="|η_gen| bin edges, increasing"
    )
    use_gen_weight: bool = Field(
        False,
        description="start from the generator event weights (off by default: pT-hat-biased "
        "samples carry weights over orders of magnitude, and the (pT, |η|) reweighting "
        "already sets the kinematic distribution the network sees)",
    )
    max_weight: float | None = Field(
        50.0, gt=0, description="clip weights above this (after normalising to mean 1)"
    )

    @model_validator(mode="after")
    def _edges(self) -> ReweightingConfig:
        for name in ("pt_edges", "abs_eta_edges"):
            e = getattr(self, name)
            if len(e) < 2 or any(b <= a for a, b in itertools.pairwise(e)):
                msg = f"{name} must be at least two strictly increasing values, got {e}"
                raise ValueError(msg)
        return self


class OptimizerConfig(_Model):
    """Optimiser and gradient handling."""

    type: Literal["adamw", "adam", "sgd"] = Field("adamw", description="optimiser")
    lr: float = Field(1e-3, gt=0, description="(initial / maximum) learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    grad_clip: float | None = Field(
        None, gt=0, description="clip the gradient norm to this value (None: off)"
    )


class _NoSchedule(_Model):
    type: Literal["constant"] = Field(description="constant learning rate")


class _Plateau(_Model):
    type: Literal["reduce_on_plateau"] = Field(
        description="divide the LR when the validation loss stalls"
    )
    factor: float = Field(0.5, gt=0, lt=1, description="LR multiplier on a plateau")
    patience: int = Field(
        3, ge=0, description="epochs without improvement before cutting"
    )
    min_lr: float = Field(1e-6, ge=0, description="lower bound of the LR")


class _Cosine(_Model):
    type: Literal["cosine"] = Field(description="cosine annealing over all steps")
    min_lr: float = Field(1e-6, ge=0, description="LR at the end")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps from 0")


class _OneCycle(_Model):
    type: Literal["one_cycle"] = Field(description="one-cycle policy (per step)")
    pct_start: float = Field(0.3, gt=0, lt=1, description="fraction of steps rising")
    div_factor: float = Field(25.0, gt=1, description="initial LR = lr / div_factor")
    final_div_factor: float = Field(1e4, gt=1, description="final LR = initial / this")


ScheduleConfig = Annotated[
    _NoSchedule | _Plateau | _Cosine | _OneCycle, Field(discriminator="type")
]


class EarlyStoppingConfig(_Model):
    """Stop when the validation loss has not improved for ``patience`` epochs."""

    enabled: bool = Field(True, description="use early stopping")
    patience: int = Field(10, ge=1, description="epochs without improvement")
    min_delta: float = Field(
        0.0, ge=0, description="improvement smaller than this does not count"
    )


class AdversarialConfig(_Model):
    """FGSM adversarial training on the preprocessed inputs (as in the Stein framework)."""

    enabled: bool = Field(False, description="add FGSM-perturbed copies of each batch")
    epsilon: float = Field(
        0.01, gt=0, description="perturbation size in units of the standardised inputs"
    )
    weight: float = Field(
        0.5, ge=0, le=1, description="loss = (1-w) clean + w adversarial"
    )


class TransformConfig(_Model):
    """How the inputs are preprocessed (jec_coffea.transform.Transform.from_spec).

    ``steps`` and ``categorical`` are keyed by input group (``jet``, ``charged``,
    ``neutral``, ``sv``) and feature name; every name must be a feature of ``features``.
    """

    path: Path | None = Field(
        None,
        description="fitted transform.yaml (jec-coffea build-transform); fitted on the "
        "training split at the start of training when absent",
    )
    scaling: Literal["quantile68", "iqr", "none"] = Field(
        "quantile68",
        description="fitted scaling: median and half the 16-84% width, or the IQR",
    )
    steps: dict[str, dict[str, list[dict[str, Any]]]] = Field(
        default_factory=dict,
        description="manual chains, e.g. {charged: {d0: [{type: abs}, {type: log1p}]}}",
    )
    categorical: dict[str, dict[str, list[float] | None]] = Field(
        default_factory=dict,
        description="categorical features and their values (null: found in the fit); "
        "the models embed them",
    )


class TrainingConfig(_Model):
    """The master training configuration (``jec-coffea train CONFIG``)."""

    data: DataConfig = Field(description="dataset, split, batching, selection")
    features: FeatureSpec = Field(description="jet and constituent features")
    transform: TransformConfig = Field(
        default_factory=TransformConfig,
        description="preprocessing: manual chains, categorical features, fitted scaling",
    )
    model: ModelConfig = Field(description="network; `architecture` picks the kind")
    loss: LossConfig = Field(default_factory=LossConfig, description="loss function")
    reweighting: ReweightingConfig = Field(
        default_factory=ReweightingConfig, description="training weights"
    )
    optimizer: OptimizerConfig = Field(
        default_factory=OptimizerConfig, description="optimiser"
    )
    schedule: ScheduleConfig = Field(
        default_factory=lambda: _Plateau(type="reduce_on_plateau"),
        description="learning-rate schedule: constant, reduce_on_plateau, cosine, one_cycle",
    )
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="early stopping"
    )
    adversarial: AdversarialConfig = Field(
        default_factory=AdversarialConfig, description="FGSM adversarial training"
    )
    epochs: int = Field(30, ge=1, description="maximum number of epochs")
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many optimiser steps in total"
    )
    steps_per_epoch: int | None = Field(
        None, ge=1, description="cap on steps per epoch (None: one pass over the data)"
    )
    seed: int = Field(42, ge=0, description="seed of every random number generator")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    num_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads (None: torch's default)"
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_max_constituents(cls, data: Any) -> Any:
        """``data.max_constituents`` is the user-facing place; FeatureSpec carries it."""
        if not isinstance(data, dict):
            return data
        section = data.get("data")
        feats = data.get("features")
        if isinstance(section, dict) and isinstance(feats, dict):
            mc = section.get("max_constituents")
            if mc:
                feats = dict(feats)
                merged = dict(feats.get("max_constituents") or {})
                merged.update(mc)
                feats["max_constituents"] = merged
                data = {**data, "features": feats}
        return data

    @model_validator(mode="after")
    def _transform_matches_features(self) -> TrainingConfig:
        """Every feature named in ``transform`` must be one of ``features``."""
        self.unfitted_transform()
        return self

    def unfitted_transform(self) -> Transform:
        """The :class:`~jec_coffea.transform.Transform` this config describes, not fitted."""
        return Transform.from_spec(
            self.features,
            steps=self.transform.steps,
            categorical=self.transform.categorical,
            scaling=self.transform.scaling,
        )

    # ------------------------------------------------------------------ IO
    @classmethod
    def load(cls, path: str | Path) -> TrainingConfig:
        """Read and validate a YAML configuration; relative paths resolve next to it.

        Raises
        ------
        ConfigError
            Unreadable YAML, unknown keys (with the nearest valid ones), bad values —
            every message starts with the file and names the key.
        """
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            msg = f"{path}: cannot read the configuration ({err.strerror or err})"
            raise ConfigError(msg) from err
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            msg = f"{path}: not valid YAML: {err}"
            raise ConfigError(msg) from err
        if not isinstance(raw, dict):
            msg = f"{path}: the configuration must be a mapping of sections, got {type(raw).__name__}"
            raise ConfigError(msg)
        return cls.from_dict(raw, source=str(path), base_dir=path.parent)

    @classmethod
    def from_dict(
        cls,
        raw: dict[str, Any],
        *,
        source: str = "<config>",
        base_dir: str | Path | None = None,
    ) -> TrainingConfig:
        """Validate a configuration mapping (see :meth:`load`)."""
        try:
            cfg = cls.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(_describe(err, source)) from err
        if base_dir is not None:
            cfg = cfg._with_base(Path(base_dir))
        return cfg

    def _with_base(self, base: Path) -> TrainingConfig:
        out = self.model_copy(deep=True)
        out.data.dataset = _absolute(self.data.dataset, base)
        if self.transform.path is not None:
            out.transform.path = _absolute(self.transform.path, base)
        return out

    def save(self, path: str | Path) -> None:
        """Write the resolved configuration as YAML (with its hash in a comment)."""
        body = yaml.safe_dump(self.resolved(), sort_keys=False)
        Path(path).write_text(f"# config hash {self.config_hash()}\n{body}")

    def resolved(self) -> dict[str, Any]:
        """All fields, defaults filled, as plain JSON-compatible data."""
        return self.model_dump(mode="json")

    def config_hash(self, *, exclude: tuple[str, ...] = ()) -> str:
        """sha256 of the canonical JSON of :meth:`resolved` (independent of key order).

        ``exclude`` drops top-level keys, e.g. :data:`RESUMABLE_KEYS` to compare runs that
        may be resumed with more epochs.
        """
        doc = {k: v for k, v in self.resolved().items() if k not in exclude}
        canon = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    # ----------------------------------------------------------- derived
    @property
    def flavour_groups(self) -> tuple[str, ...]:
        """The fixed flavour-group order the weights refer to."""
        return FLAVOUR_GROUPS


def load_config(path: str | Path) -> TrainingConfig:
    """Read a master configuration YAML (:meth:`TrainingConfig.load`)."""
    return TrainingConfig.load(path)


def _absolute(path: Path, base: Path) -> Path:
    p = Path(path).expanduser()
    if "://" in str(path) or p.is_absolute():
        return p
    return (base / p).resolve()


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models inside a (possibly Annotated) union annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Annotated:
        return _union_members(args[0])
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def _clean_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], type[BaseModel] | None]:
    """Drop discriminator tags pydantic puts in ``loc`` and find the innermost model.

    ``("model", "deepsets", "hiden")`` -> ``(("model", "hiden"), DeepSetsConfig)``.
    """
    current: type[BaseModel] | None = TrainingConfig
    clean: list[Any] = []
    members: list[type[BaseModel]] = []
    for part in loc:
        if members:
            tagged = [
                m
                for m in members
                if any(
                    typing.get_origin(f.annotation) is Literal
                    and typing.get_args(f.annotation) == (part,)
                    for f in m.model_fields.values()
                )
            ]
            members = []
            if tagged:
                current = tagged[0]
                continue
        clean.append(part)
        fields = getattr(current, "model_fields", None) or {}
        if part not in fields:
            current = None
            continue
        ann = fields[part].annotation
        members = _union_members(ann)
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return tuple(clean), current


def _describe(err: ValidationError, source: str) -> str:
    """One readable part per problem: file, dotted key, what is wrong, nearest keys."""
    lines = []
    for e in err.errors():
        loc, _ = _clean_loc(tuple(e["loc"]))
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            _, parent = _clean_loc(tuple(e["loc"])[:-1])
            valid = list(getattr(parent, "model_fields", {}) or {})
            hints = closest(str(loc[-1]), valid)
            hint = (
                f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
            )
            lines.append(f"unknown key {key!r}{hint}")
        elif e["type"] == "missing":
            lines.append(f"missing key {key!r}")
        else:
            text = e["msg"].removeprefix("Value error, ")
            if e["type"] != "value_error" and not isinstance(e.get("input"), dict):
                text += f" (got {e.get('input')!r:.80})"
            lines.append(f"key {key!r}: {text}" if key else text)
    return f"{source}: invalid configuration: " + "; ".join(lines)

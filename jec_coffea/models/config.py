"""Validated configurations of the calibration networks, one per architecture.

The configurations are plain pydantic models (no torch import), so the master configuration
can validate them without the training extra. :data:`ModelConfig` is the union discriminated
on ``architecture``; :func:`build_model` turns a configuration and a feature specification into
the torch module (importing torch at that point).
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from jec_coffea import extras
from jec_coffea.errors import ConfigError

__all__ = [
    "DeepSetsConfig",
    "EdgeConvConfig",
    "MLPConfig",
    "ModelConfig",
    "ParTConfig",
    "ParticleNetConfig",
    "ResNetConfig",
    "build_model",
    "parse_model_config",
]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categorical: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Input group -> categorical feature -> number of categories (the "
        "transform maps values to indices 0..n-1; use Transform.cardinalities()).",
    )
    embedding_dim: int = Field(
        4, ge=1, description="Size of each categorical embedding."
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout rate in dense layers."
    )
    activation: Literal["gelu", "gelu_tanh", "relu", "tanh", "elu", "leaky_relu"] = (
        Field(
            "gelu",
            description="Activation of the dense layers: 'gelu' exact (erf) GELU, 'gelu_tanh' "
            "its tanh approximation (faster in onnxruntime, fused as FastGelu), 'relu' the "
            "fastest (MLP: relu/tanh/elu/leaky_relu keep it convertible to a correctionlib "
            "LWTNN node). ParticleNet's edge network and ParT's blocks keep GELU.",
        )
    )
    head: list[int] = Field(
        default_factory=lambda: [128, 64],
        description="Hidden widths of the jet-level head that outputs ln(pT_gen/pT_raw).",
    )


class MLPConfig(_Config):
    """Dense network on jet-level features only: one chain hidden -> head -> output."""

    architecture: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(
        default_factory=lambda: [128, 128, 128], description="Hidden layer widths."
    )


class ResNetConfig(_Config):
    """Residual dense network on jet-level features (pre-norm residual blocks)."""

    architecture: Literal["resnet"] = "resnet"
    width: int = Field(128, ge=1, description="Width of the residual stream.")
    blocks: int = Field(3, ge=1, description="Number of residual blocks.")


class DeepSetsConfig(_Config):
    """Deep Sets / Particle Flow Network: per-constituent network, masked pooling, head."""

    architecture: Literal["deepsets"] = "deepsets"
    types: list[str] | None = Field(
        None,
        description="Constituent types used (None: every type of the feature spec).",
    )
    phi: list[int] = Field(
        default_factory=lambda: [64, 64, 64],
        description="Widths of the per-constituent network Phi (one per type).",
    )
    pooling: Literal["sum", "mean"] = Field(
        "sum", description="Masked pooling over each set (PFN: sum)."
    )


class EdgeConvConfig(BaseModel):
    """One EdgeConv block."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(ge=1, description="Number of nearest neighbours.")
    channels: list[int] = Field(min_length=1, description="Widths of the edge network.")


_PARTICLENET_SIZES: dict[str, dict[str, Any]] = {
    "lite": {
        "edge_convs": [
            {"k": 7, "channels": [32, 32, 32]},
            {"k": 7, "channels": [64, 64, 64]},
        ],
        "head": [128],
    },
    "full": {
        "edge_convs": [
            {"k": 16, "channels": [64, 64, 64]},
            {"k": 16, "channels": [128, 128, 128]},
            {"k": 16, "channels": [256, 256, 256]},
        ],
        "head": [256],
    },
}
"""ParticleNet sizes of the original paper (ParticleNet-Lite and ParticleNet)."""


class ParticleNetConfig(_Config):
    """ParticleNet: EdgeConv blocks on a dynamic k-NN graph, first in (Δη, Δφ)."""

    architecture: Literal["particlenet"] = "particlenet"
    size: Literal["lite", "full", "custom"] = Field(
        "lite", description="Preset of edge_convs and head ('custom': as given)."
    )
    types: list[str] | None = Field(
        None, description="Constituent types used (None: all)."
    )
    coordinates: tuple[str, str] = Field(
        ("deta", "dphi"),
        description="Feature names of the k-NN coordinates of the first block (raw values).",
    )
    embed_dim: int = Field(
        32, ge=1, description="Common width of the per-type input embedding."
    )
    edge_convs: list[EdgeConvConfig] = Field(
        default_factory=list, description="EdgeConv blocks."
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("size", "lite") != "custom":
            preset = _PARTICLENET_SIZES[data.get("size", "lite")]
            data = {**preset, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> ParticleNetConfig:
        if not self.edge_convs:
            msg = "particlenet: edge_convs is empty (set size 'lite'/'full' or list blocks)"
            raise ValueError(msg)
        return self


class ParTConfig(_Config):
    """Particle Transformer: particle blocks with pairwise bias, then class-attention blocks."""

    architecture: Literal["part"] = "part"
    types: list[str] | None = Field(
        None, description="Constituent types used (None: all)."
    )
    dim: int = Field(64, ge=1, description="Width of the particle embedding.")
    heads: int = Field(4, ge=1, description="Attention heads (dim must be divisible).")
    particle_blocks: int = Field(
        4, ge=0, description="Self-attention blocks over particles."
    )
    class_blocks: int = Field(2, ge=1, description="Class-attention blocks.")
    ffn_ratio: int = Field(
        4, ge=1, description="Hidden width of the feed-forward / dim."
    )
    pair_hidden: list[int] = Field(
        default_factory=lambda: [32, 32],
        description="Widths of the pointwise network embedding the 4 pairwise features.",
    )
    pt_feature: str = Field(
        "rel_pt",
        description="Per-constituent pT-like feature for the pairwise features.",
    )
    pt_is_log: bool = Field(False, description="pt_feature holds ln(pT) (e.g. log_pt).")
    eta_feature: str = Field("deta", description="Per-constituent η-like feature (Δη).")
    phi_feature: str = Field("dphi", description="Per-constituent φ-like feature (Δφ).")

    @model_validator(mode="after")
    def _check(self) -> ParTConfig:
        if self.dim % self.heads:
            msg = f"part: dim={self.dim} is not divisible by heads={self.heads}"
            raise ValueError(msg)
        return self


ModelConfig = Annotated[
    MLPConfig | ResNetConfig | DeepSetsConfig | ParticleNetConfig | ParTConfig,
    Field(discriminator="architecture"),
]
"""Any network configuration, selected by its ``architecture`` key."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(ModelConfig)


def parse_model_config(data: dict[str, Any]) -> Any:
    """Validate a mapping (from YAML) into the configuration of its ``architecture``."""
    return _ADAPTER.validate_python(data)


_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "mlp": ("jec_coffea.models.mlp", "MLP"),
    "resnet": ("jec_coffea.models.mlp", "ResNet"),
    "deepsets": ("jec_coffea.models.deepsets", "DeepSets"),
    "particlenet": ("jec_coffea.models.particlenet", "ParticleNet"),
    "part": ("jec_coffea.models.part", "ParT"),
}
"""Architecture name -> (module, class) of its torch implementation."""


def build_model(config: Any, spec: Any) -> Any:
    """Build the torch network of ``config`` for the inputs of ``spec`` (needs torch).

    Parameters
    ----------
    config
        A :data:`ModelConfig` instance or a mapping with an ``architecture`` key.
    spec
        The feature specification (``jec_coffea.features.FeatureSpec``): ordered jet and
        per-type constituent feature names, which fix the input widths.

    Returns
    -------
    torch.nn.Module
        Maps ``{"jet": (N, F), "<type>": (N, M, F_t), "<type>_mask": (N, M)}`` (transformed;
        optional ``raw=`` untransformed dict for geometry) to ln(pT_gen/pT_raw), shape (N,).
    """
    if isinstance(config, dict):
        try:
            config = parse_model_config(config)
        except ValidationError as err:
            msg = f"invalid model configuration: {err}"
            raise ConfigError(msg) from err
    extras.torch()
    module, name = _ARCHITECTURES[config.architecture]
    cls = getattr(importlib.import_module(module), name)
    return cls(config, spec)

"""Calibration networks: MLP/ResNet, Deep Sets (PFN), ParticleNet, Particle Transformer.

Configurations (pydantic, no torch needed) are imported eagerly; the torch modules are
loaded on first access, so validating a configuration does not need the ``train`` extra.
"""

from __future__ import annotations

import importlib
from typing import Any

from jec_coffea.models.config import (
    DeepSetsConfig,
    EdgeConvConfig,
    MLPConfig,
    ModelConfig,
    ParTConfig,
    ParticleNetConfig,
    ResNetConfig,
    build_model,
    parse_model_config,
)

_LAZY: dict[str, str] = {
    "MLP": "jec_coffea.models.mlp",
    "ResNet": "jec_coffea.models.mlp",
    "DeepSets": "jec_coffea.models.deepsets",
    "ParticleNet": "jec_coffea.models.particlenet",
    "ParT": "jec_coffea.models.part",
    "TransformModule": "jec_coffea.models.preprocess",
    "WithPreprocessing": "jec_coffea.models.preprocess",
}
"""Torch classes re-exported lazily (their modules import torch)."""

__all__ = [
    "MLP",
    "DeepSets",
    "DeepSetsConfig",
    "EdgeConvConfig",
    "MLPConfig",
    "ModelConfig",
    "ParT",
    "ParTConfig",
    "ParticleNet",
    "ParticleNetConfig",
    "ResNet",
    "ResNetConfig",
    "TransformModule",
    "WithPreprocessing",
    "build_model",
    "parse_model_config",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'jec_coffea.models' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return __all__

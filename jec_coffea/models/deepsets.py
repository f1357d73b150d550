"""Deep Sets / Particle Flow Network (PFN) over the constituents of each type.

One per-constituent network Φ per type (charged, neutral, sv) maps each constituent's
features (categorical ones embedded) to a latent vector; a masked sum (PFN) or mean over the
set gives one vector per type; the head F sees the pooled vectors of all types and the jet
features. Padded slots never contribute and an empty set pools to 0, so a jet without
constituents of some or all types still has a finite prediction. Sum pooling makes the output
invariant under permutations of the constituents.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from jec_coffea.models.common import (
    CalibrationNetwork,
    FeatureEncoder,
    dense,
    masked_mean,
    masked_sum,
)

__all__ = ["DeepSets"]


class DeepSets(CalibrationNetwork):
    """Per-type Φ networks, masked pooling, jet-level head; output (N,)."""

    architecture = "deepsets"

    def __init__(self, config: Any, spec: Any) -> None:
        super().__init__(config, spec)
        self.types = self.used_types(spec)
        self.encoders = nn.ModuleDict()
        self.phi = nn.ModuleDict()
        for t in self.types:
            enc = FeatureEncoder(
                list(spec.constituents[t]),
                config.categorical.get(t, {}),
                config.embedding_dim,
                f"deepsets {t} inputs",
            )
            self.encoders[t] = enc
            self.phi[t] = dense(
                [enc.out_features, *config.phi],
                dropout=config.dropout,
                activation=config.activation,
            )
        self._pool = masked_sum if config.pooling == "sum" else masked_mean
        self.head = self.make_head(config.phi[-1] * len(self.types))

    def forward(
        self, inputs: dict[str, Tensor], raw: dict[str, Tensor] | None = None
    ) -> Tensor:
        pooled = []
        for t in self.types:
            mask = inputs[f"{t}_mask"]
            h = self.phi[t](self.encoders[t](inputs[t]))
            pooled.append(self._pool(h, mask))
        pooled += self.encode_jet(inputs)
        return self.head(torch.cat(pooled, dim=-1)).squeeze(-1)

"""Dense networks on jet-level features: plain MLP and residual MLP (ResNet).

These need only the ``"jet"`` input, so a model trained on features plain NanoAOD provides
(``mlp_nanoaod.onnx``) runs on any NanoAOD file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from jec_coffea.models.common import ACTIVATIONS, CalibrationNetwork, dense

__all__ = ["MLP", "ResNet"]


class MLP(CalibrationNetwork):
    """Jet features (N, F_jet) -> one chain of Linear/activation layers -> (N,).

    A plain chain (no skip connection, no normalisation): with a relu/tanh/elu activation
    and no categorical inputs it can be converted to correctionlib's LWTNN node.
    """

    architecture = "mlp"

    def __init__(self, config: Any, spec: Any) -> None:
        super().__init__(config, spec)
        self.types: list[str] = []
        widths = [self.jet_encoder.out_features, *config.hidden]
        self.body = dense(widths, dropout=config.dropout, activation=config.activation)
        self.head = self.make_head(widths[-1], with_jet=False)

    def forward(
        self, inputs: dict[str, Tensor], raw: dict[str, Tensor] | None = None
    ) -> Tensor:
        return self.head(self.body(self.jet_encoder(inputs["jet"]))).squeeze(-1)


class _ResidualBlock(nn.Module):
    """Pre-norm residual block: x + W2 act(W1 LN(x))."""

    def __init__(self, width: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.ff = nn.Sequential(
            nn.Linear(width, width),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(width, width),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.ff(self.norm(x))


class ResNet(CalibrationNetwork):
    """Jet features -> linear stem -> residual blocks -> head (N,)."""

    architecture = "resnet"

    def __init__(self, config: Any, spec: Any) -> None:
        super().__init__(config, spec)
        self.types: list[str] = []
        self.stem = nn.Linear(self.jet_encoder.out_features, config.width)
        self.blocks = nn.Sequential(
            *(
                _ResidualBlock(config.width, config.dropout, config.activation)
                for _ in range(config.blocks)
            )
        )
        self.norm = nn.LayerNorm(config.width)
        self.head = self.make_head(config.width)

    def forward(
        self, inputs: dict[str, Tensor], raw: dict[str, Tensor] | None = None
    ) -> Tensor:
        x = self.jet_encoder(inputs["jet"])
        h = self.norm(self.blocks(self.stem(x)))
        return self.head(torch.cat([h, x], dim=-1)).squeeze(-1)

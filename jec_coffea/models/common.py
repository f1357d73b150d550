"""Building blocks shared by the architectures: dense stacks, input encoding, masked pooling.

Every network maps ``{"jet": (N, F_jet), "<type>": (N, M, F), "<type>_mask": (N, M)}``
(transformed inputs, padded slots 0) to the predicted ln(pT_gen / pT_raw) of shape (N,).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from jec_coffea.errors import ConfigError

__all__ = [
    "ACTIVATIONS",
    "CalibrationNetwork",
    "FeatureEncoder",
    "dense",
    "feature_index",
    "masked_mean",
    "masked_sum",
]


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": functools.partial(nn.GELU, approximate="tanh"),
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}
"""Activation names of the configurations -> factories of torch modules.

``gelu`` is the exact (erf) GELU; onnxruntime fuses it with the preceding bias into one
``BiasGelu`` kernel, whose erf is still a large part of Deep Sets' inference time.
``gelu_tanh`` is GELU's tanh approximation (|difference| < 5e-4), which onnxruntime fuses
into its ``FastGelu`` kernel, and ``relu`` costs almost nothing; both change the network, so
they are chosen before training. relu/tanh/elu/leaky_relu are the ones lwtnn, and so
correctionlib's LWTNN node, can evaluate."""


def dense(
    widths: Sequence[int],
    *,
    dropout: float = 0.0,
    final_activation: bool = True,
    activation: str = "gelu",
) -> nn.Sequential:
    """Stack of Linear + activation (+ dropout) layers through ``widths`` (input width first)."""
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(w_in, w_out))
        if final_activation or i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def masked_sum(x: Tensor, mask: Tensor) -> Tensor:
    """Sum of ``x`` (N, M, C) over valid slots of ``mask`` (N, M) -> (N, C); 0 for an empty set."""
    return (x * mask.unsqueeze(-1)).sum(dim=1)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` (N, M, C) over valid slots -> (N, C); 0 for an empty set."""
    count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    return masked_sum(x, mask) / count


def feature_index(spec: Any, group: str, name: str, what: str) -> int:
    """Position of feature ``name`` in input ``group`` of ``spec``; ConfigError names both."""
    names = list(spec.jet) if group == "jet" else list(spec.constituents.get(group, []))
    if name not in names:
        msg = f"{what}: feature {name!r} is not among the {group!r} features {names}"
        raise ConfigError(msg)
    return names.index(name)


def _runs(columns: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted column indices as (start, stop) runs of adjacent columns."""
    runs: list[tuple[int, int]] = []
    for c in columns:
        if runs and runs[-1][1] == c:
            runs[-1] = (runs[-1][0], c + 1)
        else:
            runs.append((c, c + 1))
    return runs


class FeatureEncoder(nn.Module):
    """Replaces the categorical columns of one input by learned embeddings.

    ``(..., F)`` float -> ``(..., F - n_cat + n_cat * embedding_dim)``: numerical columns
    first, in input order, then one embedding per categorical column. Category indices come
    from the transform (0..n-1, the last being "unknown"); they are rounded and clamped.
    """

    def __init__(
        self,
        names: Sequence[str],
        cardinalities: dict[str, int],
        embedding_dim: int,
        what: str,
    ) -> None:
        super().__init__()
        unknown = sorted(set(cardinalities) - set(names))
        if unknown:
            msg = f"{what}: categorical features {unknown} are not inputs (inputs: {list(names)})"
            raise ConfigError(msg)
        num = [i for i, n in enumerate(names) if n not in cardinalities]
        self._cat = [(names.index(n), k) for n, k in cardinalities.items()]
        # the numerical columns as runs of adjacent columns: slices joined with the
        # embeddings by one Concat (no full-tensor Gather in the exported graph)
        self._runs = _runs(num)
        self.embeddings = nn.ModuleList(
            nn.Embedding(k, embedding_dim) for _, k in self._cat
        )
        self.out_features = len(num) + embedding_dim * len(self._cat)

    def forward(self, x: Tensor) -> Tensor:
        if not self._cat:
            return x
        parts = [x[..., a:b] for a, b in self._runs]
        for (col, k), emb in zip(self._cat, self.embeddings, strict=False):
            idx = torch.clamp(torch.round(x[..., col]), 0, k - 1).to(torch.long)
            parts.append(emb(idx))
        return torch.cat(parts, dim=-1)


class CalibrationNetwork(nn.Module):
    """Base class: remembers the input names and builds the jet-level head.

    Subclasses implement ``forward(inputs, raw=None) -> (N,)``. The head concatenates a
    pooled representation with the encoded jet-level features and ends in one linear unit
    whose bias starts at 0 (ln 1: no correction).
    """

    architecture: str = ""

    def __init__(self, config: Any, spec: Any) -> None:
        super().__init__()
        self.config = config
        self.jet_features = list(spec.jet)
        if not self.jet_features and config.architecture in ("mlp", "resnet"):
            msg = f"{config.architecture}: the feature spec has no jet-level features"
            raise ConfigError(msg)
        self.jet_encoder = FeatureEncoder(
            self.jet_features,
            config.categorical.get("jet", {}),
            config.embedding_dim,
            f"{config.architecture} jet inputs",
        )

    def used_types(self, spec: Any) -> list[str]:
        """Constituent types the network reads (config ``types`` or all of the spec); at least one."""
        available = list(spec.constituents)
        types = self.config.types if self.config.types is not None else available
        missing = [t for t in types if t not in available]
        if missing:
            msg = f"{self.config.architecture}: types {missing} not in the feature spec {available}"
            raise ConfigError(msg)
        if not types:
            msg = f"{self.config.architecture}: no constituent types in the feature spec (use mlp)"
            raise ConfigError(msg)
        return list(types)

    def encode_jet(self, inputs: dict[str, Tensor]) -> list[Tensor]:
        """Encoded jet-level features as a one-element list (empty without jet features)."""
        return [self.jet_encoder(inputs["jet"])] if self.jet_features else []

    def batch_reference(self, inputs: dict[str, Tensor]) -> Tensor:
        """A (N, ...) input tensor, to size padding and tokens by the batch."""
        return inputs["jet"] if self.jet_features else inputs[f"{self.types[0]}_mask"]

    def input_names(self) -> list[str]:
        """Names of the tensors the network reads (``to_tensors`` keys)."""
        names = ["jet"] if self.jet_features else []
        for t in getattr(self, "types", []):
            names += [t, f"{t}_mask"]
        return names

    def make_head(self, pooled_width: int, *, with_jet: bool = True) -> nn.Module:
        """Head: [pooled, encoded jet] (or pooled alone) -> hidden widths -> one linear unit.

        ``head[-1]`` is the output ``nn.Linear`` (training may widen it for multi-output
        losses).
        """
        jet_width = self.jet_encoder.out_features if with_jet else 0
        widths = [pooled_width + jet_width, *self.config.head]
        layers = dense(
            widths, dropout=self.config.dropout, activation=self.config.activation
        )
        out = nn.Linear(widths[-1], 1)
        nn.init.zeros_(out.bias)
        return nn.Sequential(layers, out)

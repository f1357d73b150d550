"""ParticleNet: dynamic-graph convolutions (EdgeConv) over the jet's constituents.

All constituent types are embedded to a common width and joined into one point cloud. The
first EdgeConv block finds each point's k nearest neighbours in (Δη, Δφ) of the *raw*
(untransformed) features named by ``coordinates``; later blocks use the previous block's
output as coordinates (dynamic graph), as in Qu & Gouskos, Phys. Rev. D 101 (2020) 056019.
The edge network sees (h_i, h_j - h_i); edge outputs are averaged over the valid neighbours.

Sets smaller than k and empty sets: k masked dummy points are appended, padded points are
put at infinite distance, each point's own slot is excluded, and the neighbour average counts
only valid neighbours, so any number of constituents, including none at all, gives a finite
prediction. LayerNorm (per point) replaces the original BatchNorm so that padding never enters
normalisation statistics. Global pooling is a masked mean, so the output is invariant under
permutations of the constituents.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

from jec_coffea.models.common import (
    CalibrationNetwork,
    FeatureEncoder,
    feature_index,
    masked_mean,
)

__all__ = ["EdgeConv", "ParticleNet"]

_FAR = 1.0e9
"""Distance added for padded points and the point itself, so they are chosen last."""


def knn(points: Tensor, mask: Tensor, k: int) -> Tensor:
    """Indices (N, P, k) of the k nearest valid points of each point (self excluded).

    ``points`` (N, P, C); ``mask`` (N, P). Needs P >= k (the caller appends padding).
    """
    sq = points.square().sum(-1)
    dist = sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * points @ points.transpose(1, 2)
    n_points = points.shape[1]
    eye = torch.eye(n_points, dtype=points.dtype, device=points.device)
    dist = dist + _FAR * (1.0 - mask).unsqueeze(1) + _FAR * eye
    return torch.topk(dist, k, dim=-1, largest=False).indices


def _flat_index(idx: Tensor) -> Tensor:
    """Neighbour indices (N, P, k) within each jet -> row indices (N * P * k,) of (N * P, C).

    Adding the jet's row offset n * P turns the per-jet index into a global one (offsets
    arithmetic, as coffea's ``local2global``), so one ``Gather`` of whole rows fetches every
    neighbour's features; the exported graph needs no expanded (N, P * k, C) int64 index.
    """
    n, p, k = idx.shape
    offset = torch.arange(n, dtype=idx.dtype, device=idx.device).reshape(n, 1, 1) * p
    return (idx + offset).reshape(n * p * k)


def _gather(x: Tensor, flat: Tensor, k: int) -> Tensor:
    """x (N, P, C), flat row indices of :func:`_flat_index` -> neighbours' x (N, P, k, C)."""
    n, p, c = x.shape
    return torch.index_select(x.reshape(n * p, c), 0, flat).reshape(n, p, k, c)


class EdgeConv(nn.Module):
    """One EdgeConv block: k-NN graph, edge MLP on (h_i, h_j - h_i), masked neighbour mean."""

    def __init__(self, in_width: int, channels: list[int], k: int) -> None:
        super().__init__()
        self.k = k
        # the first edge layer W [h_i, h_j - h_i] = (W_a - W_b) h_i + W_b h_j is evaluated
        # per point before gathering, which keeps the (N, P, k, C) tensor at its output width
        self.self_proj = nn.Linear(in_width, channels[0])
        self.nbr_proj = nn.Linear(in_width, channels[0], bias=False)
        layers: list[nn.Module] = [nn.LayerNorm(channels[0]), nn.GELU()]
        for w_in, w_out in itertools.pairwise(channels):
            layers += [nn.Linear(w_in, w_out), nn.LayerNorm(w_out), nn.GELU()]
        self.edge = nn.Sequential(*layers)
        self.shortcut = nn.Linear(in_width, channels[-1])
        self.out_width = channels[-1]

    def forward(self, points: Tensor, h: Tensor, mask: Tensor) -> Tensor:
        idx = knn(points, mask, self.k)
        flat = _flat_index(idx)
        n, p = mask.shape
        # a neighbour counts if it is a real point and not the point itself (the point's own
        # slot can be picked, at distance _FAR, when fewer than k valid neighbours exist)
        own = torch.arange(p, device=idx.device).reshape(1, -1, 1)
        nbr_mask = torch.index_select(mask.reshape(n * p), 0, flat).reshape(
            n, p, self.k
        )
        nbr_valid = nbr_mask * mask.unsqueeze(-1) * (idx != own).to(mask.dtype)
        e = self.self_proj(h).unsqueeze(2) + _gather(self.nbr_proj(h), flat, self.k)
        e = self.edge(e)
        count = nbr_valid.sum(-1, keepdim=True).clamp(min=1.0)
        agg = (e * nbr_valid.unsqueeze(-1)).sum(2) / count
        return torch.nn.functional.gelu(agg + self.shortcut(h)) * mask.unsqueeze(-1)


class ParticleNet(CalibrationNetwork):
    """Per-type embeddings -> one point cloud -> EdgeConv blocks -> masked mean -> head."""

    architecture = "particlenet"

    def __init__(self, config: Any, spec: Any) -> None:
        super().__init__(config, spec)
        self.types = self.used_types(spec)
        self.coord_index = {
            t: [
                feature_index(spec, t, c, f"particlenet {t} coordinates")
                for c in config.coordinates
            ]
            for t in self.types
        }
        self.embed = nn.ModuleDict()
        for t in self.types:
            enc = FeatureEncoder(
                list(spec.constituents[t]),
                config.categorical.get(t, {}),
                config.embedding_dim,
                f"particlenet {t} inputs",
            )
            self.embed[t] = nn.Sequential(
                enc, nn.Linear(enc.out_features, config.embed_dim), nn.GELU()
            )
        self.n_pad = max(block.k for block in config.edge_convs)
        self.blocks = nn.ModuleList()
        width = config.embed_dim
        for block in config.edge_convs:
            conv = EdgeConv(width, block.channels, block.k)
            self.blocks.append(conv)
            width = conv.out_width
        self.head = self.make_head(width)

    def forward(
        self, inputs: dict[str, Tensor], raw: dict[str, Tensor] | None = None
    ) -> Tensor:
        raw = inputs if raw is None else raw
        ref = self.batch_reference(inputs)
        feats, coords, masks = [], [], []
        for t in self.types:
            feats.append(self.embed[t](inputs[t]))
            coords.append(raw[t][..., self.coord_index[t]])
            masks.append(inputs[f"{t}_mask"])
        n = ref.shape[0]
        # k masked dummy points: top-k always has k candidates, even for empty sets
        feats.append(ref.new_zeros(n, self.n_pad, self.config.embed_dim))
        coords.append(ref.new_zeros(n, self.n_pad, 2))
        masks.append(ref.new_zeros(n, self.n_pad))
        h = torch.cat(feats, dim=1)
        points = torch.cat(coords, dim=1)
        mask = torch.cat(masks, dim=1)
        h = h * mask.unsqueeze(-1)
        for block in self.blocks:
            h = block(points, h, mask)
            points = h
        pooled = masked_mean(h, mask)
        return self.head(torch.cat([pooled, *self.encode_jet(inputs)], dim=-1)).squeeze(
            -1
        )

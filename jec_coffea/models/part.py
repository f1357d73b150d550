"""Particle Transformer (ParT) with pairwise interaction features and class attention.

As in Qu, Li & Qian, ICML 2022 (arXiv:2202.03772): the constituents of all types are
embedded to a common width and joined into one sequence (no positional encoding, so the
output is invariant under permutations); particle-attention blocks add to the attention
logits a per-head bias computed from the pairwise features

    ln Δ,  ln k_T = ln(min(p_T,a, p_T,b) Δ),  ln z = ln(min(p_T,a, p_T,b) / (p_T,a + p_T,b)),
    ln m² = ln(2 p_T,a p_T,b (cosh Δη - cos Δφ)),

with Δ = sqrt(Δη² + Δφ²). They are built from the *raw* per-constituent features named by
``pt_feature``, ``eta_feature`` and ``phi_feature``: with the default ``rel_pt`` (p_T over raw
jet p_T), ``deta`` and ``dphi`` of jec_coffea.features, k_T and m² are in units of the jet p_T
(a per-jet shift of ln k_T and ln m², which the network absorbs) and m² uses massless
constituents. Then class-attention blocks let a learned class token attend to the particles;
the class token joined with the jet features feeds the head.

Masking: padded keys get a large negative logit (not -inf) and padded query rows are zeroed,
so a fully padded sequence gives uniform, finite attention instead of NaN; the class token
is always a valid key, so a jet without any constituent still has a finite prediction.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor, nn

from jec_coffea.models.common import CalibrationNetwork, FeatureEncoder, feature_index

__all__ = ["ParT", "pairwise_features"]

_NEG = -1.0e9
"""Logit given to padded keys (finite, so an all-padded row stays finite)."""

_EPS = 1.0e-8
"""Floor of the arguments of the logarithms in the pairwise features."""


def pairwise_features(pt: Tensor, eta: Tensor, phi: Tensor) -> Tensor:
    """(ln Δ, ln k_T, ln z, ln m²) for every pair: inputs (N, P) -> (N, P, P, 4).

    Δφ is wrapped into (-π, π]; Δ² and m² are floored at 1e-16, p_T at 1e-8, so coincident
    or padded points give finite values (padded pairs are masked downstream).
    """
    deta = eta.unsqueeze(2) - eta.unsqueeze(1)
    dphi = phi.unsqueeze(2) - phi.unsqueeze(1)
    dphi = torch.remainder(dphi + math.pi, 2 * math.pi) - math.pi
    # logarithms of clamped squares and products: no sqrt (infinite gradient at Δ = 0)
    log_delta = 0.5 * torch.log((deta.square() + dphi.square()).clamp(min=_EPS * _EPS))
    pt_a, pt_b = pt.unsqueeze(2), pt.unsqueeze(1)
    pt_min = torch.minimum(pt_a, pt_b)
    log_kt = torch.log(pt_min.clamp(min=_EPS)) + log_delta
    log_z = torch.log(pt_min.clamp(min=_EPS)) - torch.log((pt_a + pt_b).clamp(min=_EPS))
    # cosh Δη - cos Δφ = 2 sinh²(Δη/2) + 2 sin²(Δφ/2), without cancellation for close pairs
    m2 = (
        4.0
        * pt_a
        * pt_b
        * (torch.sinh(deta / 2).square() + torch.sin(dphi / 2).square())
    )
    log_m2 = torch.log(m2.clamp(min=_EPS * _EPS))
    return torch.stack([log_delta, log_kt, log_z, log_m2], dim=-1)


class _Attention(nn.Module):
    """Multi-head attention with an additive logit bias and finite masking."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, query: Tensor, keys: Tensor, key_mask: Tensor, bias: Tensor | None
    ) -> Tensor:
        n, lq, d = query.shape
        h, dh = self.heads, d // self.heads
        q = self.q(query).reshape(n, lq, h, dh).transpose(1, 2)
        k, v = self.kv(keys).reshape(n, keys.shape[1], 2, h, dh).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(dh)
        logits = logits + _NEG * (1.0 - key_mask)[:, None, None, :]
        if bias is not None:
            logits = logits + bias
        att = torch.softmax(logits, dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(n, lq, d))


class _Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN x), then x + FFN(LN x)."""

    def __init__(self, dim: int, heads: int, ffn_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_ratio * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_ratio * dim, dim),
        )

    def forward(
        self, x: Tensor, keys: Tensor, key_mask: Tensor, bias: Tensor | None
    ) -> Tensor:
        x = x + self.attn(self.norm1(x), self.norm1(keys), key_mask, bias)
        return x + self.ffn(self.norm2(x))


class ParT(CalibrationNetwork):
    """Per-type embeddings -> particle blocks (pair bias) -> class blocks -> head; (N,)."""

    architecture = "part"

    def __init__(self, config: Any, spec: Any) -> None:
        super().__init__(config, spec)
        self.types = self.used_types(spec)
        self.kin_index = {
            t: [
                feature_index(spec, t, name, f"part {t} pairwise features")
                for name in (config.pt_feature, config.eta_feature, config.phi_feature)
            ]
            for t in self.types
        }
        dim = config.dim
        self.embed = nn.ModuleDict()
        for t in self.types:
            enc = FeatureEncoder(
                list(spec.constituents[t]),
                config.categorical.get(t, {}),
                config.embedding_dim,
                f"part {t} inputs",
            )
            self.embed[t] = nn.Sequential(
                enc,
                nn.LayerNorm(enc.out_features),
                nn.Linear(enc.out_features, dim),
                nn.GELU(),
                nn.Linear(dim, dim),
            )
        pair: list[nn.Module] = [nn.LayerNorm(4)]
        widths = [4, *config.pair_hidden]
        for w_in, w_out in itertools.pairwise(widths):
            pair += [nn.Linear(w_in, w_out), nn.GELU()]
        pair.append(nn.Linear(widths[-1], config.heads))
        self.pair_embed = nn.Sequential(*pair)
        self.particle_blocks = nn.ModuleList(
            _Block(dim, config.heads, config.ffn_ratio, config.dropout)
            for _ in range(config.particle_blocks)
        )
        self.class_blocks = nn.ModuleList(
            _Block(dim, config.heads, config.ffn_ratio, config.dropout)
            for _ in range(config.class_blocks)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.norm = nn.LayerNorm(dim)
        self.head = self.make_head(dim)

    def forward(
        self, inputs: dict[str, Tensor], raw: dict[str, Tensor] | None = None
    ) -> Tensor:
        raw = inputs if raw is None else raw
        ref = self.batch_reference(inputs)
        xs, kins, masks = [], [], []
        for t in self.types:
            mask = inputs[f"{t}_mask"]
            xs.append(self.embed[t](inputs[t]) * mask.unsqueeze(-1))
            kins.append(raw[t][..., self.kin_index[t]])
            masks.append(mask)
        x = torch.cat(xs, dim=1)
        kin = torch.cat(kins, dim=1)
        mask = torch.cat(masks, dim=1)
        pt = torch.exp(kin[..., 0]) if self.config.pt_is_log else kin[..., 0]
        pt = pt * mask
        # (N, P, P, heads) -> (N, heads, P, P); pairs with a padded member get no bias
        pair_mask = (mask.unsqueeze(2) * mask.unsqueeze(1)).unsqueeze(1)
        bias = self.pair_embed(pairwise_features(pt, kin[..., 1], kin[..., 2]))
        bias = bias.permute(0, 3, 1, 2) * pair_mask
        for block in self.particle_blocks:
            x = block(x, x, mask, bias) * mask.unsqueeze(-1)
        n = ref.shape[0]
        cls = self.cls_token.expand(n, -1, -1)
        key_mask = torch.cat([ref.new_ones(n, 1), mask], dim=1)
        for block in self.class_blocks:
            cls = block(cls, torch.cat([cls, x], dim=1), key_mask, None)
        pooled = self.norm(cls.squeeze(1))
        return self.head(torch.cat([pooled, *self.encode_jet(inputs)], dim=-1)).squeeze(
            -1
        )

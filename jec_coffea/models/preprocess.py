"""The fitted :class:`~jec_coffea.transform.Transform` as a torch module, and the network with it.

:class:`TransformModule` applies exactly the chain of ``Transform.apply_numpy`` with torch
operations that the ONNX exporter translates, so the exported graph takes *untransformed*
inputs (the tensors of ``jec_coffea.features.to_tensors``). :class:`WithPreprocessing` puts it
in front of a calibration network; training it on raw tensors and exporting the same module
keeps training and inference identical.

The graph is laid out for inference speed (issue 8): the few columns with a manual chain or a
category list are sliced out and transformed on their own (N, M, 1) slices, the columns are
joined by one ``Concat``, and everything else (default substitution, the fitted affine
scaling, the final clip, the padding mask) is one broadcast operation each over the whole
(N, M, F) tensor. The module holds no parameters and no persistent buffers, so its
``state_dict`` is empty and checkpoints of the network alone load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from jec_coffea.errors import ModelMismatchError

if TYPE_CHECKING:
    from jec_coffea.transform import FeatureTransform, Transform

__all__ = ["TransformModule", "WithPreprocessing"]


def _chain(ft: FeatureTransform, x: Tensor, cats: Tensor | None) -> Tensor:
    """Manual chain of one column slice (..., 1); categorical: index of the value, float32.

    Non-finite results are left in place: the default substitution is done once for the
    whole tensor afterwards.
    """
    if ft.kind == "categorical":
        assert cats is not None
        hit = (x.unsqueeze(-1) == cats).to(x.dtype)
        index = torch.arange(cats.shape[0], dtype=x.dtype, device=x.device)
        return (hit * index).sum(-1) + cats.shape[0] * (1.0 - hit.sum(-1))
    y = x
    for step in ft.steps:
        if step.type == "log":
            y = torch.log(y)
        elif step.type == "log1p":
            y = torch.log1p(y)
        elif step.type == "abs":
            y = torch.abs(y)
        elif step.type == "arcsinh":
            y = torch.asinh(y / step.scale)
        elif step.type == "clip":
            y = torch.clamp(y, min=step.min, max=step.max)
        else:
            y = (y - step.loc) / step.scale
    return y


@dataclass(frozen=True)
class _Plan:
    """How one input group is transformed (fixed at construction, read by ``forward``).

    ``pieces`` lists, in feature order, runs ``(start, stop, None)`` of columns passed
    through and single columns ``(j, j + 1, ft)`` with a manual chain or category list.
    """

    pieces: tuple[tuple[int, int, FeatureTransform | None], ...]
    check_finite: bool
    """Some column is numerical: non-finite values become the feature default."""
    centre: bool
    """Some fitted centre is not 0."""
    scale: bool
    """Some fitted scale is not 1."""
    clip: tuple[float, float] | None
    """Common (lo, hi) of every column when they all share one, as one ``Clip``."""
    clip_vector: bool
    """Bounds differ between columns: elementwise max/min with per-column vectors."""


def _pieces(
    feats: list[FeatureTransform],
) -> tuple[tuple[int, int, FeatureTransform | None], ...]:
    """Runs of pass-through columns and single special columns, in feature order."""
    pieces: list[tuple[int, int, FeatureTransform | None]] = []
    start = 0
    for j, ft in enumerate(feats):
        if ft.steps or ft.kind == "categorical":
            if start < j:
                pieces.append((start, j, None))
            pieces.append((j, j + 1, ft))
            start = j + 1
    if start < len(feats):
        pieces.append((start, len(feats), None))
    return tuple(pieces)


def _common_bounds(feats: list[FeatureTransform]) -> tuple[float, float] | None:
    """The (lo, hi) one scalar clip can apply to every column without changing any value.

    That is the bounds shared by every bounded column, provided each unbounded column is
    categorical with its index range [0, n_categories] inside them (the clip then leaves it
    alone); None otherwise.
    """
    bounds = {ft.bounds for ft in feats if ft.bounds is not None}
    if len(bounds) != 1:
        return None
    lo, hi = next(iter(bounds))
    for ft in feats:
        if ft.bounds is None and not (
            ft.kind == "categorical" and lo <= 0.0 and len(ft.categories or []) <= hi
        ):
            return None
    return float(lo), float(hi)


class TransformModule(nn.Module):
    """Applies a fitted transform to a dict of input tensors.

    Input and output: ``{"jet": (N, F_jet), "<type>": (N, M, F), "<type>_mask": (N, M)}``;
    padded slots are 0 after the transform (multiplied by the mask). ``groups`` restricts it
    to the inputs a network reads (a jet-level MLP exports without constituent inputs).

    Per group the exported graph holds one slice and the chain's operators per column with a
    manual chain or category list, one ``Concat``, then one operator each for the default
    substitution (``Where`` on ``|y| < inf``), centre, scale, clip and mask, skipping those
    that would do nothing (all centres 0, all scales 1, no bounds). The numerics are those of
    the per-column formulation: the default replaces a non-finite chain output or input of a
    numerical column, ``(y - centre) * scale`` is applied, then the clip to ``bounds``.
    """

    def __init__(self, transform: Transform, groups: list[str] | None = None) -> None:
        super().__init__()
        keep = list(transform.groups) if groups is None else groups
        unknown = sorted(set(keep) - set(transform.groups))
        if unknown:
            msg = (
                f"transform has no groups {unknown} (groups: {list(transform.groups)})"
            )
            raise ModelMismatchError(msg)
        self._names = {g: list(transform.groups[g]) for g in keep}
        self._plans: dict[str, _Plan] = {}
        for group in keep:
            feats = list(transform.groups[group].values())
            scaled = [ft.kind == "numerical" and ft.scaling != "none" for ft in feats]
            centre = [
                ft.centre if s else 0.0 for ft, s in zip(feats, scaled, strict=True)
            ]
            scale = [
                ft.scale if s else 1.0 for ft, s in zip(feats, scaled, strict=True)
            ]
            lo = [ft.bounds[0] if ft.bounds else -math.inf for ft in feats]
            hi = [ft.bounds[1] if ft.bounds else math.inf for ft in feats]
            common = _common_bounds(feats)
            bounded = any(ft.bounds for ft in feats)
            self._plans[group] = _Plan(
                pieces=_pieces(feats),
                check_finite=any(ft.kind == "numerical" for ft in feats),
                centre=any(c != 0.0 for c in centre),
                scale=any(s != 1.0 for s in scale),
                clip=common if bounded else None,
                clip_vector=bounded and common is None,
            )
            params = {
                "centre": centre,
                "scale": scale,
                "default": [ft.default for ft in feats],
                "lo": lo,
                "hi": hi,
            }
            for key, values in params.items():
                self.register_buffer(
                    f"_{key}_{group}",
                    torch.tensor(values, dtype=torch.float32),
                    persistent=False,
                )
            for j, ft in enumerate(feats):
                if ft.kind == "categorical":
                    cats = torch.tensor(ft.categories or [], dtype=torch.float32)
                    self.register_buffer(f"_cats_{group}_{j}", cats, persistent=False)

    @property
    def feature_names(self) -> dict[str, list[str]]:
        """Ordered feature names per input group."""
        return self._names

    def _columns(self, group: str, plan: _Plan, x: Tensor) -> Tensor:
        """The input with every manual chain applied, joined by one concatenation."""
        if all(ft is None for _, _, ft in plan.pieces):
            return x
        parts = [
            x[..., a:b]
            if ft is None
            else _chain(ft, x[..., a:b], getattr(self, f"_cats_{group}_{a}", None))
            for a, b, ft in plan.pieces
        ]
        return torch.cat(parts, dim=-1)

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for group, plan in self._plans.items():
            y = self._columns(group, plan, inputs[group])
            if plan.check_finite:
                # |y| < inf is False for NaN and ±inf; categorical indices are finite
                y = torch.where(
                    y.abs() < math.inf, y, getattr(self, f"_default_{group}")
                )
            if plan.centre:
                y = y - getattr(self, f"_centre_{group}")
            if plan.scale:
                y = y * getattr(self, f"_scale_{group}")
            if plan.clip is not None:
                y = torch.clamp(y, min=plan.clip[0], max=plan.clip[1])
            elif plan.clip_vector:
                y = torch.minimum(
                    torch.maximum(y, getattr(self, f"_lo_{group}")),
                    getattr(self, f"_hi_{group}"),
                )
            if group != "jet":
                mask = inputs[f"{group}_mask"]
                y = y * mask.unsqueeze(-1)
                out[f"{group}_mask"] = mask
            out[group] = y
        return out


class WithPreprocessing(nn.Module):
    """A calibration network with its preprocessing: raw input tensors -> log correction (N,).

    The network receives the transformed tensors and, as ``raw``, the untransformed ones
    (ParticleNet and ParT take their geometry, Δη/Δφ and pT, from the raw values).
    """

    def __init__(self, transform: nn.Module, network: nn.Module) -> None:
        super().__init__()
        self.transform = transform
        self.network = network

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.network(self.transform(inputs), raw=inputs)

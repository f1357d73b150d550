"""The fitted :class:`~jec_coffea.transform.Transform` as a torch module, and the network with it.

:class:`TransformModule` applies exactly the chain of ``Transform.apply_numpy`` with torch
operations that the ONNX exporter translates, so the exported graph takes *untransformed*
inputs (the tensors of ``jec_coffea.features.to_tensors``). :class:`WithPreprocessing` puts it
in front of a calibration network; training it on raw tensors and exporting the same module
keeps training and inference identical.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from jec_coffea.errors import ModelMismatchError

if TYPE_CHECKING:
    from jec_coffea.transform import FeatureTransform, Transform

__all__ = ["TransformModule", "WithPreprocessing"]


def _chain(ft: FeatureTransform, x: Tensor, cats: Tensor | None) -> Tensor:
    """Manual chain of one column (categorical: index of the value), float32."""
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


class TransformModule(nn.Module):
    """Applies a fitted transform to a dict of input tensors.

    Input and output: ``{"jet": (N, F_jet), "<type>": (N, M, F), "<type>_mask": (N, M)}``;
    padded slots are 0 after the transform (multiplied by the mask). ``groups`` restricts it
    to the inputs a network reads (a jet-level MLP exports without constituent inputs).

    Only columns with a manual chain or a category list are handled one by one (written
    back with a column mask); the default substitution, the fitted scaling and the final
    clip are vectorised over the feature axis, which keeps the exported graph small.
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
        self._special: dict[str, list[tuple[int, FeatureTransform]]] = {}
        for group in keep:
            feats = list(transform.groups[group].values())
            self._special[group] = [
                (j, ft)
                for j, ft in enumerate(feats)
                if ft.steps or ft.kind == "categorical"
            ]
            numerical = [ft.kind == "numerical" for ft in feats]
            scaled = [ft.kind == "numerical" and ft.scaling != "none" for ft in feats]
            params = {
                "centre": [
                    ft.centre if s else 0.0 for ft, s in zip(feats, scaled, strict=True)
                ],
                "scale": [
                    ft.scale if s else 1.0 for ft, s in zip(feats, scaled, strict=True)
                ],
                "default": [ft.default for ft in feats],
                "numerical": [float(v) for v in numerical],
                "lo": [ft.bounds[0] if ft.bounds else -math.inf for ft in feats],
                "hi": [ft.bounds[1] if ft.bounds else math.inf for ft in feats],
            }
            for key, values in params.items():
                self.register_buffer(
                    f"_{key}_{group}",
                    torch.tensor(values, dtype=torch.float32),
                    persistent=False,
                )
            for j, ft in self._special[group]:
                onehot = torch.zeros(len(feats), dtype=torch.bool)
                onehot[j] = True
                self.register_buffer(f"_col_{group}_{j}", onehot, persistent=False)
                if ft.kind == "categorical":
                    cats = torch.tensor(ft.categories or [], dtype=torch.float32)
                    self.register_buffer(f"_cats_{group}_{j}", cats, persistent=False)

    @property
    def feature_names(self) -> dict[str, list[str]]:
        """Ordered feature names per input group."""
        return self._names

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for group, special in self._special.items():
            y = inputs[group]
            for j, ft in special:
                col = _chain(ft, y[..., j], getattr(self, f"_cats_{group}_{j}", None))
                y = torch.where(
                    getattr(self, f"_col_{group}_{j}"), col.unsqueeze(-1), y
                )
            numerical = getattr(self, f"_numerical_{group}") > 0
            finite = torch.isfinite(y) | ~numerical
            y = torch.where(finite, y, getattr(self, f"_default_{group}"))
            y = (y - getattr(self, f"_centre_{group}")) * getattr(
                self, f"_scale_{group}"
            )
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

"""The fitted :class:`~jec_coffea.transform.Transform` as a torch module, and the network with it.

:class:`TransformModule` applies exactly the chain of ``Transform.apply_numpy`` with torch
operations that the ONNX exporter translates, so the exported graph takes *untransformed*
inputs (the tensors of ``jec_coffea.features.to_tensors``). :class:`WithPreprocessing` puts it
in front of a calibration network; training it on raw tensors and exporting the same module
keeps training and inference identical.

The graph is laid out for onnxruntime's CPU kernels (issue 8, docs/performance.md). Its
elementwise kernels are fast on a scalar or on a contiguous broadcast operand and slow on a
short innermost axis: ``(N, M, F) op (F,)`` costs ~1 ns per element, ``(N, M, 1) op scalar``
~11 ns, the same on ``(N, M * F) op (M * F,)`` or ``(N, M) op scalar`` 0.2-1.4 ns. So

* runs of neighbouring columns with the same manual chain are transformed together, on a
  ``(N, M * k)`` view, with per-column parameters tiled over M (one scalar when they agree);
* arcsinh is ``sign(u) log(|u| + sqrt(u² + 1))`` (onnxruntime's ``Asinh`` is scalar code,
  ~12 ns per element, the formula's kernels are vectorised);
* a categorical column is indexed on its ``(N, M)`` view with one MatMul over the one-hot;
* the default substitution, the fitted centre and scale and the clip are one operation each
  on the ``(N, M * F)`` view of the whole group; only the padding mask multiplies ``(N, M, F)``.

The module holds no parameters and no persistent buffers, so its ``state_dict`` is empty and
checkpoints of the network alone load unchanged.
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

ASINH_SQRT_MAX = 1.8e19
"""|u| is clipped to this inside the square root of the arcsinh formula (u² stays finite in
float32); beyond it arcsinh(u) is ln(|u| + 1.8e19), within ln 2 of the exact ln(2|u|)."""


def _flat(x: Tensor) -> Tensor:
    """(N, F) unchanged; (N, M, F) as its contiguous (N, M * F) view."""
    return x if x.dim() == 2 else x.reshape(x.shape[0], -1)


def _tiled(values: list[float], like: Tensor, width: int) -> Tensor | float:
    """Per-column ``values`` (``width`` columns) broadcastable against ``_flat`` of an input
    shaped as ``like``: one Python float when all agree, else tiled over M."""
    if len(set(values)) == 1:
        return values[0]
    vec = torch.tensor(values, dtype=like.dtype, device=like.device)
    return vec if like.dim() == 2 else vec.repeat(like.shape[1])


def _asinh(u: Tensor) -> Tensor:
    """arcsinh with vectorised kernels: sign(u) ln(|u| + sqrt(u² + 1)); NaN and ±inf as
    torch.asinh gives them (NaN, ±inf)."""
    t = u.abs()
    c = torch.clamp(t, max=ASINH_SQRT_MAX)
    return torch.sign(u) * torch.log(t + torch.sqrt(c * c + 1.0))


@dataclass(frozen=True)
class _Run:
    """Neighbouring columns ``start:stop`` of one input group transformed together.

    ``feats`` is empty for columns passed through; it holds the columns' transforms when they
    share one manual chain (same step types and clip sides), or one categorical column.
    """

    start: int
    stop: int
    feats: tuple[FeatureTransform, ...] = ()


def _signature(ft: FeatureTransform) -> tuple | None:
    """What must agree for columns to share a run: None passes the column through."""
    if ft.kind == "categorical":
        return ("categorical", id(ft))  # never shared
    if not ft.steps:
        return None
    return tuple(
        (s.type, s.min is None, s.max is None) if s.type == "clip" else (s.type,)
        for s in ft.steps
    )


def _runs(feats: list[FeatureTransform]) -> tuple[_Run, ...]:
    """Maximal runs of neighbouring columns with one signature, in feature order."""
    runs: list[_Run] = []
    start = 0
    for j in range(1, len(feats) + 1):
        if j == len(feats) or _signature(feats[j]) != _signature(feats[start]):
            keep = () if _signature(feats[start]) is None else tuple(feats[start:j])
            runs.append(_Run(start, j, keep))
            start = j
    return tuple(runs)


def _run_chain(feats: tuple[FeatureTransform, ...], x: Tensor) -> Tensor:
    """The shared manual chain of a run, on ``x`` = its columns (N, [M,] k)."""
    k = len(feats)
    y = _flat(x)
    for i, step in enumerate(feats[0].steps):
        steps = [ft.steps[i] for ft in feats]
        if step.type == "log":
            y = torch.log(y)
        elif step.type == "log1p":
            y = torch.log1p(y)
        elif step.type == "abs":
            y = torch.abs(y)
        elif step.type == "arcsinh":
            scale = _tiled([s.scale for s in steps], x, k)
            y = _asinh(y if isinstance(scale, float) and scale == 1.0 else y / scale)
        elif step.type == "clip":
            if step.min is not None:
                y = torch.maximum(
                    y, _as_tensor(_tiled([s.min for s in steps], x, k), y)
                )
            if step.max is not None:
                y = torch.minimum(
                    y, _as_tensor(_tiled([s.max for s in steps], x, k), y)
                )
        else:
            loc = _tiled([s.loc for s in steps], x, k)
            scale = _tiled([s.scale for s in steps], x, k)
            y = (y - loc) / scale
    return y.reshape(x.shape)


def _as_tensor(value: Tensor | float, like: Tensor) -> Tensor:
    """torch.maximum/minimum take tensors only."""
    if isinstance(value, Tensor):
        return value
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def _categorical(x: Tensor, cats: Tensor) -> Tensor:
    """Index of each value of ``x`` (N, [M]) in ``cats``; len(cats) for an unknown value.

    One 2-D MatMul of the (N * M, K) one-hot with the index shift: onnxruntime runs a MatMul
    with a 1-D right operand as N small products, 15x slower.
    """
    n = cats.shape[0]
    hit = (x.reshape(-1, 1) == cats).to(x.dtype)
    shift = torch.arange(n, dtype=x.dtype, device=x.device) - n
    return (hit @ shift.unsqueeze(-1)).reshape(x.shape) + n


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


@dataclass(frozen=True)
class _Plan:
    """How one input group is transformed (fixed at construction, read by ``forward``)."""

    runs: tuple[_Run, ...]
    check_finite: bool
    """Some column is numerical: non-finite values become the feature default."""
    default: list[float]
    centre: list[float] | None
    """Fitted centres (0 for unscaled columns); None when all are 0."""
    scale: list[float] | None
    """Fitted scales (1 for unscaled columns); None when all are 1."""
    clip: tuple[float, float] | None
    """Common (lo, hi) of every column when they all share one, as one ``Clip``."""
    lo: list[float] | None
    """Per-column lower bounds (-inf: none) when the bounds differ between columns."""
    hi: list[float] | None


class TransformModule(nn.Module):
    """Applies a fitted transform to a dict of input tensors.

    Input and output: ``{"jet": (N, F_jet), "<type>": (N, M, F), "<type>_mask": (N, M)}``;
    padded slots are 0 after the transform (multiplied by the mask). ``groups`` restricts it
    to the inputs a network reads (a jet-level MLP exports without constituent inputs).

    Per group the exported graph holds one slice per run of columns with a manual chain or a
    category list and the chain's operators, one ``Concat``, then one operator each for the
    default substitution (``Where`` on ``|y| < inf``), centre, scale, clip and mask, skipping
    those that would do nothing (all centres 0, all scales 1, no bounds). The numerics are
    those of ``Transform.apply_numpy`` in float32: the default replaces a non-finite chain
    output or input of a numerical column, ``(y - centre) * scale`` is applied, then the clip
    to ``bounds``.
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
            bounded = any(ft.bounds for ft in feats)
            common = _common_bounds(feats) if bounded else None
            per_column = bounded and common is None
            self._plans[group] = _Plan(
                runs=_runs(feats),
                check_finite=any(ft.kind == "numerical" for ft in feats),
                default=[ft.default for ft in feats],
                centre=centre if any(c != 0.0 for c in centre) else None,
                scale=scale if any(s != 1.0 for s in scale) else None,
                clip=common,
                lo=[ft.bounds[0] if ft.bounds else -math.inf for ft in feats]
                if per_column
                else None,
                hi=[ft.bounds[1] if ft.bounds else math.inf for ft in feats]
                if per_column
                else None,
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
        if all(not run.feats for run in plan.runs):
            return x
        parts = []
        for run in plan.runs:
            if not run.feats:
                parts.append(x[..., run.start : run.stop])
            elif run.feats[0].kind == "categorical":
                cats = getattr(self, f"_cats_{group}_{run.start}")
                parts.append(_categorical(x[..., run.start], cats).unsqueeze(-1))
            else:
                parts.append(_run_chain(run.feats, x[..., run.start : run.stop]))
        return torch.cat(parts, dim=-1)

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for group, plan in self._plans.items():
            x = inputs[group]
            width = x.shape[-1]
            y = _flat(self._columns(group, plan, x))
            if plan.check_finite:
                # |y| < inf is False for NaN and ±inf; categorical indices are finite
                default = _as_tensor(_tiled(plan.default, x, width), y)
                y = torch.where(y.abs() < math.inf, y, default)
            if plan.centre is not None:
                y = y - _tiled(plan.centre, x, width)
            if plan.scale is not None:
                y = y * _tiled(plan.scale, x, width)
            if plan.clip is not None:
                y = torch.clamp(y, min=plan.clip[0], max=plan.clip[1])
            elif plan.lo is not None and plan.hi is not None:
                y = torch.minimum(
                    torch.maximum(y, _as_tensor(_tiled(plan.lo, x, width), y)),
                    _as_tensor(_tiled(plan.hi, x, width), y),
                )
            y = y.reshape(x.shape)
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

"""FGSM adversarial training on the preprocessed inputs (as in the Stein framework).

Why: a calibration must not hinge on tiny input details that differ between simulation and
data. Each batch gets a perturbed copy x + ε·sign(∇ₓL), and the loss mixes clean and
perturbed batches. ε is in units of the standardised inputs (after the transform), only
numerical columns move (categorical indices and masks do not), and padded constituent slots
stay exactly 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import extras

if TYPE_CHECKING:
    import torch

    from ..transform import Transform
    from .losses import Loss

__all__ = ["fgsm_inputs", "numeric_columns"]


def fgsm_inputs(
    network, loss: Loss, inputs, raw, target, weight, epsilon: float, numeric
) -> dict[str, torch.Tensor]:
    """Fast-gradient-sign perturbation of the numerical (transformed) inputs.

    Masks and categorical columns are not perturbed, and padded constituent slots stay 0.
    The gradient is taken through the bare network (not the DDP wrapper), so no gradient
    synchronisation is triggered.
    """
    torch = extras.torch()
    leaves = {
        k: v.detach().requires_grad_(True) for k, v in inputs.items() if k in numeric
    }
    value = loss(network({**inputs, **leaves}, raw=raw), target, weight)
    grads = torch.autograd.grad(value, list(leaves.values()))
    out = dict(inputs)
    for (k, x), g in zip(leaves.items(), grads, strict=True):
        step = epsilon * torch.sign(g) * numeric[k]
        if f"{k}_mask" in inputs:
            step = step * inputs[f"{k}_mask"].unsqueeze(-1)
        out[k] = (x + step).detach()
    return out


def numeric_columns(transform: Transform, device) -> dict[str, torch.Tensor]:
    """Per input group a (F,) 1/0 tensor: 1 for numerical columns (FGSM may move them)."""
    torch = extras.torch()
    return {
        group: torch.tensor(
            [1.0 if ft.kind == "numerical" else 0.0 for ft in feats.values()],
            device=device,
        )
        for group, feats in transform.groups.items()
    }

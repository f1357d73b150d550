"""Optimiser and learning-rate schedule of a training configuration.

Three schedules besides a constant rate: ``reduce_on_plateau`` (stepped once per epoch with
the validation loss), ``cosine`` (per step, optional linear warm-up, down to ``min_lr``) and
``one_cycle`` (per step, torch's OneCycleLR with ``lr`` as the maximum). The step-wise
schedules span the total number of optimiser steps of the run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .. import extras

if TYPE_CHECKING:
    import torch

    from ..config import TrainingConfig

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(config: TrainingConfig, params) -> torch.optim.Optimizer:
    """The configured optimiser (AdamW, Adam or SGD) over ``params``."""
    torch = extras.torch()
    o = config.optimizer
    if o.type == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.type == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(
        params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )


def make_scheduler(config: TrainingConfig, optimizer, total_steps: int):
    """(scheduler, per_step) for the configured schedule; None for a constant LR."""
    torch = extras.torch()
    s = config.schedule
    sched = torch.optim.lr_scheduler
    if s.type == "constant":
        return None, False
    if s.type == "reduce_on_plateau":
        return sched.ReduceLROnPlateau(
            optimizer, mode="min", factor=s.factor, patience=s.patience, min_lr=s.min_lr
        ), False
    if s.type == "one_cycle":
        return sched.OneCycleLR(
            optimizer,
            max_lr=config.optimizer.lr,
            total_steps=max(total_steps, 2),
            pct_start=s.pct_start,
            div_factor=s.div_factor,
            final_div_factor=s.final_div_factor,
        ), True
    base, floor, warm = config.optimizer.lr, s.min_lr, s.warmup_steps

    def cosine(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min((step - warm) / max(total_steps - warm, 1), 1.0)
        return (floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * t))) / base

    return sched.LambdaLR(optimizer, cosine), True

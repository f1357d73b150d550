"""Training of the calibration networks: data to tensors, losses, weights, loop, steering.

Importing this package does not import torch; the functions that need it import it through
:func:`jec_coffea.extras.torch` when called.
"""

from __future__ import annotations

from .dataset import (
    BatchLoader,
    JetArrays,
    build_split_arrays,
    load_jet_tables,
    selection_mask,
)
from .ddp import DistributedContext, init_distributed
from .loop import TrainResult, check_transform, fit_transform, train
from .losses import LOSSES, Loss, make_loss
from .reweighting import training_weights
from .steer import SteerRun, steer

__all__ = [
    "LOSSES",
    "BatchLoader",
    "DistributedContext",
    "JetArrays",
    "Loss",
    "SteerRun",
    "TrainResult",
    "build_split_arrays",
    "check_transform",
    "fit_transform",
    "init_distributed",
    "load_jet_tables",
    "make_loss",
    "selection_mask",
    "steer",
    "train",
    "training_weights",
]


def __dir__() -> list[str]:
    return __all__

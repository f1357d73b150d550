"""The network of a configuration, its transform checks and its exported form.

The transform must match the configuration exactly (features, order, manual chains,
scaling) or training refuses to start; categorical cardinalities come from the fitted
transform. Losses with several outputs per jet (quantile, Gaussian NLL) widen the last
linear layer of the head, and :func:`prediction_network` narrows it again to the point
prediction for export.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from .. import extras
from ..errors import ConfigError, ModelMismatchError

if TYPE_CHECKING:
    import torch

    from ..config import TrainingConfig
    from ..transform import Transform
    from .dataset import JetArrays
    from .losses import Loss

__all__ = [
    "build_network",
    "check_transform",
    "fit_transform",
    "prediction_network",
    "set_output_width",
]


def check_transform(transform: Transform, config: TrainingConfig, source: str) -> None:
    """Refuse a transform whose features or preprocessing differ from the configuration.

    The feature names and order must equal ``features``; each feature's kind (numerical or
    categorical), manual chain and scaling must be what ``transform`` in the configuration
    describes; and it must be fitted.
    """
    try:
        transform.check_spec(config.features)
    except ModelMismatchError as err:
        msg = f"{source}: does not match the configuration: {err}"
        raise ModelMismatchError(msg) from err
    expected = config.unfitted_transform()
    for group, feats in expected.groups.items():
        for name, want in feats.items():
            have = transform.groups[group][name]
            for attr in ("kind", "steps", "scaling"):
                if getattr(have, attr) != getattr(want, attr):
                    msg = (
                        f"{source}: feature {group}/{name} has {attr} "
                        f"{getattr(have, attr)!r} but the configuration asks for "
                        f"{getattr(want, attr)!r}; rebuild it with jec-coffea build-transform"
                    )
                    raise ModelMismatchError(msg)
    if not transform.fitted:
        msg = f"{source}: the transform is not fitted; run jec-coffea build-transform"
        raise ModelMismatchError(msg)


def fit_transform(config: TrainingConfig, train: JetArrays) -> Transform:
    """Fit the configuration's transform on the training split (padding excluded)."""
    return config.unfitted_transform().fit(train.inputs)


def set_output_width(network: torch.nn.Module, n_outputs: int) -> None:
    """Give the network ``n_outputs`` outputs per jet (quantile / Gaussian-NLL losses).

    Every :class:`~jec_coffea.models.common.CalibrationNetwork` ends in ``head``, a
    Sequential whose last layer is one linear unit; it is replaced by ``n_outputs`` units
    (bias 0), and the network's final ``squeeze(-1)`` then leaves (N, n_outputs).
    """
    if n_outputs == 1:
        return
    torch = extras.torch()
    head = getattr(network, "head", None)
    last = head[-1] if isinstance(head, torch.nn.Sequential) else None
    if not isinstance(last, torch.nn.Linear):
        msg = (
            f"{type(network).__name__} has no linear output layer `head[-1]`: it cannot give "
            f"the {n_outputs} outputs this loss needs"
        )
        raise ConfigError(msg)
    new = torch.nn.Linear(last.in_features, n_outputs)
    torch.nn.init.zeros_(new.bias)
    head[-1] = new


def prediction_network(network: torch.nn.Module, loss: Loss) -> torch.nn.Module:
    """A copy of the network whose output is the point prediction ŷ (N,) only.

    For losses with several outputs per jet, the last linear layer is followed by the
    selection of the prediction column (the median of the quantile loss, μ of the Gaussian
    NLL), keeping shape (N, 1), so the network's own ``squeeze(-1)`` gives (N,) as the
    export contract (``log_correction``) wants. Single-output networks are returned as is.
    """
    if loss.n_outputs == 1:
        return network
    torch = extras.torch()
    index = loss.prediction_index

    class _Column(torch.nn.Module):
        """Keep column ``index`` of (N, K) as (N, 1)."""

        def forward(self, x):
            return x[..., index : index + 1]

    pruned = copy.deepcopy(network)
    pruned.head[-1] = torch.nn.Sequential(pruned.head[-1], _Column())
    return pruned


def build_network(config: TrainingConfig, transform: Transform, loss: Loss):
    from ..models import build_model

    model_cfg = config.model.model_copy(deep=True)
    cards = transform.cardinalities()
    if model_cfg.categorical and model_cfg.categorical != cards:
        msg = (
            f"model.categorical {model_cfg.categorical} differs from the categories of the "
            f"transform {cards}; remove model.categorical (it is taken from the transform)"
        )
        raise ModelMismatchError(msg)
    model_cfg.categorical = cards
    network = build_model(model_cfg, config.features)
    set_output_width(network, loss.n_outputs)
    return network, model_cfg

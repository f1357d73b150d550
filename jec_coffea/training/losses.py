"""Regression losses for the log-correction target y = ln(pT_gen / pT_raw).

Every loss is a table entry (:data:`LOSSES`): how many network outputs it needs, how the
per-jet loss is computed from those outputs, and which output is the point prediction
ŷ that the exported model returns as ``log_correction``. Point losses (MAE, MSE, Huber,
log-cosh) need one output. The resolution-aware options need more:

* ``quantile``: pinball loss on the quantiles q (default 25/50/75 %) of y. The outputs are
  parametrised so that the quantiles never cross: the central column is the median, the
  others are the median minus/plus cumulative softplus(x - 3) offsets (0.049 at x = 0). The median is ŷ, and
  (q75 - q25) / 2 is a per-jet estimate of the resolution in ln pT.
* ``gaussian_nll``: the network predicts a mean μ and ln σ; the loss is the Gaussian
  negative log-likelihood (constant dropped), ŷ = μ, σ the per-jet resolution.

The flavour term (``loss.flavour_penalty`` > 0) targets the flavour dependence S directly: a
median regressor that cannot tell a gluon from a light quark at 30-50 GeV leaves uds jets
over- and gluon jets under-corrected. In each pT_gen bin it takes, per flavour group uds, c,
b, g, the weighted mean of tanh((ŷ - y) / scale) (a smooth sign: zero where the group's
median residual is zero) and adds the squared spread of those means around their average,
times the weight. Flavour and pT_gen are labels of the loss only; the network still sees
reconstructed inputs. Cells with fewer than :data:`FLAVOUR_MIN_JETS` jets in the batch are left
out. The validation loss is the plain loss.

The batch loss is ``mean(w * l)``: jet weights come normalised to mean 1 over the dataset
(:mod:`jec_coffea.training.reweighting`), so dividing by the number of jets (not by Σw)
keeps the loss of a DistributedDataParallel step exactly the average of the per-rank losses
when ranks see batches of equal size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import extras

if TYPE_CHECKING:
    import torch

    from ..config import LossConfig

__all__ = ["FLAVOUR_MIN_JETS", "LOSSES", "Loss", "LossSpec", "make_loss"]

N_PHYSICS_FLAVOURS = 4
"""The flavour term's groups: indices 0-3 of FLAVOUR_GROUPS (uds, c, b, g; not unknown)."""

FLAVOUR_MIN_JETS = 5
"""Jets a (pT_gen bin, flavour) cell of a batch needs to enter the flavour term."""


def _point(output: torch.Tensor) -> torch.Tensor:
    return output.reshape(output.shape[0], -1)[:, 0]


def _mae(output, target, cfg):
    return (_point(output) - target).abs()


def _mse(output, target, cfg):
    return (_point(output) - target) ** 2


def _huber(output, target, cfg):
    torch = extras.torch()
    return torch.nn.functional.huber_loss(
        _point(output), target, reduction="none", delta=cfg.delta
    )


def _logcosh(output, target, cfg):
    # log(cosh(d)) = |d| + log1p(exp(-2|d|)) - ln 2, finite for any |d|
    torch = extras.torch()
    d = (_point(output) - target).abs()
    return d + torch.nn.functional.softplus(-2.0 * d) - math.log(2.0)


def _quantiles(output: torch.Tensor, median_index: int) -> torch.Tensor:
    """Non-crossing quantiles (N, Q) from raw outputs (N, Q); column ``median_index`` is free."""
    torch = extras.torch()

    def softplus(x):
        # shifted so that zero-initialised outputs start with offsets of 0.049 in ln pT,
        # the order of the jet resolution, instead of ln 2
        return torch.nn.functional.softplus(x - _OFFSET_SHIFT)

    centre = output[:, median_index : median_index + 1]
    below = output[:, :median_index]
    above = output[:, median_index + 1 :]
    lower = centre - torch.flip(torch.cumsum(torch.flip(softplus(below), [1]), 1), [1])
    upper = centre + torch.cumsum(softplus(above), 1)
    return torch.cat([lower, centre, upper], dim=1)


_OFFSET_SHIFT = 3.0


def _pinball(output, target, cfg):
    torch = extras.torch()
    q = torch.as_tensor(cfg.quantiles, dtype=output.dtype, device=output.device)
    pred = _quantiles(output, cfg.quantiles.index(0.5))
    diff = target[:, None] - pred
    return torch.maximum(q * diff, (q - 1.0) * diff).sum(dim=1)


def _gaussian_nll(output, target, cfg):
    torch = extras.torch()
    mu = output[:, 0]
    log_sigma = torch.clamp(output[:, 1], min=cfg.min_log_sigma, max=5.0)
    return 0.5 * ((target - mu) * torch.exp(-log_sigma)) ** 2 + log_sigma


@dataclass(frozen=True)
class LossSpec:
    """One loss in the table.

    Attributes
    ----------
    n_outputs
        Number of network outputs per jet the loss needs (a function of the config).
    per_jet
        ``(output (N, n_outputs), target (N,), config) -> loss (N,)``.
    prediction_index
        Column of the output that is the point prediction ŷ (a function of the config).
    description
        One line for ``--help`` and logs.
    """

    n_outputs: Callable[[Any], int]
    per_jet: Callable[..., Any]
    prediction_index: Callable[[Any], int]
    description: str


LOSSES: dict[str, LossSpec] = {
    "mae": LossSpec(
        lambda c: 1,
        _mae,
        lambda c: 0,
        "mean absolute error |ŷ - y| (median regression)",
    ),
    "mse": LossSpec(
        lambda c: 1, _mse, lambda c: 0, "mean squared error (mean regression)"
    ),
    "huber": LossSpec(
        lambda c: 1, _huber, lambda c: 0, "Huber loss, quadratic below `delta`"
    ),
    "logcosh": LossSpec(
        lambda c: 1, _logcosh, lambda c: 0, "log cosh(ŷ - y), smooth MAE/MSE hybrid"
    ),
    "quantile": LossSpec(
        lambda c: len(c.quantiles),
        _pinball,
        lambda c: c.quantiles.index(0.5),
        "pinball loss on the configured quantiles; the median is the prediction",
    ),
    "gaussian_nll": LossSpec(
        lambda c: 2,
        _gaussian_nll,
        lambda c: 0,
        "Gaussian negative log-likelihood with a predicted width ln σ",
    ),
}
"""Loss name (``loss.type`` in the config) -> definition."""


class Loss:
    """A configured loss: weighted batch loss, point prediction and output count.

    Parameters
    ----------
    config
        The ``loss`` section of the master configuration.
    """

    def __init__(self, config: LossConfig) -> None:
        self.config = config
        self.spec = LOSSES[config.type]
        self.n_outputs = self.spec.n_outputs(config)
        self.prediction_index = self.spec.prediction_index(config)

    def per_jet(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of each jet, shape (N,); ``output`` is (N,) or (N, n_outputs)."""
        out = output.reshape(output.shape[0], -1)
        if out.shape[1] != self.n_outputs:
            msg = (
                f"loss {self.config.type!r} needs {self.n_outputs} network outputs per jet, "
                f"the model gives {out.shape[1]}"
            )
            raise ValueError(msg)
        return self.spec.per_jet(out, target, self.config)

    def __call__(
        self,
        output: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        *,
        flavour: torch.Tensor | None = None,
        pt_gen: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Batch loss mean(w · l) (weights normalised to mean 1 over the dataset).

        With ``flavour`` (group index, :data:`~jec_coffea.data.jet_table.FLAVOUR_GROUPS`) and
        ``pt_gen`` given and ``flavour_penalty`` > 0, the flavour term is added.
        """
        loss = self.per_jet(output, target)
        if weight is not None:
            loss = loss * weight
        value = loss.mean()
        if (
            self.config.flavour_penalty > 0
            and flavour is not None
            and pt_gen is not None
        ):
            value = value + self.config.flavour_penalty * self.flavour_term(
                output, target, weight, flavour, pt_gen
            )
        return value

    def flavour_term(
        self,
        output: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        flavour: torch.Tensor,
        pt_gen: torch.Tensor,
    ) -> torch.Tensor:
        """Σ over pT_gen bins of Σ_f (m_f - mean m)², m_f the group's mean tanh residual."""
        torch = extras.torch()
        s = torch.tanh((self.prediction(output) - target) / self.config.flavour_scale)
        w = torch.ones_like(s) if weight is None else weight.to(s.dtype)
        edges = torch.as_tensor(
            self.config.flavour_pt_edges, dtype=pt_gen.dtype, device=pt_gen.device
        )
        n_bins = len(self.config.flavour_pt_edges)
        ptbin = (
            torch.bucketize(pt_gen, edges, right=True) - 1
        )  # -1: below the first edge
        fl = flavour.to(torch.long)
        use = (ptbin >= 0) & (fl >= 0) & (fl < N_PHYSICS_FLAVOURS)
        cell = (ptbin * N_PHYSICS_FLAVOURS + fl)[use]
        n_cells = n_bins * N_PHYSICS_FLAVOURS
        sums = torch.zeros(n_cells, dtype=s.dtype, device=s.device)
        sums = sums.index_add(0, cell, (s * w)[use])
        wsum = torch.zeros_like(sums).index_add(0, cell, w[use])
        count = torch.zeros_like(sums).index_add(0, cell, torch.ones_like(s[use]))
        present = (count >= FLAVOUR_MIN_JETS) & (wsum > 0)
        mean = torch.where(present, sums / torch.where(present, wsum, 1.0), 0.0)
        mean = mean.reshape(n_bins, N_PHYSICS_FLAVOURS)
        present = present.reshape(n_bins, N_PHYSICS_FLAVOURS)
        n_present = present.sum(dim=1)
        centre = mean.sum(dim=1) / n_present.clamp(min=1)
        spread = torch.where(present, (mean - centre[:, None]) ** 2, 0.0).sum(dim=1)
        return torch.where(n_present >= 2, spread, 0.0).sum()

    def prediction(self, output: torch.Tensor) -> torch.Tensor:
        """Point prediction ŷ = ln(pT_gen/pT_raw) estimate, shape (N,)."""
        out = output.reshape(output.shape[0], -1)
        if self.config.type == "quantile":
            return _quantiles(out, self.prediction_index)[:, self.prediction_index]
        return out[:, self.prediction_index]

    def width(self, output: torch.Tensor) -> torch.Tensor | None:
        """Per-jet resolution estimate in ln pT (σ or half the inter-quantile width), or None."""
        torch = extras.torch()
        out = output.reshape(output.shape[0], -1)
        if self.config.type == "gaussian_nll":
            return torch.exp(out[:, 1])
        if self.config.type == "quantile" and len(self.config.quantiles) >= 3:
            q = _quantiles(out, self.prediction_index)
            return 0.5 * (q[:, -1] - q[:, 0])
        return None


def make_loss(config: LossConfig) -> Loss:
    """Build the :class:`Loss` of a ``loss`` config section."""
    return Loss(config)

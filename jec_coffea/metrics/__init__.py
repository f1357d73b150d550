"""Scale, resolution, flavour dependence and closure, computed from response histograms.

Everything here reads a histogram of :mod:`jec_coffea.histograms` (axes ``method, flavour,
abs_eta, pt_gen, response``; Weight storage) and never the unbinned jets, so each figure can be
recomputed from a saved histogram and merged worker outputs give the same answer.

Conventions (DESIGN.md, "Metrics"):

* **Quantiles** use every entry, flow bins included: the response underflow counts as response 0
  and the overflow as 3 (a quantile that falls in a flow bin is reported at that edge). Within a
  bin the cumulative distribution is interpolated linearly, i.e. entries are taken as uniform
  inside the bin, so a quantile is exact to better than one bin width (0.005).
* **Scale** is the median response; **resolution** is IQR/median = (Q75 - Q25)/Q50 and, as CMS
  does, σ/μ of a Gaussian fitted to the core: χ² fit of the bin contents (empty bins ignored, as
  ROOT's ``TH1::Fit``) in μ ± 1.5σ, starting from the median and IQR/1.349, three fits in total,
  each in the range of the previous result; its uncertainties come from the fit covariance.
* **Uncertainties** of quantile figures are either ``"bootstrap"``: the histogram is resampled
  bin by bin, content_i' = (w²_i/w_i) · Poisson(w_i²/w²_i) (the Poisson bootstrap of the jets
  in the bin, exact for unit weights; w_i is the sum of weights, w²_i of their squares), seeded,
  and the figure's standard deviation over replicas is quoted; or ``"analytic"``: the asymptotic
  covariance of sample quantiles, cov(Q_p, Q_q) = p (1 - q) / (N_eff f(Q_p) f(Q_q)) for p ≤ q,
  with the density f from the histogram CDF over the Hall-Sheather bandwidth.
* **Effective jets** N_eff = (Σw)² / Σw² are what the jet-count thresholds compare with.
* **Flavour dependence** S = Σ_f |m_f - mean_f m| with m_f the median of group f; its noise floor
  is the mean S after shuffling the flavour labels within the bin: the groups' response
  distributions are pooled and each group's histogram is redrawn multinomially from the pool with
  its own (effective) size, seeded. A claim about S counts only where S > 3 x floor.

Results are small dataclasses (``to_dict``/``to_json`` for JSON with NaN as null, ``__rich__``
for tables).
"""

from __future__ import annotations

from ._binned import ALL, DEFAULT_FLAVOURS, histogram_quantiles
from .flavour import FlavourBin, FlavourDependence, flavour_dependence
from .gaussian import GaussianFit, gaussian_core_fit
from .grid import (
    SUMMARY_ABS_ETA_EDGES,
    SUMMARY_PT_EDGES,
    GridBin,
    Improvement,
    SummaryGrid,
    improvement,
    summary_grid,
)
from .response import (
    ClosureBin,
    ClosureTable,
    ResponseBin,
    ResponseTable,
    closure_table,
    response_table,
)

__all__ = [
    "ALL",
    "DEFAULT_FLAVOURS",
    "SUMMARY_ABS_ETA_EDGES",
    "SUMMARY_PT_EDGES",
    "ClosureBin",
    "ClosureTable",
    "FlavourBin",
    "FlavourDependence",
    "GaussianFit",
    "GridBin",
    "Improvement",
    "ResponseBin",
    "ResponseTable",
    "SummaryGrid",
    "closure_table",
    "flavour_dependence",
    "gaussian_core_fit",
    "histogram_quantiles",
    "improvement",
    "response_table",
    "summary_grid",
]


def __dir__() -> list[str]:
    return __all__

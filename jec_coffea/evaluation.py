"""Summary tables of a run: per method and |η| bin, the pT-averaged resolution, S and improvements.

The input is the output dictionary of :class:`~jec_coffea.processors.ResponseProcessor` (saved by
``jec-coffea run`` as ``OUT/histograms.coffea`` with ``coffea.util.save``). Every number is
computed from the histograms through :mod:`jec_coffea.metrics`, on the summary grid of
DESIGN.md: |η_gen| 0-1.3, 1.3-2.5 x pT_gen 30, 50, 100, 200, 500, 1000, 3000 GeV. A grid bin
is *eligible* when every flavour group uds, c, b, g has at least ``min_jets`` effective jets
(N_eff = (Σw)²/Σw², default 1000); averages run over eligible bins only, unweighted.

``summary.json`` (written by :meth:`Summary.to_json`, read by the report and the README)::

    {
      "format_version": 1,
      "source": "<histograms file>",
      "reference": "standard",            # method the improvements refer to (null if absent)
      "min_jets": 1000.0,                 # eligibility threshold per flavour group (N_eff)
      "resolution_definition": "IQR/median = (Q75 - Q25)/Q50 of pT/pT_gen",
      "abs_eta_edges": [0.0, 1.3, 2.5],   # summary grid
      "pt_gen_edges": [30, 50, 100, 200, 500, 1000, 3000],   # GeV
      "methods": {
        "<method>": {
          "bins": [                        # one entry per |eta| bin, then "all" = headline
            {"abs_eta": [lo, hi] | "all",
             "n_bins": int,               # eligible pT bins averaged over
             "resolution": float,         # mean IQR/median over the eligible pT bins
             "resolution_err": float,     # its statistical uncertainty (bootstrap, propagated)
             "gauss_resolution": float,   # mean sigma/mu of the Gaussian core fit
             "s": float,                  # mean flavour dependence S (uds, c, b, g)
             "s_floor": float,            # mean noise floor of S (label shuffle)
             "s6": float | null,          # mean S_6 (u, d, s, c, b, g), if that view exists
             "improvement_resolution": float | null,  # 100 (1 - X / X_reference), percent
             "improvement_s": float | null}
          ]
        }
      },
      "closure": {"method": "standard", "passed": bool, "n_tested": int,
                  "n_failing": int} | null,
      "cutflow": {"steps": [{"step", "count", "sumw", "sumw2"}, ...]} | null
    }

Improvements use the bins eligible for both the method and the reference and compare the means:
100 (1 - mean X_method / mean X_reference), the headline definition of DESIGN.md. Values that
cannot be computed (no eligible bin) are ``null`` in JSON and "-" in the tables.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hist
import numpy as np

from .errors import ConfigError, InputFileError
from .histograms import PARTON_FLAVOURS, CutFlow
from .metrics import (
    SUMMARY_ABS_ETA_EDGES,
    SUMMARY_PT_EDGES,
    SummaryGrid,
    closure_table,
    flavour_dependence,
    summary_grid,
)
from .metrics._records import _clean

__all__ = [
    "FORMAT_VERSION",
    "HISTOGRAMS_FILE",
    "Summary",
    "SummaryRow",
    "evaluate",
    "load_output",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the ``summary.json`` layout (module docstring)."""

HISTOGRAMS_FILE = "histograms.coffea"
"""Name of the processor output inside a run directory."""

ALL_ETA = "all"
"""Label of the row averaging over every |η| bin of the grid (the headline)."""


def load_output(path: str | Path) -> dict[str, Any]:
    """Load a processor output: a run directory (``histograms.coffea`` inside) or the file.

    Raises
    ------
    InputFileError
        If the file is missing, cannot be unpickled, or holds no ``"response"`` histogram.
    """
    from coffea.util import load

    path = Path(path)
    file = path / HISTOGRAMS_FILE if path.is_dir() else path
    if not file.is_file():
        hint = (
            f"no {HISTOGRAMS_FILE} in the directory; run 'jec-coffea run ... -o {path}' first"
            if path.is_dir()
            else "file not found"
        )
        raise InputFileError(str(file), hint)
    try:
        out = load(str(file))
    except Exception as err:  # pickle/lz4 errors of any kind: not a coffea output
        raise InputFileError(
            str(file), f"cannot load as a coffea output: {err}"
        ) from err
    if not isinstance(out, Mapping) or not isinstance(out.get("response"), hist.Hist):
        keys = sorted(out) if isinstance(out, Mapping) else type(out).__name__
        raise InputFileError(
            str(file),
            f"holds no 'response' histogram (keys: {keys}); expected a ResponseProcessor output",
        )
    return dict(out)


@dataclass(frozen=True)
class SummaryRow:
    """Averages of one method over the eligible pT bins of one |η| bin (or of all, the headline)."""

    method: str
    abs_eta: tuple[float, float] | str
    n_bins: int
    resolution: float
    resolution_err: float
    gauss_resolution: float
    s: float
    s_floor: float
    s6: float | None
    improvement_resolution: float | None
    improvement_s: float | None


@dataclass
class Summary:
    """Per method and |η| bin: pT-averaged resolution, S, S_6 and improvements over the reference."""

    rows: list[SummaryRow] = field(default_factory=list)
    reference: str | None = "standard"
    min_jets: float = 1000.0
    source: str = ""
    closure: dict[str, Any] | None = None
    cutflow: dict[str, Any] | None = None
    grid: SummaryGrid | None = None

    @property
    def methods(self) -> list[str]:
        """Methods in histogram order."""
        return list(dict.fromkeys(r.method for r in self.rows))

    def headline(self, method: str) -> SummaryRow:
        """The row averaging over every |η| bin of ``method``."""
        for r in self.rows:
            if r.method == method and r.abs_eta == ALL_ETA:
                return r
        msg = f"no method {method!r} in the summary ({self.methods})"
        raise KeyError(msg)

    def to_dict(self) -> dict[str, Any]:
        """The ``summary.json`` document (module docstring); NaN becomes null."""
        methods: dict[str, Any] = {}
        for r in self.rows:
            entry = methods.setdefault(r.method, {"bins": []})
            row = {k: getattr(r, k) for k in SummaryRow.__dataclass_fields__}
            del row["method"]
            entry["bins"].append(row)
        return _clean(
            {
                "format_version": FORMAT_VERSION,
                "source": self.source,
                "reference": self.reference,
                "min_jets": self.min_jets,
                "resolution_definition": "IQR/median = (Q75 - Q25)/Q50 of pT/pT_gen",
                "abs_eta_edges": list(SUMMARY_ABS_ETA_EDGES),
                "pt_gen_edges": list(SUMMARY_PT_EDGES),
                "methods": methods,
                "closure": self.closure,
                "cutflow": self.cutflow,
            }
        )

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def _cells(self, r: SummaryRow) -> list[str]:
        eta = "all" if r.abs_eta == ALL_ETA else f"{r.abs_eta[0]:g}-{r.abs_eta[1]:g}"
        return [
            r.method,
            eta,
            str(r.n_bins),
            _fmt(r.resolution, r.resolution_err),
            _fmt(r.gauss_resolution),
            _fmt(r.s),
            _fmt(r.s_floor),
            _fmt(r.s6),
            _fmt(r.improvement_resolution, digits=3, unit="%"),
            _fmt(r.improvement_s, digits=3, unit="%"),
        ]

    _HEADER = (
        "method",
        "|η|",
        "pT bins",
        "resolution (IQR/med)",
        "σ/μ core",
        "S",
        "S floor",
        "S_6",
        "Δ resolution",
        "Δ S",
    )

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown: the table and the definitions under it."""
        lines = [
            "| " + " | ".join(self._HEADER) + " |",
            "|" + "|".join(["---"] * 2 + ["---:"] * (len(self._HEADER) - 2)) + "|",
        ]
        lines += ["| " + " | ".join(self._cells(r)) + " |" for r in self.rows]
        ref = self.reference or "(no reference)"
        lines += [
            "",
            (
                f"Averages over the summary-grid pT_gen bins {list(SUMMARY_PT_EDGES)} GeV where "
                f"every flavour group has N_eff >= {self.min_jets:g}. Resolution = IQR/median of "
                f"pT/pT_gen; S = Σ_f |m_f - mean m| over uds, c, b, g; "
                f"Δ = 100 (1 - X / X_{ref}) in percent."
            ),
        ]
        if self.closure is not None:
            c = self.closure
            lines.append(
                f"Closure of {c['method']}: {'passed' if c['passed'] else 'FAILED'} "
                f"({c['n_tested']} bins tested, {c['n_failing']} failing)."
            )
        return "\n".join(lines) + "\n"

    _SHORT = ("method", "|η|", "n", "res.", "σ/μ", "S", "S₆", "Δres%", "ΔS%")

    def __rich__(self) -> Any:
        """Compact table for an 80-column terminal; errors and S floors are in JSON/Markdown."""
        from rich import box
        from rich.table import Table

        table = Table(
            title=f"summary of {self.source or 'histograms'}: n = pT bins with N_eff >= "
            f"{self.min_jets:g} per flavour; Δ vs {self.reference or '-'}",
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
        )
        for i, h in enumerate(self._SHORT):
            table.add_column(h, justify="left" if i < 2 else "right", no_wrap=True)
        for r in self.rows:
            eta = (
                "all" if r.abs_eta == ALL_ETA else f"{r.abs_eta[0]:g}-{r.abs_eta[1]:g}"
            )
            table.add_row(
                r.method,
                eta,
                str(r.n_bins),
                _fmt(r.resolution, digits=3),
                _fmt(r.gauss_resolution, digits=3),
                _fmt(r.s, digits=2),
                _fmt(r.s6, digits=2),
                _fmt(r.improvement_resolution, digits=3),
                _fmt(r.improvement_s, digits=3),
                end_section=r.abs_eta == ALL_ETA,
            )
        return table


def _fmt(
    x: float | None, err: float | None = None, *, digits: int = 4, unit: str = ""
) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    text = f"{x:.{digits}g}{unit}"
    if err is not None and math.isfinite(err):
        text += f" ± {err:.2g}"
    return text


def _mean(x: Sequence[float]) -> float:
    x = [v for v in x if v is not None and math.isfinite(v)]
    return float(np.mean(x)) if x else math.nan


def _improve(x: float, ref: float) -> float | None:
    if not (math.isfinite(x) and math.isfinite(ref)) or ref == 0:
        return None
    return 100.0 * (1.0 - x / ref)


def evaluate(
    output: Mapping[str, Any],
    *,
    reference: str | None = "standard",
    min_jets: float = 1000.0,
    n_boot: int = 100,
    n_shuffle: int = 50,
    seed: int = 0,
    source: str = "",
) -> Summary:
    """Summary table of a processor output (see the module docstring for every quantity).

    Parameters
    ----------
    output
        ResponseProcessor output: needs ``"response"``; uses ``"response_flavour6"`` for S_6
        and ``"cutflow"`` when present.
    reference
        Method the improvements refer to; ``None`` or a method absent from the histogram
        disables them (logged).
    min_jets
        N_eff per flavour group a grid bin needs to enter the averages.
    n_boot, n_shuffle, seed
        Bootstrap replicas, label shuffles for the S noise floor, random seed.
    source
        Name of the input, copied into the summary.
    """
    h = output.get("response")
    if not isinstance(h, hist.Hist):
        msg = f"evaluate: the output holds no 'response' histogram (keys: {sorted(output)})"
        raise ConfigError(msg)
    methods = list(h.axes["method"])
    if reference is not None and reference not in methods:
        logger.warning(
            "evaluate: reference method %r not in the histogram %s; no improvements",
            reference,
            methods,
        )
        reference = None
    grid = summary_grid(
        h, min_jets=min_jets, n_boot=n_boot, n_shuffle=n_shuffle, seed=seed
    )
    s6 = _s6_by_bin(output.get("response_flavour6"), min_jets, n_boot, seed)
    eta_bins = list(itertools.pairwise(SUMMARY_ABS_ETA_EDGES))
    summary = Summary(reference=reference, min_jets=min_jets, source=source, grid=grid)
    by = {(b.method, b.abs_eta, b.pt_gen): b for b in grid.bins}
    for method in methods:
        for eta in [*eta_bins, ALL_ETA]:
            sel = [
                b
                for b in grid.bins
                if b.method == method
                and b.eligible
                and (eta == ALL_ETA or np.allclose(b.abs_eta, eta))
            ]
            n = len(sel)
            errs = [b.resolution_err for b in sel if math.isfinite(b.resolution_err)]
            res_err = math.sqrt(sum(e * e for e in errs)) / n if n else math.nan
            s6_vals = [s6.get((method, b.abs_eta, b.pt_gen)) for b in sel]
            s6_mean = _mean([v for v in s6_vals if v is not None]) if s6 else None
            imp_r = imp_s = None
            if reference is not None:
                pairs = [
                    (b, by[(reference, b.abs_eta, b.pt_gen)])
                    for b in sel
                    if by[(reference, b.abs_eta, b.pt_gen)].eligible
                ]
                imp_r = _improve(
                    _mean([b.resolution for b, _ in pairs]),
                    _mean([r.resolution for _, r in pairs]),
                )
                imp_s = _improve(
                    _mean([b.s for b, _ in pairs]), _mean([r.s for _, r in pairs])
                )
            summary.rows.append(
                SummaryRow(
                    method=method,
                    abs_eta=eta if eta == ALL_ETA else (float(eta[0]), float(eta[1])),
                    n_bins=n,
                    resolution=_mean([b.resolution for b in sel]),
                    resolution_err=res_err,
                    gauss_resolution=_mean([b.gauss_resolution for b in sel]),
                    s=_mean([b.s for b in sel]),
                    s_floor=_mean([b.floor for b in sel]),
                    s6=s6_mean,
                    improvement_resolution=imp_r,
                    improvement_s=imp_s,
                )
            )
    if reference is not None:
        ct = closure_table(h, reference, n_boot=max(n_boot // 4, 2), seed=seed)
        summary.closure = {
            "method": reference,
            "passed": ct.passed,
            "n_tested": sum(b.tested for b in ct.bins),
            "n_failing": len(ct.failing),
        }
    cutflow = output.get("cutflow")
    if isinstance(cutflow, CutFlow):
        summary.cutflow = cutflow.to_dict()
    logger.info(
        "evaluated %d methods on %d eligible grid bins",
        len(methods),
        sum(b.eligible for b in grid.bins) // max(len(methods), 1),
    )
    return summary


def _s6_by_bin(
    h6: Any, min_jets: float, n_boot: int, seed: int
) -> dict[tuple[str, tuple[float, float], tuple[float, float]], float]:
    """S_6 per summary-grid bin where every one of u, d, s, c, b, g has N_eff >= min_jets."""
    if not isinstance(h6, hist.Hist):
        return {}
    fd = flavour_dependence(
        h6,
        flavours=PARTON_FLAVOURS,
        abs_eta_edges=SUMMARY_ABS_ETA_EDGES,
        pt_edges=SUMMARY_PT_EDGES,
        n_boot=max(n_boot // 4, 2),
        n_shuffle=2,
        seed=seed,
    )
    return {
        (b.method, b.abs_eta, b.pt_gen): b.s
        for b in fd.bins
        if min(b.n_eff) >= min_jets
    }

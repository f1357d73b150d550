"""correctionlib outputs: standard levels, binned DNN factors, resolutions, and the MLP itself.

:func:`build_correction_set` assembles one schema-v2 correction set from any of

- the derived standard correction (a ``derive-standard`` directory's CMS text files) through
  :func:`~jec_coffea.standard.jec_text_to_correctionlib`: ``{tag}_L1FastJet_{jet}``,
  ``{tag}_L2Relative_{jet}`` and the compound ``{tag}_L1L2_{jet}``;
- :func:`binned_factor_correction` (:mod:`jec_coffea.correction_binned`, re-exported here):
  the median DNN correction factor pT_corr/pT_raw per (η, raw pT) bin (optionally per flavour group) for analyses that cannot run onnxruntime,
  from per-jet factors (:func:`read_factor_columns`: parquet of ``--save-columns``, or a
  :class:`~jec_coffea.corrector.DNNJetCorrector` on a dataset) or from the
  ``correction_factor`` histogram of the processor (axes method, abs_eta, pt_raw, factor);
- :func:`resolution_correction`: the resolution of each method in (η, pT, ρ), CMS
  PtResolution-style, from the response histograms;
- :func:`~jec_coffea.correction_mlp.mlp_correction`: a jet-level MLP exported to ONNX as a
  correctionlib ``lwtnn`` node with its preprocessing, so correctionlib alone evaluates the DNN.

:func:`validate_correction_set` checks a written file with correctionlib's schema and loads it
in the C++ evaluator.

Conventions: inputs are named as in CMS's ``jet_jerc.json`` (``JetEta``, ``JetPt`` raw pT in
GeV, ``Rho`` in GeV); out-of-range inputs are clamped to the outermost bins (``flow="clamp"``).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hist
import numpy as np

from .correction_binned import (
    ETA_EDGES,
    PT_RAW_EDGES,
    _fill_holes,
    _multibinning,
    _n_eff,
    _quantiles_last_axis,
    binned_factor_correction,
    factors_from_dataset,
    median_factor_grid,
    read_factor_columns,
)
from .errors import ConfigError, InputFileError
from .histograms import ABS_ETA_EDGES, PT_GEN_SUMMARY_EDGES
from .metrics._binned import quantiles as _binned_quantiles
from .metrics._binned import read_binned

__all__ = [
    "ETA_EDGES",
    "PT_RAW_EDGES",
    "RESOLUTION_DEFINITION",
    "binned_factor_correction",
    "build_correction_set",
    "factors_from_dataset",
    "median_factor_grid",
    "read_factor_columns",
    "resolution_correction",
    "standard_corrections",
    "validate_correction_set",
]

logger = logging.getLogger(__name__)

RESOLUTION_DEFINITION = "IQR/median = (Q75 - Q25)/Q50 of pT/pT_gen"
"""The resolution written by :func:`resolution_correction` (not the Gaussian-core σ/μ)."""


def _cs() -> Any:
    from correctionlib import schemav2

    return schemav2


# --------------------------------------------------------------------------- standard levels
def standard_corrections(
    source: str | Path | Sequence[str | Path],
    *,
    levels: Sequence[str] = ("L1FastJet", "L2Relative"),
) -> tuple[list[Any], list[Any]]:
    """Corrections and compound corrections of a derived standard calibration.

    Parameters
    ----------
    source
        A ``derive-standard`` output directory (its ``*.jec.txt[.gz]`` files) or the files.
    levels
        Levels to take (file name ``{tag}_{level}_{jettype}``); the compound of these levels is
        added (``{tag}_L1L2_{jettype}`` for the default).

    Raises
    ------
    ConfigError
        If no file of the requested levels is found.
    """
    from .standard import jec_text_to_correctionlib, parse_correction_name

    if isinstance(source, str | Path) and Path(source).is_dir():
        files = sorted(
            {f for g in ("*.jec.txt", "*.jec.txt.gz") for f in Path(source).glob(g)}
        )
    elif isinstance(source, str | Path):
        files = [Path(source)]
    else:
        files = [Path(p) for p in source]
    for f in files:
        if not f.is_file():
            raise InputFileError(str(f), "JEC text file not found")
    chosen = [
        f
        for f in files
        if parse_correction_name(f.name.split(".jec.txt")[0]).level in levels
    ]
    if not chosen:
        msg = f"standard corrections: no {list(levels)} text file among {[str(f) for f in files]} (source {source})"
        raise ConfigError(msg)
    cset = jec_text_to_correctionlib(chosen, compound=True)
    return list(cset.corrections), list(cset.compound_corrections or [])


# --------------------------------------------------------------------------- resolution
def resolution_correction(
    output: Mapping[str, Any],
    method: str,
    *,
    min_jets: float = 20.0,
    name: str | None = None,
) -> Any:
    """Resolution of ``method`` in (|η|, pT_gen, ρ) as a PtResolution-style correction.

    Resolution is :data:`RESOLUTION_DEFINITION` per bin of the processor's ``response_vs_rho``
    view (|η| 0, 1.3, 2.5, 3, 5; pT_gen summary edges; ρ edges of the view). Bins with fewer
    than ``min_jets`` effective jets take the ρ-inclusive value of the same (|η|, pT) bin from
    the main ``response`` histogram, then the nearest populated pT bin. Without the ρ view the
    table is ρ-independent (one ρ bin). Inputs: JetEta (abs taken inside), JetPt (evaluated as
    pT_gen; for reco jets use the corrected pT), Rho [GeV].
    """
    cs = _cs()
    h = output.get("response")
    if not isinstance(h, hist.Hist) or method not in h.axes["method"]:
        have = list(h.axes["method"]) if isinstance(h, hist.Hist) else []
        msg = f"resolution_correction: method {method!r} not in the response histogram ({have})"
        raise ConfigError(msg)
    pt_edges = np.asarray(PT_GEN_SUMMARY_EDGES, float)
    eta_edges = np.asarray(ABS_ETA_EDGES, float)
    # rho-inclusive fallback from the main histogram, merged onto the summary pT edges
    b = read_binned(h, pt_edges=pt_edges)
    values = b.values[b.methods.index(method)].sum(
        axis=0
    )  # (abs_eta, pt, response + 2)
    variances = b.variances[b.methods.index(method)].sum(axis=0)
    q = _binned_quantiles(values, b.lo, b.hi, (0.25, 0.5, 0.75))
    with np.errstate(divide="ignore", invalid="ignore"):
        incl = (q[..., 2] - q[..., 0]) / q[..., 1]
        n_main = np.where(
            variances.sum(-1) > 0, values.sum(-1) ** 2 / variances.sum(-1), 0.0
        )
    incl = np.where(n_main >= min_jets, incl, np.nan)
    h_rho = output.get("response_vs_rho")
    if isinstance(h_rho, hist.Hist) and method in h_rho.axes["method"]:
        sub = h_rho[{"method": method}]
        res = _iqr_over_median(sub)
        res = np.where(_n_eff(sub) >= min_jets, res, incl[..., None])
        rho_edges = np.asarray(sub.axes["event_rho"].edges, float)
    else:
        res = incl[..., None]
        rho_edges = np.array([0.0, 1000.0])
    res = _fill_holes(np.moveaxis(res, 1, -1), f"resolution {method}")  # fill along pT
    res = np.moveaxis(res, -1, 1)
    node = _multibinning(
        cs,
        ["JetEta", "JetPt", "Rho"],
        [list(eta_edges), list(pt_edges), list(rho_edges)],
        res,
    )
    data = cs.Transform(
        nodetype="transform",
        input="JetEta",
        rule=cs.Formula(
            nodetype="formula",
            expression="abs(x)",
            parser="TFormula",
            variables=["JetEta"],
        ),
        content=node,
    )
    return cs.Correction(
        name=name or f"{method}_PtResolution",
        version=1,
        description=(
            f"Relative pT resolution of {method}: {RESOLUTION_DEFINITION}, binned in |eta_gen|, "
            "pT_gen [GeV] and rho [GeV] (response_vs_rho view); out-of-range inputs clamp."
        ),
        inputs=[
            cs.Variable(name="JetEta", type="real", description="jet pseudorapidity"),
            cs.Variable(
                name="JetPt", type="real", description="jet pT [GeV] (binned in pT_gen)"
            ),
            cs.Variable(
                name="Rho", type="real", description="pile-up density rho [GeV]"
            ),
        ],
        output=cs.Variable(
            name="resolution", type="real", description=RESOLUTION_DEFINITION
        ),
        data=data,
    )


def _iqr_over_median(h: hist.Hist) -> np.ndarray:
    q = _quantiles_last_axis(h, (0.25, 0.5, 0.75))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (q[..., 2] - q[..., 0]) / q[..., 1]


# --------------------------------------------------------------------------- assembly
def build_correction_set(
    corrections: Sequence[Any],
    compound: Sequence[Any] = (),
    *,
    description: str = "",
) -> Any:
    """One schema-v2 correction set; duplicate names are a :class:`ConfigError`."""
    cs = _cs()
    from . import __version__

    names = [c.name for c in corrections] + [c.name for c in compound]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        msg = f"correction set: names {dup} appear twice"
        raise ConfigError(msg)
    if not corrections:
        msg = "correction set: nothing to export (give a standard directory, a method or a model)"
        raise ConfigError(msg)
    return cs.CorrectionSet(
        schema_version=2,
        description=description or f"jec-coffea {__version__} corrections",
        corrections=list(corrections),
        compound_corrections=list(compound) or None,
    )


def validate_correction_set(path: str | Path) -> Any:
    """Validate a written JSON with correctionlib's schema and load it in the C++ evaluator.

    Returns the ``correctionlib.CorrectionSet``; raises :class:`InputFileError` naming the file.
    """
    import correctionlib

    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = path.read_text(encoding="utf-8")
        _cs().CorrectionSet.model_validate_json(text)
        return correctionlib.CorrectionSet.from_string(text)
    except Exception as err:  # pydantic ValidationError, RuntimeError of the C++ loader
        raise InputFileError(
            str(path), f"does not validate as correctionlib JSON: {err}"
        ) from err

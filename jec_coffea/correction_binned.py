"""Binned DNN correction factors in (η, raw pT), for analyses that cannot run onnxruntime.

The median correction factor pT_corr/pT_raw of a method per (η, pT_raw) bin (optionally per
flavour group) becomes a correctionlib ``multibinning`` node (inputs ``JetEta``, ``JetPt`` =
raw pT in GeV, optional int ``FlavourGroup``; out-of-range inputs clamp to the edge bins). The
per-jet factors come from :func:`read_factor_columns` (parquet of ``jec-coffea run
--save-columns``, or files with a ``<method>_factor`` column), from :func:`factors_from_dataset`
(a :class:`~jec_coffea.corrector.DNNJetCorrector` on a data.yaml or ROOT file), or, without
flavour, from the processor's ``correction_factor`` histogram (axes method, abs_eta, pt_raw,
factor). Bins with fewer than ``min_jets`` jets take the value of the nearest populated pT bin
of the same η row (logged); rows without any jet get 1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hist
import numpy as np

from .data.jet_table import FLAVOUR_GROUPS
from .errors import ConfigError, InputFileError, MissingBranchError
from .metrics._binned import quantiles as _binned_quantiles

__all__ = [
    "ETA_EDGES",
    "PT_RAW_EDGES",
    "binned_factor_correction",
    "factors_from_dataset",
    "median_factor_grid",
    "read_factor_columns",
]

logger = logging.getLogger(__name__)

ETA_EDGES: tuple[float, ...] = tuple(np.round(np.linspace(-5.0, 5.0, 21), 6))
"""Default signed-η edges of the binned DNN correction (0.5 wide)."""

PT_RAW_EDGES: tuple[float, ...] = (
    10, 15, 20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300, 400, 500, 650, 800,
    1000, 1300, 1600, 2000, 3000, 6500,
)  # fmt: skip
"""Default raw-pT edges [GeV] of the binned DNN correction."""


def _cs() -> Any:
    from correctionlib import schemav2

    return schemav2


# --------------------------------------------------------------------------- binned DNN factor
def read_factor_columns(
    paths: str | Path | Iterable[str | Path], method: str
) -> dict[str, np.ndarray]:
    """Per-jet (eta, pt_raw, flavour_group, factor) of ``method`` from parquet files.

    Accepts the ``--save-columns`` files of ``jec-coffea run`` (``pt_<method>`` with
    ``pt_raw``: factor = pt_<method> / pt_raw) and files with a ``<method>_factor`` column.
    Directories are searched recursively for ``*.parquet``. Jets with a non-finite factor
    (method not computed) are dropped.
    """
    import awkward as ak

    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.parquet"))
        elif p.is_file():
            files.append(p)
        else:
            raise InputFileError(str(p), "parquet file or directory not found")
    if not files:
        raise InputFileError(str(list(paths)), "no *.parquet file found")
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("eta", "pt_raw", "flavour_group", "factor")
    }
    for f in files:
        try:
            arr = ak.from_parquet(str(f))
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise InputFileError(str(f), f"cannot read parquet: {err}") from err
        fields = arr.fields
        for need in ("eta", "pt_raw"):
            if need not in fields:
                raise MissingBranchError(
                    need, path=str(f), available=fields, reason="binned DNN correction"
                )
        pt_raw = ak.to_numpy(arr["pt_raw"]).astype(np.float64)
        if f"{method}_factor" in fields:
            factor = ak.to_numpy(arr[f"{method}_factor"]).astype(np.float64)
        elif f"pt_{method}" in fields:
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = ak.to_numpy(arr[f"pt_{method}"]).astype(np.float64) / pt_raw
        else:
            key = f"{method}_factor"
            raise MissingBranchError(
                key,
                path=str(f),
                available=fields,
                reason=f"needs {method}_factor or pt_{method} for method {method!r}",
            )
        cols["eta"].append(ak.to_numpy(arr["eta"]).astype(np.float64))
        cols["pt_raw"].append(pt_raw)
        cols["factor"].append(factor)
        cols["flavour_group"].append(
            ak.to_numpy(arr["flavour_group"]).astype(np.int64)
            if "flavour_group" in fields
            else np.full(len(arr), FLAVOUR_GROUPS.index("unknown"))
        )
    out = {k: np.concatenate(v) for k, v in cols.items()}
    ok = (
        np.isfinite(out["factor"])
        & np.isfinite(out["eta"])
        & np.isfinite(out["pt_raw"])
    )
    logger.info(
        "read %d jets with a %s factor from %d parquet file(s) (%d dropped)",
        int(ok.sum()),
        method,
        len(files),
        int((~ok).sum()),
    )
    return {k: v[ok] for k, v in out.items()}


def factors_from_dataset(
    dataset: str | Path, onnx_path: str | Path, *, max_jets: int | None = None
) -> dict[str, np.ndarray]:
    """Per-jet factors of an ONNX model on the jets of a data.yaml or ROOT file.

    Uses :class:`~jec_coffea.corrector.DNNJetCorrector` (the analysis path: same features as
    training); jets outside the model's validity are dropped.
    """
    from .corrector import DNNJetCorrector
    from .report import load_dataset_jets

    jets = load_dataset_jets(dataset, max_jets=max_jets or 10**9)
    corrector = DNNJetCorrector.from_onnx(onnx_path)
    cols = corrector.correct(jets, warn=False)
    prefix = corrector.prefix
    import awkward as ak

    valid = np.asarray(cols[f"{prefix}_valid"], dtype=bool)
    return {
        "eta": ak.to_numpy(jets.eta).astype(np.float64)[valid],
        "pt_raw": np.asarray(cols["pt_raw"])[valid],
        "flavour_group": (
            ak.to_numpy(jets.flavour_group).astype(np.int64)
            if "flavour_group" in jets.fields
            else np.full(len(jets), FLAVOUR_GROUPS.index("unknown"))
        )[valid],
        "factor": np.asarray(cols[f"{prefix}_factor"])[valid],
    }


def median_factor_grid(
    eta: np.ndarray,
    pt_raw: np.ndarray,
    factor: np.ndarray,
    *,
    eta_edges: Sequence[float] = ETA_EDGES,
    pt_edges: Sequence[float] = PT_RAW_EDGES,
    min_jets: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Median factor per (η, pT_raw) bin, vectorised (sort by bin, then by value).

    Jets outside the edges go to the outermost bins (as the correction clamps). Returns
    (medians (n_eta, n_pt), counts); bins with fewer than ``min_jets`` jets are filled from
    the nearest populated pT bin of the same η row, rows without any get 1 (logged).
    """
    eta_edges = np.asarray(eta_edges, float)
    pt_edges = np.asarray(pt_edges, float)
    ne, npt = len(eta_edges) - 1, len(pt_edges) - 1
    ie = np.clip(np.searchsorted(eta_edges, eta, side="right") - 1, 0, ne - 1)
    ip = np.clip(np.searchsorted(pt_edges, pt_raw, side="right") - 1, 0, npt - 1)
    key = ie * npt + ip
    order = np.lexsort((factor, key))
    key_s, f_s = key[order], factor[order]
    counts = np.bincount(key_s, minlength=ne * npt)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    med = np.full(ne * npt, np.nan)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    med[has] = 0.5 * (f_s[lo] + f_s[hi])
    med[counts < min_jets] = np.nan
    med = med.reshape(ne, npt)
    counts = counts.reshape(ne, npt)
    return _fill_holes(med, "binned factor"), counts


def _fill_holes(grid: np.ndarray, what: str) -> np.ndarray:
    """Fill NaN cells from the nearest finite cell of the same row (last axis); empty rows -> 1."""
    out = grid.copy()
    n_holes = int(np.isnan(out).sum())
    cols = np.arange(out.shape[-1])
    for row in np.ndindex(*out.shape[:-1]):  # rows of the grid, not jets: a few dozen
        ok = np.isfinite(out[row])
        if not ok.any():
            out[row] = 1.0
            continue
        good = cols[ok]
        nearest = good[np.abs(cols[:, None] - good[None, :]).argmin(axis=1)]
        out[row] = out[row][nearest]
    if n_holes:
        logger.warning(
            "%s: %d of %d bins had too few jets and were filled from neighbours",
            what,
            n_holes,
            grid.size,
        )
    return out


def _median_from_factor_hist(
    h: hist.Hist, method: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(median factor, |η| edges, pT_raw edges, N_eff) from the ``correction_factor`` histogram."""
    expected = ("method", "abs_eta", "pt_raw", "factor")
    if tuple(h.axes.name) != expected:
        msg = f"correction_factor histogram must have axes {expected}, got {tuple(h.axes.name)}"
        raise ConfigError(msg)
    if method not in h.axes["method"]:
        msg = f"method {method!r} not in the correction_factor histogram ({list(h.axes['method'])})"
        raise ConfigError(msg)
    sub = h[{"method": method}]
    # the factor axis plays the role of the response axis: quantiles with flow counted
    med = _quantiles_last_axis(sub, (0.5,))[..., 0]
    return (
        med,
        np.asarray(sub.axes["abs_eta"].edges),
        np.asarray(sub.axes["pt_raw"].edges),
        _n_eff(sub),
    )


def _quantiles_last_axis(h: hist.Hist, qs: Sequence[float]) -> np.ndarray:
    """Quantiles of the last axis (flow counted) for every bin of the other axes (no flow)."""
    sl = tuple(
        slice(1 if a.traits.underflow else 0, -1 if a.traits.overflow else None)
        for a in h.axes[:-1]
    )
    vals = np.asarray(h.values(flow=True), float)[(*sl, slice(None))]
    last = h.axes[-1]
    r = np.asarray(last.edges)
    if not last.traits.underflow:
        vals = np.concatenate([np.zeros((*vals.shape[:-1], 1)), vals], axis=-1)
    if not last.traits.overflow:
        vals = np.concatenate([vals, np.zeros((*vals.shape[:-1], 1))], axis=-1)
    lo = np.concatenate([[r[0]], r[:-1], [r[-1]]])
    hi = np.concatenate([[r[0]], r[1:], [r[-1]]])
    return _binned_quantiles(vals, lo, hi, qs)


def binned_factor_correction(
    method: str,
    *,
    columns: Mapping[str, np.ndarray] | None = None,
    histogram: hist.Hist | None = None,
    per_flavour: bool = False,
    eta_edges: Sequence[float] = ETA_EDGES,
    pt_edges: Sequence[float] = PT_RAW_EDGES,
    min_jets: int = 10,
    name: str | None = None,
) -> Any:
    """The median DNN factor pT_corr/pT_raw binned in (η, raw pT) as a correctionlib correction.

    Parameters
    ----------
    method
        Method (model) name; the correction is called ``{method}_binned`` by default.
    columns
        Per-jet ``eta``, ``pt_raw``, ``factor`` (and ``flavour_group`` for ``per_flavour``),
        e.g. from :func:`read_factor_columns` or :func:`factors_from_dataset`.
    histogram
        Alternatively the processor's ``correction_factor`` histogram (|η| binning, no
        flavour); the correction then takes abs(JetEta) internally.
    per_flavour
        Add an integer input ``FlavourGroup`` (index into FLAVOUR_GROUPS: 0 uds, 1 c, 2 b,
        3 g, 4 unknown; unknown values fall back to the flavour-inclusive table).
    """
    cs = _cs()
    name = name or f"{method}_binned"
    eta_in = cs.Variable(name="JetEta", type="real", description="jet pseudorapidity")
    pt_in = cs.Variable(
        name="JetPt",
        type="real",
        description="raw jet pT, Jet_pt (1 - Jet_rawFactor) [GeV]",
    )
    if (columns is None) == (histogram is None):
        msg = "binned_factor_correction: give exactly one of columns= and histogram="
        raise ConfigError(msg)
    if histogram is not None:
        if per_flavour:
            msg = "binned_factor_correction: the correction_factor histogram has no flavour axis; per-flavour tables need the parquet columns (--save-columns)"
            raise ConfigError(msg)
        med, e_edges, p_edges, counts = _median_from_factor_hist(histogram, method)
        med = np.where(counts >= min_jets, med, np.nan)
        med = _fill_holes(med, f"{name}")
        node = _multibinning(
            cs, ["JetEta", "JetPt"], [list(e_edges), list(p_edges)], med
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
        inputs = [eta_in, pt_in]
        desc = (
            f"Median correction factor pT_corr/pT_raw of {method} per (|eta|, raw pT) bin, from the "
            "correction_factor histogram; multiply the raw pT by it."
        )
    else:
        assert columns is not None
        for need in ("eta", "pt_raw", "factor"):
            if need not in columns:
                msg = f"binned_factor_correction: columns lack {need!r} (have {sorted(columns)})"
                raise ConfigError(msg)
        eta, pt, factor = (
            np.asarray(columns[k], float) for k in ("eta", "pt_raw", "factor")
        )
        inclusive, _ = median_factor_grid(
            eta, pt, factor, eta_edges=eta_edges, pt_edges=pt_edges, min_jets=min_jets
        )
        inc_node = _multibinning(
            cs, ["JetEta", "JetPt"], [list(eta_edges), list(pt_edges)], inclusive
        )
        inputs = [eta_in, pt_in]
        if per_flavour:
            fl = np.asarray(columns.get("flavour_group", np.full(len(eta), 4)), int)
            content = []
            for i, f in enumerate(FLAVOUR_GROUPS):
                sel = fl == i
                if sel.sum() == 0:
                    continue
                grid, _ = median_factor_grid(
                    eta[sel],
                    pt[sel],
                    factor[sel],
                    eta_edges=eta_edges,
                    pt_edges=pt_edges,
                    min_jets=min_jets,
                )
                content.append(
                    cs.CategoryItem(
                        key=i,
                        value=_multibinning(
                            cs,
                            ["JetEta", "JetPt"],
                            [list(eta_edges), list(pt_edges)],
                            grid,
                        ),
                    )
                )
                logger.info("%s: flavour %s from %d jets", name, f, int(sel.sum()))
            data = cs.Category(
                nodetype="category",
                input="FlavourGroup",
                content=content,
                default=inc_node,
            )
            inputs.append(
                cs.Variable(
                    name="FlavourGroup",
                    type="int",
                    description="flavour group index: 0 uds, 1 c, 2 b, 3 g, 4 unknown (DESIGN.md rule); other values: inclusive",
                )
            )
        else:
            data = inc_node
        desc = (
            f"Median correction factor pT_corr/pT_raw of {method} per (eta, raw pT) bin"
            + (" and flavour group" if per_flavour else "")
            + f" from {len(eta)} jets; multiply the raw pT by it. Bins with < {min_jets} jets take the nearest populated pT bin."
        )
    return cs.Correction(
        name=name,
        version=1,
        description=desc,
        inputs=inputs,
        output=cs.Variable(name="factor", type="real", description="pT_corr / pT_raw"),
        data=data,
    )


def _multibinning(
    cs: Any, inputs: list[str], edges: list[list[float]], grid: np.ndarray
) -> Any:
    return cs.MultiBinning(
        nodetype="multibinning",
        inputs=inputs,
        edges=[[float(e) for e in ed] for ed in edges],
        content=[float(v) for v in np.asarray(grid, float).ravel()],
        flow="clamp",
    )


def _n_eff(h: hist.Hist) -> np.ndarray:
    sl = tuple(
        slice(1 if a.traits.underflow else 0, -1 if a.traits.overflow else None)
        for a in h.axes[:-1]
    )
    v = np.asarray(h.values(flow=True), float)[(*sl, slice(None))].sum(-1)
    w = np.asarray(h.variances(flow=True), float)[(*sl, slice(None))].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w > 0, v * v / w, 0.0)

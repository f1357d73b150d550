"""How the pT of each method is computed from a jet table, and why a method cannot be.

A *method* is one pT estimate compared by the response processor. Built-in methods read a
field of the jet table (:data:`BUILTIN_METHODS`); DNN methods evaluate a corrector (any object
with ``log_correction(table) -> (n_jets,)`` of ln(pT_gen / pT_raw), e.g.
``jec_coffea.corrector.DNNJetCorrector``) on the same table, so every model of one run shares
the single jet-table and feature build of the chunk.

Conventions shared by every method:

* the returned pT is per jet of the table, in GeV, float64, NaN where the method produced no
  value for that jet (counted as *not computed*, never filled as a response of 0);
* a multiplicative regression stored by CMS (``Jet_PNetRegPtRawCorr``,
  ``Jet_UParTAK4RegPtRawCorr``) is *not computed* where the stored factor is <= 0 or not finite
  (NanoAOD writes 0 for jets the regression did not run on);
* a method whose input the file lacks is *skipped* for that file with a reason (from
  ``JetTable.missing`` or the corrector's error), which the run lists in ``run.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import awkward as ak
import numpy as np

from ..errors import JecCoffeaError, MissingBranchError
from ..inference import build_inputs, jet_slices

if TYPE_CHECKING:
    from ..data import JetTable
    from ..standard import JECStack

__all__ = [
    "BUILTIN_METHODS",
    "REGRESSION_METHODS",
    "Estimate",
    "LogCorrector",
    "estimate_models",
    "estimate_pt",
]

logger = logging.getLogger(__name__)

BUILTIN_METHODS: dict[str, str] = {
    "raw": "pt_raw",
    "standard": "pt_raw",
    "nanoaod": "pt_nano",
    "pt_full_corr": "pt_full_corr",
    "pnet": "pnet_reg_corr",
    "upart": "upart_reg_corr",
}
"""Built-in method -> jet-table field it is computed from.

``raw``: pT_raw; ``standard``: pT_raw x the JEC stack factor; ``nanoaod``: Jet_pt as stored;
``pt_full_corr``: ml-jec's per-jet CMS L1L2L3 pT; ``pnet`` / ``upart``: pT_raw x
``Jet_PNetRegPtRawCorr`` / ``Jet_UParTAK4RegPtRawCorr`` (Run-3 NanoAOD; the ``...Neutrino``
variants include neutrinos in the target and are deliberately not used)."""

REGRESSION_METHODS: dict[str, str] = {
    "pnet": "pnet_reg_corr",
    "upart": "upart_reg_corr",
}
"""Built-in methods that multiply pT_raw by a stored per-jet factor."""

_JEC_INPUTS = {"JetA": "area", "Rho": "event_rho", "JetEta": "eta", "JetPt": "pt_raw"}
"""Input name of a JEC stack -> jet-table field."""


class LogCorrector(Protocol):
    """What a DNN method needs: the predicted ln(pT_gen / pT_raw) of every jet of a table."""

    def log_correction(self, table: JetTable) -> np.ndarray:
        """(n_jets,) predicted ln(pT_gen / pT_raw)."""
        ...


@dataclass(frozen=True)
class Estimate:
    """The pT of one method for every jet of a table.

    Attributes
    ----------
    pt
        (n_jets,) float64 [GeV], NaN where not computed; None if the method was skipped.
    reason
        Why the method was skipped for this table (None if it was evaluated).
    not_computed
        Number of jets without a value (stored factor <= 0, non-finite model output).
    """

    pt: np.ndarray | None
    reason: str | None = None
    not_computed: int = 0


def _numpy(jets: ak.Array, field: str) -> np.ndarray:
    return np.asarray(ak.to_numpy(jets[field]), dtype=np.float64)


def _skip(reason: str) -> Estimate:
    return Estimate(pt=None, reason=reason)


def _finish(pt: np.ndarray) -> Estimate:
    bad = ~(np.isfinite(pt) & (pt > 0))
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        pt = np.where(bad, np.nan, pt)
    return Estimate(pt=pt, not_computed=n_bad)


def _standard(table: JetTable, jec: JECStack) -> Estimate:
    jets = table.jets
    for name in jec.signature:
        column = _JEC_INPUTS.get(name)
        if column is None or column not in jets.fields:
            raise MissingBranchError(
                column or name,
                path=table.source,
                available=jets.fields,
                reason=f"the JEC stack {jec.tag} {jec.jet_type} needs input {name}",
            )
    args = {
        column: _numpy(jets, column) if column in jets.fields else None
        for column in _JEC_INPUTS.values()
    }
    factor = jec.factor(args["pt_raw"], args["eta"], args["area"], args["event_rho"])
    return _finish(args["pt_raw"] * np.asarray(factor, dtype=np.float64))


def estimate_models(
    table: JetTable,
    models: Mapping[str, LogCorrector],
    *,
    slice_jets: int | None = None,
) -> dict[str, Estimate]:
    """pT of several DNN methods, with one feature build shared by the applicable models.

    A model that cannot be fed by the table (its spec's ``not_applicable`` gives a reason: a
    constituent type the file lacks, the old PFNano layout's incomplete constituents) is
    skipped with that reason, as is a model refusing the table with a
    :class:`~jec_coffea.errors.JecCoffeaError` (e.g. ``ModelMismatchError``). The others share
    :func:`jec_coffea.inference.build_inputs` when they expose a ``spec``. The jets are taken
    ``slice_jets`` at a time (default :data:`~jec_coffea.inference.DNN_SLICE_JETS`; inputs
    built, every model evaluated, inputs dropped), so the memory of the network inputs does
    not grow with the chunk.

    Returns
    -------
    dict
        Method name -> :class:`Estimate`.
    """
    slices = jet_slices(table, slice_jets)
    out: dict[str, Estimate] = {}
    usable: dict[str, LogCorrector] = {}
    for name, model in models.items():
        spec = getattr(model, "spec", None)
        why = spec.not_applicable(table) if hasattr(spec, "not_applicable") else None
        if why is not None:
            out[name] = _skip(f"model not applicable: {why}")
        else:
            usable[name] = model
    if not usable:
        return {name: out[name] for name in models}
    specs = [getattr(m, "spec", None) for m in usable.values()]
    share = len(usable) > 1 and all(s is not None for s in specs)
    y_all = {name: np.empty(len(table), dtype=np.float64) for name in usable}
    for start, part in slices:
        shared = build_inputs(part, specs) if share and len(part) else None
        for name in list(y_all):
            model = usable[name]
            try:
                if shared is not None:
                    y = model.log_correction(part, inputs=shared)  # type: ignore[call-arg]
                else:
                    y = model.log_correction(part)
            except JecCoffeaError as err:
                logger.info("%s: method %s not applied: %s", table.source, name, err)
                out[name] = _skip(f"{type(err).__name__}: {err}")
                del y_all[name]
                continue
            y = np.asarray(y, dtype=np.float64)
            if y.shape != (len(part),):
                msg = (
                    f"method {name}: the model returned shape {y.shape} for "
                    f"{len(part)} jets"
                )
                raise ValueError(msg)
            y_all[name][start : start + len(part)] = y
        del shared
    pt_raw = _numpy(table.jets, "pt_raw")
    for name, y in y_all.items():
        with np.errstate(over="ignore", invalid="ignore"):
            out[name] = _finish(pt_raw * np.exp(y))
    return {name: out[name] for name in models}


def estimate_pt(
    method: str,
    table: JetTable,
    *,
    jec: JECStack | None = None,
) -> Estimate:
    """pT of ``method`` for every jet of ``table``.

    Parameters
    ----------
    method
        A key of :data:`BUILTIN_METHODS` (DNN methods: :func:`estimate_models`).
    table
        Jet table of one chunk (any layout).
    jec
        JEC stack of the ``standard`` method.

    Returns
    -------
    Estimate
        Per-jet pT [GeV] or the reason the method was skipped.
    """
    field = BUILTIN_METHODS[method]
    jets = table.jets
    if field not in jets.fields:
        return _skip(table.missing.get(field, f"the jet table has no field {field!r}"))
    if method == "standard":
        if jec is None:
            msg = "method 'standard' needs a JEC stack"
            raise ValueError(msg)
        return _standard(table, jec)
    if method in REGRESSION_METHODS:
        return _finish(_numpy(jets, "pt_raw") * _numpy(jets, field))
    return _finish(_numpy(jets, field))

"""coffea processor filling the response histograms of every pT estimate.

For each chunk of events: the jet table is built with
:func:`~jec_coffea.data.jet_table_from_events` (the same code as training), the default jet
selection is applied step by step (:mod:`.selection`), and the response pT / pT_gen of each
method is filled, weighted by genWeight, into fresh histograms of :mod:`jec_coffea.histograms`.

Methods (fixed at construction, so the category axis is identical on every worker):

``raw``
    pT_raw = Jet_pt (1 - Jet_rawFactor).
``standard``
    pT_raw x :meth:`JECStack.factor(pt_raw, eta, area, ρ) <jec_coffea.standard.JECStack.factor>`,
    levels applied sequentially.
``nanoaod``
    Jet_pt as stored in NanoAOD (the JEC of the production); filled where the file has it.
``pt_full_corr``
    ml-jec ntuples' per-jet CMS L1L2L3 pT; filled where the file has it.

A method whose input a file lacks is not filled for that file and counted in
``missing_methods``; a method that cannot be evaluated at all (``standard`` without a stack)
is a configuration error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import awkward as ak
import numpy as np
from coffea import processor

from ..data import detect_layout, jet_table_from_events
from ..data.jet_table import FLAVOUR_GROUPS
from ..errors import ConfigError, MissingBranchError
from ..histograms import (
    PARTON_FLAVOURS,
    CutFlow,
    fill_response,
    parton_flavour_label,
    response_histogram,
    response_vs_eta_histogram,
    response_vs_rho_histogram,
)
from .selection import JetSelection, prompt_lepton_min_dr

if TYPE_CHECKING:
    from ..standard import JECStack

__all__ = ["KNOWN_METHODS", "VIEWS", "ResponseProcessor"]

logger = logging.getLogger(__name__)

KNOWN_METHODS: dict[str, str] = {
    "raw": "pt_raw",
    "standard": "pt_raw",
    "nanoaod": "pt_nano",
    "pt_full_corr": "pt_full_corr",
}
"""Method name -> jet-table field it is computed from."""

VIEWS: tuple[str, ...] = ("flavour6", "rho", "eta")
"""Optional extra histograms: u/d/s/c/b/g response (for S_6), response vs ρ, vs fine signed η."""

_JEC_INPUTS = {"JetA": "area", "Rho": "event_rho", "JetEta": "eta", "JetPt": "pt_raw"}


class ResponseProcessor(processor.ProcessorABC):
    """Response histograms of raw, standard-corrected and stored pT, per flavour, |η| and pT_gen.

    The processor holds configuration only (no histograms, no open files); every call of
    :meth:`process` builds fresh histograms, so it is safe with any executor.

    Parameters
    ----------
    jec
        Standard correction applied for the ``standard`` method (picklable; evaluators are
        rebuilt on the workers).
    methods
        Methods to fill, from :data:`KNOWN_METHODS`. Default: ``raw``, ``standard`` (if
        ``jec`` is given), ``nanoaod`` and ``pt_full_corr``.
    layout
        Layout name of the input files; default: detected per file from
        ``events.metadata["filename"]``.
    selection
        Cuts of the default jet selection.
    views
        Extra histograms to fill, from :data:`VIEWS` (each adds memory per chunk: ~25 MB for
        four methods).
    puppi_weighted
        Passed to the jet-table builder (PUPPI jets).

    Output
    ------
    dict with ``response`` (main histogram), ``response_flavour6``, ``response_vs_rho``,
    ``response_vs_eta`` (the chosen views; the ρ view only where the layout has ρ), ``cutflow`` (:class:`~jec_coffea.histograms.CutFlow`),
    ``n_events``, ``n_jets`` (selected jets filled per method), ``missing_methods`` and
    ``not_applied`` (chunks in which a method or a selection step could not be applied) and
    ``layouts`` (chunks per layout).
    """

    def __init__(
        self,
        *,
        jec: JECStack | None = None,
        methods: Sequence[str] | None = None,
        layout: str | None = None,
        selection: JetSelection | None = None,
        views: Sequence[str] = VIEWS,
        puppi_weighted: bool = False,
    ) -> None:
        if methods is None:
            methods = [m for m in KNOWN_METHODS if m != "standard" or jec is not None]
        methods = list(methods)
        unknown = [m for m in methods if m not in KNOWN_METHODS]
        if unknown or not methods:
            msg = f"ResponseProcessor: unknown method(s) {unknown} in {methods}; known: {list(KNOWN_METHODS)}"
            raise ConfigError(msg)
        if "standard" in methods and jec is None:
            msg = "ResponseProcessor: method 'standard' needs a JEC stack (jec=JECStack.from_spec(...))"
            raise ConfigError(msg)
        bad_views = [v for v in views if v not in VIEWS]
        if bad_views:
            msg = (
                f"ResponseProcessor: unknown view(s) {bad_views}; known: {list(VIEWS)}"
            )
            raise ConfigError(msg)
        self.jec = jec
        self.methods = tuple(methods)
        self.layout = layout
        self.selection = selection or JetSelection()
        self.views = tuple(views)
        self.puppi_weighted = puppi_weighted

    def empty_output(self) -> dict[str, Any]:
        """The output of a chunk without jets: fresh histograms and zero counts."""
        out: dict[str, Any] = {"response": response_histogram(self.methods)}
        if "flavour6" in self.views:
            out["response_flavour6"] = response_histogram(
                self.methods, flavours=PARTON_FLAVOURS
            )
        if "rho" in self.views:
            out["response_vs_rho"] = response_vs_rho_histogram(self.methods)
        if "eta" in self.views:
            out["response_vs_eta"] = response_vs_eta_histogram(self.methods)
        out["cutflow"] = CutFlow()
        out["n_events"] = 0
        out["n_jets"] = dict.fromkeys(self.methods, 0)
        out["missing_methods"] = dict.fromkeys(self.methods, 0)
        out["not_applied"] = dict.fromkeys(self.selection.steps[4:], 0)
        out["layouts"] = {}
        return out

    def process(self, events: ak.Array) -> dict[str, Any]:
        """Fill the histograms for one chunk of NanoEvents (eager)."""
        filename = (
            str(events.metadata.get("filename", ""))
            if hasattr(events, "metadata")
            else ""
        )
        layout = self.layout
        if layout is None:
            if not filename:
                msg = (
                    "ResponseProcessor: the events carry no metadata['filename'] to detect the "
                    "layout from; pass layout= (e.g. 'pfnano', 'nanoaod', 'mljec')"
                )
                raise ConfigError(msg)
            layout = detect_layout(filename)
        table = jet_table_from_events(
            events, layout=layout, source=filename, puppi_weighted=self.puppi_weighted
        )
        jets = table.jets
        filename = filename or table.source
        out = self.empty_output()
        out["n_events"] = len(events)
        out["layouts"] = {layout: 1}
        lepton_dr = None
        if len(jets) and "eta" in jets.fields and "phi" in jets.fields:
            lepton_dr = prompt_lepton_min_dr(
                events,
                ak.to_numpy(jets.eta),
                ak.to_numpy(jets.phi),
                min_pt=self.selection.lepton_min_pt,
            )
        mask, not_applied = self.selection.apply(
            jets, lepton_dr=lepton_dr, cutflow=out["cutflow"]
        )
        out["not_applied"] = not_applied
        for method in self.methods:
            if KNOWN_METHODS[method] not in jets.fields:
                out["missing_methods"][method] = 1
        sel = jets[mask]
        if not len(sel):
            return out
        pt_gen = ak.to_numpy(sel.pt_gen)
        eta_gen = ak.to_numpy(sel.eta_gen)
        weight = ak.to_numpy(sel.gen_weight) if "gen_weight" in sel.fields else None
        flavour = (
            ak.to_numpy(sel.flavour_group)
            if "flavour_group" in sel.fields
            else np.full(len(sel), FLAVOUR_GROUPS.index("unknown"))
        )
        flavour6 = None
        if "hadron_flavour" in sel.fields and "parton_flavour" in sel.fields:
            flavour6 = parton_flavour_label(sel.hadron_flavour, sel.parton_flavour)
        rho = ak.to_numpy(sel.event_rho) if "event_rho" in sel.fields else None
        for method in self.methods:
            pt = self._estimate(method, sel, filename)
            if pt is None:
                continue
            common = {"pt": pt, "pt_gen": pt_gen, "eta_gen": eta_gen, "weight": weight}
            fill_response(out["response"], method, flavour=flavour, **common)
            if "response_flavour6" in out and flavour6 is not None:
                fill_response(
                    out["response_flavour6"], method, flavour=flavour6, **common
                )
            if "response_vs_rho" in out and rho is not None:
                fill_response(out["response_vs_rho"], method, event_rho=rho, **common)
            if "response_vs_eta" in out:
                fill_response(out["response_vs_eta"], method, **common)
            out["n_jets"][method] = len(sel)
        logger.debug(
            "%s: %d events, %d of %d jets selected",
            filename,
            len(events),
            len(sel),
            len(jets),
        )
        return out

    def _estimate(
        self, method: str, jets: ak.Array, filename: str
    ) -> np.ndarray | None:
        """pT of ``method`` for the selected jets [GeV], or None if the file lacks its input."""
        field = KNOWN_METHODS[method]
        if field not in jets.fields:
            return None
        pt = ak.to_numpy(jets[field]).astype(np.float64)
        if method != "standard":
            return pt
        assert self.jec is not None  # checked in __init__
        for name in self.jec.signature:
            column = _JEC_INPUTS.get(name)
            if column is None or column not in jets.fields:
                raise MissingBranchError(
                    column or name,
                    path=filename,
                    available=jets.fields,
                    reason=f"the JEC stack {self.jec.tag} {self.jec.jet_type} needs input {name}",
                )
        args = {
            column: ak.to_numpy(jets[column]).astype(np.float64)
            if column in jets.fields
            else None
            for column in _JEC_INPUTS.values()
        }
        factor = self.jec.factor(
            args["pt_raw"], args["eta"], args["area"], args["event_rho"]
        )
        return pt * np.asarray(factor, dtype=np.float64)

    def postprocess(self, accumulator: dict[str, Any]) -> dict[str, Any]:
        """Nothing to finalise: histograms and counts are already merged by coffea."""
        return accumulator

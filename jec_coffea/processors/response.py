"""coffea processor filling the response histograms of every pT estimate.

For each chunk of events: the jet table is built with
:func:`~jec_coffea.data.jet_table_from_events` (the same code as training), the jets of the
requested split are kept (:mod:`jec_coffea.data.split`, per jet, so a run on the test split
never sees a training jet), the pT of every method is computed once per jet
(:mod:`.methods`), and

* on simulation, the default jet selection is applied step by step (:mod:`.selection`) and the
  response pT / pT_gen of each method is filled, weighted by genWeight, into fresh histograms
  of :mod:`jec_coffea.histograms`;
* on simulation and collision data alike, the corrected pT, the correction factor and the
  jet-level input distributions are filled (:mod:`.reco`), so data and simulation can be
  compared. Collision data (no GenJet collection) fills only these; no gen-based histogram is
  attempted.

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
``pnet``, ``upart``
    pT_raw x ``Jet_PNetRegPtRawCorr`` / ``Jet_UParTAK4RegPtRawCorr`` (Run-3 NanoAOD); stored
    factors <= 0 mean "not computed": those jets are excluded and counted, never R = 0.
any other name
    A DNN model given in ``models`` (``DNNJetCorrector`` or anything with
    ``log_correction(table)``): pT_raw x exp(predicted ln(pT_gen / pT_raw)).

A method whose input a file lacks (no ``Jet_PNetRegPtRawCorr``, a constituent model on plain
NanoAOD or on the old PFNano layout, no JetSVs) is skipped for that file, counted in
``missing_methods`` and listed with its reason in ``skipped_methods``; the other methods are
filled and the run succeeds. A method that cannot be evaluated at all (``standard`` without a
stack) is a configuration error.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import awkward as ak
import numpy as np
from coffea import processor

from ..data import detect_layout, jet_table_from_events
from ..data.jet_table import FLAVOUR_GROUPS
from ..data.split import SPLITS, split_of
from ..errors import ConfigError
from ..histograms import (
    PARTON_FLAVOURS,
    CutFlow,
    fill_response,
    parton_flavour_label,
    response_histogram,
    response_vs_eta_histogram,
    response_vs_rho_histogram,
)
from .methods import BUILTIN_METHODS, estimate_models, estimate_pt
from .reco import (
    corrected_pt_histogram,
    correction_factor_histogram,
    fill_inputs,
    fill_reco,
    input_histograms,
)
from .selection import JetSelection, prompt_lepton_min_dr

if TYPE_CHECKING:
    from ..data import JetTable
    from ..standard import JECStack

__all__ = ["DEFAULT_METHODS", "KNOWN_METHODS", "VIEWS", "ResponseProcessor"]

logger = logging.getLogger(__name__)

KNOWN_METHODS: dict[str, str] = BUILTIN_METHODS
"""Built-in method name -> jet-table field it is computed from (DNN methods come on top)."""

DEFAULT_METHODS: tuple[str, ...] = ("raw", "standard", "nanoaod", "pt_full_corr")
"""Methods filled when none are named (``standard`` only with a JEC stack)."""

VIEWS: tuple[str, ...] = ("flavour6", "rho", "eta")
"""Optional extra histograms: u/d/s/c/b/g response (for S_6), response vs ρ, vs fine signed η."""

SPLIT_CHOICES: tuple[str, ...] = (*SPLITS, "all")


class ResponseProcessor(processor.ProcessorABC):
    """Response histograms of every pT estimate per flavour, |η| and pT_gen; reco views.

    The processor holds configuration only (no histograms, no open files); every call of
    :meth:`process` builds fresh histograms, so it is safe with any executor. DNN correctors
    must be picklable and create their inference sessions lazily on the worker.

    Parameters
    ----------
    jec
        Standard correction applied for the ``standard`` method (picklable; evaluators are
        rebuilt on the workers).
    methods
        Methods to fill, from :data:`KNOWN_METHODS` and the names of ``models``. Default:
        :data:`DEFAULT_METHODS` (``standard`` only with ``jec``) plus every model.
    models
        DNN methods: name -> corrector with ``log_correction(table) -> (n_jets,)`` of
        ln(pT_gen / pT_raw). Several models share the chunk's jet table.
    layout
        Layout name of the input files; default: detected per file from
        ``events.metadata["filename"]``, else from the branch names.
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"``: only jets of this split (DESIGN.md
        hash rule, :func:`jec_coffea.data.split.split_of`) are used.
    selection
        Cuts of the default jet selection.
    views
        Extra histograms to fill, from :data:`VIEWS` (each adds memory per chunk: ~25 MB for
        four methods).
    puppi_weighted
        Passed to the jet-table builder (PUPPI jets).
    weights
        ``"gen"`` (default, DESIGN.md): fill with genWeight; ``"unit"``: count each jet once.
        Use ``"unit"`` on pT-hat-biased samples (the simulated one: bias weights span about
        eight orders of magnitude, so within a narrow pT_gen bin a handful of jets would carry
        the whole weight and N_eff collapses); the response in a pT_gen bin is then that of
        the jets generated in it, as CMS's MC-truth derivations on flat samples use it.
    columns_dir
        If set, every chunk writes the per-jet fill columns of its selected jets as one parquet
        file under this directory (see :func:`jec_coffea.outputs.write_chunk_columns`); must be
        reachable from the workers.
    reco_views
        ``True`` (default): every method is evaluated on every jet of the split and the reco
        views (``corrected_pt``, ``correction_factor``, ``inputs``) are filled. ``False``: on
        simulation, methods are evaluated only on the jets that pass the response selection
        and only the gen-based histograms are filled (the reco views stay empty). On a
        simulated sample about one reco jet in twenty is gen-matched above 20 GeV, so this
        cuts the inference cost of constituent models by that factor for calibration studies
        that need only the response. Collision data (no gen) always fill the reco views.

    Output
    ------
    dict with ``response`` (main histogram), ``response_flavour6``, ``response_vs_rho``,
    ``response_vs_eta`` (the chosen views), ``corrected_pt``, ``correction_factor`` and
    ``inputs`` (reco views, :mod:`.reco`), ``cutflow`` (:class:`~jec_coffea.histograms.CutFlow`),
    ``n_events``, ``n_jets`` (selected jets filled per method), ``n_reco_jets`` (jets filled in
    the reco views per method), ``missing_methods`` (chunks in which a method was skipped),
    ``skipped_methods`` (method -> reason -> file -> chunks), ``not_computed`` (method -> jets without
    a value), ``not_applied`` (chunks in which a selection step could not be applied),
    ``layouts`` (chunks per layout) and ``truth`` (chunks of ``simulation`` and of ``data``).
    """

    def __init__(
        self,
        *,
        jec: JECStack | None = None,
        methods: Sequence[str] | None = None,
        models: Mapping[str, Any] | None = None,
        layout: str | None = None,
        split: str = "all",
        selection: JetSelection | None = None,
        views: Sequence[str] = VIEWS,
        puppi_weighted: bool = False,
        weights: str = "gen",
        columns_dir: str | os.PathLike | None = None,
        reco_views: bool = True,
    ) -> None:
        models = dict(models or {})
        clash = sorted(set(models) & set(KNOWN_METHODS))
        if clash:
            msg = f"ResponseProcessor: model name(s) {clash} clash with built-in methods; rename the model(s)"
            raise ConfigError(msg)
        if methods is None:
            methods = [
                m for m in DEFAULT_METHODS if m != "standard" or jec is not None
            ] + list(models)
        methods = list(methods)
        known = [*KNOWN_METHODS, *models]
        unknown = [m for m in methods if m not in known]
        if unknown or not methods:
            msg = f"ResponseProcessor: unknown method(s) {unknown} in {methods}; known: {known}"
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
        if split not in SPLIT_CHOICES:
            msg = f"ResponseProcessor: unknown split {split!r}; expected one of {', '.join(SPLIT_CHOICES)}"
            raise ConfigError(msg)
        if weights not in ("gen", "unit"):
            msg = f"ResponseProcessor: weights={weights!r}; expected 'gen' or 'unit'"
            raise ConfigError(msg)
        self.weights = weights
        self.jec = jec
        self.methods = tuple(methods)
        self.models = {m: models[m] for m in self.methods if m in models}
        self.layout = layout
        self.split = split
        self.selection = selection or JetSelection()
        self.views = tuple(views)
        self.puppi_weighted = puppi_weighted
        self.columns_dir = None if columns_dir is None else str(columns_dir)
        self.reco_views = bool(reco_views)

    def fingerprint(self) -> dict[str, Any]:
        """JSON-ready description of everything that changes the output of a chunk.

        Used to key checkpoints, so a resumed run never mixes chunks of another configuration.
        """
        jec = None
        if self.jec is not None:
            jec = f"{self.jec.tag}:{self.jec.jet_type}:{','.join(self.jec.levels)}"
        return {
            "methods": list(self.methods),
            "models": {m: _model_id(model) for m, model in self.models.items()},
            "jec": jec,
            "layout": self.layout,
            "split": self.split,
            "selection": self.selection.model_dump(),
            "views": list(self.views),
            "puppi_weighted": self.puppi_weighted,
            "weights": self.weights,
            "reco_views": self.reco_views,
        }

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
        out["corrected_pt"] = corrected_pt_histogram(self.methods)
        out["correction_factor"] = correction_factor_histogram(self.methods)
        out["inputs"] = input_histograms()
        out["cutflow"] = CutFlow()
        out["n_events"] = 0
        out["n_jets"] = dict.fromkeys(self.methods, 0)
        out["n_reco_jets"] = dict.fromkeys(self.methods, 0)
        out["missing_methods"] = dict.fromkeys(self.methods, 0)
        out["skipped_methods"] = {}
        out["not_computed"] = dict.fromkeys(self.methods, 0)
        out["not_applied"] = dict.fromkeys(self.selection.steps[4:], 0)
        out["layouts"] = {}
        out["truth"] = {"simulation": 0, "data": 0}
        return out

    def _layout_of(self, events: ak.Array, filename: str) -> str | None:
        if self.layout is not None:
            return self.layout
        if filename:
            return detect_layout(filename)
        if hasattr(events, "metadata"):
            return None  # NanoEvents without file name (dask-awkward): detect from branches
        msg = (
            "ResponseProcessor: the events carry no metadata['filename'] to detect the "
            "layout from; pass layout= (e.g. 'pfnano', 'nanoaod', 'mljec')"
        )
        raise ConfigError(msg)

    def _split_mask(self, table: JetTable) -> np.ndarray | None:
        """Jets of the requested split (None for ``split="all"``)."""
        if self.split == "all":
            return None
        sha = None
        if "event" not in table.jets.fields:
            sha = _file_sha256(table.source)
        return split_of(table, file_sha256=sha) == self.split

    def process(self, events: ak.Array) -> dict[str, Any]:
        """Fill the histograms for one chunk of NanoEvents.

        Eager or virtual NanoEvents (``processor.Runner``) give the output dict; dask-awkward
        NanoEvents (``coffea.dataset_tools.apply_to_fileset``) give a lazy object whose
        ``dask.compute`` is the same dict (:mod:`._dask`: each partition goes through this
        same method, reading only the needed columns).
        """
        from ._dask import is_dask_awkward, process_dask

        if is_dask_awkward(events):
            return process_dask(self, events)
        metadata = getattr(events, "metadata", None)
        metadata = metadata if isinstance(metadata, dict) else {}
        filename = str(metadata.get("filename", "") or "")
        layout = self._layout_of(events, filename)
        table = jet_table_from_events(
            events, layout=layout, source=filename, puppi_weighted=self.puppi_weighted
        )
        n_all = len(table)
        lepton_dr = self._lepton_dr(events, table.jets)
        split = self._split_mask(table)
        if split is not None:
            table = replace(table, jets=table.jets[split])
            lepton_dr = None if lepton_dr is None else lepton_dr[split]
        jets = table.jets
        out = self.empty_output()
        out["n_events"] = len(events)
        out["layouts"] = {table.layout: 1}
        simulation = "pt_gen" in jets.fields
        out["truth"]["simulation" if simulation else "data"] = 1
        mask = np.zeros(len(jets), dtype=bool)
        if simulation:
            mask, out["not_applied"] = self.selection.apply(
                jets, lepton_dr=lepton_dr, cutflow=out["cutflow"]
            )
        reco_views = self.reco_views or not simulation
        if not reco_views:
            # evaluate the methods on the selected jets only (see ``reco_views``)
            table = replace(table, jets=jets[mask])
            jets = table.jets
            mask = np.ones(len(jets), dtype=bool)
        estimates: dict[str, np.ndarray] = {}
        results = estimate_models(table, self.models)
        for method in self.methods:
            est = results.get(method) or estimate_pt(method, table, jec=self.jec)
            if est.pt is None:
                out["missing_methods"][method] = 1
                where = filename or table.source or "<events>"
                out["skipped_methods"][method] = {str(est.reason): {where: 1}}
                continue
            estimates[method] = est.pt
            out["not_computed"][method] = est.not_computed
        weight = (
            np.asarray(ak.to_numpy(jets.gen_weight), dtype=np.float64)
            if "gen_weight" in jets.fields and self.weights == "gen"
            else np.ones(len(jets))
        )
        if reco_views:
            self._fill_reco(out, jets, estimates, weight)
        if simulation:
            self._fill_response(out, jets, estimates, weight, mask)
        if self.columns_dir is not None:
            from ..outputs import write_chunk_columns

            write_chunk_columns(
                self.columns_dir, metadata, jets, mask, estimates, table.layout
            )
        logger.debug(
            "%s: %d events, %d of %d jets in split %s, %d selected",
            filename or table.source,
            len(events),
            len(jets),
            n_all,
            self.split,
            int(mask.sum()),
        )
        return out

    def _lepton_dr(self, events: ak.Array, jets: ak.Array) -> np.ndarray | None:
        """ΔR to the nearest prompt generator lepton of every jet (None without GenPart)."""
        if not len(jets) or "eta" not in jets.fields or "phi" not in jets.fields:
            return None
        return prompt_lepton_min_dr(
            events,
            ak.to_numpy(jets.eta),
            ak.to_numpy(jets.phi),
            min_pt=self.selection.lepton_min_pt,
        )

    def _fill_reco(
        self,
        out: dict[str, Any],
        jets: ak.Array,
        estimates: dict[str, np.ndarray],
        weight: np.ndarray,
    ) -> None:
        """Reco views for jets passing the jet ID (where the file has it)."""
        reco = np.ones(len(jets), dtype=bool)
        if "jet_id" in jets.fields and self.selection.jet_id_mask:
            jet_id = np.asarray(ak.to_numpy(jets.jet_id)).astype(np.int64)
            reco = (jet_id & self.selection.jet_id_mask) == self.selection.jet_id_mask
        fill_inputs(out["inputs"], jets[reco], weight[reco])
        pt_raw = np.asarray(ak.to_numpy(jets.pt_raw), dtype=np.float64)[reco]
        eta = np.asarray(ak.to_numpy(jets.eta), dtype=np.float64)[reco]
        for method, pt in estimates.items():
            fill_reco(
                out["corrected_pt"],
                out["correction_factor"],
                method,
                pt=pt[reco],
                pt_raw=pt_raw,
                eta=eta,
                weight=weight[reco],
            )
            out["n_reco_jets"][method] = int(np.count_nonzero(np.isfinite(pt[reco])))

    def _fill_response(
        self,
        out: dict[str, Any],
        jets: ak.Array,
        estimates: dict[str, np.ndarray],
        weight: np.ndarray,
        mask: np.ndarray,
    ) -> None:
        """The gen-based response histograms of the jets in ``mask`` (the selection)."""
        if not mask.any():
            return
        sel = jets[mask]
        pt_gen = ak.to_numpy(sel.pt_gen)
        eta_gen = ak.to_numpy(sel.eta_gen)
        w = weight[mask]
        flavour = (
            ak.to_numpy(sel.flavour_group)
            if "flavour_group" in sel.fields
            else np.full(len(sel), FLAVOUR_GROUPS.index("unknown"))
        )
        flavour6 = None
        if "hadron_flavour" in sel.fields and "parton_flavour" in sel.fields:
            flavour6 = parton_flavour_label(sel.hadron_flavour, sel.parton_flavour)
        rho = ak.to_numpy(sel.event_rho) if "event_rho" in sel.fields else None
        for method, pt_all in estimates.items():
            pt = pt_all[mask]
            common = {"pt": pt, "pt_gen": pt_gen, "eta_gen": eta_gen, "weight": w}
            fill_response(out["response"], method, flavour=flavour, **common)
            if "response_flavour6" in out and flavour6 is not None:
                fill_response(
                    out["response_flavour6"], method, flavour=flavour6, **common
                )
            if "response_vs_rho" in out and rho is not None:
                fill_response(out["response_vs_rho"], method, event_rho=rho, **common)
            if "response_vs_eta" in out:
                fill_response(out["response_vs_eta"], method, **common)
            out["n_jets"][method] = int(np.count_nonzero(np.isfinite(pt)))

    def postprocess(self, accumulator: dict[str, Any]) -> dict[str, Any]:
        """Nothing to finalise: histograms and counts are already merged by coffea."""
        return accumulator


def _model_id(model: Any) -> str:
    """Content identity of a DNN method's model: its source and a digest of its weights."""
    token = getattr(model, "__dask_tokenize__", None)
    inner = getattr(model, "model", None)
    source = str(getattr(inner, "source", "") or type(model).__qualname__)
    if token is None:
        return source
    digest = hashlib.sha256(repr(token()).encode()).hexdigest()[:16]
    return f"{source}#{digest}"


def _file_sha256(path: str) -> str:
    """sha256 of a file, remembered per (path, size, mtime): split keys of per-jet layouts."""
    local = Path(str(path).removeprefix("file://"))
    if local.is_file():
        stat = local.stat()
        return _sha_cached(str(local), stat.st_size, stat.st_mtime_ns)
    from ..data.dataset import file_sha256

    return file_sha256(path)


@functools.lru_cache(maxsize=64)
def _sha_cached(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only
    from ..data.dataset import file_sha256

    return file_sha256(path)

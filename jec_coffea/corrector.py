"""The analysis-facing DNN jet-energy correction: ``DNNJetCorrector``.

An analysis calls ``DNNJetCorrector.from_onnx(path)`` (or ``.from_shipped("deepsets")``) once
and ``corrector.apply(events)`` in its processor. The jets come back with

``pt_raw``, ``mass_raw``
    raw kinematics, Jet_pt (1 - Jet_rawFactor) and likewise the mass [GeV];
``dnn_factor``
    exp(ŷ), ŷ the predicted ln(pT_gen / pT_raw);
``pt_dnn``, ``mass_dnn``
    the raw four-momentum scaled by ``dnn_factor`` [GeV];
``dnn_valid``
    False where the jet lies outside the model's validity range (metadata: pT_raw, η), the
    jets are of another type than the model's (PUPPI jets and a CHS model, or other R), or
    the network gave a non-finite value (replaced by factor 1).

The features are computed by the training code (``jet_table_from_events`` ->
:mod:`jec_coffea.features` -> ``to_tensors``), so the network sees what it saw in training.
The same call works on eager NanoEvents, on the virtual arrays of ``processor.Runner`` and on
dask-awkward events (``NanoEventsFactory.from_root(..., mode="dask")``,
``coffea.dataset_tools.apply_to_fileset``), where it becomes one ``map_partitions`` whose meta
comes from running the same code on zero-length arrays of the typetracer (so exactly the
branches the jet-table builder reads are loaded).

Several models on the same jets: :func:`apply_correctors` builds the jet table and the union of
their features once (:func:`~jec_coffea.inference.build_inputs`); a processor that already
holds the jet table calls ``corrector.log_correction(table, inputs=shared)`` per model.

A model that cannot be fed is refused with :class:`~jec_coffea.errors.ModelMismatchError`
before any event is evaluated: at construction against the feature registry (unknown feature,
other FEATURE_VERSION) and per file against its layout (a constituent type the file lacks;
the old PFNano layout's incomplete constituents for a constituent model).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import awkward as ak
import numpy as np

from .data import LAYOUT_NAMES, JetTable, detect_layout, jet_table_from_events
from .data._build import build_jet_table
from .data._layouts import LAYOUTS, Layout
from .data._source import NanoEventsSource
from .errors import ConfigError, ModelMismatchError
from .features import to_tensors
from .inference import (
    DEFAULT_BATCH_SIZE,
    OnnxModel,
    SharedInputs,
    build_inputs,
    jet_slices,
)
from .shipped import shipped_path

__all__ = ["DNNJetCorrector", "apply_correctors"]

log = logging.getLogger(__name__)


def _is_puppi(jet_type: str) -> bool:
    return "puppi" in jet_type.lower()


class DNNJetCorrector:
    """Apply an exported calibration network to the jets of an analysis.

    Parameters
    ----------
    model
        The wrapped ONNX model (:class:`~jec_coffea.inference.OnnxModel`).
    jet_type
        Type of the jets it will be applied to (``"AK4PFchs"``, ``"AK4PFPuppi"``, ...).
        Default: the model's own (from its metadata). PUPPI jets get PUPPI-weighted
        constituents; jets of a type other than the model's are flagged ``dnn_valid`` False.
    layout
        Layout of the input files (:data:`~jec_coffea.data.LAYOUT_NAMES`); default: detected
        per chunk from the branch names.
    prefix
        Name stem of the output fields (``pt_<prefix>``, ``mass_<prefix>``,
        ``<prefix>_factor``, ``<prefix>_valid``); default ``"dnn"``. Give each model its own
        when several are applied to the same jets.

    Raises
    ------
    ModelMismatchError
        (from the model) unknown feature names or another FEATURE_VERSION.
    ConfigError
        Unknown layout name.
    """

    def __init__(
        self,
        model: OnnxModel,
        *,
        jet_type: str | None = None,
        layout: str | None = None,
        prefix: str = "dnn",
    ) -> None:
        if layout is not None and layout not in LAYOUT_NAMES:
            msg = f"DNNJetCorrector: unknown layout {layout!r}; expected one of {', '.join(LAYOUT_NAMES)}"
            raise ConfigError(msg)
        if not prefix.isidentifier():
            msg = f"DNNJetCorrector: prefix {prefix!r} is not a valid field name"
            raise ConfigError(msg)
        self.model = model
        self.model_jet_type = str(model.metadata.get("jet_type", "AK4PFchs"))
        self.model_jet_radius = float(model.metadata.get("jet_radius", 0.4))
        self.jet_type = jet_type or self.model_jet_type
        self.layout = layout
        self.prefix = prefix
        self.validity = _validity(model.metadata.get("validity"), model.source)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_onnx(
        cls,
        path: str | os.PathLike[str],
        *,
        intra_op_threads: int = 1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        bucket: bool | None = None,
        **kwargs: Any,
    ) -> DNNJetCorrector:
        """Corrector of an ONNX file written by :func:`jec_coffea.export.export_onnx`.

        ``intra_op_threads``, ``batch_size`` and ``bucket`` configure the onnxruntime wrapper
        (:class:`~jec_coffea.inference.OnnxModel`); other keywords go to the constructor.
        """
        model = OnnxModel(
            path,
            intra_op_threads=intra_op_threads,
            batch_size=batch_size,
            bucket=bucket,
        )
        return cls(model, **kwargs)

    @classmethod
    def from_shipped(cls, name: str, **kwargs: Any) -> DNNJetCorrector:
        """Corrector of a model shipped with the package (``"deepsets"``, ``"particlenet"``,
        ``"mlp_nanoaod"``); see :mod:`jec_coffea.shipped`."""
        return cls.from_onnx(shipped_path(name), **kwargs)

    # ----------------------------------------------------------------- description
    @property
    def spec(self):
        """The :class:`~jec_coffea.features.FeatureSpec` of the model's inputs."""
        return self.model.spec

    @property
    def metadata(self) -> dict[str, Any]:
        """The model's jec-coffea metadata (ONNX ``metadata_props``)."""
        return self.model.metadata

    @property
    def puppi_weighted(self) -> bool:
        """True if the jets are PUPPI jets (constituents weighted by puppiWeight)."""
        return _is_puppi(self.jet_type)

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the fields :meth:`apply` adds."""
        p = self.prefix
        return (
            "pt_raw",
            "mass_raw",
            f"{p}_factor",
            f"pt_{p}",
            f"mass_{p}",
            f"{p}_valid",
        )

    def __repr__(self) -> str:
        arch = self.metadata.get("architecture", "?")
        return (
            f"DNNJetCorrector({arch} from {self.model.source}, inputs "
            f"{self.model.input_names}, jets {self.jet_type})"
        )

    # ----------------------------------------------------------------- applicability
    def check_layout(
        self, layout: str | Layout, available: Iterable[str] | None = None
    ) -> None:
        """Refuse a file layout the model cannot be fed from, before reading any jet.

        Parameters
        ----------
        layout
            Layout name (or :class:`Layout`).
        available
            Branch names of the file; used to tell whether each constituent collection is
            present. None: judged from the layout tables alone.

        Raises
        ------
        ModelMismatchError
            A constituent type the model needs is not stored by the file (e.g. no JetSVs, or
            plain NanoAOD), or the layout stores only part of each jet's constituents (old
            PFNano) and the model reads constituents.
        """
        lay = LAYOUTS[layout] if isinstance(layout, str) else layout
        needed = list(self.spec.constituents)
        if not needed:
            return
        have: set[str] = set()
        for source in lay.constituents.values():
            if available is None or source.present(available):
                have.update(source.types)
        lacking = [t for t in needed if t not in have]
        if lacking:
            msg = (
                f"{self.model.source}: the model reads constituent type(s) {lacking}, which "
                f"the {lay.name!r} input does not store (it has {sorted(have) or 'none'}); "
                "apply a jet-level model (e.g. mlp_nanoaod) to these files"
            )
            raise ModelMismatchError(msg)
        if not lay.constituents_complete:
            msg = (
                f"{self.model.source}: the {lay.name!r} layout stores only part of each jet's "
                "constituents (old PFNano: puppiWeight > 0 only), the model was trained on "
                "complete ones; apply a jet-level model to these files"
            )
            raise ModelMismatchError(msg)

    def check_file(self, path: str | os.PathLike[str]) -> str:
        """Detect the layout of a ROOT file and :meth:`check_layout` it; returns the layout.

        Lets a job refuse a fileset before submitting any work.
        """
        from .data import layout_branches

        path = os.fspath(path)
        layout = self.layout or detect_layout(path)
        available = layout_branches(path, layout=layout)
        try:
            self.check_layout(layout, available)
        except ModelMismatchError as err:
            msg = f"{path}: {err}"
            raise ModelMismatchError(msg) from err
        return layout

    def flags(self, jets: JetTable | ak.Array, *, warn: bool = True) -> np.ndarray:
        """``dnn_valid`` per jet: inside the validity range and jets of the model's type.

        The validity range applies to the raw pT [GeV] and to η (a range starting at ≥ 0 is a
        range of |η|). Warns (``UserWarning``) with the counts when jets are flagged.
        """
        array = jets.jets if isinstance(jets, JetTable) else jets
        n = len(array)
        valid = np.ones(n, dtype=bool)
        if not n:
            return valid
        reasons: list[str] = []
        pt_range = self.validity.get("pt")
        if pt_range is not None and "pt_raw" in array.fields:
            pt = ak.to_numpy(array.pt_raw)
            out = ~((pt >= pt_range[0]) & (pt <= pt_range[1]))
            if out.any():
                reasons.append(f"{int(out.sum())} with raw pT outside {pt_range} GeV")
            valid &= ~out
        eta_range = self.validity.get("eta")
        if eta_range is not None and "eta" in array.fields:
            eta = ak.to_numpy(array.eta)
            eta = np.abs(eta) if eta_range[0] >= 0 else eta
            what = "|eta|" if eta_range[0] >= 0 else "eta"
            out = ~((eta >= eta_range[0]) & (eta <= eta_range[1]))
            if out.any():
                reasons.append(f"{int(out.sum())} with {what} outside {eta_range}")
            valid &= ~out
        mismatch = self._jet_type_mismatch(jets)
        if mismatch:
            reasons.append(f"all {n}: {mismatch}")
            valid[:] = False
        if reasons and warn:
            warnings.warn(
                f"{self.model.source}: {int((~valid).sum())} of {n} jets outside the model's "
                f"validity ({'; '.join(reasons)}); they get a finite correction and "
                f"{self.prefix}_valid = False",
                UserWarning,
                stacklevel=3,
            )
        return valid

    def _jet_type_mismatch(self, jets: JetTable | ak.Array) -> str:
        if _is_puppi(self.jet_type) != _is_puppi(self.model_jet_type):
            return f"{self.jet_type} jets, the model is for {self.model_jet_type} jets"
        radius = jets.jet_radius if isinstance(jets, JetTable) else None
        if radius is not None and abs(radius - self.model_jet_radius) > 1e-6:
            return f"jets of R = {radius}, the model is for R = {self.model_jet_radius}"
        return ""

    # ----------------------------------------------------------------- evaluation
    def log_correction(
        self, jets: JetTable | ak.Array, *, inputs: SharedInputs | None = None
    ) -> np.ndarray:
        """Predicted ln(pT_gen / pT_raw) per jet, float64 (N,), finite everywhere.

        Parameters
        ----------
        jets
            Jet table (e.g. of ``read_jet_table`` or ``jet_table_from_events``).
        inputs
            Tensors shared by several models (:func:`~jec_coffea.inference.build_inputs`),
            so that a processor builds the features once.

        Raises
        ------
        ModelMismatchError
            The table lacks a constituent type the model needs or its constituents are
            incomplete (old PFNano).
        """
        return self._evaluate(jets, inputs)[0]

    def _evaluate(
        self, jets: JetTable | ak.Array, inputs: SharedInputs | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(finite log corrections, mask of jets whose network output was not finite)."""
        why = self.spec.not_applicable(jets)
        if why is not None:
            source = jets.source if isinstance(jets, JetTable) else ""
            msg = f"{source or '<jets>'}: {self.model.source} not applicable: {why}"
            raise ModelMismatchError(msg)
        tensors = (
            inputs.for_spec(self.spec)
            if inputs is not None
            else to_tensors(jets, self.spec)
        )
        y = self.model.evaluate(tensors).astype(np.float64)
        bad = ~np.isfinite(y)
        if bad.any():
            warnings.warn(
                f"{self.model.source}: {int(bad.sum())} of {len(y)} jets got a non-finite "
                f"network output; their correction is set to 1 (log 0) and "
                f"{self.prefix}_valid = False",
                UserWarning,
                stacklevel=3,
            )
            y[bad] = 0.0
        return y, bad

    def correct(
        self,
        jets: JetTable | ak.Array,
        *,
        inputs: SharedInputs | None = None,
        warn: bool = True,
    ) -> dict[str, np.ndarray]:
        """Per-jet output columns (flat numpy, N jets): see :attr:`fields`."""
        array = jets.jets if isinstance(jets, JetTable) else jets
        y, bad = self._evaluate(jets, inputs)
        valid = self.flags(jets, warn=warn) & ~bad
        factor = np.exp(y)
        p = self.prefix
        pt_raw = ak.to_numpy(array.pt_raw).astype(np.float64)
        mass_raw = (
            ak.to_numpy(array.mass_raw).astype(np.float64)
            if "mass_raw" in array.fields
            else np.full(len(array), np.nan)
        )
        return {
            "pt_raw": pt_raw,
            "mass_raw": mass_raw,
            f"{p}_factor": factor,
            f"pt_{p}": pt_raw * factor,
            f"mass_{p}": mass_raw * factor,
            f"{p}_valid": valid,
        }

    # ----------------------------------------------------------------- events
    def apply(self, events: Any, *, layout: str | None = None) -> Any:
        """The jets of ``events`` with the corrected kinematics added.

        Parameters
        ----------
        events
            coffea NanoEvents: eager, virtual (``processor.Runner``) or dask-awkward.
        layout
            Layout of the file (default: the corrector's, else detected from the branches).

        Returns
        -------
        awkward or dask-awkward array
            ``events.Jet`` (events × jets) for NanoAOD/PFNano layouts, the events themselves
            for per-jet layouts (ml-jec, JetClass-II), with the fields of :attr:`fields`.
        """
        return apply_correctors(events, [self], layout=layout)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        # deterministic dask key: the model and every option that changes the output
        return (
            type(self).__name__,
            self.model.__dask_tokenize__(),
            self.jet_type,
            self.layout,
            self.prefix,
        )


def apply_correctors(
    events: Any, correctors: Sequence[DNNJetCorrector], *, layout: str | None = None
) -> Any:
    """Apply several correctors to the same jets, building the jet table and features once.

    Parameters
    ----------
    events
        coffea NanoEvents: eager, virtual (``processor.Runner``) or dask-awkward.
    correctors
        Correctors with distinct ``prefix`` and the same jet type.
    layout
        Layout of the file (default: the first corrector's, else detected from the branches).

    Returns
    -------
    awkward or dask-awkward array
        ``events.Jet`` (events × jets) for NanoAOD/PFNano layouts, the events themselves for
        per-jet layouts (ml-jec, JetClass-II), with every corrector's :attr:`~DNNJetCorrector.fields`.

    Raises
    ------
    ModelMismatchError
        A model cannot be fed from the file's layout (checked before any jet is evaluated;
        for dask-awkward input, when the graph is built).
    ConfigError
        Repeated prefixes, mixed jet types or an unknown layout.
    """
    correctors = tuple(correctors)
    if not correctors:
        msg = "apply_correctors: no corrector given"
        raise ConfigError(msg)
    prefixes = [c.prefix for c in correctors]
    if len(set(prefixes)) != len(prefixes):
        msg = f"apply_correctors: prefixes {prefixes} repeat; give each corrector its own prefix="
        raise ConfigError(msg)
    if len({c.puppi_weighted for c in correctors}) > 1:
        types = [c.jet_type for c in correctors]
        msg = f"apply_correctors: correctors for different jet types {types} cannot share jets"
        raise ConfigError(msg)
    layout = layout or correctors[0].layout
    if type(events).__module__.startswith("dask_awkward"):
        return _apply_dask(correctors, events, layout)
    return _apply_chunk(correctors, events, layout)


def _layout_of(
    correctors: Sequence[DNNJetCorrector], source: NanoEventsSource, name: str | None
) -> Layout:
    """The layout of a chunk (given or detected), refused if a model cannot be fed from it."""
    if name is not None:
        if name not in LAYOUTS:
            msg = f"unknown layout {name!r}; expected one of {', '.join(LAYOUT_NAMES)}"
            raise ConfigError(msg)
        lay = LAYOUTS[name]
    else:
        lay = next((x for x in LAYOUTS.values() if x.matches(source.available)), None)
        if lay is None:
            msg = (
                f"{source.path}: the events match none of the layouts "
                f"{', '.join(LAYOUT_NAMES)}; pass layout="
            )
            raise ConfigError(msg)
    for corrector in correctors:
        try:
            corrector.check_layout(lay, source.available)
        except ModelMismatchError as err:
            msg = f"{source.path}: {err}"
            raise ModelMismatchError(msg) from err
    return lay


def _apply_chunk(
    correctors: Sequence[DNNJetCorrector], events: ak.Array, layout: str | None
) -> ak.Array:
    """One chunk (eager/virtual), or its type (typetracer: the same code on zero-length
    copies of exactly the branches the builder reads, which marks them as needed)."""
    typetracer = ak.backend(events) == "typetracer"
    source = NanoEventsSource(events)
    lay = _layout_of(correctors, source, layout)
    puppi = correctors[0].puppi_weighted
    if typetracer:
        table, _ = build_jet_table(_ZeroLength(source), lay, puppi_weighted=puppi)
    else:
        table = jet_table_from_events(
            events, layout=lay.name, source=source.path, puppi_weighted=puppi
        )
    # the network inputs of DNN_SLICE_JETS jets at a time: memory bounded per chunk
    slices = jet_slices(table)
    warn = not typetracer and len(slices) == 1
    parts: list[dict[str, Any]] = []
    for _, part in slices:
        inputs = (
            build_inputs(part, [c.spec for c in correctors])
            if len(correctors) > 1
            else None
        )
        columns: dict[str, Any] = {}
        for corrector in correctors:
            columns.update(corrector.correct(part, inputs=inputs, warn=warn))
        parts.append(columns)
        del inputs
    if len(parts) > 1:
        columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        for corrector in correctors:  # one validity warning per chunk, not per slice
            corrector.flags(table, warn=not typetracer)
    if typetracer:
        columns = {
            name: ak.Array(ak.to_layout(values).to_typetracer(forget_length=True))
            for name, values in columns.items()
        }
    return _attach(events, lay, columns)


def _apply_dask(
    correctors: tuple[DNNJetCorrector, ...], events: Any, layout: str | None
) -> Any:
    """One ``map_partitions``; the correctors travel once per worker as a delayed object."""
    import dask
    import dask_awkward as dak

    call = _ApplyPartition(layout)
    meta = call(correctors, events._meta)
    shared = dask.delayed(correctors, pure=True, traverse=False)
    label = "dnn-jet-corrector-" + "-".join(c.model.digest[:8] for c in correctors)
    return dak.map_partitions(call, shared, events, meta=meta, label=label)


class _ApplyPartition:
    """``map_partitions`` callable: the correctors applied to one partition (or its meta)."""

    def __init__(self, layout: str | None) -> None:
        self.layout = layout

    def __call__(
        self, correctors: tuple[DNNJetCorrector, ...], events: ak.Array
    ) -> ak.Array:
        return _apply_chunk(correctors, events, self.layout)


class _ZeroLength:
    """A branch source giving zero-length concrete arrays of a typetracer's branches.

    Reading a branch touches its data in the typetracer report, so dask-awkward's column
    optimisation keeps exactly the branches the jet-table builder reads.
    """

    def __init__(self, source: NanoEventsSource) -> None:
        self._source = source
        self.available = source.available
        self.path = source.path
        self.tree = source.tree
        self.entry_start = 0

    def __getitem__(self, branch: str) -> ak.Array:
        return ak.typetracer.length_zero_if_typetracer(self._source[branch])

    def __len__(self) -> int:
        return 0


def _attach(events: ak.Array, layout: Layout, columns: Mapping[str, Any]) -> ak.Array:
    """Add flat per-jet ``columns`` to the jet collection of ``events`` (per-jet: events)."""
    jets = events if layout.per_jet else events.Jet
    counts = None if layout.per_jet else ak.num(jets, axis=1)
    for name, values in columns.items():
        values = ak.Array(values) if not isinstance(values, ak.Array) else values
        column = values if counts is None else ak.unflatten(values, counts)
        jets = ak.with_field(jets, column, name)
    return jets


def _validity(raw: Any, where: str) -> dict[str, tuple[float, float]]:
    """Validated ``{"pt": (lo, hi), "eta": (lo, hi)}`` from the model metadata (may be empty)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        msg = f"{where}: metadata 'validity' must be a mapping, got {raw!r}"
        raise ModelMismatchError(msg)
    out: dict[str, tuple[float, float]] = {}
    for key, bounds in raw.items():
        if key not in ("pt", "eta"):
            log.info("%s: validity key %r not checked by the corrector", where, key)
            continue
        try:
            lo, hi = (float(b) for b in bounds)
        except (TypeError, ValueError) as err:
            msg = f"{where}: metadata validity[{key!r}] must be [min, max], got {bounds!r}"
            raise ModelMismatchError(msg) from err
        out[key] = (lo, hi)
    return out

"""onnxruntime evaluation of exported calibration networks, in the coffea.ml_tools style.

:class:`OnnxModel` follows coffea's ``numpy_call_wrapper``: the model *bytes* are the only
heavy state that travels to workers (serialised once; no session in the pickle), and one
``InferenceSession`` with a bounded number of intra-op threads is created lazily on first use
in each process and shared by every copy of the same model there (processors are unpickled per
chunk). *Prepare* (jet table -> tensors, through :func:`jec_coffea.features.to_tensors`, the
training code) is separate from *evaluate* (tensors -> ln(pT_gen/pT_raw)); ``__call__``
dispatches on the input: a mapping of tensors (numpy), a jet table (awkward) or a dask-awkward
jet array (``map_partitions`` with ``meta`` from the typetracer).

Evaluation is batched (``batch_size`` jets per ``session.run``). When the constituent axes of
the graph are dynamic and the architecture is invariant under extra padding, jets are sorted by
constituent count and each batch is cut to the longest jet it holds (bucketing), so a batch of
ten-candidate jets does not pay for 64 padded slots.

:func:`build_inputs` computes the union of the features of several models once; every model
then takes its columns and slots from the shared tensors (:class:`SharedInputs`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
from pydantic import ValidationError

from .data.jet_table import CONSTITUENT_TYPES, JetTable
from .errors import InputFileError, ModelMismatchError
from .export import METADATA_KEY, OUTPUT_NAME
from .features import FEATURE_VERSION, FeatureSpec, ReplacementCounts, to_tensors

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DNN_SLICE_JETS",
    "METADATA_KEY",
    "OUTPUT_NAME",
    "PADDING_INVARIANT",
    "OnnxModel",
    "SharedInputs",
    "build_inputs",
    "clear_sessions",
    "jet_slices",
    "spec_from_metadata",
    "union_spec",
]

log = logging.getLogger(__name__)

PADDING_INVARIANT: frozenset[str] = frozenset(
    {"mlp", "resnet", "deepsets", "particlenet", "part"}
)
"""Architectures whose output does not change when padded (masked) slots are removed: masked
sum/mean pooling and masked attention. ParticleNet too: its k-nearest-neighbour search puts
padded points at distance 1e9, appends k masked dummy points of its own, and averages only
over valid neighbours, so which padded points fill a short neighbour list never matters
(bench/inference.py measures bucketed against padded outputs: |dy| < 1e-6)."""

DEFAULT_BATCH_SIZE = 256
"""Jets per ``session.run`` of :class:`OnnxModel` unless told otherwise (see its docstring)."""

DNN_SLICE_JETS = 20_000
"""Jets whose network inputs are built and evaluated at a time by the processors and
``apply_correctors``. The padded tensors take ~5 kB per jet (Deep Sets: 64 charged, 32
neutral, 8 SV slots), so a chunk of 190,000 jets held ~1 GB of them at once; in slices the
memory is bounded whatever the chunk size, for one more Python step per 20,000 jets
(docs/performance.md, fifth round)."""


def jet_slices(
    table: JetTable | ak.Array, size: int | None = None
) -> list[tuple[int, Any]]:
    """(start, sub-table) of at most ``size`` jets each (default :data:`DNN_SLICE_JETS`,
    read at call time), covering ``table`` (a JetTable or a per-jet awkward array) in order.

    A table of at most ``size`` jets (also an empty one) is returned whole.
    """
    size = DNN_SLICE_JETS if size is None else size
    if size < 1:
        msg = f"slice size must be >= 1, got {size}"
        raise ValueError(msg)
    n = len(table)
    if n <= size:
        return [(0, table)]
    if not isinstance(table, JetTable):
        return [(start, table[start : start + size]) for start in range(0, n, size)]
    return [
        (start, dataclasses.replace(table, jets=table.jets[start : start + size]))
        for start in range(0, n, size)
    ]


_SESSIONS: dict[tuple[str, int], Any] = {}
_SESSIONS_LOCK = threading.Lock()
"""Per-process cache of inference sessions keyed by (model sha256, intra-op threads)."""


# --------------------------------------------------------------------------- metadata


def _metadata_from_bytes(data: bytes, where: str) -> tuple[dict[str, Any], Any]:
    """The jec-coffea metadata and the graph of a serialised ONNX model."""
    import onnx

    try:
        proto = onnx.load_from_string(data)
    except Exception as err:  # protobuf DecodeError and friends
        raise InputFileError(where, f"cannot read ONNX model: {err}") from err
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        msg = (
            f"{where}: no {METADATA_KEY!r} entry in the ONNX metadata_props (keys: "
            f"{sorted(props)}); the model was not exported by jec_coffea.export.export_onnx, "
            "so its features are unknown"
        )
        raise ModelMismatchError(msg)
    try:
        doc = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as err:
        msg = f"{where}: the {METADATA_KEY!r} metadata is not valid JSON: {err}"
        raise ModelMismatchError(msg) from err
    return doc, proto.graph


def spec_from_metadata(metadata: Mapping[str, Any], where: str = "") -> FeatureSpec:
    """The :class:`FeatureSpec` of the inputs a model reads, from its ONNX metadata.

    Only the input groups of the graph (``input_names``) are kept: a Deep Sets model
    restricted to some constituent types needs only those. The feature names are checked
    against the registry of :mod:`jec_coffea.features` and the definitions version against
    :data:`~jec_coffea.features.FEATURE_VERSION`.

    Raises
    ------
    ModelMismatchError
        Missing keys, a feature name this jec-coffea does not define, or another
        FEATURE_VERSION.
    """
    where = f"{where}: " if where else ""
    try:
        names = list(metadata["input_names"])
        inputs = metadata["inputs"]
        max_constituents = dict(metadata.get("max_constituents") or {})
    except (KeyError, TypeError) as err:
        msg = f"{where}model metadata lacks {err} (needs input_names, inputs, max_constituents)"
        raise ModelMismatchError(msg) from err
    version = str(metadata.get("feature_version"))
    if version != FEATURE_VERSION:
        msg = (
            f"{where}the model was trained with feature definitions version {version!r}, this "
            f"jec-coffea builds version {FEATURE_VERSION!r}; its inputs would not mean what "
            "they meant in training. Use the jec-coffea version the model was trained with "
            "or retrain it."
        )
        raise ModelMismatchError(msg)
    types = [n for n in names if n in CONSTITUENT_TYPES]
    odd = [n for n in names if n != "jet" and n.removesuffix("_mask") not in types]
    if odd:
        msg = (
            f"{where}model inputs {odd} are neither 'jet' nor a constituent type "
            f"{CONSTITUENT_TYPES} (or its '_mask')"
        )
        raise ModelMismatchError(msg)
    try:
        return FeatureSpec(
            jet=list(inputs["jet"]["features"]) if "jet" in names else [],
            constituents={t: list(inputs[t]["features"]) for t in types},
            max_constituents={t: int(max_constituents[t]) for t in types},
            feature_version=version,
        )
    except (KeyError, TypeError) as err:
        msg = f"{where}model metadata has no feature list or maximum for input {err}"
        raise ModelMismatchError(msg) from err
    except ValidationError as err:
        problems = "; ".join(e["msg"] for e in err.errors())
        msg = f"{where}the model's features cannot be built by this jec-coffea: {problems}"
        raise ModelMismatchError(msg) from err


def _graph_axes(graph: Any) -> dict[str, list[int | None]]:
    """Input name -> dims of the graph (None for a symbolic, dynamic axis)."""
    out: dict[str, list[int | None]] = {}
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        out[value.name] = [
            d.dim_value if d.HasField("dim_value") else None for d in dims
        ]
    return out


# --------------------------------------------------------------------------- shared inputs


def union_spec(specs: Sequence[FeatureSpec]) -> FeatureSpec:
    """The smallest spec holding every feature of ``specs`` (names in first-seen order).

    The maximum number of constituents per type is the largest of the specs: tensors are
    pT-ordered, so the first M slots of a longer tensor are exactly the M-slot tensor.
    """
    if not specs:
        msg = "union_spec needs at least one FeatureSpec"
        raise ValueError(msg)
    versions = {s.feature_version for s in specs}
    if len(versions) > 1:
        msg = f"feature specs of different FEATURE_VERSIONs cannot share inputs: {sorted(versions)}"
        raise ModelMismatchError(msg)
    jet: list[str] = []
    constituents: dict[str, list[str]] = {}
    maxima: dict[str, int] = {}
    for spec in specs:
        jet += [n for n in spec.jet if n not in jet]
        for ctype, names in spec.constituents.items():
            have = constituents.setdefault(ctype, [])
            have += [n for n in names if n not in have]
            maxima[ctype] = max(maxima.get(ctype, 0), spec.max_constituents[ctype])
    return FeatureSpec(
        jet=jet,
        constituents=constituents,
        max_constituents=maxima,
        feature_version=versions.pop(),
    )


class SharedInputs:
    """Tensors of the union of several specs, built once, sliced per model.

    Parameters
    ----------
    tensors
        Output of :func:`~jec_coffea.features.to_tensors` for ``spec``.
    spec
        The union spec the tensors were built for.
    counts
        Replacement counts of the build (per feature).
    """

    def __init__(
        self,
        tensors: dict[str, np.ndarray],
        spec: FeatureSpec,
        counts: ReplacementCounts | None = None,
    ) -> None:
        self.tensors = tensors
        self.spec = spec
        self.counts = counts or ReplacementCounts()
        self._cache: dict[str, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        first = next(iter(self.tensors.values()), None)
        return 0 if first is None else len(first)

    def for_spec(self, spec: FeatureSpec) -> dict[str, np.ndarray]:
        """The tensors ``to_tensors(jets, spec)`` would give, taken from the shared build.

        Raises
        ------
        ModelMismatchError
            ``spec`` asks for a feature or more constituents than the shared build holds.
        """
        key = spec.model_dump_json()
        if key in self._cache:
            return self._cache[key]
        out: dict[str, np.ndarray] = {}
        if spec.jet:
            out["jet"] = self._columns("jet", self.spec.jet, spec.jet)
        for ctype, names in spec.constituents.items():
            if ctype not in self.tensors:
                continue  # type absent from the jet table, as in to_tensors
            m = spec.max_constituents[ctype]
            if m > self.spec.max_constituents.get(ctype, 0):
                msg = (
                    f"shared inputs hold {self.spec.max_constituents.get(ctype, 0)} {ctype} "
                    f"slots, the model needs {m}; build them with every model's spec"
                )
                raise ModelMismatchError(msg)
            cols = self._columns(ctype, self.spec.constituents[ctype], names)
            out[ctype] = np.ascontiguousarray(cols[:, :m])
            out[f"{ctype}_mask"] = np.ascontiguousarray(
                self.tensors[f"{ctype}_mask"][:, :m]
            )
        self._cache[key] = out
        return out

    def _columns(self, group: str, have: list[str], want: list[str]) -> np.ndarray:
        missing = [n for n in want if n not in have]
        if missing:
            msg = (
                f"shared inputs lack {group} features {missing}; build them with every "
                "model's spec (build_inputs(jets, [c.spec for c in correctors]))"
            )
            raise ModelMismatchError(msg)
        index = [have.index(n) for n in want]
        tensor = self.tensors[group]
        if index == list(range(tensor.shape[-1])):
            return tensor
        return np.ascontiguousarray(tensor[..., index])


def build_inputs(
    jets: JetTable | ak.Array, specs: Sequence[FeatureSpec]
) -> SharedInputs:
    """Compute the features of several models in one pass (union of their specs).

    Parameters
    ----------
    jets
        Jet table (N jets).
    specs
        Feature specs of the models (e.g. ``[c.spec for c in correctors]``).

    Returns
    -------
    SharedInputs
        ``.for_spec(spec)`` gives each model its tensors, identical to ``to_tensors(jets,
        spec)``.
    """
    spec = union_spec(list(specs))
    counts = ReplacementCounts()
    tensors = to_tensors(jets, spec, counts=counts)
    for line in counts.summary():
        log.debug("shared inputs: %s", line)
    return SharedInputs(tensors, spec, counts)


# --------------------------------------------------------------------------- the wrapper


class OnnxModel:
    """An exported calibration network evaluated with onnxruntime (picklable, lazy session).

    Parameters
    ----------
    model
        ONNX bytes, or the path of an ``.onnx`` file written by
        :func:`jec_coffea.export.export_onnx`.
    intra_op_threads
        Threads onnxruntime may use inside one operator (default 1: coffea workers already
        run one process per core).
    batch_size
        Jets per ``session.run`` call; bounds the memory of one call (N × M × F floats).
        The default, 256, is the fastest of 64 to 4096 measured by ``bench/inference.py``
        on one core: larger batches spill the intermediate tensors (ParticleNet's
        N × P × k × C edge features) out of the caches, and smaller buckets cut padding
        tighter (Deep Sets on realistic jets: 39k jets/s at 256, 34k at 1024, 18k at 4096).
    bucket
        Sort jets by constituent count and cut each batch's constituent axes to its longest
        jet. None (default): on when the graph's constituent axes are dynamic and the
        architecture is in :data:`PADDING_INVARIANT`.
    source
        Name for messages (default: the path, or ``"<bytes>"``).

    Raises
    ------
    InputFileError
        The file cannot be read as ONNX.
    ModelMismatchError
        The model carries no jec-coffea metadata, uses features this jec-coffea cannot build,
        or its graph inputs/output differ from what the metadata declares.
    """

    def __init__(
        self,
        model: bytes | str | os.PathLike[str],
        *,
        intra_op_threads: int = 1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        bucket: bool | None = None,
        source: str | None = None,
    ) -> None:
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
            self.source = source or "<bytes>"
        else:
            path = Path(model)
            self.source = source or str(path)
            try:
                data = path.read_bytes()
            except OSError as err:
                raise InputFileError(
                    str(path), f"cannot read ONNX model: {err}"
                ) from err
        if intra_op_threads < 1 or batch_size < 1:
            msg = (
                f"{self.source}: intra_op_threads ({intra_op_threads}) and batch_size "
                f"({batch_size}) must be >= 1"
            )
            raise ValueError(msg)
        self._bytes = data
        self.digest = hashlib.sha256(data).hexdigest()
        self.intra_op_threads = int(intra_op_threads)
        self.batch_size = int(batch_size)
        self.metadata, graph = _metadata_from_bytes(data, self.source)
        self.spec = spec_from_metadata(self.metadata, self.source)
        self.input_names: list[str] = list(self.metadata["input_names"])
        axes = _graph_axes(graph)
        outputs = [o.name for o in graph.output]
        if set(axes) != set(self.input_names) or outputs != [OUTPUT_NAME]:
            msg = (
                f"{self.source}: graph inputs {sorted(axes)} / outputs {outputs} differ from the "
                f"metadata inputs {sorted(self.input_names)} / [{OUTPUT_NAME!r}]"
            )
            raise ModelMismatchError(msg)
        self.fixed_slots = {
            name: axes[name][1]
            for name in self.input_names
            if name != "jet" and len(axes[name]) > 1 and axes[name][1] is not None
        }
        arch = str(self.metadata.get("architecture", "")).lower()
        dynamic = not self.fixed_slots
        self.bucket = (
            (dynamic and arch in PADDING_INVARIANT) if bucket is None else bucket
        )
        if self.bucket and not dynamic:
            msg = f"{self.source}: bucket=True needs dynamic constituent axes; fixed: {self.fixed_slots}"
            raise ModelMismatchError(msg)
        self._session: Any = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> OnnxModel:
        """Read an ``.onnx`` file (keyword arguments as in the constructor)."""
        return cls(Path(path), **kwargs)

    # ----------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = (
            None  # never pickle the session; rebuilt lazily on the worker
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        # deterministic dask key: the model and the settings that change the output layout
        return (type(self).__name__, self.digest, self.batch_size, self.bucket)

    @property
    def session(self) -> Any:
        """The onnxruntime session, created on first use in this process (then shared)."""
        if self._session is None:
            self._session = _session(self._bytes, self.digest, self.intra_op_threads)
        return self._session

    # ----------------------------------------------------------------- prepare / evaluate
    def prepare(
        self, jets: JetTable | ak.Array, *, counts: ReplacementCounts | None = None
    ) -> dict[str, np.ndarray]:
        """Network inputs of ``jets`` through the training code (``to_tensors``)."""
        return to_tensors(jets, self.spec, counts=counts)

    def evaluate(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """Predicted ln(pT_gen / pT_raw) for N jets, float32 (N,), in input order.

        Parameters
        ----------
        tensors
            At least the graph's inputs, as built by ``to_tensors``: ``"jet"`` (N, F),
            ``"<type>"`` (N, M, F) and ``"<type>_mask"`` (N, M).
        """
        absent = [n for n in self.input_names if n not in tensors]
        if absent:
            msg = (
                f"{self.source}: inputs {absent} not provided (got {sorted(tensors)}); a "
                "constituent type absent from the file cannot feed this model"
            )
            raise ModelMismatchError(msg)
        n = len(tensors[self.input_names[0]])
        out = np.empty(n, dtype=np.float32)
        if n == 0:
            return out
        types = [t for t in self.spec.constituents if t in self.input_names]
        num = {
            t: np.asarray(tensors[f"{t}_mask"]).sum(axis=1).astype(np.int64)
            for t in types
        }
        order = None
        if self.bucket and types:
            order = _bucket_order(num, types, self.spec.max_constituents)
        session = self.session
        for start in range(0, n, self.batch_size):  # loop over batches, not jets
            rows = (
                order[start : start + self.batch_size]
                if order is not None
                else slice(start, start + self.batch_size)
            )
            feed = {}
            for name in self.input_names:
                array = np.asarray(tensors[name])[rows]
                ctype = name.removesuffix("_mask")
                if order is not None and ctype in num:
                    width = max(int(num[ctype][rows].max()), 1)
                    array = array[:, :width]
                feed[name] = np.ascontiguousarray(array, dtype=np.float32)
            out[rows] = np.asarray(session.run([OUTPUT_NAME], feed)[0]).reshape(-1)
        return out

    def __call__(self, x: Any) -> Any:
        """Dispatch on the input: tensors (numpy), jet table (awkward), dask-awkward jets.

        Returns float32 ln(pT_gen/pT_raw) per jet: numpy (N,) for numpy/awkward inputs, a
        dask-awkward array of the same partitioning for dask-awkward inputs.
        """
        if isinstance(x, Mapping):
            return self.evaluate(x)
        if isinstance(x, (JetTable, ak.Array)):
            return self.evaluate(self.prepare(x))
        if _is_dask_awkward(x):
            return self._call_dask(x)
        msg = (
            f"{self.source}: cannot evaluate a {type(x).__name__}; pass a dict of tensors, a "
            "jet table (JetTable or awkward array) or a dask-awkward jet array"
        )
        raise TypeError(msg)

    def _call_dask(self, jets: Any) -> Any:
        import dask
        import dask_awkward as dak

        call = _PartitionCall()
        meta = call(self, jets._meta)
        return dak.map_partitions(
            call,
            dask.delayed(self, pure=True, traverse=False),
            jets,
            meta=meta,
            label=f"onnx-{self.digest[:8]}",
        )

    def touch_inputs(self, jets: ak.Array) -> None:
        """Mark the jet-table fields this model reads as needed (typetracer inputs)."""
        need = self.spec.required_fields()
        for name in need.get("jet", []):
            if name in jets.fields:
                ak.typetracer.touch_data(jets[name])
        for ctype in self.spec.constituents:
            if ctype not in jets.fields:
                continue
            for name in need.get(ctype, []):
                if name in jets[ctype].fields:
                    ak.typetracer.touch_data(jets[ctype][name])


class _PartitionCall:
    """Evaluate one partition; on a typetracer, touch the inputs and return the output type."""

    def __call__(self, model: OnnxModel, jets: ak.Array) -> ak.Array:
        if ak.backend(jets) == "typetracer":
            model.touch_inputs(jets)
            empty = ak.to_layout(np.zeros(0, dtype=np.float32))
            return ak.Array(empty.to_typetracer(forget_length=True))
        return ak.Array(model.evaluate(model.prepare(jets)))


def _bucket_order(
    num: Mapping[str, np.ndarray], types: Sequence[str], maxima: Mapping[str, int]
) -> np.ndarray:
    """Jet order that groups similar constituent counts (stable sort).

    Primary key: the largest count of any type; ties (counts are small integers, so ties are
    many) are broken by the total count. Each batch is cut per type to its longest jet, so
    the cost of a batch follows the sum of those widths. On the simulated sample (104 slots
    per jet when padded, batch 256) this feeds 41.2 / 36.6 / 32.1 slots per jet for 2k / 8k /
    100k jets, against 41.4 / 37.8 / 36.9 with the largest count alone; ``maxima`` is
    accepted for other keys and unused here.
    """
    counts = np.stack([num[t] for t in types], axis=1)
    return np.lexsort([counts.sum(axis=1), counts.max(axis=1)])


def _is_dask_awkward(x: Any) -> bool:
    return type(x).__module__.startswith("dask_awkward") and hasattr(x, "_meta")


def _session(data: bytes, digest: str, threads: int) -> Any:
    """One onnxruntime session per (model, thread count) and process."""
    key = (digest, threads)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            session = ort.InferenceSession(
                data, options, providers=["CPUExecutionProvider"]
            )
            _SESSIONS[key] = session
            log.info(
                "onnxruntime session for model %s created in process %d (%d intra-op threads)",
                digest[:12],
                os.getpid(),
                threads,
            )
    return session


def clear_sessions() -> None:
    """Drop this process's cached sessions (tests; freeing memory after a run)."""
    with _SESSIONS_LOCK:
        _SESSIONS.clear()

"""Export a calibration network with its preprocessing to one self-describing ONNX file.

The exported graph takes the *untransformed* tensors of ``jec_coffea.features.to_tensors``
(``"jet"`` (N, F_jet), ``"<type>"`` (N, M, F), ``"<type>_mask"`` (N, M)), applies the fitted
:class:`~jec_coffea.transform.Transform` and the network, and returns ``"log_correction"``
(N,) = predicted ln(pT_gen / pT_raw); corrected pT = pT_raw * exp(log_correction). Batch
and constituent axes are dynamic. Everything an analysis needs to feed the model and to know
where it is valid goes into ``metadata_props`` under the key :data:`METADATA_KEY` as JSON:
feature names and order per input, feature-definition version, maximum constituents per type,
target definition, jet type and R, validity range, hashes of the detector and training
configuration, package version, the model configuration and the transform.

The export uses torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, needs
onnxscript) into a single file (``external_data=False``); the legacy TorchScript exporter
mis-handles attention on shapes other than the example's. After writing, onnxruntime is run
on the example batch and compared with torch (:func:`check_parity`).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jec_coffea import __version__, extras
from jec_coffea.errors import ConfigError, InputFileError, ModelMismatchError
from jec_coffea.onnx_graph import DEFAULT_BLOCK, optimise
from jec_coffea.transform import Transform

__all__ = [
    "METADATA_KEY",
    "OUTPUT_NAME",
    "TARGET",
    "check_parity",
    "export_onnx",
    "read_onnx_metadata",
]

logger = logging.getLogger(__name__)

METADATA_KEY = "jec_coffea"
"""Key of the JSON document in the ONNX ``metadata_props``."""

OUTPUT_NAME = "log_correction"
"""Name of the single ONNX output, shape (N,)."""

TARGET = "ln(pt_gen/pt_raw)"
"""Definition of the regression target (DESIGN.md, data contract)."""

FORMAT_VERSION = 1
"""Version of the metadata layout; bumped when keys change meaning."""

RECOMMENDED_METADATA: tuple[str, ...] = (
    "validity",
    "detector_config_hash",
    "config_hash",
)
"""Pass-through keys every shipped model should carry (a warning is logged when absent):
``validity`` = ``{"pt": [min, max] GeV, "eta": [min, max]}``; the hashes identify the
detector configuration of the training sample and the training configuration."""

_PROTECTED: tuple[str, ...] = (
    "format_version",
    "inputs",
    "input_names",
    "output",
    "target",
    "feature_version",
    "max_constituents",
    "architecture",
    "model_config",
    "transform",
)
"""Keys written by the exporter that pass-through metadata may not replace."""

_EXPORTER_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r".*isinstance\(treespec, LeafSpec\)` is deprecated"),
    (UserWarning, r".*The axis name: .* will not be used"),
)
"""Known, harmless warnings of torch 2.13's ONNX exporter, silenced during the export only."""

_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"
"""Logger that reports every torchvision operator it skips ("torchvision is not installed");
raised to ERROR during the export."""


def _example_inputs(
    names: list[str], spec: Any, n_features: dict[str, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Example batch for tracing: 3 jets, 11, 13, 17, ... slots per type, partly padded.

    Dynamic axes must not be traced at size 0 or 1 (torch.export specialises those), and
    each must have its own size: the exporter merges axes of equal example size.
    """
    n = 3
    sizes = iter((11, 13, 17, 19, 23, 29, 31, 37))
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name.endswith("_mask"):
            continue
        if name == "jet":
            out[name] = np.abs(rng.normal(1.0, 1.0, (n, n_features[name]))).astype(
                np.float32
            )
            continue
        m = next(sizes)
        out[name] = np.abs(rng.normal(0.5, 0.5, (n, m, n_features[name]))).astype(
            np.float32
        )
        mask = np.ones((n, m), dtype=np.float32)
        mask[0, m // 2 :] = 0.0
        mask[1, :] = 0.0
        out[name] *= mask[..., None]
        out[f"{name}_mask"] = mask
    return out


def _input_names(model: Any, spec: Any) -> list[str]:
    if hasattr(model, "input_names"):
        return list(model.input_names())
    return list(spec.input_names())


def export_onnx(
    model: Any,
    transform: Transform,
    spec: Any,
    path: str | Path,
    metadata: Mapping[str, Any] | None = None,
    *,
    parity_atol: float = 1e-4,
    block: int | None = DEFAULT_BLOCK,
) -> Path:
    """Write ``model`` with ``transform`` in front of it as one ONNX file.

    Parameters
    ----------
    model
        A network of :func:`jec_coffea.models.build_model` (taking transformed inputs and
        ``raw=``); it is put in eval mode.
    transform
        The fitted preprocessing; its groups and feature order must equal ``spec``'s.
    spec
        The ``FeatureSpec`` the model was trained with (names, order, max constituents).
    path
        Output ``.onnx`` file (single file, no external data).
    metadata
        Pass-through entries (JSON-serialisable): ``jet_type`` (default ``"AK4PFchs"``),
        ``jet_radius`` (default 0.4), ``validity`` (``{"pt": [lo, hi], "eta": [lo, hi]}``),
        ``detector_config_hash``, ``config_hash``, ``package_version`` (default this
        package's), and anything else worth keeping with the model.
    parity_atol
        Largest allowed |onnxruntime - torch| on the example batch (natural-log units).
    block
        Jets per block of the graph's batch loop for networks over constituents
        (:func:`jec_coffea.onnx_graph.optimise`: dense layers as 2-D Gemm, the batch run in
        cache-sized blocks; docs/performance.md). None writes the graph as exported.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    torch = extras.torch()
    import onnx

    from jec_coffea.models.preprocess import WithPreprocessing

    if not transform.fitted:
        msg = "export_onnx: the transform is not fitted (call Transform.fit first)"
        raise ConfigError(msg)
    transform.check_spec(spec)
    metadata = dict(metadata or {})
    clash = sorted(set(metadata) & set(_PROTECTED))
    if clash:
        msg = f"export_onnx: metadata keys {clash} are written by the exporter; rename them"
        raise ConfigError(msg)
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as err:
        msg = f"export_onnx: metadata is not JSON-serialisable: {err}"
        raise ConfigError(msg) from err
    missing = [k for k in RECOMMENDED_METADATA if k not in metadata]
    if missing:
        logger.warning("export_onnx: metadata lacks recommended keys %s", missing)

    names = _input_names(model, spec)
    feature_names = transform.feature_names()
    n_features = {g: len(f) for g, f in feature_names.items()}
    groups = [n for n in names if not n.endswith("_mask")]
    composed = WithPreprocessing(transform.to_torch(groups), model).eval()
    wrapper = _positional(composed, names).eval()
    example = _example_inputs(names, spec, n_features, np.random.default_rng(20261123))
    args = tuple(torch.from_numpy(example[n]) for n in names)

    batch = torch.export.Dim("N")
    dims = {
        t: torch.export.Dim(f"M_{t}")
        for t in names
        if t != "jet" and not t.endswith("_mask")
    }
    dynamic: list[dict[int, Any]] = []
    for name in names:
        if name == "jet":
            dynamic.append({0: batch})
        else:
            dynamic.append({0: batch, 1: dims[name.removesuffix("_mask")]})

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    registry_log = logging.getLogger(_REGISTRY_LOGGER)
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        for category, message in _EXPORTER_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        try:
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(tuple(dynamic),),
                external_data=False,
                dynamo=True,
                verbose=False,
            )
        except Exception as err:
            msg = f"ONNX export of {type(model).__name__} to {path} failed: {err}"
            raise ModelMismatchError(msg) from err
        finally:
            registry_log.setLevel(level)

    doc = {
        "format_version": FORMAT_VERSION,
        "input_names": names,
        "inputs": {
            n: {
                "features": [] if n.endswith("_mask") else feature_names[n],
                "shape": _shape(n, n_features),
            }
            for n in names
        },
        "output": {"name": OUTPUT_NAME, "shape": ["N"], "definition": TARGET},
        "target": TARGET,
        "feature_version": getattr(spec, "feature_version", None),
        "max_constituents": dict(getattr(spec, "max_constituents", {})),
        "features": spec.metadata() if hasattr(spec, "metadata") else None,
        "architecture": getattr(model, "architecture", type(model).__name__),
        "model_config": _dump(getattr(model, "config", None)),
        "transform": transform.model_dump(mode="json"),
        "jet_type": "AK4PFchs",
        "jet_radius": 0.4,
        "package_version": __version__,
        **metadata,
    }
    text = json.dumps(doc, sort_keys=False)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text
    proto.producer_name = "jec-coffea"
    proto.producer_version = __version__
    if block is not None and names != ["jet"]:  # jet-level networks: nothing to gain
        proto = optimise(proto, block=block, metadata_key=METADATA_KEY)
    _strip_build_traces(proto.graph)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))

    diff = check_parity(path, composed, example)
    logger.info(
        "exported %s to %s; parity on the example batch %.3g",
        doc["architecture"],
        path,
        diff,
    )
    if not diff <= parity_atol:
        msg = (
            f"{path}: onnxruntime and torch differ by {diff:.3g} (> {parity_atol}) on the "
            "example batch; the export is not faithful"
        )
        raise ModelMismatchError(msg)
    return path


_BUILD_TRACE_KEYS = frozenset({"pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node"})
"""Node metadata of the exporter that records the build machine (source paths, FX code):
a third of a shipped file, of no use to its users. Module names (``namespace``) stay."""


def _strip_build_traces(graph: Any) -> None:
    """Drop :data:`_BUILD_TRACE_KEYS` from every node, subgraphs (the batch loop) included."""
    import onnx

    for node in graph.node:
        keep = [p for p in node.metadata_props if p.key not in _BUILD_TRACE_KEYS]
        if len(keep) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _strip_build_traces(attr.g)


def _shape(name: str, n_features: Mapping[str, int]) -> list[Any]:
    if name == "jet":
        return ["N", n_features["jet"]]
    if name.endswith("_mask"):
        return ["N", f"M_{name.removesuffix('_mask')}"]
    return ["N", f"M_{name}", n_features[name]]


def _dump(config: Any) -> Any:
    return config.model_dump(mode="json") if hasattr(config, "model_dump") else config


def _positional(module: Any, names: list[str]) -> Any:
    """Wrap a dict-taking module so that the ONNX inputs are positional, in ``names`` order."""
    torch = extras.torch()

    class Positional(torch.nn.Module):
        """Positional-argument front end (ONNX inputs) of a dict-taking module."""

        def __init__(self, module: Any, names: list[str]) -> None:
            super().__init__()
            self.module = module
            self.names = list(names)

        def forward(self, *tensors: Any) -> Any:
            return self.module(dict(zip(self.names, tensors, strict=True)))

    return Positional(module, names)


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The jec-coffea metadata of an exported model (the JSON of :data:`METADATA_KEY`).

    Raises :class:`InputFileError` if the file cannot be read as ONNX and
    :class:`ModelMismatchError` if it carries no jec-coffea metadata.
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError, OSError, ...
        raise InputFileError(str(path), f"cannot read ONNX model: {err}") from err
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        msg = (
            f"{path}: no {METADATA_KEY!r} entry in metadata_props (keys: {sorted(props)}); "
            "not exported by jec_coffea.export.export_onnx"
        )
        raise ModelMismatchError(msg)
    try:
        return json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as err:
        msg = f"{path}: the {METADATA_KEY!r} metadata is not valid JSON: {err}"
        raise ModelMismatchError(msg) from err


def check_parity(
    path: str | Path, module: Any, inputs: Mapping[str, np.ndarray]
) -> float:
    """Largest |onnxruntime - torch| of the log correction on ``inputs`` (raw tensors).

    Parameters
    ----------
    path
        Exported ONNX file.
    module
        The torch module taking the raw input dict (``WithPreprocessing``) in eval mode.
    inputs
        ``{name: array}`` for every ONNX input (extra keys are ignored).
    """
    import onnxruntime as ort

    torch = extras.torch()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    feed = {
        i.name: np.ascontiguousarray(inputs[i.name], dtype=np.float32)
        for i in session.get_inputs()
    }
    got = session.run([OUTPUT_NAME], feed)[0]
    with torch.no_grad():
        tensors = {
            k: torch.from_numpy(np.asarray(v, dtype=np.float32))
            for k, v in inputs.items()
        }
        want = module(tensors).numpy()
    if got.shape != want.shape:
        msg = f"{path}: onnxruntime output shape {got.shape} differs from torch {want.shape}"
        raise ModelMismatchError(msg)
    return float(np.max(np.abs(got - want), initial=0.0))

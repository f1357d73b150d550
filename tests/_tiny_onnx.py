"""Tiny exported models shared by test_inference.py and test_corrector.py.

A DeepSets (charged + neutral PF candidates and jet features) and a jet-level MLP with random
weights and a transform fitted on the PFNano file, exported with the real ``export_onnx``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jec_coffea.data import read_jet_table
from jec_coffea.features import FeatureSpec, to_tensors

DS_SPEC = FeatureSpec(
    jet=["log_pt_raw", "eta", "area", "rho", "chHEF", "neHEF", "n_charged"],
    constituents={
        "charged": ["rel_pt", "deta", "dphi", "d0", "dz"],
        "neutral": ["rel_pt", "deta", "dphi"],
    },
    max_constituents={"charged": 24, "neutral": 12},
)
"""DeepSets inputs; 24 charged slots truncate the busiest jets of the file."""

MLP_SPEC = FeatureSpec(
    jet=[
        "log_pt_raw",
        "eta",
        "area",
        "rho",
        "chHEF",
        "neHEF",
        "chEmEF",
        "neEmEF",
        "muEF",
        "n_constituents",
    ]
)
"""Jet-level inputs plain NanoAOD has."""


def export_tiny(arch: str, spec: FeatureSpec, jets, path: Path, validity: dict) -> Path:
    """Export a tiny network of ``arch`` (random weights, fitted transform) to ``path``."""
    torch = pytest.importorskip("torch")
    from jec_coffea.export import export_onnx
    from jec_coffea.models import build_model
    from jec_coffea.transform import Transform

    transform = Transform.from_spec(spec).fit(to_tensors(jets, spec))
    config = {
        "deepsets": {"architecture": "deepsets", "phi": [16, 16], "head": [16]},
        "mlp": {"architecture": "mlp", "hidden": [16, 16], "head": [8]},
    }[arch]
    torch.manual_seed(3)
    model = build_model(config, spec)
    meta = {
        "validity": validity,
        "detector_config_hash": "test",
        "config_hash": "test",
    }
    return export_onnx(model, transform, spec, path, meta)


_CACHE: dict[str, dict[str, Path]] = {}


def tiny_onnx_models(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    """``{"deepsets": path, "mlp": path}``, exported once per session (cached here so that
    the fixtures of several test files share one export)."""
    if "models" in _CACHE:
        return _CACHE["models"]
    pfnano_table = read_jet_table(shared_data / "pfnano" / "coffea_pfnano.root")
    out = tmp_path_factory.mktemp("onnx")
    _CACHE["models"] = {
        "deepsets": export_tiny(
            "deepsets",
            DS_SPEC,
            pfnano_table,
            out / "deepsets.onnx",
            {"pt": [5.0, 6500.0], "eta": [-5.2, 5.2]},
        ),
        "mlp": export_tiny(
            "mlp",
            MLP_SPEC,
            pfnano_table,
            out / "mlp.onnx",
            {"pt": [30.0, 200.0], "eta": [0.0, 2.0]},
        ),
    }
    return _CACHE["models"]


def direct(path: Path, tensors: dict[str, np.ndarray]) -> np.ndarray:
    """The model run by a plain onnxruntime session on full, unbucketed tensors."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: tensors[i.name] for i in session.get_inputs()}
    return session.run(["log_correction"], feed)[0]


def with_metadata(src: Path, dst: Path, edit) -> Path:
    """Copy of ``src`` whose jec-coffea metadata went through ``edit(doc)`` (None: removed)."""
    import onnx

    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    doc = edit(json.loads(props["jec_coffea"]))
    del proto.metadata_props[:]
    if doc is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "jec_coffea", json.dumps(doc)
    onnx.save(proto, str(dst))
    return dst

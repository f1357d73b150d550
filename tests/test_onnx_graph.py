"""Graph rewrites of exported models (``jec_coffea.onnx_graph``): faster, same numbers.

The rewritten graph (ReLU layers as 2-D Gemm, the batch run in blocks inside an ONNX Loop)
must give the outputs of the graph as exported at every batch size around the block size,
including zero jets and jets without constituents, and say in its metadata what was done.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_models import SPEC, fitted_transform, make_inputs

from jec_coffea.export import METADATA_KEY, check_parity, export_onnx
from jec_coffea.models import WithPreprocessing, build_model
from jec_coffea.onnx_graph import (
    DEFAULT_BLOCK,
    block_batch,
    dense_as_gemm,
    optimise,
    unblock,
)

METADATA = {
    "validity": {"pt": [20.0, 3000.0], "eta": [-4.7, 4.7]},
    "detector_config_hash": "sha256:test",
    "config_hash": "sha256:test",
}
BLOCK = 16


def _session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _run(session, inputs) -> np.ndarray:
    feed = {i.name: inputs[i.name] for i in session.get_inputs()}
    return session.run(None, feed)[0]


@pytest.fixture(scope="module")
def relu_deepsets(tmp_path_factory):
    """A ReLU Deep Sets exported as is and with the rewrites (block of 16 jets)."""
    data = make_inputs(np.random.default_rng(3), 400)
    transform = fitted_transform(SPEC, data)
    torch.manual_seed(0)
    model = build_model(
        {
            "architecture": "deepsets",
            "categorical": transform.cardinalities(),
            "phi": [32, 32, 32],
            "head": [16],
            "activation": "relu",
        },
        SPEC,
    )
    folder = tmp_path_factory.mktemp("rewrites")
    plain = export_onnx(
        model, transform, SPEC, folder / "plain.onnx", METADATA, block=None
    )
    fast = export_onnx(
        model, transform, SPEC, folder / "fast.onnx", METADATA, block=BLOCK
    )
    module = WithPreprocessing(transform.to_torch(), model).eval()
    return plain, fast, module


@pytest.mark.parametrize("n", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 3])
def test_rewritten_graph_equals_the_exported_one(relu_deepsets, n):
    plain, fast, module = relu_deepsets
    inputs = make_inputs(np.random.default_rng(n), n)
    if n:
        for ctype in SPEC.constituents:  # a jet without any constituent
            inputs[ctype][0] = 0.0
            inputs[f"{ctype}_mask"][0] = 0.0
    want = _run(_session(onnx.load(str(plain))), inputs)
    got = _run(_session(onnx.load(str(fast))), inputs)
    assert got.shape == want.shape == (n,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    if n:
        assert check_parity(fast, module, inputs) <= 1e-5
        assert np.all(np.isfinite(got))


@pytest.mark.parametrize("slots", [0, 1])
def test_constituent_axes_of_zero_and_one_slot(relu_deepsets, slots):
    """A (N, 0, F) input has a 0 in its shape: the Gemm's reshape back must keep it."""
    plain, fast, module = relu_deepsets
    for n in (1, 7, 2 * BLOCK + 1):
        inputs = make_inputs(
            np.random.default_rng(n), n, dict.fromkeys(SPEC.constituents, slots)
        )
        want = _run(_session(onnx.load(str(plain))), inputs)
        got = _run(_session(onnx.load(str(fast))), inputs)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert check_parity(fast, module, inputs) <= 1e-5


def test_rewrites_are_recorded_and_unblock_recovers_the_network(relu_deepsets):
    plain, fast, _ = relu_deepsets
    model = onnx.load(str(fast))
    doc = json.loads(
        next(p.value for p in model.metadata_props if p.key == METADATA_KEY)
    )
    types = len(SPEC.constituents)
    assert doc["graph_rewrites"] == {"dense_as_gemm": 3 * types, "block_batch": BLOCK}
    assert [n.op_type for n in model.graph.node].count("Loop") == 1
    assert "graph_rewrites" not in json.loads(
        next(p.value for p in onnx.load(str(plain)).metadata_props)
    )
    flat = unblock(model)
    ops = [n.op_type for n in flat.graph.node]
    assert "Loop" not in ops
    assert ops.count("Gemm") >= 3 * types
    inputs = make_inputs(np.random.default_rng(11), 3 * BLOCK + 5)
    np.testing.assert_allclose(
        _run(_session(flat), inputs), _run(_session(model), inputs), rtol=0, atol=1e-6
    )
    # a second pass changes nothing; the graph as exported has no Loop to remove
    assert optimise(model, metadata_key=METADATA_KEY) is model
    assert [n.op_type for n in unblock(onnx.load(str(plain))).graph.node] == [
        n.op_type for n in onnx.load(str(plain)).graph.node
    ]


def test_gelu_layers_and_bad_block_left_alone(relu_deepsets):
    plain, _, _ = relu_deepsets
    model = onnx.load(str(plain))
    _, count = dense_as_gemm(model)
    assert count == 3 * len(SPEC.constituents)
    for node in model.graph.node:  # pretend every ReLU were a GELU
        if node.op_type == "Relu":
            node.op_type = "Gelu"
    assert dense_as_gemm(model)[1] == 0
    with pytest.raises(ValueError, match="block must be >= 1"):
        block_batch(model, 0)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["deepsets", "particlenet"])
def test_shipped_models_are_rewritten_and_equal_their_network(name, shared_data):
    from jec_coffea.data import read_jet_table
    from jec_coffea.inference import OnnxModel
    from jec_coffea.shipped import shipped_dir

    path = shipped_dir() / f"{name}.onnx"
    model = onnx.load(str(path))
    assert json.loads(model.metadata_props[0].value)["graph_rewrites"]["block_batch"]
    wrapper = OnnxModel(path, batch_size=1000, bucket=False)
    tensors = wrapper.prepare(
        read_jet_table(shared_data / "pfnano" / "coffea_pfnano.root")
    )
    # the file's jets repeated past three blocks, so the loop runs more than once
    repeat = 3 * DEFAULT_BLOCK // len(tensors["jet"]) + 1
    tensors = {k: np.concatenate([v] * repeat) for k, v in tensors.items()}
    want = _run(_session(unblock(model)), tensors)
    np.testing.assert_allclose(wrapper.evaluate(tensors), want, rtol=0, atol=1e-6)

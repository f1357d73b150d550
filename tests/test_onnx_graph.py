"""Graph rewrites of exported models (``jec_coffea.onnx_graph``): faster, same numbers.

The rewritten graph (ReLU layers as 2-D Gemm, masked sum pooling as a batched MatMul, the
preprocessing's column slices as one Split, the batch run in blocks inside an ONNX Loop)
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
    block_size,
    dense_as_gemm,
    masked_sum_as_matmul,
    optimise,
    slices_as_split,
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
    rewrites = doc["graph_rewrites"]
    assert rewrites["dense_as_gemm"] == 3 * types
    assert rewrites["masked_sum_as_matmul"] == types  # one sum pooling per type
    assert rewrites["slices_as_split"] >= 2
    assert rewrites["block_batch"] == BLOCK == block_size(model)
    assert block_size(onnx.load(str(plain))) is None
    assert [n.op_type for n in model.graph.node].count("Loop") == 1
    assert "graph_rewrites" not in json.loads(
        next(p.value for p in onnx.load(str(plain)).metadata_props)
    )
    flat = unblock(model)
    ops = [n.op_type for n in flat.graph.node]
    assert "Loop" not in ops
    assert ops.count("Gemm") >= 3 * types
    # one pooling per type, and the category look-up of the charged pv_assoc_quality
    assert ops.count("MatMul") == types + 1
    assert "Split" in ops
    inputs = make_inputs(np.random.default_rng(11), 3 * BLOCK + 5)
    np.testing.assert_allclose(
        _run(_session(flat), inputs), _run(_session(model), inputs), rtol=0, atol=1e-6
    )
    # a second pass changes nothing; the graph as exported has no Loop to remove
    assert optimise(model, block=BLOCK, metadata_key=METADATA_KEY) is model
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


def test_a_file_of_an_earlier_version_gains_the_rewrites_it_lacks(
    relu_deepsets, tmp_path
):
    """A file blocked with the Gemm rewrite only (as shipped before the pooling and split
    rewrites) is unblocked, completed and blocked again, with the counts added up."""
    plain, fast, _ = relu_deepsets
    model = onnx.load(str(plain))
    older = block_batch(dense_as_gemm(model)[0], 2 * BLOCK)
    for prop in older.metadata_props:
        doc = json.loads(prop.value)
        doc["graph_rewrites"] = {
            "dense_as_gemm": 3 * len(SPEC.constituents),
            "block_batch": 2 * BLOCK,
        }
        prop.value = json.dumps(doc)
    upgraded = optimise(older, block=BLOCK, metadata_key=METADATA_KEY)
    assert (
        json.loads(upgraded.metadata_props[0].value)["graph_rewrites"]
        == json.loads(onnx.load(str(fast)).metadata_props[0].value)["graph_rewrites"]
    )
    assert upgraded.producer_name == "jec-coffea"
    inputs = make_inputs(np.random.default_rng(5), 3 * BLOCK + 2)
    np.testing.assert_allclose(
        _run(_session(upgraded), inputs),
        _run(_session(older), inputs),
        rtol=0,
        atol=1e-6,
    )
    assert optimise(upgraded, block=BLOCK, metadata_key=METADATA_KEY) is upgraded


def _graph(nodes, inputs, output, inits=(), rank=3):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None] * rank)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _ints(*values):
    return np.array(values, np.int64)


def test_slices_become_one_split_with_gaps_and_negative_bounds():
    from onnx import helper

    # columns 0:2, 3:4 (a gap at 2), -2:INT64_MAX (the tail, 5:7; a gap at 4), of a (N, M, 7)
    big = np.iinfo(np.int64).max
    inits = [
        ("a0", _ints(0)), ("a2", _ints(2)), ("a3", _ints(3)), ("a4", _ints(4)),
        ("m2", _ints(-2)), ("end", _ints(big)), ("ax", _ints(-1)), ("one", _ints(1)),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Slice", ["x", "a0", "a2", "ax", "one"], ["s0"]),
        helper.make_node("Mul", ["s0", "s0"], ["sq"]),
        helper.make_node("Slice", ["x", "m2", "end", "ax"], ["s2"]),
        helper.make_node("Slice", ["x", "a3", "a4", "ax"], ["s1"]),
        helper.make_node("Concat", ["sq", "s1", "s2"], ["y"], axis=-1),
    ]
    model = _graph(nodes, [("x", ["N", "M", 7])], "y", inits)
    rewritten, count = slices_as_split(model)
    assert count == 3
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("Split") == 1
    assert "Slice" not in ops
    x = np.random.default_rng(0).normal(size=(4, 3, 7)).astype(np.float32)
    want = _session(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(_session(rewritten).run(None, {"x": x})[0], want)
    np.testing.assert_array_equal(
        _session(rewritten).run(None, {"x": x[:0]})[0], want[:0]
    )


@pytest.mark.parametrize(
    "case", ["overlap", "dynamic length", "step 2", "single", "dynamic bound"]
)
def test_slices_left_alone_where_a_split_would_not_be_exact(case):
    from onnx import helper

    shape = ["N", "M", None if case == "dynamic length" else 6]
    inits = [("a0", _ints(0)), ("a3", _ints(3)), ("a2", _ints(2)), ("a6", _ints(6))]
    inits += [("ax", _ints(2)), ("st", _ints(2 if case == "step 2" else 1))]
    second = (
        ["x", "a2", "a6", "ax"] if case == "overlap" else ["x", "a3", "a6", "ax", "st"]
    )
    if case == "dynamic bound":
        second = ["x", "a3", "n", "ax"]
    nodes = [
        helper.make_node("Slice", ["x", "a0", "a3", "ax"], ["s0"]),
        helper.make_node("Slice", second, ["s1"]),
        helper.make_node("Concat", ["s0", "s1"], ["y"], axis=-1),
    ]
    inputs = [("x", shape)]
    if case == "dynamic bound":
        nodes.insert(0, helper.make_node("Shape", ["x"], ["n"], start=2))
    if case == "single":
        nodes[1] = helper.make_node("Identity", ["x"], ["s1"])
    model = _graph(nodes, inputs, "y", inits)
    assert slices_as_split(model)[1] == 0


def test_masked_sum_becomes_a_batched_matmul_and_other_products_stay():
    from onnx import helper

    inits = [("last", _ints(-1)), ("axis1", _ints(1)), ("axis2", _ints(2))]
    nodes = [
        helper.make_node("Unsqueeze", ["mask", "last"], ["m3"]),
        helper.make_node("Mul", ["x", "m3"], ["xm"]),
        helper.make_node("ReduceSum", ["xm", "axis1"], ["pooled"], keepdims=0),
        # summed over the feature axis, and a product used twice: not pooling, left alone
        helper.make_node("Mul", ["m3", "x"], ["xm2"]),
        helper.make_node("ReduceSum", ["xm2", "axis2"], ["other"], keepdims=0),
        helper.make_node("Mul", ["x", "m3"], ["xm3"]),
        helper.make_node("ReduceSum", ["xm3", "axis1"], ["kept"], keepdims=1),
        helper.make_node("Add", ["kept", "xm3"], ["twice"]),
        helper.make_node("ReduceSum", ["twice", "axis1"], ["twice2"], keepdims=0),
        # keepdims=1: the MatMul's (N, 1, C) is the sum itself
        helper.make_node("Mul", ["x", "m3"], ["xm4"]),
        helper.make_node("ReduceSum", ["xm4", "axis1"], ["k4"], keepdims=1),
        helper.make_node("Squeeze", ["k4", "axis1"], ["k5"]),
        helper.make_node("Concat", ["pooled", "other", "twice2", "k5"], ["y"], axis=-1),
    ]
    model = _graph(
        nodes, [("x", ["N", "M", 5]), ("mask", ["N", "M"])], "y", inits, rank=2
    )
    rewritten, count = masked_sum_as_matmul(model)
    assert count == 2
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("MatMul") == 2
    assert ops.count("Mul") == 2
    rng = np.random.default_rng(1)
    for n, m in [(5, 7), (1, 1), (3, 0), (0, 4)]:
        feed = {
            "x": rng.normal(size=(n, m, 5)).astype(np.float32),
            "mask": (rng.random((n, m)) < 0.6).astype(np.float32),
        }
        want = _session(model).run(None, feed)[0]
        np.testing.assert_allclose(
            _session(rewritten).run(None, feed)[0], want, rtol=0, atol=1e-6
        )

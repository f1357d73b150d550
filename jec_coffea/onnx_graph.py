"""Rewrites of an exported model's ONNX graph for onnxruntime speed; the numerics stay.

The dynamo exporter writes ``nn.Linear`` on (N, M, C) constituent tensors as MatMul + Add
(+ activation): three passes over the (N, M, C) tensor, because onnxruntime fuses bias and
activation into its GEMM only for 2-D inputs. And a batch of 1,024 jets holds intermediate
tensors of ~8 MB (Deep Sets) to ~140 MB (ParticleNet's (N, P, k, C) edges), which spill out
of the caches. Two rewrites, measured in ``bench/inference.py`` (docs/performance.md):

- :func:`dense_as_gemm`: MatMul(3-D x, W) + Add(b) + Relu becomes Reshape to (N·M, K),
  Gemm + Relu (which onnxruntime fuses into one ``FusedGemm``), Reshape back.
- :func:`block_batch`: the whole graph runs inside an ONNX ``Loop`` over blocks of
  ``block`` jets, so each block's intermediates stay in cache; outputs are concatenated in
  order. Every architecture is per-jet (no operator mixes jets), so blocking is exact.

:func:`optimise` applies both and records them in the metadata (``graph_rewrites``).
Outputs equal the unrewritten graph's to float rounding (GEMM order); ``export_onnx``
checks parity against torch after the rewrite.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["DEFAULT_BLOCK", "block_batch", "dense_as_gemm", "optimise", "unblock"]

DEFAULT_BLOCK = 128
"""Jets per block of :func:`block_batch`: of 64, 128, 256 and 512, 128 was the fastest for
the shipped Deep Sets and ParticleNet on one core (512 was slower; docs/performance.md)."""

_PREFIX = "jcgr_"
"""Prefix of every name the rewrites add (no clash with exporter names)."""


def _initializers(graph: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _ranks(model: Any) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in values
        if v.type.tensor_type.HasField("shape")
    }


def dense_as_gemm(model: Any) -> tuple[Any, int]:
    """MatMul(rank-3 x, 2-D weight) + Add(1-D bias) + Relu -> Reshape, Gemm + Relu, Reshape.

    Returns the rewritten model (a copy) and the number of layers rewritten. Only layers
    whose intermediate outputs feed nothing else are touched. Layers followed by GELU stay:
    onnxruntime already fuses their bias into ``BiasGelu`` (measured: no gain as Gemm).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = _copy(model)
    graph = model.graph
    inits = _initializers(graph)
    ranks = _ranks(model)
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    replace: dict[int, list[Any]] = {}
    drop: set[int] = set()
    position = {id(n): i for i, n in enumerate(graph.node)}
    extra_inits: list[Any] = []
    count = 0
    for node in graph.node:
        if node.op_type != "MatMul" or ranks.get(node.input[0]) != 3:
            continue
        weight = inits.get(node.input[1])
        if weight is None or weight.ndim != 2:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add" or node.output[0] in outputs:
            continue
        add = users[0]
        bias_name = next((x for x in add.input if x != node.output[0]), None)
        bias = inits.get(bias_name) if bias_name is not None else None
        if bias is None or bias.shape != (weight.shape[1],):
            continue
        after = consumers.get(add.output[0], [])
        if len(after) != 1 or after[0].op_type != "Relu" or add.output[0] in outputs:
            continue  # GELU keeps MatMul + BiasGelu (bias fused into the activation)
        relu = after[0]
        p = f"{_PREFIX}gemm{count}_"
        k, c = weight.shape
        extra_inits += [
            numpy_helper.from_array(np.array([-1, k], np.int64), p + "flat"),
            numpy_helper.from_array(np.array([c], np.int64), p + "width"),
        ]
        nodes = [
            helper.make_node("Shape", [node.input[0]], [p + "lead"], start=0, end=-1),
            helper.make_node(
                "Concat", [p + "lead", p + "width"], [p + "shape"], axis=0
            ),
            helper.make_node("Reshape", [node.input[0], p + "flat"], [p + "x2"]),
            helper.make_node("Gemm", [p + "x2", node.input[1], bias_name], [p + "y2"]),
            helper.make_node("Relu", [p + "y2"], [p + "r2"]),
            # allowzero: a set with no constituents has a 0 in its shape, not "copy"
            helper.make_node(
                "Reshape", [p + "r2", p + "shape"], [relu.output[0]], allowzero=1
            ),
        ]
        replace[position[id(node)]] = nodes
        drop.update({position[id(add)], position[id(relu)]})
        count += 1
    if not count:
        return model, 0
    new_nodes: list[Any] = []
    for i, node in enumerate(graph.node):
        if i in replace:
            new_nodes += replace[i]
        elif i not in drop:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(extra_inits)
    onnx.checker.check_model(model)
    return model, count


def block_batch(model: Any, block: int = DEFAULT_BLOCK) -> Any:
    """Run the graph in a ``Loop`` over blocks of ``block`` jets (axis 0 of every input).

    The loop body is the original graph with its inputs sliced to
    ``[i * block, (i + 1) * block)``; each block's output is appended to a sequence that is
    concatenated once at the end. Zero jets give zero trips and an empty output.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if block < 1:
        msg = f"block_batch: block must be >= 1, got {block}"
        raise ValueError(msg)
    model = _copy(model)
    graph = model.graph
    if len(graph.output) != 1:
        msg = f"block_batch: the graph has {len(graph.output)} outputs, expected one"
        raise ValueError(msg)
    p = _PREFIX + "blk_"
    inputs = [i.name for i in graph.input]
    sliced = {name: p + "in_" + name for name in inputs}
    out = graph.output[0]
    elem = out.type.tensor_type.elem_type
    body_nodes = [
        helper.make_node("Mul", [p + "iter", p + "block"], [p + "start"]),
        helper.make_node("Add", [p + "start", p + "block"], [p + "end"]),
        helper.make_node("Unsqueeze", [p + "start", p + "axis0"], [p + "start1"]),
        helper.make_node("Unsqueeze", [p + "end", p + "axis0"], [p + "end1"]),
    ]
    for name in inputs:
        body_nodes.append(
            helper.make_node(
                "Slice",
                [name, p + "start1", p + "end1", p + "axis0"],
                [sliced[name]],
            )
        )
    body_nodes += [_with_inputs(node, sliced) for node in graph.node]
    body_nodes += [
        helper.make_node("SequenceInsert", [p + "seq_in", out.name], [p + "seq_out"]),
        helper.make_node("Identity", [p + "cond_in"], [p + "cond_out"]),
    ]
    seq_type = helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(elem, None)
    )
    body = helper.make_graph(
        body_nodes,
        "block",
        [
            helper.make_tensor_value_info(p + "iter", TensorProto.INT64, []),
            helper.make_tensor_value_info(p + "cond_in", TensorProto.BOOL, []),
            helper.make_value_info(p + "seq_in", seq_type),
        ],
        [
            helper.make_tensor_value_info(p + "cond_out", TensorProto.BOOL, []),
            helper.make_value_info(p + "seq_out", seq_type),
        ],
    )
    empty_value = numpy_helper.from_array(
        np.zeros(1, dtype=onnx.helper.tensor_dtype_to_np_dtype(elem))
    )
    outer = [
        helper.make_node("Shape", [inputs[0]], [p + "n"], start=0, end=1),
        helper.make_node("Add", [p + "n", p + "block_minus_1"], [p + "n_up"]),
        helper.make_node("Div", [p + "n_up", p + "block1"], [p + "trips1"]),
        helper.make_node("Squeeze", [p + "trips1", p + "axis0"], [p + "trips"]),
        helper.make_node(
            "ConstantOfShape", [p + "zero_shape"], [p + "empty"], value=empty_value
        ),
        helper.make_node("SequenceConstruct", [p + "empty"], [p + "seq0"]),
        helper.make_node(
            "Loop", [p + "trips", p + "true", p + "seq0"], [p + "seq"], body=body
        ),
        helper.make_node("ConcatFromSequence", [p + "seq"], [out.name], axis=0),
    ]
    constants = {
        "block": np.array(block, np.int64),
        "block1": np.array([block], np.int64),
        "block_minus_1": np.array([block - 1], np.int64),
        "axis0": np.array([0], np.int64),
        "zero_shape": np.array([0], np.int64),
        "true": np.array(True),
    }
    new_graph = helper.make_graph(
        outer,
        graph.name,
        list(graph.input),
        list(graph.output),
        [
            *graph.initializer,
            *(numpy_helper.from_array(v, p + k) for k, v in constants.items()),
        ],
    )
    result = helper.make_model(
        new_graph,
        opset_imports=list(model.opset_import),
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
    )
    result.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(result)
    return result


def unblock(model: Any) -> Any:
    """The graph of a :func:`block_batch` model without the loop (one block of any size).

    For tools that walk the top-level nodes (FLOP counting, profiling by node). A model
    that is not blocked is returned as a copy.
    """
    from onnx import helper

    loops = [
        n
        for n in model.graph.node
        if n.op_type == "Loop" and n.output and n.output[0] == _PREFIX + "blk_seq"
    ]
    if not loops:
        return _copy(model)
    body = next(a.g for a in loops[0].attribute if a.name == "body")
    p = _PREFIX + "blk_"
    renamed = {f"{p}in_{i.name}": i.name for i in model.graph.input}
    nodes = [
        _with_inputs(node, renamed)
        for node in body.node
        # leave out the slicing, block bounds and sequence nodes
        if node.output[0] not in renamed and not node.output[0].startswith(p)
    ]
    inits = [i for i in model.graph.initializer if not i.name.startswith(p)]
    graph = helper.make_graph(
        nodes,
        model.graph.name,
        list(model.graph.input),
        list(model.graph.output),
        inits,
    )
    result = helper.make_model(
        graph, opset_imports=list(model.opset_import), ir_version=model.ir_version
    )
    result.metadata_props.extend(model.metadata_props)
    return result


def optimise(
    model: Any, *, block: int | None = DEFAULT_BLOCK, metadata_key: str | None = None
) -> Any:
    """:func:`dense_as_gemm`, then :func:`block_batch` (``block=None``: no blocking).

    With ``metadata_key``, the JSON metadata under that key gains ``graph_rewrites``
    (what was applied), so a file says how its graph was laid out. A graph already rewritten
    is returned unchanged.
    """
    if _rewritten(model):
        return model
    model, n_gemm = dense_as_gemm(model)
    applied: dict[str, Any] = {"dense_as_gemm": n_gemm}
    if block is not None:
        model = block_batch(model, block)
        applied["block_batch"] = block
    if metadata_key is not None:
        for prop in model.metadata_props:
            if prop.key == metadata_key:
                doc = json.loads(prop.value)
                doc["graph_rewrites"] = applied
                prop.value = json.dumps(doc, sort_keys=False)
    return model


def _rewritten(model: Any) -> bool:
    return any(
        n.name.startswith(_PREFIX) or any(o.startswith(_PREFIX) for o in n.output)
        for n in model.graph.node
    )


def _with_inputs(node: Any, rename: dict[str, str]) -> Any:
    """A copy of ``node`` whose inputs named in ``rename`` are replaced."""
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[:] = [rename.get(x, x) for x in node.input]
    return copy


def _copy(model: Any) -> Any:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy

"""Rewrites of an exported model's ONNX graph for onnxruntime speed; the numerics stay.

The dynamo exporter writes ``nn.Linear`` on (N, M, C) constituent tensors as MatMul + Add
(+ activation): three passes over the (N, M, C) tensor, because onnxruntime fuses bias and
activation into its GEMM only for 2-D inputs. And a batch of 1,024 jets holds intermediate
tensors of ~8 MB (Deep Sets) to ~140 MB (ParticleNet's (N, P, k, C) edges), which spill out
of the caches. Two rewrites, measured in ``bench/inference.py`` (docs/performance.md):

- :func:`dense_as_gemm`: MatMul(3-D x, W) + Add(b) + Relu becomes Reshape to (N·M, K),
  Gemm + Relu (which onnxruntime fuses into one ``FusedGemm``), Reshape back.
- :func:`masked_sum_as_matmul`: the masked sum pooling ReduceSum(x · mask[..., None], axis 1)
  becomes one batched MatMul mask[:, None, :] @ x (no (N, M, C) product tensor).
- :func:`slices_as_split`: the column slices the preprocessing cuts from one tensor (one
  ``Slice`` per transformed column) become one ``Split``.
- :func:`block_batch`: the whole graph runs inside an ONNX ``Loop`` over blocks of
  ``block`` jets, so each block's intermediates stay in cache; outputs are concatenated in
  order. Every architecture is per-jet (no operator mixes jets), so blocking is exact.

:func:`optimise` applies them all and records them in the metadata (``graph_rewrites``).
Outputs equal the unrewritten graph's to float rounding (GEMM order); ``export_onnx``
checks parity against torch after the rewrite.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_BLOCK",
    "block_batch",
    "block_size",
    "dense_as_gemm",
    "masked_sum_as_matmul",
    "optimise",
    "slices_as_split",
    "unblock",
]

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


def _tensor_info(
    model: Any,
) -> tuple[dict[str, tuple[int | None, ...]], dict[str, int]]:
    """One shape inference: the shape of every tensor whose rank is known (None: a
    dimension not fixed) and the element type of every tensor."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    shapes = {
        v.name: tuple(
            d.dim_value if d.HasField("dim_value") else None
            for d in v.type.tensor_type.shape.dim
        )
        for v in values
        if v.type.tensor_type.HasField("shape")
    }
    return shapes, {v.name: v.type.tensor_type.elem_type for v in values}


def _ranks(model: Any) -> dict[str, int]:
    return {name: len(shape) for name, shape in _tensor_info(model)[0].items()}


def _constant_ints(inits: dict[str, Any], name: str) -> list[int] | None:
    """The values of an integer initializer, None if ``name`` is not one."""
    value = inits.get(name)
    if value is None or value.dtype.kind not in "iu":
        return None
    return [int(v) for v in value.reshape(-1)]


def _opset(model: Any) -> int:
    return next(
        (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0
    )


def _rewritten_model(
    model: Any, replace: dict[int, list[Any]], drop: set[int], count: int
) -> tuple[Any, int]:
    """``model`` with the node replacements made (nothing if ``count`` is 0), checked."""
    import onnx

    if count:
        _replace_nodes(model.graph, replace, drop)
        _drop_unused_initializers(model.graph)
        onnx.checker.check_model(model)
    return model, count


def _replace_nodes(graph: Any, replace: dict[int, list[Any]], drop: set[int]) -> None:
    """Nodes at positions in ``replace`` become its lists, those in ``drop`` go."""
    new_nodes: list[Any] = []
    for i, node in enumerate(graph.node):
        if i in replace:
            new_nodes += replace[i]
        elif i not in drop:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)


def dense_as_gemm(model: Any) -> tuple[Any, int]:
    """MatMul(rank-3 x, 2-D weight) + Add(1-D bias) + Relu -> Reshape, Gemm + Relu, Reshape.

    Returns the rewritten model (a copy) and the number of layers rewritten. Only layers
    whose intermediate outputs feed nothing else are touched. Layers followed by GELU stay:
    onnxruntime already fuses their bias into ``BiasGelu`` (measured: no gain as Gemm).
    """
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
    graph.initializer.extend(extra_inits)
    return _rewritten_model(model, replace, drop, count)


def masked_sum_as_matmul(model: Any) -> tuple[Any, int]:
    """ReduceSum(x · Unsqueeze(mask, -1), axes=[1]) -> Squeeze(MatMul(Unsqueeze(mask, 1), x)).

    The sum pooling of a (N, M, C) constituent tensor under its (N, M) mask, as the exporter
    writes it, makes a full (N, M, C) product only to sum it; the batched MatMul
    (N, 1, M) @ (N, M, C) reads x once. Returns the rewritten copy and the number of poolings
    rewritten. Only products that feed nothing else, with a rank-2 mask of x's type, are
    touched; the sum differs from the original by float rounding (summation order).
    """
    from onnx import helper, numpy_helper

    model = _copy(model)
    graph = model.graph
    if _opset(model) < 13:  # axes as an input of ReduceSum / Unsqueeze / Squeeze
        return model, 0
    inits = _initializers(graph)
    shapes, types = _tensor_info(model)
    consumers = _consumers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    position = {id(n): i for i, n in enumerate(graph.node)}
    outputs = {o.name for o in graph.output}
    replace: dict[int, list[Any]] = {}
    drop: set[int] = set()
    count = 0
    for node in graph.node:
        if node.op_type != "ReduceSum" or len(node.input) < 2:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("noop_with_empty_axes", 0):
            continue
        mul = producer.get(node.input[0])
        if (
            mul is None
            or mul.op_type != "Mul"
            or mul.output[0] in outputs
            or len(consumers.get(mul.output[0], [])) != 1
        ):
            continue
        match = _masked_operands(mul, producer, inits, shapes, types)
        if match is None or _constant_ints(inits, node.input[1]) not in ([1], [-2]):
            continue
        x, mask = match
        p = _fresh_prefix(graph, "pool")
        keep = attrs.get("keepdims", 1)
        pooled = node.output[0] if keep else p + "sum"
        nodes = [
            helper.make_node("Unsqueeze", [mask, p + "axis1"], [p + "row"]),
            helper.make_node("MatMul", [p + "row", x], [pooled]),
        ]
        if not keep:
            nodes.append(
                helper.make_node("Squeeze", [pooled, p + "axis1"], [node.output[0]])
            )
        graph.initializer.append(
            numpy_helper.from_array(np.array([1], np.int64), p + "axis1")
        )
        replace[position[id(node)]] = nodes
        drop.add(position[id(mul)])
        count += 1
    return _rewritten_model(model, replace, drop, count)


def _masked_operands(
    mul: Any,
    producer: dict[str, Any],
    inits: dict[str, Any],
    shapes: dict[str, tuple[int | None, ...]],
    types: dict[str, int],
) -> tuple[str, str] | None:
    """(x, mask) of a Mul of a rank-3 x by Unsqueeze(rank-2 mask, -1), else None."""
    for x, other in (mul.input, reversed(mul.input)):
        unsqueeze = producer.get(other)
        if unsqueeze is None or unsqueeze.op_type != "Unsqueeze":
            continue
        axes = (
            _constant_ints(inits, unsqueeze.input[1])
            if len(unsqueeze.input) > 1
            else None
        )
        if axes not in ([-1], [2]):
            continue
        mask = unsqueeze.input[0]
        if len(shapes.get(x, ())) != 3 or len(shapes.get(mask, ())) != 2:
            continue
        if types.get(x) is None or types.get(x) != types.get(mask):
            continue
        return x, mask
    return None


def slices_as_split(model: Any) -> tuple[Any, int]:
    """Slices of one tensor along one axis -> one ``Split`` (unused pieces for the gaps).

    The preprocessing cuts each transformed column out of its (N, M, F) input with its own
    ``Slice``; one ``Split`` reads the tensor once. Touched: groups of >= 2 slices of the same
    tensor and axis with constant bounds, step 1, non-empty and not overlapping, on an axis of
    known length. Returns the rewritten copy and the number of slices replaced. Exact.
    """
    from onnx import helper, numpy_helper

    model = _copy(model)
    graph = model.graph
    if _opset(model) < 13:  # split sizes as an input
        return model, 0
    inits = _initializers(graph)
    shapes, _ = _tensor_info(model)
    groups: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    for i, node in enumerate(graph.node):
        if node.op_type != "Slice" or len(node.input) < 4:
            continue
        bounds = [_constant_ints(inits, x) for x in node.input[1:]]
        if any(b is None or len(b) != 1 for b in bounds):
            continue
        start, end, axis, *step = (b[0] for b in bounds)  # type: ignore[index]
        shape = shapes.get(node.input[0])
        if (
            step not in ([], [1])
            or shape is None
            or not -len(shape) <= axis < len(shape)
        ):
            continue
        axis %= len(shape)
        length = shape[axis]
        if length is None:
            continue
        start, end = (
            min(max(v + length if v < 0 else v, 0), length) for v in (start, end)
        )
        if start < end:
            groups.setdefault((node.input[0], axis), []).append((start, end, i))
    replace: dict[int, list[Any]] = {}
    drop: set[int] = set()
    count = 0
    for (source, axis), pieces in groups.items():
        pieces.sort()
        if len(pieces) < 2 or any(a[1] > b[0] for a, b in itertools.pairwise(pieces)):
            continue
        p = _fresh_prefix(graph, "split")
        sizes: list[int] = []
        names: list[str] = []
        position = 0
        for start, end, i in [*pieces, (shapes[source][axis], None, None)]:
            if start > position:  # a gap, or the tail after the last slice
                sizes.append(start - position)
                names.append(f"{p}unused{len(names)}")
            if end is None:
                break
            sizes.append(end - start)
            names.append(graph.node[i].output[0])
            position = end
        graph.initializer.append(
            numpy_helper.from_array(np.array(sizes, np.int64), p + "sizes")
        )
        first = min(i for _, _, i in pieces)
        replace[first] = [
            helper.make_node("Split", [source, p + "sizes"], names, axis=axis)
        ]
        drop.update(i for _, _, i in pieces if i != first)
        count += len(pieces)
    return _rewritten_model(model, replace, drop, count)


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

    loop = _batch_loop(model)
    if loop is None:
        return _copy(model)
    body = next(a.g for a in loop.attribute if a.name == "body")
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
        graph,
        opset_imports=list(model.opset_import),
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
    )
    result.metadata_props.extend(model.metadata_props)
    return result


def optimise(
    model: Any, *, block: int | None = DEFAULT_BLOCK, metadata_key: str | None = None
) -> Any:
    """:func:`masked_sum_as_matmul`, :func:`slices_as_split` and :func:`dense_as_gemm`, then
    :func:`block_batch` (``block=None``: no blocking).

    A model already blocked is unblocked first, so a file written by an earlier version
    gains the rewrites it lacks; a model with nothing left to do (and the block asked for)
    is returned as is. With ``metadata_key``, the JSON metadata under that key gains
    ``graph_rewrites`` (counts added up over passes, and the block size), so a file says how
    its graph was laid out.
    """
    current = block_size(model)
    flat = unblock(model) if current is not None else model
    flat, n_pool = masked_sum_as_matmul(flat)
    flat, n_split = slices_as_split(flat)
    flat, n_gemm = dense_as_gemm(flat)
    counts = {
        "dense_as_gemm": n_gemm,
        "masked_sum_as_matmul": n_pool,
        "slices_as_split": n_split,
    }
    if not any(counts.values()) and current == block:
        return model
    model = flat if block is None else block_batch(flat, block)
    if metadata_key is not None:
        for prop in model.metadata_props:
            if prop.key == metadata_key:
                doc = json.loads(prop.value)
                applied = dict(doc.get("graph_rewrites") or {})
                applied.pop("block_batch", None)
                for key, n in counts.items():
                    applied[key] = applied.get(key, 0) + n
                if block is not None:
                    applied["block_batch"] = block
                doc["graph_rewrites"] = applied
                prop.value = json.dumps(doc, sort_keys=False)
    return model


def block_size(model: Any) -> int | None:
    """Jets per block of a :func:`block_batch` model; None if the graph is not blocked."""
    from onnx import numpy_helper

    if _batch_loop(model) is None:
        return None
    value = next(i for i in model.graph.initializer if i.name == _PREFIX + "blk_block")
    return int(numpy_helper.to_array(value))


def _batch_loop(model: Any) -> Any:
    """The ``Loop`` node :func:`block_batch` wrote, None if the graph has none."""
    return next(
        (
            n
            for n in model.graph.node
            if n.op_type == "Loop" and n.output and n.output[0] == _PREFIX + "blk_seq"
        ),
        None,
    )


def _drop_unused_initializers(graph: Any) -> None:
    """Remove initializers no node reads any more (subgraphs included)."""
    used: set[str] = set()

    def visit(g: Any) -> None:
        for node in g.node:
            used.update(node.input)
            for attr in node.attribute:
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    visit(sub)

    visit(graph)
    used.update(o.name for o in graph.output)
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _fresh_prefix(graph: Any, stem: str) -> str:
    """``jcgr_<stem><k>_`` with the smallest k no tensor name of ``graph`` starts with."""
    names = [o for n in graph.node for o in n.output]
    names += [i.name for i in graph.initializer]
    k = 0
    while any(name.startswith(f"{_PREFIX}{stem}{k}_") for name in names):
        k += 1
    return f"{_PREFIX}{stem}{k}_"


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

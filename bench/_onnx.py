"""ONNX graph tools of the inference bench: FLOP counting and the operator profile.

Kept apart from ``bench/inference.py`` so that the script holds the measurements only.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- FLOPs


def onnx_matmul_flops(
    path: Path, feed: dict[str, np.ndarray]
) -> tuple[float, dict[str, float]]:
    """FLOPs of every MatMul/Gemm of the ONNX graph for ``feed`` (2 per multiply-add).

    The inputs of those nodes are added as graph outputs and the unoptimised graph is run
    once, so the shapes are the real ones of this batch (no symbolic shape inference).
    Returns the total and the split by operator type (the masked sum pooling, a MatMul
    after the graph rewrite, not counted).
    """
    import onnx
    import onnxruntime as ort

    from jec_coffea.onnx_graph import unblock

    proto = unblock(onnx.load(str(path)))  # the network's nodes, outside the batch loop
    graph = proto.graph
    known = {i.name: list(i.dims) for i in graph.initializer}
    # the masked sum pooling written as a MatMul (onnx_graph.masked_sum_as_matmul) is a
    # sum, not a layer: left out, as torch's counter leaves out the sum it replaces
    nodes = [
        n
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm") and not n.input[0].startswith("jcgr_pool")
    ]
    outputs = {o.name for o in graph.output}
    extra = []
    for node in nodes:
        for name in node.input[:2]:
            if name not in known and name not in outputs and name not in extra:
                extra.append(name)
    for name in extra:
        graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    values = session.run(extra, {i.name: feed[i.name] for i in session.get_inputs()})
    shapes = dict(known)
    shapes.update({n: list(v.shape) for n, v in zip(extra, values, strict=True)})
    by_op: dict[str, float] = {"MatMul": 0.0, "Gemm": 0.0}
    for node in nodes:
        a, b = shapes[node.input[0]], shapes[node.input[1]]
        if node.op_type == "Gemm":
            attrs = {x.name: x.i for x in node.attribute}
            m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
            n = b[0] if attrs.get("transB") else b[1]
            by_op["Gemm"] += 2.0 * m * k * n
        else:
            a2, b2 = ([1, *a] if len(a) == 1 else a), ([*b, 1] if len(b) == 1 else b)
            batch = np.broadcast_shapes(tuple(a2[:-2]), tuple(b2[:-2]))
            by_op["MatMul"] += 2.0 * float(np.prod(batch)) * a2[-2] * a2[-1] * b2[-1]
    return sum(by_op.values()), by_op


def torch_flops(module: Any, feed: dict[str, np.ndarray], n_jets: int = 64) -> float:
    """FLOPs per jet torch's FlopCounterMode counts (matrix products), on ``n_jets`` jets.

    Autograd stays on: the counter's module tracker needs grad functions (it fails under
    ``inference_mode`` and ``no_grad`` for ParT); a small batch keeps that cheap.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(v[:n_jets])) for k, v in feed.items()
    }
    n = len(next(iter(tensors.values())))
    try:
        with FlopCounterMode(display=False) as counter:
            module(tensors)
    except (AssertionError, AttributeError, RuntimeError) as err:  # counter limitations
        print(f"torch FlopCounterMode failed ({type(err).__name__}: {err})")
        return float("nan")
    return float(counter.get_total_flops()) / n


def op_profile(
    path: Path, feed: dict[str, np.ndarray], top: int = 8
) -> list[list[Any]]:
    """Share of the kernel time per operator type (onnxruntime profiler, level all).

    The nodes inside the batch loop of :func:`jec_coffea.onnx_graph.block_batch` count under
    their own types; the ``Loop`` node itself, whose time contains theirs, is left out.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name: feed[i.name] for i in session.get_inputs()}
        for _ in range(5):
            session.run(None, inputs)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e["args"]["op_name"]
            if op == "Loop":  # the batch loop: its body's nodes are recorded one by one
                continue
            by_op[op] = by_op.get(op, 0.0) + float(e["dur"])
    total = sum(by_op.values()) or 1.0
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1])
    rows = [[op, 100 * t / total] for op, t in ranked[:top]]
    rows.append(["(others)", 100 * sum(t for _, t in ranked[top:]) / total])
    return rows

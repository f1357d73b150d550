"""A jet-level MLP exported to ONNX, rewritten as a correctionlib ``lwtnn`` node.

correctionlib 2.9 evaluates dense networks through its LWTNN node (``schemav2.LWTNN``: an
lwtnn JSON configuration in ``opaque`` plus a ``finalizer`` formula). An analysis can then
apply the DNN calibration with correctionlib alone, without onnxruntime.

What is converted, from a file written by :func:`jec_coffea.export.export_onnx`:

- the inputs: the model's jet-level features (metadata ``inputs.jet.features``), in order,
  as real correction inputs named like the features; they take the *untransformed* values of
  :func:`jec_coffea.features.to_tensors` (raw pT, η, energy fractions, ...);
- the preprocessing of each feature (metadata ``transform``): a feature whose transform is
  linear (fitted centre/scale and linear steps only, no clip bounds) is folded into lwtnn's
  input ``offset``/``scale`` ((x + offset) * scale); any other feature gets a correctionlib
  ``transform`` node whose formula is the manual chain (log, log1p, abs, arcsinh, clip,
  linear), the replacement of non-finite results by the feature default (as a guarded
  formula: ``log`` of x <= 0 gives the default), the fitted scaling and the final clip;
- the network: a chain of Gemm (or MatMul + Add) layers with the activations lwtnn has
  (Relu, Tanh, Sigmoid, LeakyRelu, Elu, Abs), read from the graph initialisers; the last layer
  is linear with one output, ``log_correction`` = ln(pT_gen/pT_raw);
- the finalizer: ``exp(x)`` (the correction factor pT_corr/pT_raw, default) or the identity
  (the log correction).

Networks with other operations (GELU, LayerNorm, skip connections by Concat, embeddings of
categorical inputs, constituent inputs) have no lwtnn equivalent and are refused with
:class:`~jec_coffea.errors.ModelMismatchError` naming the operation. After conversion the
result is evaluated in numpy (same arithmetic as lwtnn) and compared with onnxruntime on
random inputs; a difference above ``atol`` is an error, so a silently wrong JSON is never
written.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import ModelMismatchError

__all__ = ["ACTIVATIONS", "DenseLayer", "dense_layers_from_onnx", "mlp_correction"]

logger = logging.getLogger(__name__)

ACTIVATIONS: dict[str, str] = {
    "Relu": "rectified",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "LeakyRelu": "leakyrelu",
    "Elu": "elu",
    "Abs": "abs",
}
"""ONNX activation operator -> lwtnn activation name."""

_PASS_THROUGH = {"Identity", "Squeeze", "Reshape", "Flatten", "Dropout", "Cast"}
"""Operators after the last dense layer that do not change values."""


class DenseLayer:
    """One dense layer: ``act(W x + b)`` with W (n_out, n_in) float64, b (n_out,)."""

    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        activation: str = "linear",
        alpha: float = math.nan,
    ) -> None:
        self.weight = np.asarray(weight, dtype=np.float64)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.activation = activation
        self.alpha = alpha

    def lwtnn(self) -> dict[str, Any]:
        """The lwtnn layer configuration (weights row-major: output rows of input columns)."""
        act: Any = self.activation
        if self.activation in ("leakyrelu", "elu"):
            act = {"function": self.activation, "alpha": float(self.alpha)}
        return {
            "architecture": "dense",
            "weights": [float(v) for v in self.weight.ravel()],
            "bias": [float(v) for v in self.bias],
            "activation": act,
        }

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight.T + self.bias
        a = self.activation
        if a == "rectified":
            return np.maximum(y, 0.0)
        if a == "tanh":
            return np.tanh(y)
        if a == "sigmoid":
            return 1.0 / (1.0 + np.exp(-y))
        if a == "leakyrelu":
            return np.where(y > 0, y, self.alpha * y)
        if a == "elu":
            return np.where(y > 0, y, self.alpha * np.expm1(y))
        if a == "abs":
            return np.abs(y)
        return y


def dense_layers_from_onnx(path: str | Path) -> list[DenseLayer]:
    """The dense chain at the end of an exported graph, from its first weight matrix to the output.

    Raises
    ------
    ModelMismatchError
        For an operator that is not a dense layer, a supported activation or a pass-through,
        for branches (a tensor used twice, e.g. a skip connection) and for a last layer with
        more than one output or with an activation.
    """
    import onnx
    from onnx import numpy_helper

    from jec_coffea.onnx_graph import unblock

    model = unblock(onnx.load(str(path)))  # the dense chain, outside any batch loop
    graph = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # constants may also come as Constant nodes
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    init[node.output[0]] = numpy_helper.to_array(a.t)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    start = next(
        (
            n
            for n in graph.node
            if n.op_type in ("Gemm", "MatMul")
            and len(n.input) > 1
            and n.input[1] in init
            and init[n.input[1]].ndim == 2
        ),
        None,
    )
    if start is None:
        msg = f"{path}: no dense layer (Gemm/MatMul with a weight matrix) in the graph"
        raise ModelMismatchError(msg)
    outputs = {o.name for o in graph.output}
    layers: list[DenseLayer] = []
    node: Any = start
    chain = start.input[0]  # the tensor flowing along the dense chain
    pending: DenseLayer | None = None
    while node is not None:
        op = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op == "Gemm":
            if pending is not None:
                layers.append(pending)
            w = init[node.input[1]].astype(np.float64)
            w = w if attrs.get("transB", 0) else w.T
            if attrs.get("transA", 0):
                msg = f"{path}: Gemm {node.name} with transA is not a dense layer on the features"
                raise ModelMismatchError(msg)
            w = w * float(attrs.get("alpha", 1.0))
            b = (
                init[node.input[2]].astype(np.float64) * float(attrs.get("beta", 1.0))
                if len(node.input) > 2 and node.input[2]
                else np.zeros(w.shape[0])
            )
            pending = DenseLayer(w, np.broadcast_to(b, (w.shape[0],)).copy())
        elif op == "MatMul" and node.input[1] in init:
            if pending is not None:
                layers.append(pending)
            w = init[node.input[1]].astype(np.float64).T
            pending = DenseLayer(w, np.zeros(w.shape[0]))
        elif op == "Add" and pending is not None and pending.activation == "linear":
            other = node.input[1] if node.input[0] == chain else node.input[0]
            if other not in init:
                msg = f"{path}: Add {node.name} adds a computed tensor (a skip connection?); lwtnn needs a plain chain"
                raise ModelMismatchError(msg)
            pending.bias = pending.bias + np.broadcast_to(
                init[other].astype(np.float64).reshape(-1), pending.bias.shape
            )
        elif (
            op in ACTIVATIONS and pending is not None and pending.activation == "linear"
        ):
            pending.activation = ACTIVATIONS[op]
            if op == "LeakyRelu":
                pending.alpha = float(attrs.get("alpha", 0.01))
            elif op == "Elu":
                pending.alpha = float(attrs.get("alpha", 1.0))
        elif op in _PASS_THROUGH:
            pass
        else:
            msg = (
                f"{path}: operator {op} ({node.name}) after the first dense layer has no lwtnn "
                f"equivalent; supported: Gemm/MatMul+Add and {sorted(ACTIVATIONS)} "
                "(GELU, LayerNorm, skip connections and embeddings cannot be converted)"
            )
            raise ModelMismatchError(msg)
        out = chain = node.output[0]
        if out in outputs:
            break
        nxt = consumers.get(out, [])
        nxt = [n for n in nxt if n.op_type != "Shape"]
        if len(nxt) != 1:
            msg = f"{path}: tensor {out} feeds {len(nxt)} operators ({[n.op_type for n in nxt]}); lwtnn needs a plain chain"
            raise ModelMismatchError(msg)
        node = nxt[0]
    if pending is not None:
        layers.append(pending)
    last = layers[-1]
    if last.weight.shape[0] != 1 or last.activation != "linear":
        msg = f"{path}: the last layer must be linear with one output (log correction); got {last.weight.shape[0]} outputs, activation {last.activation}"
        raise ModelMismatchError(msg)
    for a, b in itertools.pairwise(layers):
        if a.weight.shape[0] != b.weight.shape[1]:
            msg = f"{path}: layer widths do not chain ({a.weight.shape} -> {b.weight.shape})"
            raise ModelMismatchError(msg)
    return layers


def _num(v: float) -> str:
    text = f"{float(v):.17g}"
    return f"({text})" if text.startswith("-") else text


def _feature_formula(ft: Any) -> tuple[str, bool]:
    """(TFormula expression in x of the whole feature transform, is_linear_without_bounds)."""
    y = "x"
    cond: list[str] = []
    linear = ft.bounds is None
    for step in ft.steps:
        t = step.type
        if t == "log":
            cond.append(f"({y}>0)")
            y = f"log(max({y},1e-300))"
            linear = False
        elif t == "log1p":
            cond.append(f"({y}>-1)")
            y = f"log(1+max({y},-1+1e-15))"
            linear = False
        elif t == "abs":
            y = f"abs({y})"
            linear = False
        elif t == "arcsinh":
            y = f"asinh(({y})/{_num(step.scale)})"
            linear = False
        elif t == "clip":
            if step.max is not None:
                y = f"min({y},{_num(step.max)})"
            if step.min is not None:
                y = f"max({y},{_num(step.min)})"
            linear = False
        else:
            y = f"(({y})-{_num(step.loc)})/{_num(step.scale)}"
    if cond:
        c = "*".join(cond)
        y = f"({c})*({y})+(1-{c})*{_num(ft.default)}"
    if ft.scaling != "none":
        y = f"(({y})-{_num(ft.centre)})*{_num(ft.scale)}"
    if ft.bounds is not None:
        y = f"max(min({y},{_num(ft.bounds[1])}),{_num(ft.bounds[0])})"
    return y, linear


def _linear_offset_scale(ft: Any) -> tuple[float, float]:
    """lwtnn (offset, scale) with (x + offset) * scale equal to a linear feature transform."""
    a, b = 1.0, 0.0  # y = a x + b
    for step in ft.steps:
        a, b = a / step.scale, (b - step.loc) / step.scale
    if ft.scaling != "none":
        a, b = a * ft.scale, (b - ft.centre) * ft.scale
    return b / a, a


def mlp_correction(
    onnx_path: str | Path,
    *,
    name: str | None = None,
    output: Literal["factor", "log_correction"] = "factor",
    atol: float = 1e-5,
    n_check: int = 2000,
    seed: int = 0,
) -> Any:
    """The network of a jet-level MLP ONNX file as a correctionlib correction (lwtnn node).

    Parameters
    ----------
    onnx_path
        Model written by :func:`jec_coffea.export.export_onnx` with only the ``"jet"`` input.
    name
        Correction name (default ``<architecture>_dnn`` from the metadata).
    output
        ``"factor"``: exp(log_correction) = pT_corr/pT_raw; ``"log_correction"``:
        ln(pT_gen/pT_raw) as the ONNX output.
    atol, n_check, seed
        Self-check: the numpy evaluation of the converted network must agree with
        onnxruntime within ``atol`` (log units) on ``n_check`` random jets.

    Raises
    ------
    ModelMismatchError
        For constituent inputs, categorical features, unsupported operators or a failed check.
    """
    from correctionlib import schemav2 as cs

    from .export import read_onnx_metadata
    from .transform import Transform

    meta = read_onnx_metadata(onnx_path)
    names = list(meta.get("input_names", []))
    if names != ["jet"]:
        msg = f"{onnx_path}: inputs {names}; only jet-level models (input 'jet' alone) can become an lwtnn node"
        raise ModelMismatchError(msg)
    features = list(meta["inputs"]["jet"]["features"])
    transform = Transform.model_validate(meta["transform"])
    fts = transform.groups["jet"]
    cats = [f for f in features if fts[f].kind == "categorical"]
    if cats:
        msg = f"{onnx_path}: categorical features {cats} need embeddings, which lwtnn lacks"
        raise ModelMismatchError(msg)
    layers = dense_layers_from_onnx(onnx_path)
    if layers[0].weight.shape[1] != len(features):
        msg = f"{onnx_path}: first layer takes {layers[0].weight.shape[1]} inputs, the metadata lists {len(features)} features"
        raise ModelMismatchError(msg)

    lw_inputs, formulas = [], {}
    for f in features:
        expr, linear = _feature_formula(fts[f])
        if linear:
            offset, scale = _linear_offset_scale(fts[f])
        else:
            offset, scale = 0.0, 1.0
            formulas[f] = expr
        lw_inputs.append({"name": f, "offset": float(offset), "scale": float(scale)})
    out_name = "log_correction"
    opaque = {
        "inputs": lw_inputs,
        "layers": [layer.lwtnn() for layer in layers],
        "outputs": [out_name],
        "defaults": {},
        "miscellaneous": {
            "source": str(Path(onnx_path).name),
            "producer": "jec-coffea",
        },
    }
    node: Any = cs.LWTNN(
        nodetype="lwtnn",
        opaque=opaque,
        finalizer=cs.Formula(
            nodetype="formula",
            expression="exp(x)" if output == "factor" else "x",
            parser="TFormula",
            variables=[out_name],
        ),
    )
    for f in reversed(features):
        if f in formulas:
            node = cs.Transform(
                nodetype="transform",
                input=f,
                rule=cs.Formula(
                    nodetype="formula",
                    expression=formulas[f],
                    parser="TFormula",
                    variables=[f],
                ),
                content=node,
            )
    _self_check(onnx_path, features, fts, layers, atol=atol, n=n_check, seed=seed)
    arch = meta.get("architecture", "mlp")
    return cs.Correction(
        name=name or f"{arch}_dnn",
        version=1,
        description=(
            f"DNN jet energy correction {Path(onnx_path).name} ({arch}) as an lwtnn network with "
            "its preprocessing; inputs are the untransformed jet features of "
            "jec_coffea.features (raw pT, raw mass in GeV). Output: "
            + (
                "pT_corr/pT_raw = exp(ln(pT_gen/pT_raw) predicted)."
                if output == "factor"
                else "predicted ln(pT_gen/pT_raw)."
            )
        ),
        inputs=[
            cs.Variable(name=f, type="real", description=f"jet feature {f}")
            for f in features
        ],
        output=cs.Variable(
            name=output,
            type="real",
            description="pT_corr/pT_raw" if output == "factor" else "ln(pT_gen/pT_raw)",
        ),
        data=node,
    )


def _self_check(
    path: str | Path,
    features: Sequence[str],
    fts: Any,
    layers: Sequence[DenseLayer],
    *,
    atol: float,
    n: int,
    seed: int,
) -> None:
    """Compare the converted network (numpy, float64) with onnxruntime on random jets."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    x = rng.lognormal(1.0, 2.0, (n, len(features)))
    x[rng.random(x.shape) < 0.25] *= -1.0
    x[rng.random(x.shape) < 0.05] = 0.0
    x = x.astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"jet": x})[0].astype(np.float64).reshape(-1)
    h = np.stack(
        [
            fts[f].apply_numpy(x[:, i].astype(np.float64))
            for i, f in enumerate(features)
        ],
        axis=1,
    )
    for layer in layers:
        h = layer(h)
    diff = float(np.max(np.abs(h.reshape(-1) - ref)))
    logger.info("lwtnn conversion of %s: max |numpy - onnxruntime| = %.3g", path, diff)
    if not diff <= atol:
        msg = f"{path}: the converted network differs from onnxruntime by {diff:.3g} (> {atol}); the graph is not a plain preprocessing + dense chain"
        raise ModelMismatchError(msg)

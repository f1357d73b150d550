"""Issue 8: speed of the exported graph without changing what it computes.

The preprocessing slices out only the runs of columns with a manual chain or category list
(neighbours with the same chain together, arcsinh as a log formula, categories as one 2-D
MatMul) and joins the columns with one Concat; the default substitution, scaling, clip and
mask are one operation each on the whole (N, M * F) view of the tensor. ParticleNet gathers neighbours with one Gather of rows of
(N * P, C) instead of GatherElements through an expanded int64 index. Both must give the
numbers of the previous per-column / expanded-index code (kept below as the reference), on
real PFNano jets and on inputs with NaN, infinities, log(0) and unknown categories. The new
activations ``gelu_tanh`` and ``relu`` must export, match torch and stay fused in
onnxruntime's optimised graph.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_models import SPEC, as_torch, fitted_transform, make_inputs, tiny_model

from jec_coffea.export import check_parity, export_onnx
from jec_coffea.models import WithPreprocessing
from jec_coffea.models.particlenet import EdgeConv, knn
from jec_coffea.transform import Transform

REPO = Path(__file__).resolve().parents[1]

METADATA = {
    "validity": {"pt": [20.0, 3000.0], "eta": [-4.7, 4.7]},
    "detector_config_hash": "sha256:issue8",
    "config_hash": "sha256:issue8",
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine more threads only oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- references
def _reference_chain(ft, x: torch.Tensor) -> torch.Tensor:
    """The manual chain of one column (N, ...) as the previous TransformModule computed it."""
    if ft.kind == "categorical":
        cats = torch.tensor(ft.categories or [], dtype=torch.float32)
        hit = (x.unsqueeze(-1) == cats).to(x.dtype)
        index = torch.arange(cats.shape[0], dtype=x.dtype)
        return (hit * index).sum(-1) + cats.shape[0] * (1.0 - hit.sum(-1))
    ops = {
        "log": lambda y, s: torch.log(y),
        "log1p": lambda y, s: torch.log1p(y),
        "abs": lambda y, s: torch.abs(y),
        "arcsinh": lambda y, s: torch.asinh(y / s.scale),
        "clip": lambda y, s: torch.clamp(y, min=s.min, max=s.max),
        "linear": lambda y, s: (y - s.loc) / s.scale,
    }
    for step in ft.steps:
        x = ops[step.type](x, step)
    return x


def _vec(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _reference_transform(
    transform: Transform, inputs: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The previous TransformModule: one full-tensor Where per special column, then the
    default substitution, scaling, clip and mask with per-column vectors."""
    out = {}
    for group, named in transform.groups.items():
        feats = list(named.values())
        y = inputs[group]
        for j, ft in enumerate(feats):
            if ft.steps or ft.kind == "categorical":
                column = torch.zeros(len(feats), dtype=torch.bool)
                column[j] = True
                col = _reference_chain(ft, y[..., j])
                y = torch.where(column, col.unsqueeze(-1), y)
        numerical = _vec([ft.kind == "numerical" for ft in feats]) > 0
        scaled = [ft.kind == "numerical" and ft.scaling != "none" for ft in feats]
        y = torch.where(
            torch.isfinite(y) | ~numerical, y, _vec([ft.default for ft in feats])
        )
        pairs = list(zip(feats, scaled, strict=True))
        y = (y - _vec([f.centre if s else 0.0 for f, s in pairs])) * _vec(
            [f.scale if s else 1.0 for f, s in pairs]
        )
        lo = _vec([f.bounds[0] if f.bounds else -math.inf for f in feats])
        hi = _vec([f.bounds[1] if f.bounds else math.inf for f in feats])
        y = torch.minimum(torch.maximum(y, lo), hi)
        if group != "jet":
            y = y * inputs[f"{group}_mask"].unsqueeze(-1)
        out[group] = y
    return out


def _reference_gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The previous neighbour gather: GatherElements through an expanded index."""
    n, p, k = idx.shape
    flat = idx.reshape(n, p * k, 1).expand(-1, -1, x.shape[-1])
    return torch.gather(x, 1, flat).reshape(n, p, k, x.shape[-1])


def _reference_edgeconv(
    block: EdgeConv, points: torch.Tensor, h: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    idx = knn(points, mask, block.k)
    own = torch.arange(points.shape[1]).reshape(1, -1, 1)
    nbr_valid = _reference_gather(mask.unsqueeze(-1), idx).squeeze(-1) * mask.unsqueeze(
        -1
    )
    nbr_valid = nbr_valid * (idx != own).to(mask.dtype)
    e = block.self_proj(h).unsqueeze(2) + _reference_gather(block.nbr_proj(h), idx)
    e = block.edge(e)
    count = nbr_valid.sum(-1, keepdim=True).clamp(min=1.0)
    agg = (e * nbr_valid.unsqueeze(-1)).sum(2) / count
    return torch.nn.functional.gelu(agg + block.shortcut(h)) * mask.unsqueeze(-1)


# --------------------------------------------------------------------------- helpers
def _hostile(x: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Copy of raw inputs with NaN, ±inf, zeros (log 0) and negative values scattered over
    every column of the valid slots, and unknown categories."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in x.items()}
    for name, v in out.items():
        if name.endswith("_mask"):
            continue
        pick = rng.random(v.shape) < 0.08
        bad = rng.choice(
            np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, 99.0], np.float32),
            v.shape,
        )
        v[pick] = bad[pick]
        if name != "jet":
            v[out[f"{name}_mask"] == 0] = 0.0  # padding stays 0, as to_tensors gives it
    return out


def _assert_same(transform: Transform, inputs: dict[str, np.ndarray]) -> None:
    x = as_torch(inputs)
    with torch.no_grad():
        got = transform.to_torch()(x)
        want = _reference_transform(transform, x)
    for group in transform.groups:
        assert torch.isfinite(got[group]).all(), group
        torch.testing.assert_close(got[group], want[group], rtol=0, atol=1e-6)


def _deepsets_config_transform(shared_data: Path):
    """Real PFNano jets through the features and fitted transform of models/deepsets.yaml
    (arcsinh and log1p chains, a categorical column)."""
    from jec_coffea.config import TrainingConfig
    from jec_coffea.data import read_jet_table
    from jec_coffea.features import to_tensors

    config = TrainingConfig.load(REPO / "models" / "deepsets.yaml")
    table = read_jet_table(shared_data / "pfnano" / "coffea_pfnano.root")
    tensors = to_tensors(table.jets, config.features)
    return config.unfitted_transform().fit(tensors), tensors


def _nodes(graph: Any) -> list[Any]:
    """Every node of ``graph`` and of its subgraphs (the batch loop's body)."""
    out = []
    for node in graph.node:
        out.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out += _nodes(attr.g)
    return out


def _optimised_ops(path: Path, tmp_path: Path) -> set[str]:
    """Operator types of the graph onnxruntime runs (ORT_ENABLE_ALL, saved offline)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.opt.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    return {node.op_type for node in _nodes(graph)}


# --------------------------------------------------------------------------- tests
@pytest.mark.shared_data
def test_preprocessing_equals_previous_code_on_real_jets(shared_data):
    transform, tensors = _deepsets_config_transform(shared_data)
    assert len(tensors["jet"]) > 20
    _assert_same(transform, tensors)
    _assert_same(transform, _hostile(tensors, seed=3))


def test_preprocessing_equals_previous_code_with_per_column_bounds():
    """SPEC's categorical column has 7 indices (more than the ±5 clip): per-column bounds;
    a feature with scaling 'none' is unbounded."""
    data = make_inputs(np.random.default_rng(4), 400)
    transform = fitted_transform(SPEC, data)
    _assert_same(transform, data)
    _assert_same(transform, _hostile(data, seed=5))
    groups = dict(transform.groups)
    groups["sv"] = {
        **groups["sv"],
        "mass": groups["sv"]["mass"].model_copy(
            update={"scaling": "none", "bounds": None, "centre": None, "scale": None}
        ),
    }
    unscaled = Transform(groups=groups)
    _assert_same(unscaled, _hostile(data, seed=6))


def test_preprocessing_graph_has_one_where_per_input(tmp_path):
    """The previous graph had one full-tensor Where per transformed column (9 for SPEC)."""
    data = make_inputs(np.random.default_rng(8), 300)
    transform = fitted_transform(SPEC, data)
    model = tiny_model("deepsets", transform)
    path = export_onnx(model, transform, SPEC, tmp_path / "ds.onnx", METADATA)
    ops = [node.op_type for node in _nodes(onnx.load(str(path)).graph)]
    assert ops.count("Where") == len(transform.groups)
    assert transform.to_torch().state_dict() == {}


def test_asinh_formula_follows_torch_asinh():
    """Within one float32 ulp of 1 below |u| = 1, 1e-6 relative above, within ln 2 beyond
    the square root's guard; NaN and ±inf as torch.asinh gives them."""
    from jec_coffea.models.preprocess import ASINH_SQRT_MAX, _asinh

    u = torch.tensor(
        [0.0, 1e-30, 1e-7, 1e-3, 0.5, 0.999, 1.0, 10.0, 1e3, 1e8, 1e18, 1.7e19]
    )
    u = torch.cat([u, -u])
    got, want = _asinh(u).double(), torch.asinh(u.double())
    small = u.abs() < 1
    assert (got[small] - want[small]).abs().max() <= 1.2e-7
    assert ((got[~small] - want[~small]) / want[~small]).abs().max() <= 1e-6
    beyond = torch.tensor([2 * ASINH_SQRT_MAX, 1e30, 3e38, -3e38])
    err = _asinh(beyond).double() - torch.asinh(beyond.double())
    assert (err.abs() <= math.log(2) + 1e-5).all()
    special = _asinh(torch.tensor([math.inf, -math.inf, math.nan]))
    assert special[0] == math.inf
    assert special[1] == -math.inf
    assert special[2].isnan()


def test_neighbouring_columns_with_one_chain_share_their_operators(tmp_path):
    """deta and dphi, both arcsinh with different scales, are one run: one Div by the tiled
    scales and one arcsinh formula (one Sign), no Asinh; numbers as the previous code."""
    data = make_inputs(np.random.default_rng(11), 300)
    steps = {
        "charged": {
            "deta": [{"type": "arcsinh", "scale": 0.05}],
            "dphi": [{"type": "arcsinh", "scale": 0.2}],
        }
    }
    transform = Transform.from_spec(
        SPEC, steps=steps, categorical={"charged": {"pv_assoc_quality": None}}
    ).fit(data)
    _assert_same(transform, data)
    _assert_same(transform, _hostile(data, seed=12))
    model = tiny_model("deepsets", transform)
    path = export_onnx(model, transform, SPEC, tmp_path / "runs.onnx", METADATA)
    ops = [node.op_type for node in _nodes(onnx.load(str(path)).graph)]
    assert "Asinh" not in ops
    assert ops.count("Sign") == 1


def test_particlenet_flat_gather_equals_expanded_gather(tmp_path):
    torch.manual_seed(2)
    n, p, width = 5, 23, 8
    block = EdgeConv(width, [16, 16], k=4).eval()
    points = torch.randn(n, p, 2)
    h = torch.randn(n, p, width)
    mask = (torch.rand(n, p) < 0.6).float()
    mask[0] = 0.0  # an empty jet
    mask[1, 2:] = 0.0  # fewer valid points than k
    with torch.no_grad():
        torch.testing.assert_close(
            block(points, h, mask),
            _reference_edgeconv(block, points, h, mask),
            rtol=0,
            atol=1e-6,
        )
    data = make_inputs(np.random.default_rng(9), 300)
    transform = fitted_transform(SPEC, data)
    model = tiny_model("particlenet", transform)
    path = export_onnx(model, transform, SPEC, tmp_path / "pn.onnx", METADATA)
    ops = {node.op_type for node in _nodes(onnx.load(str(path)).graph)}
    assert "GatherElements" not in ops
    assert "Gather" in ops


@pytest.mark.parametrize(
    ("activation", "fused", "unfused"),
    [
        ("gelu", {"BiasGelu", "Gelu"}, {"Erf"}),
        ("gelu_tanh", {"FastGelu"}, {"Tanh", "Pow"}),
        ("relu", {"FusedGemm"}, {"Relu"}),
    ],
)
def test_activations_export_and_stay_fused(activation, fused, unfused, tmp_path):
    from jec_coffea.models import build_model

    data = make_inputs(np.random.default_rng(10), 300)
    transform = fitted_transform(SPEC, data)
    torch.manual_seed(0)
    model = build_model(
        {
            "architecture": "deepsets",
            "categorical": transform.cardinalities(),
            "phi": [32, 32],
            "head": [16],
            "activation": activation,
        },
        SPEC,
    )
    path = export_onnx(
        model, transform, SPEC, tmp_path / f"{activation}.onnx", METADATA
    )
    module = WithPreprocessing(transform.to_torch(), model).eval()
    for n in (1, 7):
        assert (
            check_parity(path, module, make_inputs(np.random.default_rng(n), n)) <= 1e-5
        )
    ops = _optimised_ops(path, tmp_path)
    assert ops & fused, f"{activation}: none of {fused} in {sorted(ops)}"
    assert not ops & unfused, f"{activation}: unfused {sorted(ops & unfused)}"

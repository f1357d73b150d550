"""Issue 8 (inference speed): bucketing is exact for ParticleNet and the default batch.

The wrapper sorts jets by constituent count and cuts each batch's padding for ParticleNet too
(its kNN puts padded points at distance 1e9, appends its own dummy points and averages only
valid neighbours). These tests export a small ParticleNet with the real ``export_onnx`` and
check bucketed against padded evaluation on the PFNano file, including jets with fewer
constituents than k and jets with none.
"""

from __future__ import annotations

import numpy as np
import pytest
from _tiny_onnx import DS_SPEC

from jec_coffea.data import read_jet_table
from jec_coffea.features import to_tensors
from jec_coffea.inference import DEFAULT_BATCH_SIZE, OnnxModel, _bucket_order

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def particlenet(tmp_path_factory, shared_data):
    torch = pytest.importorskip("torch")
    from jec_coffea.export import export_onnx
    from jec_coffea.models import build_model
    from jec_coffea.transform import Transform

    table = read_jet_table(shared_data / "pfnano" / "coffea_pfnano.root")
    tensors = to_tensors(table, DS_SPEC)
    transform = Transform.from_spec(DS_SPEC).fit(tensors)
    config = {
        "architecture": "particlenet",
        "size": "custom",
        "edge_convs": [{"k": 4, "channels": [8, 8]}, {"k": 4, "channels": [8]}],
        "embed_dim": 8,
        "head": [8],
    }
    torch.manual_seed(5)
    model = build_model(config, DS_SPEC)
    meta = {
        "validity": {"pt": [5.0, 6500.0], "eta": [-5.2, 5.2]},
        "detector_config_hash": "test",
        "config_hash": "test",
    }
    path = tmp_path_factory.mktemp("pn") / "particlenet.onnx"
    export_onnx(model, transform, DS_SPEC, path, meta)
    return path, tensors


def test_particlenet_is_bucketed_by_default(particlenet):
    path, _ = particlenet
    model = OnnxModel(path)
    assert model.bucket
    assert model.batch_size == DEFAULT_BATCH_SIZE


def test_particlenet_bucketed_equals_padded(particlenet):
    path, tensors = particlenet
    # few and no constituents: some jets with fewer than k = 4 points, some with none
    edited = {k: v.copy() for k, v in tensors.items()}
    for i, keep in ((0, 0), (1, 1), (2, 3)):
        for ctype in ("charged", "neutral"):
            edited[f"{ctype}_mask"][i, keep:] = 0.0
            edited[ctype][i, keep:] = 0.0
    counts = edited["charged_mask"].sum(1)
    assert counts.min() == 0
    assert len(np.unique(counts)) > 5  # buckets really differ in width
    padded = OnnxModel(path, bucket=False, batch_size=4096).evaluate(edited)
    for batch in (1, 7, 64):
        bucketed = OnnxModel(path, bucket=True, batch_size=batch).evaluate(edited)
        assert np.isfinite(bucketed).all()
        np.testing.assert_allclose(bucketed, padded, rtol=0, atol=1e-6)


def test_bucket_order_groups_by_largest_then_total_count():
    num = {
        "charged": np.array([5, 1, 5, 1, 3, 0]),
        "neutral": np.array([2, 9, 1, 0, 4, 5]),
    }
    order = _bucket_order(num, ["charged", "neutral"], {"charged": 64, "neutral": 32})
    # largest count 5, 9, 5, 1, 4, 5; ties at 5 broken by the total (7, 6, 5), stably
    assert order.tolist() == [3, 4, 5, 2, 0, 1]

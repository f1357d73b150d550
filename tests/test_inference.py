"""The onnxruntime wrapper: metadata checks, pickling, batching, bucketing, shared inputs.

Small DeepSets and MLP models (random weights, transform fitted on the PFNano file) are
exported once per session with the real ``export_onnx``; every test compares against a plain
``onnxruntime.InferenceSession`` fed by ``to_tensors``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from _tiny_onnx import DS_SPEC, MLP_SPEC, direct, tiny_onnx_models, with_metadata

from jec_coffea.data import read_jet_table
from jec_coffea.errors import InputFileError, ModelMismatchError
from jec_coffea.features import FeatureSpec, to_tensors
from jec_coffea.inference import (
    OnnxModel,
    build_inputs,
    spec_from_metadata,
    union_spec,
)

pytestmark = pytest.mark.shared_data

PFNANO = "pfnano/coffea_pfnano.root"


@pytest.fixture(scope="session")
def pfnano_table(shared_data):
    return read_jet_table(shared_data / PFNANO)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, shared_data) -> dict[str, Path]:
    return tiny_onnx_models(tmp_path_factory, shared_data)


# --------------------------------------------------------------------------- metadata


def test_spec_from_metadata_restores_the_training_spec(tiny_models):
    model = OnnxModel(tiny_models["deepsets"])
    assert model.spec == DS_SPEC
    assert model.input_names == DS_SPEC.input_names()
    assert model.bucket  # dynamic constituent axes, padding-invariant architecture
    mlp = OnnxModel(tiny_models["mlp"])
    assert mlp.spec == MLP_SPEC
    assert mlp.input_names == ["jet"]


def _rename_feature(doc):
    doc["inputs"]["charged"]["features"][0] = "rel_ptt"
    return doc


def _old_version(doc):
    doc["feature_version"] = "0"
    return doc


def _unknown_type(doc):
    doc["input_names"] = [*doc["input_names"], "photons"]
    return doc


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_rename_feature, r"rel_ptt.*did you mean 'rel_pt'"),
        (_old_version, r"version '0'.*FEATURE_VERSION|version '0'"),
        (_unknown_type, r"\['photons'\] are neither 'jet' nor a constituent type"),
        (lambda doc: None, r"no 'jec_coffea' entry in the ONNX metadata_props"),
    ],
    ids=["unknown-feature", "feature-version", "unknown-input", "no-metadata"],
)
def test_metadata_mismatch_is_refused_at_construction(
    tiny_models, tmp_path, edit, match
):
    bad = with_metadata(tiny_models["deepsets"], tmp_path / "bad.onnx", edit)
    with pytest.raises(ModelMismatchError, match=match) as info:
        OnnxModel(bad)
    assert str(bad) in str(info.value)


def test_unreadable_model_names_the_file(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not an onnx model")
    with pytest.raises(InputFileError, match=r"broken\.onnx: cannot read ONNX model"):
        OnnxModel(path)
    with pytest.raises(InputFileError, match=r"nothere\.onnx"):
        OnnxModel(tmp_path / "nothere.onnx")
    with pytest.raises(ValueError, match="batch_size"):
        OnnxModel(path.read_bytes(), batch_size=0)


def test_spec_from_metadata_rejects_missing_keys():
    with pytest.raises(ModelMismatchError, match="lacks"):
        spec_from_metadata({"feature_version": "1"}, "m.onnx")


# --------------------------------------------------------------------------- evaluation


def test_matches_plain_session_for_every_batch_size(tiny_models, pfnano_table):
    path = tiny_models["deepsets"]
    tensors = to_tensors(pfnano_table, DS_SPEC)
    want = direct(path, tensors)
    assert want.shape == (len(pfnano_table),)
    # the busiest jets are truncated, others padded: bucketing really cuts the axis
    counts = tensors["charged_mask"].sum(axis=1)
    assert counts.max() == DS_SPEC.max_constituents["charged"] > counts.min()
    results = {}
    for batch_size in (1, 5, 17, 4096):
        for bucket in (True, False):
            model = OnnxModel(path, batch_size=batch_size, bucket=bucket)
            results[batch_size, bucket] = model.evaluate(tensors)
    for key, got in results.items():
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=str(key))
    # the model is not trivially constant
    assert np.std(want) > 1e-3


def test_call_dispatches_numpy_awkward_and_dask(tiny_models, pfnano_table):
    dak = pytest.importorskip("dask_awkward")
    model = OnnxModel(tiny_models["deepsets"], batch_size=16)
    tensors = model.prepare(pfnano_table)
    want = model(tensors)
    np.testing.assert_array_equal(model(pfnano_table), want)
    np.testing.assert_array_equal(model(pfnano_table.jets), want)
    lazy = dak.from_awkward(pfnano_table.jets, npartitions=3)
    out = model(lazy)
    assert isinstance(out, dak.Array)
    np.testing.assert_allclose(ak.to_numpy(out.compute()), want, atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match="cannot evaluate a list"):
        model([1, 2, 3])


def test_missing_input_names_the_tensor(tiny_models, pfnano_table):
    model = OnnxModel(tiny_models["deepsets"])
    tensors = model.prepare(pfnano_table)
    del tensors["neutral"], tensors["neutral_mask"]
    with pytest.raises(ModelMismatchError, match=r"\['neutral', 'neutral_mask'\]"):
        model.evaluate(tensors)
    assert model.evaluate(
        {k: v[:0] for k, v in model.prepare(pfnano_table).items()}
    ).shape == (0,)


def test_pickles_without_session_and_recreates_it(tiny_models, pfnano_table):
    model = OnnxModel(tiny_models["deepsets"])
    tensors = model.prepare(pfnano_table)
    want = model.evaluate(tensors)
    assert model._session is not None
    blob = pickle.dumps(model)
    # the model bytes travel once; the session never does
    assert len(blob) < len(model._bytes) + 20_000
    clone = pickle.loads(blob)
    assert clone._session is None
    np.testing.assert_array_equal(clone.evaluate(tensors), want)
    assert clone._session is not None
    state = clone.__getstate__()
    assert state["_session"] is None


def test_shared_inputs_equal_separate_builds(tiny_models, pfnano_table):
    specs = [OnnxModel(p).spec for p in tiny_models.values()]
    shared = build_inputs(pfnano_table, specs)
    union = union_spec(specs)
    assert union.jet[: len(DS_SPEC.jet)] == DS_SPEC.jet
    assert set(union.jet) == set(DS_SPEC.jet) | set(MLP_SPEC.jet)
    for spec in specs:
        alone = to_tensors(pfnano_table, spec)
        got = shared.for_spec(spec)
        assert set(got) == set(alone)
        for key in alone:
            np.testing.assert_array_equal(got[key], alone[key], err_msg=key)
    # fewer slots than the shared build: the first M pT-ordered slots
    small = DS_SPEC.model_copy(
        update={"max_constituents": {"charged": 5, "neutral": 3}}
    )
    for key, value in to_tensors(pfnano_table, small).items():
        np.testing.assert_array_equal(shared.for_spec(small)[key], value)
    more = DS_SPEC.model_copy(
        update={"max_constituents": {"charged": 99, "neutral": 3}}
    )
    with pytest.raises(ModelMismatchError, match="99"):
        shared.for_spec(more)
    other = FeatureSpec(jet=["npv"])
    with pytest.raises(ModelMismatchError, match=r"lack jet features \['npv'\]"):
        shared.for_spec(other)

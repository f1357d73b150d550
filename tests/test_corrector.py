"""DNNJetCorrector (issue 6, item 1): pt_dnn parity, Runner and dask paths, refusals, flags.

The reference everywhere is a plain ``onnxruntime.InferenceSession`` fed with the training
reader's tensors (``read_jet_table`` + ``to_tensors``).
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path
from typing import ClassVar

import awkward as ak
import numpy as np
import pytest
from _tiny_onnx import DS_SPEC, direct, tiny_onnx_models
from coffea import processor
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory, PFNanoAODSchema

from jec_coffea import shipped
from jec_coffea.corrector import DNNJetCorrector, apply_correctors
from jec_coffea.data import OldPFNanoAODSchema, layout_branches, read_jet_table
from jec_coffea.errors import ConfigError, InputFileError, ModelMismatchError
from jec_coffea.features import to_tensors
from jec_coffea.inference import OnnxModel, build_inputs

pytestmark = [
    pytest.mark.shared_data,
    # coffea's schemas warn about cross-references these test files lack
    pytest.mark.filterwarnings("ignore:Missing cross-reference index:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Found duplicate branch:RuntimeWarning"),
]

PFNANO = "pfnano/coffea_pfnano.root"
OLD_PFNANO = "pfnano/cmsjet_nano106X_on_mini106X_2017_mc_NANO.root"
NANOAOD = "nanoaod/coffea_nano_dy.root"
FIELDS = ("pt_raw", "mass_raw", "dnn_factor", "pt_dnn", "mass_dnn", "dnn_valid")


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_data) -> dict[str, Path]:
    return tiny_onnx_models(tmp_path_factory, shared_data)


@pytest.fixture(scope="module")
def deepsets(models) -> DNNJetCorrector:
    return DNNJetCorrector.from_onnx(models["deepsets"], batch_size=16)


@pytest.fixture(scope="module")
def pfnano_events(shared_data):
    """Virtual NanoEvents of the PFNano file (opened once: the schema build takes seconds)."""
    return events_of(shared_data / PFNANO)


def events_of(path, schema=PFNanoAODSchema, mode="virtual", **kwargs):
    return NanoEventsFactory.from_root(
        {str(path): "Events"}, schemaclass=schema, mode=mode, **kwargs
    ).events()


def reference_pt(model_path: Path, file: Path, spec) -> tuple[np.ndarray, object]:
    """pT_raw exp(ŷ) with ŷ from a plain session on the training reader's tensors."""
    table = read_jet_table(file)
    y = direct(model_path, to_tensors(table, spec)).astype(np.float64)
    return ak.to_numpy(table.jets.pt_raw) * np.exp(y), table


def flat(jets, field: str) -> np.ndarray:
    return ak.to_numpy(ak.flatten(jets[field], axis=None))


# --------------------------------------------------------------------------- parity


def test_pt_dnn_equals_plain_onnxruntime_on_pfnano(
    shared_data, models, deepsets, pfnano_events
):
    file = shared_data / PFNANO
    want, table = reference_pt(models["deepsets"], file, DS_SPEC)
    events = pfnano_events
    jets = deepsets.apply(events)
    assert set(FIELDS) <= set(jets.fields)
    # one output per NanoAOD jet, in the jets' own structure
    assert ak.to_list(ak.num(jets.pt_dnn)) == ak.to_list(ak.num(events.Jet))
    np.testing.assert_allclose(flat(jets, "pt_dnn"), want, rtol=1e-6, atol=0)
    factor = flat(jets, "dnn_factor")
    np.testing.assert_allclose(
        flat(jets, "mass_dnn"), ak.to_numpy(table.jets.mass_raw) * factor, rtol=1e-12
    )
    # raw kinematics are Jet_pt (1 - rawFactor), kept next to the corrected ones
    raw = ak.flatten(events.Jet.pt * (1 - events.Jet.rawFactor))
    np.testing.assert_allclose(flat(jets, "pt_raw"), ak.to_numpy(raw), rtol=1e-6)
    assert np.all(flat(jets, "dnn_valid"))
    assert np.std(np.log(factor)) > 1e-3


class SimSchema(PFNanoAODSchema):
    """PFNanoAODSchema without the Vertex mixin of ``PV``: the simulated files store PV_npvs,
    PV_npvsGood and PV_z but no PV_x/PV_y, which coffea's VertexArray requires."""

    mixins: ClassVar[dict[str, str]] = {
        k: v for k, v in PFNanoAODSchema.mixins.items() if k != "PV"
    }


def test_pt_dnn_equals_plain_onnxruntime_on_simulation(sim_sample, models, deepsets):
    file = min(sim_sample.glob("*.root"))
    want, _ = reference_pt(models["deepsets"], file, DS_SPEC)
    assert len(want) > 100
    jets = deepsets.apply(events_of(file, schema=SimSchema))
    got = flat(jets, "pt_dnn")
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


# --------------------------------------------------------------------------- execution paths


class CorrectedPt(processor.ProcessorABC):
    """Collects pt_dnn per chunk, keyed by the chunk's first entry."""

    def __init__(self, corrector: DNNJetCorrector) -> None:
        self.corrector = corrector

    def process(self, events):
        jets = self.corrector.apply(events)
        start = events.metadata["entrystart"]
        return {
            "pt_dnn": {start: ak.to_numpy(ak.flatten(jets.pt_dnn))},
            "valid": {start: ak.to_numpy(ak.flatten(jets.dnn_valid))},
        }

    def postprocess(self, accumulator):
        return accumulator


def _concat(chunks: dict) -> np.ndarray:
    return np.concatenate([chunks[k] for k in sorted(chunks)])


def test_runner_iterative_equals_eager(shared_data, deepsets, pfnano_events):
    file = shared_data / PFNANO
    eager = flat(deepsets.apply(pfnano_events), "pt_dnn")
    runner = processor.Runner(
        executor=processor.IterativeExecutor(), schema=PFNanoAODSchema, chunksize=5
    )
    out = runner(
        {"sample": {"files": {str(file): "Events"}}},
        CorrectedPt(deepsets),
        treename="Events",
    )
    assert len(out["pt_dnn"]) == 2  # 10 events in chunks of 5
    np.testing.assert_allclose(_concat(out["pt_dnn"]), eager, rtol=1e-6, atol=0)
    assert _concat(out["valid"]).all()


def test_dask_awkward_equals_eager_and_reads_only_builder_branches(
    shared_data, deepsets, pfnano_events
):
    dak = pytest.importorskip("dask_awkward")
    file = shared_data / PFNANO
    eager = deepsets.apply(pfnano_events)
    lazy = deepsets.apply(events_of(file, mode="dask"))
    assert isinstance(lazy, dak.Array)
    columns = set(next(iter(dak.necessary_columns(lazy.pt_dnn).values())))
    read = layout_branches(file)
    # exactly the branches the jet-table builder reads, plus the counts of collections
    assert read <= columns
    assert all(c.startswith("n") for c in columns - read), columns - read
    computed = lazy.compute()
    for field in ("pt_dnn", "mass_dnn", "dnn_factor"):
        np.testing.assert_allclose(
            flat(computed, field), flat(eager, field), rtol=1e-6, atol=0
        )
    assert ak.to_list(ak.num(computed.pt_dnn)) == ak.to_list(ak.num(eager.pt_dnn))


@pytest.mark.dask
def test_dask_distributed_workers_create_their_own_session(
    shared_data, models, dask_client
):
    file = shared_data / PFNANO
    corrector = DNNJetCorrector.from_onnx(models["deepsets"])
    steps = {str(file): {"object_path": "Events", "steps": [[0, 5], [5, 10]]}}
    events = NanoEventsFactory.from_root(
        steps, schemaclass=PFNanoAODSchema, mode="dask"
    ).events()
    lazy = corrector.apply(events)
    assert lazy.npartitions == 2
    got = dask_client.compute(lazy.pt_dnn).result()
    assert corrector.model._session is None  # evaluated on the workers only
    want, _ = reference_pt(models["deepsets"], file, DS_SPEC)
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(got)), want, rtol=1e-6)


def test_several_models_share_one_feature_build(shared_data, models, deepsets):
    table = read_jet_table(shared_data / PFNANO)
    mlp = DNNJetCorrector.from_onnx(models["mlp"])
    shared = build_inputs(table, [deepsets.spec, mlp.spec])
    for corrector in (deepsets, mlp):
        np.testing.assert_array_equal(
            corrector.log_correction(table, inputs=shared),
            corrector.log_correction(table),
        )
    y = deepsets.log_correction(table)
    assert y.dtype == np.float64
    assert y.shape == (len(table),)


def test_processor_methods_in_jet_slices_equal_one_pass(shared_data, models, deepsets):
    """estimate_models takes the jets ``slice_jets`` at a time (bounded memory): the same
    pT as one pass, for a shared build of two models and for one model alone, and a model
    refusing the table is still skipped with its reason."""
    from jec_coffea.processors.methods import estimate_models

    table = read_jet_table(shared_data / PFNANO)
    mlp = DNNJetCorrector.from_onnx(models["mlp"])
    assert len(table) > 20
    for chosen in ({"ds": deepsets, "mlp": mlp}, {"ds": deepsets}):
        whole = estimate_models(table, chosen)
        for size in (1, 7, len(table) - 1):
            sliced = estimate_models(table, chosen, slice_jets=size)
            assert list(sliced) == list(chosen)
            for name in chosen:
                np.testing.assert_allclose(
                    sliced[name].pt, whole[name].pt, rtol=1e-6, atol=0
                )
    old = read_jet_table(shared_data / OLD_PFNANO)
    skipped = estimate_models(old, {"ds": deepsets, "mlp": mlp}, slice_jets=5)
    assert skipped["ds"].pt is None
    assert "not applicable" in skipped["ds"].reason
    assert skipped["mlp"].pt is not None
    assert skipped["mlp"].pt.shape == (len(old),)
    with pytest.raises(ValueError, match="slice size must be >= 1"):
        estimate_models(table, {"ds": deepsets}, slice_jets=0)


def test_apply_correctors_in_jet_slices_equals_one_pass(
    models, deepsets, pfnano_events, monkeypatch
):
    import jec_coffea.inference

    mlp = DNNJetCorrector.from_onnx(models["mlp"], prefix="mlp")
    with pytest.warns(UserWarning, match="validity") as whole_warnings:
        whole = apply_correctors(pfnano_events, [deepsets, mlp])
    monkeypatch.setattr(jec_coffea.inference, "DNN_SLICE_JETS", 7)
    with pytest.warns(UserWarning, match="validity") as sliced_warnings:
        sliced = apply_correctors(pfnano_events, [deepsets, mlp])
    # the same warnings (one per model and chunk, whole-chunk counts), not one per slice
    assert [str(w.message) for w in sliced_warnings] == [
        str(w.message) for w in whole_warnings
    ]
    assert ak.sum(ak.num(sliced)) > 7 * 3  # several slices
    for field in ("pt_dnn", "dnn_valid", "pt_mlp", "mass_mlp", "mlp_factor"):
        np.testing.assert_allclose(
            flat(sliced, field), flat(whole, field), rtol=1e-6, atol=0
        )


def test_apply_correctors_builds_once_for_several_models(
    models, deepsets, pfnano_events
):
    mlp = DNNJetCorrector.from_onnx(models["mlp"], prefix="mlp")
    with pytest.warns(UserWarning, match="validity"):
        both = apply_correctors(pfnano_events, [deepsets, mlp])
    np.testing.assert_array_equal(
        flat(both, "pt_dnn"), flat(deepsets.apply(pfnano_events), "pt_dnn")
    )
    with pytest.warns(UserWarning, match="validity"):
        alone = mlp.apply(pfnano_events)
    for field in ("pt_mlp", "mlp_valid"):
        np.testing.assert_array_equal(flat(both, field), flat(alone, field))
    with pytest.raises(ConfigError, match=r"prefixes \['dnn', 'dnn'\] repeat"):
        apply_correctors(pfnano_events, [deepsets, deepsets])


# --------------------------------------------------------------------------- refusals


def test_model_without_constituents_in_file_is_refused_before_any_event(
    shared_data, models
):
    corrector = DNNJetCorrector.from_onnx(models["deepsets"])
    nano = shared_data / NANOAOD
    with pytest.raises(ModelMismatchError, match=r"coffea_nano_dy\.root.*\['charged'"):
        corrector.check_file(nano)
    nano_events = events_of(nano, schema=NanoAODSchema)
    with pytest.raises(ModelMismatchError, match=r"constituent type\(s\) \['charged'"):
        corrector.apply(nano_events)
    # the dask graph is refused when it is built, before anything is computed
    with pytest.raises(ModelMismatchError, match="does not store"):
        corrector.apply(events_of(nano, schema=NanoAODSchema, mode="dask"))
    assert corrector.model._session is None  # no event was evaluated
    # a jet-level model applies to the same file
    mlp = DNNJetCorrector.from_onnx(models["mlp"])
    assert mlp.check_file(nano) == "nanoaod"
    with pytest.warns(UserWarning, match="validity"):
        jets = mlp.apply(nano_events)
    assert np.all(np.isfinite(flat(jets, "pt_dnn")))


def test_old_pfnano_incomplete_constituents_are_refused(shared_data, models):
    corrector = DNNJetCorrector.from_onnx(models["deepsets"])
    old = shared_data / OLD_PFNANO
    with pytest.raises(
        ModelMismatchError, match="only part of each jet's constituents"
    ):
        corrector.check_file(old)
    with pytest.raises(ModelMismatchError, match="only part"):
        corrector.apply(events_of(old, schema=OldPFNanoAODSchema))
    with pytest.raises(ModelMismatchError, match="constituents_complete is false"):
        corrector.log_correction(read_jet_table(old))
    assert corrector.model._session is None


def test_bad_options_are_config_errors(models):
    model = OnnxModel(models["deepsets"])
    with pytest.raises(ConfigError, match="unknown layout 'pfnan'"):
        DNNJetCorrector(model, layout="pfnan")
    with pytest.raises(ConfigError, match="prefix"):
        DNNJetCorrector(model, prefix="pt dnn")


# --------------------------------------------------------------------------- flags and finiteness


def test_out_of_range_jets_are_flagged_and_finite(shared_data, models, pfnano_events):
    mlp = DNNJetCorrector.from_onnx(models["mlp"])  # valid for 30-200 GeV, |eta| <= 2
    table = read_jet_table(shared_data / PFNANO)
    pt = ak.to_numpy(table.jets.pt_raw)
    eta = ak.to_numpy(table.jets.eta)
    expected = (pt >= 30) & (pt <= 200) & (np.abs(eta) <= 2)
    assert 0 < expected.sum() < len(expected)
    with pytest.warns(
        UserWarning, match=r"\d+ of 64 jets outside the model's validity"
    ):
        jets = mlp.apply(pfnano_events)
    np.testing.assert_array_equal(flat(jets, "dnn_valid"), expected)
    assert np.all(np.isfinite(flat(jets, "pt_dnn")))
    assert np.all(flat(jets, "dnn_factor") > 0)


def test_puppi_jets_with_chs_model_are_flagged(models, pfnano_events):
    puppi = DNNJetCorrector.from_onnx(models["deepsets"], jet_type="AK4PFPuppi")
    assert puppi.puppi_weighted
    with pytest.warns(UserWarning, match="AK4PFPuppi jets, the model is for AK4PFchs"):
        jets = puppi.apply(pfnano_events)
    assert not flat(jets, "dnn_valid").any()
    assert np.all(np.isfinite(flat(jets, "pt_dnn")))


def test_zero_constituents_and_nonfinite_features_give_finite_corrections(
    shared_data, deepsets
):
    table = read_jet_table(shared_data / PFNANO)
    array = table.jets
    n = len(array)
    empty = np.arange(n) % 3 == 0
    for ctype in ("charged", "neutral"):
        counts = ak.to_numpy(ak.num(array[ctype]))
        keep = ~np.repeat(empty, counts)
        array[ctype] = ak.unflatten(
            ak.flatten(array[ctype])[keep], np.where(empty, 0, counts)
        )
    bad = np.arange(n) % 4 == 1
    array["area"] = np.where(bad, np.nan, ak.to_numpy(array.area))
    array["event_rho"] = np.where(bad, np.inf, ak.to_numpy(array.event_rho))
    array["chHEF"] = np.where(bad, -np.inf, ak.to_numpy(array.chHEF))
    table.jets = array
    tensors = to_tensors(table, deepsets.spec)
    assert tensors["charged_mask"][empty].sum() == 0
    y = deepsets.log_correction(table)
    assert np.all(np.isfinite(y))
    # jets without constituents still depend on their jet-level inputs
    assert np.unique(np.round(y[empty], 6)).size > 1
    columns = deepsets.correct(table)
    assert np.all(np.isfinite(columns["pt_dnn"]))


def test_nonfinite_network_output_is_replaced_and_flagged(
    shared_data, deepsets, monkeypatch
):
    table = read_jet_table(shared_data / PFNANO)
    model = deepsets.model
    original = model.evaluate

    def broken(tensors):
        y = original(tensors)
        y[::5] = np.nan
        return y

    monkeypatch.setattr(model, "evaluate", broken)
    with pytest.warns(UserWarning, match="non-finite network output"):
        columns = deepsets.correct(table)
    assert np.all(np.isfinite(columns["pt_dnn"]))
    np.testing.assert_array_equal(columns["dnn_factor"][::5], 1.0)
    assert not columns["dnn_valid"][::5].any()
    assert columns["dnn_valid"][1::5].all()


def test_prefix_names_the_fields_of_each_model(models, pfnano_events):
    corrector = DNNJetCorrector.from_onnx(models["deepsets"], prefix="ds")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no validity warning here
        jets = corrector.apply(pfnano_events)
    assert {"pt_ds", "mass_ds", "ds_factor", "ds_valid"} <= set(jets.fields)


# --------------------------------------------------------------------------- shipped models


def test_from_shipped_lists_what_is_shipped(models, tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "shipped_dir", lambda: tmp_path)
    with pytest.raises(InputFileError, match="installed shipped models: none"):
        DNNJetCorrector.from_shipped("deepsets")
    with pytest.raises(ConfigError, match=r"did you mean 'deepsets'.*mlp_nanoaod"):
        DNNJetCorrector.from_shipped("deepset")
    shutil.copy(models["deepsets"], tmp_path / "deepsets.onnx")
    assert shipped.shipped_models() == ["deepsets"]
    corrector = DNNJetCorrector.from_shipped("deepsets.onnx")
    assert corrector.spec == DS_SPEC
    with pytest.raises(InputFileError, match="installed shipped models: deepsets"):
        DNNJetCorrector.from_shipped("particlenet")


@pytest.mark.parametrize("name", ["deepsets", "particlenet"])
def test_shipped_models_read_puppi_weights(name, shared_data):
    """The shipped models were trained on samples with PUPPI weights (the simulation's
    PUPPI), so their transforms scale ``puppiWeight`` like any other input and, on the real
    PFNano (weights below 1 for most neutral and a third of the charged candidates), their
    corrections differ from those with every weight set to 1 (median 0.9% for Deep Sets, 2.2%
    for ParticleNet): the models before v3 saw only weights of 1 and ignored them."""
    corrector = DNNJetCorrector.from_shipped(name)
    groups = corrector.metadata["transform"]["groups"]
    reading = [g for g, features in groups.items() if "puppi_weight" in features]
    assert "charged" in reading  # ParticleNet's neutral group has no PUPPI input
    for group in reading:
        assert groups[group]["puppi_weight"]["scale"] > 0.0, group
    table = read_jet_table(shared_data / PFNANO)
    jets = table.jets
    weights = ak.to_numpy(ak.flatten(jets.neutral.puppiWeight))
    assert np.mean(weights < 0.999) > 0.5  # real PUPPI weights
    ones = jets
    for group in ("charged", "neutral"):
        constituents = ak.with_field(
            jets[group], ak.ones_like(jets[group].puppiWeight), "puppiWeight"
        )
        ones = ak.with_field(ones, constituents, group)
    pinned = dataclasses.replace(table, jets=ones)
    shift = np.abs(corrector.log_correction(table) - corrector.log_correction(pinned))
    assert np.median(shift) > 1e-3

"""Issue 8: the flat-numpy ``to_tensors`` and feature evaluation equal the awkward definitions.

The reference below is the straightforward awkward implementation: every registry compute
function on the jagged jet table, ``ak.argsort`` by decreasing pT, ``[:, :M]``,
``ak.pad_none(clip=True)`` + ``ak.fill_none``. The flat path must give the same float32 tensors
bit for bit (the ONNX models trained so far read these features) and the same replacement
counts, on simulated and real PFNano files, with unsorted constituents, pT ties, jets without
constituents, more constituents than M, absent SVs, lazy selections and option-type layouts.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from jec_coffea.data.jet_table import CONSTITUENT_TYPES, JetTable
from jec_coffea.features import (
    CONSTITUENT_FEATURES,
    JET_FEATURES,
    FeatureSpec,
    ReplacementCounts,
    constituent_features,
    jet_features,
    to_tensors,
)

ALL_JET = list(JET_FEATURES)
ALL_CONSTITUENT = {t: list(CONSTITUENT_FEATURES[t]) for t in CONSTITUENT_TYPES}


def _clean(raw, default: float) -> ak.Array:
    """float64 values with None, NaN and inf replaced by ``default`` (any depth)."""
    values = ak.fill_none(ak.values_astype(raw, np.float64), np.nan, axis=-1)
    return ak.where(np.isfinite(values), values, default)


def reference_tensors(array: ak.Array, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The tensors of ``spec`` computed with awkward operations only."""
    out: dict[str, np.ndarray] = {}
    n = len(array)
    if spec.jet:
        cols = []
        for name in spec.jet:
            d = JET_FEATURES[name]
            if all(f in array.fields for f in d.jet_fields):
                with np.errstate(all="ignore"):
                    cols.append(ak.to_numpy(_clean(d.compute(array), d.default)))
            else:
                cols.append(np.full(n, d.default))
        out["jet"] = np.stack(cols, axis=1).astype(np.float32)
    for ctype, names in spec.constituents.items():
        if ctype not in array.fields:
            continue
        m = spec.max_constituents[ctype]
        cands = array[ctype]
        if "pt" in cands.fields:
            cands = cands[ak.argsort(cands.pt, axis=1, ascending=False, stable=True)]
        cands = cands[:, :m]
        cols = []
        for name in names:
            d = CONSTITUENT_FEATURES[ctype][name]
            compute, _ = d.resolve(array.fields, cands.fields)
            if compute is None:
                values = ak.local_index(cands, axis=1) * 0.0 + d.default
            else:
                with np.errstate(all="ignore"):
                    values = _clean(compute(array, cands), d.default)
            padded = ak.fill_none(ak.pad_none(values, m, axis=1, clip=True), 0.0)
            cols.append(ak.to_numpy(padded).reshape(n, m))
        ones = ak.ones_like(ak.local_index(cands, axis=1))
        mask = ak.fill_none(ak.pad_none(ones, m, axis=1, clip=True), 0)
        out[ctype] = (
            np.stack(cols, axis=-1).reshape(n, m, len(names)).astype(np.float32)
        )
        out[f"{ctype}_mask"] = ak.to_numpy(mask).reshape(n, m).astype(np.float32)
    return out


def _spec(array: ak.Array, m: dict[str, int]) -> FeatureSpec:
    types = [t for t in CONSTITUENT_TYPES if t in m]
    return FeatureSpec(
        jet=ALL_JET,
        constituents={t: ALL_CONSTITUENT[t] for t in types},
        max_constituents={t: m[t] for t in types},
    )


def _optional(array: ak.Array) -> ak.Array:
    """The same jets behind an option type: not plain columns, so the awkward path runs."""
    return ak.mask(array, np.ones(len(array), np.bool_))


def assert_same_as_reference(array: ak.Array, m: dict[str, int]) -> None:
    spec = _spec(array, m)
    counts = ReplacementCounts()
    got = to_tensors(array, spec, counts=counts)
    want = reference_tensors(array, spec)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == np.float32
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    # replacement counts equal those of the awkward path (forced by an option-type layout)
    counts_ak = ReplacementCounts()
    via_awkward = to_tensors(_optional(array), spec, counts=counts_ak)
    assert counts.as_dict() == counts_ak.as_dict()
    for key, value in want.items():
        np.testing.assert_array_equal(via_awkward[key], value, err_msg=key)


def _shuffled(array: ak.Array, ctype: str, seed: int) -> ak.Array:
    """Constituents of ``ctype`` permuted within each jet, with pT ties (unsorted input)."""
    cands = array[ctype]
    num = ak.to_numpy(ak.num(cands, axis=1))
    flat = ak.flatten(cands, axis=1)
    rng = np.random.default_rng(seed)
    jet = np.repeat(np.arange(len(num)), num)
    perm = np.lexsort((rng.random(len(jet)), jet))
    flat = flat[perm]
    pt = ak.to_numpy(flat.pt).copy()
    pt[1::3] = pt[::3][: len(pt[1::3])]  # exact ties, mostly within a jet
    flat = ak.with_field(flat, pt, "pt")
    return ak.with_field(array, ak.unflatten(flat, num), ctype)


@pytest.fixture(scope="module")
def pfnano(shared_data) -> JetTable:
    from jec_coffea.data.reader import read_jet_table

    return read_jet_table(str(shared_data / "pfnano/coffea_pfnano.root"))


@pytest.fixture(scope="module")
def simulated(sim_sample) -> JetTable:
    from jec_coffea.data.reader import read_jet_table

    return read_jet_table(str(min(sim_sample.glob("*.root"))), entry_stop=60)


@pytest.mark.shared_data
def test_real_pfnano_equals_reference(pfnano):
    jets = pfnano.jets
    num = {t: ak.to_numpy(ak.num(jets[t], axis=1)) for t in CONSTITUENT_TYPES}
    # the file covers what the test is about
    assert (num["sv"] == 0).any()
    assert (num["sv"] > 0).any()
    assert (num["charged"] > 8).any()
    assert (num["neutral"] == 0).any() or (num["charged"] == 0).any()
    assert_same_as_reference(jets, {"charged": 8, "neutral": 4, "sv": 2})
    assert_same_as_reference(jets, {"charged": 64, "neutral": 32, "sv": 8})


@pytest.mark.shared_data
def test_unsorted_constituents_ties_selection_and_missing_sv(pfnano):
    jets = pfnano.jets
    shuffled = _shuffled(_shuffled(jets, "charged", 1), "neutral", 2)
    assert_same_as_reference(shuffled, {"charged": 6, "neutral": 3, "sv": 2})
    # a lazy selection (IndexedArray) and a slice (offsets not starting at 0)
    keep = np.arange(len(jets)) % 3 != 1
    assert_same_as_reference(shuffled[keep], {"charged": 5, "neutral": 40, "sv": 1})
    assert_same_as_reference(jets[7:40], {"charged": 3, "neutral": 3, "sv": 3})
    # a table without SVs: no sv tensors, n_sv defaulted
    no_sv = jets[[f for f in jets.fields if f != "sv"]]
    spec = _spec(no_sv, {"charged": 4, "neutral": 4, "sv": 2})
    counts = ReplacementCounts()
    got = to_tensors(no_sv, spec, counts=counts)
    assert "sv" not in got
    assert "sv_mask" not in got
    assert counts.missing["jet.n_sv"] == len(jets)
    assert_same_as_reference(no_sv, {"charged": 4, "neutral": 4})
    # zero jets
    empty = to_tensors(jets[:0], spec)
    assert empty["charged"].shape == (0, 4, len(ALL_CONSTITUENT["charged"]))


@pytest.mark.shared_data
def test_nan_pt_and_jet_features_and_constituent_features(pfnano):
    jets = _shuffled(pfnano.jets, "charged", 3)
    # NaN pT: ordered as ak.argsort orders it
    flat = ak.flatten(jets.charged, axis=1)
    pt = ak.to_numpy(flat.pt).copy()
    pt[5] = np.nan
    nan_jets = ak.with_field(
        jets,
        ak.unflatten(ak.with_field(flat, pt, "pt"), ak.num(jets.charged, axis=1)),
        "charged",
    )
    assert_same_as_reference(nan_jets, {"charged": 4, "neutral": 2, "sv": 1})
    # the public evaluation functions agree with the awkward path, values and counts
    c_flat, c_ak = ReplacementCounts(), ReplacementCounts()
    f_flat = jet_features(jets, ALL_JET, counts=c_flat)
    f_ak = jet_features(_optional(jets), ALL_JET, counts=c_ak)
    for ctype in CONSTITUENT_TYPES:
        flat_c = constituent_features(
            jets, ctype, ALL_CONSTITUENT[ctype], counts=c_flat
        )
        ak_c = constituent_features(
            _optional(jets), ctype, ALL_CONSTITUENT[ctype], counts=c_ak
        )
        for name in ALL_CONSTITUENT[ctype]:
            assert ak.all(ak.num(flat_c[name]) == ak.num(ak_c[name]))
            np.testing.assert_array_equal(
                ak.to_numpy(ak.flatten(flat_c[name])),
                ak.to_numpy(ak.flatten(ak.fill_none(ak_c[name], np.nan))),
            )
    for name in ALL_JET:
        np.testing.assert_array_equal(f_flat[name], f_ak[name], err_msg=name)
    assert c_flat.as_dict() == c_ak.as_dict()


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "relpath",
    [
        "pfnano/cmsjet_nano106X_on_mini106X_2017_mc_NANO.root",
        "jetclass/sophon_JetClassII_example.root",
    ],
)
def test_other_layouts_equal_reference(shared_data, relpath):
    """Old PFNano layout (no SVs) and JetClass-II (flag fields: the alternative spellings)."""
    from jec_coffea.data.reader import read_jet_table

    jets = read_jet_table(str(shared_data / relpath)).jets
    m = {t: 5 for t in CONSTITUENT_TYPES if t in jets.fields}
    assert_same_as_reference(jets, m)


@pytest.mark.slow
def test_simulated_pfnano_equals_reference(simulated):
    jets = simulated.jets
    assert len(jets) > 100
    assert_same_as_reference(jets, {"charged": 64, "neutral": 32, "sv": 8})
    assert_same_as_reference(
        _shuffled(jets, "neutral", 4), {"charged": 3, "neutral": 7, "sv": 1}
    )

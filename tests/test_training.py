"""Training: losses, reweighting, batching, the loop (every architecture), resume, DDP, CLI.

Most tests use a synthetic jet table built in columns below: the reconstructed pT is the
charged pT (tracker response 1) plus the neutral pT times a pT-dependent calorimeter response
(0.55 + 0.08 ln(pT_gen / 20 GeV)), so the target ln(pT_gen / pT_raw) is predictable from the
neutral fraction and pT, as in a real detector, and a network must beat the best constant.
The end-to-end command-line tests (train, build-transform, steer, torchrun) read the ml-jec
ntuples of ../shared/data through their data.yaml.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from jec_coffea.cli import main
from jec_coffea.config import (
    LossConfig,
    ReweightingConfig,
    SelectionConfig,
    TrainingConfig,
)
from jec_coffea.data.jet_table import FLAVOUR_GROUPS, JetTable, flavour_group
from jec_coffea.errors import ConfigError, ModelMismatchError
from jec_coffea.training import (
    BatchLoader,
    JetArrays,
    build_split_arrays,
    make_loss,
    selection_mask,
    steer,
    train,
    training_weights,
)
from jec_coffea.training.adversarial import fgsm_inputs

REPO = Path(__file__).resolve().parents[1]


def _jagged(counts, columns):
    return ak.zip({k: ak.unflatten(v, counts) for k, v in columns.items()})


def synthetic_table(n: int = 512, seed: int = 1, source: str = "synthetic") -> JetTable:
    rng = np.random.default_rng(seed)
    pt_gen = 20.0 * np.exp(rng.exponential(1.2, n))
    eta_gen = rng.uniform(-2.4, 2.4, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    had = rng.choice([0, 4, 5, 0], n)
    par = np.where(had == 5, 5, np.where(had == 4, 4, rng.choice([1, 2, 3, 21], n)))
    f_ch = rng.beta(4, 3, n)  # charged pT fraction at gen level
    r_ne = 0.55 + 0.08 * np.log(pt_gen / 20.0)  # neutral response rises with pT
    n_ch = rng.poisson(6, n) + 1
    n_ne = rng.poisson(4, n) + 1
    n_sv = np.where(had == 5, rng.integers(1, 3, n), 0)

    def split(total, counts):
        w = rng.exponential(1.0, counts.sum())
        seg = np.repeat(np.arange(n), counts)
        s = np.bincount(seg, w, minlength=n)
        return w / s[seg] * total[seg], seg

    ch_pt, ch_seg = split(pt_gen * f_ch * rng.normal(1.0, 0.02, n), n_ch)
    ne_pt, ne_seg = split(pt_gen * (1 - f_ch) * r_ne * rng.normal(1.0, 0.05, n), n_ne)
    sv_pt, sv_seg = split(0.3 * pt_gen, n_sv)
    pt_raw = np.bincount(ch_seg, ch_pt, n) + np.bincount(ne_seg, ne_pt, n)
    e_frac_ch = np.bincount(ch_seg, ch_pt, n) / pt_raw

    def cands(pt, seg, extra):
        m = len(pt)
        cols = {
            "pt": pt.astype(np.float32),
            "eta": (eta_gen[seg] + rng.normal(0, 0.1, m)).astype(np.float32),
            "phi": (phi[seg] + rng.normal(0, 0.1, m)).astype(np.float32),
            "mass": np.zeros(m, np.float32),
        }
        cols.update({k: f(m) for k, f in extra.items()})
        return cols

    charged = cands(
        ch_pt,
        ch_seg,
        {
            "pdgId": lambda m: rng.choice([211, -211, 11, -13], m).astype(np.int32),
            "charge": lambda m: rng.choice([-1, 1], m).astype(np.int32),
            "d0": lambda m: rng.normal(0, 0.01, m).astype(np.float32),
            "d0Err": lambda m: np.full(m, 0.005, np.float32),
            "dz": lambda m: rng.normal(0, 0.02, m).astype(np.float32),
            "dzErr": lambda m: np.full(m, 0.01, np.float32),
            "puppiWeight": lambda m: np.ones(m, np.float32),
            "pvAssocQuality": lambda m: rng.choice([4, 5, 6, 7], m).astype(np.int32),
            "lostInnerHits": lambda m: rng.choice([-1, 0, 1], m).astype(np.int32),
            "trkChi2": lambda m: rng.exponential(1.0, m).astype(np.float32),
        },
    )
    neutral = cands(
        ne_pt,
        ne_seg,
        {
            "pdgId": lambda m: rng.choice([22, 130], m).astype(np.int32),
            "puppiWeight": lambda m: np.ones(m, np.float32),
        },
    )
    sv = cands(
        sv_pt,
        sv_seg,
        {
            "ntracks": lambda m: rng.integers(2, 6, m).astype(np.int32),
            "chi2": lambda m: rng.exponential(2.0, m).astype(np.float32),
            "ndof": lambda m: np.full(m, 3.0, np.float32),
            "dxy": lambda m: rng.exponential(0.2, m).astype(np.float32),
            "dxySig": lambda m: rng.exponential(5.0, m).astype(np.float32),
            "dlen": lambda m: rng.exponential(0.3, m).astype(np.float32),
            "dlenSig": lambda m: rng.exponential(6.0, m).astype(np.float32),
            "pAngle": lambda m: rng.exponential(0.05, m).astype(np.float32),
        },
    )
    jets = ak.zip(
        {
            "run": np.ones(n, np.uint32),
            "luminosityBlock": np.ones(n, np.uint32),
            "event": np.arange(n, dtype=np.uint64) + 1000 * seed,
            "entry": np.arange(n, dtype=np.int64),
            "jet_index": np.zeros(n, np.int32),
            "event_rho": rng.uniform(5, 30, n).astype(np.float32),
            "npv": rng.integers(10, 40, n).astype(np.int32),
            "gen_weight": np.ones(n, np.float32),
            "pt_raw": pt_raw.astype(np.float32),
            "eta": eta_gen.astype(np.float32),
            "phi": phi.astype(np.float32),
            "mass_raw": (0.1 * pt_raw).astype(np.float32),
            "area": rng.normal(0.5, 0.03, n).astype(np.float32),
            "chHEF": (0.8 * e_frac_ch).astype(np.float32),
            "neHEF": (0.5 * (1 - e_frac_ch)).astype(np.float32),
            "chEmEF": (0.2 * e_frac_ch).astype(np.float32),
            "neEmEF": (0.5 * (1 - e_frac_ch)).astype(np.float32),
            "muEF": np.zeros(n, np.float32),
            "n_constituents": (n_ch + n_ne).astype(np.int32),
            "n_electrons": np.zeros(n, np.int32),
            "n_muons": np.zeros(n, np.int32),
            "jet_id": np.full(n, 6, np.int32),
            "matched": np.ones(n, bool),
            "pt_gen": pt_gen.astype(np.float32),
            "eta_gen": eta_gen.astype(np.float32),
            "phi_gen": phi.astype(np.float32),
            "mass_gen": (0.1 * pt_gen).astype(np.float32),
            "hadron_flavour": had.astype(np.int32),
            "parton_flavour": par.astype(np.int32),
            "flavour_group": flavour_group(had, par),
            "constituents_complete": np.ones(n, bool),
            "charged": _jagged(n_ch, charged),
            "neutral": _jagged(n_ne, neutral),
            "sv": _jagged(n_sv, sv),
        },
        depth_limit=1,
    )
    return JetTable(jets=jets, layout="pfnano", source=source)


# --------------------------------------------------------------------------- helpers
SMALL_MODELS = {
    "mlp_nanoaod": {"hidden": [32, 32], "head": [32]},
    "deepsets": {"phi": [32, 32], "head": [32]},
    "particlenet": {
        "size": "custom",
        "edge_convs": [{"k": 4, "channels": [16, 16]}],
        "embed_dim": 16,
        "head": [32],
    },
    "part": {
        "dim": 16,
        "heads": 2,
        "particle_blocks": 1,
        "class_blocks": 1,
        "pair_hidden": [8],
        "head": [32],
        "dropout": 0.0,
    },
}


def _config(name: str = "deepsets", **top) -> TrainingConfig:
    """A shipped example configuration made small (constituents, widths) for tests."""
    raw = yaml.safe_load((REPO / "models" / f"{name}.yaml").read_text())
    raw["data"]["dataset"] = "/nonexistent/data.yaml"  # tables are passed directly
    raw["data"]["batch_size"] = 64
    raw["data"]["split"] = {"train": 0.8, "val": 0.1, "test": 0.1}
    if "max_constituents" in raw["data"]:
        raw["data"]["max_constituents"] = {"charged": 12, "neutral": 8, "sv": 4}
    raw["model"].update(SMALL_MODELS[name])
    raw["reweighting"] = {"target": "none", "class_balance": False}
    raw["schedule"] = {"type": "constant"}
    raw["optimizer"] = {"type": "adamw", "lr": 3e-3, "weight_decay": 0.0}
    raw["early_stopping"] = {"enabled": False}
    raw["device"] = "cpu"
    raw["num_threads"] = 1  # 2 shared cores: more threads only spin
    for key, value in top.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[section] = value
    return TrainingConfig.from_dict(raw)


def _predict(result, cfg, arrays: JetArrays) -> np.ndarray:
    from jec_coffea.transform import Transform

    transform = Transform.from_yaml(result.out_dir / "transform.yaml")
    inputs = {
        k: torch.from_numpy(v) for k, v in transform.apply_numpy(arrays.inputs).items()
    }
    raw = {k: torch.from_numpy(v) for k, v in arrays.inputs.items()}
    loss = make_loss(cfg.loss)
    with torch.no_grad():
        return loss.prediction(result.network(inputs, raw=raw)).numpy()


@pytest.fixture(scope="module")
def table() -> JetTable:
    return synthetic_table(640, seed=5)


# --------------------------------------------------------------------------- losses
def test_point_losses_match_hand_computation():
    y = torch.tensor([0.0, 0.1, -0.3, 2.0])
    p = torch.tensor([0.05, 0.1, 0.2, -1.0])
    d = (p - y).numpy()
    w = torch.tensor([1.0, 2.0, 0.5, 0.5])
    expect = {
        "mae": np.abs(d),
        "mse": d**2,
        "huber": np.where(np.abs(d) < 0.1, 0.5 * d**2, 0.1 * (np.abs(d) - 0.05)),
        "logcosh": np.log(np.cosh(d)),
    }
    for name, per_jet in expect.items():
        loss = make_loss(LossConfig(type=name, delta=0.1))
        assert loss.n_outputs == 1
        np.testing.assert_allclose(
            loss.per_jet(p, y).numpy(), per_jet, rtol=1e-5, atol=1e-7
        )
        np.testing.assert_allclose(
            float(loss(p, y, w)), np.mean(per_jet * w.numpy()), rtol=1e-5
        )
    # log-cosh stays finite far out, where cosh overflows float32
    big = make_loss(LossConfig(type="logcosh"))
    assert torch.isfinite(big.per_jet(torch.tensor([200.0]), torch.tensor([0.0]))).all()


def _is_minimum(loss, point, y, step=0.01):
    """The batch loss at ``point`` (1, K) is below the loss at every ±step move."""
    base = float(loss(point.expand(len(y), -1), y))
    for k in range(point.shape[1]):
        for sign in (-1, 1):
            moved = point.clone()
            moved[0, k] += sign * step
            if float(loss(moved.expand(len(y), -1), y)) <= base:
                return False
    return True


def test_quantile_loss_non_crossing_and_minimised_by_quantiles():
    from jec_coffea.training.losses import _OFFSET_SHIFT, _quantiles

    loss = make_loss(LossConfig(type="quantile", quantiles=[0.25, 0.5, 0.75]))
    assert loss.n_outputs == 3
    raw_out = torch.randn(100, 3) * 5
    q = _quantiles(raw_out, 1)
    assert (q[:, 0] <= q[:, 1]).all()
    assert (q[:, 1] <= q[:, 2]).all()
    assert torch.equal(loss.prediction(raw_out), raw_out[:, 1])
    # the raw outputs that put the quantiles at the sample quantiles minimise the loss
    y = torch.randn(4001, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.1
    q25, q50, q75 = np.quantile(y.numpy(), [0.25, 0.5, 0.75])
    inv = lambda off: math.log(math.expm1(off)) + _OFFSET_SHIFT
    point = torch.tensor([[inv(q50 - q25), q50, inv(q75 - q50)]], dtype=torch.float64)
    np.testing.assert_allclose(
        _quantiles(point, 1)[0].numpy(), [q25, q50, q75], atol=1e-9
    )
    assert _is_minimum(loss, point, y.double())
    assert abs(float(loss.width(point)[0]) - 0.5 * (q75 - q25)) < 1e-9


def test_gaussian_nll_minimum_at_mean_and_width():
    loss = make_loss(LossConfig(type="gaussian_nll"))
    assert loss.n_outputs == 2
    y = (
        torch.randn(4000, generator=torch.Generator().manual_seed(1)) * 0.15 - 0.05
    ).double()
    mu, sigma = float(y.mean()), float(y.std(correction=0))
    point = torch.tensor([[mu, math.log(sigma)]], dtype=torch.float64)
    assert _is_minimum(loss, point, y)
    assert abs(float(loss.width(point)[0]) - sigma) < 1e-12
    assert float(loss.prediction(point)[0]) == mu


def test_loss_refuses_wrong_output_width():
    loss = make_loss(LossConfig(type="quantile"))
    with pytest.raises(ValueError, match="needs 3 network outputs"):
        loss(torch.zeros(4), torch.zeros(4))


# --------------------------------------------------------------------------- weights
def _kinematics(n=20000, seed=2):
    rng = np.random.default_rng(seed)
    flavour = rng.choice([0, 1, 2, 3], n, p=[0.5, 0.1, 0.1, 0.3]).astype(np.int8)
    # flavour-dependent spectra: b harder, g softer
    slope = np.array([1.0, 1.0, 0.6, 1.4])[flavour]
    pt = 20 * np.exp(rng.exponential(slope))
    eta = rng.uniform(-4.5, 4.5, n) * np.where(flavour == 2, 0.5, 1.0)
    return pt, eta, flavour


def _hist(pt, eta, flavour, w, cfg):
    from jec_coffea.training.reweighting import flavour_bin_counts

    h, _ = flavour_bin_counts(
        pt,
        np.abs(eta),
        flavour,
        w,
        np.asarray(cfg.pt_edges),
        np.asarray(cfg.abs_eta_edges),
    )
    return h


def test_flat_reweighting_with_class_balance():
    pt, eta, flavour = _kinematics()
    cfg = ReweightingConfig(target="flat", class_balance=True, max_weight=None)
    w = training_weights(pt, eta, flavour, cfg)
    assert w.dtype == np.float32
    assert abs(w.mean() - 1) < 1e-5
    h = _hist(pt, eta, flavour, w.astype(float), cfg)
    for f in range(4):
        populated = h[f][h[f] > 0]
        np.testing.assert_allclose(populated, populated.mean(), rtol=1e-5)
    totals = h.sum(axis=(1, 2))[:4]
    np.testing.assert_allclose(totals, totals.mean(), rtol=1e-5)


def test_class_balance_leaves_the_unknown_group_its_share():
    """A handful of jets without flavour must not be blown up to the size of a group."""
    rng = np.random.default_rng(3)
    n = 20_000
    flavour = rng.choice(4, size=n, p=[0.4, 0.15, 0.15, 0.3])
    flavour[:20] = FLAVOUR_GROUPS.index("unknown")
    pt = rng.uniform(20, 500, n)
    eta = rng.uniform(-2.5, 2.5, n)
    cfg = ReweightingConfig(target="none", class_balance=True, max_weight=None)
    w = training_weights(pt, eta, flavour, cfg).astype(float)
    totals = np.bincount(flavour, weights=w, minlength=len(FLAVOUR_GROUPS))
    np.testing.assert_allclose(totals[:4], totals[:4].mean(), rtol=1e-6)
    unknown = FLAVOUR_GROUPS.index("unknown")
    assert totals[unknown] / w.sum() < 0.002  # 20 of 20,000 jets keep ~their share
    assert w.sum() ** 2 / np.sum(w**2) > 0.8 * n  # effective statistics stay high


@pytest.mark.parametrize("target", ["reference", "average"])
def test_reweighting_to_a_common_shape(target):
    pt, eta, flavour = _kinematics()
    cfg = ReweightingConfig(
        target=target, reference_flavour="uds", class_balance=False, max_weight=None
    )
    w = training_weights(pt, eta, flavour, cfg).astype(float)
    h = _hist(pt, eta, flavour, w, cfg)
    # every flavour has the shape of uds (the reference, or like uds the average) over
    # the bins it populates
    for f in range(1, 4):
        m = h[f] > 0
        np.testing.assert_allclose(
            h[f][m] / h[f][m].sum(), h[0][m] / h[0][m].sum(), rtol=1e-6
        )
    if target == "reference":
        raw_uds = _hist(pt, eta, flavour, np.ones(len(pt)), cfg)[0]
        np.testing.assert_allclose(
            h[0] / h[0].sum(), raw_uds / raw_uds.sum(), rtol=1e-6
        )
    # without class balance every flavour keeps its share of the total weight
    raw_share = np.bincount(flavour, minlength=5)[:4] / len(pt)
    np.testing.assert_allclose(h.sum(axis=(1, 2))[:4] / h.sum(), raw_share, rtol=1e-6)


def test_reweighting_clip_gen_weight_and_errors():
    pt, eta, flavour = _kinematics(2000)
    gw = np.where(np.arange(2000) % 2 == 0, 2.0, 1.0)
    none = ReweightingConfig(target="none", class_balance=False, use_gen_weight=True)
    with_gw = training_weights(pt, eta, flavour, none, gen_weight=gw)
    np.testing.assert_allclose(with_gw, gw / gw.mean(), rtol=1e-6)
    default = ReweightingConfig(target="none", class_balance=False)
    np.testing.assert_array_equal(
        training_weights(pt, eta, flavour, default, gen_weight=gw), 1.0
    )
    flat = ReweightingConfig(target="flat", max_weight=None)
    unclipped = training_weights(pt, eta, flavour, flat)
    clipped = training_weights(
        pt, eta, flavour, flat.model_copy(update={"max_weight": 3.0})
    )
    assert unclipped.max() > 3.0
    assert abs(clipped.mean() - 1) < 1e-5
    # every jet above the cap ends at the same (largest) weight
    assert np.sum(np.isclose(clipped, clipped.max())) >= np.sum(unclipped > 3.0)
    assert clipped.max() < unclipped.max()
    with pytest.raises(ConfigError, match="reference_flavour is 'c'"):
        training_weights(
            pt,
            eta,
            np.where(flavour == 1, 0, flavour),
            ReweightingConfig(target="reference", reference_flavour="c"),
        )
    assert len(training_weights(pt[:0], eta[:0], flavour[:0], ReweightingConfig())) == 0


# --------------------------------------------------------------------------- data
def test_selection_cutflow(table):
    jets = table.jets
    mod = ak.with_field(
        jets,
        np.where(np.arange(len(jets)) % 10 == 0, False, ak.to_numpy(jets.matched)),
        "matched",
    )
    mod = ak.with_field(
        mod,
        np.where(np.arange(len(jets)) % 7 == 0, 0, ak.to_numpy(jets.jet_id)),
        "jet_id",
    )
    mask, flow = selection_mask(
        mod, SelectionConfig(pt_gen_min=30.0, abs_eta_gen_max=2.0)
    )
    pt_gen = ak.to_numpy(jets.pt_gen)
    eta_gen = ak.to_numpy(jets.eta_gen)
    idx = np.arange(len(jets))
    expect = (idx % 10 != 0) & (pt_gen >= 30) & (np.abs(eta_gen) < 2.0) & (idx % 7 != 0)
    np.testing.assert_array_equal(mask, expect)
    assert list(flow) == [
        "all",
        "matched",
        "pt_gen_min",
        "abs_eta_gen_max",
        "tight_jet_id",
        "pt_raw_min",
    ]
    assert flow["all"] == len(jets)
    assert flow["pt_raw_min"] == expect.sum()
    assert all(
        a >= b
        for a, b in zip(list(flow.values()), list(flow.values())[1:], strict=False)
    )


def test_split_arrays_target_and_disjoint_splits(table):
    cfg = _config("deepsets")
    tr = build_split_arrays([table], cfg, "train")
    va = build_split_arrays([table], cfg, "val")
    assert len(tr) + len(va) < len(table)
    assert 0.7 < len(tr) / len(table) < 0.9
    np.testing.assert_allclose(tr.target, np.log(tr.pt_gen / tr.pt_raw), rtol=1e-5)
    assert tr.inputs["charged"].shape == (
        len(tr),
        12,
        len(cfg.features.constituents["charged"]),
    )
    assert not set(map(tuple, np.c_[tr.pt_gen, tr.pt_raw])) & set(
        map(tuple, np.c_[va.pt_gen, va.pt_raw])
    )


def test_missing_constituent_type_is_a_clear_error(table):
    jets = ak.without_field(table.jets, "sv")
    t = JetTable(
        jets=jets, layout="pfnano", source="nosv.root", missing={"sv": "no JetSVs"}
    )
    with pytest.raises(
        ModelMismatchError, match=r"nosv.root: constituent type 'sv'.*no JetSVs"
    ):
        build_split_arrays([t], _config("deepsets"), "train")


def test_incomplete_constituents_are_refused_for_constituent_models(table):
    complete = np.arange(len(table)) % 3 != 0
    jets = ak.with_field(table.jets, complete, "constituents_complete")
    t = JetTable(jets=jets, layout="pfnano_old", source="old.root")
    with pytest.raises(
        ModelMismatchError, match=r"old\.root: \d+ jets have incomplete"
    ):
        build_split_arrays([t], _config("deepsets"), "train")
    # a jet-level model does not need the constituents
    assert len(build_split_arrays([t], _config("mlp_nanoaod"), "train")) > 0


def test_feature_missing_for_every_jet_is_refused(table):
    t = JetTable(
        jets=ak.without_field(table.jets, "chHEF"), layout="mljec", source="x.root"
    )
    with pytest.raises(
        ModelMismatchError, match=r"\['jet.chHEF'\] are missing for every"
    ):
        build_split_arrays([t], _config("mlp_nanoaod"), "train")


def test_batch_loader_shards_match_combined_batches(table):
    arrays = build_split_arrays([table], _config("mlp_nanoaod"), "train")
    single = BatchLoader(arrays, 32, seed=7)
    ranks = [BatchLoader(arrays, 16, seed=7, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 3):
        for loader in [single, *ranks]:
            loader.set_epoch(epoch)
        for b_all, b0, b1 in zip(single, *ranks, strict=False):
            combined = torch.sort(torch.cat([b0["target"], b1["target"]])).values
            assert torch.equal(torch.sort(b_all["target"]).values, combined)
    e0 = [b["target"] for b in single]
    single.set_epoch(1)
    assert not torch.equal(e0[0], next(iter(single))["target"])
    val = BatchLoader(arrays, 100, shuffle=False, drop_last=False, rank=1, world_size=2)
    got = torch.cat([b["target"] for b in val]).numpy()
    np.testing.assert_array_equal(got, arrays.target[1::2])


def test_fgsm_moves_only_numerical_real_inputs():
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "jet": torch.randn(5, 3, generator=gen),
        "charged": torch.randn(5, 4, 2, generator=gen),
        "charged_mask": torch.tensor([[1.0, 1, 0, 0]] * 5),
    }
    inputs["charged"] = inputs["charged"] * inputs["charged_mask"].unsqueeze(-1)

    class Net(torch.nn.Module):
        def forward(self, x, raw=None):
            return (x["jet"] ** 2).sum(-1) + (
                x["charged"] * x["charged_mask"].unsqueeze(-1)
            ).sum((1, 2))

    numeric = {
        "jet": torch.tensor([1.0, 0.0, 1.0]),
        "charged": torch.tensor([1.0, 1.0]),
    }
    loss = make_loss(LossConfig(type="mse"))
    out = fgsm_inputs(
        Net(), loss, inputs, None, torch.zeros(5), torch.ones(5), 0.1, numeric
    )
    dj = out["jet"] - inputs["jet"]
    assert torch.allclose(dj[:, [0, 2]].abs(), torch.full((5, 2), 0.1))
    assert torch.equal(dj[:, 1], torch.zeros(5))  # categorical column untouched
    dc = out["charged"] - inputs["charged"]
    assert torch.allclose(dc[:, :2].abs(), torch.full((5, 2, 2), 0.1))
    assert torch.equal(out["charged"][:, 2:], torch.zeros(5, 2, 2))  # padding stays 0
    assert torch.equal(out["charged_mask"], inputs["charged_mask"])


# --------------------------------------------------------------------------- the loop
@pytest.mark.parametrize("name", list(SMALL_MODELS))
def test_each_architecture_beats_the_best_constant(name, table, tmp_path):
    """512 training jets, fixed number of steps: MAE < 70% of the median predictor's."""
    cfg = _config(name, max_steps=120, epochs=1000)
    result = train(cfg, tmp_path / name, tables=[table], export=False)
    assert result.steps == 120
    arrays = build_split_arrays([table], cfg, "train")
    assert 480 <= len(arrays) <= 545
    pred = _predict(result, cfg, arrays)
    mae = np.mean(np.abs(pred - arrays.target))
    constant = np.mean(np.abs(arrays.target - np.median(arrays.target)))
    print(
        f"{name}: training MAE {mae:.4f}, best constant {constant:.4f}, ratio {mae / constant:.2f}"
    )
    assert mae < 0.7 * constant
    # the files every training leaves behind
    out = result.out_dir
    for f in (
        "config.yaml",
        "config.sha256",
        "transform.yaml",
        "history.csv",
        "history.png",
        "checkpoint_last.pt",
        "checkpoint_best.pt",
    ):
        assert (out / f).is_file(), f
    assert (out / "config.sha256").read_text().strip() == cfg.config_hash()
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert len(rows) == result.epochs_run
    assert {"epoch", "train_loss", "val_loss", "val_mae", "lr"} <= set(rows[0])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_resume_gives_the_same_weights(table, tmp_path):
    full = train(
        _config("mlp_nanoaod", epochs=4),
        tmp_path / "full",
        tables=[table],
        export=False,
    )
    part = _config("mlp_nanoaod", epochs=2)
    train(part, tmp_path / "split", tables=[table], export=False)
    with pytest.raises(ConfigError, match="already holds a training"):
        train(part, tmp_path / "split", tables=[table], export=False)
    resumed = train(
        _config("mlp_nanoaod", epochs=4),
        tmp_path / "split",
        tables=[table],
        resume=True,
        export=False,
    )
    assert resumed.epochs_run == 4
    assert resumed.steps == full.steps
    a = torch.load(tmp_path / "full" / "checkpoint_last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "split" / "checkpoint_last.pt", weights_only=True)[
        "model"
    ]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert [r["val_loss"] for r in full.history] == pytest.approx(
        [r["val_loss"] for r in resumed.history]
    )
    other = _config("mlp_nanoaod", epochs=5, optimizer={"type": "sgd", "lr": 0.1})
    with pytest.raises(ConfigError, match="another configuration"):
        train(other, tmp_path / "split", tables=[table], resume=True, export=False)
    with pytest.raises(ConfigError, match="does not exist"):
        train(part, tmp_path / "none", tables=[table], resume=True, export=False)


@pytest.mark.parametrize(
    "schedule",
    [
        {"type": "reduce_on_plateau", "patience": 0, "factor": 0.5},
        {"type": "cosine", "warmup_steps": 3, "min_lr": 1e-5},
        {"type": "one_cycle"},
    ],
    ids=lambda s: s["type"],
)
def test_schedules_adversarial_early_stopping(schedule, table, tmp_path):
    cfg = _config(
        "deepsets",
        epochs=6,
        schedule=schedule,
        adversarial={"enabled": True, "epsilon": 0.02},
        early_stopping={"enabled": True, "patience": 2, "min_delta": 10.0},
        loss={"type": "gaussian_nll"},
    )
    result = train(cfg, tmp_path, tables=[table], export=False)
    lrs = [r["lr"] for r in result.history]
    # min_delta 10 makes every epoch after the first "no improvement": stop after 1 + 2
    assert result.stopped_early
    assert result.epochs_run == 3
    assert all(math.isfinite(r["train_loss"]) for r in result.history)
    if schedule["type"] == "reduce_on_plateau":
        # torch's rule (relative threshold 1e-4, patience 0): halve after every epoch
        # that does not improve on the best validation loss
        best, lr, expect = math.inf, 3e-3, []
        for r in result.history:
            if r["val_loss"] < best * (1 - 1e-4):
                best = r["val_loss"]
            else:
                lr *= 0.5
            expect.append(lr)
        assert lrs == pytest.approx(expect)
    elif schedule["type"] == "cosine":
        assert lrs[-1] < 3e-3
    else:
        assert lrs[0] != lrs[-1]


def test_transform_that_does_not_match_is_refused_before_training(table, tmp_path):
    cfg = _config("deepsets")
    arrays = build_split_arrays([table], cfg, "train")
    good = cfg.unfitted_transform().fit(arrays.inputs)
    # a transform fitted for another feature list
    other_raw = cfg.resolved()
    other_raw["features"]["jet"] = other_raw["features"]["jet"][:-1]
    other = TrainingConfig.from_dict(other_raw)
    wrong = other.unfitted_transform().fit(
        build_split_arrays([table], other, "train").inputs
    )
    wrong.to_yaml(tmp_path / "wrong.yaml")
    raw = cfg.resolved()
    raw["transform"]["path"] = str(tmp_path / "wrong.yaml")
    with pytest.raises(ModelMismatchError, match=r"wrong\.yaml: does not match"):
        train(
            TrainingConfig.from_dict(raw), tmp_path / "o1", tables=[table], export=False
        )
    assert not (tmp_path / "o1" / "checkpoint_last.pt").exists()
    # same features, different manual chain
    raw["transform"]["steps"]["jet"]["rho"] = [{"type": "log"}]
    good.to_yaml(tmp_path / "good.yaml")
    raw["transform"]["path"] = str(tmp_path / "good.yaml")
    with pytest.raises(ModelMismatchError, match="jet/rho has steps"):
        train(
            TrainingConfig.from_dict(raw), tmp_path / "o2", tables=[table], export=False
        )


# --------------------------------------------------------------------------- commands
MLJEC_CONFIG = {
    "data": {"dataset": None, "batch_size": 2, "selection": {"pt_gen_min": 20.0}},
    "features": {
        "jet": [
            "log_pt_raw",
            "eta",
            "log_mass_raw",
            "area",
            "rho",
            "npv",
            "n_charged",
            "n_neutral",
            "n_sv",
            "pt_d",
        ]
    },
    "transform": {"steps": {"jet": {"rho": [{"type": "log1p"}]}}},
    "model": {"architecture": "mlp", "hidden": [8, 8], "head": [8]},
    "loss": {"type": "mse"},
    "reweighting": {"target": "none", "class_balance": False},
    "optimizer": {"type": "adamw", "lr": 0.01},
    "schedule": {"type": "constant"},
    "epochs": 5,
    "max_steps": 3,
    "seed": 3,
    "device": "cpu",
    "num_threads": 1,
}


def _write_config(path: Path, data_yaml: Path, **top) -> Path:
    raw = copy.deepcopy(MLJEC_CONFIG)
    raw["data"]["dataset"] = str(data_yaml)
    for key, value in top.items():
        section, _, field = key.partition("__")
        if field:
            raw[section][field] = value
        else:
            raw[key] = value
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.shared_data
def test_build_transform_then_train_command(shared_data, tmp_path, capsys):
    data = shared_data / "mljec" / "data.yaml"
    cfg = _write_config(tmp_path / "c.yaml", data)
    assert (
        main(
            [
                "build-transform",
                str(data),
                "-c",
                str(cfg),
                "-o",
                str(tmp_path / "t.yaml"),
            ]
        )
        == 0
    )
    assert "training jets" in capsys.readouterr().out
    assert main(["train", str(cfg), "-o", str(tmp_path / "run"), "--check"]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()
    code = main(
        [
            "train",
            str(cfg),
            "-o",
            str(tmp_path / "run"),
            "--transform",
            str(tmp_path / "t.yaml"),
            "--no-export",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "trained mlp" in capsys.readouterr().out
    saved = TrainingConfig.load(tmp_path / "run" / "config.yaml")
    assert saved.transform.path == (tmp_path / "t.yaml").resolve()
    assert (tmp_path / "run" / "transform.yaml").read_text() == (
        tmp_path / "t.yaml"
    ).read_text()
    # a transform built for other features is refused before training
    other = _write_config(
        tmp_path / "o.yaml", data, features={"jet": ["log_pt_raw", "eta", "rho"]}
    )
    assert (
        main(
            [
                "build-transform",
                str(data),
                "-c",
                str(other),
                "-o",
                str(tmp_path / "t2.yaml"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    code = main(
        [
            "train",
            str(cfg),
            "-o",
            str(tmp_path / "run2"),
            "--transform",
            str(tmp_path / "t2.yaml"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "t2.yaml: does not match the configuration" in err
    assert not (tmp_path / "run2").exists()


@pytest.mark.shared_data
def test_stale_data_yaml_fails_before_training(shared_data, tmp_path, capsys):
    from jec_coffea.data.dataset import describe_files

    shards = sorted((shared_data / "mljec" / "shards").glob("*.root"))
    desc = describe_files(shards, sha256=False)
    desc.files[2].n_jets = 11
    desc.save(tmp_path / "data.yaml")
    cfg = _write_config(tmp_path / "c.yaml", tmp_path / "data.yaml")
    code = main(["train", str(cfg), "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "3.root: n_jets is 11 in the description but 10 in the file" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.shared_data
def test_steer_runs_each_config_in_its_own_folder(shared_data, tmp_path):
    data = shared_data / "mljec" / "data.yaml"
    a = _write_config(tmp_path / "a.yaml", data)
    b = _write_config(tmp_path / "b.yaml", data, loss={"type": "huber", "delta": 0.05})
    bad = _write_config(tmp_path / "bad.yaml", data, optimiser={"lr": 1})
    with pytest.raises(
        ConfigError, match=r"1 of 3 configurations are invalid.*bad.yaml.*optimiser"
    ):
        steer([a, bad, b], tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    assert (
        main(
            [
                "steer",
                str(a),
                str(b),
                "-o",
                str(tmp_path / "runs"),
                "--no-progress",
                "--no-export",
            ]
        )
        == 0
    )
    folders = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert [f.name.split("_", 1)[1] for f in folders] == ["a", "b"]
    for f in folders:
        assert (f / "train.log").read_text().count("epoch 0") >= 1
        assert (f / "checkpoint_best.pt").is_file()
    rows = list(csv.DictReader((tmp_path / "runs" / "steer.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert TrainingConfig.load(folders[1] / "config.yaml").loss.type == "huber"


@pytest.mark.shared_data
def test_torchrun_two_ranks_equal_one_process_with_combined_batch(
    shared_data, tmp_path
):
    """gloo DDP, 2 ranks x batch 2, 3 steps == 1 process x batch 4, 3 steps (to 1e-5)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip(f"{torchrun} not found")
    data = shared_data / "mljec" / "data.yaml"
    ddp_cfg = _write_config(tmp_path / "ddp.yaml", data, data__batch_size=2)
    one_cfg = _write_config(tmp_path / "one.yaml", data, data__batch_size=4)
    assert (
        main(["train", str(one_cfg), "-o", str(tmp_path / "one"), "--no-export"]) == 0
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    }
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "jec_coffea.cli",
            "-q",
            "train",
            str(ddp_cfg),
            "-o",
            str(tmp_path / "ddp"),
            "--no-export",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=True)
    two = torch.load(tmp_path / "ddp" / "checkpoint_last.pt", weights_only=True)
    assert one["step"] == two["step"] == 3
    for k, v in one["model"].items():
        torch.testing.assert_close(two["model"][k], v, rtol=0, atol=1e-5)
    assert one["history"][0]["val_loss"] == pytest.approx(
        two["history"][0]["val_loss"], rel=1e-5
    )


def test_simulated_sample_end_to_end(sim_sample, tmp_path, capsys):
    """build-transform + train + ONNX on the simulated PFNano sample (Deep Sets, 300 steps).

    The loss is the 25/50/75% pinball loss, so the network has three outputs and the export
    must keep the median only (`log_correction`, shape (N,)). The exported model, run by
    onnxruntime on the raw inputs, equals the torch network's median, beats the best
    constant (the median of the target) on the training jets, and its metadata names the
    detector configuration the sample was simulated with.
    """
    ort = pytest.importorskip("onnxruntime")
    from jec_coffea.export import read_onnx_metadata
    from jec_coffea.simulation import read_metadata
    from jec_coffea.training import load_jet_tables

    raw = yaml.safe_load((REPO / "models" / "deepsets.yaml").read_text())
    raw["data"].update(
        dataset=str(sim_sample / "data.yaml"),
        batch_size=64,
        max_constituents={"charged": 24, "neutral": 16, "sv": 4},
    )
    raw["model"].update(SMALL_MODELS["deepsets"])
    raw.update(
        max_steps=300,
        epochs=1000,
        num_threads=1,
        device="cpu",
        schedule={"type": "constant"},
        early_stopping={"enabled": False},
        reweighting={"target": "none", "class_balance": False},
        loss={"type": "quantile", "quantiles": [0.25, 0.5, 0.75]},
    )
    raw["optimizer"]["lr"] = 3e-3
    cfg_path = tmp_path / "deepsets.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    transform = tmp_path / "transform.yaml"
    args = [
        "build-transform",
        str(sim_sample / "data.yaml"),
        "-c",
        str(cfg_path),
        "-o",
        str(transform),
    ]
    assert main(args) == 0
    assert (
        main(
            [
                "train",
                str(cfg_path),
                "-o",
                str(tmp_path / "run"),
                "--transform",
                str(transform),
            ]
        )
        == 0
    )
    capsys.readouterr()
    onnx_path = tmp_path / "run" / "model.onnx"
    meta = read_onnx_metadata(onnx_path)
    files = sorted(sim_sample.glob("*.root"))
    assert meta["detector_config_hash"] == read_metadata(files[0])["detector_sha256"]
    assert (
        meta["config_hash"]
        == TrainingConfig.load(tmp_path / "run" / "config.yaml").config_hash()
    )
    cfg = TrainingConfig.load(cfg_path)
    arrays = build_split_arrays(
        load_jet_tables(str(sim_sample / "data.yaml")), cfg, "train"
    )
    sess = ort.InferenceSession(str(onnx_path))
    (pred,) = sess.run(None, {i.name: arrays.inputs[i.name] for i in sess.get_inputs()})
    assert pred.shape == (len(arrays),)
    # torch network from the best checkpoint, through the same transform
    from jec_coffea.training.network import build_network
    from jec_coffea.transform import Transform

    fitted = Transform.from_yaml(transform)
    loss = make_loss(cfg.loss)
    network, _ = build_network(cfg, fitted, loss)
    state = torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)
    network.load_state_dict(state["model"])
    network.eval()
    x = {k: torch.from_numpy(v) for k, v in fitted.apply_numpy(arrays.inputs).items()}
    with torch.no_grad():
        out = network(x, raw={k: torch.from_numpy(v) for k, v in arrays.inputs.items()})
    assert out.shape == (len(arrays), 3)
    np.testing.assert_allclose(pred, loss.prediction(out).numpy(), atol=1e-5)
    mae = np.mean(np.abs(pred - arrays.target))
    constant = np.mean(np.abs(arrays.target - np.median(arrays.target)))
    print(
        f"simulated sample, {len(arrays)} training jets: MAE {mae:.4f}, constant {constant:.4f}"
    )
    assert mae < constant


# --------------------------------------------------------------------------- flavour term
def test_flavour_term_matches_hand_computation():
    """Per pT_gen bin: the spread over uds, c, b, g of the weighted mean tanh residual."""
    from jec_coffea.training.losses import FLAVOUR_MIN_JETS

    cfg = LossConfig(type="mae", flavour_penalty=2.0, flavour_pt_edges=[20.0, 50.0])
    loss = make_loss(cfg)
    rng = np.random.default_rng(3)
    n = 400
    flavour = rng.integers(0, 5, n)  # 4 = unknown: left out
    pt_gen = rng.uniform(10.0, 200.0, n)  # below 20 GeV: left out
    target = rng.normal(0.0, 0.1, n)
    pred = (
        target + 0.02 * (flavour == 3) - 0.01 * (flavour == 0) + rng.normal(0, 0.03, n)
    )
    weight = rng.uniform(0.5, 2.0, n)
    args = [torch.tensor(x, dtype=torch.float32) for x in (pred, target, weight)]
    got = float(
        loss.flavour_term(
            *args, torch.tensor(flavour), torch.tensor(pt_gen, dtype=torch.float32)
        )
    )
    s = np.tanh((pred - target) / cfg.flavour_scale)
    expect = 0.0
    for lo, hi in ((20.0, 50.0), (50.0, np.inf)):
        means = []
        for f in range(4):
            c = (pt_gen >= lo) & (pt_gen < hi) & (flavour == f)
            if c.sum() >= FLAVOUR_MIN_JETS:
                means.append(np.sum(s[c] * weight[c]) / np.sum(weight[c]))
        means = np.array(means)
        expect += np.sum((means - means.mean()) ** 2)
    assert got == pytest.approx(expect, rel=1e-4)
    assert got > 0
    # the batch loss adds it with its weight, only when the labels are given
    plain = float(loss(*args))
    labelled = float(
        loss(
            *args,
            flavour=torch.tensor(flavour),
            pt_gen=torch.tensor(pt_gen, dtype=torch.float32),
        )
    )
    assert labelled == pytest.approx(plain + 2.0 * expect, rel=1e-4)
    # equal per-flavour offsets, one flavour too rare, or one flavour alone: no term
    same = torch.tensor(target + 0.01, dtype=torch.float32)
    assert float(
        loss.flavour_term(same, *args[1:], torch.tensor(flavour), args[2] * 0 + 30.0)
    ) == pytest.approx(0.0, abs=1e-7)
    alone = torch.zeros(n, dtype=torch.long)
    assert float(loss.flavour_term(*args, alone, torch.full((n,), 30.0))) == 0.0


def test_flavour_term_config_is_validated():
    with pytest.raises(ValueError, match="flavour_pt_edges"):
        LossConfig(type="mae", flavour_penalty=1.0, flavour_pt_edges=[50.0, 20.0])
    with pytest.raises(ValueError, match="flavour_penalty"):
        LossConfig(type="mae", flavour_penalty=-1.0)


def test_training_with_the_flavour_term_learns(table, tmp_path):
    """The loop feeds flavour and pT_gen to the loss; the network still learns the target."""
    plain = _config("mlp_nanoaod", max_steps=60, epochs=1000, loss={"type": "mae"})
    flav = _config(
        "mlp_nanoaod",
        max_steps=60,
        epochs=1000,
        loss={"type": "mae", "flavour_penalty": 1.0, "flavour_pt_edges": [20.0, 60.0]},
    )
    a = train(plain, tmp_path / "plain", tables=[table], export=False)
    b = train(flav, tmp_path / "flav", tables=[table], export=False)
    first_a = float(a.history[0]["train_loss"])
    first_b = float(b.history[0]["train_loss"])
    assert first_b > first_a  # the term is in the training loss
    arrays = build_split_arrays([table], flav, "train")
    pred = _predict(b, flav, arrays)
    constant = np.mean(np.abs(arrays.target - np.median(arrays.target)))
    assert np.mean(np.abs(pred - arrays.target)) < 0.8 * constant

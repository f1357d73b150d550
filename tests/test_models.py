"""Transform (fit, masks, YAML, ml-jec format) and the five calibration networks.

Networks are tiny (width 16) so the whole file runs in seconds; what is checked is what the
architectures promise: finite output on jets without constituents, invariance under
permutations of the constituents, and learning a target that depends on a sum over
constituents (loss below 70% of the constant predictor's).
"""

from __future__ import annotations

import numpy as np
import pytest

from jec_coffea.errors import ConfigError, InputFileError, ModelMismatchError
from jec_coffea.features import FeatureSpec
from jec_coffea.transform import Transform

torch = pytest.importorskip("torch")

from jec_coffea.models import (
    WithPreprocessing,
    build_model,
    parse_model_config,
)

MAX = {"charged": 20, "neutral": 12, "sv": 4}

SPEC = FeatureSpec(
    jet=["log_pt_raw", "eta", "n_charged"],
    constituents={
        "charged": ["rel_pt", "deta", "dphi", "pv_assoc_quality"],
        "neutral": ["rel_pt", "deta", "dphi"],
        "sv": ["rel_pt", "deta", "dphi", "mass"],
    },
    max_constituents=MAX,
)

TINY: dict[str, dict] = {
    "mlp": {"hidden": [32, 32], "head": [16]},
    "resnet": {"width": 32, "blocks": 2, "head": [16]},
    "deepsets": {"phi": [32, 32], "head": [32]},
    "particlenet": {
        "size": "custom",
        "embed_dim": 16,
        "edge_convs": [{"k": 4, "channels": [16, 16]}, {"k": 4, "channels": [16]}],
        "head": [16],
    },
    "part": {
        "dim": 16,
        "heads": 2,
        "particle_blocks": 1,
        "class_blocks": 1,
        "ffn_ratio": 2,
        "pair_hidden": [8],
        "head": [16],
    },
}
"""Test-size configurations of every architecture."""

SET_MODELS = ["deepsets", "particlenet", "part"]

TRAIN_SIZES = {"charged": 12, "neutral": 8, "sv": 3}
"""Smaller sets for the training test (ParT's cost grows with the square of the set size)."""


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine more threads only oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_inputs(
    rng: np.random.Generator, n: int, sizes: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Raw inputs like ``to_tensors``: pT-ordered, zero-padded constituents with masks."""
    sizes = sizes or MAX
    out: dict[str, np.ndarray] = {}
    counts = {}
    for ctype, names in SPEC.constituents.items():
        m = sizes[ctype]
        x = np.zeros((n, m, len(names)), dtype=np.float32)
        x[..., 0] = -np.sort(-rng.uniform(0.0, 0.3, (n, m)), axis=1)
        x[..., 1] = rng.normal(0.0, 0.15, (n, m))
        x[..., 2] = rng.normal(0.0, 0.15, (n, m))
        if ctype == "charged":
            x[..., 3] = rng.choice([0, 1, 4, 5, 6, 7], (n, m))
        if ctype == "sv":
            x[..., 3] = rng.gamma(2.0, 0.7, (n, m))
        count = rng.integers(0, m + 1, n)
        mask = (np.arange(m) < count[:, None]).astype(np.float32)
        out[ctype] = x * mask[..., None]
        out[f"{ctype}_mask"] = mask
        counts[ctype] = count
    out["jet"] = np.stack(
        [
            rng.uniform(np.log(20.0), np.log(2000.0), n),
            rng.uniform(-4.7, 4.7, n),
            counts["charged"],
        ],
        axis=1,
    ).astype(np.float32)
    return out


def fitted_transform(spec: FeatureSpec, data: dict[str, np.ndarray]) -> Transform:
    steps = {
        t: {
            "rel_pt": [{"type": "log"}],
            **({"mass": [{"type": "log1p"}]} if t == "sv" else {}),
        }
        for t in spec.constituents
    }
    categorical = (
        {"charged": {"pv_assoc_quality": [0, 1, 4, 5, 6, 7]}}
        if "charged" in spec.constituents
        else {}
    )
    return Transform.from_spec(spec, steps=steps, categorical=categorical).fit(data)


def tiny_model(
    arch: str, transform: Transform, spec: FeatureSpec = SPEC, seed: int = 0
):
    torch.manual_seed(seed)
    config = {
        "architecture": arch,
        "categorical": transform.cardinalities(),
        **TINY[arch],
    }
    return build_model(config, spec)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return make_inputs(np.random.default_rng(7), 3000)


@pytest.fixture(scope="module")
def transform(data) -> Transform:
    return fitted_transform(SPEC, data)


def as_torch(arrays: dict[str, np.ndarray]) -> dict:
    return {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        for k, v in arrays.items()
    }


# --------------------------------------------------------------------------- transform
def test_fit_excludes_padding_and_padding_stays_zero(data):
    spec = FeatureSpec(
        jet=["eta"],
        constituents={"charged": ["rel_pt"]},
        max_constituents={"charged": 20},
    )
    arrays = {"jet": data["jet"][:, 1:2], "charged": data["charged"][..., :1].copy()}
    mask = data["charged_mask"]
    arrays["charged"][mask == 0] = (
        1.0e6  # garbage in padded slots must not enter the fit
    )
    fitted = Transform.from_spec(spec).fit(arrays, {"charged": mask})
    valid = arrays["charged"][..., 0][mask > 0].astype(np.float64)
    ft = fitted.groups["charged"]["rel_pt"]
    lo, med, hi = np.quantile(valid, [0.16, 0.5, 0.84])
    assert ft.centre == pytest.approx(med)
    assert ft.scale == pytest.approx(2.0 / (hi - lo))
    out = fitted.apply_numpy(arrays, {"charged": mask})
    assert np.all(out["charged"][mask == 0] == 0.0)
    assert np.median(out["charged"][..., 0][mask > 0]) == pytest.approx(0.0, abs=1e-6)
    raw = Transform.from_spec(spec, scaling="none").fit(arrays, {"charged": mask})
    np.testing.assert_array_equal(  # no scaling and no clip: the values pass unchanged
        raw.apply_numpy(arrays, {"charged": mask})["jet"], arrays["jet"]
    )
    iqr = Transform.from_spec(spec, scaling="iqr").fit(arrays, {"charged": mask})
    q25, q75 = np.quantile(valid, [0.25, 0.75])
    assert iqr.groups["charged"]["rel_pt"].scale == pytest.approx(1.0 / (q75 - q25))


def test_feature_constant_in_training_gets_scale_zero(caplog, tmp_path):
    """A feature with one value over the training sample (puppiWeight of the simulated
    samples) is mapped to 0 on any sample: the network never learned from it, so a real
    PFNano's weights below 1 must not reach it. A feature that varies keeps its scale."""
    spec = FeatureSpec(
        jet=["eta"],
        constituents={"neutral": ["rel_pt", "puppi_weight"]},
        max_constituents={"neutral": 4},
    )
    n = 50
    rng = np.random.default_rng(0)
    train = {
        "jet": rng.normal(size=(n, 1)).astype(np.float32),
        "neutral": np.stack(
            [rng.uniform(0.01, 0.5, (n, 4)), np.ones((n, 4))], axis=-1
        ).astype(np.float32),
        "neutral_mask": np.ones((n, 4), np.float32),
    }
    train["neutral"][:, 3, 1] = 0.3  # in a padded slot: not part of the training sample
    train["neutral_mask"][:, 3] = 0.0
    with caplog.at_level("WARNING", logger="jec_coffea.transform"):
        t = Transform.from_spec(spec).fit(train)
    ft = t.groups["neutral"]["puppi_weight"]
    assert (ft.centre, ft.scale) == (1.0, 0.0)
    assert "neutral/puppi_weight is 1 for all 150 entries" in caplog.text
    assert t.groups["neutral"]["rel_pt"].scale > 0
    real = {k: v.copy() for k, v in train.items()}
    real["neutral"][..., 1] = rng.uniform(0.0, 1.0, (n, 4))  # CMS PUPPI weights
    a, b = t.apply_numpy(train), t.apply_numpy(real)
    np.testing.assert_array_equal(a["neutral"], b["neutral"])
    assert np.all(b["neutral"][..., 1] == 0.0)
    with torch.no_grad():
        out = t.to_torch()(as_torch(real))
    np.testing.assert_allclose(out["neutral"].numpy(), b["neutral"], atol=2e-6, rtol=0)
    assert Transform.from_yaml(t.to_yaml(tmp_path / "transform.yaml")) == t


def test_transform_chain_defaults_categories_and_bounds():
    spec = FeatureSpec(
        jet=["pt_raw"],
        constituents={"charged": ["rel_pt", "pv_assoc_quality"]},
        max_constituents={"charged": 3},
    )
    arrays = {
        "jet": np.array([[0.0], [10.0], [100.0], [1000.0]], dtype=np.float32),
        "charged": np.array([[[0.5, 7], [0.1, 3], [0, 0]]] * 4, dtype=np.float32),
        "charged_mask": np.array([[1, 1, 0]] * 4, dtype=np.float32),
    }
    t = Transform.from_spec(
        spec,
        steps={"jet": {"pt_raw": [{"type": "log"}]}},
        categorical={"charged": {"pv_assoc_quality": [0, 7]}},
    ).fit(arrays)
    out = t.apply_numpy(arrays)
    # log(0) -> default 0 before scaling, then clipped to the bounds (-5, 5)
    assert np.all(np.isfinite(out["jet"]))
    assert np.all(np.abs(out["jet"]) <= 5.0)
    assert out["charged"][0, :, 1].tolist() == [
        1.0,
        2.0,
        0.0,
    ]  # 7 -> 1, unknown 3 -> 2, pad 0
    assert t.cardinalities() == {"charged": {"pv_assoc_quality": 3}}


@pytest.mark.parametrize("every_step", [False, True])
def test_transform_yaml_round_trip_and_torch_equal_numpy(
    tmp_path, data, transform, every_step
):
    if every_step:  # each kind of manual step once, on top of the usual chains
        steps = {
            "jet": {"eta": [{"type": "abs"}, {"type": "clip", "min": 0.5, "max": 4.0}]},
            "charged": {
                "rel_pt": [{"type": "log1p"}],
                "deta": [{"type": "abs"}, {"type": "arcsinh", "scale": 0.05}],
                "dphi": [{"type": "linear", "loc": 0.1, "scale": 2.0}, {"type": "log"}],
            },
        }
        transform = Transform.from_spec(
            SPEC, steps=steps, categorical={"charged": {"pv_assoc_quality": None}}
        ).fit(data)
        assert transform.groups["charged"]["pv_assoc_quality"].categories == [
            0,
            1,
            4,
            5,
            6,
            7,
        ]
    path = transform.to_yaml(tmp_path / "transform.yaml")
    again = Transform.from_yaml(path)
    assert again == transform
    a, b = transform.apply_numpy(data), again.apply_numpy(data)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    with torch.no_grad():
        t = transform.to_torch()(as_torch(data))
    for key in a:
        np.testing.assert_allclose(t[key].numpy(), a[key], atol=2e-6, rtol=0)
        assert np.all(np.isfinite(t[key].numpy()))
        if key != "jet" and not key.endswith("_mask"):
            assert np.all(t[key].numpy()[data[f"{key}_mask"] == 0] == 0.0)


def test_mljec_transform_accepted(shared_data):
    uproot = pytest.importorskip("uproot")
    t = Transform.from_mljec(shared_data / "mljec" / "transform.yaml")
    assert t.fitted
    assert {"jet", "charged", "neutral", "sv"} == set(t.groups)
    assert t.groups["charged"]["id"].categories == [-211, -13, -11, 11, 13, 211]
    assert t.cardinalities()["neutral"] == {"id": 5}
    tree = uproot.open(shared_data / "mljec" / "shards" / "1.root")["Jets"]
    jets = tree.arrays(["pt", "ch_dxy", "ch_id"], library="np")
    pt = jets["pt"].astype(np.float64)
    want = (np.arcsinh(pt / 10.0) - 0.001962279202416539) / 7.2959527026396245
    np.testing.assert_allclose(t.groups["jet"]["pt"].apply_numpy(pt), want, rtol=1e-12)
    dxy = np.concatenate(list(jets["ch_dxy"])).astype(np.float64)
    want = np.arcsinh(np.abs(dxy) / 0.001) / 12.545397758483887
    np.testing.assert_allclose(
        t.groups["charged"]["dxy"].apply_numpy(dxy), want, rtol=1e-12
    )
    ids = np.concatenate(list(jets["ch_id"]))
    idx = t.groups["charged"]["id"].apply_numpy(ids)
    assert set(np.unique(idx)) <= set(
        range(6)
    )  # every id of the file is a known category


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("groups: {jet: {eta: {steps: [{type: sqrt}]}}}", "sqrt"),
        ("groups: {jet: {eta: {steps: [{type: arcsinh, scale: 0}]}}}", "scale"),
        ("groups: {jet: {eta: {scalling: iqr}}}", "scalling"),
        ("groups: [1, 2", "invalid YAML"),
    ],
)
def test_bad_transform_yaml(tmp_path, text, fragment):
    path = tmp_path / "transform.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as info:
        Transform.from_yaml(path)
    assert str(path) in str(info.value)


def test_bad_transform_use(tmp_path, data, transform):
    with pytest.raises(InputFileError, match=r"nothere\.yaml"):
        Transform.from_yaml(tmp_path / "nothere.yaml")
    (tmp_path / "x.yaml").write_text("groups: {}")
    with pytest.raises(ConfigError, match="not an ml-jec"):
        Transform.from_mljec(tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="not fitted"):
        Transform.from_spec(SPEC).apply_numpy(data)
    with pytest.raises(ConfigError, match="ch_pt"):
        Transform.from_spec(SPEC, steps={"charged": {"ch_pt": [{"type": "log"}]}})
    with pytest.raises(ModelMismatchError, match=r"'neutral' has shape"):
        transform.apply_numpy({**data, "neutral": data["neutral"][..., :2]})
    with pytest.raises(ModelMismatchError, match="'sv' missing"):
        transform.apply_numpy({k: v for k, v in data.items() if not k.startswith("sv")})
    with pytest.raises(ConfigError, match=r"charged/deta takes \d+ distinct values"):
        Transform.from_spec(SPEC, categorical={"charged": {"deta": None}}).fit(data)
    other = FeatureSpec(jet=["eta"], constituents={}, max_constituents={})
    with pytest.raises(ModelMismatchError, match="differ from the feature spec"):
        transform.check_spec(other)


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("arch", list(TINY))
def test_empty_jets_give_finite_output(arch, data, transform):
    model = WithPreprocessing(transform.to_torch(), tiny_model(arch, transform)).eval()
    inputs = {k: v[:64].copy() for k, v in data.items()}
    for ctype in SPEC.constituents:  # every jet without any constituent of any type
        inputs[ctype][:] = 0.0
        inputs[f"{ctype}_mask"][:] = 0.0
    with torch.no_grad():
        out = model(as_torch(inputs)).numpy()
        zero_length = {k: (v[:, :0] if k != "jet" else v) for k, v in inputs.items()}
        out0 = model(as_torch(zero_length)).numpy()
    assert out.shape == (64,)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out0, out, atol=1e-5)  # padding slots change nothing


@pytest.mark.parametrize("arch", SET_MODELS)
def test_permutation_invariance(arch, data, transform):
    model = WithPreprocessing(transform.to_torch(), tiny_model(arch, transform)).eval()
    inputs = {k: v[:200] for k, v in data.items()}
    rng = np.random.default_rng(3)
    permuted = dict(inputs)
    for (
        ctype
    ) in SPEC.constituents:  # shuffle slots, padding included, same order per type
        order = rng.permutation(inputs[ctype].shape[1])
        permuted[ctype] = inputs[ctype][:, order]
        permuted[f"{ctype}_mask"] = inputs[f"{ctype}_mask"][:, order]
    with torch.no_grad():
        a = model(as_torch(inputs)).numpy()
        b = model(as_torch(permuted)).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert np.std(a) > 0  # the check is not vacuous: outputs depend on the inputs


def synthetic_target(x: dict[str, np.ndarray], *, jet_level: bool) -> np.ndarray:
    """ln-correction depending on sums over constituents.

    For set models: sums over charged and neutral constituents that the jet-level inputs do
    not carry. For jet-level models: the charged multiplicity (a sum of the mask, which the
    jet input ``n_charged`` carries) and |η|.
    """
    ch, ne = x["charged"], x["neutral"]
    count = x["charged_mask"].sum(1)
    if jet_level:
        return (0.03 * count + 0.05 * np.abs(x["jet"][:, 1])).astype(np.float32)
    return (
        0.03 * count
        + 2.0 * (ch[..., 0] * ch[..., 1]).sum(1)
        - 1.0 * (ne[..., 0] * np.abs(ne[..., 2])).sum(1)
    ).astype(np.float32)


@pytest.mark.parametrize("arch", list(TINY))
def test_training_beats_constant_predictor(arch):
    rng = np.random.default_rng(11)
    if arch in ("mlp", "resnet"):
        spec = (
            SPEC  # jet features carry the charged multiplicity, a sum over constituents
        )
    else:
        spec = FeatureSpec(
            jet=["log_pt_raw", "eta"],
            constituents=SPEC.constituents,
            max_constituents=MAX,
        )
    train = make_inputs(rng, 4096, TRAIN_SIZES)
    test = make_inputs(rng, 1024, TRAIN_SIZES)
    if arch not in ("mlp", "resnet"):
        train["jet"], test["jet"] = train["jet"][:, :2], test["jet"][:, :2]
    jet_level = arch in ("mlp", "resnet")
    y_train = synthetic_target(train, jet_level=jet_level)
    y_test = synthetic_target(test, jet_level=jet_level)
    transform = fitted_transform(spec, train)
    model = WithPreprocessing(transform.to_torch(), tiny_model(arch, transform, spec))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_train, t_train = as_torch(train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(200):
        idx = torch.randint(0, len(y_train), (96,), generator=gen)
        loss = torch.mean(
            (model({k: v[idx] for k, v in x_train.items()}) - t_train[idx]) ** 2
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        pred = model(as_torch(test)).numpy()
    mse = float(np.mean((pred - y_test) ** 2))
    constant = float(np.mean((y_train.mean() - y_test) ** 2))
    assert mse < 0.7 * constant, (
        f"{arch}: test MSE {mse:.4g} vs constant {constant:.4g}"
    )


# ---------------------------------------------------------------------- configuration
def test_model_config_validation(transform):
    cfg = parse_model_config({"architecture": "particlenet", "size": "full"})
    assert [b.k for b in cfg.edge_convs] == [16, 16, 16]
    lite = parse_model_config({"architecture": "particlenet"})
    assert [b.channels for b in lite.edge_convs] == [[32, 32, 32], [64, 64, 64]]
    with pytest.raises(ConfigError, match="divisible"):
        build_model({"architecture": "part", "dim": 10, "heads": 4}, SPEC)
    with pytest.raises(ConfigError, match="architecture"):
        build_model({"architecture": "transformer"}, SPEC)
    with pytest.raises(ConfigError, match="hiden"):
        build_model({"architecture": "mlp", "hiden": [4]}, SPEC)
    with pytest.raises(ConfigError, match="'eta'"):
        build_model(
            {"architecture": "particlenet", "coordinates": ["eta", "dphi"]}, SPEC
        )
    with pytest.raises(ConfigError, match="'log_pt'"):
        build_model(
            {"architecture": "part", "pt_feature": "log_pt", "pt_is_log": True}, SPEC
        )
    with pytest.raises(ConfigError, match="pdgId"):
        build_model(
            {"architecture": "deepsets", "categorical": {"charged": {"pdgId": 8}}}, SPEC
        )
    with pytest.raises(ConfigError, match="'muons'"):
        build_model({"architecture": "deepsets", "types": ["muons"]}, SPEC)
    jet_only = FeatureSpec(jet=["eta"], constituents={}, max_constituents={})
    with pytest.raises(ConfigError, match="no constituent types"):
        build_model({"architecture": "deepsets"}, jet_only)


def test_transform_and_configs_work_without_torch():
    """transform.py and the model configurations import without torch (base install)."""
    code = """
import sys
sys.modules["torch"] = None  # makes `import torch` fail as if it were not installed
import numpy as np
from jec_coffea.transform import Transform
from jec_coffea.models import build_model, parse_model_config
from jec_coffea.features import FeatureSpec
spec = FeatureSpec(jet=["eta"], constituents={}, max_constituents={})
t = Transform.from_spec(spec).fit({"jet": np.arange(10.0).reshape(10, 1)})
assert t.apply_numpy({"jet": np.array([[4.5]])})["jet"][0, 0] == 0.0
parse_model_config({"architecture": "part"})
try:
    build_model({"architecture": "mlp"}, spec)
except ModuleNotFoundError as err:
    assert "jec-coffea[train]" in str(err), err
else:
    raise AssertionError("build_model without torch did not raise")
"""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr

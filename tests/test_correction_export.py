"""correctionlib export: standard levels, binned DNN factors, resolutions and the MLP as lwtnn."""

from __future__ import annotations

import gzip
import json
import shutil

import awkward as ak
import correctionlib
import hist
import numpy as np
import pytest
from coffea.util import save
from test_evaluation import synthetic_output

from jec_coffea.cli import main
from jec_coffea.correction_export import (
    ETA_EDGES,
    PT_RAW_EDGES,
    binned_factor_correction,
    build_correction_set,
    median_factor_grid,
    read_factor_columns,
    resolution_correction,
    standard_corrections,
    validate_correction_set,
)
from jec_coffea.errors import (
    ConfigError,
    InputFileError,
    MissingBranchError,
    ModelMismatchError,
)
from jec_coffea.metrics import histogram_quantiles

UL17 = "jec/textfiles/pocketcoffea/Summer19UL17_V5_MC_{}_AK4PFchs.jec.txt.gz"
FEATS = ["pt_raw", "eta", "rho", "chHEF", "area"]


def _evaluator(corrections, compound=()):
    cset = build_correction_set(list(corrections), list(compound))
    return correctionlib.CorrectionSet.from_string(
        cset.model_dump_json(exclude_unset=True)
    )


# ----------------------------------------------------------------------------- standard
@pytest.fixture(scope="module")
def derived_dir(shared_data, tmp_path_factory):
    """A derive-standard-like directory: the UL17 L1FastJet, L2Relative and L3Absolute texts."""
    d = tmp_path_factory.mktemp("standard")
    for level in ("L1FastJet", "L2Relative", "L3Absolute"):
        src = shared_data / UL17.format(level)
        shutil.copy(src, d / src.name)
    (d / "derivation.json").write_text("{}")
    return d


@pytest.mark.shared_data
def test_standard_l1l2_matches_the_text_stack(derived_dir):
    from jec_coffea.standard import JECStack

    corrections, compound = standard_corrections(derived_dir)
    names = sorted(c.name for c in corrections)
    assert names == [
        "Summer19UL17_V5_MC_L1FastJet_AK4PFchs",
        "Summer19UL17_V5_MC_L2Relative_AK4PFchs",
    ]
    assert [c.name for c in compound] == ["Summer19UL17_V5_MC_L1L2_AK4PFchs"]
    ev = _evaluator(corrections, compound)
    rng = np.random.default_rng(3)
    n = 2000
    pt = np.exp(rng.uniform(np.log(15), np.log(3000), n))
    eta = rng.uniform(-4.7, 4.7, n)
    area = rng.uniform(0.4, 0.6, n)
    rho = rng.uniform(0, 50, n)
    got = ev.compound["Summer19UL17_V5_MC_L1L2_AK4PFchs"].evaluate(area, eta, pt, rho)
    stack = JECStack.from_text(
        sorted(str(p) for p in derived_dir.glob("*L1FastJet*"))
        + sorted(str(p) for p in derived_dir.glob("*L2Relative*"))
    )
    want = np.asarray(stack.factor(pt, eta, area, rho))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_standard_without_requested_levels(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="L1FastJet"):
        standard_corrections(tmp_path)
    with pytest.raises(InputFileError, match="not found"):
        standard_corrections([tmp_path / "missing_L1FastJet_AK4PFchs.jec.txt"])


# ----------------------------------------------------------------------------- binned DNN
def _columns(n=60_000, seed=5):
    rng = np.random.default_rng(seed)
    eta = rng.uniform(-5.2, 5.2, n)
    pt = np.exp(rng.uniform(np.log(8), np.log(7000), n))
    fl = rng.integers(0, 5, n)
    factor = (
        1.0
        + 0.02 * np.abs(eta)
        + 2.0 / np.sqrt(pt)
        + 0.01 * fl
        + 0.03 * rng.standard_normal(n)
    )
    return {"eta": eta, "pt_raw": pt, "flavour_group": fl, "factor": factor}


def test_median_grid_is_the_numpy_median():
    cols = _columns(20_000)
    eta_edges, pt_edges = (-5.0, -2.0, 0.0, 2.0, 5.0), (10.0, 50.0, 300.0, 7000.0)
    grid, counts = median_factor_grid(
        cols["eta"],
        cols["pt_raw"],
        cols["factor"],
        eta_edges=eta_edges,
        pt_edges=pt_edges,
    )
    assert counts.sum() == 20_000  # out-of-range jets are clamped into the edge bins
    ie = np.clip(np.searchsorted(eta_edges, cols["eta"], side="right") - 1, 0, 3)
    ip = np.clip(np.searchsorted(pt_edges, cols["pt_raw"], side="right") - 1, 0, 2)
    for i in range(4):
        for j in range(3):
            sel = (ie == i) & (ip == j)
            assert grid[i, j] == pytest.approx(
                np.median(cols["factor"][sel]), abs=1e-12
            )


def test_binned_from_parquet_per_flavour(tmp_path):
    cols = _columns()
    # the --save-columns layout: pt_<method> next to pt_raw
    ak.to_parquet(
        ak.Array(
            {
                "eta": cols["eta"],
                "pt_raw": cols["pt_raw"],
                "flavour_group": cols["flavour_group"],
                "pt_deepsets": cols["pt_raw"] * cols["factor"],
            }
        ),
        str(tmp_path / "chunk_0-100.parquet"),
    )
    read = read_factor_columns(tmp_path, "deepsets")
    np.testing.assert_allclose(read["factor"], cols["factor"], rtol=1e-12)
    corr = binned_factor_correction("deepsets", columns=read, per_flavour=True)
    ev = _evaluator([corr])["deepsets_binned"]
    # a bin of the default grid: 0 <= eta < 0.5, 100 <= pT < 130 GeV, flavour b (2)
    sel = (
        (cols["eta"] >= 0)
        & (cols["eta"] < 0.5)
        & (cols["pt_raw"] >= 100)
        & (cols["pt_raw"] < 130)
        & (cols["flavour_group"] == 2)
    )
    assert ev.evaluate(0.25, 115.0, 2) == pytest.approx(
        np.median(cols["factor"][sel]), abs=1e-12
    )
    # unknown flavour index -> flavour-inclusive table; out of range -> clamped
    sel_all = (
        (cols["eta"] >= 0)
        & (cols["eta"] < 0.5)
        & (cols["pt_raw"] >= 100)
        & (cols["pt_raw"] < 130)
    )
    assert ev.evaluate(0.25, 115.0, 17) == pytest.approx(
        np.median(cols["factor"][sel_all]), abs=1e-12
    )
    assert ev.evaluate(9.0, 1e5, 0) == ev.evaluate(4.9, 6000.0, 0)
    # each flavour has its own table: the gluon (3) bin is the gluon median, not b's
    sel_g = sel_all & (cols["flavour_group"] == 3)
    assert ev.evaluate(0.25, 115.0, 3) == pytest.approx(
        np.median(cols["factor"][sel_g]), abs=1e-12
    )


def test_parquet_without_the_method_names_the_column(tmp_path):
    ak.to_parquet(
        ak.Array({"eta": [0.1], "pt_raw": [50.0]}), str(tmp_path / "a.parquet")
    )
    with pytest.raises(MissingBranchError, match="deepsets_factor"):
        read_factor_columns(tmp_path / "a.parquet", "deepsets")
    with pytest.raises(InputFileError, match="no"):
        read_factor_columns(tmp_path / "nothing", "deepsets")


def test_binned_from_factor_histogram():
    cols = _columns(40_000)
    h = hist.Hist(
        hist.axis.StrCategory(["deepsets"], name="method"),
        hist.axis.Variable([0.0, 1.3, 2.5, 3.0, 5.0], name="abs_eta"),
        hist.axis.Variable([10, 30, 100, 300, 1000, 7000], name="pt_raw"),
        hist.axis.Regular(300, 0.0, 3.0, name="factor"),
        storage=hist.storage.Weight(),
    )
    h.fill(
        method="deepsets",
        abs_eta=np.abs(cols["eta"]),
        pt_raw=cols["pt_raw"],
        factor=cols["factor"],
    )
    ev = _evaluator([binned_factor_correction("deepsets", histogram=h)])[
        "deepsets_binned"
    ]
    sel = (
        (np.abs(cols["eta"]) >= 1.3)
        & (np.abs(cols["eta"]) < 2.5)
        & (cols["pt_raw"] >= 30)
        & (cols["pt_raw"] < 100)
    )
    # binned median: exact to the factor bin width 0.01; abs(JetEta) is taken inside
    assert ev.evaluate(-2.0, 50.0) == pytest.approx(
        np.median(cols["factor"][sel]), abs=0.01
    )
    assert ev.evaluate(-2.0, 50.0) == ev.evaluate(2.0, 50.0)
    with pytest.raises(ConfigError, match="per-flavour"):
        binned_factor_correction("deepsets", histogram=h, per_flavour=True)


# ----------------------------------------------------------------------------- resolution
def test_resolution_matches_the_rho_view():
    out = synthetic_output(30_000)
    corr = resolution_correction(out, "deepsets")
    ev = _evaluator([corr])["deepsets_PtResolution"]
    sub = out["response_vs_rho"][{"method": "deepsets"}]
    q = histogram_quantiles(sub, (0.25, 0.5, 0.75))
    want = (q[..., 2] - q[..., 0]) / q[..., 1]
    # |eta| bin 0 (0-1.3), pT bin 3 (100-200 GeV), rho bin 2 (10-15 GeV); eta sign ignored
    assert ev.evaluate(-0.7, 150.0, 12.0) == pytest.approx(want[0, 3, 2], rel=1e-9)
    assert ev.evaluate(0.7, 150.0, 12.0) == pytest.approx(want[0, 3, 2], rel=1e-9)
    # the resolution falls with pT as generated
    assert ev.evaluate(0.7, 40.0, 12.0) > ev.evaluate(0.7, 700.0, 12.0)
    with pytest.raises(ConfigError, match="nonexistent"):
        resolution_correction(out, "nonexistent")


# ----------------------------------------------------------------------------- MLP -> lwtnn
@pytest.fixture(scope="module")
def tiny_mlp(tmp_path_factory):
    """A tiny Linear/ReLU/Tanh MLP with a non-linear transform, exported by export_onnx."""
    torch = pytest.importorskip("torch")
    from jec_coffea.export import export_onnx
    from jec_coffea.features import FeatureSpec
    from jec_coffea.transform import Transform

    spec = FeatureSpec(jet=FEATS, constituents={}, max_constituents={})
    steps = {
        "jet": {
            "pt_raw": [{"type": "log"}],
            "rho": [{"type": "arcsinh", "scale": 5.0}],
            "chHEF": [{"type": "clip", "min": 0.0, "max": 1.0}],
        }
    }
    rng = np.random.default_rng(1)
    x = _jet_inputs(rng, 5000)
    transform = Transform.from_spec(spec, steps=steps).fit({"jet": x})
    # one purely linear feature without clip bounds: folded into lwtnn's offset/scale
    groups = {g: dict(f) for g, f in transform.groups.items()}
    groups["jet"]["area"] = groups["jet"]["area"].model_copy(update={"bounds": None})
    transform = Transform(groups=groups)

    class Tiny(torch.nn.Module):
        architecture = "mlp"

        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(5, 16),
                torch.nn.ReLU(),
                torch.nn.Linear(16, 8),
                torch.nn.Tanh(),
                torch.nn.Linear(8, 1),
            )

        def input_names(self) -> list[str]:
            return ["jet"]

        def forward(self, inputs, raw=None):
            return self.net(inputs["jet"]).squeeze(-1)

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mlp") / "tiny.onnx"
    meta = {"validity": {}, "detector_config_hash": "test", "config_hash": "test"}
    return export_onnx(Tiny(), transform, spec, path, meta)


def _jet_inputs(rng, n):
    return np.stack(
        [
            rng.lognormal(4, 1, n),
            rng.uniform(-4.7, 4.7, n),
            rng.gamma(4, 5, n),
            rng.uniform(0, 1, n),
            rng.normal(0.5, 0.05, n),
        ],
        axis=1,
    ).astype(np.float32)


@pytest.mark.parametrize("output", ["log_correction", "factor"])
def test_mlp_lwtnn_equals_onnxruntime(tiny_mlp, output):
    import onnxruntime as ort

    from jec_coffea.correction_mlp import mlp_correction

    corr = mlp_correction(tiny_mlp, output=output)
    node = json.loads(corr.model_dump_json(exclude_unset=True))["data"]
    # pt_raw, rho, chHEF need formula transforms (log, arcsinh, clip); area is folded
    assert list(_transform_inputs(node)) == ["pt_raw", "eta", "rho", "chHEF"]
    ev = _evaluator([corr])["mlp_dnn"]
    x = _jet_inputs(np.random.default_rng(9), 3000)
    x[:30, 0] = 0.0  # log of 0 -> the feature default, as in the ONNX graph
    x[30:60, 3] = 1.7  # clipped
    x[60:90, 1] = -30.0  # far outside the fitted range -> bounds
    ref = (
        ort.InferenceSession(str(tiny_mlp)).run(None, {"jet": x})[0].astype(np.float64)
    )
    got = ev.evaluate(*[x[:, i].astype(np.float64) for i in range(len(FEATS))])
    if output == "factor":
        got = np.log(got)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def _transform_inputs(node):
    out = []
    while node.get("nodetype") == "transform":
        out.append(node["input"])
        node = node["content"]
    assert node["nodetype"] == "lwtnn"
    return out


def test_mlp_with_unsupported_operator_is_refused(tiny_mlp, tmp_path):
    import onnx

    from jec_coffea.correction_mlp import mlp_correction

    model = onnx.load(str(tiny_mlp))
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type = "Gelu"
    bad = tmp_path / "gelu.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ModelMismatchError, match="Gelu"):
        mlp_correction(bad)


# ----------------------------------------------------------------------------- command line
@pytest.mark.shared_data
def test_cli_writes_one_validated_file(tiny_mlp, derived_dir, tmp_path, capsys):
    cols = _columns(20_000)
    ak.to_parquet(
        ak.Array(
            {
                "eta": cols["eta"],
                "pt_raw": cols["pt_raw"],
                "flavour_group": cols["flavour_group"],
                "deepsets_factor": cols["factor"],
            }
        ),
        str(tmp_path / "cols.parquet"),
    )
    run = tmp_path / "run"
    run.mkdir()
    save(synthetic_output(10_000), str(run / "histograms.coffea"))
    out = tmp_path / "jec_dnn.json.gz"
    code = main(
        [
            "export-correctionlib",
            "--standard", str(derived_dir),
            "--binned", "deepsets", "--columns", str(tmp_path / "cols.parquet"), "--per-flavour",
            "--resolution", str(run),
            "--mlp", str(tiny_mlp),
            "-o", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    cset = validate_correction_set(out)
    assert set(cset) == {
        "Summer19UL17_V5_MC_L1FastJet_AK4PFchs",
        "Summer19UL17_V5_MC_L2Relative_AK4PFchs",
        "deepsets_binned",
        "raw_PtResolution",
        "standard_PtResolution",
        "deepsets_PtResolution",
        "mlp_dnn",
    }
    assert "Summer19UL17_V5_MC_L1L2_AK4PFchs" in set(cset.compound)
    with gzip.open(out, "rt") as fh:
        assert json.load(fh)["schema_version"] == 2
    assert "validated" in capsys.readouterr().out


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore:.*outside the model's validity.*:UserWarning")
def test_binned_from_a_dataset_and_model(tiny_mlp, shared_data, tmp_path):
    from jec_coffea.correction_export import factors_from_dataset

    pfnano = shared_data / "pfnano/coffea_pfnano.root"
    cols = factors_from_dataset(pfnano, tiny_mlp)
    assert len(cols["factor"]) > 0
    assert np.all(np.isfinite(cols["factor"]))
    out = tmp_path / "binned.json"
    code = main(
        [
            "export-correctionlib", "--binned", "mlp", "--data", str(pfnano),
            "--model", str(tiny_mlp), "--min-jets", "1", "-o", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    ev = validate_correction_set(out)["mlp_binned"]
    grid, counts = median_factor_grid(
        cols["eta"], cols["pt_raw"], cols["factor"], min_jets=1
    )
    got = ev.evaluate(cols["eta"], cols["pt_raw"])
    # every jet sits in a populated bin, whose value is the median of its jets' factors
    ie = np.clip(
        np.searchsorted(np.asarray(ETA_EDGES), cols["eta"], side="right") - 1,
        0,
        len(ETA_EDGES) - 2,
    )
    ip = np.clip(
        np.searchsorted(np.asarray(PT_RAW_EDGES), cols["pt_raw"], side="right") - 1,
        0,
        len(PT_RAW_EDGES) - 2,
    )
    np.testing.assert_allclose(got, grid[ie, ip], rtol=1e-12)
    assert np.all(counts[ie, ip] >= 1)


def test_cli_bad_options(tmp_path, capsys):
    assert (
        main(
            [
                "export-correctionlib",
                "--binned",
                "deepsets",
                "-o",
                str(tmp_path / "x.json"),
            ]
        )
        == 2
    )
    assert "exactly one of --columns" in capsys.readouterr().err
    assert main(["export-correctionlib", "-o", str(tmp_path / "x.json")]) == 2
    assert "nothing to export" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text(
        '{"schema_version": 2, "corrections": [{"name": 1}]}'
    )
    with pytest.raises(InputFileError, match="does not validate"):
        validate_correction_set(tmp_path / "broken.json")

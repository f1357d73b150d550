"""The demo pipeline end to end at small size: every output exists and parses.

Runs ``jec-coffea demo`` (simulate -> derive-standard -> closure -> train -> run -> report ->
export-correctionlib -> evaluate) on a small low-pile-up sample with the iterative executor,
then checks the outputs the README promises and a few physics facts that must hold even at
this size.
"""

from __future__ import annotations

import gzip
import itertools
import json

import correctionlib
import numpy as np
import pytest
from coffea.util import load

from jec_coffea.cli import main
from jec_coffea.metrics import histogram_quantiles

pytest.importorskip("pythia8mc")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("demo")
    code = main(
        [
            "demo",
            "--data",
            str(shared_data),
            "-o",
            str(out),
            "--jets",
            "8000",
            "--pileup",
            "fixed:10",
            "--library-size",
            "500",
            "--epochs",
            "3",
            "--executor",
            "iterative",
            "--min-jets",
            "20",
        ]
    )
    assert code == 0, "the demo reported a failed step"
    return out


@pytest.mark.slow
def test_every_output_exists_and_parses(demo_dir):
    for run in ("run_sim", "run_real_ul17", "run_real_run3"):
        out = load(demo_dir / run / "histograms.coffea")
        assert "response" in out
        info = json.loads((demo_dir / run / "run.json").read_text())
        assert info["files"], run
    html = (demo_dir / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert {"deepsets_demo", "standard", "raw"} <= set(summary["methods"])
    with gzip.open(demo_dir / "corrections.json.gz", "rt") as f:
        cset = correctionlib.CorrectionSet.from_string(f.read())
    names = set(cset)
    assert any(n.endswith("L1FastJet_AK4PFchs") for n in names)
    assert any(n.endswith("L2Relative_AK4PFchs") for n in names)
    for onnx in ("deepsets", "mlp_nanoaod"):
        assert (demo_dir / "train" / onnx / "model.onnx").stat().st_size > 0


# The demo's test split holds ~1,500 jets: DESIGN.md's fine pT_gen bins hold < 200 each, so the
# demo tests use the histogram's |eta| bins times these wider pT_gen ranges. The per-bin figures
# on the fine grid come from `jec-coffea evaluate` on the 155k-jet test sample (model cards).
COARSE_PT_GEN = (20, 50, 3000)


def coarse_bins(h, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(jets, [q25, q50, q75]) per (|eta| bin, COARSE_PT_GEN range), all flavours."""
    proj = h[{"method": method, "flavour": sum}]
    counts, quantiles = [], []
    for i in range(proj.axes["abs_eta"].size):
        for lo, hi in itertools.pairwise(COARSE_PT_GEN):
            cell = proj[{"abs_eta": i, "pt_gen": slice(lo * 1j, hi * 1j, sum)}]
            counts.append(cell.sum(flow=True).value)
            quantiles.append(histogram_quantiles(cell, [0.25, 0.5, 0.75]))
    return np.array(counts), np.array(quantiles)


@pytest.mark.slow
def test_standard_corrects_the_simulated_response(demo_dir):
    """In every bin with >= 200 jets the derived standard correction's median response is
    within 5% of 1, and closer to 1 than raw's on average."""
    h = load(demo_dir / "run_sim" / "histograms.coffea")["response"]
    counts, q_std = coarse_bins(h, "standard")
    _, q_raw = coarse_bins(h, "raw")
    full = counts >= 200
    assert full.sum() >= 2, f"too few bins with >= 200 jets: {counts}"
    assert np.all(np.abs(q_std[full, 1] - 1) < 0.05), q_std[full, 1]
    assert np.mean(np.abs(q_raw[full, 1] - 1)) > np.mean(np.abs(q_std[full, 1] - 1))


@pytest.mark.slow
def test_shipped_deep_sets_resolves_better_than_raw(demo_dir):
    """The shipped Deep Sets model's IQR/median is below raw's in >= 80% of the bins with
    >= 200 jets of the demo's simulated test split."""
    h = load(demo_dir / "run_sim" / "histograms.coffea")["response"]
    assert "deepsets" in h.axes["method"], "the shipped deepsets model was not run"
    counts, q_raw = coarse_bins(h, "raw")
    _, q_dnn = coarse_bins(h, "deepsets")
    full = counts >= 200
    assert full.sum() >= 2, f"too few bins with >= 200 jets: {counts}"
    res_raw = (q_raw[full, 2] - q_raw[full, 0]) / q_raw[full, 1]
    res_dnn = (q_dnn[full, 2] - q_dnn[full, 0]) / q_dnn[full, 1]
    better = res_dnn < res_raw
    assert better.mean() >= 0.8, f"deepsets {res_dnn} vs raw {res_raw}"


@pytest.mark.slow
def test_real_files_with_constituent_model_skipped_on_old_layout(demo_dir):
    info = json.loads((demo_dir / "run_real_ul17" / "run.json").read_text())
    text = json.dumps(info)
    assert "deepsets_demo" in text
    assert "cmsjet_nano106X" in text
    out = load(demo_dir / "run_real_run3" / "histograms.coffea")
    assert np.sum(out["response"][{"method": "pnet"}].values(flow=True)) > 0


@pytest.mark.slow
def test_shipped_models_run_on_real_pfnano(demo_dir):
    """The shipped models fill the real PFNano file's histograms next to the UL17 stack;
    the constituent models are skipped (with a reason) only on the old-layout file."""
    out = load(demo_dir / "run_real_ul17" / "histograms.coffea")
    methods = list(out["response"].axes["method"])
    for name in ("deepsets", "particlenet", "mlp_nanoaod", "standard"):
        assert name in methods
        assert out["n_jets"][name] > 0, name
    info = json.loads((demo_dir / "run_real_ul17" / "run.json").read_text())
    skipped = info["skipped_methods"]
    assert "deepsets" in skipped
    assert "cmsjet_nano106X" in json.dumps(skipped["deepsets"])

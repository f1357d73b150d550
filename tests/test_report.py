"""The report: every figure as PNG and PDF, the self-contained HTML page, summary.json/.md."""

from __future__ import annotations

import json
import re

import hist
import numpy as np
import pytest
from coffea.util import save
from test_evaluation import synthetic_output

from jec_coffea.cli import main
from jec_coffea.errors import InputFileError
from jec_coffea.report import build_report, read_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_outputs(rep_dir, n_min: int) -> list[str]:
    """Every figure has a non-empty PNG and PDF, embedded in the HTML; returns the names."""
    plots = rep_dir / "plots"
    names = sorted(p.stem for p in plots.glob("*.png"))
    assert len(names) >= n_min
    for name in names:
        png = (plots / f"{name}.png").read_bytes()
        pdf = (plots / f"{name}.pdf").read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert pdf.startswith(b"%PDF")
        assert len(pdf) > 1000
    page = (rep_dir / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/png;base64,") == len(names)
    for name in names:
        assert f"id='{name}'" in page
    assert "<table>" in page
    doc = json.loads((rep_dir / "summary.json").read_text())
    for key in ("format_version", "reference", "min_jets", "methods", "abs_eta_edges"):
        assert key in doc
    assert (rep_dir / "summary.md").read_text().startswith("| method |")
    return names


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    train = tmp / "train_deepsets"
    train.mkdir()
    epochs = np.arange(1, 11)
    rows = ["epoch,train_loss,val_loss,lr"] + [
        f"{e},{0.1 / e:.6f},{0.12 / e**0.8:.6f},{1e-3 * 0.9**e:.3g}" for e in epochs
    ]
    (train / "history.csv").write_text("\n".join(rows) + "\n")
    out = synthetic_output(20_000, methods=("standard", "deepsets"))
    # reconstruction-level histograms of a simulated and a collision-data run
    rng = np.random.default_rng(2)
    data: dict = {"inputs": {}}
    for o, scale, n in ((out, 5.0, 20_000), (data, 5.2, 5000)):
        h_rho = hist.Hist(
            hist.axis.Regular(40, 0, 60, name="rho", label="ρ [GeV]"),
            storage=hist.storage.Weight(),
        )
        h_rho.fill(rng.gamma(4, scale, n))
        o["inputs"] = {"rho": h_rho}
    return build_report(
        out,
        tmp / "rep",
        min_jets=100,
        training=[train],
        n_boot=5,
        source="synthetic",
        rlabel="synthetic (13.6 TeV)",
        compare=data,
        abs_eta_max=1.3,  # fewer figures: the test checks the machinery, not every bin
    )


def test_synthetic_report_outputs(synthetic_report):
    rep = synthetic_report
    names = _check_outputs(rep.directory, 15)
    assert len(names) == len(rep.figures)
    sections = {f.section for f in rep.figures}
    for section in (
        "Response distributions",
        "Scale per flavour",
        "Resolution",
        "Flavour dependence",
        "Closure",
        "Pile-up dependence",
        "Training",
        "Data and simulation",
    ):
        assert section in sections
    assert "loss_0_train_deepsets" in names
    assert "datamc_input_rho" in names
    assert "residuals6_deepsets" in names
    # the page shows the summary numbers of the JSON
    doc = json.loads(rep.summary_json.read_text())
    imp = doc["methods"]["deepsets"]["bins"][-1]["improvement_resolution"]
    assert 10 < imp < 20
    page = rep.html.read_text()
    assert f"{imp:.3g}%" in page


def test_history_errors_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match=r"history\.csv"):
        read_history(tmp_path)
    (tmp_path / "history.csv").write_text("epoch,loss\n1,0.1\n")
    with pytest.raises(InputFileError, match="train_loss"):
        read_history(tmp_path)


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore:Missing cross-reference index:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Found duplicate branch:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning")
def test_real_file_report_through_the_cli(shared_data, tmp_path, capsys):
    from coffea import processor
    from coffea.nanoevents import PFNanoAODSchema

    from jec_coffea.processors import ResponseProcessor
    from jec_coffea.standard import JECStack

    pfnano = shared_data / "pfnano/coffea_pfnano.root"
    jec = JECStack.from_spec(
        str(shared_data / "jec/correctionlib/2017_UL_jet_jerc.json.gz")
        + ":Summer19UL17_V5_MC:AK4PFchs"
    )
    runner = processor.Runner(
        executor=processor.IterativeExecutor(), schema=PFNanoAODSchema
    )
    out = runner(
        {"qcd": {"files": {str(pfnano): "Events"}}},
        ResponseProcessor(jec=jec, methods=["raw", "standard"]),
        treename="Events",
    )
    run = tmp_path / "run"
    run.mkdir()
    save(out, str(run / "histograms.coffea"))
    rep = tmp_path / "rep"
    code = main(
        [
            "report", str(run), "-o", str(rep), "--data", str(pfnano),
            "--n-boot", "4", "--plot-min-jets", "3", "--max-jets", "40",
            "--abs-eta-max", "1.3",
        ]
    )  # fmt: skip
    assert code == 0
    names = _check_outputs(rep, 8)
    for view in (
        "dataset_occupancy",
        "dataset_flavour",
        "dataset_target",
        "dataset_multiplicity",
        "dataset_constituents",
    ):
        assert view in names
    assert any(re.match(r"closure_map_standard", n) for n in names)
    assert "40 jets" in (rep / "report.html").read_text()
    # bad input: a training directory without history.csv is named in the error
    assert main(["report", str(run), "-o", str(rep), "--training", str(tmp_path)]) == 2
    assert "history.csv" in capsys.readouterr().err

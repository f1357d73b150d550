"""`jec-coffea run`, its executors and the dask-awkward path, on the real shared files."""

from __future__ import annotations

import json
import warnings

import dask
import hist
import numpy as np
import pytest
import uproot
from coffea import processor
from coffea.dataset_tools import apply_to_fileset
from coffea.processor.accumulator import accumulate

from jec_coffea.cli import main
from jec_coffea.data import read_jet_table
from jec_coffea.metrics import histogram_quantiles
from jec_coffea.processors import ResponseProcessor
from jec_coffea.runner import (
    LayoutSchema,
    jobqueue_cluster,
    make_executor,
    run_fileset,
)
from jec_coffea.standard import JECStack

pytestmark = [
    pytest.mark.shared_data,
    # coffea's schemas warn about cross-references these test files lack
    pytest.mark.filterwarnings("ignore:Missing cross-reference index:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Found duplicate branch:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Missing event_ids:RuntimeWarning"),
]

UL17 = "jec/correctionlib/2017_UL_jet_jerc.json.gz:Summer19UL17_V5_MC:AK4PFchs"
TT = "nanoaod/coffea_nano_tt_v12.root"
PFNANO = "pfnano/coffea_pfnano.root"
OLD = "pfnano/cmsjet_nano106X_on_mini106X_2017_mc_NANO.root"
DIMUON = "nanoaod/coffea_nano_dimuon.root"
HISTOGRAMS = (
    "response",
    "response_flavour6",
    "response_vs_rho",
    "response_vs_eta",
    "corrected_pt",
    "correction_factor",
)


@pytest.mark.parametrize(
    "name", [DIMUON, OLD, PFNANO, "nanoaod/skhep_nanoAOD_2015_CMS_Open_Data_ttbar.root"]
)
def test_layout_schema_keeps_the_photon_branches_of_the_file(shared_data, name):
    """coffea's NanoAOD schemas overwrite Photon_mass/charge with constants and warn (per
    file and chunk); LayoutSchema keeps the file's values (coffea still fills them where a
    file lacks them: every shared file with photons has both)."""
    import awkward as ak
    from coffea.nanoevents import NanoEventsFactory

    path = str(shared_data / name)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "Branch .* already exists", RuntimeWarning)
        events = NanoEventsFactory.from_root(
            {path: "Events"}, schemaclass=LayoutSchema, mode="eager", entry_stop=200
        ).events()
    tree = uproot.open(path)["Events"]
    for field in ("mass", "charge"):
        want = ak.flatten(tree[f"Photon_{field}"].array(entry_stop=200))
        assert ak.all(ak.flatten(events.Photon[field]) == want), field


@pytest.fixture(scope="module")
def proc(shared_data) -> ResponseProcessor:
    jec = JECStack.from_spec(str(shared_data / UL17))
    return ResponseProcessor(
        jec=jec, methods=["raw", "standard", "nanoaod", "pnet"], split="all"
    )


def _fileset(shared_data, *names: str) -> dict:
    return {
        name.split("/")[-1].split(".")[0]: {
            "files": {str(shared_data / name): "Events"}
        }
        for name in names
    }


@pytest.fixture(scope="module")
def iterative(shared_data, proc):
    report = run_fileset(
        _fileset(shared_data, TT, PFNANO),
        proc,
        executor=make_executor("iterative"),
        chunksize=70,
    )
    assert report.complete
    return report.output


def assert_same_output(a: dict, b: dict) -> None:
    """Counts equal exactly, weighted sums within 1e-12 relative, in every histogram."""
    for key in HISTOGRAMS:
        np.testing.assert_allclose(
            a[key].values(flow=True), b[key].values(flow=True), rtol=1e-12, atol=0
        )
        np.testing.assert_allclose(
            a[key].variances(flow=True), b[key].variances(flow=True), rtol=1e-12
        )
    for name, h in a["inputs"].items():
        np.testing.assert_allclose(
            h.values(flow=True), b["inputs"][name].values(flow=True), rtol=1e-12
        )
    for key in ("n_events", "n_jets", "n_reco_jets", "not_computed", "truth"):
        assert a[key] == b[key], key
    assert a["cutflow"].counts == b["cutflow"].counts
    np.testing.assert_allclose(
        list(a["cutflow"].sumw.values()), list(b["cutflow"].sumw.values()), rtol=1e-12
    )


@pytest.mark.dask
def test_dask_iterative_and_dask_awkward_paths_agree(
    shared_data, proc, iterative, dask_client
):
    report = run_fileset(
        _fileset(shared_data, TT, PFNANO),
        proc,
        executor=make_executor("dask", client=dask_client),
        chunksize=70,
    )
    assert report.complete
    assert {f["file"].split("/")[-1]: f["chunks"] for f in report.files} == {
        "coffea_nano_tt_v12.root": 3,
        "coffea_pfnano.root": 1,
    }
    assert_same_output(report.output, iterative)
    # dask-awkward: apply_to_fileset with the same processor, partitions of other sizes
    fileset = {
        "tt": {
            "files": {
                str(shared_data / TT): {
                    "object_path": "Events",
                    "steps": [[0, 50], [50, 120], [120, 200]],
                }
            }
        },
        "pf": {"files": {str(shared_data / PFNANO): "Events"}},
    }
    lazy = apply_to_fileset(proc, fileset, schemaclass=LayoutSchema)
    (computed,) = dask.compute(lazy)
    assert_same_output(accumulate([computed["tt"], computed["pf"]]), iterative)


def test_preload_is_the_readers_branch_set_and_changes_nothing(
    shared_data, proc, monkeypatch
):
    """The runner asks coffea to preload exactly the branches the jet-table build reads (one
    ``arrays`` call per chunk instead of one read per branch); without it the histograms are
    the same."""
    from jec_coffea import runner
    from jec_coffea.data import layout_branches

    for name in (TT, PFNANO):
        path = str(shared_data / name)
        info = runner._inspect("d", path, "Events")
        assert info["preload"] == layout_branches(path)
        assert "Jet_pt" in info["preload"]
    seen = []
    original = runner._RecordingRunner.run

    def spy(self, fileset, *args, **kwargs):
        seen.append({d: spec.get("preload") for d, spec in fileset.items()})
        return original(self, fileset, *args, **kwargs)

    monkeypatch.setattr(runner._RecordingRunner, "run", spy)
    fileset = _fileset(shared_data, TT, PFNANO)
    with_preload = run_fileset(fileset, proc, executor=make_executor("iterative"))
    assert seen[0] == {
        "coffea_nano_tt_v12": sorted(layout_branches(shared_data / TT)),
        "coffea_pfnano": sorted(layout_branches(shared_data / PFNANO)),
    }
    inspect = runner._inspect
    monkeypatch.setattr(
        runner, "_inspect", lambda *a: {**inspect(*a), "preload": set()}
    )
    without = run_fileset(fileset, proc, executor=make_executor("iterative"))
    assert seen[1] == {"coffea_nano_tt_v12": None, "coffea_pfnano": None}
    assert_same_output(with_preload.output, without.output)


def test_dask_awkward_path_reads_only_the_needed_columns(shared_data, proc):
    import dask_awkward as dak

    from jec_coffea.processors._dask import _needed

    fileset = {"tt": {"files": {str(shared_data / TT): "Events"}}}
    from coffea.nanoevents import NanoEventsFactory

    events = NanoEventsFactory.from_root(
        fileset["tt"]["files"], schemaclass=LayoutSchema, mode="dask"
    ).events()
    layout, touched = _needed(events, None)
    assert layout == "nanoaod"
    (columns,) = dak.report_necessary_columns(*touched).values()
    assert "Jet_PNetRegPtRawCorr" in columns
    assert "Rho_fixedGridRhoFastjetAll" in columns
    assert "GenPart_statusFlags" in columns
    assert "Jet_btagDeepFlavB" not in columns  # not an input of anything
    assert len(columns) < 60


def test_pnet_regression_closes_on_run3_ttbar(iterative):
    """Median pT_raw x PNetRegPtRawCorr / pT_gen within 5% of 1 (30-100 GeV, |eta| < 1.3)."""
    h = iterative["response"][
        {
            "method": "pnet",
            "flavour": sum,
            "abs_eta": 0,
            "pt_gen": slice(hist.loc(30), hist.loc(100), sum),
        }
    ]
    assert h.sum().value > 100
    median = histogram_quantiles(h, [0.5])[0]
    assert abs(median - 1) < 0.05, median
    # stored factors <= 0 are "not computed": counted, never filled as R = 0
    assert iterative["not_computed"]["pnet"] > 0
    assert iterative["n_jets"]["pnet"] < iterative["n_jets"]["raw"]
    pnet = iterative["response"][{"method": "pnet"}].project("response")
    assert pnet.values(flow=True)[:2].sum() == 0
    # pnet is skipped, with its reason, on the Run-2 PFNano file
    (reason,) = iterative["skipped_methods"]["pnet"]
    assert "Jet_PNetRegPtRawCorr" in reason
    (where,) = iterative["skipped_methods"]["pnet"][reason]
    assert where.endswith("coffea_pfnano.root")


def test_collision_data_fills_reco_views_only(shared_data, proc):
    report = run_fileset(
        _fileset(shared_data, DIMUON),
        proc,
        executor=make_executor("iterative"),
        chunksize=100,
    )
    out = report.output
    assert out["truth"] == {"simulation": 0, "data": 1}
    for key in ("response", "response_flavour6", "response_vs_rho", "response_vs_eta"):
        assert out[key].sum(flow=True).value == 0
    assert out["cutflow"].counts == {}  # no gen-based selection attempted
    assert out["n_jets"] == {"raw": 0, "standard": 0, "nanoaod": 0, "pnet": 0}
    # 264 jets, those with tight jet ID in the reco views; every method but pnet filled
    n = out["n_reco_jets"]
    assert 0 < n["raw"] == n["standard"] == n["nanoaod"] <= 264
    assert n["pnet"] == 0
    assert "pnet" in out["skipped_methods"]
    corrected = out["corrected_pt"][{"abs_eta": sum, "pt": sum}]
    assert corrected["standard"].value == n["standard"]  # data: unit weights
    # the factor is the stack's, on the jets read directly (same code as training)
    table = read_jet_table(shared_data / DIMUON)
    jets = table.jets[(np.asarray(table.jets.jet_id) & 2) == 2]
    expected = proc.jec.factor(
        np.asarray(jets.pt_raw),
        np.asarray(jets.eta),
        np.asarray(jets.area),
        np.asarray(jets.event_rho),
    )
    factor = out["correction_factor"][
        {"method": "standard", "abs_eta": sum, "pt_raw": sum}
    ]
    ref = factor.copy().reset()
    ref.fill(np.asarray(expected))
    np.testing.assert_array_equal(factor.values(flow=True), ref.values(flow=True))
    assert out["inputs"]["area"].sum().value == n["raw"]


def test_cli_run_writes_documented_outputs(shared_data, tmp_path, iterative):
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps(_fileset(shared_data, TT, PFNANO)))
    out = tmp_path / "out"
    args = ["run", "--fileset", str(fileset), "--jec", str(shared_data / UL17)]
    args += ["-o", str(out), "--split", "all", "--executor", "iterative"]
    args += ["--methods", "raw,standard,nanoaod,pnet", "--chunksize", "70"]
    args += ["--save-columns", "--no-progress"]
    assert main(args) == 0
    from coffea.util import load

    saved = load(str(out / "histograms.coffea"))
    assert_same_output(saved, iterative)
    with uproot.open(out / "histograms.root") as root:
        th2 = root["response/standard/g/abs_eta_0"]
        assert th2.classname == "TH2D"
        ref = iterative["response"][
            {"method": "standard", "flavour": "g", "abs_eta": 0}
        ]
        np.testing.assert_allclose(th2.values(), ref.values(), rtol=1e-12)
        assert "corrected_pt/raw/abs_eta_1" in root
    info = json.loads((out / "run.json").read_text())
    assert info["complete"] is True
    assert info["failures"] == []
    assert {f["status"] for f in info["files"]} == {"complete"}
    assert "Jet_PNetRegPtRawCorr" in next(iter(info["skipped_methods"]["pnet"]))
    assert info["processor"]["split"] == "all"
    assert info["timings"]["process"] > 0
    # --save-columns: one parquet per chunk, the selected jets of every method
    import awkward as ak

    parts = sorted((out / "columns").rglob("*.parquet"))
    assert len(parts) == 4
    cols = ak.concatenate([ak.from_parquet(p) for p in parts])
    assert len(cols) == iterative["n_jets"]["raw"]
    assert {"pt_raw", "pt_gen", "pt_standard", "event"} <= set(cols.fields)


def test_dnn_methods_skip_where_the_model_cannot_be_fed(
    shared_data, tmp_path_factory, tmp_path
):
    pytest.importorskip("torch")
    from _tiny_onnx import tiny_onnx_models

    models = tiny_onnx_models(tmp_path_factory, shared_data)
    fileset = tmp_path / "fileset.json"
    fileset.write_text(
        json.dumps({"mc": [str(shared_data / PFNANO), str(shared_data / OLD)]})
    )
    out = tmp_path / "out"
    args = ["run", "--fileset", str(fileset), "-o", str(out), "--split", "all"]
    args += ["-m", f"ds={models['deepsets']}", "-m", f"mlp={models['mlp']}"]
    args += ["--methods", "raw", "--executor", "iterative", "--no-progress"]
    assert main(args) == 0
    info = json.loads((out / "run.json").read_text())
    (reason,) = info["skipped_methods"]["ds"]
    assert "constituents" in reason
    assert list(info["skipped_methods"]["ds"][reason]) == [str(shared_data / OLD)]
    assert "mlp" not in info["skipped_methods"]
    assert info["n_jets"]["mlp"] == info["n_jets"]["raw"] > info["n_jets"]["ds"] > 0


@pytest.mark.dask
def test_scheduler_joins_a_running_cluster(shared_data, tmp_path):
    import distributed

    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps(_fileset(shared_data, PFNANO)))
    with distributed.LocalCluster(
        n_workers=1, processes=False, dashboard_address=None
    ) as cluster:
        out = tmp_path / "out"
        args = ["run", "--fileset", str(fileset), "-o", str(out), "--split", "all"]
        args += ["--scheduler", cluster.scheduler_address, "--no-progress"]
        assert main(args) == 0
        # the cluster is not ours: still up after the run
        with distributed.Client(cluster.scheduler_address) as client:
            assert len(client.scheduler_info()["workers"]) == 1
        address = cluster.scheduler_address
    info = json.loads((out / "run.json").read_text())
    assert info["run_options"]["scheduler"] == address
    assert info["files"][0]["status"] == "complete"


def test_cluster_job_scripts_without_submission():
    with jobqueue_cluster(
        "slurm", cores=2, memory="3GB", queue="short", account="cms"
    ) as slurm:
        script = slurm.job_script()
    assert "#SBATCH -p short" in script
    assert "#SBATCH -A cms" in script
    assert "--nworkers 2" in script
    assert "--nthreads 1" in script
    with jobqueue_cluster(
        "htcondor",
        memory="2GB",
        walltime="01:30:00",
        job_extra_directives=['+JobFlavour = "longlunch"'],
    ) as condor:
        script = condor.job_script()
    assert "+MaxRuntime = 5400" in script
    assert '+JobFlavour = "longlunch"' in script
    assert "MY.DaskWorkerMemory = 2000000000" in script


def test_bad_options_name_the_option(shared_data, tmp_path, capsys):
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps(_fileset(shared_data, PFNANO)))
    base = ["run", "--fileset", str(fileset), "-o", str(tmp_path / "o")]
    assert main([*base, "--executor", "iterative", "--scheduler", "tcp://x:1"]) == 2
    assert "--scheduler/--cluster need --executor dask" in capsys.readouterr().err
    assert main(["run", "--fileset", str(tmp_path / "nope.json"), "-o", "x"]) == 2
    assert "nope.json: no such fileset file" in capsys.readouterr().err
    assert main([*base, "--methods", "raw,dnn", "--executor", "iterative"]) == 2
    assert "unknown method(s) ['dnn']" in capsys.readouterr().err
    with pytest.raises(Exception, match="expected 'KEY = VALUE'"):
        jobqueue_cluster("htcondor", job_extra_directives=["nonsense"])
    assert processor.Runner  # the Runner the run is built on

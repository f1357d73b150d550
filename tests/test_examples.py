"""The scripts of examples/ run as their docstrings say, on the real PFNano files.

Each script runs in its own interpreter (as a user runs it, with the ``__main__`` guard its
local dask cluster needs) from a scratch directory. What they fill is compared with the same
processor run in this process on coffea's IterativeExecutor: a dask run must not change a bin.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
JEC = "jec/correctionlib/2017_UL_jet_jerc.json.gz:Summer19UL17_V5_MC:AK4PFchs"


def run_example(name: str, *args: str, cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


@pytest.fixture(scope="module")
def pfnano(shared_data: Path) -> Path:
    return shared_data / "pfnano" / "coffea_pfnano.root"


@pytest.fixture(scope="module")
def ul17(shared_data: Path) -> Path:
    """UL17 PFNano MC (old layout) of 100 events: ~15 in the test split the examples fill."""
    return shared_data / "pfnano" / "cmsjet_nano106X_on_mini106X_2017_mc_NANO.root"


@pytest.fixture
def fileset(ul17: Path, tmp_path: Path) -> Path:
    path = tmp_path / "fileset.json"
    path.write_text(json.dumps({"ul17": {"files": {str(ul17): "Events"}}}))
    return path


def iterative_output(fileset: Path, **kwargs) -> dict:
    """The examples' processor over the same fileset, run here on the iterative executor."""
    from jec_coffea.commands.run import load_fileset
    from jec_coffea.processors import ResponseProcessor
    from jec_coffea.runner import make_executor, run_fileset

    report = run_fileset(
        load_fileset(fileset),
        ResponseProcessor(**kwargs),
        executor=make_executor("iterative"),
    )
    return report.output


def assert_same_response(out_dir: Path, reference: dict) -> None:
    from jec_coffea.evaluation import load_output

    out = load_output(out_dir)
    assert out["n_jets"] == reference["n_jets"]
    assert sum(reference["n_jets"].values()) > 0
    np.testing.assert_array_equal(
        out["response"].values(), reference["response"].values()
    )


def test_corrector_in_processor(pfnano: Path, tmp_path: Path):
    from jec_coffea.shipped import shipped_path

    out = run_example(
        "corrector_in_processor.py",
        str(shipped_path("deepsets")),
        str(pfnano),
        cwd=tmp_path,
    )
    n_events = uproot.open(pfnano)["Events"].num_entries
    assert f"{n_events} events" in out
    # one leading jet per event with a valid correction in |η| < 2.5, raw and DNN each
    total = re.search(r"WeightedSum\(value=([\d.]+)", out)
    assert total, out
    assert 0 < float(total.group(1)) <= 2 * n_events
    assert float(total.group(1)) % 2 == 0


def test_run_local_cluster(
    shared_data: Path, ul17: Path, fileset: Path, tmp_path: Path
):
    from jec_coffea.standard import JECStack

    spec = str(shared_data / JEC)
    out = run_example("run_local_cluster.py", str(fileset), "out", spec, cwd=tmp_path)
    assert f"{ul17} pfnano_old complete 1 chunks" in out
    assert (tmp_path / "out" / "histograms.root").is_file()
    reference = iterative_output(
        fileset,
        jec=JECStack.from_spec(spec),
        methods=["raw", "nanoaod", "pnet", "standard"],
        split="test",
    )
    assert_same_response(tmp_path / "out", reference)


def test_join_scheduler(dask_client, fileset: Path, tmp_path: Path):
    address = dask_client.scheduler.address
    out = run_example("join_scheduler.py", address, str(fileset), "out", cwd=tmp_path)
    assert f"2 workers at {address}" in out
    assert dask_client.status == "running"  # the script leaves the cluster to its owner
    reference = iterative_output(
        fileset, methods=["raw", "nanoaod", "pnet"], split="test"
    )
    assert_same_response(tmp_path / "out", reference)


@pytest.mark.parametrize(
    ("kind", "marker"), [("slurm", "#SBATCH"), ("htcondor", "Executable")]
)
def test_batch_jobqueue_dry_run(kind: str, marker: str, fileset: Path, tmp_path: Path):
    pytest.importorskip("dask_jobqueue")
    out = run_example(
        "batch_jobqueue.py", kind, str(fileset), "out", "--dry-run", cwd=tmp_path
    )
    assert marker in out
    assert "distributed.cli.dask_worker" in out

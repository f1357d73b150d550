"""Smoke runs of the benchmark scripts (``--quick``): they exit 0 and print their tables.

No timing is asserted (figures depend on the machine and its load); the point is that the
scripts keep working as the package changes. Both read the real PFNano file of shared/data,
so the run does not depend on a simulated sample being present.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.shared_data

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(script: str, sample: Path, *extra: str) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / script),
            "--quick",
            "--sample",
            str(sample),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _row(out: str, first: str) -> bool:
    """A Markdown table row whose first cell is ``first``."""
    return re.search(rf"^\|\s*{re.escape(first)}\s*\|", out, re.MULTILINE) is not None


def test_inference_bench_quick(shared_data):
    out = _run("inference.py", shared_data / "pfnano" / "coffea_pfnano.root")
    assert "numpy fp32 GEMM 2048^3, one thread:" in out
    assert "### deepsets: jets/s on one core vs batch size" in out
    assert "| batch | onnxruntime jets/s | torch eager jets/s | ONNX/torch |" in out
    assert "### deepsets: OnnxModel.evaluate on" in out
    assert _row(out, "bucketed")
    assert "MFLOP from the ONNX graph" in out
    assert "### summary: batch 1024" in out


def test_graph_rewrite_ab_quick(shared_data):
    out = _run("graph_ab.py", shared_data / "pfnano" / "coffea_pfnano.root")
    for name in ("deepsets", "particlenet"):
        assert f"### {name}: jets/s on one core, batch" in out
    for graph in ("as exported", "gemm + blocks", "optimise (all)"):
        assert _row(out, graph)
    # every variant gives the exported graph's outputs (last cell: max |dy|)
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("|")
        and ("gemm" in line or "exported |" in line or "all)" in line)
    ]
    devs = [float(row[-1]) for row in rows if row[0] != "graph"]
    assert len(devs) == 10
    assert max(devs) < 1e-5


def test_training_bench_quick(shared_data):
    out = _run("training.py", shared_data / "pfnano" / "coffea_pfnano.root")
    assert "### training on CPU, jets per CPU second" in out
    assert "loader alone jets/s" in out
    for name in ("mlp_nanoaod", "deepsets"):
        assert _row(out, name)
    assert "cost vs number of jets" in out


def test_processor_bench_quick(shared_data):
    out = _run("processor.py", shared_data / "pfnano" / "coffea_pfnano.root")
    assert "### CPU seconds per 1,000 jets by stage" in out
    assert "| s / 1k jets" in out
    assert _row(out, "inference deepsets")
    assert "target 1: stages but inference" in out
    assert "### processor events/s" in out
    for name in ("standard", "standard+deepsets", "standard+3 deepsets"):
        assert _row(out, name)
    assert "target 2: processor CPU with 3 Deep Sets variants" in out
    assert "### peak memory of one worker" in out
    assert "### workers (LocalCluster" in out
    assert re.search(
        r"^\|\s*1\s*\|\s*10\s*\|", out, re.MULTILINE
    )  # 1 worker, 10 events


def test_simulation_bench_small(tmp_path):
    """bench/simulate.py on 20 events (fixed pile-up, a 200-event library cached in a scratch
    folder): both rates, their ratio and every stage, the detector's sections included."""
    pytest.importorskip("pythia8mc")
    from jec_coffea.simulation.detector import DETECTOR_STAGES
    from jec_coffea.simulation.pipeline import STAGES

    args = ["--events", "20", "--bare-events", "20", "--batch", "10"]
    args += ["--pileup", "fixed:5", "--library-size", "200"]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "simulate.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "JEC_COFFEA_CACHE": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for line in ("full simulation :", "bare Pythia next:", "ratio full/bare :"):
        assert line in out
    assert "pile-up fixed:5, 20 events" in out
    ms = {
        m.group(1).strip(): float(m.group(2))
        for m in re.finditer(r"^ +(\S.*?) +([\d.]+) ms/event", out, re.MULTILINE)
    }
    assert set(ms) == {*STAGES, *DETECTOR_STAGES}
    assert sum(ms[s] for s in DETECTOR_STAGES) <= ms["detector"] + 0.05  # rounding
    assert ms["clustering"] > 0

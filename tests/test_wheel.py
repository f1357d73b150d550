"""The built wheel ships the trained models and ``from_shipped`` works once installed (issue 5,
item 7).

Builds the wheel from a copy of the source tree (``pip wheel --no-deps --no-build-isolation``,
as from the repository root, without leaving build/ in the checkout), checks that it holds every
``shipped_models/*.onnx`` and ``*.md`` of the source tree, installs it with ``--no-deps`` into a
fresh venv that sees the test interpreter's packages (numpy, awkward, coffea, onnxruntime) but
not the source tree, and, from a folder outside the checkout, corrects the jets of a real PFNano
file with ``DNNJetCorrector.from_shipped("deepsets")``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "jec_coffea" / "shipped_models"

pytestmark = pytest.mark.skipif(
    not (SHIPPED / "deepsets.onnx").is_file(),
    reason=f"{SHIPPED / 'deepsets.onnx'} is absent: the shipped models are not generated yet "
    "(make shipped-models)",
)

_CHECK = """
import json, sys
import awkward as ak
import numpy as np
import jec_coffea
from coffea.nanoevents import NanoEventsFactory, PFNanoAODSchema
from jec_coffea.corrector import DNNJetCorrector

corrector = DNNJetCorrector.from_shipped("deepsets")
events = NanoEventsFactory.from_root(
    {sys.argv[1]: "Events"}, schemaclass=PFNanoAODSchema, mode="eager", entry_stop=20
).events()
jets = corrector.apply(events)
print(json.dumps({
    "file": jec_coffea.__file__,
    "pt_raw": ak.to_numpy(ak.flatten(jets.pt_raw)).tolist(),
    "pt_dnn": ak.to_numpy(ak.flatten(jets.pt_dnn)).tolist(),
    "valid": ak.to_numpy(ak.flatten(jets.dnn_valid)).tolist(),
}))
"""


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, (
        f"{' '.join(map(str, argv))}:\n{done.stdout}\n{done.stderr}"
    )
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.part")
    shutil.copytree(REPO / "jec_coffea", src / "jec_coffea", ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run([*pip, "-q", "-w", str(dist), str(src)])
    (found,) = dist.glob("jec_coffea-*.whl")
    return found


@pytest.mark.slow
def test_wheel_holds_every_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = sorted(
        f"jec_coffea/shipped_models/{p.name}"
        for p in SHIPPED.iterdir()
        if p.suffix in (".onnx", ".md")
    )
    assert "jec_coffea/shipped_models/deepsets.onnx" in expected
    assert "jec_coffea/shipped_models/deepsets.md" in expected, "deepsets has no card"
    # simulate needs the packaged detector and the C++ source of its clustering
    expected += [
        "jec_coffea/simulation/detector.yaml",
        "jec_coffea/simulation/native/antikt.cpp",
    ]
    missing = [n for n in expected if n not in names]
    assert not missing, f"not in {wheel.name}: {missing}"


@pytest.mark.slow
def test_from_shipped_after_installing_the_wheel(wheel, tmp_path, shared_data):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    python = venv / "bin" / "python"
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    # the dependencies come from the test interpreter's environment (a path entry: its .pth
    # files, among them the editable install of the checkout, are not processed)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_test_wheel_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)])
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = _run(
        [str(python), "-c", _CHECK, str(shared_data / "pfnano" / "coffea_pfnano.root")],
        cwd=work,
        env=env,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().is_relative_to(venv.resolve())
    assert result["pt_dnn"], "no jets corrected"
    assert len(result["pt_dnn"]) == len(result["pt_raw"]) == len(result["valid"])
    valid = [
        (raw, dnn)
        for raw, dnn, ok in zip(
            result["pt_raw"], result["pt_dnn"], result["valid"], strict=True
        )
        if ok
    ]
    assert valid, "no jet inside the model's validity range"
    for raw, dnn in valid:
        assert 0.3 < dnn / raw < 3.0, (raw, dnn)

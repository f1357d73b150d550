"""Bad input files: one clear one-line error naming the file and the cause, and exit status 2.

The bad files are made in tmp_path from the real ones: a truncated copy, a copy with a
zeroed region (corrupt baskets), a 0-byte file, a text file, a file whose only tree is not
``Events``, an ``Events`` tree without ``Jet_pt`` and one without ``Jet_rawFactor``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import awkward as ak
import pytest
import uproot

from jec_coffea.cli import main
from jec_coffea.data import detect_layout, read_jet_table
from jec_coffea.errors import (
    InputFileError,
    JecCoffeaError,
    MissingBranchError,
    UnsupportedLayoutError,
)

pytestmark = pytest.mark.shared_data

SOURCE = "nanoaod/coffea_nano_dy.root"


def _copy_branches(
    shared_data: Path, out: Path, drop: str | None, tree: str = "Events"
) -> Path:
    """Write a small NanoAOD-like tree from the real file, without the branch ``drop``."""
    names = [
        "run",
        "luminosityBlock",
        "event",
        "Jet_pt",
        "Jet_eta",
        "Jet_phi",
        "Jet_mass",
    ]
    names.append("Jet_rawFactor")
    a = uproot.open(shared_data / SOURCE)["Events"].arrays(names)
    jet = {k[4:]: a[k] for k in names if k.startswith("Jet_") and k != drop}
    content = {
        "run": a.run,
        "luminosityBlock": a.luminosityBlock,
        "event": a.event,
        "Jet": ak.zip(jet),
    }
    with uproot.recreate(out) as f:
        f.mktree(tree, {k: v.type for k, v in content.items()})
        f[tree].extend(content)
    return out


@pytest.fixture(scope="module")
def bad_files(shared_data: Path, tmp_path_factory) -> dict[str, tuple[Path, type, str]]:
    """name -> (path, expected exception type, regex the message must match)."""
    tmp_path = tmp_path_factory.mktemp("bad_input")
    data = (shared_data / SOURCE).read_bytes()
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.root"
    zeroed = bytearray(data)
    start = int(len(data) * 0.3)
    zeroed[start : start + 20000] = bytes(20000)
    corrupt.write_bytes(bytes(zeroed))
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    text = tmp_path / "notes.root"
    text.write_text("run,event,jet_pt\n1,2,30.5\n")
    return {
        "truncated": (truncated, InputFileError, r"truncated: the file has \d+ bytes"),
        "corrupt": (corrupt, InputFileError, r"cannot read .*tree 'Events'"),
        "empty": (empty, InputFileError, r"empty file \(0 bytes\)"),
        "not_root": (text, InputFileError, r"not a ROOT file \(starts with b'run,'"),
        "no_events_tree": (
            _copy_branches(
                shared_data, tmp_path / "other_tree.root", None, tree="Other"
            ),
            UnsupportedLayoutError,
            r"unsupported layout.*trees found: Other",
        ),
        "no_jet_pt": (
            _copy_branches(shared_data, tmp_path / "no_jet_pt.root", "Jet_pt"),
            MissingBranchError,
            r"Events: branch 'Jet_pt' not found",
        ),
        "no_raw_factor": (
            _copy_branches(
                shared_data, tmp_path / "no_raw_factor.root", "Jet_rawFactor"
            ),
            MissingBranchError,
            r"branch 'Jet_rawFactor' not found \(needed for 'raw_factor'",
        ),
        "missing": (tmp_path / "nowhere.root", InputFileError, "no such file"),
    }


CASES = [
    "truncated",
    "corrupt",
    "empty",
    "not_root",
    "no_events_tree",
    "no_jet_pt",
    "no_raw_factor",
    "missing",
]


@pytest.mark.parametrize("case", CASES)
def test_reader_error(bad_files, case: str) -> None:
    path, kind, pattern = bad_files[case]
    with pytest.raises(kind, match=pattern) as info:
        read_jet_table(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    assert isinstance(info.value, JecCoffeaError)


@pytest.mark.parametrize("case", ["truncated", "empty", "not_root", "no_events_tree"])
def test_detect_layout_error(bad_files, case: str) -> None:
    path, kind, pattern = bad_files[case]
    with pytest.raises(kind, match=pattern):
        detect_layout(path)


@pytest.mark.parametrize("case", CASES)
def test_cli_inspect_bad_file(bad_files, case: str, capsys) -> None:
    path, _, pattern = bad_files[case]
    status = main(["inspect", str(path)])
    captured = capsys.readouterr()
    assert status == 2
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("jec-coffea inspect: error: ")
    assert str(path) in lines[0]
    assert re.search(pattern, lines[0])
    assert "Traceback" not in captured.err + captured.out


def test_cli_subprocess_no_traceback(bad_files) -> None:
    path, _, _ = bad_files["truncated"]
    proc = subprocess.run(
        [sys.executable, "-m", "jec_coffea.cli", "inspect", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"jec-coffea inspect: error: {path}: truncated: ")


def test_cli_inspect_good_file(shared_data: Path, capsys) -> None:
    status = main(["inspect", str(shared_data / "pfnano/coffea_pfnano.root")])
    out = capsys.readouterr().out
    assert status == 0
    assert "layout: pfnano" in out
    for label, value in (
        (r"events \(tree entries\) read", "10"),
        ("jets", "64"),
        ("gen-matched jets", "52"),
        ("charged constituents", "915"),
        ("neutral constituents", "886"),
        ("sv constituents", "33"),
    ):
        assert re.search(rf"│ {label}\s+│\s+{value}\b", out), label
    assert "flavour of matched jets" in out
    assert "pt_raw" in out

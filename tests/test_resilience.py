"""Resilient runs: a failing chunk keeps the finished ones, --resume completes the run,
--skip-bad-files goes on past corrupt and unreadable files and lists them with their errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import uproot

from jec_coffea.cli import main
from jec_coffea.processors import ResponseProcessor
from jec_coffea.runner import (
    ChunkFailedError,
    ResumableCheckpointer,
    make_executor,
    run_fileset,
)

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.filterwarnings("ignore:Missing cross-reference index:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Branch .* already exists:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Found duplicate branch:RuntimeWarning"),
]

TT = "nanoaod/coffea_nano_tt_v12.root"
PFNANO = "pfnano/coffea_pfnano.root"
METHODS = ["raw", "nanoaod", "pnet"]
KEYS = ("response", "corrected_pt", "correction_factor", "response_vs_eta")


class FailingChunk(ResponseProcessor):
    """Raises, like an out-of-memory chunk would, on the chunk starting after entry 0 and
    ending before the last entry (the middle chunk of a file)."""

    def process(self, events: Any) -> dict[str, Any]:
        meta = events.metadata
        if meta["entrystart"] > 0 and meta["entrystop"] < 200:
            msg = (
                f"injected failure at entries {meta['entrystart']}-{meta['entrystop']}"
            )
            raise MemoryError(msg)
        return super().process(events)


# the dask workers cannot import this test module: ship the class by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _same(a: dict, b: dict) -> None:
    for key in KEYS:
        np.testing.assert_allclose(
            a[key].values(flow=True), b[key].values(flow=True), rtol=1e-12, atol=0
        )
    assert a["n_jets"] == b["n_jets"]
    assert a["cutflow"].counts == b["cutflow"].counts


@pytest.fixture(scope="module")
def fileset(shared_data) -> dict:
    return {"tt": {"files": {str(shared_data / TT): "Events"}}}


@pytest.fixture(scope="module")
def undisturbed(fileset):
    report = run_fileset(
        fileset,
        ResponseProcessor(methods=METHODS, split="test"),
        executor=make_executor("iterative"),
        chunksize=70,
    )
    assert report.complete
    return report.output


@pytest.mark.parametrize("executor", ["iterative", "dask"])
def test_failed_chunk_is_resumed(fileset, undisturbed, tmp_path, executor, request):
    if executor == "dask":
        pytest.importorskip("distributed")
        client = request.getfixturevalue("dask_client")
        make = lambda: make_executor("dask", client=client)
    else:
        make = lambda: make_executor("iterative")
    ckpt = tmp_path / "checkpoints"
    common = {"chunksize": 70, "checkpoint_dir": str(ckpt)}
    with pytest.raises(ChunkFailedError, match="--resume") as info:
        run_fileset(
            fileset,
            FailingChunk(methods=METHODS, split="test"),
            executor=make(),
            **common,
        )
    message = str(info.value)
    assert "coffea_nano_tt_v12.root" in message
    assert "MemoryError: injected failure at entries" in message
    # the same configuration keys the checkpoints of both processors
    key = info.value.checkpoint_key
    kept = ResumableCheckpointer(str(ckpt), key).count()
    assert info.value.chunks_kept <= kept  # a chunk still running may finish afterwards
    if executor == "iterative":
        assert kept == 1  # the first chunk finished before the failure
    # on dask the failing chunk may be the first to finish: nothing kept yet is fine
    assert kept <= 2
    proc = ResponseProcessor(methods=METHODS, split="test")
    report = run_fileset(fileset, proc, executor=make(), resume=True, **common)
    assert report.complete
    (entry,) = report.files
    assert entry["chunks"] == 3
    if executor == "iterative":
        assert entry["chunks_resumed"] == kept
    else:
        # a chunk still running on the other worker when the failure surfaced finishes and
        # is checkpointed too: at least the chunks counted then are reused
        assert kept <= entry["chunks_resumed"] <= 2
    assert report.checkpoint_key == key
    _same(report.output, undisturbed)
    # a fresh run (no --resume) starts over: old checkpoints are not reused
    again = run_fileset(fileset, proc, executor=make_executor("iterative"), **common)
    assert again.files[0]["chunks_resumed"] == 0
    _same(again.output, undisturbed)


def test_changed_configuration_does_not_reuse_checkpoints(fileset, tmp_path):
    common = {"chunksize": 70, "checkpoint_dir": str(tmp_path), "resume": True}
    first = run_fileset(
        fileset,
        ResponseProcessor(methods=["raw"], split="test"),
        executor=make_executor("iterative"),
        **common,
    )
    other = run_fileset(
        fileset,
        ResponseProcessor(methods=["raw"], split="val"),
        executor=make_executor("iterative"),
        **common,
    )
    assert first.checkpoint_key != other.checkpoint_key
    assert other.files[0]["chunks_resumed"] == 0
    assert other.output["n_jets"]["raw"] != first.output["n_jets"]["raw"]


def _corrupt_copy(src: Path, dst: Path) -> Path:
    """Copy with the compressed Jet_pt basket overwritten: opens, fails when read."""
    data = bytearray(src.read_bytes())
    with uproot.open(src) as f:
        seek = int(f["Events"]["Jet_pt"].member("fBasketSeek")[0])
    data[seek + 100 : seek + 400] = b"\xab" * 300
    dst.write_bytes(bytes(data))
    return dst


def test_skip_bad_files_lists_failures_and_completes_the_rest(
    shared_data, tmp_path, capsys
):
    corrupt = _corrupt_copy(shared_data / TT, tmp_path / "corrupt_tt.root")
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes((shared_data / PFNANO).read_bytes()[:4000])
    good = str(shared_data / PFNANO)
    fileset = tmp_path / "fileset.json"
    fileset.write_text(
        json.dumps(
            {
                "mc": {
                    "files": {
                        good: "Events",
                        str(corrupt): "Events",
                        str(truncated): "Events",
                    }
                }
            }
        )
    )
    out = tmp_path / "out"
    base = ["run", "--fileset", str(fileset), "-o", str(out), "--split", "test"]
    base += ["--methods", ",".join(METHODS), "--executor", "iterative"]
    base += ["--chunksize", "70", "--no-progress"]
    # without --skip-bad-files the run stops, naming the file
    assert main(base) == 2
    assert "truncated.root" in capsys.readouterr().err
    assert main([*base, "--skip-bad-files"]) == 1
    info = json.loads((out / "run.json").read_text())
    assert info["complete"] is False
    by_file = {}
    for failure in info["failures"]:
        by_file.setdefault(Path(failure["file"]).name, []).append(failure)
    (opened,) = by_file["truncated.root"]
    assert opened["stage"] == "open"
    assert "truncated.root" in opened["error"]
    read = by_file["corrupt_tt.root"]
    assert {f["stage"] for f in read} == {"process"}
    assert sorted((f["entry_start"], f["entry_stop"]) for f in read) == [
        (0, 67),
        (67, 134),
        (134, 200),
    ]
    assert all(f["error"] for f in read)
    status = {Path(f["file"]).name: f["status"] for f in info["files"]}
    assert status == {"coffea_pfnano.root": "complete", "corrupt_tt.root": "failed"}
    # the good file's results are complete: equal to a run on it alone
    from coffea.util import load

    alone = run_fileset(
        {"mc": {"files": {good: "Events"}}},
        ResponseProcessor(methods=METHODS, split="test"),
        executor=make_executor("iterative"),
        chunksize=70,
    )
    _same(load(str(out / "histograms.coffea")), alone.output)

"""Resilient runs: a failing chunk keeps the finished ones, --resume completes the run,
--skip-bad-files goes on past corrupt and unreadable files and lists them with their errors.
A chunk that kills its dask worker (issue 6) is resumable and skippable like any other."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
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


KILL_AT = 100
"""The chunk holding this entry kills its worker."""
KILL_PAUSE = 1.0
"""Seconds the culprit waits before killing its worker when the first chunk is to die too."""


class KillingChunk(ResponseProcessor):
    """Kills its own dask worker process, as a segfault or the out-of-memory killer would, on
    the chunk holding entry KILL_AT; the same configuration (checkpoint key) as
    ResponseProcessor. With ``once`` set (a path), the first chunk also kills its worker if it
    starts before any worker was killed (creating the file ``once``), like a chunk sharing the
    worker of the culprit; the culprit creates the file too, after a pause that lets the first
    chunk start. Either way the first chunk fails in the first pass (killed itself, or queued
    on the culprit's worker) or not at all, and never when run again alone."""

    once: str | None = None

    def process(self, events: Any) -> dict[str, Any]:
        meta = events.metadata
        if meta["entrystart"] <= KILL_AT < meta["entrystop"]:
            if self.once is not None:
                time.sleep(KILL_PAUSE)
                self._claim(self.once)
            self._kill()
        if self.once is not None and meta["entrystart"] == 0 and self._claim(self.once):
            self._kill()
        return super().process(events)

    @staticmethod
    def _claim(path: str) -> bool:
        """Create ``path``; False if it existed."""
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True

    @staticmethod
    def _kill() -> None:
        from distributed import get_worker

        get_worker()  # raises outside a dask worker: never kill the test process
        os.kill(os.getpid(), signal.SIGKILL)


class FailingAt(ResponseProcessor):
    """Raises on the chunk KillingChunk kills its worker on (the expected partial output)."""

    def process(self, events: Any) -> dict[str, Any]:
        meta = events.metadata
        if meta["entrystart"] <= KILL_AT < meta["entrystop"]:
            msg = "skipped like the killed chunk"
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


# --- a chunk that kills its worker (issue 6) ----------------------------------------------------

KILL_CHUNKSIZE = 50
"""4 chunks of 50 entries, two sent to each single-threaded worker: the killed worker usually
takes an innocent queued chunk down with it (which must then not be blamed)."""


@pytest.fixture(scope="module")
def kill_client():
    """A LocalCluster of its own (workers get killed), no scheduler retries of a killed task."""
    distributed = pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.mark.dask
def test_killed_worker_is_resumable(fileset, undisturbed, tmp_path, kill_client):
    ckpt = tmp_path / "checkpoints"
    common = {"chunksize": KILL_CHUNKSIZE, "checkpoint_dir": str(ckpt)}
    with pytest.raises(ChunkFailedError, match="--resume") as info:
        run_fileset(
            fileset,
            KillingChunk(methods=METHODS, split="test"),
            executor=make_executor("dask", client=kill_client),
            **common,
        )
    message = str(info.value)
    assert "coffea_nano_tt_v12.root" in message
    assert "entries 100-150" in message
    assert "KilledWorker: Attempted to run task" in message
    # every other chunk finished (queued chunks killed alongside were run again) and is kept
    assert info.value.chunks_kept == 3
    report = run_fileset(
        fileset,
        ResponseProcessor(methods=METHODS, split="test"),
        executor=make_executor("dask", client=kill_client),
        resume=True,
        **common,
    )
    assert report.complete
    (entry,) = report.files
    assert (entry["chunks"], entry["chunks_resumed"]) == (4, 3)
    _same(report.output, undisturbed)


@pytest.mark.dask
def test_killed_worker_is_skipped_and_listed(
    fileset, tmp_path, kill_client, monkeypatch
):
    import jec_coffea.processors

    fileset_json = tmp_path / "fileset.json"
    fileset_json.write_text(json.dumps(fileset))
    out = tmp_path / "out"
    monkeypatch.setattr(jec_coffea.processors, "ResponseProcessor", KillingChunk)
    # the first chunk also ends in KilledWorker (its own kill, or queued on the culprit's
    # worker): run again alone, it must not be blamed
    once = tmp_path / "first-chunk-killed"
    monkeypatch.setattr(KillingChunk, "once", str(once))
    argv = ["run", "--fileset", str(fileset_json), "-o", str(out), "--split", "test"]
    argv += ["--methods", ",".join(METHODS), "--chunksize", str(KILL_CHUNKSIZE)]
    argv += ["--scheduler", kill_client.scheduler.address, "--no-progress"]
    assert main([*argv, "--skip-bad-files"]) == 1
    assert once.exists()
    info = json.loads((out / "run.json").read_text())
    assert info["complete"] is False
    (failure,) = info["failures"]
    assert Path(failure["file"]).name == "coffea_nano_tt_v12.root"
    assert (failure["entry_start"], failure["entry_stop"]) == (100, 150)
    assert failure["stage"] == "process"
    assert failure["error_type"] == "KilledWorker"
    assert "killed its dask worker again when run alone" in failure["context"]
    (entry,) = info["files"]
    assert (entry["status"], entry["chunks"]) == ("partial", 3)
    assert entry["entries_processed"] == 150
    # the other chunks are complete: equal to a run skipping the same chunk by an exception
    expected = run_fileset(
        fileset,
        FailingAt(methods=METHODS, split="test"),
        executor=make_executor("iterative"),
        chunksize=KILL_CHUNKSIZE,
        skip_bad_files=True,
    )
    (skipped,) = expected.failures
    assert (skipped["entry_start"], skipped["entry_stop"]) == (100, 150)
    from coffea.util import load

    _same(load(str(out / "histograms.coffea")), expected.output)

"""Run K shards of the simulation in parallel processes, each reproducible from the seed.

Shard ``k`` of a run with seed ``S`` uses random streams derived from ``(S, k)`` only, so it
gives the same file whatever the number of worker processes. The minimum-bias library is
generated (or loaded from the cache) once in the parent before the shards start, so shards
never race to build it. Each shard stops at the first event at which it holds its share of
the requested jets gen-matched with pT_gen >= 20 GeV (the last batch is cut there, so a shard
exceeds its share by at most the target jets of one event).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np
import yaml

from . import fastjet_native
from .config import SimulationConfig, detector_hash
from .generator import MinBiasLibrary
from .pipeline import TIMED, EventSimulator, heap_reuse
from .puppi import PUPPI_UL
from .writer import DEFAULT_COMPRESSION, PFNanoWriter, parse_compression

__all__ = ["ShardResult", "run_shard", "simulate", "write_dataset_yaml"]

log = logging.getLogger(__name__)


@dataclass
class ShardResult:
    """What one shard produced and how long each stage took."""

    path: str
    shard: int
    n_events: int
    n_jets: int
    n_target_jets: int
    timing: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    library_reuse: float = 0.0


def _split(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _slice(arrays: dict, stop: int) -> dict:
    return {k: v[:stop] for k, v in arrays.items()}


TRUTH_DEFINITIONS = {
    "Jet_ptOffsetTruth": (
        "GeV; sum over the jet's CHS constituents of pT x pile-up share: charged = 1 if the "
        "track comes from a pile-up particle, else 0; neutral = pile-up fraction of the true "
        "energy deposited in its tower before response, noise and PF track subtraction"
    ),
}
"""Definitions of the simulation-truth branches, written into every file's metadata."""


def metadata(config: SimulationConfig, seed: int, shard: int, n_shards: int) -> dict:
    """The metadata written into every shard."""
    from .. import __version__

    return {
        "producer": f"jec-coffea {__version__}",
        "seed": seed,
        "shard": shard,
        "n_shards": n_shards,
        "detector_sha256": detector_hash(config.detector),
        "config": config.model_dump(mode="json"),
        "truth_definitions": TRUTH_DEFINITIONS,
        "puppi": dataclasses.asdict(PUPPI_UL),
    }


def run_shard(
    config: SimulationConfig,
    seed: int,
    shard: int,
    n_shards: int,
    n_target: int,
    path: str,
    progress=None,
    batch_events: int | None = None,
    compression: str = DEFAULT_COMPRESSION,
) -> ShardResult:
    """Simulate one shard until it holds ``n_target`` gen-matched jets with pT_gen >= 20 GeV.

    Parameters
    ----------
    progress
        Optional queue receiving ``(shard, jets_added)`` after every batch.
    batch_events
        Fixed batch size in events (default adaptive, 50-400 events).
    compression
        ROOT compression of the file, ``NAME[:LEVEL]`` (see :func:`parse_compression`).
    """
    t0 = time.perf_counter()
    library = None
    if config.pileup.profile != "none":
        library = MinBiasLibrary.load_or_generate(config.generator, config.pileup, seed)
    sim = EventSimulator(config, seed, shard, library)
    done = 0
    n_events = n_jets = 0
    rate = 2.0
    meta = metadata(config, seed, shard, n_shards)
    with heap_reuse(), closing(PFNanoWriter(path, meta, compression)) as writer:
        while done < n_target:
            left = n_target - done
            n = batch_events or int(
                np.clip(np.ceil(1.15 * left / max(rate, 0.05)), 50, 400)
            )
            arrays, per_event = sim.run(n)
            cum = np.cumsum(per_event)
            if len(cum) and cum[-1] >= left:
                stop = int(np.searchsorted(cum, left)) + 1
                arrays = _slice(arrays, stop)
                added = int(cum[stop - 1])
            else:
                added = int(cum[-1]) if len(cum) else 0
            rate = (
                max(added / max(len(arrays["event"]), 1), 0.05)
                if batch_events is None
                else rate
            )
            t1 = time.process_time()
            writer.write(arrays)
            sim.timing["writing"] += time.process_time() - t1
            done += added
            n_events += len(arrays["event"])
            n_jets += int(ak.sum(ak.num(arrays["Jet"])))
            if progress is not None:
                progress.put((shard, added))
    timing = {s: float(sim.timing.get(s, 0.0)) for s in TIMED}
    return ShardResult(
        path=str(path),
        shard=shard,
        n_events=n_events,
        n_jets=n_jets,
        n_target_jets=done,
        timing=timing,
        wall=time.perf_counter() - t0,
        library_reuse=library.reuse_factor() if library is not None else 0.0,
    )


def simulate(
    config: SimulationConfig,
    out_dir: str | Path,
    *,
    n_jets: int,
    n_shards: int,
    seed: int,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    batch_events: int | None = None,
    compression: str = DEFAULT_COMPRESSION,
) -> list[ShardResult]:
    """Simulate ``n_jets`` target jets in ``n_shards`` files under ``out_dir`` (plus data.yaml).

    Parameters
    ----------
    workers
        Parallel processes (default: ``min(n_shards, cpu_count)``); 1 runs in-process.
    on_progress
        Called with the number of target jets added after every batch of any shard.
    compression
        ROOT compression of the files, ``NAME[:LEVEL]`` (see :func:`parse_compression`).
    """
    parse_compression(compression)  # a bad name fails before any shard starts
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.pileup.profile != "none":
        lib = MinBiasLibrary.load_or_generate(config.generator, config.pileup, seed)
        log.info(
            "pile-up library: %d events (mean mu %.1f)", lib.size, config.pileup.mean_mu
        )
    # compiled here once, so that the shard processes find it built (or warn once here)
    if (native := fastjet_native.library()) is not None:
        log.info("clustering: FastJet through %s", Path(native._name).name)
    shares = _split(n_jets, n_shards)
    paths = [str(out / f"sim_{seed}_{k:03d}.root") for k in range(n_shards)]
    workers = workers or min(n_shards, mp.cpu_count())
    results: list[ShardResult] = []

    def shard_args(k: int, queue) -> tuple:
        """Positional arguments of :func:`run_shard` for shard ``k``."""
        return (
            config,
            seed,
            k,
            n_shards,
            shares[k],
            paths[k],
            queue,
            batch_events,
            compression,
        )

    if workers <= 1:
        queue = _CallbackQueue(on_progress)
        results = [run_shard(*shard_args(k, queue)) for k in range(n_shards)]
    else:
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager, _terminating_pool(ctx, workers) as pool:
            queue = manager.Queue()
            futures = [
                pool.apply_async(run_shard, shard_args(k, queue))
                for k in range(n_shards)
            ]
            pending = set(range(n_shards))
            while pending:
                pending = {k for k in pending if not futures[k].ready()}
                while not queue.empty():
                    _, added = queue.get()
                    if on_progress:
                        on_progress(added)
                time.sleep(0.2)
            results = [f.get() for f in futures]
            while not queue.empty():
                _, added = queue.get()
                if on_progress:
                    on_progress(added)
    write_dataset_yaml([r.path for r in results], out / "data.yaml")
    return results


@contextmanager
def _terminating_pool(ctx, workers: int):
    """A process pool whose workers are terminated however the block is left.

    ``multiprocessing.Pool`` terminates its workers on exit; SIGTERM to the parent (which by
    default ends the interpreter without unwinding) is turned into ``SystemExit`` for the
    duration, so killing ``jec-coffea simulate`` leaves no orphaned shard processes.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)

        def _raise(signum, frame):
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, _raise)
    pool = ctx.Pool(workers)
    try:
        yield pool
        pool.close()
        pool.join()
    finally:
        pool.terminate()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _CallbackQueue:
    def __init__(self, cb):
        self.cb = cb

    def put(self, item) -> None:
        if self.cb:
            self.cb(item[1])


def write_dataset_yaml(paths: list[str], target: Path) -> None:
    """Write data.yaml with ``jec_coffea.data.dataset.describe_files`` (fallback: same fields)."""
    try:
        from ..data.dataset import describe_files
    except ImportError:  # the dataset module is developed separately
        describe_files = None
    if describe_files is not None:
        describe_files(paths).save(target)
        return
    import uproot

    entries = []
    for p in paths:
        with uproot.open(p) as f:
            t = f["Events"]
            n_ev = int(t.num_entries)
            nj = int(t["nJet"].array(library="np").sum())
        digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        entries.append(
            {
                "path": Path(p).name,
                "tree": "Events",
                "layout": "pfnano",
                "n_events": n_ev,
                "n_jets": nj,
                "sha256": digest,
            }
        )
    target.write_text(yaml.safe_dump({"version": 1, "files": entries}, sort_keys=False))

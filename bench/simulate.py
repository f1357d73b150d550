"""Benchmark of the simulated sample: full simulation vs Pythia's bare event loop.

Prints, in one run and on one core:
* jets/s/core of the full simulation (pile-up on): target jets (gen-matched, pT_gen >= 20 GeV)
  per CPU second, with the per-stage breakdown (generation, pile-up, detector - itself
  split into tracking, tracker material, vertexing, towers, particle flow, PUPPI and
  secondary vertices -, clustering with areas, rho, assembly, writing);
* jets/s/core of Pythia's bare ``next()`` loop with the same hard-process settings (events/s
  times the target jets per event of the full run): the upper limit;
* their ratio.

CPU time (``time.process_time``) is used so that a loaded machine does not distort the rate;
wall time is printed too. Usage: ``python bench/simulate.py [--events 400] [--pileup flat:0-70]
[--config DETECTOR.yaml]`` (default: the packaged detector).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from jec_coffea.simulation import (
    SimulationConfig,
    default_detector,
    load_detector,
    parse_pileup,
)
from jec_coffea.simulation.detector import DETECTOR_STAGES
from jec_coffea.simulation.generator import HardScatterGenerator, MinBiasLibrary
from jec_coffea.simulation.pipeline import STAGES, EventSimulator, heap_reuse
from jec_coffea.simulation.writer import PFNanoWriter


def bare_pythia(
    config: SimulationConfig, n_events: int, seed: int
) -> tuple[float, float]:
    """CPU and wall seconds per event of ``pythia.next()`` with the same channel mixture."""
    gen = HardScatterGenerator(config.generator, seed)
    counts = np.random.default_rng(seed).multinomial(n_events, gen.fractions)
    c0, w0 = time.process_time(), time.perf_counter()
    for py, k in zip(gen.pythias, counts, strict=True):
        for _ in range(int(k)):
            py.next()
    return (time.process_time() - c0) / n_events, (time.perf_counter() - w0) / n_events


def full(config: SimulationConfig, n_events: int, seed: int, batch: int) -> dict:
    """Run the full chain on ``n_events`` events, writing to a temporary file."""
    library = None
    if config.pileup.profile != "none":
        library = MinBiasLibrary.load_or_generate(config.generator, config.pileup, seed)
    sim = EventSimulator(config, seed, 0, library)
    sim.run(5)  # JIT compilation and first-call overheads
    sim.timing.clear()
    n_target = n_done = 0
    with tempfile.TemporaryDirectory() as tmp:
        c0, w0 = time.process_time(), time.perf_counter()
        # as a shard of `jec-coffea simulate` runs its batches
        with (
            heap_reuse(),
            closing(PFNanoWriter(Path(tmp) / "bench.root", {"bench": True})) as writer,
        ):
            while n_done < n_events:
                arrays, per_event = sim.run(min(batch, n_events - n_done))
                t = time.process_time()
                writer.write(arrays)
                sim.timing["writing"] += time.process_time() - t
                n_done += len(arrays["event"])
                n_target += int(per_event.sum())
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {
        "cpu": cpu,
        "wall": wall,
        "events": n_done,
        "target_jets": n_target,
        "stages": dict(sim.timing),
        "reuse": library.reuse_factor() if library else 0.0,
    }


def main() -> None:
    """Run both loops and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--bare-events", type=int, default=400)
    parser.add_argument("--pileup", default="flat:0-70")
    parser.add_argument("--library-size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--config", default=None, help="detector YAML (default: the packaged one)"
    )
    args = parser.parse_args()
    detector = load_detector(args.config) if args.config else default_detector()
    config = SimulationConfig(
        detector=detector,
        pileup=parse_pileup(args.pileup, library_size=args.library_size),
    )
    res = full(config, args.events, args.seed, args.batch)
    jets_per_event = res["target_jets"] / res["events"]
    bare_cpu, bare_wall = bare_pythia(config, args.bare_events, args.seed + 100)
    full_rate = res["target_jets"] / res["cpu"]
    bare_rate = jets_per_event / bare_cpu
    print(f"detector {detector.name}")
    print(
        f"pile-up {args.pileup}, {res['events']} events, {res['target_jets']} target jets "
        f"({jets_per_event:.2f} per event), library reuse factor {res['reuse']:.1f}"
    )
    print(
        f"full simulation : {full_rate:8.1f} jets/s/core  ({res['events'] / res['cpu']:.1f} events/s/core; "
        f"wall {res['wall']:.1f} s for {res['cpu']:.1f} CPU s)"
    )
    print(
        f"bare Pythia next: {bare_rate:8.1f} jets/s/core  ({1 / bare_cpu:.1f} events/s/core; "
        f"wall {1 / bare_wall:.1f} events/s)"
    )
    print(f"ratio full/bare : {full_rate / bare_rate:8.3f}")
    stages = res["stages"]
    total = sum(stages.get(s, 0.0) for s in STAGES)
    print("per-stage breakdown (CPU time in the stage, share of the summed stages):")
    for stage in STAGES:
        _stage_line(stage, stages.get(stage, 0.0), res["events"], total, 2)
        if stage == "detector":
            for sub in DETECTOR_STAGES:
                _stage_line(sub, stages.get(sub, 0.0), res["events"], total, 4)


def _stage_line(name: str, seconds: float, n_events: int, total: float, indent: int):
    width = 22 - indent
    print(
        f"{'':{indent}}{name:<{width}s} {1000 * seconds / n_events:7.2f} ms/event"
        f"  {100 * seconds / total:5.1f}%"
    )


if __name__ == "__main__":
    main()

"""Simulate a PFNano sample: Pythia 8 hard QCD + pile-up, a parametrised detector, FastJet jets.

Writes K PFNano ROOT files (one per shard, run in parallel processes) and data.yaml into the
output folder. --jets N counts jets gen-matched (Jet_genJetIdx and dR < 0.2) with
pT_gen >= 20 GeV. The same seed and settings give the same files.

Examples:
  jec-coffea simulate -o sim --jets 20000 --shards 2 --seed 1
  jec-coffea simulate -o sim --jets 1000 --pileup fixed:20 --library-size 2000
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from jec_coffea.simulation.shard import ShardResult

NAME = "simulate"
log = logging.getLogger(__name__)


def setup(parser: argparse.ArgumentParser) -> None:
    """Declare the options."""
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument(
        "--jets", type=int, required=True, help="gen-matched jets with pT_gen >= 20 GeV"
    )
    parser.add_argument(
        "--shards", type=int, default=1, help="number of files (parallel processes)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (>= 0)")
    parser.add_argument(
        "--pileup",
        default="flat:0-70",
        help="pile-up profile: flat:MIN-MAX (default flat:0-70), fixed:MU, none",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="detector YAML (default: the packaged detector.yaml)",
    )
    parser.add_argument(
        "--library-size",
        type=int,
        default=None,
        help="minimum-bias library events (default 20000)",
    )
    parser.add_argument(
        "--compression",
        default=None,
        metavar="NAME[:LEVEL]",
        help="ROOT compression of the files: lz4, zlib, zstd or lzma, level 1-9 "
        "(default lz4:1, the fastest to read; CMS NanoAOD uses lzma)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel processes (default min(shards, cores))",
    )


def run(console: Console, args: argparse.Namespace) -> int:
    """Run the simulation with a progress bar."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from ..errors import ConfigError
    from ..simulation import SimulationConfig, load_detector, parse_pileup, simulate
    from ..simulation.writer import DEFAULT_COMPRESSION, parse_compression

    if args.jets <= 0:
        msg = f"--jets must be positive, got {args.jets}"
        raise ConfigError(msg)
    if args.shards <= 0:
        msg = f"--shards must be positive, got {args.shards}"
        raise ConfigError(msg)
    if args.seed < 0:
        msg = f"--seed must be >= 0, got {args.seed}"
        raise ConfigError(msg)
    compression = args.compression or DEFAULT_COMPRESSION
    parse_compression(compression)  # fails before the progress bar starts
    config = SimulationConfig(
        detector=load_detector(args.config),
        pileup=parse_pileup(args.pileup, library_size=args.library_size),
    )
    with Progress(
        TextColumn("[bold]simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("jets"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("jets", total=args.jets)
        results = simulate(
            config,
            args.output,
            n_jets=args.jets,
            n_shards=args.shards,
            seed=args.seed,
            workers=args.workers,
            compression=compression,
            on_progress=lambda added: progress.advance(task, added),
        )
    n_ev = sum(r.n_events for r in results)
    n_target = sum(r.n_target_jets for r in results)
    n_all = sum(r.n_jets for r in results)
    console.print(
        f"wrote {len(results)} file{'s' * (len(results) != 1)} to {args.output}: "
        f"{n_ev} events, {n_all} jets, "
        f"{n_target} gen-matched jets with pT_gen >= 20 GeV"
    )
    if results and results[0].library_reuse:
        console.print(
            f"pile-up library reuse factor: {max(r.library_reuse for r in results):.1f}"
        )
    for line in cpu_summary(results):
        console.print(line, highlight=False, soft_wrap=True)
    return 0


def cpu_summary(results: Sequence[ShardResult]) -> list[str]:
    """Where the shards' CPU time went: jets per CPU second and each stage per event."""
    from jec_coffea.simulation.detector import DETECTOR_STAGES
    from jec_coffea.simulation.pipeline import STAGES, TIMED

    n_ev = sum(r.n_events for r in results)
    cpu = {s: sum(r.timing.get(s, 0.0) for r in results) for s in TIMED}
    total = sum(cpu[s] for s in STAGES)
    if n_ev == 0 or total <= 0:
        return []
    n_target = sum(r.n_target_jets for r in results)

    def per_event(stages):
        return ", ".join(f"{s} {1000 * cpu[s] / n_ev:.2f}" for s in stages)

    return [
        f"CPU {total:.1f} s in the stages: {n_target / total:.1f} gen-matched jets/s/core",
        f"ms/event: {per_event(STAGES)} (detector: {per_event(DETECTOR_STAGES)})",
    ]

"""Simulated PFNano sample: Pythia 8 + FastJet + a parametrised CMS-like detector.

``simulate(config, out_dir, n_jets=..., n_shards=..., seed=...)`` writes PFNano ROOT files and
``data.yaml``; the pieces (generator, detector, reconstruction, writer) are importable on
their own. Pythia and FastJet are optional dependencies (extra ``sim``), imported on use.
"""

from __future__ import annotations

from .config import (
    DetectorConfig,
    GeneratorConfig,
    PileupConfig,
    SimulationConfig,
    default_detector,
    detector_hash,
    load_detector,
    parse_pileup,
)
from .shard import ShardResult, simulate
from .writer import METADATA_KEY, read_metadata

__all__ = [
    "METADATA_KEY",
    "DetectorConfig",
    "GeneratorConfig",
    "PileupConfig",
    "ShardResult",
    "SimulationConfig",
    "default_detector",
    "detector_hash",
    "load_detector",
    "parse_pileup",
    "read_metadata",
    "simulate",
]


def __dir__() -> list[str]:
    return __all__

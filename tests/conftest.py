"""Shared fixtures: the location of ../shared/data and one dask client for the session.

Tests needing the real files take the ``shared_data`` fixture. Its location comes from
``JEC_COFFEA_DATA`` (default ``../shared/data`` beside the repository), by the package's
rule (:func:`jec_coffea.paths.shared_data_dir`). When the folder is
absent the tests skip with the reason, except under CI (``CI=true``) where that is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jec_coffea.paths import shared_data_dir

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return shared_data_dir().resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real NanoAOD/PFNano/JetClass-II/ml-jec files and CMS JEC tables."""
    path = _data_dir()
    if not (path / "PROVENANCE.md").is_file():
        reason = f"shared data folder not found at {path} (set JEC_COFFEA_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def dask_client():
    """One LocalCluster with two worker processes for the whole session."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def detector_v1():
    """The packaged detector until v2 (no tracker-material sections), kept as an example:
    samples and models made before v2 carry its hash."""
    from jec_coffea.simulation import load_detector

    return load_detector(REPO / "examples" / "detector_v1.yaml")


@pytest.fixture(scope="session")
def detector_v2():
    """The packaged detector from 2026-12-05 until v3, kept as an example: samples and models
    made before v3 carry its hash."""
    from jec_coffea.simulation import load_detector

    return load_detector(REPO / "examples" / "detector_v2.yaml")


SIM_SAMPLE_JETS = 1000
"""Gen-matched jets (pT_gen >= 20 GeV) in the ``sim_sample`` fixture."""


@pytest.fixture(scope="session")
def sim_sample(tmp_path_factory) -> Path:
    """A simulated PFNano sample made once per session: folder with ROOT files and data.yaml.

    1,000 gen-matched jets with pT_gen >= 20 GeV, seed 7, two shards run in-process, fixed
    pile-up mu = 10 from a 500-event minimum-bias library (small, for speed; the default run
    uses 20,000 events and flat mu 0-70).
    """
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    from jec_coffea.simulation import (
        SimulationConfig,
        default_detector,
        parse_pileup,
        simulate,
    )

    out = tmp_path_factory.mktemp("sim_sample")
    config = SimulationConfig(
        detector=default_detector(),
        pileup=parse_pileup("fixed:10", library_size=500),
    )
    simulate(config, out, n_jets=SIM_SAMPLE_JETS, n_shards=2, seed=7, workers=1)
    return out

"""Shared fixtures: the location of ../shared/data and one dask client for the session.

Tests needing the real files take the ``shared_data`` fixture. Its location comes from
``JEC_COFFEA_DATA`` (default ``../shared/data`` beside the repository). When the folder is
absent the tests skip with the reason, except under CI (``CI=true``) where that is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(
        os.environ.get("JEC_COFFEA_DATA", REPO.parent / "shared" / "data")
    ).resolve()


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
